"""Checkpoints that hold the whole state, are written atomically, and are verified on load.

Layout of RUN_DIR/checkpoints/step-NNNNNNN/:

    model.safetensors      weights (shared tensors such as tied embeddings stored once)
    optimizer.safetensors  every tensor of the optimizer state
    state.json             step, epoch, scheduler, scaler, RNG states, reader state, monitors,
                           config, spec version, optimizer hyper-parameters
    manifest.json          sha256 and size of each file above

No pickle anywhere. A checkpoint is assembled in a hidden temporary directory, every file is
fsynced, and the directory is renamed into place, so a reader never sees half of one
(GATE-CKPT-002). Loading recomputes every checksum first.

A *weights-only* checkpoint (a released model, `stack release`) has a manifest that lists
model.safetensors and state.json but no optimizer.safetensors. It is verified the same way and
serves every reader (sample, eval, trace, export, --init-from), but it cannot be resumed: there
is no optimizer state to continue with.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from contracts.errors import BadInput
from contracts.evidence import atomic_write_bytes, sha256_file
from contracts.gates import Outcome, gate_ensure, gate_require, measure

FORMAT_VERSION = 1
CKPT_DIR = "checkpoints"
MANIFEST = "manifest.json"
OPTIMIZER_FILE = "optimizer.safetensors"
FILES = ("model.safetensors", OPTIMIZER_FILE, "state.json")
# What a weights-only checkpoint holds: enough to rebuild the model and its tokenizer.
WEIGHTS_FILES = ("model.safetensors", "state.json")
# What GATE-CKPT-001 requires state.json to hold.
STATE_KEYS = (
    "format_version",
    "step",
    "epoch",
    "scheduler",
    "scaler",
    "rng",
    "reader",
    "monitors",
    "config",
    "spec_version",
    "optimizer",
    "tokenizer",
)


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint on disk and its decoded state."""

    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def step_dir(run_dir: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives."""
    return Path(run_dir) / CKPT_DIR / f"step-{step:07d}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and plain data (for JSON)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, slots in state_dict["state"].items():
        for key, value in slots.items():
            name = f"{index}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of `optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _complete(result: Path) -> Outcome:
    manifest = json.loads((result / MANIFEST).read_text())
    state = json.loads((result / "state.json").read_text())
    missing = [f for f in FILES if f not in manifest["files"]] + [k for k in STATE_KEYS if k not in state]
    return measure("GATE-CKPT-001", {"checkpoint": result.name, "missing": missing}, step=state.get("step"))


@gate_ensure("GATE-CKPT-001", lambda result: _complete(result))
def save_checkpoint(
    run_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Write the checkpoint of `step` atomically and return its directory."""
    final = step_dir(run_dir, step)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    tensors, meta = optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    full_state = {"format_version": FORMAT_VERSION, **state, "step": step, "optimizer": meta}
    (tmp / "state.json").write_text(json.dumps(full_state, indent=1, sort_keys=True))
    files = {}
    for name in FILES:
        _fsync(tmp / name)
        files[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
    manifest = {"format_version": FORMAT_VERSION, "step": step, "files": files}
    atomic_write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
    if final.exists():  # a re-save of the same step (e.g. SIGUSR1 right after a periodic save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(final.parent)
    return final


def read_manifest(path: Path) -> dict[str, Any]:
    """A checkpoint's manifest.json: step and the sha256 and size of each file."""
    return json.loads((Path(path) / MANIFEST).read_text())


def verify(path: Path) -> str | None:
    """None when every file matches the manifest; otherwise why the checkpoint is bad."""
    return verify_files(path)[0]


def verify_files(path: Path) -> tuple[str | None, list[str]]:
    """Check every file of a checkpoint against its manifest: (the first problem or None, files verified)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path / MANIFEST} is missing or unreadable", []
    verified: list[str] = []
    # No optimizer in the manifest: a weights-only checkpoint, whose two files are all it needs.
    expected = FILES if OPTIMIZER_FILE in files else WEIGHTS_FILES
    for name in expected:
        entry = files.get(name)
        target = path / name
        if entry is None:
            return f"{MANIFEST} does not list {name}", verified
        if not target.is_file():
            return f"{target} is missing", verified
        if target.stat().st_size != entry["bytes"]:
            return f"{target} has {target.stat().st_size} bytes, the manifest says {entry['bytes']}", verified
        if sha256_file(target) != entry["sha256"]:
            return f"{target} does not match its sha256 in {MANIFEST}", verified
        verified.append(name)
    return None, verified


def _verified(path: Path) -> Outcome:
    problem, verified = verify_files(path)
    measured = {"checkpoint": Path(path).name, "problem": problem, "files_verified": len(verified)}
    return measure("GATE-CKPT-002", measured, holds=f"{Path(path).name}: every file matches its sha256")


@gate_require("GATE-CKPT-002", lambda path: _verified(path))
def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint's state after verifying every checksum (tensors are loaded separately)."""
    return Checkpoint(Path(path), json.loads((Path(path) / "state.json").read_text()))


def load_weights(checkpoint: Checkpoint, model: torch.nn.Module) -> None:
    """Load the checkpoint's weights into `model` (strict: every tensor must match)."""
    load_model(model, str(checkpoint.path / "model.safetensors"), strict=True)


def is_weights_only(path: Path) -> bool:
    """Whether the checkpoint's manifest lists no optimizer state (a released model)."""
    return OPTIMIZER_FILE not in read_manifest(path)["files"]


def load_optimizer(checkpoint: Checkpoint, optimizer: torch.optim.Optimizer) -> None:
    """Restore the optimizer state saved with the checkpoint; a weights-only one has none to give."""
    if is_weights_only(checkpoint.path):
        raise BadInput(
            f"{checkpoint.path} is a weights-only checkpoint (a release) and holds no optimizer state "
            f"to resume; start a new run from it with --init-from {checkpoint.path}"
        )
    tensors = load_file(str(checkpoint.path / OPTIMIZER_FILE))
    restore_optimizer(optimizer, tensors, checkpoint.state["optimizer"])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary ones excluded)."""
    base = Path(run_dir) / CKPT_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest_valid(run_dir: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies, and a note for each newer one that did not."""
    notes: list[str] = []
    for path in reversed(list_checkpoints(run_dir)):
        problem = verify(path)
        if problem is None:
            return path, notes
        notes.append(f"skipping {path.name}: {problem}")
    return None, notes


def prune(run_dir: Path, keep_last: int, best: Path | None) -> list[Path]:
    """Delete checkpoints beyond the newest `keep_last`, always keeping `best`; returns what went."""
    paths = list_checkpoints(run_dir)
    doomed = [p for p in paths[:-keep_last] if best is None or p.resolve() != best.resolve()]
    for path in doomed:
        shutil.rmtree(path)
    return doomed
