"""A trained model back from disk: `RUN_DIR` or a checkpoint directory → model, config, tokenizer.

Used by every command that reads a checkpoint (sample, eval, inspect, trace, export). The
tokenizer travels inside the checkpoint's state, so a checkpoint copied elsewhere still decodes.

A released model's directory (`stack release`: model.safetensors, state.json and a manifest,
under a repository's evidence/models/) is a weights-only checkpoint and loads like any other.
Its manifest must also agree with the registry entry that released those files: loading then
verifies each file against the manifest (GATE-CKPT-002), so the bytes read are the bytes the
registry lists, not a copy swapped in beside a rewritten manifest.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from contracts.errors import BadInput
from contracts.registry import REGISTRY_FILE, ReleasedModel, read_registry
from contracts.release_rules import WEIGHTS_FILE
from stack.artifacts import require
from stack.data.tokenizer import Tokenizer
from stack.data.tokenizer_record import tokenizer_from_state
from stack.model.checks import check_architecture, runnable_paths
from stack.model.gpt import GPT
from stack.model.lora import apply_lora
from stack.outputs.lock import running_command
from stack.train import checkpoint as ckpt
from stack.train.config import RunConfig, resolve
from stack.train.lora_setup import adapter_settings


@dataclass
class Trained:
    model: GPT
    config: RunConfig
    checkpoint: ckpt.Checkpoint
    tokenizer: Tokenizer


def _release_root(path: Path) -> Path | None:
    """The repository whose evidence/models/ holds `path`, or None when `path` is not a release."""
    for parent in Path(path).resolve().parents:
        if parent.name == "models" and parent.parent.name == REGISTRY_FILE.parent.name:
            return parent.parent.parent
    return None


def _manifest_hashes(path: Path) -> dict[str, str] | None:
    """file name → sha256 from the checkpoint's manifest; None when unreadable (GATE-CKPT-002 refuses it)."""
    try:
        return {name: entry["sha256"] for name, entry in ckpt.read_manifest(path)["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _registry_entry(root: Path, directory: str) -> ReleasedModel:
    """The entry of root's registry that released `directory` (repository-relative), or refuse."""
    registry = root / REGISTRY_FILE
    for entry in read_registry(registry).models:
        if entry.directory == directory and entry.artifact(WEIGHTS_FILE) is not None:
            return entry
    raise BadInput(
        f"{root / directory} is under evidence/models/ but no entry of {registry} releases its "
        f"{WEIGHTS_FILE}; release it with `stack release`, or load a copy kept outside evidence/models/"
    )


def check_released(path: Path) -> None:
    """Refuse a checkpoint under evidence/models/ unless its registry entry lists its files' hashes.

    The registry's hashes are compared with the manifest's; loading then verifies each file
    against the manifest (GATE-CKPT-002), which closes the chain from registry to bytes.
    """
    root = _release_root(path)
    hashes = None if root is None else _manifest_hashes(path)
    if root is None or hashes is None:
        return
    directory = Path(path).resolve().relative_to(root).as_posix()
    entry = _registry_entry(root, directory)
    for art in entry.artifacts:
        if hashes.get(art.name) != art.sha256:
            raise BadInput(
                f"{path}: {art.name} is not the file {entry.key} released (its sha256 differs from "
                f"the one in {root / REGISTRY_FILE}); restore the released file"
            )
        if art.url is not None and not (Path(path) / art.name).is_file():
            raise BadInput(
                f"{path}: {entry.key} keeps its {art.name} at {art.url}; download it into {path} "
                f"(sha256 {art.sha256}, {art.bytes} bytes) and run again"
            )
    if entry.withdrawn is not None:
        print(
            f"{_speaker()}: note: {entry.key} is withdrawn: {' '.join(entry.withdrawn.split())}",
            file=sys.stderr,
        )


def _speaker() -> str:
    """How a note of loading a model begins: the command typed (`stack sample`), as its other lines do."""
    return running_command("stack")


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory as given (a release checked against its registry entry first), or a
    run directory's newest valid checkpoint, which GATE-CKPT-002 holds to every checkpoint of the
    run and of its log (the command's record names the checkpoint it read). Anything else is
    refused for what it is (stack.artifacts): a DATA_DIR is not a damaged checkpoint."""
    path = Path(path)
    identity = require(path, "model")
    if identity.kind.name in ("checkpoint", "release"):
        check_released(path)
        return path
    latest, notes = ckpt.latest_valid(path)
    ckpt.check_newest(path, latest, resumable=False)
    for note in notes:
        print(f"{_speaker()}: {note}", file=sys.stderr)
    if latest is None:
        raise BadInput(f"{path} has no valid checkpoint")
    return latest


# The attention path a model runs on where its own cannot (GATE-MODEL-001 holds the paths to the
# same numbers): a model trained with the Triton kernel still samples, scores and is operated on
# on a machine without CUDA or Triton's interpreter.
FALLBACK_ATTENTION = "sdpa"


def runnable_attention(config: RunConfig, device: str | torch.device, where: Path) -> str | None:
    """None when the model's own attention path runs on `device`; else the path it runs on instead,
    said in one line on stderr (the config keeps the path it was trained with)."""
    own = config.model.attention
    device = torch.device(device)
    if own in runnable_paths(device, config.model.head_width):
        return None
    print(
        f"{_speaker()}: note: {where} was trained with attention='{own}', which cannot run on {device.type} "
        f"here (the Triton kernel needs a CUDA device or TRITON_INTERPRET=1, and a head_dim it is built "
        f"for); it runs with attention='{FALLBACK_ATTENTION}', the same numbers (GATE-MODEL-001)",
        file=sys.stderr,
    )
    return FALLBACK_ATTENTION


def load_measured(path: Path, device: str | torch.device = "cpu", attention: str | None = None) -> Trained:
    """`load_trained`, its model then held to the architecture its config names (GATE-MODEL-003's
    reference comparison, as a training run makes before step 1; about 65 ms on the demo model):
    for a command whose record measures that model (an evaluation, a sample, an export), which
    would otherwise score or write out whatever forward the modules compute."""
    trained = load_trained(path, device, attention)
    check_architecture(trained.model, adapters=adapter_settings(trained.config))
    return trained


def load_trained(path: Path, device: str | torch.device = "cpu", attention: str | None = None) -> Trained:
    """Verify and load a checkpoint (GATE-CKPT-002) with its config and tokenizer.

    The model runs on `attention` when given; else on its own path, or, where that cannot run on
    `device`, on FALLBACK_ATTENTION with a note (`runnable_attention`). `Trained.config` is the
    checkpoint's, whatever the model runs on.
    """
    checkpoint = ckpt.load_checkpoint(resolve_checkpoint(path))
    config = resolve(None, None, [], base=checkpoint.state["config"])
    if attention is None:
        attention = runnable_attention(config, device, checkpoint.path)
    model_config = (
        config.model if attention is None else config.model.model_copy(update={"attention": attention})
    )
    tokenizer = tokenizer_from_state(checkpoint.state["tokenizer"])
    if tokenizer.vocab_size > model_config.vocab:
        # A tokenizer with more ids than the embedding has rows would index past it on the first
        # such id. (An imported model's embedding may be padded past its tokenizer: fewer is fine.)
        raise BadInput(
            f"{checkpoint.path / ckpt.STATE_FILE}: its tokenizer has {tokenizer.vocab_size} ids but the "
            f"model's vocab is {model_config.vocab}; the two were not saved together: {ckpt.RESTORE}"
        )
    model = GPT(model_config)
    if config.lora is not None:  # a LoRA run's checkpoint holds base and adapters (stack.model.lora)
        lora = config.lora
        apply_lora(model, lora.targets, lora.r, lora.alpha, lora.dropout, lora.rslora)
    ckpt.load_weights(checkpoint, model)
    model.to(device).eval()
    return Trained(model, config, checkpoint, tokenizer)
