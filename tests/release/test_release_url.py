"""`stack release --weights-url`: weights too large for git are cited by URL, and still held to the record.

A 124 M model's weights are half a gigabyte: committed, they would swell every clone and every
copy of the repository. Released with `--weights-url`, the weights stay out of the repository;
the registry cites them at the URL with the sha256 and size the run's record hashed, so the
release rules hold them to the record as they hold a committed file, the card says where to
fetch them, the readers refuse to start without them (naming the URL), and a copy downloaded
into the release directory is hashed by the loader and by the integrity check.

The scratch repository is built as in tests/release/test_release.py: one smoke run filed in its ledger
as made from a clean tree at HEAD, released into a copy of this repository's registry.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

import contracts.evidence
from contracts.evidence import EVIDENCE_FILE, REPO_ROOT, CodeInfo, EvidenceRecord, read_evidence
from contracts.registry import REGISTRY_FILE, read_registry
from contracts.spec import load_spec
from stack.cli import main
from stack.train import checkpoint as ckpt
from tests.support.release_support import head, release_argv
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.audit import load_evidence
from tools.integrity.check import Checker

NAME, VERSION = "big", "0.1.0"
RELEASED = f"evidence/models/{NAME}-{VERSION}"
URL = "https://huggingface.co/gatestack/big/resolve/main/model.safetensors"
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The scratch repository with the run released by URL, and what `stack release` printed."""
    root = tmp_path_factory.mktemp("release-url") / "repo"
    (root / "evidence").mkdir(parents=True)
    shutil.copy(REPO_ROOT / REGISTRY_FILE, root / REGISTRY_FILE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            contracts.evidence, "collect_code", lambda _repo: CodeInfo(git_sha=head(), git_dirty=False)
        )
        run_dir = root / "run"
        argv = [*smoke_args(prepared(root.parent), run_dir), "--evidence-dir", str(root / "evidence/runs")]
        assert train(argv) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(release_argv(root, run_dir, NAME, VERSION, "--weights-url", URL)) == 0
    return root, printed.getvalue()


@pytest.fixture
def scratch(repo: tuple[Path, str], tmp_path: Path) -> Path:
    """A copy of the scratch repository, for a test that breaks something in it."""
    shutil.copytree(repo[0], tmp_path / "repo")
    return tmp_path / "repo"


def record_of(root: Path) -> EvidenceRecord:
    return read_evidence(root / "evidence/runs/run" / EVIDENCE_FILE)


def checked(root: Path) -> Checker:
    """The checker's record and registry checks of the release (the scratch repository has no git
    history: commits are looked up in this repository's)."""
    checker = Checker(root, load_spec())
    checker._known_commits = Checker(REPO_ROOT, load_spec())._known_commits  # type: ignore[method-assign]
    loaded = load_evidence(root / "evidence/runs/run" / EVIDENCE_FILE)
    checker.check_record(loaded, root, in_ledger=True)
    registry = read_registry(root / REGISTRY_FILE)
    checker.check_registry(registry.model_copy(update={"models": registry.models[-1:]}), {"run": loaded})
    return checker


def download(root: Path) -> Path:
    """The run's weights put where a download goes: beside the release's manifest."""
    ref = record_of(root).checkpoint
    assert ref is not None
    target = root / RELEASED / WEIGHTS
    shutil.copyfile(root / "run" / ckpt.CKPT_DIR / ref.name / WEIGHTS, target)
    return target


def test_the_weights_are_cited_by_url_with_the_records_hash_and_not_copied(repo: tuple[Path, str]) -> None:
    root, printed = repo
    released = root / RELEASED
    assert sorted(p.name for p in released.iterdir()) == [
        ".gitignore",
        "MODEL_CARD.md",
        "manifest.json",
        "state.json",
    ]
    assert (released / ".gitignore").read_text() == f"/{WEIGHTS}\n"
    hashed = record_of(root).checkpoint
    assert hashed is not None
    entry = read_registry(root / REGISTRY_FILE).models[-1]
    weights = entry.artifact(WEIGHTS)
    assert weights is not None and weights.path is None and weights.url == URL
    assert (weights.sha256, weights.bytes) == (hashed.files[WEIGHTS].sha256, hashed.files[WEIGHTS].bytes)
    state = entry.artifact("state.json")
    assert state is not None and state.path == f"{RELEASED}/state.json"
    manifest = json.loads((released / ckpt.MANIFEST).read_text())
    assert manifest["files"][WEIGHTS]["sha256"] == weights.sha256  # the manifest a download is held to
    card = (released / "MODEL_CARD.md").read_text()
    assert f"download {URL} into `{RELEASED}/`" in card and weights.sha256 in card
    assert f"upload {root / 'run' / ckpt.CKPT_DIR / hashed.name / WEIGHTS} to {URL}" in printed


@pytest.mark.holds("GATE-INTEG-001")  # nothing planted: a release by URL passes, and says so
def test_the_integrity_check_accepts_it_and_says_the_bytes_are_elsewhere(repo: tuple[Path, str]) -> None:
    checker = checked(repo[0])
    assert [f.line() for f in checker.verdict()] == []
    assert any(URL in f.line() and "outside the repository" in f.line() for f in checker.warnings)


def test_the_readers_name_the_url_until_the_weights_are_downloaded(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    released = scratch / RELEASED
    assert main(["sample", str(released), "--prompt", "gate ", "--tokens", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and URL in err[0] and f"download it into {released}" in err[0]
    download(scratch)
    assert main(["sample", str(released), "--prompt", "gate ", "--tokens", "4"]) == 0
    checker = checked(scratch)  # the copy is hashed, so nothing is left to warn of
    assert checker.verdict() == [] and not any(URL in f.line() for f in checker.warnings)


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("field", ["sha256", "bytes"])
def test_a_url_entry_that_is_not_the_records_checkpoint_is_caught(scratch: Path, field: str) -> None:
    """The registry's hash or size of the weights kept elsewhere, one step off the record's."""
    path = scratch / REGISTRY_FILE
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    weights = next(a for a in data["models"][-1]["artifacts"] if a.get("url") == URL)
    weights[field] = weights["bytes"] + 1 if field == "bytes" else f"{int(weights['sha256'], 16) ^ 1:064x}"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    found = [f.line() for f in checked(scratch).verdict()]
    assert any(f"the released {WEIGHTS} is not the checkpoint the run hashed" in line for line in found), (
        found
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_downloaded_copy_that_is_not_the_released_file_is_caught(scratch: Path) -> None:
    """One bit of the last tensor flipped: the size is the record's, the sha256 is not."""
    weights = download(scratch)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    found = [f.line() for f in checked(scratch).verdict()]
    assert any(f"{RELEASED}/{WEIGHTS}" in line and "sha256" in line for line in found), found


@pytest.mark.parametrize(
    "url",
    [
        "huggingface.co/gatestack/big/model.safetensors",  # no scheme
        "https://huggingface.co/gatestack/big/resolve/main/pytorch_model.bin",  # not the weights' name
        "https://example.org/a b/model.safetensors",  # a space
    ],
)
def test_a_weights_url_that_names_no_weights_file_is_refused_in_one_line(
    scratch: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(release_argv(scratch, scratch / "run", NAME, "0.2.0", "--weights-url", url)) == 2
    err = capsys.readouterr().err
    assert "--weights-url" in err and "is not the URL of a model.safetensors" in err
    assert not (scratch / "evidence/models" / f"{NAME}-0.2.0").exists()
