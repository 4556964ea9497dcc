"""Falsifiers of what a record restates of another record, of the repository at its commit, or of a release.

A record names other evidence: the manifest of the data it read (whose prepare record counted
its tokenizer, shards and examples), the parent whose weights it started from (its checkpoint
step and its architecture), the model an evaluation scored (its context and training data), a
file of the repository at its commit (a text it scored, a preset it measured), and a release
names its record (the manifest and state.json it released, the spec it was released under).
tools/lineage.py and tools/check_integrity.py hold each record to those (contracts.derive.reports
and contracts.checkpoints give the rules they share with the derivations and the stack). Each
test plants one edit in a copy of one record, checks it beside the records it names, and
asserts the integrity check names the field; where the record alone passes, the test shows it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import contracts.evidence
from contracts.evidence import EVIDENCE_FILE, REPO_ROOT, CodeInfo, canonical_sha256, sha256_file
from contracts.registry import REGISTRY_FILE, read_registry
from contracts.retirement import read_retirements
from contracts.spec import load_spec
from stack.cli import main
from tests.support.ledger_support import RECORDS, Change, config_edited, edited, findings, gate, planted
from tests.support.records_support import Filed, filed_runs
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.audit import load_evidence
from tools.integrity.check import Checker

OTHER_SHA = "cd" * 32


@pytest.fixture(scope="module")
def filed(tmp_path_factory: pytest.TempPathFactory) -> Filed:
    return filed_runs(tmp_path_factory.mktemp("cross"))


def copied(tmp_path: Path, run_dir: Path, change: Change) -> Path:
    """A copy of a fresh record's directory with `change` planted (its cited files re-hashed)."""
    return edited(Path(shutil.copytree(run_dir, tmp_path / run_dir.name)), change)


def assert_named(found: list[str], *fragments: str) -> None:
    assert any(all(f in line for f in fragments) for line in found), "\n".join(found) or "(nothing found)"


def measured(gate_id: str, **values: Any) -> Change:
    """`gate_id`'s measured values updated with `values`."""
    return lambda data, _dir: gate(data, gate_id)["measured"].update(values)


def _two_more_quota_windows(data: dict[str, Any], _dir: Path) -> None:
    """A quota rounded up, as a record states it: quotas two windows above the rule's."""
    values = gate(data, "GATE-DATA-001")["measured"]
    values["quota_windows"] += 2


@pytest.mark.holds("GATE-INTEG-001")
def test_the_fresh_records_pass_checked_together(filed: Filed) -> None:
    """The fine-tune with its parent and its data's prepare record, the evaluation with the run it
    scored: every record as its command made it."""
    assert findings(*sorted(filed.ledger.iterdir())) == []


# -- a run's data: the prepare record of the manifest it names -----------------------------------


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("record", "change", "says"),
    [
        pytest.param(
            "train",
            lambda data, _dir: data["data"].update(tokenizer_sha256=OTHER_SHA),
            f"data.tokenizer_sha256 is '{OTHER_SHA}', but the tokenizer of its data (prepare record",
            id="tokenizer-sha256",
        ),
        pytest.param(
            "train",
            measured("GATE-DATA-001", covered_shards=8),
            "gates[GATE-DATA-001].measured's coverage is {'covered_shards': 8",
            id="covered-shards",
        ),
        pytest.param(
            "train",
            _two_more_quota_windows,
            "gates[GATE-DATA-001].measured.quota_windows is",
            id="quota-windows",
        ),
        pytest.param(
            "sft",
            _two_more_quota_windows,
            "gates[GATE-DATA-001].measured.quota_windows is",
            id="sft-quota-windows",
        ),
        pytest.param(
            "sft",
            measured("GATE-DATA-007", data_tokenizer_identity=OTHER_SHA, model_tokenizer_identity=OTHER_SHA),
            f"gates[GATE-DATA-007].measured.data_tokenizer_identity is '{OTHER_SHA}'",
            id="tokenizer-identity",
        ),
        pytest.param(
            "sft",
            measured("GATE-SFT-002", assistant_turns=400),
            "gates[GATE-SFT-002].measured.assistant_turns is 400, but its data (prepare record",
            id="assistant-turns",
        ),
        pytest.param(
            "sft",
            measured("GATE-SFT-001", examples=200),
            "gates[GATE-SFT-001].measured.examples is 200, more than a split of its data",
            id="examples",
        ),
    ],
)
def test_a_run_restating_its_data_otherwise_than_its_prepare_record_is_caught(
    filed: Filed, tmp_path: Path, record: str, change: Change, says: str
) -> None:
    run = copied(tmp_path, getattr(filed, record), change)
    parents = [filed.train] if record == "sft" else []  # a fine-tune is checked with its init parent
    assert_named(findings(run, filed.prepare, filed.prepare_chat, *parents), says)
    assert not any(says in line for line in findings(run, *parents))  # its prepare record decides


@pytest.mark.gate("GATE-INTEG-001")
def test_a_fine_tune_claiming_pretraining_data_is_caught(filed: Filed, tmp_path: Path) -> None:
    """The fine-tune names the pretraining data's manifest (and its train tokens)."""
    prepare = json.loads((filed.prepare / EVIDENCE_FILE).read_text())

    def claimed(data: dict[str, Any], _dir: Path) -> None:
        data["data"]["manifest_sha256"] = prepare["data"]["manifest_sha256"]
        data["metrics"]["unique_train_tokens"] = prepare["metrics"]["totals"]["train"]["tokens"]

    run = copied(tmp_path, filed.sft, claimed)
    found = findings(run, filed.prepare, filed.train)
    assert_named(found, "GATE-SFT-001 and GATE-SFT-002 judged fine-tuning examples", "holds pretraining text")


# -- the parent a run started from -------------------------------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_a_start_step_other_than_the_parents_checkpoint_is_caught(filed: Filed, tmp_path: Path) -> None:
    """The fine-tune says it started from step 1; its init parent checkpointed its weights
    at step 5."""
    run = copied(tmp_path, filed.sft, lambda data, _dir: data["metrics"]["init_from"].update(step=1))
    assert_named(findings(run, filed.train), "metrics.init_from.step is 1, but its init parent 'run'")
    assert not any("init_from.step" in line for line in findings(run))  # its parent's record decides


@pytest.mark.gate("GATE-INTEG-001")
def test_an_architecture_other_than_the_parents_is_caught(filed: Filed, tmp_path: Path) -> None:
    """The fine-tune's config.toml (and its record, re-derived) says rope_theta 500000."""
    run = copied(tmp_path, filed.sft, config_edited("rope_theta = 10000.0", "rope_theta = 500000.0"))
    assert_named(
        findings(run, filed.train), "config.model.rope_theta is 500000.0, but the model of its init parent"
    )


# -- the model an evaluation scored ---------------------------------------------------------------


def eval_config(**values: Any) -> Change:
    """The evaluation's config (and its digest) with `values`."""

    def change(data: dict[str, Any], _dir: Path) -> None:
        data["config"].update(values)
        data["config_sha256"] = canonical_sha256(data["config"])

    return change


@pytest.mark.gate("GATE-INTEG-001")
def test_an_evaluation_in_windows_other_than_the_models_context_is_caught(
    filed: Filed, tmp_path: Path
) -> None:
    """No option sets an evaluation's windows: they are the model's context (64)."""
    run = copied(tmp_path, filed.eval, eval_config(seq_len=128))
    assert_named(
        findings(run, filed.train), "config.seq_len is 128, but the model it scored has a context of 64"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_an_evaluation_of_other_data_than_the_models_is_caught(filed: Filed, tmp_path: Path) -> None:
    """Without --data, `--split val` scores the held-out split of the run's own DATA_DIR, and
    the overlap is measured against it; both restated as another."""

    def elsewhere(data: dict[str, Any], run_dir: Path) -> None:
        eval_config(data="/data/other")(data, run_dir)
        report = json.loads((run_dir / "eval.json").read_text())
        for overlap in (report["overlap"], data["metrics"]["overlap"]):
            overlap["training_data"] = "/data/other"
        (run_dir / "eval.json").write_text(json.dumps(report))

    found = findings(copied(tmp_path, filed.eval, elsewhere), filed.train)
    for field in ("config.data", "metrics.overlap.training_data"):
        assert_named(found, f"{field} is '/data/other', but the model it scored was trained on")


@pytest.mark.holds("GATE-INTEG-001")
def test_an_evaluation_given_data_may_score_another_data_dir(filed: Filed, tmp_path: Path) -> None:
    """With --data on its command line, the data scored is the one asked for (only the overlap is
    measured against the model's own)."""

    def given(data: dict[str, Any], run_dir: Path) -> None:
        data["run"]["argv"] += ["--data", "/data/other"]
        eval_config(data="/data/other")(data, run_dir)

    run = copied(tmp_path, filed.eval, given)
    assert not any("config.data" in line for line in findings(run, filed.train))


# -- the repository at the record's commit --------------------------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_a_scored_document_restated_with_another_hash_is_caught(tmp_path: Path) -> None:
    """The evaluation scored docs/concepts/gates.md of its (clean) commit."""
    run = planted(
        tmp_path, "eval-20261122T141536", lambda data, _dir: data["metrics"].update(text_sha256=OTHER_SHA)
    )
    assert_named(findings(run), f"metrics.text_sha256 is '{OTHER_SHA}', but docs/concepts/gates.md hashes to")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_benchmark_restating_its_preset_as_another_model_is_caught(tmp_path: Path) -> None:
    """The benchmark trained the preset demo, 128 wide and 4 deep at its commit."""

    def wider(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["model"].update(d_model=512, n_layers=12)

    run = planted(tmp_path, "bench-train-20261123T155206", wider)
    found = findings(run)
    assert_named(
        found, "metrics.model.d_model is 512, but the preset 'demo' in stack/train/presets.py has 128"
    )
    assert_named(found, "metrics.model.n_layers is 12, but the preset 'demo'")


# -- a release and the record it cites --------------------------------------------------------------

NAME, VERSION = "cross", "0.1.0"
RELEASED = f"evidence/models/{NAME}-{VERSION}"
RUN = "run"


def head() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def release_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch repository (evidence/runs, evidence/models, the registry) holding one run, made
    as from a clean tree at HEAD and filed in its ledger, released as cross@0.1.0."""
    root = tmp_path_factory.mktemp("release") / "repo"
    (root / "evidence").mkdir(parents=True)
    shutil.copy(REPO_ROOT / REGISTRY_FILE, root / REGISTRY_FILE)
    clean = CodeInfo(git_sha=head(), git_dirty=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(contracts.evidence, "collect_code", lambda _repo: clean)
        argv = [*smoke_args(prepared(root.parent), root / RUN), "--evidence-dir", str(root / "evidence/runs")]
        assert train(argv) == 0
    release = ["release", str(root / RUN), "--ledger-record", str(root / "evidence/runs" / RUN)]
    where = ["--models-dir", str(root / "evidence/models"), "--registry", str(root / REGISTRY_FILE)]
    assert main([*release, "--name", NAME, "--version", VERSION, *where]) == 0
    return root


def release_findings(root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the checker's registry audit finds of the scratch release (git read from this repository)."""
    checker, history = Checker(root, load_spec()), Checker(REPO_ROOT, load_spec())
    monkeypatch.setattr(checker, "_known_commits", history._known_commits)
    monkeypatch.setattr(checker, "_files_at", history._files_at)
    registry = read_registry(root / REGISTRY_FILE)
    loaded = load_evidence(root / "evidence/runs" / RUN / EVIDENCE_FILE)
    checker.check_registry(registry.model_copy(update={"models": registry.models[-1:]}), {RUN: loaded})
    return [f.line() for f in checker.verdict()]


def entry_edited(root: Path, **values: Any) -> None:
    """The scratch release's registry entry with `values`, its artifacts and evidence re-cited by
    their bytes now, as a forger would."""
    path = root / REGISTRY_FILE
    data = yaml.safe_load(path.read_text())
    entry = data["models"][-1]
    entry.update(values)
    for artifact in entry["artifacts"]:
        artifact.update(
            sha256=sha256_file(root / artifact["path"]), bytes=(root / artifact["path"]).stat().st_size
        )
    entry["evidence"][0]["sha256"] = sha256_file(root / "evidence/runs" / RUN / EVIDENCE_FILE)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def scratch(release_repo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(release_repo, tmp_path / "repo"))


@pytest.mark.holds("GATE-INTEG-001")
def test_the_scratch_release_passes(release_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert release_findings(release_repo, monkeypatch) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_a_released_state_other_than_the_checkpoints_is_caught(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RL1: the released state.json edited (a better held-out loss, a later step), re-cited."""
    state = scratch / RELEASED / "state.json"
    values = json.loads(state.read_text())
    values.update(heldout_loss=0.5, step=2000)
    state.write_text(json.dumps(values))
    entry_edited(scratch)
    assert_named(
        release_findings(scratch, monkeypatch), "the released state.json is not the checkpoint's state.json"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_release_manifest_other_than_the_records_checkpoint_is_caught(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RL2: the release's manifest.json (no registry artifact) names step 2000."""
    manifest = scratch / RELEASED / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "step": 2000}, indent=1))
    assert_named(
        release_findings(scratch, monkeypatch),
        "manifest.json",
        "is not the manifest of its record's checkpoint",
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_release_under_a_spec_older_than_its_commits_is_caught(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RL3: the entry says spec 1.2.0 (in the changelog); its commit, HEAD, has today's spec."""
    entry_edited(scratch, spec_version="1.2.0")
    found = release_findings(scratch, monkeypatch)
    assert_named(
        found, f"{NAME}@{VERSION}", f"spec_version 1.2.0 is older than the spec {load_spec().version}"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_record_restating_the_released_tokenizer_otherwise_is_caught(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RL4: the cited record's data.tokenizer_sha256 edited and re-cited; state.json has the true one."""
    record = scratch / "evidence/runs" / RUN / EVIDENCE_FILE
    data = json.loads(record.read_text())
    data["data"]["tokenizer_sha256"] = OTHER_SHA
    record.write_text(json.dumps(data, indent=2))
    entry_edited(scratch)
    assert_named(
        release_findings(scratch, monkeypatch),
        f"data.tokenizer_sha256 is '{OTHER_SHA}', but the released state.json says",
    )


@pytest.mark.holds("GATE-INTEG-001")
def test_the_ledger_releases_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The live release of the repository's registry passes the same audit (its manifest and state)."""
    checker = Checker(REPO_ROOT, load_spec())
    checker.retired = read_retirements(REPO_ROOT)  # the withdrawn 0.1.0's files are retired
    registry = read_registry(REPO_ROOT / REGISTRY_FILE)
    records = {
        p.name: load_evidence(p / EVIDENCE_FILE) for p in RECORDS.iterdir() if (p / EVIDENCE_FILE).is_file()
    }
    checker.check_registry(registry, records)
    assert [f.line() for f in checker.violations] == []
