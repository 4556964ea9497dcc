"""RUN_DIR/metrics.jsonl: one typed JSON line per optimizer step, evaluation, sample and event.

The file is the run's history. A resume appends to it; lines written after the checkpoint the
run resumed from (by a run that died later) are moved to metrics.rolled-back.jsonl, so the
history stays one unbroken sequence of steps and nothing is silently lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stack.train.guards import check_step_line

METRICS_FILE = "metrics.jsonl"
ROLLED_BACK_FILE = "metrics.rolled-back.jsonl"


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a metrics file (a torn last line, from a crash mid-write, is dropped)."""
    if not Path(path).is_file():
        return []
    return _parsed(Path(path).read_text(encoding="utf-8").splitlines())


def _parsed(raw_lines: list[str]) -> list[dict[str, Any]]:
    """The JSON lines among `raw_lines`; one that does not parse (torn mid-write) is skipped."""
    lines = []
    for raw in raw_lines:
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    return lines


def split_at(lines: list[dict[str, Any]], step: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The lines a resume from `step` keeps, and those it rolls back (logged after it by a process
    that died later); one rule for the roll-back, the resume's note and the Board's back-fill."""
    keep = [ln for ln in lines if ln.get("step", 0) <= step]
    later = [ln for ln in lines if ln.get("step", 0) > step]
    return keep, later


class LogTail:
    """The lines a metrics file gained since the last call, for a check that follows the log while
    the run writes it: reading it whole at every checkpoint costs its length each time, so a
    million-step run would re-read a quadratic amount of it. A line not yet ended waits for its end.
    The log only grows while a loop runs (a resume rolls it back before the loop opens it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0  # bytes of whole lines already handed out

    def new_lines(self) -> list[dict[str, Any]]:
        """The whole lines written since the last call, parsed."""
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        return _parsed(whole.decode("utf-8").splitlines())


class MetricsLog:
    """Appends typed lines; step lines pass GATE-TRAIN-001 before they are written.

    With `write=False` (every rank but 0 of a data-parallel run) lines are checked, not written.
    `mirror`, when given, is handed every line written (kind and fields): TensorBoard's
    (stack.train.tensorboard), which takes the same host values.
    """

    def __init__(
        self,
        run_dir: Path,
        resume_step: int | None = None,
        write: bool = True,
        mirror: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.mirror = mirror if write else None
        self.last_step: int | None = None
        if resume_step is not None:
            if write:
                self._roll_back_after(resume_step)
            self.last_step = resume_step
        self._handle = open(self.path if write else os.devnull, "a", encoding="utf-8")  # noqa: SIM115

    def _roll_back_after(self, step: int) -> None:
        keep, later = split_at(read_lines(self.path), step)
        if later:
            with open(Path(self.path).parent / ROLLED_BACK_FILE, "a", encoding="utf-8") as out:
                out.writelines(json.dumps(ln) + "\n" for ln in later)
        self.path.write_text("".join(json.dumps(ln) + "\n" for ln in keep), encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        """Append one line of type `kind` and flush it, so a crash loses at most this line."""
        self._handle.write(json.dumps({"type": kind, **fields}) + "\n")
        self._handle.flush()
        if self.mirror is not None:
            self.mirror(kind, fields)

    def step(self, line: dict[str, Any]) -> None:
        """Append an optimizer step's line after GATE-TRAIN-001 has checked it."""
        check_step_line(line, self.last_step)
        self.write("step", **line)
        self.last_step = line["step"]

    def close(self) -> None:
        self._handle.close()
