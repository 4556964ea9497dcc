"""Progress for long work: a live rich bar on a terminal, plain lines everywhere else.

Used by every command that runs for more than a moment, so logs in CI and files stay readable
and a person at a terminal sees the run move.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def step_progress(total: int, every: int) -> Iterator[Callable[[int, dict[str, Any]], None]]:
    """Yield `update(step, line)`; the line's loss and throughput are shown beside the bar."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task("train", total=total, info="")

            def update(step: int, line: dict[str, Any]) -> None:
                info = f"loss {line['loss']:.4f} · {line['tokens_per_s']:.0f} tok/s"
                bar.update(task, completed=step, info=info)

            yield update
        return

    def plain(step: int, line: dict[str, Any]) -> None:
        if step % every == 0 or step == total:
            print(
                f"step {step}/{total} loss {line['loss']:.4f} lr {line['lr']:.2e} "
                f"grad_norm {line['grad_norm']:.3f} {line['tokens_per_s']:.0f} tok/s",
                file=sys.stderr,
                flush=True,
            )

    yield plain


@contextmanager
def count_progress(label: str, total: int) -> Iterator[Callable[[str], None]]:
    """Yield `advance(part)` for work counted in items (rows of an evaluation, models of a run):
    a live bar on a terminal, else one stderr line when a new part starts."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(
            TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[part]}")
        ) as bar:
            task = bar.add_task(label, total=total, part="")

            def advance(part: str) -> None:
                bar.update(task, advance=1, part=part)

            yield advance
        return
    started: set[str] = set()

    def plain(part: str) -> None:
        if part not in started:
            started.add(part)
            print(f"{label}: {part}", file=sys.stderr, flush=True)

    yield plain


# The plain line `amount_progress` writes off a terminal: `LABEL: DONE of TOTAL UNIT`.
AMOUNT_LINE = re.compile(r"stack [a-z-]+: [a-z ]+: [\d,]+ of [\d,]+ [a-z ]+")


def is_amount_line(line: str) -> bool:
    """Whether a stderr line is one of `amount_progress`'s (a log reader, or a test of a command's
    one-line refusal, tells the progress of the work done before it apart from the refusal)."""
    return AMOUNT_LINE.fullmatch(line.strip()) is not None


@contextmanager
def amount_progress(label: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """Yield `reached(done, total)` for work measured in units whose count the work learns as it
    starts (the windows of a text once it is tokenised): a live bar on a terminal, else a stderr line
    at each tenth of the way, so a long evaluation in a log shows that it moves and how far it has
    to go (a 12 MB text takes minutes to score, and a silent one looks hung)."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
            task = bar.add_task(label, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    said = 0

    def plain(done: int, total: int) -> None:
        nonlocal said
        tenth = done * 10 // max(total, 1)
        if tenth > said:
            said = tenth
            print(f"{label}: {done:,} of {total:,} {unit}", file=sys.stderr, flush=True)

    yield plain
