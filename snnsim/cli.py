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

One error path for every command (:func:`command`): a user's mistake (a bad option
value, a missing or corrupt file, an unwritable folder, a full disk, a run folder in
use) ends the command with one line on stderr and exit status 2::

    snnsim.train: error: runs/x/checkpoint.h5: not a readable HDF5 file (...)

``--debug`` (accepted by every command wrapped with :func:`command`) shows the
full traceback instead. Programming errors (anything not listed in
:func:`user_errors`) keep their traceback.

Options every wrapped command accepts, handled here and removed from the
arguments before the command's own parser sees them:

``--debug``             show the traceback of an error
``--allow-nonfinite``   load checkpoints holding NaN or infinite weights (forensics
                        of a diverged run; refused by default)

Exit statuses: 0 done, 2 user error (:data:`EXIT_USAGE`), 3 the run diverged
(:data:`EXIT_DIVERGED`, see :mod:`snnsim.training.guard`), 130 interrupted by
Ctrl-C or SIGTERM (:data:`EXIT_INTERRUPTED`).
"""
from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

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
    "inspection": Command("snnsim.analysis.inspection",
                          "every intermediate of one forward and backward pass (HDF5)"),
    "bench": Command("snnsim.analysis.bench", "training speed and memory per backend"),
    "fidelity": Command("snnsim.fidelity.cli",
                        "the authors' gradient against the exact one and surrogate BPTT"),
    "walkthrough": Command("snnsim.walkthrough", "a guided tour of one network, step by step",
                           optional=True),
    "study": Command("snnsim.study", "hyper-parameter study (Optuna)", optional=True),
    "datasets-download": Command("snnsim.datasets.download",
                                 "download a dataset and verify its checksums"),
}
#: Other names of commands.
ALIASES = {"inspect": "inspection"}

#: The program name the running command shows in its usage line; set by :func:`run_command`.
_PROG: contextvars.ContextVar[str | None] = contextvars.ContextVar("snnsim_prog", default=None)


def prog_name(default: str) -> str:
    """The program name for a command's ``argparse`` parser: how it was invoked
    (``snnsim train``, ``python3 -m snnsim train``) when started through this
    dispatcher, else ``default`` (``python3 -m snnsim.train``)."""
    return _PROG.get() or default


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
    token = _PROG.set(prog)
    try:
        status = module.main(argv)
    finally:
        _PROG.reset(token)
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
    lines += ["",
              "Each command is also a module: python3 -m snnsim.<command> (datasets-download:",
              "python3 -m snnsim.datasets.download)."]
    return "\n".join(lines)


def version_text() -> str:
    info = current_source_info()
    commit = info["git_commit"] or "none"
    return f"snnsim {info['snnsim_version']} ({info['source']}; git commit: {commit})"


def main(argv: list[str] | None = None, prog: str = "snnsim") -> int:
    """``snnsim <command> [options ...]``: run one command; returns its exit status.
    Ctrl-C or SIGTERM, also while the command's module is imported: one line and
    :data:`EXIT_INTERRUPTED` (:mod:`snnsim.signals`)."""
    with signals_for(argv is None) as name:
        name["command"] = (argv or sys.argv[1:] or ["snnsim"])[0]
        return _dispatch(argv, prog)
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


# --- Ctrl-C and SIGTERM ---------------------------------------------------------
@contextlib.contextmanager
def signals_for(process_entry: bool):
    """The block runs with :mod:`snnsim.signals`' handlers; an interrupt within it ends
    it with one line (naming ``name["command"]``, which the block may set), and the
    code after the ``with`` runs (the block's ``return`` does not). ``process_entry``
    (called with no argv: the process's own command): on leaving, the signals are
    ignored, so that none arriving while the interpreter exits prints a traceback;
    otherwise (called in-process, e.g. by a test) the previous handlers come back.
    The process's own command ends at once after an interrupt (:func:`snnsim.signals.finish`)."""
    from . import signals
    name = {"command": "snnsim"}
    previous = signals.install()
    try:
        yield name
    except KeyboardInterrupt as exc:
        signals.report(ALIASES.get(name["command"], name["command"]), exc)
        if process_entry:           # the process ends here (see signals.finish)
            signals.finish(EXIT_INTERRUPTED)
    finally:
        if process_entry:
            signals.ignore()
        else:
            signals.restore(previous)


# --- one error path ------------------------------------------------------------
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

COMMON_OPTIONS_HELP = """
options of every snnsim command:
  --debug               show the full traceback of an error (default: one line)
  --allow-nonfinite     load checkpoints whose weights hold NaN or inf (forensics
                        of a diverged run; refused by default)"""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that mean "the user's input is wrong", not "snnsim is wrong"."""
    from .backend import BackendError
    from .datasets.errors import DatasetError
    from .training.builder import ConfigError
    from .training.checkpoint import CheckpointError
    from .training.runfolder import RunFolderError
    errors = [ConfigError, CheckpointError, DatasetError, BackendError,
              RunFolderError, OSError]
    try:
        from .analysis.record import RecordingError
        errors.append(RecordingError)
    except ImportError:   # pragma: no cover - analysis is optional for the error path
        pass
    return tuple(errors)


def error_line(exc: BaseException) -> str:
    """One line describing ``exc``: the file and the OS's reason for an OSError, the
    message otherwise; line breaks of a long message joined with '; '."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        text = f"{where}: {exc.strerror}" if where else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    parts = [p.strip().removeprefix("- ").strip() for p in text.splitlines() if p.strip()]
    line = parts[0] if parts else ""
    for part in parts[1:]:                 # "Searched:\n  - a\n  - b" -> "Searched: a; b"
        line += (" " if line.endswith(":") else "; ") + part
    return line


def report_error(name: str, exc: BaseException, where: str = "") -> int:
    """Print the one line of ``snnsim.<name>`` for a diverged run or a user error
    (``where``: e.g. " (rank 1)" after the command's name) and return its exit status:
    :data:`EXIT_DIVERGED` or :data:`EXIT_USAGE`."""
    from .training.guard import DivergenceError
    diverged = isinstance(exc, DivergenceError)
    print(f"snnsim.{name}: {'diverged' if diverged else 'error'}{where}: {error_line(exc)}",
          file=sys.stderr)
    return EXIT_DIVERGED if diverged else EXIT_USAGE


def command(name: str):
    """Decorate ``main(argv=None) -> int`` of ``python3 -m snnsim.<name>``: the common
    options (``--debug``, ``--allow-nonfinite``), one error line and exit status 2 for
    a user error, :data:`EXIT_DIVERGED` for a diverged run, one line and
    :data:`EXIT_INTERRUPTED` for Ctrl-C or SIGTERM (:func:`signals_for`)."""
    def wrap(main):
        @functools.wraps(main)
        def wrapped(argv=None) -> int:
            args = list(sys.argv[1:] if argv is None else argv)
            debug = "--debug" in args
            allow = "--allow-nonfinite" in args
            args = [a for a in args if a not in ("--debug", "--allow-nonfinite")]
            if debug:                  # the traceback of an interrupt too
                return _run_main(main, name, args, debug, allow)
            with signals_for(argv is None) as where:
                where["command"] = name
                return _run_main(main, name, args, debug, allow)
            return EXIT_INTERRUPTED
        return wrapped
    return wrap


def _run_main(main, name: str, args: list[str], debug: bool, allow: bool) -> int:
    """``main(args)`` with one error line for a user's error (see :func:`command`)."""
    from .training.checkpoint import allow_nonfinite_weights
    from .training.guard import DivergenceError
    try:
        with allow_nonfinite_weights(allow):
            return main(args)
    except SystemExit as exc:
        if ("-h" in args or "--help" in args) and exc.code in (0, None):
            print(COMMON_OPTIONS_HELP)
        if isinstance(exc.code, str):     # SystemExit("message"): a user's mistake
            if debug:
                raise
            return report_error(name, Exception(exc.code))
        raise
    except (DivergenceError, *user_errors()) as exc:
        if debug:
            raise
        return report_error(name, exc)


__all__ = ["COMMANDS", "COMMON_OPTIONS_HELP", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_USAGE",
           "command", "error_line", "main", "prog_name", "report_error", "user_errors"]
