"""`stack release`: a released model's directory loads as it is, and only a sound record is released.

The tests work in a scratch repository layout (evidence/runs, evidence/models,
evidence/registry.yaml) under a temporary directory. The working tree the tests run in may be
dirty, and a dirty tree must not be released, so the reference run is recorded as made from a
clean tree at HEAD; the refusals are shown on copies of its record with one rule broken.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import contracts.evidence
from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, REPO_ROOT, CodeInfo, RunStatus, read_evidence, sha256_file
from contracts.registry import REGISTRY_FILE, read_registry
from contracts.release_rules import release_problems, stale_gates
from contracts.spec import load_spec
from stack.cli import main
from stack.train import checkpoint as ckpt
from tests.support.release_support import head, release_argv
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.audit import load_evidence
from tools.integrity.check import Checker

NAME, VERSION = "tiny", "0.1.0"
KEY = f"{NAME}@{VERSION}"
RELEASED = f"evidence/models/{NAME}-{VERSION}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch repository holding one run (filed in its ledger), the repository's registry, and
    the run released as tiny@0.1.0."""
    root = tmp_path_factory.mktemp("release") / "repo"
    (root / "evidence").mkdir(parents=True)
    shutil.copy(REPO_ROOT / REGISTRY_FILE, root / REGISTRY_FILE)
    clean = CodeInfo(git_sha=head(), git_dirty=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(contracts.evidence, "collect_code", lambda _repo: clean)
        run_dir = root / "run"
        argv = [*smoke_args(prepared(root.parent), run_dir), "--evidence-dir", str(root / "evidence/runs")]
        assert train(argv) == 0
    assert main(release_argv(root, run_dir, NAME, VERSION)) == 0
    return root


@pytest.fixture
def scratch(repo: Path, tmp_path: Path) -> Path:
    """A copy of the scratch repository, for a test that breaks something in it."""
    target = tmp_path / "repo"
    shutil.copytree(repo, target)
    return target


def test_the_release_holds_weights_state_manifest_and_card(repo: Path) -> None:
    released = repo / RELEASED
    assert sorted(p.name for p in released.iterdir()) == [
        "MODEL_CARD.md",
        "manifest.json",
        "model.safetensors",
        "state.json",
    ]
    manifest = json.loads((released / ckpt.MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["model.safetensors", "state.json"]
    record = read_evidence(repo / "evidence/runs/run" / EVIDENCE_FILE)
    assert record.checkpoint is not None
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(released / name) == record.checkpoint.files[name].sha256
    card = (released / "MODEL_CARD.md").read_text()
    assert "`run`" in card and str(record.code.git_sha) in card and record.spec.version in card
    assert "| GATE-DATA-004 | WARN |" in card  # a smoke run is far too small for its parameters


def test_the_registry_gains_one_entry_appended_after_its_old_text(repo: Path) -> None:
    old = (REPO_ROOT / REGISTRY_FILE).read_text(encoding="utf-8")
    new = (repo / REGISTRY_FILE).read_text(encoding="utf-8")
    assert new.startswith(old)
    registry = read_registry(repo / REGISTRY_FILE)
    assert [m.key for m in registry.models] == [
        *(m.key for m in read_registry(REPO_ROOT / REGISTRY_FILE).models),
        KEY,
    ]
    entry = registry.models[-1]
    cited = sha256_file(repo / "evidence/runs/run" / EVIDENCE_FILE)
    assert (entry.evidence[0].run, entry.evidence[0].sha256) == ("run", cited)
    assert entry.git_sha == head() and entry.spec_version == load_spec().version
    assert {a.path for a in entry.artifacts} == {f"{RELEASED}/model.safetensors", f"{RELEASED}/state.json"}
    assert entry.card == f"{RELEASED}/MODEL_CARD.md" and entry.license == "Apache-2.0"


@pytest.mark.holds("GATE-INTEG-001")  # nothing planted: a sound release passes
def test_the_integrity_check_accepts_the_release(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry entry and its record pass the same checks tools/check_integrity.py runs."""
    checker = Checker(repo, load_spec())
    history = Checker(REPO_ROOT, load_spec())
    monkeypatch.setattr(checker, "_known_commits", history._known_commits)  # the scratch repo has no git
    loaded = load_evidence(repo / "evidence/runs/run" / EVIDENCE_FILE)
    checker.check_record(loaded, repo, in_ledger=True)
    registry = read_registry(repo / REGISTRY_FILE)
    checker.check_registry(registry.model_copy(update={"models": registry.models[-1:]}), {"run": loaded})
    assert [f.line() for f in checker.violations] == []


def test_sample_eval_and_export_accept_the_release_as_it_is(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    released = repo / RELEASED
    assert main(["sample", str(released), "--prompt", "gate ", "--tokens", "8"]) == 0
    text = tmp_path / "text.txt"
    text.write_text("gate evidence model token loss batch step\n" * 4)
    assert main(["eval", str(released), "--text", str(text), "--record", str(tmp_path / "eval")]) == 0
    record = read_evidence(tmp_path / "eval" / EVIDENCE_FILE)
    assert record.run.status is RunStatus.COMPLETED
    assert record.checkpoint is not None and record.checkpoint.name == f"{NAME}-{VERSION}"
    assert main(["export", str(released), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert main(["inspect", str(released), "--json"]) == 0
    capsys.readouterr()


def swap_weights(released: Path, rewrite_manifest: bool) -> None:
    """Replace the released weights with altered ones (and, if asked, a manifest that agrees)."""
    weights = released / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights)
    if rewrite_manifest:
        manifest = json.loads((released / ckpt.MANIFEST).read_text())
        manifest["files"]["model.safetensors"] = {
            "sha256": sha256_file(weights),
            "bytes": weights.stat().st_size,
        }
        (released / ckpt.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("rewrite_manifest", "code", "says"),
    [
        pytest.param(False, 3, "GATE-CKPT-002", id="manifest-kept", marks=pytest.mark.gate("GATE-CKPT-002")),
        # A manifest rewritten to match is refused by the registry's hashes before GATE-CKPT-002
        # verifies anything: no gate's verdict, so no falsifier of one.
        pytest.param(True, 2, f"is not the file {KEY} released", id="manifest-rewritten"),
    ],
)
def test_swapped_weights_are_refused(
    scratch: Path, rewrite_manifest: bool, code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against the manifest (the gate), or, with a manifest rewritten to match, against the registry."""
    released = scratch / RELEASED
    swap_weights(released, rewrite_manifest)
    assert main(["sample", str(released), "--tokens", "4"]) == code
    assert says in capsys.readouterr().err


def test_a_directory_under_evidence_models_with_no_registry_entry_is_refused(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stray = scratch / "evidence/models/stray"
    shutil.copytree(scratch / RELEASED, stray)
    assert main(["sample", str(stray), "--tokens", "4"]) == 2
    assert "no entry of" in capsys.readouterr().err


def test_a_release_cannot_be_resumed(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    released = repo / RELEASED
    assert main(["train", "--resume", str(released)]) == 2
    assert "a release cannot be resumed" in capsys.readouterr().err
    loaded = ckpt.load_checkpoint(released)
    with pytest.raises(BadInput, match="weights-only"):
        ckpt.load_optimizer(loaded, None)  # type: ignore[arg-type]  # refused before it is used


def test_a_release_is_never_replaced(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (scratch / REGISTRY_FILE).read_bytes()
    assert main(release_argv(scratch, scratch / "run", NAME, VERSION)) == 2
    assert "already exists" in capsys.readouterr().err
    (scratch / "elsewhere").mkdir()
    argv = release_argv(scratch, scratch / "run", NAME, VERSION)
    argv[argv.index("--models-dir") + 1] = str(scratch / "elsewhere")
    assert main(argv) == 2
    assert f"already lists {KEY}" in capsys.readouterr().err
    assert (scratch / REGISTRY_FILE).read_bytes() == before
    assert list((scratch / "elsewhere").iterdir()) == []


@pytest.mark.parametrize(
    "registry",
    [None, "models:\n", "# ours\nmodels: []\n"],
    ids=["none-yet", "models-empty", "models-flow-empty"],
)
def test_a_repositorys_first_release_starts_its_registry(
    scratch: Path, capsys: pytest.CaptureFixture[str], registry: str | None
) -> None:
    """A user's own repository, its run filed in its ledger, has no registry before its first
    release, or an empty one: neither is refused (not "run from the repository root" for no
    registry, not "not block style" for an empty `models: []`). The release starts it (or fills
    it), and the file reads back as this one entry."""
    shutil.rmtree(scratch / RELEASED)
    (scratch / REGISTRY_FILE).unlink()
    if registry is not None:
        (scratch / REGISTRY_FILE).write_text(registry, encoding="utf-8")
    assert main(release_argv(scratch, scratch / "run", NAME, VERSION)) == 0
    said = capsys.readouterr().out
    assert ("started the repository's registry" in said) is (registry is None), said
    assert [m.key for m in read_registry(scratch / REGISTRY_FILE).models] == [KEY]
    assert (scratch / RELEASED / "model.safetensors").is_file()


def test_a_release_with_neither_registry_nor_ledger_there_is_refused(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run from somewhere that is no repository: nothing is started there, and the line says where
    a repository's first release starts its registry."""
    elsewhere = tmp_path / "elsewhere"
    argv = release_argv(repo, repo / "run", NAME, "0.9.0")
    argv[argv.index("--registry") + 1] = str(elsewhere / REGISTRY_FILE)
    argv[argv.index("--models-dir") + 1] = str(elsewhere / "evidence/models")
    assert main(argv) == 2
    assert "no registry at" in capsys.readouterr().err and not elsewhere.exists()


def make_dirty(record: dict) -> None:
    record["code"]["git_dirty"] = True


def make_halted(record: dict) -> None:
    record["run"]["status"] = "halted"


def make_contracts_off(record: dict) -> None:
    record["contract_mode"] = "off"


def make_unjudged(record: dict) -> None:
    record["gates"] = [g for g in record["gates"] if g["id"] != "GATE-CKPT-002"]


def make_legacy(record: dict) -> None:
    record["schema_version"] = 1


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (make_dirty, "was made from a dirty tree"),
        (make_halted, "status is halted, not completed"),
        (make_contracts_off, "was made with the contracts off"),
        (make_unjudged, "did not judge GATE-CKPT-002"),
        (make_legacy, "is stale (schema 1 predates the judges"),
    ],
    ids=["dirty-tree", "halted", "contracts-off", "gate-not-judged", "stale"],
)
def test_a_record_that_breaks_a_release_rule_is_refused_before_anything_is_written(
    scratch: Path, tamper: Callable[[dict], None], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's record and its filed copy carry the same defect; the release names it, writes nothing."""
    for path in (scratch / "run" / EVIDENCE_FILE, scratch / "evidence/runs/run" / EVIDENCE_FILE):
        record = json.loads(path.read_text())
        tamper(record)
        path.write_text(json.dumps(record))
    before = (scratch / REGISTRY_FILE).read_bytes()
    assert main(release_argv(scratch, scratch / "run", NAME, "0.2.0")) == 2
    assert says in capsys.readouterr().err
    assert not (scratch / "evidence/models/tiny-0.2.0").exists()
    assert (scratch / REGISTRY_FILE).read_bytes() == before


def test_the_command_and_the_checker_apply_the_same_rules(repo: Path) -> None:
    """A dirty-tree record, judged by the shared rules directly and by the checker's registry audit."""
    record = read_evidence(repo / "evidence/runs/run" / EVIDENCE_FILE)
    dirty = record.model_copy(update={"code": record.code.model_copy(update={"git_dirty": True})})
    assert record.checkpoint is not None
    weights = record.checkpoint.files["model.safetensors"]
    spec = load_spec()
    released = [("model.safetensors", weights.sha256, weights.bytes)]
    found = release_problems(spec, dirty, stale_gates(dirty, spec), released, record.code.git_sha)
    assert found == ["was made from a dirty tree"]
    entry = read_registry(repo / REGISTRY_FILE).models[-1]
    assert Checker(repo, spec)._release_problems(entry, dirty) == found


def test_the_ledger_record_must_be_the_runs_own(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = scratch / "evidence/runs/run" / EVIDENCE_FILE
    record = json.loads(other.read_text())
    record["run"]["started"] = "2020-01-01T00:00:00Z"  # the same run id, but another run
    other.write_text(json.dumps(record))
    assert main(release_argv(scratch, scratch / "run", NAME, "0.2.0")) == 2
    assert "own run" in capsys.readouterr().err
    assert not (scratch / "evidence/models/tiny-0.2.0").exists()


# -- a run resumed with --evidence-dir: one record per leg, the newest released ------------------


@pytest.fixture(scope="module")
def legs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch repository with a run filed, resumed and filed again (leg 2), resumed without
    --evidence-dir, then resumed and filed once more (leg 3)."""
    root = tmp_path_factory.mktemp("legs") / "repo"
    (root / "evidence").mkdir(parents=True)
    shutil.copy(REPO_ROOT / REGISTRY_FILE, root / REGISTRY_FILE)
    ledger = ["--evidence-dir", str(root / "evidence/runs")]
    clean = CodeInfo(git_sha=head(), git_dirty=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(contracts.evidence, "collect_code", lambda _repo: clean)
        run_dir = root / "run"
        steps = ["--set", "ckpt.every=2", "--set", "eval.every=2", "--set", "monitor.sample_every=2"]
        assert train([*smoke_args(prepared(root.parent), run_dir, "train.steps=2"), *steps, *ledger]) == 0
        assert train(["train", "--resume", str(run_dir), "--set", "train.steps=4", *ledger]) == 0
        assert train(["train", "--resume", str(run_dir), "--set", "train.steps=6"]) == 0
        assert train(["train", "--resume", str(run_dir), "--set", "train.steps=8", *ledger]) == 0
    return root


def _filed(root: Path, run_id: str) -> contracts.evidence.EvidenceRecord:
    return read_evidence(root / "evidence/runs" / run_id / EVIDENCE_FILE)


def test_each_resumed_leg_is_filed_under_its_own_id_naming_the_leg_it_continues(legs: Path) -> None:
    """Each resumed leg is filed beside the first, not refused ("already exists and the ledger is
    append-only"), each linked to the leg it resumes, and the run names its newest leg, so a release
    takes the newest leg's checkpoint, not the first leg's."""
    assert sorted(p.name for p in (legs / "evidence/runs").iterdir()) == ["run", "run-leg2", "run-leg3"]
    first, second, third = (_filed(legs, rid) for rid in ("run", "run-leg2", "run-leg3"))
    assert first.run.started == second.run.started == third.run.started
    assert [r.checkpoint.step for r in (first, second, third)] == [2, 4, 8]  # type: ignore[union-attr]
    assert first.lineage is None
    for leg, earlier in ((second, first), (third, second)):
        link = leg.lineage.parents[0]  # type: ignore[union-attr]
        assert (link.role, link.run) == ("resumes", earlier.run.id)
    assert second.lineage.parents[0].checkpoint_sha256 == first.checkpoint.files["model.safetensors"].sha256  # type: ignore[union-attr]
    assert read_evidence(legs / "run" / EVIDENCE_FILE).run.id == "run-leg3"  # the run names its newest leg


def test_the_integrity_check_accepts_the_chain_of_legs(legs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Legs share the run's start, commit and kind without being copies; each link holds (leg 3
    continues leg 2 across a leg resumed without --evidence-dir)."""
    checker = Checker(legs, load_spec())
    history = Checker(REPO_ROOT, load_spec())
    monkeypatch.setattr(checker, "_known_commits", history._known_commits)
    loaded = [
        load_evidence(legs / "evidence/runs" / rid / EVIDENCE_FILE) for rid in ("run", "run-leg2", "run-leg3")
    ]
    for record in loaded:
        checker.check_record(record, record.path.parent.resolve(), in_ledger=True)
    checker.check_lineage([*loaded, load_evidence(legs / "run" / EVIDENCE_FILE)])
    checker.check_duplicates(loaded)
    assert [f.line() for f in checker.violations] == []


def test_a_leg_that_names_another_run_breaks_the_chain(legs: Path, tmp_path: Path) -> None:
    from tools.integrity.lineage import lineage_problems

    records = {rid: _filed(legs, rid) for rid in ("run", "run-leg2", "run-leg3")}
    forged = records["run-leg2"].model_copy(deep=True)
    forged.lineage.parents[0].checkpoint_sha256 = "0" * 64  # type: ignore[union-attr]
    assert any("vouches for weights" in p for _, p in lineage_problems({**records, "run-leg2": forged}))
    other = records["run"].model_copy(deep=True)
    other.run.started = other.run.started.replace(year=2000)
    problems = lineage_problems({**records, "run": other})
    assert (
        "run-leg2",
        "resumes 'run', which is not an earlier leg of the same run (another start, kind or id)",
    ) in problems


def test_a_copy_posing_as_a_later_leg_is_still_a_copy(legs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Legs share their run's start, commit and kind, so the copy detector lets legs be; a copy of a
    leg filed as the next leg shares its metrics log (and its step), and is caught."""
    from tools.integrity.lineage import lineage_problems

    root = legs
    runs = root / "evidence/runs"
    copy_dir = runs.parent / "copied" / "run-leg4"
    shutil.copytree(runs / "run-leg3", copy_dir)
    record = read_evidence(copy_dir / EVIDENCE_FILE)
    record.run.id = "run-leg4"
    record.lineage.parents[0].run = "run-leg3"  # type: ignore[union-attr]
    record.lineage.parents[0].checkpoint_sha256 = record.checkpoint.files["model.safetensors"].sha256  # type: ignore[union-attr]
    contracts.evidence.write_evidence(copy_dir, record)
    records = {rid: _filed(root, rid) for rid in ("run", "run-leg2", "run-leg3")}
    problems = lineage_problems({**records, "run-leg4": record})
    assert ("run-leg4", "resumes 'run-leg3' but ends at no later step than it: a leg trains on") in problems
    checker = Checker(root, load_spec())
    loaded = [load_evidence(runs / rid / EVIDENCE_FILE) for rid in records] + [
        load_evidence(copy_dir / EVIDENCE_FILE)
    ]
    checker.check_duplicates(loaded)
    assert any(
        "run-leg4" in f.line() and "metrics.jsonl of 'run-leg3'" in f.line() for f in checker.verdict()
    )
    shutil.rmtree(copy_dir.parent)


def test_a_release_of_a_resumed_run_takes_its_newest_filed_leg(
    legs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(legs, root)
    assert (
        main(release_argv(root, root / "run", NAME, VERSION)) == 0
    )  # --ledger-record evidence/runs/run: leg 1
    assert "releasing its newest filed leg run-leg3" in capsys.readouterr().err
    entry = read_registry(root / REGISTRY_FILE).models[-1]
    assert entry.evidence[0].run == "run-leg3"
    newest = _filed(root, "run-leg3").checkpoint
    assert newest is not None and newest.step == 8  # not leg 1's step 2, which the release took before
    hashed = {a.path.rsplit("/", 1)[-1]: a.sha256 for a in entry.artifacts}
    assert hashed == {name: newest.files[name].sha256 for name in ("model.safetensors", "state.json")}
    checker = Checker(root, load_spec())
    monkeypatch.setattr(checker, "_known_commits", Checker(REPO_ROOT, load_spec())._known_commits)
    by_id = {rid: load_evidence(root / "evidence/runs" / rid / EVIDENCE_FILE) for rid in ("run-leg3",)}
    registry = read_registry(root / REGISTRY_FILE)
    checker.check_registry(registry.model_copy(update={"models": registry.models[-1:]}), by_id)
    assert [f.line() for f in checker.violations] == []


# -- a finished run trained without --evidence-dir is filed by resuming it with one -------------


def test_a_finished_run_trained_without_a_ledger_is_filed_as_it_stands_and_released(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stack release` names `stack train --resume RUN --evidence-dir LEDGER` for a run with no filed
    record; that files the record the run's last step wrote, with its config and metrics, which the
    check accepts and the release takes. Asked again, it files nothing and says where it is."""
    root = tmp_path / "repo"
    (root / "evidence").mkdir(parents=True)
    shutil.copy(REPO_ROOT / REGISTRY_FILE, root / REGISTRY_FILE)
    monkeypatch.setattr(
        contracts.evidence, "collect_code", lambda _repo: CodeInfo(git_sha=head(), git_dirty=False)
    )
    run_dir, ledger = root / "run", root / "evidence/runs"
    assert train(smoke_args(prepared(tmp_path), run_dir)) == 0
    capsys.readouterr()
    assert main(release_argv(root, run_dir, NAME, VERSION)) == 2
    assert "stack train --resume RUN_DIR --evidence-dir LEDGER" in capsys.readouterr().err
    assert train(["train", "--resume", str(run_dir), "--evidence-dir", str(ledger)]) == 0
    assert f"its record is filed now at {ledger / 'run'}" in capsys.readouterr().out
    assert read_evidence(ledger / "run" / EVIDENCE_FILE) == read_evidence(run_dir / EVIDENCE_FILE).model_copy(
        update={"artifacts": read_evidence(ledger / "run" / EVIDENCE_FILE).artifacts}
    )
    checker = Checker(root, load_spec())
    monkeypatch.setattr(checker, "_known_commits", Checker(REPO_ROOT, load_spec())._known_commits)
    checker.check_record(load_evidence(ledger / "run" / EVIDENCE_FILE), root, in_ledger=True)
    assert [f.line() for f in checker.violations] == []
    assert train(["train", "--resume", str(run_dir), "--evidence-dir", str(ledger)]) == 0
    assert f"its record is filed already at {ledger / 'run'}" in capsys.readouterr().out
    assert sorted(p.name for p in ledger.iterdir()) == ["run"]
    assert main(release_argv(root, run_dir, NAME, VERSION)) == 0


def test_a_last_leg_trained_without_a_ledger_is_not_filed_after_the_filed_ones(
    legs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its record does not name the filed leg it continues, so it would break the chain of legs: it
    is refused in one line that says the filed leg can still be released; the run as filed is told
    it is filed already."""
    root = tmp_path / "repo"
    shutil.copytree(legs, root)
    ledger = ["--evidence-dir", str(root / "evidence/runs")]
    assert train(["train", "--resume", str(root / "run"), *ledger]) == 0
    assert f"its record is filed already at {root / 'evidence/runs/run-leg3'}" in capsys.readouterr().out
    assert train(["train", "--resume", str(root / "run"), "--set", "train.steps=10"]) == 0
    capsys.readouterr()
    assert train(["train", "--resume", str(root / "run"), *ledger]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "last leg was trained without --evidence-dir after the leg filed at" in line
    assert "cannot be filed after it" in line
    assert sorted(p.name for p in (root / "evidence/runs").iterdir()) == ["run", "run-leg2", "run-leg3"]
