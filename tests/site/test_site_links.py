"""Every link of the built site lands somewhere: the page exists and so does the anchor.

`mkdocs build --strict` checks the Markdown links of every page, but not anchors into other
pages nor links inside raw HTML (a source copy's line spans, a badge's cell). This test reads
the session's one build of the repository's site (tests/support/site_build.py, a fresh run shown beside
the ledger) and follows every relative href and src of the pages people browse.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote

from tests.support.site_build import BuiltSite

ROOT = Path(__file__).resolve().parents[2]
LINK_RE = re.compile(r'(?:href|src)="([^"]+)"')
ANCHOR_RE = re.compile(r'(?:id|name)="([^"]+)"')
EXTERNAL = ("http:", "https:", "mailto:", "data:", "javascript:")


@cache
def _anchors(page: Path) -> frozenset[str]:
    return frozenset(ANCHOR_RE.findall(page.read_text(encoding="utf-8", errors="replace")))


def broken_links(site: Path) -> list[str]:
    """Every relative link of the site's pages whose file or anchor is missing."""
    broken = []
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html":  # its links are written for any depth of the site
            continue
        for href in LINK_RE.findall(page.read_text(encoding="utf-8", errors="replace")):
            if href.startswith(EXTERNAL):
                continue
            path, _, anchor = href.partition("#")
            path = unquote(path.split("?")[0])
            target = (page.parent / path).resolve() if path else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(site)}: {href}"
            if not target.is_file():
                broken.append(f"{where} (no such file)")
            elif anchor and target.suffix == ".html" and unquote(anchor) not in _anchors(target):
                broken.append(f"{where} (no such anchor)")
    return broken


def test_every_link_and_anchor_resolves(built_site: BuiltSite) -> None:
    site = built_site.out
    assert (site / "reference" / "index.html").is_file()
    assert broken_links(site) == []


def test_the_checker_sees_a_broken_anchor(tmp_path: Path) -> None:
    page = tmp_path / "a" / "index.html"
    page.parent.mkdir()
    (tmp_path / "b.html").write_text('<p id="here">b</p>')
    page.write_text('<a href="../b.html#here">ok</a> <a href="../b.html#gone">no</a> <a href="../c/">no</a>')
    assert broken_links(tmp_path) == [
        "a/index.html: ../b.html#gone (no such anchor)",
        "a/index.html: ../c/ (no such file)",
    ]
