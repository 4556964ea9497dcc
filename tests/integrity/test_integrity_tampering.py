"""Falsifiers of the ledger's truth: tamper with a released model's evidence, one way at a time.

One real run is trained with `stack train --preset smoke` inside a scratch copy of this
repository (its history, spec, ledger, registry, docs, tests and sources), so its record names
the copy's commit and a clean tree, and it is released in the copy's registry like any model.
Each test then copies that repository, plants exactly one tampering, and asserts that
check_integrity reports it, naming the file, the gate and what is wrong. A tampering of the
record's own truth is looked for by the check of that record alone (`--runs-only --run`, which
needs no other record); one the registry, the history or the docs must show, by the whole
check. A tampered record is re-cited in the registry by its new sha256, as a forger would, so
what catches it is the record's truth and not merely its changed bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.derive import Artifacts, Inputs, derive
from contracts.evidence import EVIDENCE_FILE, LEDGER_DIR, EvidenceRecord, read_evidence, sha256_file
from contracts.model_card import model_card
from contracts.registry import read_registry
from contracts.retirement import read_retirements
from contracts.spec import load_spec_from
from tests.support.ledger_support import SMOKE_OPTIONS, assert_check_required, each_required_check
from tests.support.train_support import prepared, smoke_args
from tools.integrity.check import CITED_EVIDENCE_RE, WEIGHTS_FILE, main, run_checks
from tools.integrity.retirement import blob_bytes, retired_blob
from tools.records.scratch import bump_policy, bump_revision, commit_all, copy_repo, edit_gate, git

RUN_ID = "scratch-release"
RECORD = f"{LEDGER_DIR.as_posix()}/{RUN_ID}/{EVIDENCE_FILE}"
REGISTRY = "evidence/registry.yaml"
MODEL, VERSION = "scratch-smoke", "0.1.0"
RELEASE = f"{MODEL}@{VERSION}"
MODEL_DIR = f"evidence/models/{MODEL}-{VERSION}"
CHECKER = Path(__file__).resolve().parents[2] / "tools" / "check_integrity.py"
STACK = Path(sys.executable).with_name("stack")  # the installed CLI


@dataclass(frozen=True)
class Released:
    """The scratch repository with one released run, and what the tests need to know of it."""

    root: Path
    sha: str  # the commit the run was trained at: the registry's git sha
    data: Path  # the run's DATA_DIR, outside the repository
    run_dir: Path  # the run itself, outside the repository (its checkpoints are not in the ledger)


def copy_env(root: Path) -> dict[str, str]:
    """The environment of a command run in the scratch copy: its own stack, no __pycache__ written."""
    env = {k: v for k, v in os.environ.items() if k != "GATESTACK_SPEC"}
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    return env


def stack_in_copy(root: Path, *argv: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m stack ARGV` with the scratch copy's own code, from its root."""
    cmd = [sys.executable, "-m", "stack", *map(str, argv)]
    return subprocess.run(cmd, cwd=root, env=copy_env(root), capture_output=True, text=True, check=False)


def release_argv(root: Path, run_dir: Path, run_id: str, version: str) -> list[str | Path]:
    """`stack release` of `run_dir` (filed as `run_id`) into the copy's models and registry."""
    return [
        "release",
        run_dir,
        "--ledger-record",
        root / LEDGER_DIR / run_id,
        "--name",
        MODEL,
        "--version",
        version,
        "--models-dir",
        root / "evidence" / "models",
        "--registry",
        root / REGISTRY,
    ]


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Released:
    """Train once in a scratch copy (its own code, a clean tree) and release the run there."""
    base = tmp_path_factory.mktemp("released")
    root = base / "repo"
    sha = copy_repo(root)
    data = prepared(base)  # outside the copy: the tree stays clean
    run_dir = base / "runs" / RUN_ID
    proc = stack_in_copy(root, *smoke_args(data, run_dir), "--evidence-dir", root / LEDGER_DIR)
    assert proc.returncode == 0, proc.stderr
    proc = stack_in_copy(root, *release_argv(root, run_dir, RUN_ID, VERSION))
    assert proc.returncode == 0, proc.stderr
    commit_all(root, f"release {RELEASE}")
    return Released(root, sha, data, run_dir)


@pytest.fixture
def repo(released: Released, tmp_path: Path) -> Path:
    """A private copy of the released repository, git history included, to tamper with."""
    root = tmp_path / "repo"
    shutil.copytree(released.root, root, symlinks=True)
    return root


# -- tampering helpers -----------------------------------------------------------------------


def edit_registry(root: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """Apply `change` to the registry's list of models and write it back."""
    path = root / REGISTRY
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data["models"])
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def release_entry(models: list[dict[str, Any]]) -> dict[str, Any]:
    """The scratch release's entry among the registry's models."""
    return next(m for m in models if m["name"] == MODEL and m["version"] == VERSION)


def cite(root: Path, run_id: str) -> None:
    """Make the release cite `run_id` by the sha256 of its metadata.json as it is now."""
    digest = sha256_file(root / LEDGER_DIR / run_id / EVIDENCE_FILE)
    edit_registry(
        root, lambda models: release_entry(models).update(evidence=[{"run": run_id, "sha256": digest}])
    )


def tamper(root: Path, change: Callable[[dict[str, Any]], None], recite: bool = True) -> None:
    """Edit the released record's JSON with `change`; re-cite it in the registry unless told not to."""
    path = root / RECORD
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if recite:
        cite(root, RUN_ID)


def result(data: dict[str, Any], gate_id: str) -> dict[str, Any]:
    """One gate result of a record's JSON."""
    return next(g for g in data["gates"] if g["id"] == gate_id)


def violations(root: Path) -> list[str]:
    return [finding.line() for finding in run_checks(root, []).violations]


def named(found: list[str], *fragments: str) -> bool:
    """Whether some violation names every fragment (its file, its gate, what is wrong)."""
    return any(all(fragment in line for fragment in fragments) for line in found)


def assert_caught(root: Path, *fragments: str) -> None:
    found = violations(root)
    assert named(found, *fragments), "\n".join(found)


def record_violations(root: Path) -> list[str]:
    """What the check of the released record alone reports, against its repository: a tampering
    of the record's own truth (its verdicts, thresholds, metrics, spec and dates) is found by the
    record's check, which needs no other record, so the whole ledger is not checked again."""
    return [f.line() for f in run_checks(root, [root / LEDGER_DIR / RUN_ID], runs_only=True).violations]


def assert_record_caught(root: Path, *fragments: str) -> None:
    found = record_violations(root)
    assert named(found, *fragments), "\n".join(found)


def stack_train(released: Released, out: Path, ledger: Path) -> subprocess.CompletedProcess[str]:
    """The installed `stack train`, asked to file its record in `ledger`."""
    argv = [str(STACK), *smoke_args(released.data, out), "--evidence-dir", str(ledger)]
    return subprocess.run(argv, cwd=released.data.parent, capture_output=True, text=True, check=False)


# -- the untampered copy -----------------------------------------------------------------------


@pytest.mark.holds("GATE-INTEG-001")
def test_untampered_copy_passes(released: Released, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole check of the copy, through the command line's own `main` in this process (the
    script itself, as a separate process, is what test_no_environment_variable_… runs)."""
    record = read_evidence(repo / RECORD)
    assert (record.code.git_sha, record.code.git_dirty) == (released.sha, False)
    status = main(["--root", str(repo)])
    out = capsys.readouterr().out
    assert status == 0 and "integrity: OK" in out, out


# -- verdicts ----------------------------------------------------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_warn_flipped_to_pass_is_caught(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line's exit status and report, run in this process so that the proof by
    mutation reaches its judge; the record's own truth is the check of that record alone
    (`--runs-only --run`)."""

    def flip(data: dict[str, Any]) -> None:
        adequacy = result(data, "GATE-DATA-004")
        assert adequacy["verdict"] == "WARN"  # a smoke run is far too short for its data
        adequacy["verdict"], adequacy["message"] = "PASS", None

    tamper(repo, flip)
    status = main(["--root", str(repo), "--runs-only", "--run", str(repo / LEDGER_DIR / RUN_ID)])
    out = capsys.readouterr().out
    expected = f"{RECORD} [{RUN_ID}]: GATE-DATA-004: recorded PASS, but its measured values re-judge to WARN"
    assert status == 3 and expected in out, out


@pytest.mark.gate("GATE-INTEG-001")
def test_not_run_flipped_to_pass_is_caught(repo: Path) -> None:
    def flip(data: dict[str, Any]) -> None:
        # A gate the run never judged, as the ledger writes it (NOT_RUN, nothing measured), flipped.
        result(data, "GATE-EVAL-004").update(measured=None, message=None, step=None, verdict="PASS")

    tamper(repo, flip)
    assert_record_caught(repo, RECORD, "GATE-EVAL-004: recorded PASS, but its measured values re-judge to")


@pytest.mark.gate("GATE-INTEG-001")
def test_edited_record_no_longer_matches_its_citation(repo: Path) -> None:
    tamper(repo, lambda data: result(data, "GATE-DATA-004").update(verdict="PASS"), recite=False)
    assert_caught(repo, REGISTRY, RELEASE, f"{RUN_ID!r}: its metadata.json does not match the cited sha256")


@pytest.mark.gate("GATE-INTEG-001")
def test_halted_record_still_released_is_caught(repo: Path) -> None:
    def halt(data: dict[str, Any]) -> None:  # a true FAIL: the numbers fail and the run halted
        leak = result(data, "GATE-DATA-005")
        leak.update(measured={"shared_documents": 3}, verdict="FAIL", message="3 document(s) are shared")
        data["run"].update(status="halted", stop_reason="GATE-DATA-005 fired")

    tamper(repo, halt)
    found = violations(repo)
    report = "\n".join(found)
    assert named(found, REGISTRY, RELEASE, RUN_ID, "status is halted, not completed"), report
    assert named(found, REGISTRY, RELEASE, RUN_ID, "GATE-DATA-005 is FAIL"), report


# -- measured values, thresholds, gates, mode, waivers, metrics ---------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_first_loss_contradicting_its_pass_is_caught(repo: Path) -> None:
    tamper(repo, lambda data: result(data, "GATE-TRAIN-004")["measured"].update(loss=40.0))
    assert_record_caught(
        repo, RECORD, "GATE-TRAIN-004: recorded PASS, but its measured values re-judge to FAIL"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_heldout_windows_contradicting_their_pass_are_caught(repo: Path) -> None:
    tamper(repo, lambda data: result(data, "GATE-EVAL-001")["measured"].update(distinct_windows=2))
    assert_record_caught(
        repo, RECORD, "GATE-EVAL-001: recorded PASS, but its measured values re-judge to FAIL"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_threshold_edited_in_the_record_is_caught(repo: Path) -> None:
    tamper(repo, lambda data: result(data, "GATE-TRAIN-004")["threshold"].update(first_loss_tolerance=100.0))
    assert_record_caught(repo, RECORD, "GATE-TRAIN-004: the record's thresholds", "are not the spec's")


@pytest.mark.gate("GATE-INTEG-001")
def test_deleted_gate_result_is_caught(repo: Path) -> None:
    def delete(data: dict[str, Any]) -> None:
        data["gates"] = [g for g in data["gates"] if g["id"] != "GATE-EVAL-001"]

    tamper(repo, delete)
    found = violations(repo)
    report = "\n".join(found)
    assert named(found, RECORD, "a completed train run must judge GATE-EVAL-001; it is missing"), report
    assert named(found, REGISTRY, RELEASE, "did not judge GATE-EVAL-001"), report


@pytest.mark.gate("GATE-INTEG-001")
def test_all_gate_results_deleted_are_caught(repo: Path) -> None:
    tamper(repo, lambda data: data.update(gates=[]))
    required = load_spec_from(repo / "spec").required_gates("train")
    found = record_violations(repo)
    unreported = [g for g in required if not named(found, RECORD, f"run must judge {g}; it is missing")]
    assert required and unreported == [], "\n".join(found)


@pytest.mark.gate("GATE-INTEG-001")
def test_unknown_contract_mode_is_caught(repo: Path) -> None:
    tamper(repo, lambda data: data.update(contract_mode="sometimes"))
    assert_record_caught(repo, RECORD, "contract_mode 'sometimes' is not one of")


@pytest.mark.gate("GATE-INTEG-001")
def test_contracts_off_cannot_back_a_release(repo: Path) -> None:
    tamper(repo, lambda data: data.update(contract_mode="off"))
    assert_caught(repo, REGISTRY, RELEASE, RUN_ID, "was made with the contracts off")


@pytest.mark.gate("GATE-INTEG-001")
def test_waiver_added_after_the_fact_is_caught(repo: Path) -> None:
    def waive(data: dict[str, Any]) -> None:
        data["waivers"] = [{"gate": "GATE-DATA-004", "reason": "it is only a smoke run"}]
        result(data, "GATE-DATA-004")["verdict"] = "WAIVED"

    tamper(repo, waive)
    assert_record_caught(repo, RECORD, "waiver of GATE-DATA-004 was not asked for on any command line")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(("key", "value"), [("step", 4), ("last_heldout_loss", 1.25)])
def test_edited_metrics_are_caught(repo: Path, key: str, value: float) -> None:
    tamper(repo, lambda data: data["metrics"].update({key: value}))
    assert_record_caught(repo, RECORD, f"metrics.{key} is {value!r}, but its artifacts derive")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_repeatability_claim_without_its_replay_is_caught(repo: Path) -> None:
    """Planted: the smoke run replayed nothing (CPU), and its repeatable flag is stamped on without
    the replay having run: a record stating what no check showed must be caught."""

    def claim(data: dict[str, Any]) -> None:
        assert data["determinism"]["flags"]["repeatable"] is None
        data["determinism"]["flags"]["repeatable"] = True

    tamper(repo, claim)
    assert_record_caught(repo, RECORD, "claims its run repeatable without a passing GATE-CKPT-003 replay")


# -- the registry ------------------------------------------------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("how", ["as-is", "start-time-moved", "one-throughput-changed"])
def test_fabricated_copy_cited_by_the_registry_is_caught(repo: Path, how: str) -> None:
    forged = "scratch-forged"
    shutil.copytree(repo / LEDGER_DIR / RUN_ID, repo / LEDGER_DIR / forged)
    path = repo / LEDGER_DIR / forged / EVIDENCE_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    data["run"]["id"] = forged
    if how != "as-is":  # a forger who knows duplicates are matched on start time, commit and kind
        data["run"]["started"] = (
            datetime.fromisoformat(data["run"]["started"]) + timedelta(seconds=1)
        ).isoformat()
    if how == "one-throughput-changed":  # ... and on the log's bytes: one step's throughput rewritten
        log = repo / LEDGER_DIR / forged / "metrics.jsonl"
        lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        step = next(line for line in lines if line["type"] == "step")
        step["tokens_per_s"] *= 1.01
        log.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        art = next(a for a in data["artifacts"] if a["path"] == "metrics.jsonl")
        art.update(sha256=sha256_file(log), bytes=log.stat().st_size)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    cite(repo, forged)
    # The checker cannot tell which of the two is the copy; its finding names both.
    assert_caught(repo, forged, RUN_ID, "a copy of another record")


@pytest.mark.gate("GATE-INTEG-001")
def test_release_citing_a_benchmark_record_is_caught(repo: Path) -> None:
    bench = next(p.parent.name for p in sorted((repo / LEDGER_DIR).glob(f"bench-*/{EVIDENCE_FILE}")))
    cite(repo, bench)
    assert_caught(repo, REGISTRY, RELEASE, bench, "is a benchmark record, not a training run")


@pytest.mark.gate("GATE-INTEG-001")
def test_registry_git_sha_moved_to_another_commit_is_caught(released: Released, repo: Path) -> None:
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert head != released.sha
    edit_registry(repo, lambda models: release_entry(models).update(git_sha=head))
    assert_caught(repo, REGISTRY, RELEASE, f"was made at {released.sha[:12]}, the registry says {head[:12]}")


@pytest.mark.gate("GATE-INTEG-001")
def test_swapped_weights_are_caught(repo: Path) -> None:
    weights = repo / MODEL_DIR / WEIGHTS_FILE
    payload = bytearray(weights.read_bytes())
    payload[-1] ^= 0xFF  # one flipped byte in the last tensor
    weights.write_bytes(bytes(payload))
    digest = sha256_file(weights)
    edit_registry(repo, lambda models: release_entry(models)["artifacts"][0].update(sha256=digest))
    assert_caught(
        repo, REGISTRY, RELEASE, f"the released {WEIGHTS_FILE} is not the checkpoint the run hashed"
    )


# -- the spec ----------------------------------------------------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_threshold_changed_without_revision_bump_is_caught(repo: Path) -> None:
    revision = load_spec_from(repo / "spec").gates["GATE-TRAIN-004"].revision
    edit_gate(repo, "GATE-TRAIN-004", first_loss_tolerance=5.0)
    assert_caught(repo, f"GATE-TRAIN-004 rev {revision}: thresholds changed without a revision bump")


@pytest.mark.gate("GATE-INTEG-001")
def test_threshold_bump_missing_from_the_changelog_is_caught(repo: Path) -> None:
    revision = bump_revision(repo, "GATE-TRAIN-004", named=False, first_loss_tolerance=5.0)
    assert_caught(repo, "revisions.yaml", f"does not name 'GATE-TRAIN-004 rev {revision}'")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("value", [float("nan"), True, None], ids=["nan", "true", "null"])
def test_threshold_that_is_not_a_finite_number_is_refused(repo: Path, value: object) -> None:
    edit_gate(repo, "GATE-TRAIN-004", first_loss_tolerance=value)
    assert_caught(repo, "spec/gates/train.yaml", "GATE-TRAIN-004.thresholds.first_loss_tolerance.value")


# -- the ledger --------------------------------------------------------------------------------


# The ledger's writer refusing a clash (exit 2, nothing written) is no verdict of a judge, and it
# runs in a `stack train` of its own: the test shows the ledger kept whole, the gate holding.
@pytest.mark.holds("GATE-INTEG-001")
def test_training_over_an_existing_record_is_refused(released: Released, repo: Path, tmp_path: Path) -> None:
    ledger = repo / LEDGER_DIR
    existing = next(p.name for p in sorted(ledger.iterdir()) if p.name != RUN_ID)
    before = (ledger / existing / EVIDENCE_FILE).read_bytes()
    proc = stack_train(released, tmp_path / "x" / existing, ledger)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "append-only" in proc.stderr and existing in proc.stderr
    assert (ledger / existing / EVIDENCE_FILE).read_bytes() == before


@pytest.mark.holds("GATE-INTEG-001")  # as above: a refusal of the writer, and the check stays clean
def test_second_run_with_the_same_name_is_refused(released: Released, repo: Path, tmp_path: Path) -> None:
    before = (repo / RECORD).read_bytes()
    out = tmp_path / "second" / RUN_ID
    proc = stack_train(released, out, repo / LEDGER_DIR)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "append-only" in proc.stderr and RUN_ID in proc.stderr
    assert (repo / RECORD).read_bytes() == before and not out.exists()
    assert violations(repo) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_ledger_directory_without_its_record_is_caught(repo: Path) -> None:
    (repo / RECORD).unlink()  # its config.toml and metrics.jsonl stay
    assert_caught(
        repo, f"{LEDGER_DIR.as_posix()}/{RUN_ID} [{RUN_ID}]: ledger directory without {EVIDENCE_FILE}"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_readme_citing_a_deleted_record_is_caught(repo: Path) -> None:
    cited = CITED_EVIDENCE_RE.search((repo / "README.md").read_text(encoding="utf-8"))
    assert cited is not None, "README.md cites no evidence record"
    shutil.rmtree(repo / LEDGER_DIR / cited.group(1))
    assert_caught(repo, "README.md [line", f"cites {cited.group(0)}, which does not exist in the ledger")


# -- a record is a cache of a derivation; policy is statute; no off-switch; waivers ---------------


@pytest.mark.gate("GATE-INTEG-001")
def test_a_model_card_that_contradicts_its_record_is_caught(repo: Path) -> None:
    card = repo / MODEL_DIR / "MODEL_CARD.md"
    text = card.read_text(encoding="utf-8")
    assert "| GATE-DATA-004 | WARN |" in text
    card.write_text(text.replace("| GATE-DATA-004 | WARN |", "| GATE-DATA-004 | PASS |"), encoding="utf-8")
    assert_caught(repo, f"{MODEL_DIR}/MODEL_CARD.md [{RELEASE}]: is not the card its record gives")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_record_naming_another_spec_version_than_its_commit_is_caught(repo: Path) -> None:
    version = load_spec_from(repo / "spec").version
    tamper(repo, lambda data: data["spec"].update(version="1.6.0"))
    found = record_violations(repo)
    assert named(found, RECORD, "names spec 1.6.0, but its commit"), "\n".join(found)
    assert named(found, RECORD, "newer than the spec 1.6.0 the record names"), "\n".join(found)
    assert version != "1.6.0"


@pytest.mark.gate("GATE-INTEG-001")
def test_a_policy_digest_the_spec_never_had_is_caught(repo: Path) -> None:
    cited: dict[str, int] = {}

    def zeroed(data: dict) -> None:
        policy = data["spec"]["policies"]["run_kinds"]
        cited["revision"] = policy["revision"]  # whichever revision the record was made under
        policy.update(sha256="0" * 64)

    tamper(repo, zeroed)
    assert_record_caught(repo, RECORD, f"cites run_kinds rev {cited['revision']} with digest 000000000000")


@pytest.mark.gate("GATE-INTEG-001")
@each_required_check("train", SMOKE_OPTIONS)
def test_each_check_a_train_record_must_show_taken_out_is_caught(
    released: Released, tmp_path: Path, gate_id: str, check: str
) -> None:
    """The released record's copy, checked on its own against the release's repository (a record's
    own truth needs no other record, so the whole ledger is not checked again for each check)."""
    record = released.root / LEDGER_DIR / RUN_ID
    assert_check_required(record, tmp_path / RUN_ID, "train", gate_id, check, root=released.root)


def _started_a_day_earlier(data: dict[str, Any], _root: Path) -> None:
    for key in ("started", "finished"):
        data["run"][key] = (datetime.fromisoformat(data["run"][key]) - timedelta(days=1)).isoformat()


def _moved_to_the_release_commit(data: dict[str, Any], root: Path) -> None:
    """The commit that released the run, made after it, has the same spec/ and code."""
    data["code"]["git_sha"] = git(root, "rev-parse", "HEAD")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    "edit", [_started_a_day_earlier, _moved_to_the_release_commit], ids=["started-earlier", "later-commit"]
)
def test_a_run_dated_before_its_commit_was_made_is_caught(
    repo: Path, edit: Callable[[dict[str, Any], Path], None]
) -> None:
    tamper(repo, lambda data: edit(data, repo))
    assert_record_caught(repo, RECORD, "before its commit", "was made")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("committed", [False, True], ids=["in-the-working-tree", "in-a-later-commit"])
def test_a_filed_record_edited_where_nothing_it_cites_can_show_it_is_caught(
    repo: Path, committed: bool
) -> None:
    """The environment a run states is written once, with no second witness: only the ledger's
    history shows it changed (in the working tree, or committed on top)."""
    tamper(repo, lambda data: data["env"].update(device="cuda", cuda="12.4"))
    if committed:
        commit_all(repo, "the run's environment restated")
        assert_caught(repo, RECORD, "was changed in commit", "the ledger is append-only")
    else:
        assert_caught(repo, RECORD, "was changed in the working tree", "the ledger is append-only")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_record_citing_the_policy_before_the_one_in_force_is_caught(repo: Path) -> None:
    """The record made at the copy's commit cites run_kinds one revision back, with that
    revision's true digest: the requirements it would be held to are the older, laxer ones."""
    spec = load_spec_from(repo / "spec")
    now = spec.policies["run_kinds"].revision
    before = next(e for e in spec.policy_revisions["run_kinds"] if e.revision == now - 1)
    tamper(
        repo,
        lambda data: data["spec"]["policies"]["run_kinds"].update(
            revision=before.revision, sha256=before.sha256
        ),
    )
    assert_record_caught(repo, RECORD, f"cites run_kinds rev {before.revision}, older than rev {now}")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("edit", ["requirement-deleted", "kind-invented"])
def test_a_run_kinds_edit_without_a_revision_is_caught(repo: Path, edit: str) -> None:
    path = repo / "spec" / "run_kinds.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if edit == "requirement-deleted":
        data["run_kinds"]["train"]["gates"].remove("GATE-EVAL-001")
    else:
        data["run_kinds"]["unjudged"] = {"description": "requires nothing", "gates": []}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert_caught(repo, "run_kinds.yaml changed without a revision bump")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_policy_bump_the_changelog_does_not_name_is_caught(repo: Path) -> None:
    path = repo / "spec" / "benchmarks.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["benchmarks"][0]["goal"] = 500.0  # a goal loosened a hundredfold
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    revision = bump_policy(repo, "benchmarks", named=False)
    assert_caught(repo, "revisions.yaml", f"does not name 'benchmarks rev {revision}'")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_withdrawn_release_whose_weights_are_swapped_is_caught(repo: Path) -> None:
    registry = yaml.safe_load((repo / REGISTRY).read_text(encoding="utf-8"))
    withdrawn = next(m for m in registry["models"] if m.get("withdrawn"))
    path = withdrawn["artifacts"][0]["path"]  # retired from the tree: git keeps its bytes
    kept = blob_bytes(repo, retired_blob(read_retirements(repo), path) or "")
    assert kept is not None
    payload = bytearray(kept)
    payload[-1] ^= 0xFF
    weights = repo / path
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(bytes(payload))
    digest = sha256_file(weights)

    def rehash(models: list[dict[str, Any]]) -> None:
        entry = next(
            m for m in models if m["name"] == withdrawn["name"] and m["version"] == withdrawn["version"]
        )
        entry["artifacts"][0]["sha256"] = digest

    edit_registry(repo, rehash)
    key = f"{withdrawn['name']}@{withdrawn['version']}"
    assert_caught(repo, REGISTRY, key, "differs from the entry committed in")


@pytest.mark.gate("GATE-INTEG-001")
def test_the_same_weights_released_again_under_another_version_are_caught(repo: Path) -> None:
    """A re-badge: the release's weights, record and card copied under a new version, every hash and
    the card as the check would write them. One model's weights back one live release."""
    again = "0.1.1"
    shutil.copytree(repo / MODEL_DIR, repo / f"evidence/models/{MODEL}-{again}")

    def rebadge(models: list[dict[str, Any]]) -> None:
        entry = json.loads(json.dumps(release_entry(models)))
        entry["version"] = again
        entry["card"] = entry["card"].replace(f"{MODEL}-{VERSION}", f"{MODEL}-{again}")
        for art in entry["artifacts"]:
            art["path"] = art["path"].replace(f"{MODEL}-{VERSION}", f"{MODEL}-{again}")
        models.append(entry)

    edit_registry(repo, rebadge)
    model = next(m for m in read_registry(repo / REGISTRY).models if m.version == again)
    record = read_evidence(repo / RECORD)
    assert record.checkpoint is not None
    card = model_card(model, record, record.checkpoint, Path(model.card).parent.as_posix())
    (repo / model.card).write_text(card, encoding="utf-8")
    assert_caught(repo, REGISTRY, f"{MODEL}@{again}", f"that {RELEASE} already releases")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_waived_blocking_gate_stops_at_the_release(released: Released, repo: Path, tmp_path: Path) -> None:
    """`stack train --waive GATE-TRAIN-002` (clipping off) is not released without its acceptance,
    and the check wants the acceptance in the registry and on the card."""
    commit_all(repo, "the copy as it is")  # a clean tree: the run names this commit
    run_id, run_dir = "scratch-waived", tmp_path / "runs" / "scratch-waived"
    waive = ("--waive", "GATE-TRAIN-002", "--reason", "clipping off, on purpose")
    train = [
        *smoke_args(released.data, run_dir, "train.clip_norm=0"),
        *waive,
        "--evidence-dir",
        repo / LEDGER_DIR,
    ]
    assert stack_in_copy(repo, *train).returncode == 0
    argv = release_argv(repo, run_dir, run_id, "0.2.0")
    refused = stack_in_copy(repo, *argv)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "GATE-TRAIN-002 is WAIVED (a blocking gate): release only with --accept-waiver" in refused.stderr
    accept = ("--accept-waiver", "GATE-TRAIN-002", "--reason", "a demonstration of an unclipped run")
    assert stack_in_copy(repo, *argv, *accept).returncode == 0
    card = (repo / f"evidence/models/{MODEL}-0.2.0/MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Waivers accepted by this release" in card and "a demonstration of an unclipped run" in card
    assert [line for line in violations(repo) if f"{MODEL}@0.2.0" in line] == []
    ours = f"{MODEL}@0.2.0"

    def unaccept(models: list[dict[str, Any]]) -> None:
        next(m for m in models if f"{m['name']}@{m['version']}" == ours).pop("accepted_waivers")

    edit_registry(repo, unaccept)
    assert_caught(repo, REGISTRY, ours, "GATE-TRAIN-002 is WAIVED (a blocking gate)")


# What it shows is that no switch reaches a process started from a shell: forcing the gate off in
# this process cannot reach those processes either, by design, so it is no falsifier of the gate.
@pytest.mark.holds("GATE-INTEG-001")
def test_no_environment_variable_switches_a_gate_off_in_stack_train_or_the_check(
    released: Released, repo: Path, tmp_path: Path
) -> None:
    """The switch of spec 1.6.0 (`PYTEST_CURRENT_TEST=x GATESTACK_FORCE_PASS=GATE-…`) changes nothing."""
    env = {
        **copy_env(repo),
        "PYTEST_CURRENT_TEST": "x",
        "GATESTACK_FORCE_PASS": "GATE-TRAIN-002,GATE-INTEG-001",
    }
    argv = [sys.executable, "-m", "stack", *smoke_args(released.data, tmp_path / "run", "train.clip_norm=0")]
    proc = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 3 and "GATE-TRAIN-002" in proc.stderr, proc.stderr
    tamper(repo, lambda data: data["metrics"].update(step=4))
    # The record's own truth is the check of that record alone (see record_violations).
    checker = [
        sys.executable,
        str(CHECKER),
        "--root",
        str(repo),
        "--runs-only",
        "--run",
        repo / LEDGER_DIR / RUN_ID,
    ]
    proc = subprocess.run(checker, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 3 and "metrics.step is 4" in proc.stdout, proc.stdout


# gate → (its area's module of contracts/judges/, a line of it, what it becomes): the first-loss
# judge emptied; a check's row dropped from the module-level table GATE-EVAL-003's judge reads (the
# rule changes in a table, not in the function).
JUDGE_EDITS = {
    "GATE-TRAIN-004": (
        "train.py",
        '    loss, vocab = number(m, "loss"), count(m, "vocab")',
        "    return []\n    loss, vocab = 0, 2",
    ),
    "GATE-EVAL-003": (
        "eval.py",
        '    "misaligned_targets": "target(s) not predicted from the token just before them",\n',
        "",
    ),
}


@pytest.mark.gate("GATE-INTEG-002")
@pytest.mark.parametrize("gate_id", sorted(JUDGE_EDITS))
def test_a_proof_lock_kept_across_a_judge_edit_is_caught(repo: Path, gate_id: str) -> None:
    """A judge edited, its gate's entry in the lock left as it was: the lock proves other code."""
    module, line, becomes = JUDGE_EDITS[gate_id]
    judges = repo / "contracts" / "judges" / module
    text = judges.read_text(encoding="utf-8")
    edited = text.replace(line, becomes)
    assert edited != text
    judges.write_text(edited, encoding="utf-8")
    commit_all(repo, f"the judge of {gate_id} edited")
    found = [f.line() for f in run_checks(repo, []).violations]
    assert named(found, "evidence/proofs.lock", gate_id, "was proven for other code than today's"), "\n".join(
        found
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_record_and_log_forged_together_are_caught_by_a_replay(
    released: Released, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a replay sees this: the log's first loss edited, with the train loss of every evaluation
    whose window holds it, and every field the log decides re-derived into the record, so the record
    and its log agree with everything they cite. The replay runs in this process, so that the proof
    by mutation reaches the judge of its differences."""
    run = tmp_path / "run"
    shutil.copytree(released.run_dir, run, ignore=shutil.ignore_patterns("checkpoints", ".lock"))
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    first = next(line for line in lines if line.get("type") == "step")
    first["loss"] = round(first["loss"] - 0.01, 6)
    every = read_evidence(run / EVIDENCE_FILE).config["eval"]["every"]
    losses = {line["step"]: line["loss"] for line in lines if line.get("type") == "step"}
    for line in lines:
        if line.get("type") == "eval":
            window = [losses[s] for s in range(max(1, line["step"] - every + 1), line["step"] + 1)]
            line["train_loss"] = sum(window) / len(window)
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    forge_from_artifacts(run)
    assert [f.line() for f in run_checks(released.root, [run], runs_only=True).violations] == []
    status = main(["--replay", str(run), "--data", str(released.data), "--steps", "2"])
    out = capsys.readouterr()
    assert status == 3, out.out + out.err
    assert "step 1: loss is" in out.out and "GATE-TRAIN-004 measured a first loss" in out.out


def forge_from_artifacts(run: Path) -> None:
    """What a careful forger does after editing a log: every field the artifacts decide, re-derived
    into the record, and every artifact re-hashed."""
    record = read_evidence(run / EVIDENCE_FILE)
    spec = load_spec_from(Path(__file__).resolve().parents[2] / "spec")
    data = record.model_dump(mode="json")
    for art in data["artifacts"]:
        if (run / art["path"]).is_file():
            art.update(sha256=sha256_file(run / art["path"]), bytes=(run / art["path"]).stat().st_size)
    data["artifacts"] = [a for a in data["artifacts"] if (run / a["path"]).is_file()]
    record = EvidenceRecord.model_validate(data)
    derivation = derive(
        record.run.kind, Inputs(record, Artifacts(run, [a.path for a in record.artifacts]), spec)
    )
    for path, value in derivation.fields.items():
        target: Any = next(g for g in data["gates"] if g["id"] == path[1]) if path[0] == "gates" else data
        for part in path[2:-1] if path[0] == "gates" else path[:-1]:
            target = target[part]
        target[path[-1]] = value
    data["checkpoint"] = None
    (run / EVIDENCE_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
