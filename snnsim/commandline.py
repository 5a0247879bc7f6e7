"""What every snnsim command shares, and nothing that knows the commands themselves:
how the running command was invoked (:func:`prog_name`, :func:`interpreter`,
:func:`rerun`, for usage lines and the hints a command prints) and the one error path
(:func:`command`, :func:`report_error`).

A hint that tells the user what to type next (``Resume with: ...``) names the
program that is actually running, as it would be typed here: ``python3`` when that
name finds this interpreter (an activated virtual environment), else its path
(``.venv/bin/python3`` below the current folder, the absolute path otherwise); the
console script likewise (``snnsim``, ``.venv/bin/snnsim``). A hint copied from the
terminal therefore runs with the same installation.

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

import argparse
import contextlib
import contextvars
import difflib
import functools
import os
import re
import shutil
import sys

#: The program name the running command shows in its usage line and hints; set by
#: :func:`snnsim.cli.run_command` (``snnsim train``) while a command runs through it.
PROG: contextvars.ContextVar[str | None] = contextvars.ContextVar("snnsim_prog", default=None)


def typed_path(path: str, name: str) -> str:
    """How a user here would type the program at ``path``: ``name`` when the ``PATH``
    finds that name in the same folder (an activated virtual environment), else the
    path relative to the current folder when it lies below it, else the absolute path."""
    absolute = os.path.abspath(path)
    found = shutil.which(name)
    if found and os.path.dirname(os.path.abspath(found)) == os.path.dirname(absolute):
        return name
    relative = os.path.relpath(absolute)
    if relative.startswith(".."):
        return absolute
    return relative if os.sep in relative else os.path.join(".", relative)


def interpreter() -> str:
    """The running Python interpreter as a user here would type it (:func:`typed_path`):
    ``python3``, ``.venv/bin/python3`` or an absolute path."""
    return typed_path(sys.executable, "python3")


def prog_name(default: str) -> str:
    """How the running command was invoked, for its ``argparse`` parser and its hints:
    ``snnsim train`` (or ``.venv/bin/snnsim train``) when started through the
    dispatcher, else ``default`` (``python3 -m snnsim.train``) with ``python3``
    replaced by :func:`interpreter`."""
    prog = PROG.get()
    if prog:
        return prog
    head, sep, rest = default.partition(" ")
    return f"{interpreter()}{sep}{rest}" if head == "python3" else default


def rerun(module: str, args: str = "") -> str:
    """A command line the user can copy to run the command of ``module``
    (``snnsim.train``) again, with the interpreter or console script now running:
    ``.venv/bin/python3 -m snnsim.train --resume runs/x``."""
    return " ".join(filter(None, (prog_name(f"python3 -m {module}"), args)))


def did_you_mean(word: str, choices) -> str:
    """``"; did you mean '--epochs'?"`` for the choice closest to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def plain(text: str) -> str:
    """Docstring markup as plain words for a terminal: ````x```` -> x, ``:func:`~a.b```
    -> b, ``:mod:`a.b``` -> a.b (``--help`` texts are often built from docstrings)."""
    text = re.sub(r":[a-z]+:`~[\w.]*?\.?(\w+)`", r"\1", text)
    text = re.sub(r":[a-z]+:`([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with snnsim's error line: one line on stderr (no usage
    block: ``--help`` shows it), exit status 2, and for a misspelt option the closest
    valid one (``--epoch`` -> did you mean ``--epochs``?); its ``--help`` is plain
    words (:func:`plain`)."""

    def format_help(self) -> str:
        return plain(super().format_help())

    def error(self, message: str):
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            options = [a.split("=", 1)[0] for a in unknown.group(1).split() if a.startswith("-")]
            if options:
                message += self.hint(options[0])
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (--help lists the options)\n")

    def hint(self, option: str) -> str:
        """For an option not taken where it was written: the subcommands it belongs to, if
        it is one of theirs (it was "did you mean" the very same option), else the closest
        option of this parser or its subcommands."""
        owners = [name for name, sub in self.subcommands() if option in sub._option_string_actions]
        if owners and option not in self._option_string_actions:
            return f"; {option} is an option of {' and '.join(owners)} only"
        return did_you_mean(option, self.option_strings() - {option})

    def subcommands(self) -> list[tuple[str, argparse.ArgumentParser]]:
        """(name, parser) of each subcommand, an alias's parser once (under its first name)."""
        seen, out = set(), []
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if id(sub) not in seen:
                        seen.add(id(sub))
                        out.append((name, sub))
        return out

    def option_strings(self) -> set[str]:
        """Every option of this parser and of its subcommands' parsers."""
        found = set(self._option_string_actions)
        for _, sub in self.subcommands():
            found |= set(sub._option_string_actions)
        return found


# --- the one error path ------------------------------------------------------------
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

COMMON_OPTIONS_HELP = """
options of every snnsim command:
  --debug               show the full traceback of an error (default: one line)
  --allow-nonfinite     load checkpoints whose weights hold NaN or inf (forensics
                        of a diverged run; refused by default)"""


class UserError(Exception):
    """An error in the user's input found by a command's own module (a damaged
    recording, say): subclasses are reported in one line like the errors of the
    modules below, without this module having to import the command that raises them."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that mean "the user's input is wrong", not "snnsim is wrong".
    Imports only modules that no command is (the engine's readers and the run folder)."""
    from .backend import BackendError
    from .datasets.errors import DatasetError
    from .training.builder import ConfigError
    from .training.checkpoint import CheckpointError
    from .training.runfolder import RunFolderError
    return (UserError, ConfigError, CheckpointError, DatasetError, BackendError,
            RunFolderError, OSError)


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
        signals.report(name["command"], exc)
        if process_entry:           # the process ends here (see signals.finish)
            signals.finish(EXIT_INTERRUPTED)
    finally:
        if process_entry:
            signals.ignore()
        else:
            signals.restore(previous)


__all__ = ["ArgumentParser", "COMMON_OPTIONS_HELP", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_USAGE",
           "PROG", "UserError", "command", "did_you_mean", "error_line", "interpreter", "plain", "prog_name",
           "report_error", "rerun", "signals_for", "typed_path", "user_errors"]
