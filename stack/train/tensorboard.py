"""`train.tensorboard = true`: a run's curves in TensorBoard, live, beside metrics.jsonl.

    tensorboard --logdir RUN_DIR

Every line the loop writes to metrics.jsonl is mirrored into TensorBoard event files in RUN_DIR,
from the same host values the line holds, so the step path gains no device synchronisation and
no work but a queue put (torch's SummaryWriter writes from its own thread):

    step    train/loss, train/lr, train/grad_norm, train/tokens_per_s, and every other number of
            the line under train/<name> (an objective's metrics: DPO's margin, SFT's
            supervised_tokens, a mixture's loss_scale)
    eval    eval/heldout_loss, eval/heldout_stderr, eval/train_loss
    sample  sample/coherence, and the generated texts as the text `samples`
    event   the text `events` (checkpoints, wraps, loss spikes, phase switches)

and whenever the run's evidence record is refreshed (every evaluation and checkpoint, and at
the end), the gate verdicts so far as the text `gates`, one table row per gate. A resume purges
what an earlier process logged after the step it resumes from, as metrics.jsonl rolls those
lines back. Needs the `tensorboard` package (`pip install 'gatestack[tensorboard]'`); a run that
asks for it without the package is refused at set-up.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import GateResult

INSTALL_HINT = "pip install 'gatestack[tensorboard]'"
# The step line's fields that are no curve: counters and identities.
NOT_CURVES = ("step", "epoch", "batch_sha256")
EVAL_CURVES = ("heldout_loss", "heldout_stderr", "train_loss")


def require() -> None:
    """Refuse, before a run starts, `train.tensorboard = true` without the package that writes it."""
    if importlib.util.find_spec("tensorboard") is None:
        raise BadInput(f"train.tensorboard=true needs the tensorboard package: {INSTALL_HINT}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Board:
    """The run's TensorBoard event files, fed from metrics lines and gate verdicts."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events from a later step than the resumed checkpoint's are dropped on reading
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge)
        self.step = resume_step or 0

    def line(self, kind: str, fields: dict[str, Any]) -> None:
        """Mirror one metrics.jsonl line (`stack.train.metrics.MetricsLog.write`)."""
        step = int(fields.get("step", self.step))
        self.step = step
        if kind == "step":
            for name, value in fields.items():
                if name not in NOT_CURVES and _number(value):
                    self.writer.add_scalar(f"train/{name}", value, step)
        elif kind == "eval":
            for name in EVAL_CURVES:
                if _number(fields.get(name)):
                    self.writer.add_scalar(f"eval/{name}", fields[name], step)
        elif kind == "sample":
            self.writer.add_scalar("sample/coherence", fields["score"], step)
            texts = [f"    {text}".replace("\n", "\n    ") for text in fields.get("texts", [])]
            self.writer.add_text("samples", "\n\n".join(texts), step)
        else:
            detail = ", ".join(f"{k}={v}" for k, v in fields.items() if k != "step")
            self.writer.add_text("events", f"{kind}: {detail}", step)

    def gates(self, results: Iterable[GateResult]) -> None:
        """The verdicts so far, as a Markdown table, at the latest step logged."""
        rows = [f"| {r.id} | {r.verdict.value} | {(r.message or '').replace('|', '/')} |" for r in results]
        table = "| gate | verdict | message |\n|---|---|---|\n" + "\n".join(rows)
        self.writer.add_text("gates", table, self.step)

    def close(self) -> None:
        """Flush every queued event to disk and close the file."""
        self.writer.close()
