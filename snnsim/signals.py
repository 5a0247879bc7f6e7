"""Ctrl-C and SIGTERM from a command's start to its exit: one line, exit status 130.

Python's defaults end a command badly: Ctrl-C during the imports or the data
loading prints a ``KeyboardInterrupt`` traceback, and SIGTERM (what job schedulers
send) kills the process at once, without its ``finally`` clauses, so a run folder
is left half made. Here, from the first line of an entry point (:func:`main`) to its
exit:

- SIGINT and SIGTERM raise ``KeyboardInterrupt`` where the command is (SIGTERM as
  :class:`Terminated`, a ``KeyboardInterrupt``), once: the ``finally`` clauses
  that clean up run, and a second signal while they do is not acted on (a second
  ``KeyboardInterrupt`` raised inside a clean-up is the traceback this avoids);
- the command's wrapper (:func:`snnsim.cli.command`, :func:`main`) turns the
  interrupt into one line on stderr, ``snnsim.train: interrupted (Ctrl-C)`` or
  ``... terminated (SIGTERM)``, and exit status 130;
- a block that must not be cut in half (a checkpoint's save and its promotion)
  runs under :func:`deferred`: a signal arriving within it is delivered when it
  ends;
- a signal arriving while the garbage collector runs a finaliser (an ``__del__``,
  which would print the interrupt as "Exception ignored" and drop it), or while numba
  compiles or loads a kernel (LLVM calls back into Python from C there: an interrupt
  raised in such a callback is dropped, and once the process died of SIGSEGV), is sent
  again a moment later; so is one raised where no frame shows the danger and Python
  still drops it (a weakref callback, such as the import system's clean-up of a module
  lock): ``sys.unraisablehook`` sees it dropped;
- an ignored SIGINT (a job started in the background with ``&``) stays ignored.

The training loop installs its own handlers on top (:func:`snnsim.training.runfolder.
sigterm_as_interrupt`: a first signal stops at the next safe point); these are the
ones in force outside that loop. This module imports nothing heavy, so that an entry
point installs it before NumPy and h5py load.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import queue
import signal
import sys
import threading
import time

#: Exit status after Ctrl-C or SIGTERM (128 + SIGINT's number, as shells report it).
EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM: the command stops as after Ctrl-C."""


class _State:
    """Whether an interrupt was raised already (then further signals are not acted on)."""

    raised = False
    #: (the interrupt just raised, its signal), until it is seen swallowed or a new install
    raising: tuple | None = None
    #: the ``sys.unraisablehook`` before :func:`install` (None: not installed)
    previous_hook = None
    #: the thread that sends signals again (:func:`_redeliver`), once started
    redeliverer: threading.Thread | None = None


def is_sigterm(exc: BaseException) -> bool:
    """Whether the interrupt ``exc`` came from SIGTERM (this module's :class:`Terminated`
    or the training loop's, both raised with the argument ``"SIGTERM"``)."""
    return isinstance(exc, Terminated) or exc.args[:1] == ("SIGTERM",)


def describe(exc: BaseException) -> str:
    """``terminated (SIGTERM)`` or ``interrupted (Ctrl-C)``."""
    return "terminated (SIGTERM)" if is_sigterm(exc) else "interrupted (Ctrl-C)"


#: Seconds after which a signal that arrived inside a finaliser is sent again.
REDELIVER_S = 0.01


def _handler(signum, frame):
    if _State.raised:            # a clean-up is running: let it finish
        return
    if _unsafe_to_raise(frame):
        # Raised inside a finaliser, an exception is printed as "Exception ignored in ..."
        # and dropped (the command would go on as if no signal had come); raised inside
        # numba's compiler, it can cross LLVM's C code through a ctypes callback, which
        # drops it too and has left the process to die of SIGSEGV. Send the signal again a
        # moment later, when that code has returned.
        _redeliver(signum)
        return
    _State.raised = True
    exc = Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()
    _State.raising = (exc, signum)
    raise exc


def _unraisable(unraisable) -> None:
    """``sys.unraisablehook`` while the handlers are installed: the interrupt this module
    raised, swallowed where Python cannot pass an exception on (a weakref callback such
    as the import system's module-lock clean-up, which no frame check can tell from the
    code that dropped the reference; a callback from C), is sent again a moment later
    instead of being printed and lost. Anything else goes to the hook in place before."""
    raising = _State.raising
    if raising is not None and unraisable.exc_value is raising[0]:
        _State.raising = None
        _State.raised = False
        _redeliver(raising[1])
        return
    (_State.previous_hook or sys.__unraisablehook__)(unraisable)


#: Packages whose code an interrupt must not cut: numba's compiler and cache loader and
#: llvmlite call back into Python from LLVM's C code (ctypes callbacks).
UNSAFE_PACKAGES = ("llvmlite", "numba")


def _unsafe_to_raise(frame) -> bool:
    """Whether ``frame`` runs inside an object's ``__del__`` or a ``weakref.finalize``
    callback (the garbage collector calls them wherever the program is, and swallows what
    they raise), inside one of :data:`UNSAFE_PACKAGES`, or inside this module's own
    redelivery."""
    dirs = tuple(f"{os.sep}{name}{os.sep}" for name in UNSAFE_PACKAGES)
    while frame is not None:
        code = frame.f_code
        if code is _unraisable.__code__ or code is _redeliver.__code__:
            # a signal that came while a redelivery was being arranged (inside the
            # unraisable hook, or while the redelivery thread starts): raised here, it
            # would be dropped with the first
            return True
        if code.co_name == "__del__" or (code.co_name == "__call__"
                                         and code.co_filename.endswith("weakref.py")):
            return True
        if any(d in code.co_filename for d in dirs):
            return True
        frame = frame.f_back
    return False


#: Signals to send again, read by one thread (a ``SimpleQueue``: its ``put`` may be called
#: from a signal handler, a finaliser or a callback, even re-entrantly).
_REDELIVERIES: queue.SimpleQueue = queue.SimpleQueue()


def _redeliver(signum: int) -> None:
    """Send ``signum`` to this process again in :data:`REDELIVER_S`, from the redelivery
    thread (started the first time: a thread started per signal made the main thread wait
    for it, and a busy machine let the signal come back during that wait)."""
    if _State.redeliverer is None:
        _State.redeliverer = threading.Thread(target=_redelivery_loop, daemon=True,
                                              name="snnsim-signal-redelivery")
        _State.redeliverer.start()
    _REDELIVERIES.put(signum)


def _redelivery_loop() -> None:
    while True:
        signum = _REDELIVERIES.get()
        time.sleep(REDELIVER_S)
        os.kill(os.getpid(), signum)


def _after_fork_in_child() -> None:
    """A forked child has no redelivery thread (only the forking thread is copied)."""
    _State.redeliverer = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> dict:
    """Install the handlers (main thread only; elsewhere nothing happens); returns the
    previous ones for :func:`restore`."""
    previous = {}
    if not _in_main_thread():
        return previous
    _State.raised = False
    _State.raising = None
    if sys.unraisablehook is not _unraisable:
        previous["unraisablehook"] = _State.previous_hook = sys.unraisablehook
        sys.unraisablehook = _unraisable
    for signum in SIGNALS:
        old = signal.getsignal(signum)
        if signum == signal.SIGINT and old == signal.SIG_IGN:
            continue
        previous[signum] = old
        signal.signal(signum, _handler)
    return previous


def restore(previous: dict) -> None:
    """Put back what :func:`install` (or :func:`deferred`) replaced."""
    for key, old in previous.items():
        if key == "unraisablehook":
            sys.unraisablehook = old
            _State.previous_hook = None
        elif old is not None:
            signal.signal(key, old)


def hold() -> None:
    """From now on the handlers do not raise (an interrupt is being handled: its clean-up
    and its message must not be cut by a second signal)."""
    _State.raised = True


def ignore() -> None:
    """Ignore both signals for good (the process is about to exit)."""
    if _in_main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def deferred():
    """Within the block SIGINT and SIGTERM are only recorded; at its end each is
    delivered, in order, to the handler in place before (which may raise there)."""
    if not _in_main_thread():
        yield
        return
    got: list[int] = []
    previous = {}
    for signum in SIGNALS:
        old = signal.getsignal(signum)
        if old in (signal.SIG_IGN, None):
            continue
        previous[signum] = old
        signal.signal(signum, lambda s, f: got.append(s))
    try:
        yield
    finally:
        restore(previous)
        for signum in got:
            signal.raise_signal(signum)


def report(name: str, exc: BaseException) -> int:
    """Print the one line of ``snnsim.<name>`` interrupted by ``exc``; EXIT_INTERRUPTED."""
    hold()
    try:
        print(f"snnsim.{name}: {describe(exc)}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed: the exit status still says it
        pass
    return EXIT_INTERRUPTED


def main(name: str, module: str, function: str = "main") -> None:
    """The entry point ``python3 -m snnsim.<name>``: handlers installed first, then
    ``module`` imported and its ``function()`` run; exits with its status (130 after
    Ctrl-C or SIGTERM, with one line), signals ignored from then on."""
    try:
        install()
        code = getattr(importlib.import_module(module), function)()
    except KeyboardInterrupt as exc:
        code = report(name, exc)
    except SystemExit as exc:
        code = exc.code
    finish(code)


def finish(code) -> None:
    """End the process with ``code``, the signals ignored from here on. After an
    interrupt the process ends at once (``os._exit``; its files are closed and
    flushed already): an interrupt that landed inside code some extension module ran
    through ``PyRun_String`` (Cython's module set-up does) leaves the interpreter
    marked as stopped by Ctrl-C, and its normal exit would then kill itself with
    SIGINT (status -2, not 130) after the one line was printed."""
    ignore()
    if code == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(EXIT_INTERRUPTED)
    sys.exit(code)


__all__ = ["EXIT_INTERRUPTED", "Terminated", "deferred", "describe", "finish", "hold", "ignore",
           "install", "is_sigterm", "main", "report", "restore"]
