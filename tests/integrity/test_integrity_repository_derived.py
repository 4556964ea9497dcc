"""Tamperings the checker derives from what the
repository holds: each is planted in a copy of a committed record, its artifacts re-hashed as a
forger would, and the integrity check must name it.

- a checkpoint event logged under another step's directory;
- a DPO step line whose accuracy its mean margin contradicts;
- a waiver whose reason no command line gave;
- a LASER record keeping other than ⌈ρ·rank⌉ singular values;
- an evaluation of a repository file claiming more bytes than the file holds at its commit;
- a prepare manifest whose shard holds more tokens than its bytes can;
- a run's held-out windows restated otherwise than its data's held-out shards hold;
- an evaluation of a released model naming another model's weights;
- a sample whose command line and config ask another count of tokens than it drew, or whose
  text is not the one its record hashes;
- a bandit run's last epoch plan restated one window short of what its last logged shares give;
- a quantisation restating round-to-nearest's error, or a LASER record a matrix's norm or the
  norm of the singular values it discarded, otherwise than its committed source model gives;
- a sample repointed, everywhere its record names it, at the withdrawn release 0.1.0, whose
  weights are not those the sample states;
- an export restating the built-in sample it compared logits on as half as many windows, its
  parity positions with it, in its record and export.json alike;
- a lens fitted on data restating the vocabulary it compared logits over, GATE-LENS-001 and
  GATE-LENS-005 edited together;
- an es run's epoch plan restated with quotas its data's manifest does not give, or its fitness
  evaluations with another count of targets than its population, batch and window make;
- a memorization asking for fewer examples than its table lists;
- a distillation whose teacher and student name another tokenizer than its data's, together.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from contracts.evidence import canonical_sha256
from tests.support.ledger_support import RECORDS, assert_caught, findings, gate, planted

DPO_RUN = "dpo-20261125-spec-1.22.0"
SFT_RUN = "sft-lora-20261125-spec-1.22.0"
LASER_RUN = "laser-20261122T145455"
EVAL_RUN = "eval-20261122T141536"
PREPARE_RUN = "prepare-20261125T103756"
SAMPLE_RUN = "sample-20261125T124339"
SAMPLE_RUN_26 = "sample-20261125T143147"  # reads release 0.2.0 by its repository path
LENS_TRAIN_RUN = "lens-train-20261125T171238"  # fitted a lens of release 0.2.0 (vocabulary 257)
EXPORT_RUN_26 = "export-hf-20261125T143124"  # compared logits on release 0.2.0's built-in sample
MEMORIZATION_RUN = "memorization-20261125T143155"
DISTILL_RUN, DISTILL_DATA = "distill-moe4-20261125-spec-1.27.0", "prepare-20261125T152241"
ES_RUN, ES_DATA = "es-20261125T143158", "prepare-20261125T143112"  # the es run reads the data it made
QUANTIZE_RUN, LASER_SOURCE_RUN = "quantize-20261125T143144", "laser-20261125T143130"  # committed sources
MIX_RUN = "mix-run-20261125-spec-1.22.0"  # reads the data PREPARE_RUN made, by manifest digest


def _lines_edited(run_dir: Path, edit: Any) -> None:
    """metrics.jsonl with `edit` applied to each parsed line (it returns the line to write)."""
    path = run_dir / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.write_text("".join(json.dumps(edit(line)) + "\n" for line in lines), encoding="utf-8")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_checkpoint_logged_under_another_steps_name_is_caught(tmp_path: Path) -> None:
    def misnamed(data: dict[str, Any], run_dir: Path) -> None:
        def edit(line: dict[str, Any]) -> dict[str, Any]:
            if line.get("event") == "checkpoint" and line["step"] == 20:
                line["path"] = "step-0000030"
            return line

        _lines_edited(run_dir, edit)

    run = planted(tmp_path, SFT_RUN, misnamed)
    assert_caught(run, "the checkpoint written at step 20 is logged as 'step-0000030'")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_dpo_accuracy_its_margin_contradicts_is_caught(tmp_path: Path) -> None:
    """Step 3 ranked both pairs wrong (accuracy 0, margin −0.075); written as accuracy 1 in the log and
    in GATE-DPO-004's accuracies alike, the margin still says otherwise."""

    def flattered(data: dict[str, Any], run_dir: Path) -> None:
        def edit(line: dict[str, Any]) -> dict[str, Any]:
            if line.get("type") == "step" and line["step"] == 3:
                assert line["accuracy"] == 0.0 and line["margin"] < 0
                line["accuracy"] = 1.0
            return line

        _lines_edited(run_dir, edit)
        gate(data, "GATE-DPO-004")["measured"]["accuracies"][2] = 1.0

    run = planted(tmp_path, DPO_RUN, flattered)
    assert_caught(run, "step 3 logs accuracy 1.0 with a mean margin of")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_waiver_reason_no_command_line_gave_is_caught(tmp_path: Path) -> None:
    def reworded(data: dict[str, Any], _run_dir: Path) -> None:
        data["waivers"][0]["reason"] = "reviewed and accepted by the team"

    run = planted(tmp_path, DPO_RUN, reworded)
    assert_caught(run, "waiver of GATE-EVAL-001 gives the reason 'reviewed and accepted by the team'")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_laser_record_keeping_other_than_rho_says_is_caught(tmp_path: Path) -> None:
    """ρ 0.5 of rank 128 keeps 64; every row restated as 48, in surgery.json and the record alike."""

    def fewer(data: dict[str, Any], run_dir: Path) -> None:
        report = json.loads((run_dir / "surgery.json").read_text(encoding="utf-8"))
        for rows in (report["measured"]["matrices"], data["metrics"]["matrices"]):
            for row in rows:
                row["kept"] = 48
        (run_dir / "surgery.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        for row in gate(data, "GATE-LASER-002")["measured"]["matrices"]:
            row["kept"] = 48

    run = planted(tmp_path, LASER_RUN, fewer)
    assert_caught(run, "layers.2.ffn_gate kept 48 of 128 singular values, but ρ = 0.5 keeps 64")


@pytest.mark.gate("GATE-INTEG-001")
def test_an_eval_claiming_more_bytes_than_its_file_holds_at_its_commit_is_caught(tmp_path: Path) -> None:
    """Bytes 5120 → 5600 with bits per byte recomputed to match, in eval.json and the record; the
    text's sha256 still names the file, which holds 5120."""

    def more_bytes(data: dict[str, Any], run_dir: Path) -> None:
        report = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
        for values in (report, data["metrics"]):
            values["bytes"] = 5600
            values["bits_per_byte"] = values["loss"] * values["predicted_tokens"] / (5600 * math.log(2))
        (run_dir / "eval.json").write_text(json.dumps(report), encoding="utf-8")
        measured = gate(data, "GATE-EVAL-003")["measured"]
        measured.update(bytes=5600, bits_per_byte=data["metrics"]["bits_per_byte"])
        if "text_bytes" in measured:  # the gate counted the text it was handed: a forger says 5600 there too
            measured["text_bytes"] = 5600

    run = planted(tmp_path, EVAL_RUN, more_bytes)
    assert_caught(run, "metrics.bytes is 5600, but docs/concepts/gates.md holds 5120")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_manifest_shard_holding_more_tokens_than_its_bytes_is_caught(tmp_path: Path) -> None:
    """10 000 tokens added to one shard and to its split's total alike, so the totals still add up;
    the shard's listed bytes hold a 32-byte header and 118 719 ids of 2 bytes, not 128 719."""

    def padded(data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        shard = manifest["shards"][0]
        shard["tokens"] += 10_000
        manifest["totals"][shard["split"]]["tokens"] += 10_000
        path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        data["metrics"]["totals"] = manifest["totals"]

    run = planted(tmp_path, PREPARE_RUN, padded)
    assert_caught(
        run, "shards/heldout-docs-00000.bin: 128719 tokens of 2 bytes take 257470 bytes", "lists 237470"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_heldout_windows_its_data_does_not_hold_are_caught(tmp_path: Path) -> None:
    """The held-out shards of 118 719 and 6 879 008 tokens hold 3 709 + 214 968 windows of 32
    targets; restated as 218 650, the record's spread still passes its own judge."""
    record = json.loads((RECORDS / MIX_RUN / "metadata.json").read_text(encoding="utf-8"))
    assert gate(record, "GATE-DATA-005")["measured"]["split_windows"] == 218_677

    def restated(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, "GATE-DATA-005")["measured"]["split_windows"] = 218_650

    run = planted(tmp_path, MIX_RUN, restated)
    says = ("split_windows is 218650, but the held-out shards of its data", "hold 218677 windows of 32")
    assert any(all(f in line for f in says) for line in findings(run, RECORDS / PREPARE_RUN))
    # checked alone, the run is joined to the committed ledger, whose prepare record decides it
    assert any(all(f in line for f in says) for line in findings(run))


@pytest.mark.gate("GATE-INTEG-001")
def test_an_evaluation_of_a_release_naming_other_weights_is_caught(tmp_path: Path) -> None:
    """The evaluation read stdlib-byte-demo 0.2.0 by its directory; its checkpoint restated with the
    weights of 0.1.0 (the name left as it was) is not the release it names."""
    older = "79e2420fa48a1784641231a19ced1600bdd48b35891bdfa425f4e09d45eac7fd"

    def swapped(data: dict[str, Any], _run_dir: Path) -> None:
        data["checkpoint"]["files"]["model.safetensors"]["sha256"] = older

    run = planted(tmp_path, EVAL_RUN, swapped)
    assert_caught(
        run,
        "checkpoint.files.model.safetensors is 79e2420fa48a, but config.checkpoint names the release "
        "stdlib-byte-demo@0.2.0, whose weights are d0f2dea51055",
    )


def _asked(option: str, key: str, value: int) -> Any:
    """A change restating what the command line asked (`option`) and its config (`key`) alike."""

    def change(data: dict[str, Any], _run_dir: Path) -> None:
        argv = data["run"]["argv"]
        argv[argv.index(option) + 1] = str(value)
        data["config"][key] = value

    return change


@pytest.mark.gate("GATE-INTEG-001")
def test_a_sample_asking_another_count_than_it_drew_is_caught(tmp_path: Path) -> None:
    """The sample drew 64 tokens (sample.json); its command line and config restated as 48 agree
    with each other, not with what was drawn."""

    run = planted(tmp_path, SAMPLE_RUN, _asked("--tokens", "tokens", 48))
    assert_caught(run, "sample.json holds 64 drawn token(s), but config.tokens is 48")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_sample_text_other_than_the_one_its_record_hashes_is_caught(tmp_path: Path) -> None:
    def reworded(data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "sample.json"
        result = json.loads(path.read_text(encoding="utf-8"))
        result["text"] = result["text"].replace("def", "abc")
        path.write_text(json.dumps(result), encoding="utf-8")

    run = planted(tmp_path, SAMPLE_RUN, reworded)
    assert_caught(run, "metrics.text_sha256 is", "but its artifacts derive")


@pytest.mark.gate("GATE-INTEG-001")
def test_an_es_runs_quota_its_data_does_not_give_is_caught(tmp_path: Path) -> None:
    """The es run names its data by path (every source at its full weight): the manifest's train
    windows at 128 targets give 196 577; restated as 196 579 in the plan and the quota alike."""

    def raised(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, "GATE-DATA-001")["measured"].update(quota_windows=196_579, plan_windows=196_579)

    run = planted(tmp_path, ES_RUN, raised)
    says = "gates[GATE-DATA-001].measured.quota_windows is 196579, but the quotas of the train windows"
    assert any(says in line and "give 196577" in line for line in findings(run, RECORDS / ES_DATA))


@pytest.mark.parametrize(
    ("short", "caught"),
    [
        pytest.param(1, True, marks=pytest.mark.gate("GATE-INTEG-001"), id="one-window-short"),
        pytest.param(0, False, marks=pytest.mark.holds("GATE-INTEG-001"), id="as-filed"),
    ],
)
def test_a_policy_runs_quota_its_last_shares_do_not_give_is_caught(
    tmp_path: Path, short: int, caught: bool
) -> None:
    """The bandit run's last plan was made from the shares its log's last `shares` event names
    (docs 0.5, stdlib 0.5 from step 31): contracts.plan's quotas of its data's train windows under
    the weights that serve them give 783 736; one window fewer, restated in the plan, the quota and
    GATE-DATA-002 alike, passes every judge but not the rule."""

    def shortened(data: dict[str, Any], _run_dir: Path) -> None:
        windows = gate(data, "GATE-DATA-001")["measured"]["quota_windows"] - short
        gate(data, "GATE-DATA-001")["measured"].update(quota_windows=windows, plan_windows=windows)
        gate(data, "GATE-DATA-002")["measured"].update(plan_windows=windows)

    run = planted(tmp_path, MIX_RUN, shortened)
    says = "gates[GATE-DATA-001].measured.quota_windows is 783735, but the quotas of the train windows"
    found = findings(run, RECORDS / PREPARE_RUN)
    assert any(says in line and "last shares" in line and "give 783736" in line for line in found) is caught
    assert caught or found == []


def _first_row_scaled(gate_id: str, key: str, factor: float) -> Any:
    """`gate_id`'s first matrix row's `key` times `factor`, in the record and in surgery.json alike."""

    def change(data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "surgery.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        for rows in (report["gates"][gate_id]["matrices"], gate(data, gate_id)["measured"]["matrices"]):
            rows[0][key] *= factor
        path.write_text(json.dumps(report), encoding="utf-8")

    return change


@pytest.mark.parametrize(
    ("run", "gate_id", "key", "factor", "says"),
    [
        pytest.param(
            QUANTIZE_RUN,
            "GATE-HQQ-001",
            "rtn_error",
            1.15,
            "GATE-HQQ-001's layers.0.ffn_gate rtn_error is",
            marks=pytest.mark.gate("GATE-INTEG-001"),
            id="rtn-error",
        ),
        pytest.param(
            LASER_SOURCE_RUN,
            "GATE-LASER-002",
            "discarded_norm",
            0.99,
            "GATE-LASER-002's layers.2.ffn_gate discarded_norm is",
            marks=pytest.mark.gate("GATE-INTEG-001"),
            id="discarded-norm",
        ),
        pytest.param(
            LASER_SOURCE_RUN,
            "GATE-LASER-002",
            "norm",
            1 + 1e-11,
            None,
            marks=pytest.mark.holds("GATE-INTEG-001"),
            id="norm-last-bits",
        ),
    ],
)
def test_a_surgery_restating_its_source_model_otherwise_is_caught(
    tmp_path: Path, run: str, gate_id: str, key: str, factor: float, says: str | None
) -> None:
    """The source model is committed (evidence/models/stdlib-byte-demo-0.2.0): its weights give the
    baseline error, the norms and the discarded singular values without the surgery. A change in
    the last bits (a norm summed in another order) is within NORM_RTOL and passes."""
    found = findings(planted(tmp_path, run, _first_row_scaled(gate_id, key, factor)))
    assert any(says in line for line in found) if says else found == []


@pytest.mark.parametrize(
    ("release", "says"),
    [
        pytest.param(
            "0.1.0",
            "but config.checkpoint names the release stdlib-byte-demo@0.1.0, whose weights are",
            marks=pytest.mark.gate("GATE-INTEG-001"),
            id="withdrawn-release",
        ),
        pytest.param("0.2.0", None, marks=pytest.mark.holds("GATE-INTEG-001"), id="as-filed"),
    ],
)
def test_a_read_repointed_at_a_committed_checkpoint_that_verifies_otherwise_is_caught(
    tmp_path: Path, release: str, says: str | None
) -> None:
    """The sample read release 0.2.0 by its repository path; repointed at the withdrawn 0.1.0 in its
    command line, its places, its config (digest re-made) and GATE-CKPT-002, it still states the
    weights of 0.2.0, which are not the weights the registry cites for 0.1.0 (whose directory is
    retired from the tree; git keeps its bytes)."""
    old, new = "stdlib-byte-demo-0.2.0", f"stdlib-byte-demo-{release}"

    def repointed(data: dict[str, Any], _run_dir: Path) -> None:
        run = data["run"]
        run["argv"] = [word.replace(old, new) for word in run["argv"]]
        run["places"] = {k.replace(old, new): v.replace(old, new) for k, v in run["places"].items()}
        data["config"]["checkpoint"] = data["config"]["checkpoint"].replace(old, new)
        data["config_sha256"] = canonical_sha256(data["config"])
        gate(data, "GATE-CKPT-002")["measured"]["checkpoint"] = new

    found = findings(planted(tmp_path, SAMPLE_RUN_26, repointed))
    if says is None:
        assert found == []
    else:
        assert any(says in line for line in found), found


@pytest.mark.parametrize(
    ("windows", "caught"),
    [
        pytest.param(4, True, marks=pytest.mark.gate("GATE-INTEG-001"), id="half-the-windows"),
        pytest.param(8, False, marks=pytest.mark.holds("GATE-INTEG-001"), id="as-filed"),
    ],
)
def test_an_export_restating_its_builtin_sample_otherwise_is_caught(
    tmp_path: Path, windows: int, caught: bool
) -> None:
    """The export read release 0.2.0 by its repository path and compared logits on the built-in
    sample: the fixed text as 0.2.0's byte tokenizer encodes it, 8 windows of 128 at its context.
    Restated as `windows` windows and their positions, everywhere the record and export.json say
    them, only the sample rebuilt from the checkpoint tells."""
    positions = windows * 128

    def halved(data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "export.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        for holder in (report, data["metrics"]):
            holder["sample"]["windows"] = windows
            holder["parity"]["model.safetensors"]["positions"] = positions
        gate(data, "GATE-EXPORT-001")["measured"]["positions"] = positions
        path.write_text(json.dumps(report), encoding="utf-8")

    found = findings(planted(tmp_path, EXPORT_RUN_26, halved))
    says = (
        "metrics.sample.windows is 4, but the built-in sample of evidence/models/stdlib-byte-demo-0.2.0 has 8"
    )
    assert any(says in line for line in found) is caught
    assert any("gates[GATE-EXPORT-001].measured.positions is 512" in line for line in found) is caught
    assert caught or found == []


@pytest.mark.parametrize(
    ("vocab", "caught"),
    [
        pytest.param(256, True, marks=pytest.mark.gate("GATE-INTEG-001"), id="one-token-fewer"),
        pytest.param(257, False, marks=pytest.mark.holds("GATE-INTEG-001"), id="as-filed"),
    ],
)
def test_a_lens_restating_the_vocabulary_it_compared_over_is_caught(
    tmp_path: Path, vocab: int, caught: bool
) -> None:
    """The lens compared logits over 8 × 128 window positions of release 0.2.0's 257-token
    vocabulary at each of its 5 sites; both gates restated for a vocabulary of `vocab` agree with
    each other, and only the model the record read tells."""
    per_site = 8 * 128 * vocab

    def restated(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, "GATE-LENS-005")["measured"]["elements"] = per_site
        gate(data, "GATE-LENS-001")["measured"]["elements"] = 5 * per_site

    found = findings(planted(tmp_path, LENS_TRAIN_RUN, restated))
    says = (
        "gates[GATE-LENS-005].measured.elements is 262144, but 1024 position(s) of the 257-token vocabulary"
    )
    assert any(says in line for line in found) is caught
    assert caught or found == []


@pytest.mark.gate("GATE-INTEG-001")
def test_es_evaluations_scoring_another_count_than_the_config_makes_are_caught(tmp_path: Path) -> None:
    """4 members × 8 windows × 128 next tokens is 4 096 targets; restated as 8 192, consumed and
    stated alike, so GATE-ES-005's own judge still passes."""

    def doubled(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, "GATE-ES-005")["measured"].update(targets=8192, stated_targets=8192)

    assert_caught(
        planted(tmp_path, ES_RUN, doubled),
        "gates[GATE-ES-005].measured.targets is 8192, but its artifacts derive 4096",
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_memorization_asking_fewer_examples_than_it_lists_is_caught(tmp_path: Path) -> None:
    """--n 50 drew 50 examples (memorization.json); the command line and config restated as 40."""

    run = planted(tmp_path, MEMORIZATION_RUN, _asked("--n", "n", 40))
    assert_caught(run, "memorization.json lists 50 examples, more than config.n 40")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_distillation_naming_another_tokenizer_than_its_datas_is_caught(tmp_path: Path) -> None:
    """GATE-KD-001's teacher and student identities edited together (so they still agree, and the
    gate passes): the student learns the data's tokens, whose tokenizer the manifest names."""
    other = "ab" * 32

    def renamed(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, "GATE-KD-001")["measured"].update(
            teacher_tokenizer_identity=other, student_tokenizer_identity=other
        )

    run = planted(tmp_path, DISTILL_RUN, renamed)
    says = (
        f"gates[GATE-KD-001].measured.student_tokenizer_identity is '{other}', but the tokenizer of its data"
    )
    assert any(says in line for line in findings(run, RECORDS / DISTILL_DATA))
