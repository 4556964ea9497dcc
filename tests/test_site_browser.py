"""The built site, opened in headless Chromium: the index, the gate matrix and a run page with its plots.

Chromium comes from Debian's `chromium` package, which `make test` installs. Screenshots are
kept in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from train_support import prepared, smoke_args, train

from stack.cli import main as stack_main

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
# Debian's package here; GitHub's runners ship Google Chrome instead.
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("chromium is missing in CI: `make test` installs Debian's chromium package", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The real site, with one fresh smoke run shown beside the ledger."""
    tmp = tmp_path_factory.mktemp("site")
    run = tmp / "smoke-run"
    assert train(smoke_args(prepared(tmp), run)) == 0
    assert stack_main(["trace", str(run), "--prompt", "gate evidence"]) == 0  # lands in run/traces/
    subprocess.run([sys.executable, "tools/render_site.py", "--run", str(run)], cwd=ROOT, check=True)
    out = tmp / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "-q", "--site-dir", str(out)],
        cwd=ROOT,
        check=True,
        env=env,
    )
    return out, run.name


def browse(page: Path, screenshot: str) -> str:
    """The page's DOM after Chromium rendered it; a screenshot goes to test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    profile = ARTIFACTS / ".chromium-profile"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    shot = subprocess.run(
        [*common, f"--screenshot={ARTIFACTS / screenshot}", "--window-size=1280,1800", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.returncode == 0 and (ARTIFACTS / screenshot).stat().st_size > 0
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0
    return dom.stdout


def test_index_and_matrix_render(site: tuple[Path, str]) -> None:
    out, _ = site
    index = browse(out / "index.html", "index.png")
    assert "gatestack" in index and "<table" in index
    matrix = browse(out / "reference" / "gates" / "index.html", "gates.png")
    assert "GATE-INTEG-001" in matrix and "ACTIVE" in matrix
    assert matrix.count("<tr") > 30  # one row per gate


def test_run_page_shows_plots_and_verdicts(site: tuple[Path, str]) -> None:
    out, run_id = site
    page = browse(out / "reference" / "evidence" / run_id / "index.html", "run.png")
    assert "GATE-TRAIN-003" in page and "PASS" in page
    for plot in ("loss.svg", "lr.svg", "grad_norm.svg", "tokens_per_s.svg", "coherence.svg", "trace.svg"):
        assert plot in page, plot
        assert (out / "reference" / "evidence" / run_id / plot).stat().st_size > 1000
