"""The output of a surgery: a new run-like directory that every reader of a checkpoint takes.

    OUT/config.toml                      the source's resolved configuration
    OUT/checkpoints/step-0000000/        the changed weights, a fresh optimizer state, the tokenizer
    OUT/surgery.json                     provenance: the source checkpoint and its sha256, the
                                         targets, the settings, what each matrix measured; the
                                         sha256 of every file above
    OUT/metadata.json                    the evidence record (run kind laser or quantize)

So `stack sample`, `eval`, `trace`, `lens`, `export`, `inspect` and `train --init-from` read OUT
as they read a run. The checkpoint is at step 0 with nothing read (stack.export.importer's
fresh state, whose `imported_from` names the source and the surgery), so it can be fine-tuned
from but not resumed as if it were the source run.

OUT lives as every run-like directory does (stack.outputs.rundir): built aside and swapped into
place at commit; an existing OUT is refused, and with --force replaced only when all it holds is
an earlier surgery's output, unchanged (surgery.json vouches for it). A gate that fires leaves OUT
holding the halted evidence record and surgery.json, and no checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contracts.checkpoints import chat_template_sha256
from contracts.errors import GateViolation
from contracts.evidence import EVIDENCE_FILE, DataRef, RunStatus, canonical_sha256, sha256_file
from contracts.gates import Outcome, gate_require, measure
from contracts.spec import load_spec
from stack.artifacts import SURGERY_RECORD
from stack.data import chat_jinja
from stack.data.tokenizer_record import tokenizer_state
from stack.eval.evidence import CommandEvidence
from stack.export.importer import fresh_state
from stack.model.gpt import GPT
from stack.outputs import ownership, rundir
from stack.train import checkpoint as ckpt
from stack.train.config import save_config
from stack.train.lineage import WEIGHTS_FILE, lineage
from stack.train.loop import build_optimizer
from stack.train.trained import Trained, load_trained, resolve_checkpoint

RECORD = SURGERY_RECORD
# The gate that holds what a laser or quantize surgery wrote to its source (check template here).
TEMPLATE_GATE = "GATE-LASER-003"


def writer(kind: str) -> rundir.Writer:
    """The writer of a surgery's OUT (laser, quantize, lora-merge): --force trusts surgery.json."""
    return rundir.Writer(f"stack {kind.replace('-', ' ')}", earlier=ownership.by_record(RECORD))


@dataclass
class Request:
    """One surgery as the command line asked for it."""

    kind: str  # the run kind: laser | quantize
    source: Path
    out: Path
    force: bool
    argv: list[str]
    evidence_dir: Path | None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Operated:
    """What an operation made: the changed model and the numbers it measured."""

    model: GPT
    measured: dict[str, Any]


def _source(checkpoint: Path) -> dict[str, Any]:
    """Where the weights came from: the checkpoint, and the sha256 of its manifest and weights."""
    return {
        "checkpoint": str(checkpoint.resolve()),
        "manifest_sha256": sha256_file(checkpoint / ckpt.MANIFEST),
        "model_sha256": sha256_file(checkpoint / "model.safetensors"),
    }


def _save(tmp: Path, trained: Trained, model: GPT, provenance: dict[str, Any]) -> Path:
    """The checkpoint and config.toml of the changed model, inside the staging directory."""
    optimizer = build_optimizer(model, trained.config, torch.device("cpu"))
    carried = trained.checkpoint.state.get(chat_jinja.STATE_KEY)  # the source's chat template, if any
    state = fresh_state(trained.config, tokenizer_state(trained.tokenizer), provenance, carried)
    written = ckpt.save_checkpoint(tmp, 0, model, optimizer, state)
    save_config(trained.config, tmp / "config.toml")
    return written


def template_outcome(written: Path, source: Path) -> Outcome:
    """GATE-LASER-003's check template: the chat template record the written checkpoint's state.json
    carries against the source checkpoint's, each read from its file and digested by
    contracts.checkpoints.chat_template_sha256 (None where a checkpoint carries none)."""
    measured = {
        "template_source": chat_template_sha256(ckpt.read_state(source)),
        "template_written": chat_template_sha256(ckpt.read_state(written)),
    }
    return measure(
        TEMPLATE_GATE, measured, holds="the surgery's checkpoint carries its source's chat template"
    )


@gate_require(TEMPLATE_GATE, lambda written, source: template_outcome(written, source))
def check_template(written: Path, source: Path) -> None:
    """Judge the checkpoint a surgery wrote: its chat template is its source checkpoint's, or both
    carry none (a dropped template would be gone from every later export and chat rendering)."""


def _finish(opened: rundir.RunDir, evidence: CommandEvidence, record: dict[str, Any]) -> None:
    """Write surgery.json (with every gate's per-matrix results, the raw values the record's gate
    results re-derive from) and the evidence record into the staging directory, commit it, file it."""
    tmp = opened.where
    record["gates"] = {g.id: g.measured for g in evidence.record.gates if isinstance(g.measured, dict)}
    ownership.write_record(tmp, RECORD, record)
    files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != EVIDENCE_FILE)
    evidence.write(tmp, files)
    out = opened.commit()
    evidence.file((out / RECORD,))


def perform(request: Request, operate: Callable[[Trained], Operated]) -> dict[str, Any]:
    """Load the source, operate on it under the run kind's gates, write OUT; returns surgery.json's data."""
    rundir.check(request.out, writer(request.kind), force=request.force)
    checkpoint = resolve_checkpoint(request.source)
    evidence = CommandEvidence(request.kind, request.argv, "cpu", request.evidence_dir)
    evidence.record.config = {"source": str(request.source), **request.settings}
    evidence.record.config_sha256 = canonical_sha256(evidence.record.config)
    source = {**_source(checkpoint), "surgery": request.kind}
    record: dict[str, Any] = {"kind": request.kind, "source": source, "settings": request.settings}
    record["spec_version"] = load_spec().version
    with rundir.opened(request.out, writer(request.kind), force=request.force) as opened:
        tmp = opened.where
        try:
            with evidence.judging():
                trained = load_trained(checkpoint)
                evidence.note_checkpoint(trained.checkpoint.path)
                evidence.record.data = DataRef(tokenizer_sha256=trained.tokenizer.sha256)
                operated = operate(trained)
            record["measured"] = evidence.record.metrics = operated.measured
            written = _save(tmp, trained, operated.model, {**source, "settings": request.settings})
            if TEMPLATE_GATE in load_spec().required_gates(request.kind, evidence.record.config):
                with evidence.judging():
                    check_template(written, checkpoint)
            evidence.record.lineage = lineage({"source": checkpoint}, written / WEIGHTS_FILE)
            record.update(status="completed", checkpoint=written.relative_to(tmp).as_posix())
            evidence.settle(RunStatus.COMPLETED)
        except GateViolation as exc:
            record.update(status="halted", stopped_by=str(exc))
            _finish(opened, evidence, record)
            raise
        _finish(opened, evidence, record)
    return record
