"""The repository's site as the site tests see it: built once a session, strict.

The site is the repository's own, rendered with one fresh smoke run (resumed with a new mixture,
then traced) shown beside the ledger and compared with the ledger's newest training run; the link
checker and the browser test both read this one build (a build takes half a minute).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from stack.cli import main as stack_main
from tests.support.train_support import prepared, smoke_args, train

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BuiltSite:
    """Where the site was built, the fresh run shown in it and the ledger run it is compared with."""

    out: Path
    run: str
    other: str


def ledger_train_run() -> str:
    """The newest training run of the repository's ledger, to compare the fresh run with."""
    found = []
    for path in (ROOT / "evidence" / "runs").glob("*/metadata.json"):
        run = json.loads(path.read_text())["run"]
        if run["kind"] == "train":
            found.append((run["started"], run["id"]))
    assert found, "the ledger holds no training run to compare with"
    return max(found)[1]


def build_site(tmp: Path) -> BuiltSite:
    """Train, resume and trace a smoke run in `tmp`, render the site with it and build it strict."""
    run = tmp / "smoke-run"
    assert train(smoke_args(prepared(tmp), run)) == 0
    resume = ["train", "--resume", str(run), "--set", "train.steps=8", "--set", "data.weights={main = 0.5}"]
    assert train(resume) == 0
    assert stack_main(["trace", str(run), "--prompt", "gate evidence"]) == 0  # lands in run/traces/
    other = ledger_train_run()
    render = [sys.executable, "tools/render_site.py", "--run", str(run), "--compare", run.name, other]
    subprocess.run(render, cwd=ROOT, check=True)
    out = tmp / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    subprocess.run([mkdocs, "build", "--strict", "-q", "--site-dir", str(out)], cwd=ROOT, check=True, env=env)
    return BuiltSite(out, run.name, other)


def build_site_once(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """The site, built once a test session: by the one process, or under pytest-xdist by the first
    worker to ask, under a lock the others wait on (a build rewrites the repository's
    docs/reference/, so two at once would race), in the directory every worker's temporary
    directories share."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build_site(tmp_path_factory.mktemp("site"))
    shared = tmp_path_factory.getbasetemp().parent
    kept = shared / "site.json"
    with FileLock(shared / "site.lock"):
        if kept.is_file():
            built = json.loads(kept.read_text(encoding="utf-8"))
            return BuiltSite(Path(built.pop("out")), **built)
        (shared / "site").mkdir(exist_ok=True)
        site = build_site(shared / "site")
        kept.write_text(json.dumps({**asdict(site), "out": str(site.out)}), encoding="utf-8")
        return site
