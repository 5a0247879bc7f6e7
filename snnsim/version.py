"""The version of snnsim, in one place, and where the running code came from.

``__version__`` below is the only place the version is written: setuptools
reads it at build time (``pyproject.toml``: ``dynamic = ["version"]``), and
``snnsim.__version__``, every checkpoint, recording and run folder take it
from here.

:func:`source_info` says which code a run used, recorded beside the version:

- in a git checkout of this project (the development set-up, an editable
  install): the commit of the checkout, ``-dirty`` when the package's own
  files differ from it;
- installed from a wheel or an sdist (``site-packages/snnsim``): no commit,
  because there is none to know; the source says ``installed package
  snnsim==X``. Git is never asked about a folder that merely contains the
  package (a ``.venv`` inside some other repository, the current directory).
"""
from __future__ import annotations

import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

__version__ = "0.1.0"

#: The distribution name, as in ``pyproject.toml``.
DIST_NAME = "snnsim"
#: ``name = "snnsim"`` in the ``[project]`` table of a source tree's pyproject.toml.
_NAME_RE = re.compile(r'^\s*name\s*=\s*["\']' + DIST_NAME + r'["\']\s*$', re.MULTILINE)


def package_dir() -> Path:
    """The folder of the imported ``snnsim`` package."""
    return Path(__file__).resolve().parent


def _git(args: list[str], cwd: Path) -> str | None:
    """``git -C cwd args...``: its stdout, or None when git is missing or fails.

    ``GIT_*`` variables of the caller (``GIT_DIR`` in a hook, say) are dropped so
    that git looks at ``cwd`` and nothing else.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                              timeout=10, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def is_source_tree(root: Path) -> bool:
    """True when ``root`` is this project's source tree: its pyproject.toml names snnsim."""
    try:
        return bool(_NAME_RE.search((root / "pyproject.toml").read_text()))
    except OSError:
        return False


def checkout_commit(pkg: Path) -> str | None:
    """The commit of the git checkout whose top folder holds the package ``pkg``
    (``<sha>``, or ``<sha>-dirty`` when tracked or new files under ``pkg`` differ
    from it); None unless ``pkg``'s parent is the top of a checkout of this project
    in which ``pkg/__init__.py`` is tracked."""
    root = pkg.parent
    if not is_source_tree(root):
        return None
    top = _git(["rev-parse", "--show-toplevel"], root)
    if top is None or Path(top.strip()).resolve() != root.resolve():
        return None
    rel = pkg.name
    if _git(["ls-files", "--error-unmatch", "--", f"{rel}/__init__.py"], root) is None:
        return None
    head = _git(["rev-parse", "--verify", "HEAD"], root)
    if head is None:
        return None
    status = _git(["status", "--porcelain", "--", rel], root)
    dirty = status is None or bool(status.strip())
    return head.strip() + ("-dirty" if dirty else "")


def source_info(pkg: Path | None = None) -> dict:
    """Which snnsim ran: ``{"snnsim_version", "git_commit", "source"}``.

    ``git_commit`` is a commit (see :func:`checkout_commit`) or None; ``source``
    says where the code came from in words: ``"git checkout"``, ``"source tree
    without git history (snnsim==X)"`` (an unpacked sdist, say) or ``"installed
    package snnsim==X"``.
    """
    pkg = package_dir() if pkg is None else Path(pkg)
    commit = checkout_commit(pkg)
    if commit is not None:
        source = "git checkout"
    elif is_source_tree(pkg.parent):
        source = f"source tree without git history ({DIST_NAME}=={__version__})"
    else:
        source = f"installed package {DIST_NAME}=={__version__}"
    return {"snnsim_version": __version__, "git_commit": commit, "source": source}


@lru_cache(maxsize=1)
def _current() -> tuple:
    return tuple(source_info().items())


def current_source_info() -> dict:
    """:func:`source_info` of the running package (git is asked once per process)."""
    return dict(_current())


__all__ = ["DIST_NAME", "__version__", "checkout_commit", "current_source_info", "is_source_tree",
           "package_dir", "source_info"]
