"""The built site as a person sees it: headless Chromium at a desktop width and a phone width.

The ledger dashboard, a run page, a gate page, the benchmarks page and a comparison are opened at
1280 px and 390 px (viewport set exactly over the DevTools protocol, `tools/site_browser.py`).
On each, no table or figure may stick out of the content column or scroll sideways inside it (a
cut-off column hides the step column and the latest verdict), and every
badge must say its verdict in text. Screenshots go to test-artifacts/ for a person to look at.

Chromium comes from Debian's `chromium` package, which `make test` installs.
"""

from __future__ import annotations

import json
import os
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from tests.support.site_build import BuiltSite
from tools.site.browser import Chromium, find_chromium

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = find_chromium()
WIDTHS = (1280, 390)
# Page name → built page; {run} is the fresh smoke run, {other} a training run of the ledger.
PAGES = {
    "dashboard": "reference/index.html",
    "run": "reference/evidence/{run}/index.html",
    "gate": "reference/gates/GATE-TRAIN-005/index.html",
    "benchmarks": "reference/benchmarks/index.html",
    "compare": "reference/compare/{run}--{other}/index.html",
}
# How tall each screenshot is, from the top of the page: enough to show what the page is for.
SHOT_HEIGHT = 2400

if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("chromium is missing in CI: `make test` installs Debian's chromium package", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it)")


@pytest.fixture(scope="module")
def site(built_site: BuiltSite) -> dict[str, Any]:
    """The pages looked at, in the session's one build of the site (tests/support/site_build.py)."""
    pages = {
        name: built_site.out / page.format(run=built_site.run, other=built_site.other)
        for name, page in PAGES.items()
    }
    return {"out": built_site.out, "run": built_site.run, "other": built_site.other, "pages": pages}


@pytest.fixture(scope="module")
def looks(site: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Any]:
    """What Chromium found on every page at every width; screenshots land in test-artifacts/."""
    assert CHROMIUM is not None
    found = {}
    profile = tmp_path_factory.mktemp("chromium-profile")
    with Chromium(CHROMIUM, profile) as browser:
        for name, page in site["pages"].items():
            assert page.is_file(), page
            for width in WIDTHS:
                shot = ARTIFACTS / f"site-{name}-{width}.png"
                found[name, width] = browser.look(page.as_uri(), width, shot, SHOT_HEIGHT)
                assert shot.stat().st_size > 10_000, shot
    return found


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_no_table_or_figure_overflows_the_content_column(
    looks: dict[tuple[str, int], Any], name: str, width: int
) -> None:
    found = looks[name, width]
    assert found["width"] == width  # the viewport really is this wide
    assert found["column"]["scroll"] <= found["column"]["client"], found["column"]
    assert found["page"]["scroll"] <= found["page"]["client"], found["page"]
    assert found["overflowing"] == [], f"{name} at {width} px: {found['overflowing']}"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_every_badge_says_what_it_means(looks: dict[tuple[str, int], Any], name: str, width: int) -> None:
    badges = looks[name, width]["badges"]
    assert badges, f"{name} shows no badge"
    assert all(b["text"] for b in badges), [b for b in badges if not b["text"]]


def test_verdicts_differ_by_colour_too_and_stale_ones_are_marked(looks: dict[tuple[str, int], Any]) -> None:
    """Text first, colour as well: PASS, WARN and FAIL never look the same, and a stale verdict is
    outlined whatever its verdict."""
    badges = [b for (name, _), found in looks.items() for b in found["badges"]]
    colour = {}
    for verdict in ("pass", "warn", "fail"):
        fresh = [b for b in badges if f"gs-v-{verdict}" in b["classes"] and "gs-stale" not in b["classes"]]
        assert fresh, f"no {verdict.upper()} badge on the pages looked at"
        colour[verdict] = {b["background"] for b in fresh}
        assert len(colour[verdict]) == 1, colour[verdict]
    assert len(set.union(*colour.values())) == 3, colour
    stale = [b for b in badges if "gs-stale" in b["classes"]]
    assert stale and all(b["border"] == "dashed" for b in stale)
    assert all("stale" in b["text"] or b["text"].endswith("*") for b in stale)


def _html(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def test_run_page_shows_samples_resumes_hashes_and_checkpoint(site: dict[str, Any]) -> None:
    page = site["pages"]["run"]
    html = _html(page)
    record = json.loads((Path(site["out"]).parent / site["run"] / "metadata.json").read_text())
    assert "Samples the monitor scored" in html and "mean of the step" in html
    for prompt in record["config"]["monitor"]["prompts"]:
        assert f"<code>{prompt.strip()}" in html
    assert "Resumes and mixture changes" in html and "mixture changed" in html
    assert record["run"]["stop_reason"] in html
    assert record["data"]["manifest_sha256"][:12] in html
    assert record["data"]["tokenizer_sha256"][:12] in html
    manifest = page.parent / "checkpoint-manifest.json"
    assert "checkpoint-manifest.json" in html and manifest.is_file()
    assert json.loads(manifest.read_text())["step"] == record["checkpoint"]["step"]
    for plot in ("loss.svg", "lr.svg", "grad_norm.svg", "tokens_per_s.svg", "coherence.svg", "trace.svg"):
        assert plot in html, plot
        assert (page.parent / plot).stat().st_size > 1000
    assert "<details" in html  # the full JSON of each verdict, one click away
    # No raw JSON but inside the <details> blocks (sample texts are the model's, anything goes).
    article = html[html.index("<article") : html.index("</article>")]
    outside = re.sub(r'<details.*?</details>|<span class="gs-sample">.*?</span>', "", article, flags=re.S)
    assert '{"' not in unescape(outside)


def test_dashboard_shows_the_matrix_its_filters_and_the_release(site: dict[str, Any]) -> None:
    html = _html(site["pages"]["dashboard"])
    assert "Runs × gates" in html and "Needs attention" in html and "Latest release" in html
    assert 'class="gs-matrix"' in html
    kinds = re.findall(r'href="(ledger/train--all/)"', html)
    assert kinds, "no filter by run kind"
    assert (Path(site["out"]) / "reference" / kinds[0] / "index.html").is_file()
    assert "stdlib-byte-demo" in html


def test_gate_page_links_its_code_and_lists_its_history(site: dict[str, Any]) -> None:
    page = site["pages"]["gate"]
    html = _html(page)
    assert "Verdict history" in html and site["run"] in html
    sources = re.findall(r'href="([^"#]*source/[^"#]+)#(L-\d+)"', html)
    assert sources, "no binding or falsifier links to the source"
    for href, anchor in sources:
        target = (page.parent / href / "index.html").resolve()
        assert target.is_file(), href
        assert f'id="{anchor}"' in target.read_text(encoding="utf-8"), (href, anchor)


def test_index_links_the_dashboard(site: dict[str, Any]) -> None:
    assert 'href="reference/"' in _html(Path(site["out"]) / "index.html")
