"""Falsifiers of the fields a command's record restates from the result file it cites.

A non-training command writes its results beside its record (eval.json, export.json,
surgery.json, trace.json, synth.json, memorization.json, matrix.json, a prepare's manifest.json),
and its record repeats some of them: scores, the weights it made, the checkpoint it read, its
settings, when it wrote them. Each field so restated is derived from the file
(contracts/derive/reports.py), and a run's id stamps the second it started
(contracts.evidence.run_id). Each test plants one edit in a copy of a record (a fresh one of
tests/support/records_support.py where the ledger has none of today's spec, else the ledger's), the
cited files re-hashed as a forger would, and asserts the integrity check names the field;
`test_the_fresh_records_pass_untampered` shows each record passes as its command made it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.evidence import canonical_sha256
from tests.support.ledger_support import Change, assert_caught, edited, findings, gate, planted, put_field
from tests.support.records_support import Filed, filed_runs

OTHER_SHA = "ab" * 32


@pytest.fixture(scope="module")
def filed(tmp_path_factory: pytest.TempPathFactory) -> Filed:
    return filed_runs(tmp_path_factory.mktemp("results"))


def copied(tmp_path: Path, run_dir: Path, change: Change) -> Path:
    """A copy of a fresh record's directory with `change` planted (its cited files re-hashed)."""
    return edited(Path(shutil.copytree(run_dir, tmp_path / run_dir.name)), change)


def set_field(path: tuple[str, ...], value: Any) -> Change:
    """A record's field set to `value`; a config field with its digest made to agree."""

    def change(data: dict[str, Any], _dir: Path) -> None:
        put_field(data, path, value)
        if path[0] == "config":
            data["config_sha256"] = canonical_sha256(data["config"])

    return change


def shifted(key: str, by: timedelta) -> Change:
    """`run.<key>` (started, finished) moved by `by`."""

    def change(data: dict[str, Any], _dir: Path) -> None:
        data["run"][key] = (datetime.fromisoformat(data["run"][key]) + by).isoformat()

    return change


def result_edited(
    name: str, edit: Callable[[dict[str, Any]], None]
) -> Callable[[dict[str, Any], Path], None]:
    """The result file `name` edited by `edit`, and the record's copy of it alike."""

    def change(data: dict[str, Any], run_dir: Path) -> None:
        report = json.loads((run_dir / name).read_text())
        edit(report)
        (run_dir / name).write_text(json.dumps(report, indent=1))
        edit(data["metrics"])

    return change


@pytest.mark.holds("GATE-INTEG-001")
def test_the_fresh_records_pass_untampered(filed: Filed) -> None:
    """Each with the records of the runs it read (an export's, an import's and a surgery's lineage
    names them)."""
    made = (filed.eval, filed.export, filed.imported, filed.lora_export, filed.quantize)
    for run_dir in (*made, filed.prepare, filed.prepare_chat):
        assert findings(run_dir, filed.train, filed.sft, filed.export) == [], run_dir.name


# -- a field restated from the result file, edited alone ------------------------------------------


RESTATED = [
    ("eval", ("metrics", "overlap", "heldout_documents"), 600),
    ("export", ("lineage", "model_sha256"), OTHER_SHA),
    ("export", ("data", "tokenizer_sha256"), OTHER_SHA),
    ("export", ("checkpoint", "step"), 4),
    ("export", ("config", "int8"), True),  # the export's --int8, which built no int8 graph
    ("quantize", ("lineage", "model_sha256"), OTHER_SHA),
    ("quantize", ("config", "bits"), 8),  # surgery.json's settings say 4
    ("quantize", ("checkpoint", "files", "model.safetensors", "sha256"), OTHER_SHA),
    ("prepare", ("data", "tokenizer_sha256"), OTHER_SHA),  # PR1
    ("imported", ("metrics", "model_vocab"), 512),
    ("imported", ("data", "tokenizer_sha256"), OTHER_SHA),
    ("imported", ("config", "source"), "/elsewhere/hf"),
    ("lora_export", ("lineage", "model_sha256"), OTHER_SHA),
    ("lora_export", ("metrics", "base_sha256"), OTHER_SHA),
]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("kind", "path", "value"), RESTATED, ids=[f"{k}-{'.'.join(p)}" for k, p, _ in RESTATED]
)
def test_a_field_restated_from_its_result_file_is_caught(
    filed: Filed, tmp_path: Path, kind: str, path: tuple[str, ...], value: Any
) -> None:
    run = copied(tmp_path, getattr(filed, kind), set_field(path, value))
    assert_caught(run, f"{'.'.join(path)} is {json.dumps(value)}, but its artifacts derive")


# -- gate values a fresh record restates of its manifest, config and log ---------------------------
# The ledger's records of spec 1.29.0 are stale under GATE-DATA-013 rev 5 and GATE-DATA-007 rev 3,
# so dedup's threshold restated and the model vocabulary GATE-DATA-007 restates of
# the config are planted in fresh records, beside spec 1.30.0's values a prepare's manifest and
# config give again: each source's byte account (a forger moving the bytes a document lost into
# framing keeps the sum), the settings the filter rules were judged by, the data's tokenizer, and
# the documents keyed as stored.


def _bytes_moved_to_framing(measured: dict[str, Any]) -> None:
    account = next(iter(measured["accounts"].values()))
    account["kept_bytes"] -= 12
    account["framing_bytes"]["blank"] = account["framing_bytes"].get("blank", 0) + 12


FRESH_GATE_VALUES = [
    ("prepare", "GATE-DATA-013", lambda m: m["dedup"].update(min_jaccard=0.7), "dedup.min_jaccard is 0.7"),
    ("sft", "GATE-DATA-007", lambda m: m.update(model_vocab=8192), "model_vocab is 8192"),
    ("prepare", "GATE-DATA-014", _bytes_moved_to_framing, "kept_bytes is"),
    (
        "prepare",
        "GATE-DATA-013",
        lambda m: m["rules"]["settings"]["script"].update(min_share=0.9),
        "min_share is 0.9",
    ),
    ("prepare", "GATE-DATA-007", lambda m: m.update(tokenizer="hf"), "tokenizer is"),
    (
        "prepare_chat",
        "GATE-DATA-005",
        lambda m: m.update(stored_heldout=m["stored_heldout"] - 1),
        "stored_heldout",
    ),
]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("kind", "gate_id", "edit", "says"),
    FRESH_GATE_VALUES,
    ids=["min-jaccard", "model-vocab", "accounts", "rules-settings", "round-trip-tokenizer", "stored"],
)
def test_a_gate_value_its_artifacts_decide_restated_is_caught(
    filed: Filed, tmp_path: Path, kind: str, gate_id: str, edit: Callable[[dict[str, Any]], None], says: str
) -> None:
    run = copied(tmp_path, getattr(filed, kind), lambda data, _dir: edit(gate(data, gate_id)["measured"]))
    assert_caught(run, f"gates[{gate_id}].measured.", says, "but its artifacts derive")


@pytest.mark.gate("GATE-INTEG-001")
def test_eval_tokens_restated_in_the_result_file_too_are_caught_by_the_gate_that_counted_them(
    filed: Filed, tmp_path: Path
) -> None:
    """Eval.json and the record say 10 more tokens; GATE-EVAL-003 counted the text's."""
    run = copied(
        tmp_path, filed.eval, result_edited("eval.json", lambda r: r.update(tokens=r["tokens"] + 10))
    )
    assert_caught(run, "gates[GATE-EVAL-003].measured.tokens is", "but its artifacts derive")


@pytest.mark.gate("GATE-INTEG-001")
def test_an_evaluation_naming_another_checkpoint_than_its_config_is_caught(
    filed: Filed, tmp_path: Path
) -> None:
    """The record's checkpoint and GATE-CKPT-002 renamed; config.checkpoint names the one read."""

    def renamed(data: dict[str, Any], _dir: Path) -> None:
        data["checkpoint"]["name"] = gate(data, "GATE-CKPT-002")["measured"]["checkpoint"] = "step-0000002"

    run = copied(tmp_path, filed.eval, renamed)
    assert_caught(run, 'checkpoint.name is "step-0000002", but its artifacts derive')


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("kind", ["export", "quantize", "imported", "lora_export"])
def test_a_checkpoint_whose_files_are_not_the_ones_read_is_caught(
    filed: Filed, tmp_path: Path, kind: str
) -> None:
    """Planted: one hash of the checkpoint read (an import's: written) swapped, its name kept; the
    result file cites the checkpoint by the sha256 of its manifest, which the record's step and
    files make again."""

    def swapped(data: dict[str, Any], _dir: Path) -> None:
        data["checkpoint"]["files"]["optimizer.safetensors"]["sha256"] = OTHER_SHA

    run = copied(tmp_path, getattr(filed, kind), swapped)
    assert_caught(run, "checkpoint.files: the manifest of step", "the record names another checkpoint")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("export", "but the checkpoint it read"),
        ("lora_export", "but the checkpoint it read"),
        ("imported", "but import.json read"),
    ],
)
def test_a_source_parent_that_is_not_the_model_read_is_caught(
    filed: Filed, tmp_path: Path, kind: str, says: str
) -> None:
    def repointed(data: dict[str, Any], _dir: Path) -> None:
        data["lineage"]["parents"][0]["checkpoint_sha256"] = OTHER_SHA

    run = copied(tmp_path, getattr(filed, kind), repointed)
    assert_caught(run, "lineage's source parent names the weights abababababab", says)


@pytest.mark.gate("GATE-INTEG-001")
def test_an_export_finished_before_it_wrote_export_json_is_caught(filed: Filed, tmp_path: Path) -> None:
    """Planted: export.json is written before the record is settled."""
    run = copied(tmp_path, filed.export, shifted("finished", timedelta(seconds=-30)))
    assert_caught(run, "run.finished is", "before export.json was created")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_surgery_finished_after_it_wrote_surgery_json_is_caught(filed: Filed, tmp_path: Path) -> None:
    """surgery.json is written once the record is settled, so the run cannot finish after it."""
    run = copied(tmp_path, filed.quantize, shifted("finished", timedelta(minutes=5)))
    assert_caught(run, "run.finished is", "after surgery.json was created")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_run_moved_away_from_the_second_its_id_stamps_is_caught(filed: Filed, tmp_path: Path) -> None:
    """Eval-YYYYMMDDTHHMMSS names when the run started; both its times moved six hours on."""

    def later(data: dict[str, Any], run_dir: Path) -> None:
        for key in ("started", "finished"):
            shifted(key, timedelta(hours=6))(data, run_dir)

    run = copied(tmp_path, filed.eval, later)
    assert_caught(run, "run.started is", f"but its id {filed.eval.name} was stamped at")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("gate_id", "key", "says"),
    [
        (
            "GATE-SFT-002",
            "assistant_turns",
            "gates[GATE-SFT-002].measured.assistant_turns is 400, but manifest.json",
        ),
        (
            "GATE-SFT-001",
            "examples",
            "gates[GATE-SFT-001].measured.examples is 200, more than a split of manifest.json",
        ),
    ],
)
def test_a_prepare_restating_its_examples_otherwise_than_its_manifest_is_caught(
    filed: Filed, tmp_path: Path, gate_id: str, key: str, says: str
) -> None:
    def tenfold(data: dict[str, Any], _dir: Path) -> None:
        gate(data, gate_id)["measured"][key] *= 10

    assert_caught(copied(tmp_path, filed.prepare_chat, tenfold), says)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_prepare_claiming_the_model_s_template_over_the_stack_s_is_caught(
    filed: Filed, tmp_path: Path
) -> None:
    """GATE-SFT-001 lets a model's own template end a prompt's turn with an EOS the loss masks; data
    the stack's template rendered (its manifest's renderer) cannot claim that leave."""

    def claimed(data: dict[str, Any], _dir: Path) -> None:
        gate(data, "GATE-SFT-001")["measured"]["model_template"] = True

    run = copied(tmp_path, filed.prepare_chat, claimed)
    said = "gates[GATE-SFT-001].measured.model_template is true, but manifest.json was rendered by"
    assert_caught(run, said)


# -- the other kinds' records in the ledger --------------------------------------------------------


LEDGER_RESTATED = [
    ("trace-20261122T114524", ("config", "path_a"), "runs/other (sdpa, fp32)"),  # trace.json's paths.A
    ("lens-20261122T142052", ("config", "tokens"), 12),  # trace.json's tokens
    ("synth-20261122T172153", ("config", "settings", "samples"), 200),  # synth.json's settings
    ("memorization-20261122T172106", ("config", "prefix"), 16),  # memorization.json's prefix
    ("options-matrix-20261124T202623", ("config", "matrix", "model", "preset"), "tiny"),  # matrix.json's
]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(("run_id", "path", "value"), LEDGER_RESTATED, ids=[r for r, _, _ in LEDGER_RESTATED])
def test_a_config_restated_from_its_result_file_is_caught(
    tmp_path: Path, run_id: str, path: tuple[str, ...], value: Any
) -> None:
    run = planted(tmp_path, run_id, set_field(path, value))
    assert_caught(run, f"{'.'.join(path[:2])}", "but its artifacts derive")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_synthesis_naming_another_checkpoint_than_it_drew_from_is_caught(tmp_path: Path) -> None:
    """synth.json cites the model by its manifest's sha256; the record's files must make it."""

    def swapped(data: dict[str, Any], _dir: Path) -> None:
        data["checkpoint"]["files"]["state.json"]["sha256"] = OTHER_SHA

    run = planted(tmp_path, "synth-20261122T172153", swapped)
    assert_caught(run, "checkpoint.files: the manifest of step", "synth.json's model cites")
