"""benchmarks/peers.py (snnsim's training step against snnTorch's) without snnTorch: its
``--help`` works, and a missing torch or snntorch is a one-line error naming the extra
that installs them, exit 2. The timing itself needs snntorch and is not a test."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "peers.py"


def load_script():
    spec = importlib.util.spec_from_file_location("peers_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_explains_without_snntorch():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    for word in ("snnTorch", "--rounds", "--threads", "--json", "pip install -e .[peers]"):
        assert word in out.stdout


@pytest.mark.parametrize("missing", ["torch", "snntorch"])
def test_missing_library_is_one_line_naming_the_extra(missing, monkeypatch, capsys):
    script = load_script()
    monkeypatch.setitem(sys.modules, missing, None)          # `import missing` now fails
    with pytest.raises(SystemExit) as exc:
        script.main(["--rounds", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e .[peers]" in err
    assert missing in err


def test_bad_option_is_an_error():
    script = load_script()
    with pytest.raises(SystemExit) as exc:
        script.main(["--threads", "0"])
    assert exc.value.code == 2


def test_json_of_another_kind_is_refused_before_timing(tmp_path, capsys):
    script = load_script()
    out = tmp_path / "figures.json"
    out.write_text('{"something": "else"}\n')
    with pytest.raises(SystemExit) as exc:
        script.main(["--json", str(out)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert out.read_text() == '{"something": "else"}\n'


def test_authors_path_not_found_is_one_line(tmp_path, capsys):
    script = load_script()
    missing = tmp_path / "TSSL-BP"
    with pytest.raises(SystemExit) as exc:
        script.main(["--authors", str(missing), "--rounds", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--authors" in err and str(missing) in err
