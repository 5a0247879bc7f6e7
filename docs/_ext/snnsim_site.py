"""snnsim's own Sphinx extension (docs/conf.py loads it): what the site needs beyond
MyST and autodoc, each a small hook.

- README.md's and docs/*.md's relative links work on the site (:func:`site_links`);
- snnsim's docstring style, ``name : text`` lists and underlined section titles,
  renders as it reads (:func:`house_docstring`);
- a Python reference is linked where the API reference documents its object, shown
  unlinked where the object exists but has no entry, and left missing (an error
  with ``-W``) where it names nothing (:func:`_unlinked_but_real`);
- the front page is README.md, with every page of docs/ in its contents, in the
  order README links them (:func:`page_order`);
- the API reference's front page lists ``snnsim.__all__`` (:func:`toplevel_names`).
"""
from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import sys
from pathlib import Path

from pygments.lexers.special import TextLexer
from sphinx.util.nodes import make_refnode

import snnsim

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: The marker in api/index.md that the list of snnsim's top-level names replaces.
TOPLEVEL_MARKER = "<!-- snnsim-toplevel: docs/_ext/snnsim_site.py fills this list from snnsim.__all__ -->"


def toplevel_names() -> str:
    """A Markdown list of ``snnsim.__all__``: each name as a reference to where it is
    defined (``snnsim.network.Network``), linked to its entry (tests/test_site.py
    checks that every name is)."""
    lines = []
    for name in sorted(snnsim.__all__, key=str.lower):
        if name == "__version__":
            lines.append("- `snnsim.__version__`: the version, written once in `snnsim/version.py`")
            continue
        obj = getattr(snnsim, name)
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not hasattr(obj, "__qualname__"):
            module = _defining_module(name, obj)
        lines.append(f"- {{py:obj}}`{name} <{module}.{name}>` ({{py:mod}}`{module}`)")
    return "\n".join(lines)


def _defining_module(name: str, obj) -> str:
    """Where a data name of ``snnsim.__all__`` (``LIF``, ``PRESETS``) is assigned: the
    module of snnsim, imported by now, that holds ``obj`` under ``name`` and assigns it
    there (the others import it)."""
    for module in list(sys.modules.values()):
        modname = getattr(module, "__name__", "")
        if modname.split(".")[0] != "snnsim" or vars(module).get(name) is not obj:
            continue
        try:
            tree = ast.parse(inspect.getsource(module))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return modname
    raise ValueError(f"snnsim.{name}: no module of snnsim assigns it")


def python_object(dotted: str):
    """The object that ``dotted`` names (the longest importable module prefix, then
    attributes), or None when it names nothing."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for part in parts[n:]:
            if not hasattr(obj, part):
                return None
            obj = getattr(obj, part)
        return obj
    return None


def _unlinked_but_real(app, env, node, contnode):
    """A Python reference that Sphinx found no entry for: link it when the object it
    names is documented under its own name (``:class:`NeuronParams``` in a module that
    imports it), show it unlinked when it exists but has no page (a private helper, a
    module outside the API reference), and leave it missing, an error with ``-W``,
    when it names nothing at all: a renamed or removed name, a typo."""
    if node.get("refdomain") != "py":
        return None
    target, module, cls = node["reftarget"], node.get("py:module"), node.get("py:class")
    scopes = [f"{module}.{cls}." if module and cls else None, f"{module}." if module else None, ""]
    for scope in filter(lambda s: s is not None, scopes):
        obj = python_object(scope + target)
        if obj is None:
            continue
        domain = env.get_domain("py")
        for name in (_canonical_name(obj), scope + target):
            entry = domain.modules.get(name) or domain.objects.get(name)
            if entry is not None:
                return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id,
                                    contnode, name)
        return contnode
    return None


def _canonical_name(obj) -> str | None:
    """Where ``obj`` is defined (``snnsim.params.NeuronParams``), for a module, class or
    function; None for data (a constant has no name of its own)."""
    if inspect.ismodule(obj):
        return obj.__name__
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and isinstance(qualname, str) else None



#: ``name : text`` at a docstring's left margin: snnsim's way of listing parameters,
#: fields and return values (``layers : list of ...``, ``grads[i] : ...``, ``a, b : ...``).
NAME = r"\*{0,2}[A-Za-z_][\w.]*(\[\w+\])?"
ITEM = re.compile(rf"^(?P<names>{NAME}(, {NAME})*) : (?P<text>.*)$")
#: A heading underline under a docstring's section title (``Parameters`` / ``----------``).
UNDERLINE = re.compile(r"^(-{3,}|={3,}|~{3,})$")


def house_docstring(lines: list[str]) -> list[str]:
    """snnsim's docstrings in reST that renders as it reads in the source:

    - a ``name : text`` list (an item's lines continued one indent deeper) becomes a
      bullet list with the names in bold;
    - a titled section (``Parameters`` underlined) becomes a rubric, which stays in
      the entry instead of opening a section of the page;
    - an indented block after a paragraph (an example, a formula) is shown as code,
      as if the paragraph had ended in ``::``.

    Everything else, ``::`` blocks included, passes as written."""
    out: list[str] = []
    literal = in_item = skip = False
    last_text = ""                     # the last non-blank line before this one
    for i, line in enumerate(lines):
        if skip:                       # a section title's underline
            skip = False
            continue
        indented = line[:1].isspace() and bool(line.strip())
        if literal and (indented or not line.strip()):
            out.append(line)
            continue
        literal = False
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        item = ITEM.match(line)
        if line.strip() and not indented and UNDERLINE.match(nxt) and len(nxt) == len(line.strip()):
            out += ["", f".. rubric:: {line.strip()}", ""]
            in_item, skip = False, True
        elif item:
            if not in_item and out and out[-1].strip():
                out.append("")
            out.append(f"- **{item['names']}** : {item['text']}")
            in_item = True
        elif in_item and indented:
            out.append("  " + line.strip())
        elif indented and out and not out[-1].strip() and _is_paragraph(last_text):
            out += ["::", "", line]
            literal = True
        else:
            if in_item and line.strip():
                out.append("")
            in_item = False
            out.append(line)
        if line.rstrip().endswith("::"):
            literal, in_item = True, False
        if line.strip():
            last_text = line
    return out


def _is_paragraph(line: str) -> bool:
    """Whether ``line`` ends a plain paragraph at the margin (not a list item, a field,
    a directive or a ``::`` paragraph), so that an indented block after it is code."""
    return bool(line) and not line[:1].isspace() and not line.rstrip().endswith("::") \
        and not re.match(r"([-*+] |\d+[.)] |\.\. |:\w)", line) and not ITEM.match(line)


def _house_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    lines[:] = house_docstring(lines)


def _skip_tuple_fields(app, what, name, obj, skip, options):
    """A NamedTuple's fields are listed by its own docstring (``grads[i] : ...``), not
    once more as "Alias for field number 0"."""
    if what == "class" and (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


#: A Markdown link or image: ``[text](target)`` / ``![alt](target)``, target without spaces.
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def site_links(text: str, source_dir: Path, page_dir: Path) -> str:
    """Rewrite the relative links of a Markdown text that lies in ``source_dir`` (the
    repository root for README.md, docs/ for its pages) for the site, whose pages are
    docs/*.md: a page of docs/ stays a link between pages, README.md is the front
    page (docs/index.md); any other file of the
    repository (``reference/fidelity.md``, ``snnsim/params.py``, the notebook) becomes
    a download (MyST's ``path:``), copied into the site as it is in the tree. Targets
    are written relative to ``page_dir``, the folder of the page the text is shown on.
    A target that is not there is left alone, so MyST reports it and the build fails."""
    def one(match: re.Match) -> str:
        bang, label, target = match.groups()
        path, _, anchor = target.partition("#")
        if not path or re.match(r"[a-z][a-z0-9+.-]*:", path):    # #anchor, https:, path:
            return match.group(0)
        file = (source_dir / path).resolve()
        if not file.exists():
            return match.group(0)
        if file == ROOT / "README.md":                 # the front page
            file = DOCS / "index.md"
        relative = os.path.relpath(file, page_dir)
        if bang or DOCS in file.parents and file.suffix == ".md":
            target = relative + (f"#{anchor}" if anchor else "")
        else:
            target = f"path:{relative}"
        return f"{bang}[{label}]({target})"
    return LINK.sub(one, text)


def _fill_toplevel(app, docname: str, source: list[str]) -> None:
    if docname == "api/index":
        source[0] = source[0].replace(TOPLEVEL_MARKER, toplevel_names())


#: The line of docs/index.md that README.md takes the place of: the front page.
README_MARKER = "<!-- snnsim-readme: docs/_ext/snnsim_site.py puts README.md here -->"
#: The line of docs/index.md that the table of contents of docs/*.md takes the place of.
PAGES_MARKER = "<!-- snnsim-pages: docs/_ext/snnsim_site.py lists every docs/*.md page here -->"


def page_order(readme: str, pages: list[str]) -> list[str]:
    """Every page of ``pages`` (docs/*.md, by name without .md) in reading order: first
    as README.md's lists link them (its "where to go next"), then as its prose links
    them, then the pages it does not link, by name. Nothing is left out, so a new page
    is on the site without an edit, and where it goes is decided by the README."""
    listed, in_list = [], False
    for line in readme.splitlines():
        in_list = bool(re.match(r"[-*+] ", line)) or (in_list and line.startswith("  "))
        if in_list:
            listed.append(line)
    order: list[str] = []
    for text in ("\n".join(listed), readme):
        for match in LINK.finditer(text):
            path = match.group(3).partition("#")[0]
            name = path[len("docs/"):-len(".md")] if path.startswith("docs/") and path.endswith(".md") else ""
            if name in pages and name not in order:
                order.append(name)
    return order + sorted(set(pages) - set(order))


def pages_toctree(readme: str) -> str:
    """The front page's table of contents: every docs/*.md page (:func:`page_order`)."""
    pages = [p.stem for p in DOCS.glob("*.md") if p.stem != "index"]
    return "\n".join(["```{toctree}", ":hidden:", ":caption: Documentation", "",
                      *page_order(readme, pages), "```"])


def _page_source(app, docname: str, source: list[str]) -> None:
    """A page's links for the site; on the front page, README.md in place of its
    marker, its links written from the repository root (a plain ``source-read``, so
    any Sphinx and MyST will do; the build reads the page again when README changes)."""
    page_dir = (DOCS / docname).parent
    text = site_links(source[0], page_dir, page_dir)
    if README_MARKER in text or PAGES_MARKER in text:
        readme = ROOT / "README.md"
        app.env.note_dependency(str(readme))
        readme_text = readme.read_text(encoding="utf-8")
        text = text.replace(README_MARKER, site_links(readme_text, ROOT, page_dir))
        text = text.replace(PAGES_MARKER, pages_toctree(readme_text))
    source[0] = text


def _front_page_outdated(app, env, added, changed, removed) -> list[str]:
    """A page added to or removed from docs/ changes the front page's contents."""
    return ["index"] if added or removed else []


def setup(app):
    app.connect("source-read", _fill_toplevel)
    app.connect("source-read", _page_source)
    app.connect("env-get-outdated", _front_page_outdated)
    app.connect("missing-reference", _unlinked_but_real)
    app.connect("autodoc-process-docstring", _house_docstring)
    app.connect("autodoc-skip-member", _skip_tuple_fields)
    # docs/walkthrough.md's debugger sessions (```text-session, as code hosts name them)
    app.add_lexer("text-session", TextLexer)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
