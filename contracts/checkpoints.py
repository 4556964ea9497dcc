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
from collections.abc import Mapping

from contracts.evidence import CheckpointRef, FileHash

FORMAT_VERSION = 1  # of a checkpoint's manifest.json and state.json
# What a weights-only checkpoint (a release) holds: enough to rebuild the model and its tokenizer.
WEIGHTS_FILES = ("model.safetensors", "state.json")


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
