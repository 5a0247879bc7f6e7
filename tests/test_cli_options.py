"""One spelling per option across the command lines (issue 12, item 10): ``--samples``
is a count in record, plots and inspection, dataset indices are ``--indices``, the
raster's one sample is ``--sample-index``; older spellings keep working; config
options are documented with '-' and a bad value names the option."""
from __future__ import annotations

import argparse

import pytest

from snnsim.analysis import inspection, plots, record
from snnsim.training import train as train_mod


def options(parser: argparse.ArgumentParser, documented: bool = True) -> set[str]:
    """The option strings of a parser (only those shown in --help if ``documented``)."""
    return {o for a in parser._actions for o in a.option_strings
            if not documented or a.help != argparse.SUPPRESS}


def subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in plots.make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


SOURCE_OPTIONS = {"--network", "--dataset", "--n-steps", "--seed", "--preset", "--data-dir",
                  "--split", "--backend", "--samples", "--indices"}


@pytest.mark.parametrize("parser", [record.make_parser(), inspection.make_parser(),
                                    subparser("sparsity"), subparser("rates"),
                                    subparser("confusion")],
                         ids=["record", "inspection", "sparsity", "rates", "confusion"])
def test_source_options_are_the_same_everywhere(parser):
    assert SOURCE_OPTIONS <= options(parser)
    assert "--checkpoint" in options(parser, documented=False)    # the older spelling
    args = parser.parse_args(["--samples", "7"])
    assert args.samples == 7 and args.indices is None               # a count
    assert parser.parse_args(["--indices", "0,5-7"]).indices == [0, 5, 6, 7]


@pytest.mark.parametrize("parser", [record.make_parser(), inspection.make_parser()])
def test_a_list_after_samples_is_an_error_that_points_to_indices(parser, capsys):
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--samples", "abc"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--samples" in err and "--indices" in err


def test_inspection_reads_the_older_index_list_as_indices(capsys):
    argv = inspection._older_samples(["--network", "784-10", "--samples", "0,4", "--out", "x"])
    assert argv == ["--network", "784-10", "--indices", "0,4", "--out", "x"]
    assert "--indices 0,4" in capsys.readouterr().err
    assert inspection._older_samples(["--samples=1-3"]) == ["--indices", "1-3"]
    assert inspection._older_samples(["--samples", "3"]) == ["--samples", "3"]   # a count


def test_raster_has_one_sample_option():
    raster = subparser("raster")
    documented = options(raster)
    assert "--sample-index" in documented
    assert "--samples" not in documented and "--sample" not in documented
    assert raster.parse_args(["--sample", "4"]).sample_index == 4          # older spelling
    assert raster.parse_args(["--sample-index", "5"]).sample_index == 5
    assert raster.parse_args([]).sample_index == 0


def test_source_given_twice_differently_is_refused():
    args = record.make_parser().parse_args(["a.h5", "--checkpoint", "b.h5"])
    with pytest.raises(SystemExit):
        record.source_of(args)
    assert record.source_of(record.make_parser().parse_args(["--checkpoint", "b.h5"])) == "b.h5"


def test_config_options_documented_with_dashes_both_spellings_accepted():
    text = train_mod.make_parser().format_help()
    assert "--train-subset=" in text and "--train_subset=" not in text
    for spelling in ("--train-subset=300", "--train_subset=300"):
        cfg, _ = train_mod.parse_args([spelling])
        assert cfg.train_subset == 300


@pytest.mark.parametrize("argv, expected", [
    (["--train-subset=abc"], "--train-subset: bad value 'abc'"),
    (["--train_subset", "abc"], "--train-subset: bad value 'abc'"),
    (["--lr=fast"], "--lr: bad value 'fast'"),
])
def test_bad_config_value_names_the_option_and_the_type(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        train_mod.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "expected an integer" in err or "expected a number" in err
    assert "float" not in err.replace("(float)", "")     # no 'could not convert ... to float'
