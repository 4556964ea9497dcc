"""Tamperings the checker derives from what the
repository holds: each is planted in a copy of a committed record, its artifacts re-hashed (or every
field its artifacts derive re-derived, `rederive`) as a forger would, and the integrity check must
name it; the copy as filed passes.

- memorization.json counting reproduced examples from more tokens than GATE-FT-003's threshold;
- a falsify record missing a falsifier of its commit, or listing one its commit lacks, a
  conformance record listing a test its commit lacks, or a test under a gate it is not marked
  for;
- repeatability claimed by a run whose config plans no replay;
- GATE-TRAIN-007's train-split targets other than the first epoch's step lines scored;
- GATE-CKPT-001's optimizer tensors other than AdamW's three of each stepped tensor, and LoRA
  targets restated with the checkpoint's files left as the real adapters wrote them;
- a lens-train's steps per epoch other than its plan's windows over its batch;
- a prepare's assigned documents or GATE-DATA-012's per-source documents in other than its
  manifest's, or its leak canaries other than the cases its config's leak settings
  plant (contracts.leak_canaries): two transcript formats taken out, a whole case taken out,
  a case's must_drop restated, a row of no case;
- a training benchmark's batch size or attention other than its preset and the config defaults at
  its commit decide;
- an export's parity threshold restated looser than the gate's (thresholds in force).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts.checkpoint_layout import model_file_bytes, optimizer_file_bytes
from contracts.ledger import settle
from contracts.model_parameters import lora_touched
from contracts.spec import load_spec
from tests.support.ledger_support import CURRENT_RUN, Change, assert_caught, findings, gate, planted, rederive

MEMORIZATION_RUN = "current/memorization"  # GATE-FT-003 judged at min_verbatim_tokens 32
SFT_RUN = "current/sft"  # LoRA on q and v, batch 1: an epoch reads each example once
FINETUNE_RUN = "current/finetune"  # every parameter trained
LENS_TRAIN_RUN = "current/lens-train"
PREPARE_RUN = "current/prepare"
BENCH_RUN = "bench-train-20261123T155206"  # the demo preset, which leaves attention at its default
EXPORT_RUN = "current/export"


def _edit_json(run_dir: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
    path = run_dir / name
    report = json.loads(path.read_text(encoding="utf-8"))
    edit(report)
    path.write_text(json.dumps(report), encoding="utf-8")


def _recounted_at_more_tokens(data: dict[str, Any], run_dir: Path) -> None:
    """memorization.json's least verbatim run raised past the examples it recited, every field
    the file decides re-derived."""
    _edit_json(run_dir, "memorization.json", lambda m: m.update(min_verbatim_tokens=m["continuation"] + 16))
    rederive(data, run_dir, rounds=4)


def _replay_claimed(data: dict[str, Any], _run_dir: Path) -> None:
    """A passing two-step replay, its price and the repeatable flag, on a CPU run that set no
    train.replay_steps."""
    measured = {"replayed_steps": 2, "bit_for_bit": True, "replay_mismatched": [], "max_loss_rel_diff": 0.0}
    result = settle(
        load_spec(),
        "GATE-CKPT-003",
        None,
        measured,
        True,
        False,
        step=max(g.get("step") or 0 for g in data["gates"]),
    )
    data["gates"].append(result.model_dump(mode="json"))
    data["determinism"]["flags"]["repeatable"] = True
    data["metrics"]["repeatability"] = {"replayed_steps": 2, "bit_for_bit": True, "step_seconds": 0.0093}


def _repeatable_flag(data: dict[str, Any], _run_dir: Path) -> None:
    data["determinism"]["flags"]["repeatable"] = True


def _split_targets_raised(data: dict[str, Any], run_dir: Path) -> None:
    measured = gate(data, "GATE-TRAIN-007")["measured"]
    raised = measured["stated_split_targets"]["train"] + 70
    measured["stated_split_targets"]["train"] = measured["split_supervised_tokens"]["train"] = raised
    rederive(data, run_dir, rounds=4)


def _optimizer_compared(data: dict[str, Any], _run_dir: Path) -> None:
    measured = gate(data, "GATE-CKPT-001")["measured"]
    measured["optimizer_compared"] = measured["optimizer_compared"] * 2 // 3


def _lora_targets_restated(data: dict[str, Any], run_dir: Path) -> None:
    """q,v made q,k,v in the argv and config.toml, the checkpoint's file sizes restated a header's
    padding (8 bytes) past what the q, k and v adapters take, every derived field re-derived."""
    data["run"]["argv"] = [
        "lora.targets=q,k,v" if w == "lora.targets=q,v" else w for w in data["run"]["argv"]
    ]
    toml = run_dir / "config.toml"
    text = toml.read_text(encoding="utf-8")
    assert 'targets = "q,v"' in text
    toml.write_text(text.replace('targets = "q,v"', 'targets = "q,k,v"', 1), encoding="utf-8")
    model, rank = data["config"]["model"], data["config"]["lora"]["r"]
    touched = lora_touched(model, "q,k,v")
    assert touched is not None
    files = data["checkpoint"]["files"]
    files["model.safetensors"]["bytes"] = (model_file_bytes(model, touched, rank) or 0) + 8
    files["optimizer.safetensors"]["bytes"] = (optimizer_file_bytes(model, touched, rank) or 0) + 8
    rederive(data, run_dir, rounds=4)


def _steps_per_epoch(data: dict[str, Any], _run_dir: Path) -> None:
    gate(data, "GATE-DATA-001")["measured"]["steps_per_epoch"] += 1


def _assigned_documents(data: dict[str, Any], _run_dir: Path) -> None:
    gate(data, "GATE-DATA-005")["measured"]["assigned_documents"] += 7


def _documents_in(data: dict[str, Any], _run_dir: Path) -> None:
    gate(data, "GATE-DATA-012")["measured"]["sources"]["docs"]["documents_in"] += 18


def _turn_format_removed(data: dict[str, Any], _run_dir: Path) -> None:
    """Every canary judged in the last two transcript formats the config lists taken out, the
    config still listing them."""
    gone = {t["user"].strip() for t in data["config"]["filter_settings"]["leak"]["turns"][-2:]}
    measured = gate(data, "GATE-DATA-012")["measured"]
    measured["canaries"] = [c for c in measured["canaries"] if c["name"].partition(" in ")[2] not in gone]


def _case_removed(data: dict[str, Any], _run_dir: Path) -> None:
    """Every row of one must-drop case taken out, in every format: the format check alone passed it."""
    measured = gate(data, "GATE-DATA-012")["measured"]
    measured["canaries"] = [c for c in measured["canaries"] if not c["name"].startswith("headers_over_limit")]


def _must_drop_restated(data: dict[str, Any], _run_dir: Path) -> None:
    """A planted leak the filter kept, restated as a near miss: the judge then passes it."""
    for row in gate(data, "GATE-DATA-012")["measured"]["canaries"]:
        if row["name"].startswith("fingerprint "):
            row.update(must_drop=False, dropped=False, reason=None)


def _case_invented(data: dict[str, Any], _run_dir: Path) -> None:
    measured = gate(data, "GATE-DATA-012")["measured"]
    measured["canaries"].append(
        {"name": "emoji_heading", "must_drop": True, "dropped": True, "reason": "leak_headers"}
    )


def _batch_size(data: dict[str, Any], _run_dir: Path) -> None:
    data["metrics"]["batch_size"] *= 2


def _attention(data: dict[str, Any], _run_dir: Path) -> None:
    data["metrics"]["model"]["attention"] = "triton"


def _parity_threshold(data: dict[str, Any], run_dir: Path) -> None:
    def loosen(report: dict[str, Any]) -> None:
        for row in report["parity"].values():
            row["threshold"] = {key: 1.0 for key in row["threshold"]}

    _edit_json(run_dir, "export.json", loosen)


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "change", "says"),
    [
        (MEMORIZATION_RUN, _recounted_at_more_tokens, "but GATE-FT-003 counts an example reproduced from"),
        (CURRENT_RUN, _replay_claimed, "config.toml plans no replay"),
        (CURRENT_RUN, _repeatable_flag, "yet the record states determinism.flags.repeatable true"),
        (SFT_RUN, _split_targets_raised, "steps of the first epoch, which read every train window once"),
        (FINETUNE_RUN, _optimizer_compared, "gates[GATE-CKPT-001].measured.optimizer_compared is"),
        (SFT_RUN, _lora_targets_restated, "model.safetensors is"),
        (LENS_TRAIN_RUN, _steps_per_epoch, "gates[GATE-DATA-001].measured.steps_per_epoch is"),
        (PREPARE_RUN, _assigned_documents, "gates[GATE-DATA-005].measured.assigned_documents is"),
        (PREPARE_RUN, _documents_in, "gates[GATE-DATA-012].measured.sources.docs.documents_in is"),
        (PREPARE_RUN, _turn_format_removed, "lack 20 of the rows config.filter_settings.leak plants"),
        (PREPARE_RUN, _case_removed, "lack 9 of the rows config.filter_settings.leak plants"),
        (PREPARE_RUN, _must_drop_restated, "restate must_drop of 9 row(s) against their case (fingerprint"),
        (PREPARE_RUN, _case_invented, "plants no case or format for (emoji_heading)"),
        (BENCH_RUN, _batch_size, "metrics.batch_size is"),
        (BENCH_RUN, _attention, "metrics.model.attention is 'triton', but the preset"),
        (EXPORT_RUN, _parity_threshold, "export.json: parity.model.safetensors.threshold."),
    ],
    ids=[
        "min-verbatim",
        "replay-claimed",
        "repeatable-flag",
        "split-targets",
        "optimizer-compared",
        "lora-targets",
        "lens-steps-per-epoch",
        "assigned-documents",
        "documents-in",
        "turn-canaries",
        "case-removed",
        "must-drop-restated",
        "case-invented",
        "batch-size",
        "attention",
        "parity-threshold",
    ],
)
def test_a_tampering_the_repository_decides_is_caught(
    tmp_path: Path, run: str, change: Change, says: str
) -> None:
    assert_caught(planted(tmp_path, run, change), says)


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize(
    "run",
    [
        MEMORIZATION_RUN,
        CURRENT_RUN,
        SFT_RUN,
        FINETUNE_RUN,
        LENS_TRAIN_RUN,
        PREPARE_RUN,
        BENCH_RUN,
        EXPORT_RUN,
    ],
)
def test_the_records_as_filed_stand(tmp_path: Path, run: str) -> None:
    assert findings(planted(tmp_path, run, lambda _data, _dir: None)) == []
