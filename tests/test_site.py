"""The documentation site (docs/site.md): it builds with warnings as errors, and a
browser shows what it should.

The site is built once per session into a scratch folder with the command of
.ci/run (``-W``: a reference that names nothing, a page that is not there or
reST that docutils rejects fails the build, and the warnings are the failure's
message). Headless Chromium then opens the front page and one API page; the
checks read the DOM Chromium renders (``--dump-dom``) and a screenshot of the
front page. What is expected is read from the sources, not written here: the
README's title, every page of docs/, ``snnsim.__all__`` and ``Network``'s methods.

Skips only where Chromium (Debian's ``chromium``) or the docs extra (Sphinx, MyST)
is missing; CI installs both (scripts/setup.sh --test)."""
from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import snnsim
from snnsim.network import Network

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Seconds allowed for the build (about 10 s of CPU) and for one browser call.
BUILD_TIMEOUT, BROWSER_TIMEOUT = 300, 120
#: The screenshot's window, in CSS pixels.
WINDOW = (1000, 700)

needs_sphinx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("sphinx", "myst_parser")),
    reason="no Sphinx/MyST: pip install -e '.[docs]'")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium (Debian's chromium package; bash scripts/setup.sh --test installs it)")


def build_site(out: Path) -> subprocess.CompletedProcess:
    """The site as .ci/run builds it, into ``out`` (doctrees beside it, so a build
    of the working tree's build/site is neither used nor touched)."""
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out.parent / "doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT, cwd=REPO)


@pytest.fixture(scope="module")
def site_ext():
    """docs/_ext/snnsim_site.py, the site's own Sphinx extension."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import snnsim_site
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return snnsim_site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "html"
    done = build_site(out)
    assert done.returncode == 0, f"the site does not build:\n{done.stderr[-6000:]}"
    return out


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with a throwaway profile (``--no-sandbox``: CI runs as root;
    ``--disable-dev-shm-usage``: a container's /dev/shm may be too small for it)."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=BROWSER_TIMEOUT)


class Page(HTMLParser):
    """What a rendered page shows: the text of each heading, every element id and
    every link, as (target, the text it wraps)."""

    def __init__(self, html: str):
        super().__init__()
        self.headings: list[str] = []
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []
        self._heading = self._link = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []
        if tag == "a" and attrs.get("href"):
            self._link = (attrs["href"], [])

    def handle_endtag(self, tag):
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()).rstrip("¶").strip())
            self._heading = None
        if tag == "a" and self._link:
            href, text = self._link
            self.links.append((href, " ".join("".join(text).split())))
            self._link = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading.append(data)
        if self._link:
            self._link[1].append(data)


def rendered(page: Path, profile: Path) -> Page:
    done = chromium("--dump-dom", page.as_uri(), profile=profile)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-3000:]
    return Page(done.stdout)


#: Sphinx's smart quotes, undone for comparing rendered text with its Markdown source.
SMART = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


def plain(text: str) -> str:
    return text.translate(SMART).replace("\u2014", "---").replace("\u2013", "--").replace("\u2026", "...")


def title(markdown: Path) -> str:
    """The first ``# `` heading of a Markdown file, as plain text (no backticks)."""
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].replace("`", "").strip()
    raise AssertionError(f"{markdown.relative_to(REPO)} has no '# ' title")


@needs_sphinx
@needs_browser
def test_front_page_is_the_readme_and_lists_every_page(site, tmp_path):
    page = rendered(site / "index.html", tmp_path / "profile")
    assert plain(title(REPO / "README.md")) in map(plain, page.headings)
    # every docs/*.md page is in the navigation, by its title (the toctree's glob)
    shown = {plain(text) for _, text in page.links}
    missing = [p.name for p in sorted(DOCS.glob("*.md"))
               if p.name != "index.md" and plain(title(p)) not in shown]
    assert not missing, f"pages not in the front page's navigation: {missing}"
    assert "api/index.html" in {href for href, _ in page.links}


@needs_sphinx
@needs_browser
def test_api_page_documents_network_and_its_methods(site, tmp_path):
    page = rendered(site / "api" / "network.html", tmp_path / "profile")
    assert "snnsim.network.Network" in page.ids
    methods = [name for name, member in vars(Network).items()
               if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))]
    assert {"forward", "backward"} <= set(methods)
    absent = [m for m in methods if f"snnsim.network.Network.{m}" not in page.ids]
    assert not absent, f"Network methods without an entry on api/network.html: {absent}"


@needs_sphinx
@needs_browser
def test_every_top_level_name_links_to_its_entry(site, tmp_path):
    page = rendered(site / "api" / "index.html", tmp_path / "profile")
    anchors = {href.split("#", 1)[1] for href, _ in page.links if "#" in href}
    unlinked = [name for name in snnsim.__all__ if name != "__version__"
                and not any(a == f"snnsim.{name}" or a.endswith(f".{name}") for a in anchors)]
    assert not unlinked, f"snnsim.__all__ names the API reference does not link to an entry: {unlinked}"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@needs_sphinx
@needs_browser
def test_front_page_screenshot_shows_a_page(site, tmp_path):
    shot = tmp_path / "front.png"
    done = chromium(f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}",
                    (site / "index.html").as_uri(), profile=tmp_path / "profile")
    assert done.returncode == 0 and shot.exists(), done.stderr[-3000:]
    assert png_size(shot) == WINDOW
    import matplotlib.image
    pixels = matplotlib.image.imread(shot)[..., :3]
    # not blank: text (dark pixels) on the page's light background, in more than a few rows
    dark_rows = (pixels.max(axis=2) < 0.5).any(axis=1).sum()
    assert dark_rows > WINDOW[1] // 10, f"{dark_rows} rows with dark pixels: the page looks empty"


@needs_sphinx
def test_a_reference_fails_only_when_it_names_nothing(site_ext):
    """The rule of the missing-reference hook: an existing object without an entry is
    shown unlinked, a name that is not there stays an error."""
    assert site_ext.python_object("snnsim.network.Network.forward") is Network.forward
    assert site_ext.python_object("snnsim.training.config.TrainConfig") is not None
    for gone in ("snnsim.config.TrainConfig", "snnsim.network.Network.no_such_method", "nosuchpackage.x"):
        assert site_ext.python_object(gone) is None, gone


@needs_sphinx
def test_house_docstring_style_becomes_rest(site_ext):
    lines = ["A network.", "", "Parameters", "----------", "layers : the layers, in order,",
             "    input side first.", "seed, dtype : as given.", "Returns the net.", "",
             "An example:", "", "    net = Network(layers)", "    net.forward(x)", "",
             "Literal::", "", "    a : b", "", "Done."]
    assert site_ext.house_docstring(lines) == [
        "A network.", "", "", ".. rubric:: Parameters", "",
        "- **layers** : the layers, in order,", "  input side first.", "- **seed, dtype** : as given.",
        "", "Returns the net.", "", "An example:", "", "::", "", "    net = Network(layers)",
        "    net.forward(x)", "", "Literal::", "", "    a : b", "", "Done."]


@needs_sphinx
def test_links_to_files_outside_docs_become_downloads(site_ext, tmp_path):
    text = ("[model](docs/model.md#time-and-constants) [nb](examples/walkthrough.ipynb) "
            "[web](https://example.org/x.md) [gone](docs/no_such_page.md) ![fig](plots/README.md)")
    assert site_ext.site_links(text, REPO, DOCS) == (
        "[model](model.md#time-and-constants) [nb](path:../examples/walkthrough.ipynb) "
        "[web](https://example.org/x.md) [gone](docs/no_such_page.md) ![fig](../plots/README.md)")
    # from a page of docs/api/: the README is the front page, a source file a download
    assert site_ext.site_links("[home](../../README.md#x) [src](../../snnsim/pool.py)",
                               DOCS / "api", DOCS / "api") == \
        "[home](../index.md#x) [src](path:../../snnsim/pool.py)"


@needs_sphinx
def test_pages_in_the_order_readme_links_them_and_none_left_out(site_ext):
    readme = ("Set up: see [install](docs/install.md). Numbers in [results](docs/results.md#mlp).\n\n"
              "## Where next\n\n- [Commands](docs/commands.md), [results](docs/results.md)\n"
              "  and [the model](docs/model.md).\n- [Install](docs/install.md) again\n"
              "- [elsewhere](reference/README.md)\n")
    pages = ["results", "model", "install", "commands", "zeta", "alpha"]
    assert site_ext.page_order(readme, pages) == ["commands", "results", "model", "install", "alpha", "zeta"]
