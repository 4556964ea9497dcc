"""A `stack dpo` run directory: its loop, checkpoints, resume, evidence.

    OUT/config.toml                the trained model's configuration
    OUT/checkpoints/step-NNNNNNN/  weights, AdamW's state, and in state.json everything a resume
                                   needs: the batches' position, the settings, the frozen model's
                                   source and the step lines so far (under `tune`)
    OUT/metadata.json              the evidence record of the latest invocation (run kind dpo);
                                   `--evidence-dir` files every record, append-only

The task (stack.tune.dpo_run) supplies the step's loss and its gates; the loop here is AdamW
at a constant learning rate, the global gradient norm clipped, a checkpoint every `save_every`
steps and after the last. Every reader of a run reads OUT (`stack sample OUT`, `eval`,
`train --init-from`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import torch

from contracts.errors import BadInput
from contracts.evidence import DataRef, RunStatus, canonical_sha256, sha256_file
from contracts.spec import load_spec

# The ES run directory's layout and record keeping are the same: OUT/config.toml, and
# OUT/metadata.json written whether the work completes or a gate halts it, filed when asked.
from stack.es.rundir import CONFIG_FILE, check_fresh_out
from stack.es.rundir import _recorded as recorded  # noqa: F401  (re-exported for the tasks)
from stack.eval.evidence import CommandEvidence
from stack.model.gpt import GPT
from stack.train import checkpoint as ckpt
from stack.train import rng
from stack.train.config import RunConfig, save_config
from stack.train.trained import tokenizer_state
from stack.tune.settings import TuneSettings

StepLine = dict[str, float]


class Task(Protocol):
    """What the loop asks of DPO (distillation runs in stack.train's loop instead)."""

    kind: str
    model: GPT
    run_config: RunConfig
    settings: TuneSettings

    def record(self) -> tuple[dict[str, Any], DataRef]:
        """The record's config (settings and sources) and the data it read."""

    def loss(self, first: bool) -> tuple[torch.Tensor, StepLine]:
        """The next batch's loss and metrics; `first` runs the gates judged once, before the first update."""

    def finish(self, history: list[StepLine]) -> None:
        """The gates judged at the end of an invocation."""

    def state(self) -> dict[str, Any]:
        """What a resume needs besides weights and optimizer (saved under `tune`)."""

    def position(self) -> tuple[int, dict[str, Any]]:
        """The batches' epoch and reader state."""


def source_record(checkpoint: Path) -> dict[str, str]:
    """A checkpoint named by its path and the sha256 of its manifest."""
    return {
        "checkpoint": str(checkpoint.resolve()),
        "manifest_sha256": sha256_file(checkpoint / ckpt.MANIFEST),
    }


def checked_source(record: dict[str, str]) -> Path:
    """The checkpoint a `source_record` names, refused when its manifest changed since."""
    path = Path(record["checkpoint"])
    unchanged(path / ckpt.MANIFEST, record["manifest_sha256"])
    return path


def unchanged(path: Path, sha256: str) -> None:
    """Refuse to resume over an input that changed since the run began."""
    if sha256_file(path) != sha256:
        raise BadInput(f"{path} changed since the run began (its sha256 differs); restore it to resume")


def build_optimizer(model: GPT, settings: TuneSettings) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, no weight decay (a short tuning run starts from a model)."""
    return torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=settings.lr, weight_decay=0.0
    )


def _checkpoint_state(task: Task, history: list[StepLine], tokenizer: Any) -> dict[str, Any]:
    """state.json: every key GATE-CKPT-001 asks for, and the task's own state under `tune`."""
    epoch, reader = task.position()
    return {
        "epoch": epoch,
        "scheduler": {"kind": "constant", "lr": task.settings.lr},
        "scaler": None,
        "rng": rng.capture(),
        "reader": reader,
        "monitors": None,
        "config": task.run_config.as_dict(),
        "spec_version": load_spec().version,
        "tokenizer": tokenizer_state(tokenizer),
        "tune": {"kind": task.kind, "settings": asdict(task.settings), "history": history, **task.state()},
    }


def restored_tune_state(checkpoint: ckpt.Checkpoint, kind: str, steps: int) -> dict[str, Any]:
    """The `tune` part of a checkpoint of `kind`, refusing another kind or a run already past `steps`."""
    tune = checkpoint.state.get("tune")
    if not isinstance(tune, dict) or tune.get("kind") != kind:
        raise BadInput(
            f"{checkpoint.path} was not written by `stack {kind}`; resume it with the command that wrote it"
        )
    if steps <= checkpoint.step:
        raise BadInput(
            f"{checkpoint.path} is at step {checkpoint.step} already; give --steps above {checkpoint.step}"
        )
    return tune


def latest(out: Path, kind: str) -> Path:
    """OUT's newest valid checkpoint to resume, or refuse."""
    path, notes = ckpt.latest_valid(out)
    for note in notes:
        print(f"stack: {note}", file=sys.stderr)
    if path is None:
        raise BadInput(f"{out} has no valid checkpoint to resume; start a new run with `stack {kind}`")
    return path


def train(
    task: Task,
    out: Path,
    evidence: CommandEvidence,
    tokenizer: Any,
    start: tuple[int, list[StepLine], ckpt.Checkpoint | None],
    on_step: Callable[[int, StepLine], None],
) -> Path:
    """Step `task` from the start's step to its settings' last, saving on the cadence; judged throughout."""
    step, history, resumed = start
    settings = task.settings
    record = evidence.record
    record.config, record.data = task.record()
    record.config_sha256 = canonical_sha256(record.config)
    optimizer = build_optimizer(task.model, settings)
    if resumed is not None:
        ckpt.load_optimizer(resumed, optimizer)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CONFIG_FILE).exists():
        save_config(task.run_config, out / CONFIG_FILE)
    saved: list[Path] = []
    first = True
    task.model.train()
    while step < settings.steps:
        optimizer.zero_grad(set_to_none=True)
        loss, line = task.loss(first)
        first = False
        loss.backward()
        trainable = [p for p in task.model.parameters() if p.requires_grad]
        line["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainable, settings.clip_norm))
        optimizer.step()
        step += 1
        history.append(line)
        on_step(step, line)
        if step % settings.save_every == 0 or step == settings.steps:
            state = _checkpoint_state(task, history, tokenizer)
            saved.append(ckpt.save_checkpoint(out, step, task.model, optimizer, state))
    task.finish(history)
    record.metrics = {"resumed_from": None if resumed is None else resumed.step, "steps": history}
    evidence.note_checkpoint(saved[-1])
    evidence.settle(RunStatus.COMPLETED)
    return saved[-1]


def new_evidence(kind: str, argv: list[str], ledger: Path | None, out: Path, fresh: bool) -> CommandEvidence:
    """The invocation's record; a new run's OUT must be new or empty."""
    if fresh:
        check_fresh_out(out)
    return CommandEvidence(kind, argv, "cpu", ledger)
