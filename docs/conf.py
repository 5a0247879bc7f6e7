"""Sphinx configuration of snnsim's documentation site (issue 23).

Build it (the command CI runs, warnings as errors; see docs/site.md)::

    .venv/bin/python3 -m sphinx -W --keep-going -b html docs build/site

Why Sphinx with MyST rather than MkDocs with mkdocstrings: snnsim's docstrings are
reST, with ``:func:``, ``:class:``, ``:mod:`` and ``:data:`` roles and ``::`` literal
blocks. Sphinx's autodoc renders them as written and resolves every role to its
target, so a role that names nothing is a warning, and with ``-W`` an error;
mkdocstrings reads Google/NumPy-style docstrings as Markdown and would show those
roles as raw text. MyST lets the pages of docs/ stay plain Markdown that reads the
same on a code host and on the site.

What the site holds: the front page (index.md: README.md), every page
docs/*.md (all of them, in the order README.md links them, so a page added there is
on the site without an edit here: docs/_ext/snnsim_site.py), and the API reference
(api/*.md: autodoc of the public modules). Nothing is
downloaded at build time: no intersphinx, so names outside snnsim (NumPy, the
standard library) are not linked (``nitpick_ignore_regex`` below lists them).
A reference to a name of snnsim is linked to its entry where the API reference has
one, shown unlinked where it exists without one, and an error (``nitpicky``, ``-W``)
where it names nothing: a dangling reference fails the build.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))          # the source tree's snnsim, not an installed one
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import snnsim  # noqa: E402

project = "snnsim"
author = "the snnsim developers"
copyright = "the snnsim developers (MIT licence)"
version = release = snnsim.__version__

extensions = [
    "myst_parser",           # docs/*.md and README.md
    "sphinx.ext.autodoc",    # the API reference, from the docstrings
    "sphinx.ext.viewcode",   # each documented object links to its source
    "snnsim_site",           # docs/_ext/snnsim_site.py: links, docstring style, references
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_ext"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3               # [text](page.md#a-section) resolves

# A reference that names nothing fails the build (with -W) ...
nitpicky = True
# ... except names of other projects, which no inventory is fetched for.
nitpick_ignore_regex = [
    (r"py:.*", r"(builtins\.)?(int|float|str|bool|bytes|dict|list|tuple|set|object|type|None|"
               r"callable|Callable|Iterable|Iterator|Sequence|Mapping|Any|Path|optional)"),
    (r"py:.*", r"(numpy|np|scipy|h5py|typing|types|collections|pathlib|argparse|os|io|"
               r"optuna|matplotlib|cupy|torch|array_api_compat|array_api_strict|numba|"
               r"threadpoolctl|filelock)(\..*)?"),
]

autodoc_member_order = "bysource"
# every public name of a module (its __all__ where it has one), with or without a docstring
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True       # `neuron=NeuronParams()` rather than its repr

html_theme = "alabaster"
html_title = f"snnsim {release}"
html_theme_options = {"description": "TSSL-BP, correct, explained, fast",
                      "fixed_sidebar": True}
html_static_path: list[str] = []

