"""One error path for every command (``python3 -m snnsim.<command>``).

A user's mistake (a bad option value, a missing or corrupt file, an unwritable
folder, a full disk, a run folder in use) ends the command with one line on
stderr and exit status 2::

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

import functools
import sys

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
    from .backend import BackendError  # noqa: PLC0415
    from .datasets.errors import DatasetError  # noqa: PLC0415
    from .training.builder import ConfigError as BuilderConfigError  # noqa: PLC0415
    from .training.checkpoint import CheckpointError  # noqa: PLC0415
    from .training.config import ConfigError  # noqa: PLC0415
    from .training.runfolder import RunFolderError  # noqa: PLC0415
    errors = [ConfigError, BuilderConfigError, CheckpointError, DatasetError, BackendError,
              RunFolderError, OSError]
    try:
        from .analysis.record import RecordingError  # noqa: PLC0415
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


def command(name: str):
    """Decorate ``main(argv=None) -> int`` of ``python3 -m snnsim.<name>``: the common
    options (``--debug``, ``--allow-nonfinite``), one error line and exit status 2 for
    a user error, :data:`EXIT_DIVERGED` for a diverged run."""
    def wrap(main):
        @functools.wraps(main)
        def wrapped(argv=None) -> int:
            from .training.checkpoint import allow_nonfinite_weights  # noqa: PLC0415
            from .training.guard import DivergenceError  # noqa: PLC0415
            args = list(sys.argv[1:] if argv is None else argv)
            debug = "--debug" in args
            allow = "--allow-nonfinite" in args
            args = [a for a in args if a not in ("--debug", "--allow-nonfinite")]
            prefix = f"snnsim.{name}: error:"
            try:
                with allow_nonfinite_weights(allow):
                    return main(args)
            except SystemExit as exc:
                if ("-h" in args or "--help" in args) and exc.code in (0, None):
                    print(COMMON_OPTIONS_HELP)
                if isinstance(exc.code, str):     # SystemExit("message"): a user's mistake
                    if debug:
                        raise
                    print(f"{prefix} {error_line(Exception(exc.code))}", file=sys.stderr)
                    return EXIT_USAGE
                raise
            except DivergenceError as exc:
                if debug:
                    raise
                print(f"snnsim.{name}: diverged: {error_line(exc)}", file=sys.stderr)
                return EXIT_DIVERGED
            except user_errors() as exc:
                if debug:
                    raise
                print(f"{prefix} {error_line(exc)}", file=sys.stderr)
                return EXIT_USAGE
        return wrapped
    return wrap


__all__ = ["COMMON_OPTIONS_HELP", "EXIT_DIVERGED", "EXIT_INTERRUPTED", "EXIT_USAGE", "command",
           "error_line", "user_errors"]
