"""A checkpoint's manifest.json, byte for byte: written by the stack, made again by the checker.

A checkpoint (stack.train.checkpoint) and a release (stack.release) list the sha256 and size of
each file they hold in manifest.json, and a record names the checkpoint it read or wrote by the
same hashes (contracts.evidence.CheckpointRef). The manifest's bytes are a function of the step
and those files alone, so a result file that cites a checkpoint by the sha256 of its manifest (an
export's `source_checkpoint`, a surgery's `source`, a synthesis's `model`) names the record's
checkpoint exactly when the manifest made again from the record hashes to it; and a release's
manifest is the one its record's checkpoint gives for the files released.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contracts.evidence import CheckpointRef, FileHash, canonical_sha256

FORMAT_VERSION = 1  # of a checkpoint's manifest.json and state.json
# What a weights-only checkpoint (a release) holds: enough to rebuild the model and its tokenizer.
STATE_FILE = "state.json"  # a checkpoint's step, config, tokenizer and the rest of its state
WEIGHTS_FILES = ("model.safetensors", STATE_FILE)
# The key of state.json under which a checkpoint carries its chat template's record (name, sha256, Jinja).
CHAT_TEMPLATE_KEY = "chat_template"


def chat_template_sha256(state: Mapping[str, Any]) -> str | None:
    """The digest of the chat template record a checkpoint's state carries (canonical JSON, so its
    name, sha256 and Jinja alike), or None when it carries none. GATE-LASER-003's check template
    holds a surgery's written checkpoint to its source's by it: a surgery that dropped the
    source's template would make every export of its output ship none, unsaid."""
    record = state.get(CHAT_TEMPLATE_KEY)
    return None if record is None else canonical_sha256(record)


def manifest_bytes(step: int, files: Mapping[str, FileHash]) -> bytes:
    """The manifest.json of a checkpoint of `step` holding `files` (in the order given)."""
    listed = {name: {"sha256": entry.sha256, "bytes": entry.bytes} for name, entry in files.items()}
    manifest = {"format_version": FORMAT_VERSION, "step": step, "files": listed}
    return json.dumps(manifest, indent=1).encode()


def manifest_sha256(checkpoint: CheckpointRef) -> str:
    """The sha256 of the manifest.json of the checkpoint a record names."""
    return hashlib.sha256(manifest_bytes(checkpoint.step, checkpoint.files)).hexdigest()


def released_manifest(checkpoint: CheckpointRef) -> bytes:
    """The manifest.json of a release of the checkpoint a record names: its step, and its
    WEIGHTS_FILES (`stack release` copies those, and the integrity check holds the release to it)."""
    files = {name: checkpoint.files[name] for name in WEIGHTS_FILES if name in checkpoint.files}
    return manifest_bytes(checkpoint.step, files)


def checkpoint_name(step: int) -> str:
    """The directory a training run's checkpoint of `step` is written to, under checkpoints/."""
    return f"step-{step:07d}"


@dataclass
class BestSoFar:
    """The best checkpoint of a training run's metrics log, folded line by line: the latest one
    written right after an evaluation whose held-out loss was the lowest so far; every checkpoint
    written and not set aside since, in the order of its last writing; and the checkpoint the
    latest invocation resumed from. Kept between reads, a run that follows its growing log
    (stack.train.best_kept) feeds it only the new lines.

    A `set_aside` event (a checkpoint that did not verify, renamed out of the run's checkpoints)
    takes the checkpoint out of those written, and out of the best and the resumed-from; a
    `resumed` event names the checkpoint an invocation continued from.
    """

    best: str | None = None
    best_loss: float | None = None
    last_loss: float | None = None
    written: list[str] = field(default_factory=list)
    resumed: str | None = None

    def take(self, line: Mapping[str, Any]) -> None:
        """One line of the log, in order."""
        event, path = line.get("event"), line.get("path")
        if line.get("type") == "eval" and isinstance(line.get("heldout_loss"), int | float):
            self.last_loss = line["heldout_loss"]
            self.best_loss = self.last_loss if self.best_loss is None else min(self.best_loss, self.last_loss)
        elif event == "checkpoint" and isinstance(path, str):
            self.written = [*(name for name in self.written if name != path), path]
            if self.last_loss is not None and self.last_loss == self.best_loss:
                self.best = path
        elif event == "set_aside" and isinstance(path, str):
            self.written = [name for name in self.written if name != path]
            self.best = None if self.best == path else self.best
            self.resumed = None if self.resumed == path else self.resumed
        elif event == "resumed" and isinstance(path, str):
            self.resumed = path

    def kept(self, keep_last: int) -> list[str]:
        """The checkpoints a prune leaves after the last one written (stack.train.checkpoint.prune):
        the newest `keep_last` written and not set aside, the best, and the one resumed from (a
        checkpoint the log records writing, as every resume's is), by name."""
        resumed = [self.resumed] if self.resumed in self.written else []
        best = [self.best] if self.best is not None else []
        return sorted({*self.written[-keep_last:], *best, *resumed})


def best_checkpoint_of(lines: Iterable[Mapping[str, Any]]) -> str | None:
    """The checkpoint a training run keeps as its best, by its metrics log's lines in order
    (`BestSoFar`). The loop keeps it through every prune (GATE-CKPT-002, check best); the checker
    names it again."""
    fold = BestSoFar()
    for line in lines:
        fold.take(line)
    return fold.best
