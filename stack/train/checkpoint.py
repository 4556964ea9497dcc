"""Checkpoints that hold the whole state, are written atomically, and are verified on load.

Layout of RUN_DIR/checkpoints/step-NNNNNNN/:

    model.safetensors      weights (shared tensors such as tied embeddings stored once)
    optimizer.safetensors  every tensor of the optimizer state
    state.json             step, epoch, scheduler, scaler, RNG states, reader state, monitors,
                           config, spec version, optimizer hyper-parameters, the tokenizer record
    tokenizer.json         the tokenizer in Hugging Face form (stack.data.tokenizer_record); a
                           copy goes to RUN_DIR/tokenizer.json, so the run carries it too
    manifest.json          sha256 and size of each file above

No pickle anywhere. A checkpoint is assembled in a hidden temporary directory, every file is
fsynced, and the directory is renamed into place, so a reader never sees half of one
(GATE-CKPT-002). Deleting is the same in reverse: a checkpoint that goes (pruned, or replaced by
a re-save of its step) is first renamed out of sight, then deleted, so a crash mid-delete
leaves a hidden leftover, never a visible half checkpoint. Leftovers whose writer is dead are
swept at the next start (`sweep_leftovers`). A write the operating system refuses (a full disk)
removes what it staged and names the checkpoint (`NotWritten`). A save logs the checkpoint only
after its rename, so a kill between the two leaves one the log does not name: the resume that
continues from it logs it, adopted (`adoption_note`).

Only what the run can prove it wrote is ever deleted: a checkpoint its metrics log records writing
(with its manifest's sha256) whose files still verify. One that does not verify is never counted
as one of the checkpoints a prune keeps, and never deleted either: it is *set aside*, renamed to
`step-NNNNNNN.set-aside` beside the others (no reader takes that name for a checkpoint), and the
run says so on stderr and in its log (`set_aside`). A resume sets aside every checkpoint newer
than the one it continues from (it passed over them: none loads), so the run's own saves at those
steps never replace them.

Loading checks, in order: manifest.json against its schema (bad input, naming the key), every
file against the manifest's sha256 and size (GATE-CKPT-002), state.json against its schema, and
each safetensors header (every tensor's declared bytes inside the file) before torch reads it.

A *weights-only* checkpoint (a released model, `stack release`) has a manifest that lists
model.safetensors and state.json but no optimizer.safetensors. It is verified the same way and
serves every reader (sample, eval, trace, export, --init-from), but it cannot be resumed: there
is no optimizer state to continue with.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import stat
import struct
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model

from contracts.checkpoints import FORMAT_VERSION, WEIGHTS_FILES, checkpoint_name, manifest_bytes
from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, FileHash, atomic_write_bytes, sha256_file
from contracts.file_modes import off_mode
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from stack.artifacts import (
    CHECKPOINT_MANIFEST,
    CHECKPOINT_NAME,
    CHECKPOINTS_DIR,
    NEEDS,
    OPTIMIZER_FILE,
    RUN_CONFIG,
    STATE_FILE,
    identify,
)
from stack.data.tokenizer import TOKENIZER_FILE
from stack.data.tokenizer_record import write_tokenizer_file
from stack.model.lora import tensor_sha256
from stack.outputs.staging import alive, os_error_of
from stack.outputs.tensor_files import process_umask, save_tensors, save_weights
from stack.train.metrics import METRICS_FILE, read_lines

CKPT_DIR, MANIFEST = CHECKPOINTS_DIR, CHECKPOINT_MANIFEST  # the names the readers have always used
FILES = ("model.safetensors", OPTIMIZER_FILE, STATE_FILE)
# The files stack.outputs.tensor_files writes, held to their mode (GATE-CKPT-001 check modes).
TENSOR_FILES = ("model.safetensors", OPTIMIZER_FILE)
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
STEP_NAME = CHECKPOINT_NAME  # a checkpoint of the run is exactly this
# Hidden directories of a writer: a checkpoint being assembled, or one on its way out.
LEFTOVER_NAME = re.compile(r"\.(tmp|retired)-step-\d{7}-(\d+)")
# Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
RESTORE = "restore the checkpoint from a good copy"
# The suffix a checkpoint the run cannot vouch for is renamed with (`set_aside`): beside the run's
# checkpoints, under a name no reader takes for one (CHECKPOINT_NAME is matched whole).
SET_ASIDE = ".set-aside"
# A file's identity as its directory listing gives it: name, inode, size, mtime and ctime.
FileStat = tuple[str, int, int, int, int]
# Each checkpoint's files as they stood when they last verified in this process (`verified`).
_VERIFIED: dict[Path, tuple[FileStat, ...]] = {}


class _Strict(BaseModel):
    """A file we wrote ourselves: an unknown key means it is not ours, or was tampered with."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One file of the checkpoint as the manifest vouches for it."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: NonNegativeInt


class Manifest(_Strict):
    """manifest.json: what every file of the checkpoint must hash to."""

    format_version: int
    step: NonNegativeInt
    files: dict[str, FileEntry]


class TokenizerRecord(BaseModel):
    """The tokenizer a reader rebuilds (`trained.tokenizer_from_state`)."""

    name: str
    sha256: str
    vocab_size: int = Field(ge=2)
    json_text: str | None = Field(alias="json")
    eot_token: str | None = None  # an hf tokenizer's end-of-sequence token


class CheckpointState(BaseModel):
    """What every reader of a checkpoint needs from state.json: its step, config and tokenizer.

    Other keys are allowed here, so `stack inspect` can still show a checkpoint that lacks them;
    a resume asks for all of them (`ResumableState`).
    """

    model_config = ConfigDict(extra="allow")

    step: NonNegativeInt
    config: dict[str, Any]
    tokenizer: TokenizerRecord


class RngRecord(BaseModel):
    """What `rng.restore` reads."""

    torch_version: str
    python: dict[str, Any]
    numpy: dict[str, Any]
    torch: str
    cuda: list[str]


class MonitorsRecord(BaseModel):
    """What `TrainState.load_monitors` reads."""

    coherence: dict[str, Any]
    early_stop: dict[str, Any]
    overfit: dict[str, Any]
    spikes: dict[str, Any]
    recent_train_losses: list[float]
    last_heldout: float | None
    best_heldout: float | None
    best_checkpoint: str | None
    tokens_seen: NonNegativeInt


class OptimizerRecord(BaseModel):
    """The JSON half of the optimizer state (`restore_optimizer`); its tensors are in safetensors."""

    param_groups: list[dict[str, Any]]
    scalars: dict[str, Any]


class ResumableState(CheckpointState):
    """Everything a resume restores (GATE-CKPT-001's keys), each in the form the restore reads."""

    format_version: int
    epoch: NonNegativeInt
    scheduler: dict[str, Any]
    scaler: dict[str, float | int] | None
    rng: RngRecord
    reader: dict[str, Any]
    monitors: MonitorsRecord
    spec_version: str
    optimizer: OptimizerRecord


class TensorEntry(_Strict):
    """One tensor of a safetensors header."""

    dtype: str
    shape: list[NonNegativeInt]
    data_offsets: tuple[NonNegativeInt, NonNegativeInt]


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
    return Path(run_dir) / CKPT_DIR / checkpoint_name(step)


def writer_dir(run_dir: Path, step: int) -> Path:
    """The hidden directory this process assembles the checkpoint of `step` in; once the process
    is dead, `sweep_leftovers` removes what it left there."""
    final = step_dir(run_dir, step)
    return final.parent / f".tmp-{final.name}-{os.getpid()}"


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
    """GATE-CKPT-001's checks complete and modes: every file and state key is there, and each
    weights file, its mode read back with stat, has the mode of a file created under the process's
    umask (contracts.file_modes: weights written mode 0022 would not be)."""
    manifest = json.loads((result / MANIFEST).read_text())
    state = json.loads((result / STATE_FILE).read_text())
    missing = [f for f in FILES if f not in manifest["files"]] + [k for k in STATE_KEYS if k not in state]
    modes = {name: stat.S_IMODE((result / name).stat().st_mode) for name in TENSOR_FILES}
    umask = process_umask()
    measured = {
        "checkpoint": result.name,
        "missing": missing,
        "umask": f"{umask:#o}",
        "files_moded": len(modes),
        "off_mode": off_mode(modes, umask),
    }
    return measure("GATE-CKPT-001", measured, step=state.get("step"))


def saved_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors the model file of checkpoint `path` holds, read back as saved (a tied head stored
    once, under the name it was saved by)."""
    return load_file(str(path / "model.safetensors"))


def weights_measured(path: Path, model: torch.nn.Module) -> dict[str, Any]:
    """How the model file of checkpoint `path`, read back, compares with `model`'s weights tensor by
    tensor (dtype, shape and bytes): what GATE-CKPT-001's check `weights` judges."""
    saved = saved_weights(path)
    live = model.state_dict()
    differing = sorted(
        name
        for name, tensor in saved.items()
        if name not in live or tensor_sha256(tensor) != tensor_sha256(live[name])
    )
    return {
        "checkpoint": path.name,
        "weights_compared": len(saved),
        "weights_differing": len(differing),
        "first_differing": differing[0] if differing else None,
    }


def optimizer_measured(path: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """How the optimizer file of checkpoint `path`, read back, compares with `optimizer`'s live
    state tensor by tensor (dtype, shape and bytes): what GATE-CKPT-001's check `optimizer`
    judges. The live tensors are read from the optimizer's own state dict here, named as the file
    names them (`<parameter index>.<slot>`), not through `optimizer_tensors`, which wrote the file;
    a tensor on one side only differs."""
    saved = load_file(str(path / OPTIMIZER_FILE))
    live = {
        f"{index}.{slot}": value
        for index, slots in optimizer.state_dict()["state"].items()
        for slot, value in slots.items()
        if torch.is_tensor(value)
    }
    differing = sorted(
        name
        for name in saved.keys() | live.keys()
        if name not in saved or name not in live or tensor_sha256(saved[name]) != tensor_sha256(live[name])
    )
    return {
        "checkpoint": path.name,
        "optimizer_compared": len(live),
        "optimizer_differing": len(differing),
        "first_optimizer_differing": differing[0] if differing else None,
    }


def _trained(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Outcome:
    step = json.loads((path / STATE_FILE).read_text()).get("step")
    measured = {**weights_measured(path, model), **optimizer_measured(path, optimizer)}
    return measure("GATE-CKPT-001", measured, step=step, holds=f"{path.name} holds the state the run trains")


@gate_require("GATE-CKPT-001", _trained)
def check_holds_trained(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """After each save, the checkpoint's model and optimizer files read back are the model the run
    is training and its optimizer's state, bit for bit and dtype for dtype (a save handed another
    model, or a file written from other tensors, or moments rounded to save space, would resume
    into a run that never happened)."""


def _retire(path: Path) -> Path:
    """Rename a checkpoint out of sight before it is deleted, so it never shows half deleted."""
    retired = path.parent / f".retired-{path.name}-{os.getpid()}"
    if retired.exists():  # this process's own leftover of an earlier failed delete
        shutil.rmtree(retired)
    os.rename(path, retired)
    return retired


class NotWritten(OSError):
    """The operating system refused a write of a checkpoint (a full disk, most often): it names the
    checkpoint, not the staged file the write was for, and its staging directory is removed."""

    def __init__(self, final: Path, refused: OSError) -> None:
        super().__init__(refused.errno, refused.strerror, str(final))
        self.checkpoint = final.name


def _stage(
    tmp: Path,
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """Write every file of the checkpoint of `step` into `tmp`, each fsynced, the manifest last."""
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    tensors, meta = optimizer_tensors(optimizer)
    save_tensors(tensors, tmp / OPTIMIZER_FILE)
    full_state = {"format_version": FORMAT_VERSION, **state, "step": step, "optimizer": meta}
    (tmp / STATE_FILE).write_text(json.dumps(full_state, indent=1, sort_keys=True))
    tokenizer_file = write_tokenizer_file(tmp, full_state["tokenizer"])
    atomic_write_bytes(Path(run_dir) / TOKENIZER_FILE, tokenizer_file.read_bytes())
    files = {}
    for name in (*FILES, TOKENIZER_FILE):
        _fsync(tmp / name)
        files[name] = FileHash(sha256=sha256_file(tmp / name), bytes=(tmp / name).stat().st_size)
    atomic_write_bytes(tmp / MANIFEST, manifest_bytes(step, files))


@gate_ensure("GATE-CKPT-001", lambda result: _complete(result))
def save_checkpoint(
    run_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Write the checkpoint of `step` atomically and return its directory."""
    final = step_dir(run_dir, step)
    tmp = writer_dir(run_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _stage(tmp, run_dir, step, model, optimizer, state)
    except (OSError, SafetensorError) as exc:  # a full disk, most often: what was staged goes
        shutil.rmtree(tmp, ignore_errors=True)
        refused = os_error_of(exc)
        if refused is None:
            raise
        raise NotWritten(final, refused) from exc
    # A re-save of the same step (e.g. SIGUSR1 right after a periodic save) retires the old one.
    retired = _retire(final) if final.exists() else None
    os.replace(tmp, final)
    _fsync(final.parent)
    if retired is not None:
        shutil.rmtree(retired)
    signature = _signature(final)  # every file was hashed just now, for the manifest
    if signature is not None:
        _VERIFIED[final.resolve()] = signature
    return final


def _schema_problem(file: Path, exc: ValidationError) -> str:
    """The first schema error of `file` as one line naming the key."""
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "missing":
        problem = f"{file} lacks key {key!r}"
    elif key:
        problem = f"{file}: key {key!r}: {first['msg']}"
    else:
        problem = f"{file} is not a checkpoint's {file.name} ({first['msg']})"
    return f"{problem}; {RESTORE} or resume from an earlier one"


def _json_of(file: Path) -> Any:
    """The JSON of one file of a checkpoint; a missing or garbled one is bad input naming it."""
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{file} is missing; {file.parent} is not a complete checkpoint") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{file} is not valid JSON ({exc}); {RESTORE}") from None


def read_manifest(path: Path) -> dict[str, Any]:
    """A checkpoint's manifest.json, checked against its schema: step and each file's sha256 and size."""
    file = Path(path) / MANIFEST
    try:
        return Manifest.model_validate(_json_of(file)).model_dump()
    except ValidationError as exc:
        raise BadInput(_schema_problem(file, exc)) from None


def read_state(path: Path, schema: type[CheckpointState] = CheckpointState) -> dict[str, Any]:
    """A checkpoint's state.json as written, after checking it against `schema`.

    `CheckpointState` for a reader of the weights, `ResumableState` for a resume.
    """
    file = Path(path) / STATE_FILE
    state = _json_of(file)
    try:
        schema.model_validate(state)
    except ValidationError as exc:
        raise BadInput(_schema_problem(file, exc)) from None
    return state


def check_tensor_file(file: Path) -> None:
    """Refuse a safetensors file whose header declares bytes it does not hold, before torch reads it.

    The header is 8 bytes of little-endian length, then JSON naming each tensor's dtype, shape
    and [begin, end) offsets into the data that follows; every tensor must fit in that data and
    be exactly as large as its shape and dtype say.
    """
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else None
        if length is None or length > size - 8:
            raise BadInput(f"{file} has no complete safetensors header; {RESTORE}")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict):
        raise BadInput(f"{file}'s safetensors header is not a JSON object; {RESTORE}")
    data_bytes = size - 8 - length
    for name, entry in header.items():
        if name != "__metadata__":
            _check_tensor_entry(file, name, entry, data_bytes)


def _check_tensor_entry(file: Path, name: str, entry: Any, data_bytes: int) -> None:
    """One tensor of a safetensors header: known dtype, bytes inside the data, as many as its shape."""
    try:
        tensor = TensorEntry.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadInput(f"{file}: tensor {name!r}: {where}: {first['msg']}; {RESTORE}") from None
    begin, end = tensor.data_offsets
    if tensor.dtype not in DTYPE_BYTES:
        raise BadInput(f"{file}: tensor {name!r} has unknown dtype {tensor.dtype!r}; {RESTORE}")
    if not begin <= end <= data_bytes:
        raise BadInput(
            f"{file}: tensor {name!r} declares bytes {begin}..{end} but the file holds {data_bytes} "
            f"data bytes; {RESTORE}"
        )
    expected = math.prod(tensor.shape) * DTYPE_BYTES[tensor.dtype]
    if end - begin != expected:
        raise BadInput(
            f"{file}: tensor {name!r} spans {end - begin} bytes but its shape {tensor.shape} of "
            f"{tensor.dtype} needs {expected}; {RESTORE}"
        )


def verify(path: Path) -> str | None:
    """None when every file matches the manifest; otherwise why the checkpoint is bad."""
    return verify_files(path)[0]


def verify_files(path: Path) -> tuple[str | None, list[str]]:
    """Check every file of a checkpoint against its manifest: (the first problem or None, files verified)."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return f"{path / MANIFEST} is missing", []
    try:
        files = read_manifest(path)["files"]
    except BadInput as exc:
        return str(exc), []
    verified: list[str] = []
    # No optimizer in the manifest: a weights-only checkpoint, whose two files are all it needs.
    expected = FILES if OPTIMIZER_FILE in files else WEIGHTS_FILES
    if TOKENIZER_FILE in files:  # a checkpoint written before the tokenizer travelled has none
        expected = (*expected, TOKENIZER_FILE)
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


def _signature(path: Path) -> tuple[FileStat, ...] | None:
    """Every file of checkpoint `path` as its directory listing gives it; None when it cannot be read.
    A file rewritten in place (a byte flipped) moves its mtime and ctime; one replaced, its inode."""
    try:
        stats = [(entry.name, entry.stat()) for entry in sorted(Path(path).iterdir())]
    except OSError:
        return None
    return tuple((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for name, st in stats)


def verified(path: Path) -> str | None:
    """`verify`, remembered: None when every file matches the manifest, else why not. A checkpoint
    whose files are as they stood when they last verified in this process is not hashed again: a
    prune and its check ask about the same few checkpoints at every save, and a save has just
    hashed the one it wrote."""
    key, before = Path(path).resolve(), _signature(path)
    if before is not None and _VERIFIED.get(key) == before:
        return None
    found = verify(path)
    if found is None and before is not None and _signature(path) == before:
        _VERIFIED[key] = before
    else:
        _VERIFIED.pop(key, None)
    return found


def _verified(path: Path) -> Outcome:
    if (Path(path) / MANIFEST).is_file():
        read_manifest(path)  # a manifest that is not one is bad input, named by its key
    problem, verified = verify_files(path)
    measured = {"checkpoint": Path(path).name, "problem": problem, "files_verified": len(verified)}
    return measure("GATE-CKPT-002", measured, holds=f"{Path(path).name}: every file matches its sha256")


@gate_require("GATE-CKPT-002", lambda path: _verified(path))
def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint's state once every checksum holds; its schema and tensor headers are checked
    here too, so nothing later (torch included) reads a malformed file."""
    path = Path(path)
    manifest = read_manifest(path)
    state = read_state(path)
    for name in (n for n in FILES if n.endswith(".safetensors") and n in manifest["files"]):
        check_tensor_file(path / name)
    return Checkpoint(path, state)


def load_weights(checkpoint: Checkpoint, model: torch.nn.Module) -> None:
    """Load the checkpoint's weights into `model` (strict: every tensor must match).

    The file passed its checksum, so a renamed or reshaped tensor means the manifest was resealed
    over a different file: bad input naming the file, not torch's multi-line report.
    """
    file = checkpoint.path / "model.safetensors"
    try:
        load_model(model, str(file), strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise BadInput(
            f"{file} does not hold the weights of the model its state.json describes ({detail}); {RESTORE}"
        ) from None


@contextlib.contextmanager
def restoring(checkpoint: Checkpoint, part: str) -> Iterator[None]:
    """Turn a failure to restore one part of state.json (`part`: optimizer, rng, monitors, ...)
    into one line naming the file and the part.

    state.json passed its checksum and its schema, so what fails here is a value of the right
    type in the wrong form (a list one short, a key renamed): the file is not what the run wrote.
    """
    try:
        yield
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as exc:
        raise BadInput(
            f"{checkpoint.path / STATE_FILE}: its {part} state cannot be restored "
            f"({type(exc).__name__}: {' '.join(str(exc).split())}); {RESTORE} or resume from an earlier one"
        ) from None


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
    with restoring(checkpoint, "optimizer"):
        restore_optimizer(optimizer, tensors, checkpoint.state["optimizer"])


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint directories (named exactly step-NNNNNNN), oldest first."""
    base = Path(run_dir) / CKPT_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and STEP_NAME.fullmatch(p.name))


def saved_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints that hold a manifest, oldest first: what the record counts.

    A step directory without one was never finished by the atomic writer (or was damaged); it
    is left for `latest_valid` to report, and a prune or a resume sets it aside.
    """
    return [p for p in list_checkpoints(run_dir) if (p / MANIFEST).is_file()]


def latest_manifest(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint whose manifest reads, with that manifest: what a run's record cites.

    A newer one with a garbled manifest (which a resume skipped, and which the run replaces
    when it gets to that step) is passed over rather than stopping the record being written.
    """
    for path in reversed(saved_checkpoints(run_dir)):
        try:
            return path, read_manifest(path)
        except BadInput:
            continue
    return None


def _tensor_files(path: Path) -> list[Path]:
    """The safetensors files a checkpoint's manifest lists."""
    listed = read_manifest(path)["files"]
    return [Path(path) / name for name in FILES if name.endswith(".safetensors") and name in listed]


def problem(path: Path, resumable: bool = False) -> str | None:
    """Why a checkpoint cannot be loaded (checksums, state schema, tensor headers), or None.

    `resumable` also asks for everything a resume restores: the whole state and the optimizer.
    """
    found = verify(path)
    if found is not None:
        return found
    if resumable and is_weights_only(path):
        return "it holds no optimizer state (a weights-only checkpoint)"
    try:
        read_state(path, ResumableState if resumable else CheckpointState)
        for file in _tensor_files(path):
            check_tensor_file(file)
    except BadInput as exc:
        return str(exc)
    return None


def _log_events(run_dir: Path, events: Collection[str]) -> Iterator[dict[str, Any]]:
    """The run's metrics log's event lines called one of `events`, in order (none without a log)."""
    log = Path(run_dir) / METRICS_FILE
    if not log.is_file():
        return
    quoted = [f'"{name}"' for name in events]
    with open(log, encoding="utf-8") as lines:
        for line in lines:
            if not any(name in line for name in quoted):  # most lines are steps: not worth parsing
                continue
            with contextlib.suppress(json.JSONDecodeError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") in events:
                    yield entry


def logged_checkpoints(run_dir: Path) -> set[str]:
    """The names of the checkpoints the run's metrics log says it wrote (its `checkpoint` events),
    whether or not they are still on disk; none for a directory without a log."""
    return {str(entry.get("path")) for entry in _log_events(run_dir, ("checkpoint",))}


def newest_measured(run_dir: Path, chosen: Path | None, resumable: bool) -> dict[str, Any]:
    """What GATE-CKPT-002's check `newest` judges of the checkpoint a command chose from a run
    directory (None: it found none): every checkpoint of the run with a later step, whether on disk
    or named by a `checkpoint` event of the run's log, and those of them that load (with
    `resumable`, that a resume can continue from). Found by step number, apart from the listing
    and the order the choice read, and verified here one by one."""
    base = Path(run_dir) / CKPT_DIR
    on_disk = {path.name for path in base.iterdir() if path.is_dir()} if base.is_dir() else set()
    names = {name for name in on_disk | logged_checkpoints(run_dir) if STEP_NAME.fullmatch(name)}
    after = -1 if chosen is None else int(chosen.name.removeprefix("step-"))
    newer = sorted(name for name in names if int(name.removeprefix("step-")) > after)
    valid = [name for name in newer if name in on_disk and problem(base / name, resumable) is None]
    return {
        "chosen_checkpoint": None if chosen is None else chosen.name,
        "newer_checkpoints": newer,
        "newer_valid": valid,
    }


def _newest(run_dir: Path, chosen: Path | None, resumable: bool) -> Outcome:
    measured = newest_measured(run_dir, chosen, resumable)
    return measure("GATE-CKPT-002", measured, holds="the run's newest valid checkpoint is the one read")


@gate_require("GATE-CKPT-002", _newest)
def check_newest(run_dir: Path, chosen: Path | None, resumable: bool) -> None:
    """Refuse to read `chosen` of a run directory while a newer checkpoint of the run loads: a resume
    would repeat steps the run already took, an evaluation would score an older model."""


def latest_valid(run_dir: Path, resumable: bool = False) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that loads (or, with `resumable`, that a resume can continue from),
    and a note for each newer one that does not."""
    notes: list[str] = []
    for path in reversed(list_checkpoints(run_dir)):
        found = problem(path, resumable)
        if found is None:
            return path, notes
        notes.append(f"skipping {path.name}: {found}")
    return None, notes


def continuable(out: Path, need: str, resumable: bool) -> bool:
    """Whether a --resume taking `need` (stack.artifacts) would continue `out`: a run of that kind,
    with its configuration and a checkpoint a resume can continue from (`resumable`: one with the
    optimizer state a training resume restores). What a refusal may offer (stack.outputs.rundir)."""
    if not NEEDS[need].takes(identify(out)) or not (Path(out) / RUN_CONFIG).is_file():
        return False
    return latest_valid(out, resumable)[0] is not None


def resume_point(run_dir: Path, resumable: bool = True) -> tuple[Path, list[str]]:
    """The checkpoint a resume of `run_dir` continues from: the newest one a resume can continue
    from (GATE-CKPT-002 holds it to the run's checkpoints and its log's), with a note for each
    newer one it passes over (and that it resumes from the older one); refused when there is
    none. `resumable` False: the newest that loads, for a run whose checkpoints carry their own
    resume state, which its restore checks (ES: its `es` entry)."""
    path, notes = latest_valid(run_dir, resumable)
    check_newest(run_dir, path, resumable)
    if path is None:
        why = ": its metadata.json says why" if (Path(run_dir) / EVIDENCE_FILE).is_file() else ""
        raise BadInput(
            f"{run_dir} has no valid checkpoint to resume from (a run that stopped before its first "
            f"checkpoint{why}); start a new run with another --out, or remove "
            f"{run_dir} and run its first command again"
        )
    return path, [*notes, f"resuming from {path.name} instead"] if notes else []


# What the `checkpoint` event a resume writes for a checkpoint its save never logged says of it.
ADOPTED = "at resume: it verifies, and the log holds its steps, but its save stopped before logging it"


def adoption_note(run_dir: Path, path: Path) -> str | None:
    """At a resume from checkpoint `path`: None when the run's metrics log records writing it, else
    the line that says the resume adopts it (the loop then logs the `checkpoint` event its save never
    wrote, marked `adopted`: the log made whole, so it names every checkpoint a prune counts).

    A save renames the checkpoint into place, then logs it: a stop between the two leaves a
    checkpoint that verifies and a log holding every step line up to it but not its event. Adopting
    it keeps the resume bit-exact: the log's step lines are those of the steps the checkpoint holds,
    and the resume continues after them (it rolls back only the lines after the checkpoint). A log
    whose step lines stop short of the checkpoint lost more than that line, and cannot be made whole
    from the checkpoint: refused, naming the way to resume from the newest checkpoint it records.
    """
    name = Path(path).name
    if name in written_checkpoints(run_dir):
        return None
    step = int(name.removeprefix("step-"))
    logged = [line["step"] for line in read_lines(Path(run_dir) / METRICS_FILE) if line.get("type") == "step"]
    last = max(logged, default=0)
    if last < step:
        raise BadInput(
            f"cannot resume {run_dir} from {name}: its {METRICS_FILE} records neither writing it nor the "
            f"steps after {last}, so the log lost lines the checkpoint cannot restore; move {path} aside "
            f"(mv {path} {path}{SET_ASIDE}) to resume from the newest checkpoint the log records"
        )
    return (
        f"adopting {name}: it verifies and {METRICS_FILE} holds its steps, but its save stopped "
        "before logging it (a kill between the two); its checkpoint event is logged now, and the run "
        "continues from it"
    )


@dataclass(frozen=True)
class SetAside:
    """A checkpoint directory the run could not vouch for, renamed out of its checkpoints, and why."""

    name: str
    to: str
    why: str

    def line(self) -> str:
        """What the run says of it on stderr."""
        return (
            f"set aside {self.name} as {self.to}: {self.why}; it is no longer counted as one of the run's "
            "checkpoints, and nothing was deleted (look at it, then remove it or restore it)"
        )


def set_aside(path: Path, why: str) -> SetAside:
    """Rename checkpoint `path` to `step-NNNNNNN.set-aside` beside it (`-2`, `-3`, ... when taken):
    it leaves the run's checkpoints, so no reader, prune or save takes it for one, and stays whole
    for the user to look at. Never deleted: it may be the only copy of something."""
    path = Path(path)
    target = path.with_name(f"{path.name}{SET_ASIDE}")
    suffix = 2
    while target.exists() or target.is_symlink():
        target = path.with_name(f"{path.name}{SET_ASIDE}-{suffix}")
        suffix += 1
    os.rename(path, target)
    _VERIFIED.pop(path.resolve(), None)
    return SetAside(path.name, target.name, why)


def set_aside_newer(run_dir: Path, step: int, resumable: bool = True) -> list[SetAside]:
    """At a resume from the checkpoint of `step`: set aside every checkpoint directory of the run with
    a later step. The resume passed over each (none loads, or none can be resumed), and the run will
    save those steps again: a save would replace one, and a prune would rank it among the newest."""
    aside = []
    for path in list_checkpoints(run_dir):
        if int(path.name.removeprefix("step-")) > step:
            found = problem(path, resumable) or "a newer checkpoint than the one resumed from"
            aside.append(set_aside(path, f"the resume from {checkpoint_name(step)} passed over it ({found})"))
    return aside


@dataclass(frozen=True)
class Pruned:
    """What a prune did: the checkpoints it deleted, and those it set aside instead of counting."""

    deleted: list[str]
    set_aside: list[SetAside]


def _proof(path: Path, manifest_sha256: str | None) -> str | None:
    """Why checkpoint `path` cannot be shown to be the one the run's log records writing (None when
    it can): its manifest is not the one written (`manifest_sha256`, None for a log older than that
    record), or a file does not match its manifest."""
    if manifest_sha256 is not None:
        try:
            found = sha256_file(Path(path) / MANIFEST)
        except OSError:
            found = None
        if found != manifest_sha256:
            return f"its {MANIFEST} is not the one the run's log records writing"
    return verified(path)


def prune(run_dir: Path, keep_last: int, written: Mapping[str, str | None], keep: Collection[str]) -> Pruned:
    """Delete the run's checkpoints beyond the newest `keep_last` that verify, never one named in
    `keep` (the best, the one this invocation resumed from); returns what went and what was set aside.

    The candidates are the checkpoints the run's log records writing (`written`: name → the sha256
    of the manifest written, in the order of their last writing) that are on disk; a directory the
    log does not name is never touched. Each must prove to be what the log records (`_proof`)
    before it is counted among the kept or deleted: one that does not is set aside (`set_aside`),
    neither. Each doomed one is retired (renamed out of sight) before it is deleted.
    """
    base = Path(run_dir) / CKPT_DIR
    counted, deleted, aside = 0, [], []
    for name in reversed(list(written)):
        path = base / name
        if not STEP_NAME.fullmatch(name) or path.is_symlink() or not path.is_dir():
            continue
        why = _proof(path, written[name])
        if why is not None:
            aside.append(set_aside(path, why))
        elif counted < keep_last:
            counted += 1
        elif name not in keep:
            shutil.rmtree(_retire(path))
            deleted.append(name)
    return Pruned(deleted, aside)


def written_checkpoints(run_dir: Path) -> dict[str, str | None]:
    """The checkpoints the run's metrics log records writing and not setting aside since: name → the
    sha256 of the manifest written (None where the log predates that record), in the order of their
    last writing. What a prune may count and delete (`prune`)."""
    written: dict[str, str | None] = {}
    for entry in _log_events(run_dir, ("checkpoint", "set_aside")):
        name = str(entry.get("path"))
        written.pop(name, None)
        if entry["event"] == "checkpoint":
            sha = entry.get("manifest_sha256")
            written[name] = sha if isinstance(sha, str) else None
    return written


def verified_checkpoints(run_dir: Path) -> list[str]:
    """The names of the run's checkpoints on disk that verify against their manifests (`verified`):
    the checkpoints a prune left, as GATE-CKPT-002's check pruned counts them."""
    return [path.name for path in saved_checkpoints(run_dir) if verified(path) is None]


def leftovers_note(run_dir: Path) -> str | None:
    """Sweep what dead writers left among the run's checkpoints (`sweep_leftovers`) and say what
    went, for the first writes of a run that passed set-up; None when nothing was left."""
    swept = sweep_leftovers(run_dir)
    if not swept:
        return None
    return f"removed what dead processes left in {Path(run_dir) / CKPT_DIR}: {', '.join(swept)}"


def sweep_leftovers(run_dir: Path) -> list[str]:
    """Delete hidden .tmp-step-* and .retired-step-* directories whose writer (the pid in the name)
    is dead: a checkpoint that was never finished, or one that was never finished being deleted.
    Returns their names; a live writer's are left alone."""
    base = Path(run_dir) / CKPT_DIR
    if not base.is_dir():
        return []
    removed = []
    for path in sorted(base.iterdir()):
        match = LEFTOVER_NAME.fullmatch(path.name)
        if match is not None and path.is_dir() and int(match[2]) > 0 and not alive(int(match[2])):
            shutil.rmtree(path)
            removed.append(path.name)
    return removed
