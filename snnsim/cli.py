"""``snnsim <command> ...``: one console command for every tool of the package.

Installed with the package (``pyproject.toml``, ``[project.scripts]``), also as
``python3 -m snnsim <command> ...``; each command is the ``main(argv)`` of its
module, so ``python3 -m snnsim.<command>`` keeps working and means the same::

    snnsim train --config fashion_mnist_mlp --epochs 1
    snnsim plots curves runs/<run>
    snnsim --help                    # the list of commands
    snnsim train --help              # one command's options

A command's usage line names how it was invoked (:func:`prog_name`): ``snnsim
train`` from here, ``python3 -m snnsim.train`` when run as a module.

The dispatcher only. What every command shares (how it was invoked, the one error
path, the exit statuses) is :mod:`snnsim.commandline`; the commands import that, never
this module, so the dispatcher may import them without a circle. Its names are
re-exported here for older imports.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from .commandline import (  # re-exported: the old home of the error path
    COMMON_OPTIONS_HELP,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    command,
    error_line,
    interpreter,
    prog_name,
    report_error,
    signals_for,
    typed_path,
    user_errors,
)
from .version import current_source_info


@dataclass(frozen=True)
class Command:
    """A command: the module whose ``main(argv) -> int`` runs it, and a summary line."""
    module: str
    summary: str
    #: A command whose module another change brings: listed only once it exists.
    optional: bool = False


#: The commands, in the order ``snnsim --help`` lists them.
COMMANDS: dict[str, Command] = {
    "train": Command("snnsim.training.train",
                     "train a network with TSSL-BP (config files, checkpoints, resume)"),
    "record": Command("snnsim.analysis.record",
                      "record a trained network's spikes on test samples (HDF5)"),
    "plots": Command("snnsim.analysis.plots",
                     "figures: sparsity (Fig. 7), rates (Fig. 8), raster, curves, confusion"),
    "runs": Command("snnsim.analysis.runs",
                    "list run folders: state, epochs done, best and last accuracy"),
    "inspection": Command("snnsim.analysis.inspection",
                          "every intermediate of one forward and backward pass (HDF5)"),
    "bench": Command("snnsim.analysis.bench", "training speed and memory per backend"),
    "fidelity": Command("snnsim.fidelity.cli",
                        "the authors' gradient against the exact one and surrogate BPTT"),
    "walkthrough": Command("snnsim.walkthrough", "a guided tour of one network, step by step",
                           optional=True),
    "study": Command("snnsim.study", "hyper-parameter study (Optuna)", optional=True),
    "nir": Command("snnsim.interop.nir",
                   "export a network to NIR (snnTorch, Norse, neuromorphic chips) or import one"),
    "datasets-download": Command("snnsim.datasets.download",
                                 "download a dataset and verify its checksums"),
}
#: Other names of commands.
ALIASES = {"inspect": "inspection"}

def _present(module: str) -> bool:
    """True when ``module`` is a file of this very package (not one that some other
    import hook, such as another checkout's editable install, would supply)."""
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        return False
    if spec is None or spec.origin is None:
        return False
    return Path(spec.origin).resolve().is_relative_to(Path(__file__).resolve().parent)


def available() -> dict[str, Command]:
    """The commands whose modules are present (optional ones only once they exist)."""
    return {name: cmd for name, cmd in COMMANDS.items() if not cmd.optional or _present(cmd.module)}


def resolve(name: str) -> str | None:
    """A command name (aliases resolved), or None when there is no such command."""
    name = ALIASES.get(name, name)
    return name if name in available() else None


def run_command(name: str, argv: list[str], prog: str) -> int:
    """Run the command ``name`` with ``argv``; its usage line says ``prog``
    (``snnsim inspect`` when invoked by that alias)."""
    module = importlib.import_module(COMMANDS[name].module)
    token = PROG.set(prog)
    try:
        status = module.main(argv)
    finally:
        PROG.reset(token)
    return int(status or 0)


def usage(prog: str) -> str:
    cmds = available()
    width = max(map(len, cmds))
    aliases = {target: alias for alias, target in ALIASES.items()}
    lines = [f"usage: {prog} <command> [options ...]",
             f"       {prog} <command> --help      (the options of one command)",
             f"       {prog} --version",
             "",
             "snnsim: TSSL-BP (Zhang & Li, NeurIPS 2020) simulated step by step on NumPy or CuPy.",
             "",
             "commands:"]
    for name, cmd in cmds.items():
        alias = f" (alias: {aliases[name]})" if name in aliases else ""
        lines.append(f"  {name:<{width}}  {cmd.summary}{alias}")
    python = interpreter()
    lines += ["",
              f"Each command is also a module: {python} -m snnsim.<command> (datasets-download:",
              f"{python} -m snnsim.datasets.download)."]
    return "\n".join(lines)


def version_text() -> str:
    info = current_source_info()
    commit = info["git_commit"] or "none"
    return f"snnsim {info['snnsim_version']} ({info['source']}; git commit: {commit})"


def console_prog() -> str:
    """The console script as typed here (:func:`~snnsim.commandline.typed_path`):
    ``snnsim`` on the PATH, ``.venv/bin/snnsim`` when run by its path; ``snnsim``
    when this process is not the console script."""
    script = sys.argv[0] if sys.argv else ""
    return typed_path(script, "snnsim") if Path(script).name == "snnsim" else "snnsim"


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``snnsim <command> [options ...]``: run one command; returns its exit status.
    ``prog``: how the dispatcher was invoked (default :func:`console_prog`). Ctrl-C or
    SIGTERM, also while the command's module is imported: one line and
    :data:`EXIT_INTERRUPTED` (:mod:`snnsim.signals`)."""
    with signals_for(argv is None) as name:
        word = (argv or sys.argv[1:] or ["snnsim"])[0]
        name["command"] = ALIASES.get(word, word)
        return _dispatch(argv, prog or console_prog())
    return EXIT_INTERRUPTED                       # interrupted: the line is printed


def _dispatch(argv: list[str] | None, prog: str) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(prog), file=sys.stderr)
        print(f"{prog}: error: a command is required", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help") or argv == ["help"]:
        print(usage(prog))
        return 0
    if argv[0] == "help":                                     # snnsim help train
        argv = [argv[1], "--help"]
    if argv[0] in ("-V", "--version"):
        print(version_text())
        return 0
    name = resolve(argv[0])
    if name is None:
        known = sorted(available()) + sorted(ALIASES)
        close = difflib.get_close_matches(argv[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"{prog}: error: unknown command {argv[0]!r}{hint} (commands: "
              f"{', '.join(sorted(available()))}; {prog} --help says more)", file=sys.stderr)
        return 2
    return run_command(name, argv[1:], f"{prog} {argv[0]}")


__all__ = ["COMMANDS", "COMMON_OPTIONS_HELP", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_USAGE",
           "command", "console_prog", "error_line", "main", "prog_name", "report_error", "user_errors"]
