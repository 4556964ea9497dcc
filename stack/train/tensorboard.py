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
lines back, and first writes what the lines it keeps give that the event files there lack (all of
them when TensorBoard is turned on at a resume, or its files were deleted), so the curves are whole
from step 1 (its own file named to sort after the earlier ones', as TensorBoard reads them in name
order). Needs the `tensorboard` package (`pip install 'gatestack[tensorboard]'`); a run that
asks for it without the package is refused at set-up.

Which line gives which scalar and text is contracts.curves' rule (`line_scalars`, `line_texts`),
the Board's and the judge's alike. When the run closes its Board, TensorBoard's own reader reads the
event files back and every scalar it shows is held to the metrics line it mirrors, at the line's step
and value, and every `samples` and `events` text to the line that gives it, at its step, both ways
(GATE-TRAIN-001 check tensorboard): the files are an output users read, and so held to what the run
did.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from contracts import curves
from contracts.errors import BadInput
from contracts.evidence import GateResult
from contracts.gates import Outcome, gate_require, measure
from contracts.judges import CHECKS
from contracts.wording import first_few
from stack.train.metrics import METRICS_FILE, read_lines, split_at

INSTALL_HINT = "pip install 'gatestack[tensorboard]'"
# The suffix torch's SummaryWriter gives the tag of a text it writes.
TEXT_SUFFIX = "/text_summary"
# Event files as TensorBoard names them: events.out.tfevents.<unix seconds>.<host>.<pid>.<counter>.
EVENT_FILES = "events.out.tfevents.*"
# How far ahead of this machine's clock an earlier process's event file may be dated for a resume to
# wait it out rather than refuse (a crash and resume in the same second, a small skew between nodes).
CLOCK_WAIT_S = 10.0
MISMATCHES_SHOWN = 3  # mismatches the record names; the count says how many there are


def require() -> None:
    """Refuse, before a run starts, `train.tensorboard = true` without the package that writes it."""
    if importlib.util.find_spec("tensorboard") is None:
        raise BadInput(f"train.tensorboard=true needs the tensorboard package: {INSTALL_HINT}")


class Board:
    """The run's TensorBoard event files, fed from metrics lines and gate verdicts."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events from a later step than the resumed checkpoint's are dropped on reading
        purge = None if resume_step is None else resume_step + 1
        lacking = ([], []) if resume_step is None else _lacking(run_dir, resume_step)
        _after_every_file(Path(run_dir))
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge)
        self.step = resume_step or 0
        for tag, step, value in lacking[0]:
            self.writer.add_scalar(tag, value, step)
        for tag, step, text in lacking[1]:
            self.writer.add_text(tag, text, step)

    def line(self, kind: str, fields: dict[str, Any]) -> None:
        """Mirror one metrics.jsonl line (`stack.train.metrics.MetricsLog.write`)."""
        step = int(fields.get("step", self.step))
        self.step = step
        for tag, value in curves.line_scalars(kind, fields):
            self.writer.add_scalar(tag, value, step)
        for tag, text in curves.line_texts(kind, fields):
            self.writer.add_text(tag, text, step)

    def gates(self, results: Iterable[GateResult]) -> None:
        """The verdicts so far, as a Markdown table, at the latest step logged."""
        rows = [f"| {r.id} | {r.verdict.value} | {(r.message or '').replace('|', '/')} |" for r in results]
        table = "| gate | verdict | message |\n|---|---|---|\n" + "\n".join(rows)
        self.writer.add_text("gates", table, self.step)

    def close(self) -> None:
        """Flush every queued event to disk and close the file."""
        self.writer.close()


def unmeasured(results: list[GateResult]) -> list[GateResult]:
    """The verdicts a resume carries, less what check tensorboard measured of an earlier leg.

    The check reads the whole run's event files when a leg closes them, so an earlier leg's values
    are superseded: a leg with TensorBoard on measures the files again (completed at its start), and
    one with it off is not asked the check (spec/run_kinds.yaml's option rule). Carried, the values
    would outlive the option: a leg the check halted, resumed with train.tensorboard=false, would
    say "completed" over its record's FAIL."""
    keys = CHECKS["GATE-TRAIN-001"]["tensorboard"]
    return [
        r.model_copy(update={"measured": {k: v for k, v in r.measured.items() if k not in keys}})
        if r.id == "GATE-TRAIN-001" and isinstance(r.measured, dict)
        else r
        for r in results
    ]


def _lacking(run_dir: Path, resume_step: int) -> tuple[list[curves.Scalar], list[curves.Text]]:
    """What metrics.jsonl's lines up to `resume_step` (those the resume keeps) give by contracts.curves'
    rule that the event files already there do not show, read back as the check reads them: the whole
    of it when TensorBoard is turned on at a resume, or its files were deleted (else the run trains a
    leg, then its check finds steps 1..N missing, on every later resume too).
    Only what is missing is written; a point the files show at another value stays, for the check."""
    kept, _ = split_at(read_lines(Path(run_dir) / METRICS_FILE), resume_step)
    shown = curves.shown(read_scalars(run_dir))
    scalars = [
        (tag, step, value) for (tag, step), value in curves.expected(kept).items() if (tag, step) not in shown
    ]
    texts = curves.expected_texts(kept) - Counter(read_texts(run_dir))
    return scalars, list(texts.elements())


def _after_every_file(run_dir: Path) -> None:
    """Return once an event file made now is named after every one already in `run_dir`.

    TensorBoard reads a run's event files in name order, and a resume's purge marker drops only what
    the files before it logged: a resume whose file sorts first shows the dead process's curves over
    its own. A name begins with the second it was made, then host, pid and a per-process counter, so
    two made in the same second can sort either way ("...1234.9" after "...1234.10"), as can files
    from nodes whose clocks differ (a 4-step run and its resume in one second showed the stale
    tokens_per_s at steps 3-4). Waiting until the clock passes the latest file's
    second makes the new name sort last; a file dated further ahead than CLOCK_WAIT_S is refused."""
    named = (path.name.split(".") for path in run_dir.glob(EVENT_FILES))
    seconds = {".".join(parts): int(parts[3]) for parts in named if parts[3].isdigit()}
    if not seconds:
        return
    latest = max(seconds, key=seconds.__getitem__)
    ahead = seconds[latest] + 1 - time.time()
    if ahead > CLOCK_WAIT_S:
        raise BadInput(
            f"{run_dir / latest} is dated {ahead:.0f} s ahead of this machine's clock, and TensorBoard "
            "reads event files in name order, so it would show the earlier process's curves over this "
            "resume's: set the clock right, or resume with --set train.tensorboard=false"
        )
    if ahead > 0:
        time.sleep(ahead)


def _accumulator(run_dir: Path) -> Any:
    """TensorBoard's own reader over the run's event files, loaded whole (a resume's purge applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    said = logging.getLogger("tensorboard")
    level = said.level
    said.setLevel(logging.ERROR)  # a resume's purge is what the reader is for here, not news for stderr
    try:
        accumulator.Reload()
    finally:
        said.setLevel(level)
    return accumulator


def read_scalars(run_dir: Path) -> list[curves.Scalar]:
    """Every scalar TensorBoard shows of the run's event files, as its own reader loads them (a
    resume's purge applied), in the order written: (tag, step, value)."""
    accumulator = _accumulator(run_dir)
    return [
        (tag, event.step, event.value)
        for tag in accumulator.Tags()["scalars"]
        for event in accumulator.Scalars(tag)
    ]


def read_texts(run_dir: Path) -> list[curves.Text]:
    """Every text the run's event files hold under the tags the lines give (`samples`, `events`), read
    with TensorBoard's event file reader file by file in the order written, each process's restart
    marker (a resume's purge step) dropping what earlier files logged at or past it, as the lines are
    rolled back (TensorBoard's own accumulators purge scalars so but not texts): (tag, step, text),
    one per text written."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog
    from tensorboard.util.tensor_util import make_ndarray

    texts: list[curves.Text] = []
    for file in sorted(Path(run_dir).glob(EVENT_FILES)):
        for event in EventFileLoader(str(file)).Load():
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                texts = [text for text in texts if text[1] < event.step]
            for value in event.summary.value:
                tag = value.tag.removesuffix(TEXT_SUFFIX)
                if value.tag.endswith(TEXT_SUFFIX) and tag in curves.TEXT_TAGS:
                    texts += [
                        (tag, event.step, v.decode("utf-8")) for v in make_ndarray(value.tensor).reshape(-1)
                    ]
    return texts


def _mirrored(run_dir: Path, step: int) -> Outcome:
    read, texts = read_scalars(run_dir), read_texts(run_dir)
    lines = read_lines(Path(run_dir) / METRICS_FILE)
    wrong = curves.mismatches(read, lines) + curves.text_mismatches(texts, lines)
    measured = {
        "tensorboard_scalars": len(curves.shown(read)),
        "tensorboard_expected": len(curves.expected(lines)),
        "tensorboard_texts": len(texts),
        "tensorboard_texts_expected": sum(curves.expected_texts(lines).values()),
        "tensorboard_mismatches": len(wrong),
        "tensorboard_first": first_few(wrong, MISMATCHES_SHOWN, "; "),
    }
    return measure(
        "GATE-TRAIN-001", measured, step=step, holds="the TensorBoard curves and texts are the metrics lines'"
    )


@gate_require("GATE-TRAIN-001", _mirrored)
def check_mirrored(run_dir: Path, step: int) -> None:
    """Once the Board is closed: every scalar TensorBoard shows of the run is the metrics line's it
    mirrors, and every line's number is shown (`step`: the run's last, where the verdict is stamped)."""
