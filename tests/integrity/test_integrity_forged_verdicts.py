"""Tamperings the checker decides, each planted in a copy
of a committed record and finished by a perfect forger (`forger_finished`:
every field the artifacts derive re-derived, every verdict re-judged, every artifact re-hashed):

- joined to the committed ledger in a runs-only check (tools/check_integrity.check_lineage's context):
  a finetune's unique_train_tokens against the prepare manifest its data.manifest_sha256 names,
  a lens-train's lens digest against the lens reading of the file it saved;
- tokenizer.json digests held to the committed tokenizer's Hugging Face form
  (tools/committed_models.ReadModel.tokenizer_json): an export's export.json, a finetune's
  checkpoint;
- counts a code rule makes of stated numbers (contracts/gate_counts.py, contracts/derive/): lens-train
  GATE-DATA-005 windows, GATE-KD-002 teacher forwards at least the micro-steps, GATE-SFT-003
  positions_compared, GATE-DPO-003 appended, GATE-DATA-008 wanted_warmup; GATE-TRACE-002
  identities' ref_absmax and a patch's config.patch_positions held to trace.json.

A derived field is caught as planted and put back by the forger's finish (the lie cannot stand); a
cross-record or committed-file fact is caught after the finish. The records as filed pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contracts.gate_counts import heldout_windows, isolation_positions, pad_appended
from contracts.spec import load_spec
from tests.support.ledger_support import (
    CURRENT_RUN,
    DISTILL_RUN,
    DPO_RUN,
    EXPORT_RUN,
    FINETUNE_RUN,
    LENS_TRAIN_RUN,
    PATCH_RUN,
    RECORDS,
    SFT_RUN,
    TRACE_RUN,
    Change,
    assert_found,
    findings,
    forger_finished,
    gate,
    planted,
)

FORGED = "f" * 64


def _record(run: str) -> dict[str, Any]:
    return json.loads((RECORDS / run / "metadata.json").read_text(encoding="utf-8"))


def _export_tokenizer(data: dict[str, Any], run_dir: Path) -> None:
    path = run_dir / "export.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    report["files"]["tokenizer.json"]["sha256"] = FORGED
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# (what is restated, run, plant, a fragment of the finding): plants caught after the forger's finish.
FINISHED: list[tuple[str, str, Change, str]] = [
    (
        "unique-train-tokens",
        FINETUNE_RUN,
        lambda d, _r: d["metrics"].update(unique_train_tokens=d["metrics"]["unique_train_tokens"] + 29956378),
        "metrics.unique_train_tokens is",
    ),
    (
        "lens-digest",
        LENS_TRAIN_RUN,
        lambda d, _r: d["config"].update(lens_sha256=FORGED),
        f"'{LENS_TRAIN_RUN}'",
    ),
    ("export-tokenizer-digest", EXPORT_RUN, _export_tokenizer, "export.json: tokenizer.json is sha256"),
    (
        "checkpoint-tokenizer-digest",
        FINETUNE_RUN,
        lambda d, _r: d["checkpoint"]["files"]["tokenizer.json"].update(sha256=FORGED),
        "checkpoint.files.tokenizer.json is sha256",
    ),
    (
        "teacher-forwards",
        DISTILL_RUN,
        lambda d, _r: gate(d, "GATE-KD-002")["measured"].update(forwards=d["config"]["train"]["steps"] - 20),
        "the teacher ran at least",
    ),
]


@pytest.mark.parametrize(("restated", "run", "plant", "fragment"), FINISHED, ids=[c[0] for c in FINISHED])
def test_a_fact_no_rederivation_puts_back_is_caught_after_the_forgers_finish(
    tmp_path: Path, restated: str, run: str, plant: Change, fragment: str
) -> None:
    assert_found(findings(planted(tmp_path, run, forger_finished(plant))), fragment)


def _lens_windows(data: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    config = data["config"]
    windows = heldout_windows(config["heldout_batches"], config["batch_size"])
    return {("GATE-DATA-005", key): windows for key in ("heldout_windows", "set_windows", "read_windows")}


def _sft_positions(data: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    width = gate(data, "GATE-DATA-001")["measured"]["window_targets"]
    return {("GATE-SFT-003", "positions_compared"): isolation_positions(width)}


def _dpo_appended(data: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    wanted = int(load_spec().threshold("GATE-DPO-003", "probe_pad_tokens"))
    return {
        ("GATE-DPO-003", "appended"): pad_appended(wanted, gate(data, "GATE-DPO-003")["measured"]["room"])
    }


def _warmup(data: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    return {("GATE-DATA-008", "wanted_warmup"): data["config"]["data"]["bandit"]["warmup_steps"]}


def _ref_absmax(_data: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    """A norm's identity on a short prompt: recomputed by its module on every row, so its ref_absmax
    is the site's absmax (a linear site's is its product check's projections', bounded one way)."""
    trace = json.loads((RECORDS / TRACE_RUN / "trace.json").read_text(encoding="utf-8"))
    site = next(s for s in trace["trace"]["sites"] if s["name"] == "layers.0.attn_norm")
    return {("GATE-TRACE-002", "identities", "layers.0.attn_norm", "ref_absmax"): site["stats"]["absmax"]}


def _doubled(value: Any) -> Any:
    return value * 2 if not isinstance(value, float) else value / 2


# (what is restated, run, the derived values the plant changes) for plants of a derived field.
DERIVED = [
    ("lens-heldout-windows", LENS_TRAIN_RUN, _lens_windows),
    ("sft-positions-compared", SFT_RUN, _sft_positions),
    ("dpo-appended", DPO_RUN, _dpo_appended),
    ("wanted-warmup", CURRENT_RUN, _warmup),
    ("ref-absmax", TRACE_RUN, _ref_absmax),
]


def _at(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = gate(data, path[0])["measured"]
    for key in path[1:]:
        value = value[key]
    return value


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = gate(data, path[0])["measured"]
    for key in path[1:-1]:
        target = target[key]
    target[path[-1]] = value


@pytest.mark.parametrize(("restated", "run", "rule"), DERIVED, ids=[c[0] for c in DERIVED])
def test_a_count_a_code_rule_makes_restated_is_derived_again(
    tmp_path: Path, restated: str, run: str, rule: Any
) -> None:
    """The count a code rule makes of the record's other numbers is what the record states; planted,
    the checker names it, and the forger's finish can only put the true count back."""
    due = rule(_record(run))
    assert all(_at(_record(run), path) == value for path, value in due.items())

    def plant(data: dict[str, Any], _dir: Path) -> None:
        for path, value in due.items():
            _set(data, path, _doubled(value))

    found = findings(planted(tmp_path / "bare", run, plant))
    for path in due:
        assert_found(found, f"gates[{path[0]}].measured.{'.'.join(path[1:])} is", "derive")
    restored = json.loads(
        (planted(tmp_path / "forged", run, forger_finished(plant)) / "metadata.json").read_text()
    )
    assert all(_at(restored, path) == value for path, value in due.items())


# The H100 reference run's trace (spec 1.39.0): its q, k and v recomputed on CUDA rounded their
# largest magnitude another way than the traced forward, by up to the identity's own max_abs_diff.
GPU_TRACE_RUN = "trace-20261127T153158"


def test_the_gpu_records_reference_absmax_stands_as_filed(tmp_path: Path) -> None:
    """On a GPU's record, an identity's ref_absmax differs from the traced site's absmax, by at
    most its own max_abs_diff (two tensors' largest magnitudes differ by no more than their largest
    difference), and the record stands. It is judged under GATE-TRACE-002 rev 5, older than the
    spec's, so its identities are not derived again (a stale verdict); the bound for today's
    sampled identities is held by contracts/derive/reports.py on the current trace fixture."""
    trace = json.loads((RECORDS / GPU_TRACE_RUN / "trace.json").read_text(encoding="utf-8"))
    traced = next(s for s in trace["trace"]["sites"] if s["name"] == "layers.0.k")["stats"]["absmax"]
    identity = _at(_record(GPU_TRACE_RUN), ("GATE-TRACE-002", "identities", "layers.0.k"))
    assert 0 < abs(identity["ref_absmax"] - traced) <= identity["max_abs_diff"]
    assert findings(planted(tmp_path, GPU_TRACE_RUN, lambda _data, _dir: None)) == []


def test_patch_positions_restated_are_derived_from_trace_json(tmp_path: Path) -> None:
    """A sweep's config.patch_positions 'every' restated as 'last'; trace.json patched every position."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["config"]["patch_positions"] = "last"

    assert _record(PATCH_RUN)["config"]["patch_positions"] == "every"
    assert_found(findings(planted(tmp_path / "bare", PATCH_RUN, plant)), 'config.patch_positions is "last"')
    restored = json.loads(
        (planted(tmp_path / "forged", PATCH_RUN, forger_finished(plant)) / "metadata.json").read_text()
    )
    assert restored["config"]["patch_positions"] == "every"


@pytest.mark.parametrize(
    "run",
    sorted(
        {
            FINETUNE_RUN,
            LENS_TRAIN_RUN,
            EXPORT_RUN,
            DISTILL_RUN,
            SFT_RUN,
            DPO_RUN,
            CURRENT_RUN,
            TRACE_RUN,
            PATCH_RUN,
            GPU_TRACE_RUN,
        }
    ),
)
def test_the_records_as_filed_pass(tmp_path: Path, run: str) -> None:
    assert findings(planted(tmp_path, run, lambda _d, _r: None)) == []
