"""The life of a run-like directory (config.toml, tokenizer, checkpoints/, metadata.json): one for all.

Every command that leaves one (train, sft, dpo, distill, es, synth, laser, quantize, lora merge,
import-hf, export, and the record directories of trace and lens) goes through the same steps:

    check     the path can take the output (stack.outputs.destination), before any work
    open      a new directory must be new or empty, or, with --force, hold only an earlier
              output of the same command (stack.outputs.ownership); a resumed one must be a run
              directory; set-up then runs and writes nothing
    refuse    a resume whose setup changed in a way its checkpoint cannot continue with is one
              line naming each change (`refuse_changes`)
    commit    once set-up has passed the directory becomes the run's: before it, a refusal or a
              failure leaves everything as it was (a new directory as if never asked for, a
              resumed one byte for byte); after it, what was written stays as evidence

How a command writes is the one deliberate difference (`Writer`):
- `resumable`: a run that goes on for hours and is continued with --resume (train, es) is
  written in place, under its one writer's lock (stack.outputs.lock) from before set-up to the
  end, so a second writer is refused naming the first; commit only marks it kept;
- otherwise the directory is one artifact written at the end (a surgery's output, an import, an
  export, a synthesis, a trace record): it is built beside, out of sight (stack.outputs.staging),
  and commit swaps it into place whole, so nobody sees half of it and --force replaces an earlier
  one at once, never file by file.
"""

from __future__ import annotations

import re
import shutil
import sys
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import RUN_ID_PATTERN
from stack.artifacts import CHECKPOINT_NAME, CHECKPOINTS_DIR, LOCK_FILE, RUN_CONFIG
from stack.outputs import ownership, staging
from stack.outputs.destination import check_directory
from stack.outputs.lock import exclusive


@dataclass(frozen=True)
class Writer:
    """One command as the writer of its directories: what differs between commands, on purpose.

    `command` names it in refusals and notes (`stack es`). `resumable`: continued in place with
    --resume (module docstring); else built aside and swapped in. `continues` says whether the
    command's --resume would take a directory (a run of its kind with a checkpoint to continue
    from), so a refusal offers --resume only where it would be accepted. `earlier` reads the record
    an earlier output keeps of its files (stack.outputs.ownership), for --force; None when the
    command takes no --force.
    """

    command: str
    resumable: bool = False
    earlier: Callable[[Path], ownership.Earlier] | None = None
    continues: Callable[[Path], bool] | None = None

    def remedy(self, out: Path, option: str) -> str:
        """What a refusal of a non-empty `out` tells the user to do: only what would be accepted."""
        if self.continues is not None and self.continues(out):
            return f"choose another {option}, or continue it with --resume {out}"
        if self.resumable and (Path(out) / RUN_CONFIG).is_file() and not _any_checkpoint(out):
            return (  # a run, but nothing --resume could continue
                f"choose another {option}, or remove {out} and run again ({out} holds a run that stopped "
                "before its first checkpoint, which --resume cannot continue: its metadata.json says why)"
            )
        if self.earlier is not None and _replaceable(out, self.earlier, option):
            return (
                f"choose another {option}, or --force to replace the earlier `{self.command}` output it holds"
            )
        return f"choose another {option}"


def _replaceable(out: Path, earlier: Callable[[Path], ownership.Earlier], option: str) -> bool:
    """Whether --force would replace `out`: it holds an earlier output of the command and nothing else."""
    try:
        ownership.claim(out, earlier(out), option=option)
    except BadInput:
        return False
    return True


def _any_checkpoint(out: Path) -> bool:
    """Whether `out` holds a checkpoint directory, step-NNNNNNN, of a run."""
    base = Path(out) / CHECKPOINTS_DIR
    return base.is_dir() and any(CHECKPOINT_NAME.fullmatch(p.name) for p in base.iterdir())


class RunDir:
    """A directory being written: `where` the command writes now, `out` where it ends up."""

    def __init__(self, out: Path, where: Path, publish: Callable[[], None]) -> None:
        self.out, self.where = out, where
        self.committed = False
        self._publish = publish

    def commit(self) -> Path:
        """Make the directory the run's (module docstring); returns where it now is. Once only."""
        if not self.committed:
            self._publish()
            self.committed = True
            self.where = self.out
        return self.out


def check(
    out: Path, writer: Writer, resume: bool = False, force: bool = False, option: str = "--out"
) -> None:
    """Refuse, before any work, an `out` the writer could not open (the `open` step's checks)."""
    check_directory(out, option, into=writer.resumable, locks_itself=writer.resumable)
    if resume:
        if not (out / RUN_CONFIG).is_file():
            raise BadInput(
                f"{out} is not a run directory (no {RUN_CONFIG}); pass the --out of an earlier run"
            )
    elif out.is_dir() and not ownership.is_empty(out):
        _check_replaceable(out, writer, option, force)


def _check_replaceable(out: Path, writer: Writer, option: str, force: bool) -> None:
    """Refuse a non-empty new `out` unless --force may replace all it holds."""
    if not force or writer.earlier is None:
        raise ownership.not_empty(out, option, writer.remedy(out, option))
    ownership.claim(out, writer.earlier(out), option=option)


@contextmanager
def opened(
    out: Path,
    writer: Writer,
    resume: bool = False,
    force: bool = False,
    option: str = "--out",
    main: bool = True,
) -> Iterator[RunDir]:
    """Open `out` for `writer` (module docstring); commit on the yielded RunDir once set-up passed.

    `main` False: another rank of a torchrun launch, which neither judges, locks nor writes `out`.
    Rank 0 judges and opens it for the run; what another rank would read of it races with that (the
    lock rank 0 took, the directory rank 0 removes again when it refuses the run), and a rank that
    failed on a directory removed while it read it would add its own line to rank 0's refusal.
    """
    out = Path(out)
    if not main:
        yield RunDir(out, out, lambda: None)
        return
    check(out, writer, resume, force, option)
    absolute = out.absolute()
    created = [p for p in (absolute, *absolute.parents) if not p.exists()]  # innermost first
    opening = (
        _in_place(out, writer, resume, option) if writer.resumable else _aside(out, writer, force, option)
    )
    committed = False
    try:
        with opening as rundir:
            try:
                yield rundir
            finally:
                committed = rundir.committed
    finally:
        if not committed:
            _remove_made(created)


def _remove_made(created: list[Path]) -> None:
    """Remove the directories opening made, innermost first, as long as they are empty: one that
    holds anything now is not ours to remove, and neither is anything above it."""
    for directory in created:
        try:
            directory.rmdir()
        except FileNotFoundError:  # never made (an output built aside), or gone already
            continue
        except OSError:
            return


@contextmanager
def _in_place(out: Path, writer: Writer, resume: bool, option: str) -> Iterator[RunDir]:
    """Under OUT's lock; a failure before commit removes the lock file when opening made it."""
    lock = out / LOCK_FILE
    lock_created = not lock.exists()
    rundir = RunDir(out, out, lambda: None)
    with exclusive(out, writer.command) as note:
        if note is not None:
            print(f"{writer.command}: {note}", file=sys.stderr)
        try:
            if not resume and not ownership.is_empty(out):  # filled since it was checked
                raise ownership.not_empty(out, option, writer.remedy(out, option))
            yield rundir
        finally:
            if not rundir.committed and lock_created:
                lock.unlink(missing_ok=True)  # while still held: no later holder loses its file


@contextmanager
def _aside(out: Path, writer: Writer, force: bool, option: str) -> Iterator[RunDir]:
    """Built in a hidden sibling, swapped into place by commit; removed if it never is."""

    def recheck() -> None:
        if not ownership.is_empty(out):
            _check_replaceable(out, writer, option, force)

    with staging.beside(out) as tmp:
        rundir = RunDir(out, tmp, lambda: staging.swap_in(tmp, out, recheck))
        try:
            yield rundir
        finally:
            if not rundir.committed:
                shutil.rmtree(tmp, ignore_errors=True)


class NothingLeft(Exception):
    """A resume of a completed run at its own steps: there is nothing to do, and nothing is written
    (a retried job that finished ends as it did, exit 0). Every resumable command (train and its
    fine-tuning tasks, es) ends such a resume the same way."""


def run_id_of(directory: Path) -> str:
    """The run id a run directory's name gives its run: the one rule for such names, held by `stack
    train` and every command that trains through it (sft, dpo, distill).

    The id names the run's record and its ledger directory (evidence/runs/<id>), so it is ASCII
    (contracts.evidence.RUN_ID_PATTERN): git quotes a path of other characters in `git status`
    (`"\\303\\244"` for ä), which the ledger's tools would take for another path. Commands whose
    output directory's name is no run id (prepare, export, import-hf, ...) take any name.
    """
    name = Path(directory).resolve().name
    if re.fullmatch(RUN_ID_PATTERN, name) is None:
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        suggestion = re.sub(r"[^A-Za-z0-9._-]", "-", ascii_name).lstrip("._-")
        instead = f", e.g. {suggestion!r}" if suggestion else ""
        raise BadInput(
            f"run directory name {name!r} is the run's id in its record and ledger, so it must use ASCII "
            f"letters, digits, '.', '_' and '-' only, and start with a letter or digit{instead}"
        )
    return name


def change(key: str, old: Any, new: Any) -> str:
    """`key (old -> new)` for a refusal; a sha256 is shortened to the prefix people compare."""
    shown = [v[:12] if isinstance(v, str) and len(v) == 64 else v for v in (old, new)]
    return f"{key} ({shown[0]} -> {shown[1]})"


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Each key whose value differs between what a checkpoint was made with and what a resume has."""
    return [change(key, before.get(key), now) for key, now in after.items() if before.get(key) != now]


def refuse_changes(out: Path, checkpoint: Path, found: list[str], fix: str) -> None:
    """One line naming every change a checkpoint cannot continue with, and `fix`, the ways forward."""
    if found:
        raise BadInput(
            f"cannot resume {out} from {checkpoint.name} with a changed {', '.join(found)}: the "
            f"checkpoint was made for the old values; {fix}"
        )
