"""Falsifiers of re-derivation: a record's numbers edited against the artifacts it cites.

Each test copies one real record of this repository's ledger (its directory: metadata.json and
the artifacts it cites) into a scratch directory, plants one tampering the way a forger would
(the edit, then every cited artifact re-hashed so its checksum still matches), and runs the
integrity check on that directory alone (`run_checks(..., runs_only=True)`, what a CI job asks of
its own runs), which must name the record and the field. The checks are the ones every record of
the ledger passes untampered (`test_every_ledger_record_re_derives`), so a test that turns red
with GATE-INTEG-001 forced off shows the gate, not a record that was false already.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts.derive import Artifacts, Inputs, derive, field_name, recorded
from contracts.evidence import EVIDENCE_FILE, EvidenceRecord, RunStatus, canonical_sha256, read_evidence
from contracts.judges import CHECKS, bare
from contracts.release_rules import stale_gates
from contracts.spec import load_spec
from tests.support.ledger_support import (
    CURRENT_RUN,
    DISTILL_RUN,
    DPO_RUN,
    EXPORT_RUN,
    LASER_RUN,
    LENS_TRAIN_RUN,
    MEMORIZATION_RUN,
    PATCH_RUN,
    QUANTIZE_RUN,
    RECORDS,
    ROOT,
    SAMPLE_RUN,
    SFT_RUN,
    TRACE_RUN,
    Change,
    assert_caught,
    config_edited,
    edited,
    findings,
    gate,
    log_lines,
    planted,
    put_field,
    rederive,
    write_log,
)
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.audit import LoadedEvidence, evidence_paths
from tools.integrity.check import Checker, run_checks

# -- the untampered ledger -----------------------------------------------------------------------


@pytest.mark.holds("GATE-INTEG-001")
def test_every_ledger_record_re_derives(tmp_path: Path) -> None:
    """Every record of the ledger agrees with what its artifacts derive (or is stale, with a warning)."""
    dirs = [path.parent for path in evidence_paths(ROOT)]
    report = run_checks(ROOT, dirs, runs_only=True)
    assert [f.line() for f in report.violations] == []


# -- a record made today, value by value --------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke training run made by this checkout, its record untouched."""
    root = tmp_path_factory.mktemp("trained")
    assert train(smoke_args(prepared(root), root / "run")) == 0
    return root / "run"


@pytest.mark.gate("GATE-INTEG-001")
def test_any_value_a_judge_reads_taken_out_of_a_record_made_today_is_caught(
    trained: Path, tmp_path: Path
) -> None:
    """Each measured value a gate's judge declares (contracts.judges.CHECKS), of every gate of a
    train record, taken out alone: either its check is left short (malformed, re-judged) or the
    check is gone, which the run kind does not allow. None passes by omission."""
    assert findings(trained) == []
    record = read_evidence(trained / EVIDENCE_FILE)
    declared = [
        (result.id, key)
        for result in record.gates
        if isinstance(result.measured, dict)
        for keys in CHECKS.get(result.id, {}).values()
        for key in sorted({bare(k) for k in keys} & result.measured.keys())
    ]
    assert len(declared) > 100
    uncaught = []
    for gate_id, key in declared:
        copy = Path(shutil.copytree(trained, tmp_path / "copy"))
        edited(copy, lambda data, _dir, g=gate_id, k=key: gate(data, g)["measured"].pop(k))
        if not findings(copy):
            uncaught.append(f"{gate_id}.{key}")
        shutil.rmtree(copy)
    assert uncaught == []


@pytest.mark.gate("GATE-INTEG-001")
def test_a_loss_that_consumed_other_targets_than_its_step_line_logs_is_caught(tmp_path: Path) -> None:
    """The current record's GATE-TRAIN-007 counted and hashed 128 targets at step 40, as the step
    line logs; restated as 256, its statement made to agree, it still re-judges PASS."""

    def doubled(data: dict[str, Any], _dir: Path) -> None:
        measured = gate(data, "GATE-TRAIN-007")["measured"]
        measured.update(targets=256, stated_targets=256)
        measured.update(targets_sha256="0" * 64, stated_targets_sha256="0" * 64)

    run = planted(tmp_path, CURRENT_RUN, doubled)
    assert_caught(run, "gates[GATE-TRAIN-007].measured.targets is 256, but its artifacts derive 128")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_precision_restated_to_match_what_the_loss_read_is_caught(tmp_path: Path) -> None:
    """An fp32 run whose loss read bfloat16 logits, the record made to agree (precision bf16): it
    re-judges PASS, but the config the run wrote says fp32."""

    def bf16(data: dict[str, Any], _dir: Path) -> None:
        gate(data, "GATE-TRAIN-007")["measured"].update(precision="bf16", logits_dtypes=["bfloat16"])

    run = planted(tmp_path, CURRENT_RUN, bf16)
    assert_caught(run, 'gates[GATE-TRAIN-007].measured.precision is "bf16", but its artifacts derive "fp32"')


@pytest.mark.gate("GATE-INTEG-001")
def test_a_record_of_1_16_0_without_its_shuffle_gate_is_caught(tmp_path: Path) -> None:
    """GATE-DATA-002 taken out of a train record of spec 1.16.0, from which train records must
    judge it; records of earlier versions, which did not, pass the ledger check without it."""

    def without(data: dict[str, Any], _dir: Path) -> None:
        data["gates"] = [g for g in data["gates"] if g["id"] != "GATE-DATA-002"]

    run = planted(tmp_path, CURRENT_RUN, without)
    assert_caught(run, "a completed train run must judge GATE-DATA-002; it is missing")


def _restated(gate_id: str, **values: Any) -> Callable[[dict[str, Any], Path], None]:
    """The record's values of `gate_id` set to `values`, which agree with each other."""
    return lambda data, _dir: gate(data, gate_id)["measured"].update(values)


def _derived_again(gate_id: str, key: str, planted_value: Any) -> Callable[[dict[str, Any]], str]:
    """The finding expected of `gate_id`'s `key` restated as `planted_value`: its artifacts derive
    the value the untampered record holds (the run wrote it with the function the checker runs)."""

    def fragment(record: dict[str, Any]) -> str:
        genuine = gate(record, gate_id)["measured"][key]
        return (
            f"gates[{gate_id}].measured.{key} is {json.dumps(planted_value)}, "
            f"but its artifacts derive {json.dumps(genuine)}"
        )

    return fragment


def _flattered_evaluation(data: dict[str, Any], run_dir: Path) -> None:
    """The last evaluation line's held-out loss lowered by 0.1, the record's values of it too: the
    stopper and the line agree, each batch's loss in the line does not."""
    lines = log_lines(run_dir)
    last = [line for line in lines if line.get("type") == "eval"][-1]
    last["heldout_loss"] -= 0.1
    write_log(run_dir, lines)
    gate(data, "GATE-EVAL-002")["measured"].update(reported_loss=last["heldout_loss"])


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            _restated("GATE-TRAIN-001", served_tokens=256, step_tokens=256),
            _derived_again("GATE-TRAIN-001", "served_tokens", 256),
        ),
        (
            _restated("GATE-TRAIN-005", texts_score=95.0, observed_score=95.0, logged_score=95.0),
            _derived_again("GATE-TRAIN-005", "texts_score", 95.0),
        ),
        (
            _restated("GATE-EVAL-002", losses_mean=3.0, reported_loss=3.0, judged_loss=3.0),
            _derived_again("GATE-EVAL-002", "losses_mean", 3.0),
        ),
        (_flattered_evaluation, 'gates[GATE-EVAL-002].verdict is "PASS", but its artifacts derive "FAIL'),
        (
            _restated("GATE-EVAL-004", compared_heldout_loss=3.0, reported_heldout_loss=3.0),
            _derived_again("GATE-EVAL-004", "compared_heldout_loss", 3.0),
        ),
        (
            _restated("GATE-TRAIN-007", logged_loss=3.0, forward_loss=3.0),
            _derived_again("GATE-TRAIN-007", "logged_loss", 3.0),
        ),
        (
            _restated("GATE-EVAL-001", precision="bf16", logits_dtypes=["bfloat16"]),
            'gates[GATE-EVAL-001].measured.precision is "bf16", but its artifacts derive "fp32"',
        ),
    ],
    ids=[
        "served-tokens",
        "texts-score",
        "held-out-mean",
        "flattered-evaluation",
        "overfit-compared",
        "logged-loss",
        "evaluation-precision",
    ],
)
def test_what_a_run_reported_is_derived_again_from_what_it_measured(
    tmp_path: Path,
    change: Callable[[dict[str, Any], Path], None],
    fragment: str | Callable[[dict[str, Any]], str],
) -> None:
    """The current record restated so its own values agree (each re-judges PASS): the step lines'
    served tokens, the sample lines' texts and the evaluation lines' per-batch losses derive the
    values again with the run's own functions."""
    if callable(fragment):
        fragment = fragment(json.loads((RECORDS / CURRENT_RUN / EVIDENCE_FILE).read_text(encoding="utf-8")))
    assert_caught(planted(tmp_path, CURRENT_RUN, change), CURRENT_RUN, fragment)


# -- the command line against the config it asked for -----------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "old", "new", "fragment"),
    [
        (
            "mix-run-20261124-spec-1.14.0",
            "moe_balance_coef = 0.1\n",
            "moe_balance_coef = 0.01\n",
            "model.moe_balance_coef=0.1",
        ),
        ("ft-demo-20261123", "every = 20\n", "every = 40\n", "eval.every=20"),
    ],
    ids=["a-coefficient", "the-evaluation-cadence"],
)
def test_a_config_other_than_its_command_line_asked_for_is_caught(
    tmp_path: Path, run: str, old: str, new: str, fragment: str
) -> None:
    """The config edited and every field it decides re-derived: the command line the record keeps
    still asks for the old value."""
    assert_caught(planted(tmp_path, run, config_edited(old, new)), f"its command line sets {fragment}")


@pytest.fixture(scope="module")
def default_set_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mixture-of-experts smoke run whose command line sets model.moe_top_k to its default, 2:
    a value config.toml leaves out, as it leaves out every architecture option at its default."""
    root = tmp_path_factory.mktemp("default-set")
    run = root / "run"
    sets = ["model.moe_experts=4", "model.moe_top_k=2", "train.steps=2", "eval.every=2", "ckpt.every=2"]
    assert train(smoke_args(prepared(root), run, *sets, "monitor.sample_every=2")) == 0
    assert "moe_top_k" not in (run / "config.toml").read_text()
    return run


@pytest.mark.holds("GATE-INTEG-001")
def test_a_key_set_to_the_default_config_toml_leaves_out_is_held_to_that_default(
    default_set_run: Path,
) -> None:
    assert not [line for line in findings(default_set_run) if "its command line sets" in line]


@pytest.mark.gate("GATE-INTEG-001")
def test_a_key_set_to_its_default_and_edited_in_the_config_is_caught(
    default_set_run: Path, tmp_path: Path
) -> None:
    """The default written in and changed (top 1), every field it decides re-derived: the command
    line still asks for 2."""
    run = tmp_path / "run"
    shutil.copytree(default_set_run, run)
    edited(run, config_edited("moe_experts = 4\n", "moe_experts = 4\nmoe_top_k = 1\n"))
    assert_caught(run, "its command line sets model.moe_top_k=2, but config.toml holds 1")


@pytest.mark.holds("GATE-INTEG-001")
def test_a_key_a_resume_set_again_is_held_to_the_resume() -> None:
    """mix-run asked for train.steps=40, then a resume for 50: config.toml's 50 is the one asked for."""
    record = read_evidence(RECORDS / "mix-run" / EVIDENCE_FILE)
    assert "train.steps=40" in record.run.argv and record.metrics["resumes"][0]["changed"] == ["train.steps"]
    assert run_checks(ROOT, [RECORDS / "mix-run"], runs_only=True).violations == []


# -- forged verdicts planted on the fixture records they concern ----------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_a_quantize_gate_passing_over_no_matrices_is_caught(tmp_path: Path) -> None:
    run = planted(
        tmp_path, QUANTIZE_RUN, lambda d, _: gate(d, "GATE-HQQ-001")["measured"].update(matrices=[])
    )
    assert_caught(run, "GATE-HQQ-001: recorded PASS, but its measured values re-judge to FAIL")


def current_for(gate_id: str, kinds: tuple[str, ...]) -> tuple[str, str]:
    """The newest completed fixture record of one of `kinds` whose verdict of `gate_id` is judged
    under the gate's current revision (a stale verdict is not re-derived, so it shows nothing): its
    directory under the fixtures, and its run id."""
    spec = load_spec()
    records = [(path.parent, read_evidence(path)) for path in RECORDS.rglob(EVIDENCE_FILE)]
    for where, record in sorted(records, key=lambda r: r[1].run.started, reverse=True):
        judged = any(g.id == gate_id for g in record.gates)
        completed = record.run.status is RunStatus.COMPLETED
        if record.run.kind in kinds and judged and completed and gate_id not in stale_gates(record, spec):
            return where.relative_to(RECORDS).as_posix(), record.run.id
    raise AssertionError(f"no {'/'.join(kinds)} record judges {gate_id} at its current revision")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("key", ["post_clip_norm", "clip_norm"])
def test_a_clip_check_with_its_values_removed_is_caught(tmp_path: Path, key: str) -> None:
    where, run_id = current_for("GATE-TRAIN-002", ("train", "finetune"))
    run = planted(tmp_path, where, lambda d, _: gate(d, "GATE-TRAIN-002")["measured"].pop(key))
    assert_caught(run, run_id, "GATE-TRAIN-002")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("run", [SFT_RUN, DPO_RUN, DISTILL_RUN])
def test_sft_dpo_and_distill_records_are_held_to_their_logs(tmp_path: Path, run: str) -> None:
    def edit(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["best_heldout_loss"] = 0.125
        gate(data, "GATE-TRAIN-003")["measured"]["loss"] = 0.25

    planted_run = planted(tmp_path, run, edit)
    assert_caught(planted_run, "metrics.best_heldout_loss is 0.125, but its artifacts derive")
    assert_caught(planted_run, "gates[GATE-TRAIN-003].measured.loss is 0.25, but its artifacts derive")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_training_record_that_drops_its_log_is_caught(tmp_path: Path) -> None:
    def drop(data: dict[str, Any], run_dir: Path) -> None:
        data["artifacts"] = [a for a in data["artifacts"] if a["path"] != "metrics.jsonl"]
        (run_dir / "metrics.jsonl").unlink()

    assert_caught(planted(tmp_path, "mix-run", drop), "cites no metrics.jsonl")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_loss_spike_inserted_in_the_log_is_caught(tmp_path: Path) -> None:
    """Spikes are judged once the trailing window is full: step 600 of the 1200-step reference run."""

    def spike(_data: dict[str, Any], run_dir: Path) -> None:
        lines = log_lines(run_dir)
        step = next(line for line in lines if line.get("type") == "step" and line["step"] == 600)
        step["loss"] = 9.0  # far above the trailing window; no loss_spike event, no WARN
        write_log(run_dir, lines)

    run = planted(tmp_path, "demo-reference-20261122-spec-1.2.0", spike)
    assert_caught(
        run, "metrics.jsonl: its loss_spike events are at steps [], but the losses it logs spike at [600]"
    )
    assert_caught(run, 'gates[GATE-TRAIN-006].verdict is "PASS", but its artifacts derive "WARN"')
    assert_caught(run, "metrics.loss_spikes is 0, but its artifacts derive 1")


@pytest.mark.gate("GATE-INTEG-001")
def test_held_out_loss_rising_over_the_last_evals_under_a_pass_is_caught(tmp_path: Path) -> None:
    def rising(_data: dict[str, Any], run_dir: Path) -> None:
        lines = log_lines(run_dir)
        evals = [line for line in lines if line.get("type") == "eval"]
        for i, line in enumerate(evals[-4:]):  # while the train loss keeps falling
            line["heldout_loss"] = 3.0 + 0.1 * i
            line["train_loss"] = 2.9 - 0.1 * i
        write_log(run_dir, lines)

    run = planted(tmp_path, CURRENT_RUN, rising)
    assert_caught(run, 'gates[GATE-EVAL-004].verdict is "PASS", but its artifacts derive "WARN"')
    assert_caught(run, "metrics.overfit_at_step is null, but its artifacts derive")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "caught"),
    [
        (CURRENT_RUN, "gates[GATE-DATA-004].measured.tokens_per_parameter is 25.0, but its artifacts derive"),
        # judged under rev 1 of the gate, stale from 1.38.0 on: its summary is derived all the same
        (
            "demo-reference-20261122-spec-1.2.0",
            "metrics.tokens_per_parameter is 25.0, but its artifacts derive 6.37",
        ),
    ],
    ids=["current", "released-stale"],
)
def test_tokens_per_parameter_edited_in_gate_and_summary_is_caught(
    tmp_path: Path, run: str, caught: str
) -> None:
    """A WARN turned PASS: tokens_seen / parameters in the same record still give the few tokens per
    parameter it had (6.4 for the released demo record)."""

    def edit(data: dict[str, Any], _dir: Path) -> None:
        adequacy = gate(data, "GATE-DATA-004")
        assert adequacy["verdict"] == "WARN"
        adequacy.update(verdict="PASS", message=None)
        adequacy["measured"]["tokens_per_parameter"] = data["metrics"]["tokens_per_parameter"] = 25.0

    assert_caught(planted(tmp_path, run, edit), caught)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_pretraining_run_restated_as_started_from_a_checkpoint_is_caught(tmp_path: Path) -> None:
    """GATE-DATA-004 rev 2 judges tokens per parameter only for a run from its seed: a pretraining
    record's WARN turned PASS by stating a checkpoint start is caught, since its record names no
    --init-from (`metrics.init_from`) for the start to have come from."""

    def edit(data: dict[str, Any], _dir: Path) -> None:
        adequacy = gate(data, "GATE-DATA-004")
        assert adequacy["verdict"] == "WARN" and adequacy["measured"]["start_from"] == "seed"
        adequacy.update(verdict="PASS", message=None)
        adequacy["measured"]["start_from"] = "checkpoint"

    run = planted(tmp_path, CURRENT_RUN, edit)
    assert_caught(
        run, 'gates[GATE-DATA-004].measured.start_from is "checkpoint", but its artifacts derive "seed"'
    )


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("what", ["digest", "config"])
def test_a_config_or_its_digest_that_the_config_file_contradicts_is_caught(tmp_path: Path, what: str) -> None:
    def edit(data: dict[str, Any], _dir: Path) -> None:
        if what == "digest":
            data["config_sha256"] = "0" * 64
        else:
            data["config"]["train"]["clip_norm"] = 0.5

    field = (
        "config_sha256 is"
        if what == "digest"
        else "config.train.clip_norm is 0.5, but its artifacts derive 1.0"
    )
    assert_caught(planted(tmp_path, "mix-run", edit), field)


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("determinism", "seeds", "train"), 1, "determinism.seeds.train is 1, but its artifacts derive 0"),
        (("determinism", "flags", "precision"), "bf16", 'determinism.flags.precision is "bf16"'),
        (("determinism", "flags", "compile"), True, "determinism.flags.compile is true"),
        (("determinism", "flags", "deterministic"), False, "determinism.flags.deterministic is false"),
        (("run", "stop_reason"), "reached train.steps=80", 'run.stop_reason is "reached train.steps=80"'),
    ],
)
def test_what_a_record_restates_of_its_config_file_is_held_to_it(
    tmp_path: Path, path: tuple[str, ...], value: Any, fragment: str
) -> None:
    def edit(data: dict[str, Any], _dir: Path) -> None:
        section = data
        for key in path[:-1]:
            section = section[key]
        section[path[-1]] = value

    assert_caught(planted(tmp_path, "ft-demo-20261123", edit), "ft-demo-20261123", fragment)


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("warn_only", True, "determinism.flags.warn_only is true, but its artifacts derive false"),
        ("deterministic_algorithms", False, "determinism.flags.deterministic_algorithms is false"),
        ("cudnn_benchmark", True, "determinism.flags.cudnn_benchmark is true"),
        ("sdpa_backends", ["flash", "cudnn"], "sdpa_backends holds cudnn"),
        ("cublas_workspace_config", None, "cublas_workspace_config is None under train.deterministic"),
        ("cublas_workspace_config", ":0:0", "cublas_workspace_config is ':0:0' under train.deterministic"),
        ("backend", "gloo", 'determinism.flags.backend is "gloo", but its artifacts derive null'),
    ],
)
def test_switches_a_deterministic_run_could_not_have_run_under_are_caught(
    tmp_path: Path, flag: str, value: Any, fragment: str
) -> None:
    """ft-demo-20261123 ran with train.deterministic on: strict, cuDNN pinned, no cuDNN attention,
    cuBLAS's workspace one of its reproducible settings; in one process, which joined no group."""
    run = planted(tmp_path, "ft-demo-20261123", lambda d, _: d["determinism"]["flags"].update({flag: value}))
    assert_caught(run, "ft-demo-20261123", fragment)


@pytest.mark.gate("GATE-INTEG-001")
def test_new_memory_filled_under_the_deterministic_setting_of_today_is_caught(tmp_path: Path) -> None:
    """Since spec 1.51.0 `train.deterministic` leaves new memory unfilled: a record of today that
    says it was filled states switches its run did not run under (ft-demo-20261123, of 1.7.0, filled
    it, as the setting then did, and passes)."""
    run = planted(
        tmp_path, CURRENT_RUN, lambda d, _: d["determinism"]["flags"].update(fill_uninitialized_memory=True)
    )
    assert_caught(run, "determinism.flags.fill_uninitialized_memory is true, but its artifacts derive false")


@pytest.mark.parametrize("named", [["flash", "cudnn_"], "flash,math"])
def test_sdpa_backends_that_are_no_backends_are_caught(tmp_path: Path, named: Any) -> None:
    """The flags list SDPA's backends by torch's names: cuDNN's renamed would hide it from the rule
    that a deterministic run never enabled it."""
    run = planted(
        tmp_path, "ft-demo-20261123", lambda d, _: d["determinism"]["flags"].update(sdpa_backends=named)
    )
    assert_caught(
        run, "ft-demo-20261123", f"determinism.flags.sdpa_backends is {named!r}, not a list of SDPA's"
    )


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("gate_id", "key", "value"),
    [
        ("GATE-CKPT-001", "checkpoint", "step-0000020"),
        ("GATE-CKPT-002", "files_verified", 3),
        ("GATE-CKPT-002", "expected_checkpoints", ["step-0000040"]),
    ],
)
def test_a_checkpoint_check_of_another_checkpoint_or_fewer_files_is_caught(
    tmp_path: Path, gate_id: str, key: str, value: Any
) -> None:
    """The log's last checkpoint is step-0000040, of four files (the record's `checkpoint`), and a
    prune after it keeps the newest ckpt.keep_last (2) and the best, never step-0000040 alone."""

    def edit(data: dict[str, Any], _dir: Path) -> None:
        gate(data, gate_id)["measured"][key] = value

    assert_caught(planted(tmp_path, CURRENT_RUN, edit), f"gates[{gate_id}].measured.{key} is")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_record_of_a_schema_no_stack_wrote_is_caught(tmp_path: Path) -> None:
    run = planted(tmp_path, "ft-demo-20261123", lambda d, _: d.update(schema_version=9))
    assert_caught(run, "schema_version 9 is newer than any this checker knows")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_best_checkpoint_other_than_the_one_after_the_best_evaluation_is_caught(tmp_path: Path) -> None:
    """ft-demo-20261123's held-out loss was lowest at step 20 (1.294; 1.330 at step 40)."""
    later = "step-0000040"
    run = planted(tmp_path, "ft-demo-20261123", lambda d, _: d["metrics"].update(best_checkpoint=later))
    assert_caught(run, 'metrics.best_checkpoint is "step-0000040", but its artifacts derive "step-0000020"')


@pytest.mark.gate("GATE-INTEG-001")
def test_a_completed_record_whose_log_ends_before_its_steps_is_caught(tmp_path: Path) -> None:
    """The log's last five steps cut off, and every summary the cut log derives restated to match."""

    def cut(data: dict[str, Any], run_dir: Path) -> None:
        lines = [line for line in log_lines(run_dir) if line.get("step", 0) <= 35]
        write_log(run_dir, lines)
        data["metrics"]["step"] = 35

    assert_caught(planted(tmp_path, "ft-demo-20261123", cut), "metrics.jsonl ends at step 35, but a run")


def _clipped_off_by(relative: float) -> Change:
    """Step 3's norm after the clip moved by `relative` (its norm 0.65 is under the clip, 1.0)."""

    def edit(_data: dict[str, Any], run_dir: Path) -> None:
        lines = log_lines(run_dir)
        line = next(line for line in lines if line.get("step") == 3)
        assert line["grad_norm"] < 1.0 and line["clipped_grad_norm"] == line["grad_norm"]
        line["clipped_grad_norm"] = line["grad_norm"] * (1 + relative)
        write_log(run_dir, lines)

    return edit


@pytest.mark.gate("GATE-INTEG-001")
def test_a_norm_after_the_clip_that_its_norm_before_contradicts_is_caught(tmp_path: Path) -> None:
    """Twice the tolerance (CLIPPED_RTOL, 1e-4) off what clipping the logged norm leaves."""
    run = planted(tmp_path, "ft-demo-20261123", _clipped_off_by(2e-4))
    assert_caught(run, "metrics.jsonl: step 3 logs grad_norm", "but clipping")


def test_a_norm_after_the_clip_within_float_rounding_stands(tmp_path: Path) -> None:
    """Half the tolerance off: float32 arithmetic may do that, and it is no tampering."""
    assert findings(planted(tmp_path, "ft-demo-20261123", _clipped_off_by(0.5e-4))) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_an_artifact_cited_from_another_runs_directory_is_caught(tmp_path: Path) -> None:
    def borrow(data: dict[str, Any], run_dir: Path) -> None:
        shutil.copytree(RECORDS / "ft-demo", run_dir.parent / "ft-demo")
        for art in data["artifacts"]:
            if art["path"] == "metrics.jsonl":
                borrowed = run_dir.parent / "ft-demo" / "metrics.jsonl"
                art.update(
                    path="../ft-demo/metrics.jsonl", sha256=hashlib.sha256(borrowed.read_bytes()).hexdigest()
                )
                art["bytes"] = borrowed.stat().st_size

    run = planted(tmp_path, "mix-run", borrow)
    assert_caught(run, "path '../ft-demo/metrics.jsonl' leaves")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_benchmark_that_says_met_over_a_missed_goal_is_caught(tmp_path: Path) -> None:
    def met(data: dict[str, Any], _dir: Path) -> None:
        assert data["metrics"]["met"] is False
        data["metrics"]["met"] = True

    assert_caught(
        planted(tmp_path, "bench-trace-20261122T172643", met),
        "metrics.met is true, but its artifacts derive false",
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_verdict_re_stamped_with_a_later_revision_is_caught(tmp_path: Path) -> None:
    """ft-demo judged GATE-DATA-007 under rev 1 (spec 1.4.0); rev 2 came with 1.7.0."""
    run = planted(tmp_path, "ft-demo", lambda d, _: gate(d, "GATE-DATA-007").update(revision=2))
    assert_caught(run, "GATE-DATA-007 rev 2 came with spec 1.7.0, newer than the spec 1.4.0 the record names")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_record_of_an_undeclared_run_kind_is_caught(tmp_path: Path) -> None:
    run = planted(tmp_path, "mix-run", lambda d, _: d["run"].update(kind="unjudged"))
    assert_caught(run, "run kind 'unjudged' is not declared in spec/run_kinds.yaml")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "change", "fragment"),
    [
        ("synth-20261122T172153", lambda d: d["metrics"].update(kept=13), "metrics.kept is 13"),
        (
            MEMORIZATION_RUN,
            lambda d: gate(d, "GATE-FT-003")["measured"].update(tuned_overlaps=[0] * 50),
            "tuned_overlaps",
        ),
        (
            "lora-merge-20261122T172041",
            lambda d: gate(d, "GATE-LORA-002")["measured"].update(max_abs_diff=0.0),
            "max_abs_diff is 0.0",
        ),
        (
            "prepare-20261123T150456",
            lambda d: d["metrics"]["filters"]["stdlib"].update(documents_in=9),
            "documents_in",
        ),
        (
            "eval-20261122T141536",
            lambda d: d["metrics"].update(bits_per_byte=1.0),
            "metrics.bits_per_byte is 1.0",
        ),
        (
            "export-hf-20261122T172052",
            lambda d: gate(d, "GATE-EXPORT-001")["measured"].update(max_abs_diff=0.0),
            "max_abs_diff is 0.0",
        ),
        (
            "trace-20261122T114524",
            lambda d: d["metrics"].update(verdict="clean!"),
            'metrics.verdict is "clean!"',
        ),
        (
            "options-matrix-20261122T171805",
            lambda d: d["metrics"]["cells"].update(ok=42),
            "metrics.cells.ok is 42",
        ),
        (
            "evalmatrix-20261122T172101",
            lambda d: d["metrics"]["rows"][2].update(bits_per_byte=5.0),
            "metrics.rows[2].bits_per_byte is 5.0",
        ),
    ],
    ids=[
        "synth",
        "memorization",
        "lora-merge",
        "prepare",
        "eval",
        "export",
        "trace",
        "options-matrix",
        "evalmatrix",
    ],
)
def test_each_command_record_is_held_to_its_result_file(
    tmp_path: Path, run: str, change: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    assert_caught(planted(tmp_path, run, lambda d, _: change(d)), fragment)


# -- verdicts and requirements under the revisions a record cites -------------------------------


def _step_loss_not_finite(data: dict[str, Any], run_dir: Path) -> None:
    """The log's eleventh step line given a NaN loss, and the record made to agree: its GATE-TRAIN-003
    (judged under a revision since superseded, so not re-judged) set to FAIL as that revision would
    have judged it, everything else re-derived. A FAIL a completed run cannot carry, stale or not."""
    lines = log_lines(run_dir)
    [line for line in lines if line.get("type") == "step"][10]["loss"] = float("nan")
    write_log(run_dir, lines)
    finite = gate(data, "GATE-TRAIN-003")
    finite.update(verdict="FAIL", message="loss is not finite at step 11")
    finite["measured"]["loss"] = float("nan")
    rederive(data, run_dir)
    assert gate(data, "GATE-TRAIN-003")["verdict"] == "FAIL"


@pytest.mark.gate("GATE-INTEG-001")
def test_a_completed_record_under_an_older_run_kinds_with_a_fail_is_caught(tmp_path: Path) -> None:
    """ft-demo-20261123 cites run_kinds rev 1: a FAIL under `completed` is caught all the same."""
    run = planted(tmp_path, "ft-demo-20261123", _step_loss_not_finite)
    assert_caught(run, "ft-demo-20261123", "status is completed, yet a gate FAILed")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            lambda d: d.update(gates=[g for g in d["gates"] if g["id"] != "GATE-DATA-005"]),
            "a completed finetune run must judge GATE-DATA-005; it is missing",
        ),
        (
            lambda d: gate(d, "GATE-DATA-007").update(verdict="NOT_RUN", measured=None, message=None),
            "a completed finetune run left GATE-DATA-007 NOT_RUN",
        ),
    ],
    ids=["deleted", "not-run"],
)
def test_a_required_gate_of_an_older_run_kinds_revision_left_out_is_caught(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    """Held to the run_kinds.yaml of the revision it cites (found in git by its digest), not let off."""
    assert_caught(planted(tmp_path, "ft-demo-20261123", lambda d, _: edit(d)), "ft-demo-20261123", fragment)


@pytest.mark.holds("GATE-INTEG-001")
def test_records_of_an_older_run_kinds_revision_are_held_to_it_without_a_warning() -> None:
    """Every record citing run_kinds rev 1 passes under rev 1's own requirements, and none is waved
    through with "its required gates are not re-checked"."""
    dirs = [RECORDS / run for run in ("ft-demo-20261123", "options-matrix-20261123T151146", "smoke-20261123")]
    report = run_checks(ROOT, dirs, runs_only=True)
    assert report.violations == []
    assert not any("not re-checked" in w.message for w in report.warnings)


@pytest.mark.holds("GATE-INTEG-001")
def test_a_policy_revision_bumped_later_under_the_same_version_is_not_held_against_older_records() -> None:
    """options_matrix rev 2 came with 1.7.0 after two 1.7.0 records were made citing rev 1; their
    commit listed no rev 2, so they are held to rev 1, not refused."""
    dirs = [RECORDS / run for run in ("bench-model-20261123T150413", "bench-trace-20261123T150358")]
    assert all(read_evidence(d / EVIDENCE_FILE).spec.policies["options_matrix"].revision == 1 for d in dirs)
    assert load_spec().revision_at("options_matrix", "1.7.0") == 2
    assert run_checks(ROOT, dirs, runs_only=True).violations == []


@pytest.mark.gate("GATE-INTEG-001")
def test_a_revision_lowered_below_its_spec_versions_is_caught(tmp_path: Path) -> None:
    """tiny-20261124 (spec 1.10.0, GATE-EVAL-001 rev 2) restamped rev 1 over a held-out set too small
    for rev 2: a lowered revision is a violation, not a stale warning that skips the judge."""

    def lowered(data: dict[str, Any], run_dir: Path) -> None:
        lines = log_lines(run_dir)
        for line in lines:
            if line.get("type") == "eval":
                line["batches"] = 8
        write_log(run_dir, lines)
        gate(data, "GATE-EVAL-001").update(revision=1)
        gate(data, "GATE-EVAL-001")["measured"].update(heldout_batches=8, distinct_windows=64)

    run = planted(tmp_path, "tiny-20261124", lowered)
    assert_caught(run, "GATE-EVAL-001 rev 1 is older than rev 2, which the spec 1.10.0 the record names")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_schema_lowered_to_have_every_verdict_read_as_stale_is_caught(tmp_path: Path) -> None:
    """tiny-20261124 (spec 1.10.0) restamped schema 1 with its GATE-TRAIN-006 WARN turned PASS: a schema-1
    record is only warned stale, so the flipped verdict would go unjudged."""

    def lowered(data: dict[str, Any], _dir: Path) -> None:
        data["schema_version"] = 1
        gate(data, "GATE-TRAIN-006").update(verdict="PASS", message=None)

    run = planted(tmp_path, "tiny-20261124", lowered)
    assert_caught(run, "schema_version 1, but records of spec 1.2.0 on (this one names 1.10.0) are schema 2")


@pytest.mark.holds("GATE-INTEG-001")
def test_the_schema_1_records_of_spec_1_1_0_stay_stale_not_refused() -> None:
    dirs = [RECORDS / run for run in ("demo-reference-20261122", "trace-20261122T005140")]
    assert all(read_evidence(d / EVIDENCE_FILE).schema_version == 1 for d in dirs)
    report = run_checks(ROOT, dirs, runs_only=True)
    assert report.violations == [] and report.warnings


@pytest.mark.gate("GATE-INTEG-001")
def test_a_halted_matrix_restamped_with_its_gates_older_revision_is_caught(tmp_path: Path) -> None:
    """options-matrix-20261123T150613 halted on GATE-ARCH-013 rev 2 (its commit had rev 2): made
    completed with a PASS under rev 1."""

    def restamped(data: dict[str, Any], _dir: Path) -> None:
        gate(data, "GATE-ARCH-013").update(revision=1, verdict="PASS", message=None)
        data["run"]["status"] = "completed"

    run = planted(tmp_path, "options-matrix-20261123T150613", restamped)
    assert_caught(run, "GATE-ARCH-013 rev 1 is older than rev 2")


# -- what a training log and config decide beyond the summary ------------------------------------


def _log_edit(edit: Callable[[list[dict[str, Any]]], None], forge: bool = True) -> Change:
    """A change that edits the metrics log, then (as a perfect forger) re-derives the record from it."""

    def change(data: dict[str, Any], run_dir: Path) -> None:
        lines = log_lines(run_dir)
        edit(lines)
        write_log(run_dir, lines)
        if forge:
            rederive(data, run_dir)

    return change


def _without(kind: str, step: int) -> Callable[[list[dict[str, Any]]], None]:
    """The log's `kind` line at `step` taken out."""

    def edit(lines: list[dict[str, Any]]) -> None:
        lines.remove(next(line for line in lines if line.get("type") == kind and line["step"] == step))

    return edit


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "kind", "step"),
    [("ft-demo-20261123", "eval", 40), ("tiny-20261124", "sample", 150), ("tiny-20261124", "eval", 100)],
    ids=["the-final-evaluation", "a-sample", "an-evaluation"],
)
def test_an_evaluation_or_sample_line_its_config_scheduled_taken_out_is_caught(
    tmp_path: Path, run: str, kind: str, step: int
) -> None:
    """ft-demo's last evaluation is where its held-out loss rose; taken out, with every field
    re-derived, the record still agreed with its log."""
    assert_caught(
        planted(tmp_path, run, _log_edit(_without(kind, step))), f"has no {kind} line at step(s) [{step}]"
    )


def _raise_sample_score(lines: list[dict[str, Any]]) -> None:
    sample = next(line for line in lines if line.get("type") == "sample" and line["step"] == 150)
    sample["score"] = 96.24242424242425  # its three scores' mean is 86.24


def _rescore_one_text(lines: list[dict[str, Any]]) -> None:
    sample = next(line for line in lines if line.get("type") == "sample" and line["step"] == 150)
    sample["scores"][2] = 100.0  # its text scores 70
    sample["score"] = sum(sample["scores"]) / len(sample["scores"])


def _hide_the_spike(lines: list[dict[str, Any]]) -> None:
    """tiny-20261124's loss spike at step 178 smoothed over, its event and WARN gone; the evaluation
    at step 200 keeps the train_loss the spike was part of."""
    steps = {line["step"]: line for line in lines if line.get("type") == "step"}
    steps[178]["loss"] = steps[177]["loss"]
    lines[:] = [line for line in lines if line.get("event") != "loss_spike"]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            _raise_sample_score,
            "the sample at step 150 logs score 96.24242424242425, but its scores' mean is 86.2",
        ),
        (_rescore_one_text, "the sample at step 150 scores its text 2 100.0, but the text scores 70.0"),
        (_hide_the_spike, "the evaluation at step 200 logs train_loss 2.405387625694275, but the mean loss"),
    ],
    ids=["sample-score", "text-score", "train-loss"],
)
def test_a_log_whose_lines_contradict_each_other_is_caught(
    tmp_path: Path, edit: Callable[[list[dict[str, Any]]], None], fragment: str
) -> None:
    """Each sample's texts are scored again by the monitor's scorer (contracts.coherence), each
    evaluation's train_loss is the mean of the eval.every step losses before it: the record derived
    from the edited log agrees with it, and what catches the edit is the log's other lines."""
    assert_caught(planted(tmp_path, "tiny-20261124", _log_edit(edit)), "tiny-20261124", fragment)


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "edit", "fragment"),
    [
        ("tiny-20261124", lambda d: d["metrics"].update(parameters=4000), "metrics.parameters is 4000, but"),
        (
            "sft-lora-20261123",
            lambda d: d["metrics"].update(parameters=771328),
            "metrics.parameters is 771328, but its artifacts derive 785664",
        ),
        (
            "distill-moe4-20261123",
            lambda d: d["metrics"].update(tokens_seen=61440),
            "metrics.tokens_seen is 61440, but its artifacts derive 30720",
        ),
        (
            "dpo-20261123",
            lambda d: gate(d, "GATE-DATA-001")["measured"].update(steps_per_epoch=3906),
            "gates[GATE-DATA-001].measured.steps_per_epoch is 3906, but 1025 unique tokens hold at most 4",
        ),
        (
            CURRENT_RUN,  # a record at today's GATE-EVAL-001 (older ones are stale for it)
            lambda d: gate(d, "GATE-EVAL-001")["measured"].update(distinct_windows=4096),
            "distinct_windows is 4096, more than the 16 held-out batches of 4 windows hold",
        ),
        (
            CURRENT_RUN,  # 6 targets of a shard unread, excused by windows said to hold 64 (ctx 32)
            lambda d: gate(d, "GATE-DATA-001")["measured"].update(window_targets=64, uncovered_most=40),
            "gates[GATE-DATA-001].measured.window_targets is 64, but its artifacts derive 32",
        ),
        (
            CURRENT_RUN,  # a capped bandit mixture, whose steps per epoch no unique-token bound holds
            lambda d: gate(d, "GATE-DATA-001")["measured"].update(
                steps_per_epoch=gate(d, "GATE-DATA-001")["measured"]["steps_per_epoch"] + 1
            ),
            "windows make",
        ),
        (
            "tiny-20261124",
            lambda d: d["run"].update(finished=d["run"]["started"]),
            "run.finished is 0.000 s after run.started, but the steps of metrics.jsonl took",
        ),
        (
            DPO_RUN,
            lambda d: gate(d, "GATE-DPO-004")["measured"].update(margins=[0.2 * i for i in range(20)]),
            "gates[GATE-DPO-004].measured.margins[1] is 0.2, but its artifacts derive",
        ),
        (
            "dpo-20261123",
            lambda d: gate(d, "GATE-DPO-001")["measured"].update(loss=0.6931471805599453),
            "gates[GATE-DPO-001].measured.loss is 0.6931471805599453, but its artifacts derive 0.69314718246",
        ),
        (
            "mix-run-20261124-spec-1.12.0",
            lambda d: gate(d, "GATE-ARCH-001")["measured"].update(
                ce=2.7519454956054688, objective=2.8538050651550293
            ),
            "gates[GATE-ARCH-001].measured.ce is 2.7519454956054688, but its artifacts derive 3.25194549",
        ),
        (
            "mix-run-20261124-spec-1.12.0",
            lambda d: gate(d, "GATE-ARCH-001")["measured"]["terms"]["router_z"].update(value=0.5),
            "gates[GATE-ARCH-001].measured.terms.router_z.value is 0.5",
        ),
        (
            "mix-run-20261124-spec-1.12.0",
            lambda d: gate(d, "GATE-ARCH-001")["measured"]["terms"]["load_balance"].update(defined=1.25),
            "measured.terms.load_balance.defined is 1.25, but its artifacts derive 1.00029",
        ),
        (
            DISTILL_RUN,
            lambda d: gate(d, "GATE-ARCH-002").update(
                verdict="PASS",
                message=None,
                measured={"routed": {"layers.0.moe": [4096] * 4, "layers.1.moe": [4096] * 4}},
            ),
            "gates[GATE-ARCH-002].measured.routed.layers.0.moe[0] is 4096, but its artifacts derive",
        ),
        (
            "sft-lora-20261123",
            lambda d: d["metrics"]["lora_matrices"].update(
                touched=d["metrics"]["lora_matrices"]["touched"][:6]
            ),
            "metrics.lora_matrices.touched is",
        ),
        (
            "sft-lora-20261123",
            lambda d: d["metrics"]["lora_matrices"].update(parameter_share=0.01),
            "metrics.lora_matrices.parameter_share is 0.01, but its artifacts derive 0.1276",
        ),
        (
            "sft-lora-20261122",
            lambda d: gate(d, "GATE-LORA-001")["measured"].update(adapters=3),
            "gates[GATE-LORA-001].measured.adapters is 3, but its artifacts derive 4",
        ),
        (
            DISTILL_RUN,
            lambda d: gate(d, "GATE-ARCH-012")["measured"].update(top_k=1),
            "gates[GATE-ARCH-012].measured.top_k is 1, but its artifacts derive 2",
        ),
        (
            CURRENT_RUN,
            lambda d: gate(d, "GATE-DATA-001")["measured"].update(served_batches=39),
            "gates[GATE-DATA-001].measured.served_batches is 39, but its artifacts derive 40",
        ),
    ],
    ids=[
        "parameters",
        "lora-parameters",
        "distill-tokens-seen",
        "steps-per-epoch",
        "distinct-windows",
        "window-targets",
        "steps-per-epoch-of-the-plan",
        "wall-time",
        "dpo-margins",
        "dpo-first-loss",
        "moe-ce",
        "moe-term",
        "moe-defined",
        "moe-routed",
        "lora-touched",
        "lora-share",
        "lora-adapters",
        "moe-top-k",
        "batches-served",
    ],
)
def test_what_a_training_config_and_log_decide_is_held_to_them(
    tmp_path: Path, run: str, edit: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    """The parameter count of the config's shape (plus LoRA's adapters), tokens per step, steps per
    epoch, the held-out windows, the wall time the steps took, DPO's and the experts' gate values at
    the step lines they were judged on, the matrices LoRA touched: each edited in the record alone."""
    assert_caught(planted(tmp_path, run, lambda d, _: edit(d)), run, fragment)


MIX_RUN = "mix-run-20261124-spec-1.12.0"  # caps, a phase at step 20 and a bandit, under spec 1.12.0
# (GATE-DATA-008 was revised in 1.23.0: its values are derived of the current record, CURRENT_RUN)


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "edit", "fragment"),
    [
        (
            CURRENT_RUN,
            lambda d: gate(d, "GATE-DATA-008")["measured"]["caps"].update(docs=0.9),
            "gates[GATE-DATA-008].measured.caps.docs is 0.9, but its artifacts derive 0.5",
        ),
        (
            CURRENT_RUN,
            lambda d: gate(d, "GATE-DATA-008")["measured"]["floors"].update(stdlib=0.4),
            "gates[GATE-DATA-008].measured.floors.stdlib is 0.4, but its artifacts derive 0.0",
        ),
        (
            CURRENT_RUN,
            lambda d: gate(d, "GATE-DATA-008")["measured"]["served"].update(docs=12),
            "gates[GATE-DATA-008].measured.served.docs is 12, but its artifacts derive",
        ),
        (
            CURRENT_RUN,
            lambda d: gate(d, "GATE-DATA-008")["measured"].update(windows=400),
            "gates[GATE-DATA-008].measured.windows is 400, but its artifacts derive 40",
        ),
        (
            MIX_RUN,
            lambda d: gate(d, "GATE-DATA-011")["measured"]["shares"].update(docs=0.3),
            "gates[GATE-DATA-011].measured.shares.docs is 0.3, but its artifacts derive 0.5",
        ),
        (
            MIX_RUN,
            lambda d: gate(d, "GATE-DATA-009")["measured"].update(after_steps=[0, 10]),
            "gates[GATE-DATA-009].measured.after_steps[1] is 10, but its artifacts derive 20",
        ),
        (
            MIX_RUN,
            lambda d: gate(d, "GATE-TRAIN-002")["measured"].update(matrix_weight_decay=0.2),
            "gates[GATE-TRAIN-002].measured.matrix_weight_decay is 0.2, but its artifacts derive 0.1",
        ),
        (
            CURRENT_RUN,
            lambda d: gate(d, "GATE-TRAIN-005")["measured"].update(temperature=1.0),
            "gates[GATE-TRAIN-005].measured.temperature is 1.0, but its artifacts derive 0.8",
        ),
        (
            "sft-lora-20261123",
            lambda d: gate(d, "GATE-TRAIN-002")["measured"].update(adapter_matrices=8),
            "gates[GATE-TRAIN-002].measured.adapter_matrices is 8, but its artifacts derive 16",
        ),
        (
            "diff-attn-mod-20261123",
            lambda d: gate(d, "GATE-ARCH-014")["measured"].update(capacity=0.5),
            "gates[GATE-ARCH-014].measured.capacity is 0.5, but its artifacts derive 0.25",
        ),
    ],
    ids=[
        "caps",
        "floors",
        "served",
        "windows",
        "concentration-shares",
        "phases",
        "matrix-decay",
        "temperature",
        "adapters",
        "capacity",
    ],
)
def test_settings_a_gate_restates_are_held_to_the_config(
    tmp_path: Path, run: str, edit: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    """A setting a gate judges against (a mixture's caps and floors, the curriculum's phases, the
    matrices' weight decay, the monitor's temperature, LoRA's adapters, the routing capacity), or
    a window's served counts, edited in the record so the verdict agrees with it: re-judging cannot
    tell, the config and the evaluation line closing the window can."""
    assert_caught(planted(tmp_path, run, lambda d, _: edit(d)), run, fragment)


SHARES_RUN = CURRENT_RUN  # its log holds the bandit policy's shares (from spec 1.14.0)
MOVED = {"docs": 0.45, "stdlib": 0.55}  # the window 31-40's share, where the policy said another


def _share_moved(data: dict[str, Any]) -> None:
    """The policy's share of the judged window moved, in GATE-DATA-008 and in GATE-DATA-011 alike,
    so that neither contradicts the other."""
    gate(data, "GATE-DATA-008")["measured"]["expected_share"] = dict(MOVED)
    gate(data, "GATE-DATA-011")["measured"]["shares"] = dict(MOVED)


def _share_moved_unlogged(data: dict[str, Any], run_dir: Path) -> None:
    """The moved share, and the log's `shares` events removed so nothing contradicts it."""
    _share_moved(data)
    write_log(run_dir, [line for line in log_lines(run_dir) if line.get("event") != "shares"])


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            lambda d, _: _share_moved(d),
            lambda r: (
                "gates[GATE-DATA-008].measured.expected_share.docs is 0.45, but its artifacts derive "
                f"{_docs_share(r)}"
            ),
        ),
        (
            lambda d, _: _share_moved(d),
            lambda r: (
                "gates[GATE-DATA-011].measured.shares.docs is 0.45, but its artifacts derive "
                f"{_docs_share(r)}"
            ),
        ),
        (
            _share_moved_unlogged,
            'gates[GATE-DATA-008].measured.expected_share is {"docs": 0.45, "stdlib": 0.55}, but its '
            "artifacts derive null",
        ),
    ],
    ids=["expected-share", "concentration-follows", "share-and-log"],
)
def test_the_policys_share_of_a_window_is_held_to_the_shares_the_log_says(
    tmp_path: Path, change: Callable[[dict[str, Any], Path], None], fragment: str | Callable[..., str]
) -> None:
    """The share GATE-DATA-008 holds a window's served counts to, and GATE-DATA-011 judges, edited in
    both so that the record agrees with itself: the policy's shares the log says at each step of
    the window derive it again."""
    if callable(fragment):
        record = json.loads((RECORDS / SHARES_RUN / EVIDENCE_FILE).read_text(encoding="utf-8"))
        assert _docs_share(record) != MOVED["docs"]
        fragment = fragment(record)
    assert_caught(planted(tmp_path, SHARES_RUN, change), SHARES_RUN, fragment)


def _docs_share(record: dict[str, Any]) -> Any:
    """The policy's share of docs for the last window GATE-DATA-008 judged, as the record states it."""
    return gate(record, "GATE-DATA-008")["measured"]["expected_share"]["docs"]


MOE_RUN = CURRENT_RUN  # four experts a layer, each evaluation line logging what it routed


def _balanced(data: dict[str, Any]) -> None:
    """GATE-ARCH-002's WARN turned PASS over counts that starve no expert."""
    gate(data, "GATE-ARCH-002").update(
        verdict="PASS", message=None, measured={"routed": {"layers.0.moe": [1024, 1024, 1024, 1024]}}
    )


def _unlogged(data: dict[str, Any], run_dir: Path) -> None:
    """The balanced counts, and the evaluation lines' own counts removed so nothing contradicts them."""
    _balanced(data)
    write_log(run_dir, [{k: v for k, v in line.items() if k != "routed"} for line in log_lines(run_dir)])


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d, _: _balanced(d), "gates[GATE-ARCH-002].measured.routed.layers.0.moe[0] is 1024, but its"),
        (_unlogged, "gates[GATE-ARCH-002].measured.routed"),
        (
            lambda d, _: gate(d, "GATE-ARCH-012")["measured"]["windows"][0].update({"layers.0.moe": [1] * 4}),
            "gates[GATE-ARCH-012].measured.windows[0].layers.0.moe[0] is 1, but its artifacts derive",
        ),
    ],
    ids=["counts", "counts-and-log", "windows"],
)
def test_routing_a_record_restates_is_held_to_the_evaluation_lines(
    tmp_path: Path, change: Callable[[dict[str, Any], Path], None], fragment: str
) -> None:
    """A starving expert's WARN hidden behind balanced counts: each evaluation line logs what it routed."""
    assert_caught(planted(tmp_path, MOE_RUN, change), MOE_RUN, fragment)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_checkpoint_too_small_for_its_parameters_is_caught(tmp_path: Path) -> None:
    """tiny-20261124's 108,928 parameters in a config shrunk to match a forged count: the checkpoint's
    model.safetensors (437,512 bytes) is not the file of the shrunk model's tensors
    (contracts.checkpoint_layout)."""

    def shrink(data: dict[str, Any], run_dir: Path) -> None:
        config = (run_dir / "config.toml").read_text()
        (run_dir / "config.toml").write_text(config.replace("ffn_hidden = 176", "ffn_hidden = 16"))
        rederive(data, run_dir)

    run = planted(tmp_path, "tiny-20261124", shrink)
    assert_caught(
        run, "model.safetensors is 437512 bytes, but the safetensors file of the tensors of its model"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_tokens_scaled_to_another_world_size_are_caught_by_the_targets_scored(tmp_path: Path) -> None:
    """world_size 2 and tokens_seen doubled, everything re-derived: the step lines still say each step
    scored 512 targets, one rank's worth."""

    def two_ranks(data: dict[str, Any], run_dir: Path) -> None:
        data["determinism"]["flags"]["world_size"] = 2
        data["metrics"]["tokens_seen"] *= 2
        rederive(data, run_dir)

    run = planted(tmp_path, "tiny-20261124", two_ranks)
    assert_caught(
        run, "metrics.tokens_seen is 204800, but the step lines of metrics.jsonl scored 102400 targets"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_unique_tokens_and_steps_per_epoch_inflated_are_caught_by_the_epochs_the_log_shows(
    tmp_path: Path,
) -> None:
    """dpo-20261123 wrapped every 4 steps over its 1,025 unique tokens (256 per step): claiming a
    million and 3,906 steps per epoch contradicts the log's wrap events and step epochs. (The unique
    tokens alone only bound the steps per epoch, since windows never cross a shard's end: inflated
    alone, they are caught against the prepare record of the same manifest, in the full check.)"""

    def inflate(data: dict[str, Any], run_dir: Path) -> None:
        data["metrics"]["unique_train_tokens"] = 1_000_000
        gate(data, "GATE-DATA-001")["measured"]["steps_per_epoch"] = 1_000_000 // 256
        rederive(data, run_dir)

    run = planted(tmp_path, "dpo-20261123", inflate)
    assert_caught(
        run, "its wrap events are at (step, epoch) [(5, 1), (9, 2), (13, 3), (17, 4)], but the record's 3906"
    )


# -- what a command's result file decides beyond what the record copies ---------------------------


def _in_file(name: str, edit: Callable[[Any], None]) -> Change:
    """A change that edits the JSON result file `name`, then re-derives the record from it, as a
    perfect forger would: what catches it is the file against itself."""

    def change(data: dict[str, Any], run_dir: Path) -> None:
        report = json.loads((run_dir / name).read_text())
        edit(report)
        (run_dir / name).write_text(json.dumps(report, indent=2) + "\n")
        rederive(data, run_dir)

    return change


def _row(rows: list[dict[str, Any]], key: str, value: Any) -> dict[str, Any]:
    return next(row for row in rows if row.get(key) == value)


def _nan_at_a_site(report: dict[str, Any]) -> None:
    _row(report["trace"]["sites"], "name", "layers.2.output")["stats"]["nan"] = 7.0


def _duplicate_two_kept_lines(data: dict[str, Any], run_dir: Path) -> None:
    lines = (run_dir / "synth.jsonl").read_text().splitlines(keepends=True)
    text = "".join(lines + lines[:2])
    (run_dir / "synth.jsonl").write_text(text)
    report = json.loads((run_dir / "synth.json").read_text())
    report.update(kept=14, records_sha256=hashlib.sha256(text.encode()).hexdigest())
    report["dropped"]["short"] = 6
    (run_dir / "synth.json").write_text(json.dumps(report, indent=2) + "\n")
    rederive(data, run_dir)


def _one_more_drop_than_logged(report: dict[str, Any]) -> None:
    row = report["filters"]["stdlib"]
    row.update(documents_in=1770, dropped={"leak": 8})


def _parity_step(record: dict[str, Any]) -> dict[str, Any]:
    """A gpu-check record's kernel parity step."""
    return next(s for s in record["metrics"]["steps"] if s["name"] == "kernel parity")


def _parity_cases(record: dict[str, Any], dtype: str) -> list[dict[str, Any]]:
    """The kernel parity cases of a gpu-check record whose inputs were `dtype`."""
    return [c for c in _parity_step(record)["measured"]["cases"] if c["dtype"] == dtype]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "change", "fragment"),
    [
        (
            "eval-20261122T141536",
            _in_file("eval.json", lambda r: r.update(bits_per_byte=2.9)),
            "eval.json: bits_per_byte is 2.9, but its loss over 5119 predicted tokens and 5120 bytes",
        ),
        (
            "evalmatrix-20261122T172101",
            _in_file("evalmatrix.json", lambda r: _row(r["rows"], "row", "C").update(bits_per_byte=5.9)),
            "evalmatrix.json: row C's bits_per_byte is 5.9, but its loss over its completion tokens",
        ),
        (
            "memorization-20261122T172106",
            _in_file(
                "memorization.json", lambda r: r["models"]["fine-tuned"].update(longest_run=3, mean_run=0.5)
            ),
            "memorization.json: its models are",
        ),
        (
            "synth-20261122T172153",
            _in_file("synth.json", lambda r: (r.update(generated=24), r["dropped"].update(short=12))),
            "synth.json: generated is 24, but its settings draw 20 samples",
        ),
        (
            "synth-20261122T172153",
            _duplicate_two_kept_lines,
            "synth.jsonl line 13 repeats an earlier line, yet kept",
        ),
        (
            EXPORT_RUN,
            lambda d, _: gate(d, "GATE-CKPT-002")["measured"].update(checkpoint="stdlib-byte-demo-0.1.0"),
            'gates[GATE-CKPT-002].measured.checkpoint is "stdlib-byte-demo-0.1.0", but its artifacts derive',
        ),
        (
            SAMPLE_RUN,
            lambda d, _: gate(d, "GATE-CKPT-002")["measured"].update(checkpoint="stdlib-byte-demo-0.1.0"),
            'gates[GATE-CKPT-002].measured.checkpoint is "stdlib-byte-demo-0.1.0", but its artifacts derive',
        ),
        (
            "export-hf-20261122T172052",
            lambda d, _: d["run"]["argv"].extend(["--waive", "GATE-EXPORT-001", "--reason", "close enough"]),
            "run.argv is",
        ),
        (
            LASER_RUN,
            lambda d, _: gate(d, "GATE-LASER-002")["measured"].update(
                matrices=gate(d, "GATE-LASER-002")["measured"]["matrices"][:-1]
            ),
            "gates[GATE-LASER-002].measured.matrices is",
        ),
        (
            LASER_RUN,
            lambda d, _: gate(d, "GATE-LASER-002")["measured"]["matrices"][0].update(
                discarded_norm=1.0, error=1.0
            ),
            "gates[GATE-LASER-002].measured.matrices[0].discarded_norm is 1.0, but its artifacts derive 3.08",
        ),
        (
            QUANTIZE_RUN,
            lambda d, _: gate(d, "GATE-HQQ-001")["measured"].update(
                matrices=gate(d, "GATE-HQQ-001")["measured"]["matrices"][:-1]
            ),
            "gates[GATE-HQQ-001].measured.matrices is",
        ),
        (
            "lens-train-20261122T142047",
            lambda d, _: gate(d, "GATE-LENS-003")["measured"]["layers"][0].update(kl_tuned=0.2),
            "gates[GATE-LENS-003].measured.layers[0].kl_tuned is 0.2, but its artifacts derive 1.57",
        ),
        (
            "lens-train-20261125T152337",
            lambda d, _: gate(d, "GATE-LENS-001")["measured"].update(elements=1310720),
            "gates[GATE-LENS-001].measured.elements is 1310720, but its artifacts derive 1315840",
        ),
        (
            "lens-20261122T142052",
            _in_file(
                "trace.json", lambda r: r["per_layer"][0].update(kl=[x / 2 for x in r["per_layer"][0]["kl"]])
            ),
            "trace.json: per_layer[0].kl is",
        ),
        (
            "trace-20261122T114524",
            _in_file("trace.json", _nan_at_a_site),
            "trace.json: its sites holding NaN/Inf are ['layers.2.output'], but it names []",
        ),
        (
            "trace-20261122T114524",
            _in_file("trace.json", lambda r: r["per_layer"][3].update(output_absmax=1.0)),
            "trace.json: per_layer[3].output_absmax is 1.0, but its sites give 3.869",
        ),
        (
            TRACE_RUN,
            lambda d, _: gate(d, "GATE-TRACE-002")["measured"].update(sites=81),
            "gates[GATE-TRACE-002].measured.sites is 81, but its artifacts derive 55",
        ),
        (
            PATCH_RUN,
            lambda d, _: gate(d, "GATE-PATCH-002")["measured"].update(elements=9999),
            "its logit-comparing gates count different vocabularies",
        ),
        (
            "options-matrix-20261123T151146",
            lambda d, _: d["metrics"].update(verdicts={"pass": 192}),
            'metrics.verdicts is {"pass": 192}, but its artifacts derive {"pass": 178, "refused": 14}',
        ),
        (
            "options-matrix-20261123T151146",
            lambda d, _: d["metrics"].update(seconds=143.0),
            "metrics.seconds is 143.0, but total of its measurements gives 285.",
        ),
        (
            "prepare-20261124T013351",
            _in_file("manifest.json", lambda r: r["totals"]["train"].update(documents=1700)),
            "manifest.json: totals.train.documents is 1700, but its train shards hold 1678",
        ),
        (
            "prepare-20261124T013351",
            _in_file("manifest.json", _one_more_drop_than_logged),
            "manifest.json: filters.stdlib drops 8 document(s), but the drop log is empty (0 bytes)",
        ),
        (
            "es-20261122T145518",
            lambda d, _: d["metrics"]["steps"][0].update(fitness_mean=-0.5),
            "metrics.steps[0] has fitness_mean -0.5 above its fitness_best",
        ),
        (
            "gpu-check-20261122T160821",
            lambda d, _: next(s for s in d["metrics"]["steps"] if s["name"] == "compile")["measured"].update(
                stack_tokens_per_s=168000
            ),
            "metrics.steps[compile].measured.stack_tokens_per_s is 168000, but the step's summary says",
        ),
        (
            "gpu-check-20261122T160821",
            lambda d, _: _parity_cases(d, "fp32")[0]["measured"].update(low_precision=True),
            "says low_precision is true, but its inputs are fp32",
        ),
        (
            "gpu-check-20261122T160821",
            lambda d, _: _parity_step(d)["measured"]["largest_diff"].update(bf16=0.002),
            "metrics.steps[kernel parity].measured.largest_diff.bf16 is 0.002, but its cases' largest",
        ),
    ],
    ids=[
        "eval-bpb",
        "evalmatrix-bpb",
        "memorization-summary",
        "synth-generated",
        "synth-duplicates",
        "export-checkpoint",
        "sample-checkpoint",
        "export-argv",
        "laser-row-dropped",
        "laser-norms",
        "hqq-row-dropped",
        "lens-train-layers",
        "lens-train-elements",
        "lens-readings",
        "trace-nan",
        "trace-per-layer",
        "trace-sites",
        "patch-elements",
        "options-verdicts",
        "options-seconds",
        "prepare-totals",
        "prepare-drop-log",
        "es-fitness",
        "gpu-check-summary",
        "gpu-check-precision",
        "gpu-check-largest-diff",
    ],
)
def test_what_a_result_file_decides_is_held_to_it(
    tmp_path: Path, run: str, change: Change, fragment: str
) -> None:
    """Identities inside a command's result file (bits per byte from loss, tokens and bytes; a summary
    from the runs or sites or readings it summarises; counts from the lines, cells or shards) and the
    gate values a legacy result file decides: a number edited in file and record alike, or in the
    record alone, is named."""
    assert_caught(planted(tmp_path, run, change), run, fragment)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_trace_restating_another_token_count_is_caught(tmp_path: Path) -> None:
    """The byte tokenizer makes 'def main():' 11 tokens, and the trace's embedding and logits hold 11
    rows (GATE-TRACE-003's site counts are 11 × width): config.tokens restated as 12, with the
    config's digest made to agree, is named."""

    def restated(data: dict[str, Any], _run_dir: Path) -> None:
        data["config"]["tokens"] = 12
        data["config_sha256"] = canonical_sha256(data["config"])

    assert_caught(planted(tmp_path, TRACE_RUN, restated), "config.tokens is 12, but its artifacts derive 11")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_trace_restating_another_token_count_in_its_report_too_is_caught(tmp_path: Path) -> None:
    """The same count restated in trace.json's site shapes as well (re-hashed): the prompt encoded
    again by the tokenizer of the checkpoint its command line names still makes 11 tokens."""

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        data["config"]["tokens"] = 12
        data["config_sha256"] = canonical_sha256(data["config"])
        path = run_dir / "trace.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        for site in report["trace"]["sites"]:
            site["shape"][1] = 12
        path.write_text(json.dumps(report), encoding="utf-8")

    assert_caught(planted(tmp_path, TRACE_RUN, restated), "makes its prompt 'def main():' 11 token(s)")


# -- across records: the releases a record names, the data a record read -------------------------


def _init_from_another_release(data: dict[str, Any], _dir: Path) -> None:
    moved = "evidence/models/stdlib-byte-demo-0.1.0"
    data["metrics"]["init_from"]["path"] = moved
    data["run"]["argv"][data["run"]["argv"].index("--init-from") + 1] = moved
    data["lineage"]["parents"][0]["path"] = moved


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            _init_from_another_release,
            "its init parent evidence/models/stdlib-byte-demo-0.1.0 is the release stdlib-byte-demo@0.1.0, "
            "whose weights are 79e2420fa48a, not the d0f2dea51055",
        ),
        (
            lambda d, _: d["lineage"]["parents"][0].update(
                checkpoint_sha256="79e2420fa48a1784641231a19ced1600bdd48b35891bdfa425f4e09d45eac7fd"
            ),
            "is the release stdlib-byte-demo@0.2.0, whose weights are d0f2dea51055, not the 79e2420fa48a",
        ),
        (
            lambda d, _: d["metrics"]["init_from"].update(step=5000),
            "metrics.init_from.step is 5000, but the release stdlib-byte-demo@0.2.0 it started from is the "
            "checkpoint of step 1200",
        ),
    ],
    ids=["path-moved", "weights-swapped", "step"],
)
def test_a_parent_named_by_a_release_path_is_held_to_the_release(
    tmp_path: Path, change: Change, fragment: str
) -> None:
    """ft-demo-20261123 started from evidence/models/stdlib-byte-demo-0.2.0: the registry says which
    weights that directory releases, and its record the step of their checkpoint."""
    assert_caught(planted(tmp_path, "ft-demo-20261123", change), "ft-demo-20261123", fragment)


@pytest.mark.gate("GATE-INTEG-001")
def test_unique_tokens_other_than_the_prepare_records_train_split_are_caught(tmp_path: Path) -> None:
    """tiny-20261124 read the data prepare-20261124T013351 made (the same manifest sha256): 30,161,272
    train tokens. Forty million, everything re-derived from them, is still not that split."""

    def inflate(data: dict[str, Any], run_dir: Path) -> None:
        data["metrics"]["unique_train_tokens"] = 40_000_000
        rederive(data, run_dir)

    run = planted(tmp_path, "tiny-20261124", inflate)
    found = [
        f.line()
        for f in run_checks(ROOT, [run, RECORDS / "prepare-20261124T013351"], runs_only=True).violations
    ]
    assert any(
        "metrics.unique_train_tokens is 40000000, but the train split of its data" in line
        and "holds 30161272 tokens" in line
        for line in found
    ), "\n".join(found)
    # checked alone, the run is joined to the committed ledger, which holds that prepare record
    assert any("metrics.unique_train_tokens is 40000000" in line for line in findings(run))


# lens-train-20261125T152337 fitted its lens on the data prepare-20261125T152241 made (the path
# /tmp/ev27/mix-data), before spec 1.28.0 had it cite that data's manifest and tokenizer.
LENS_DATA = {
    "manifest_sha256": "17be58d1ba87d57b3e0852f904664dfe00a084909d84163f481e2ef4cb49f85c",
    "tokenizer_sha256": "118613dd11c66ae5cc607f9fa9eb6030f3a1d58b14a7f1eff72835359d2a43a9",
}


def _lens_quota(windows: int) -> Change:
    """The lens record citing its data, with its epoch plan's windows (GATE-DATA-001 and -002) set."""

    def change(data: dict[str, Any], _dir: Path) -> None:
        data["data"].update(LENS_DATA)
        gate(data, "GATE-DATA-001")["measured"].update(plan_windows=windows, quota_windows=windows)
        gate(data, "GATE-DATA-002")["measured"].update(plan_windows=windows)

    return change


@pytest.mark.gate("GATE-INTEG-001")
def test_a_lens_records_epoch_plan_is_held_to_the_manifest_it_cites(tmp_path: Path) -> None:
    """Cited, the manifest decides the lens's quota windows as it does a training run's (196595 at
    128 targets): the committed count passes, two more are named, with the prepare record beside it."""
    prepare = RECORDS / "prepare-20261125T152241"
    kept = planted(tmp_path / "kept", "lens-train-20261125T152337", _lens_quota(196595))
    assert [f.line() for f in run_checks(ROOT, [kept, prepare], runs_only=True).violations] == []
    run = planted(tmp_path / "more", "lens-train-20261125T152337", _lens_quota(196597))
    found = [f.line() for f in run_checks(ROOT, [run, prepare], runs_only=True).violations]
    assert any(
        "gates[GATE-DATA-001].measured.quota_windows is 196597, but the quotas of the train windows" in line
        and "give 196595" in line
        for line in found
    ), "\n".join(found)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_lens_records_plan_windows_are_its_data_gates_and_its_manifest_is_asked_from_1_28_0(
    tmp_path: Path,
) -> None:
    """GATE-DATA-002 restates GATE-DATA-001's plan windows as a training record's does (in a record of
    today's revisions: an older one's GATE-DATA-002 is stale, not derived); a lens-train record of
    spec 1.28.0 or later that cites no manifest of its data is named."""
    record = json.loads((RECORDS / LENS_TRAIN_RUN / EVIDENCE_FILE).read_text(encoding="utf-8"))
    windows = gate(record, "GATE-DATA-001")["measured"]["plan_windows"]
    run = planted(
        tmp_path / "plan",
        LENS_TRAIN_RUN,
        lambda d, _: gate(d, "GATE-DATA-002")["measured"].update(plan_windows=windows + 2),
    )
    assert_caught(run, f"plan_windows is {windows + 2}, but its artifacts derive {windows}", "GATE-DATA-002")
    run = planted(
        tmp_path / "uncited", "lens-train-20261125T152337", lambda d, _: d["spec"].update(version="1.28.0")
    )
    assert_caught(run, "cites no data.manifest_sha256 (the manifest of its --data)")


# -- the spec a record names, against its commit --------------------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_a_spec_digest_other_than_its_commits_spec_is_caught(tmp_path: Path) -> None:
    """A clean record's spec.sha256 is the digest of spec/ at its commit (read from git)."""
    run = planted(tmp_path, "ft-demo-20261123", lambda d, _: d["spec"].update(sha256="0" * 64))
    assert_caught(run, "spec.sha256 is 000000000000, but the spec at its commit")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_gpu_check_goal_loosened_is_caught(tmp_path: Path) -> None:
    def loosened(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["goals"]["train_overhead"].update(goal=0.35, met=True)

    run = planted(tmp_path, "gpu-check-20261122T160821", loosened)
    assert_caught(run, "metrics.goals.train_overhead.goal is 0.35, but spec/benchmarks.yaml at its commit")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_goal_loosened_in_a_dirty_record_of_no_policy_digest_is_caught(tmp_path: Path) -> None:
    """bench-trace-20261122T172643 (spec 1.6.0, a dirty tree, no policy digests): its goal is still the
    one spec/benchmarks.yaml had at its commit."""
    run = planted(
        tmp_path, "bench-trace-20261122T172643", lambda d, _: d["metrics"].update(goal=1.75, met=True)
    )
    assert_caught(run, "metrics.goal is 1.75, but spec/benchmarks.yaml at its commit")


# -- the principle: any derived field, edited, is caught ------------------------------------------


def _perturbed(value: Any) -> Any:
    """A value unlike `value` of a JSON type a forger would write there (another sha256 for a
    sha256, another run status for a status, the next patch of a version: what the record's schema
    and the checker read)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, str) and re.fullmatch(r"\d+\.\d+\.\d+", value):
        major, minor, patch = value.split(".")
        return f"{major}.{minor}.{int(patch) + 1}"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return format(int(value, 16) ^ 1, "064x")
    if isinstance(value, str) and value in set(RunStatus):
        return next(status.value for status in RunStatus if status != value)
    if isinstance(value, str):
        return value + "!"
    if isinstance(value, list):
        return [*value, value[-1]] if value else [0]
    if isinstance(value, dict):
        return {**value, "planted": 1}
    return 1


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    "run", ["mix-run", "sft-lora-20261122", "evalmatrix-20261122T172101", "quantize-20261122T145535"]
)
def test_every_field_its_artifacts_derive_is_caught_when_edited(run: str) -> None:
    """Not a list of tamperings: every field the derivation covers, each edited on its own (in the
    record only; its artifacts stay as they were), is reported by the checker."""
    spec, path = load_spec(), RECORDS / run / EVIDENCE_FILE
    record = read_evidence(path)
    artifacts = Artifacts(RECORDS / run, [a.path for a in record.artifacts])
    # As the checker derives it: a verdict judged under an older revision is not re-derived.
    stale = frozenset(stale_gates(record, spec))
    derivation = derive(record.run.kind, Inputs(record, artifacts, spec, stale))
    dumped = record.model_dump(mode="json")
    fields = [
        p for p in derivation.fields if recorded(record, dumped, p) is not None and p not in derivation.since
    ]
    assert len(fields) >= 5, f"{run}: little is derived ({fields})"
    uncaught = []
    for field in fields:
        data = copy.deepcopy(dumped)
        put_field(data, field, _perturbed(recorded(record, dumped, field)))
        checker = Checker(ROOT, spec)
        tampered = EvidenceRecord.model_validate(data)
        checker.check_record(LoadedEvidence(path, tampered, raw=b""), path.parent, in_ledger=False)
        if not checker.verdict():
            uncaught.append(field_name(field))
    assert uncaught == []


def test_a_run_over_a_corpus_of_many_shards_holds_its_own_epochs(tmp_path: Path) -> None:
    """A window never crosses a shard's end, so a split cut into many shards holds fewer windows
    than its unique tokens would: its steps per epoch are below ⌊unique / tokens per step⌋, and
    the record of such a run, honest, must pass (it was once flagged as forged)."""
    from stack.cli import main as stack
    from stack.data.prepare import prepare_corpus
    from stack.train.presets import PRESETS
    from tests.support.train_support import smoke_args, write_corpus

    data, run, ledger = tmp_path / "data", tmp_path / "run", tmp_path / "ledger"
    prepare_corpus([write_corpus(tmp_path)], data, val_fraction=0.25, seed=0, shard_tokens=700)
    steps = ["train.steps=6", "eval.every=6", "ckpt.every=6", "monitor.sample_every=6"]
    assert stack([*smoke_args(data, run, *steps), "--evidence-dir", str(ledger)]) == 0
    (filed,) = ledger.iterdir()
    record = json.loads((filed / EVIDENCE_FILE).read_text())
    measured = next(g for g in record["gates"] if g["id"] == "GATE-DATA-001")["measured"]
    smoke = PRESETS["smoke"]
    per_step = smoke["train"]["batch_size"] * smoke["model"]["ctx"]
    assert measured["steps_per_epoch"] < record["metrics"]["unique_train_tokens"] // per_step
    assert findings(filed) == []
