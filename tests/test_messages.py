"""What the commands say to a user (issue 23, 8): a misspelt option or config key is one
line naming the closest valid one, and --help is plain words, not reStructuredText."""
from __future__ import annotations

import re

import pytest

from snnsim import cli
from snnsim.training.config import ConfigError, load_config_file


def one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv, prog="snnsim")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "usage:" not in err, err
    return err


@pytest.mark.parametrize("argv, wrong, right", [
    (["train", "--epoch", "1"], "--epoch", "--epochs"),               # a config key
    (["train", "--batch_sise=3"], "--batch-sise", "--batch-size"),
    (["train", "--resum"], "--resum", "--resume"),                    # an option of the parser
    (["plots", "sparsity", "--sampels", "3"], "--sampels", "--samples"),   # a subcommand's
    (["record", "--smaples", "3"], "--smaples", "--samples"),
])
def test_a_misspelt_option_names_the_closest(capsys, argv, wrong, right):
    err = one_line_error(capsys, argv)
    assert wrong in err and f"did you mean '{right}'?" in err, err


def test_a_misspelt_config_key_names_the_closest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch'; did you mean 'epochs'\?"):
        load_config_file(str(path))


#: reStructuredText that must not reach a terminal: ``literal``, :role:`target`.
REST = re.compile(r"``|:(func|mod|class|meth|data|attr):`")


@pytest.mark.parametrize("name", sorted(cli.available()))
def test_help_is_plain_words(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"], prog="snnsim")
    assert exc.value.code == 0
    text = capsys.readouterr().out
    found = sorted({m.group(0) for m in REST.finditer(text)})
    assert not found, f"snnsim {name} --help shows {found}"
