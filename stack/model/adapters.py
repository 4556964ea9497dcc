"""LoRA adapters on disk: DIR/adapter.safetensors with DIR/adapter.json, loaded strictly onto their base.

    adapter.safetensors   `<module path>.lora_A` (r × in) and `.lora_B` (out × r) of every adapter
    adapter.json          format, the base's sha256 (`lora.base_sha256`: every base tensor by key),
                          targets, r, alpha, dropout, rslora, the module paths, and the sha256 of
                          adapter.safetensors

An adapter only means something on the base it was trained on, so loading compares the base
sha256 the manifest records with the base the caller holds, and refuses any missing, unexpected or
reshaped tensor (GATE-LORA-005): peft only warns on a missing key, and an adapter saved under
other module names then loads as nothing.

The directory is built aside and swapped into place (stack.outputs.rundir). An existing DIR is
replaced only when it holds an earlier adapter and nothing else, each file as adapter.json
records it, so a user's files are never overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from contracts.errors import BadInput
from contracts.evidence import atomic_write_bytes, sha256_file
from contracts.gates import gate_require, measure
from stack.artifacts import ADAPTER_MANIFEST, ADAPTER_WEIGHTS
from stack.model import lora
from stack.model.gpt import GPT
from stack.model.lora import adapter_state, adapters, apply_lora
from stack.outputs import rundir
from stack.outputs.ownership import Earlier
from stack.outputs.tensor_files import save_tensors

WEIGHTS, MANIFEST = ADAPTER_WEIGHTS, ADAPTER_MANIFEST
FORMAT = "gatestack-lora"
FORMAT_VERSION = 1


def settings_of(model: GPT) -> dict[str, Any]:
    """r, alpha, dropout, rslora and targets of the model's adapters (one setting for all of them)."""
    found = adapters(model)
    if not found:
        raise BadInput("the model carries no LoRA adapter to save")
    wrapper = found[0][1]
    return {
        "r": wrapper.r,
        "alpha": wrapper.alpha,
        "dropout": wrapper.lora_dropout.p,
        "rslora": wrapper.rslora,
        "modules": [name for name, _ in found],
    }


def earlier_adapter(directory: Path) -> Earlier:
    """What an earlier adapter in `directory` vouches for (stack.outputs.ownership): its adapter.json
    and the weights file that hashes; nothing when it holds no readable manifest."""
    path = Path(directory) / MANIFEST
    try:
        weights_sha256 = str(json.loads(path.read_text(encoding="utf-8"))["weights_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return Earlier(MANIFEST)
    return Earlier(MANIFEST, {MANIFEST: frozenset({sha256_file(path)}), WEIGHTS: frozenset({weights_sha256})})


def save_adapter(
    model: GPT,
    directory: Path,
    base_sha256: str,
    targets: str | None = None,
    writer: str = "stack train",
    replace: bool = True,
) -> Path:
    """Write the model's adapters and their manifest as `directory`; returns the manifest's path.

    `base_sha256` is `stack.model.lora.base_sha256` of the base the adapters belong to; `targets` the site
    globs they were applied with (default: their module paths, which name the same projections).
    The directory is built aside and swapped in (stack.outputs.rundir); with `replace` it may take
    the place of an earlier adapter that its adapter.json vouches for, and of nothing else. `writer`
    names the command in a refusal.
    """
    settings = settings_of(model)
    with rundir.opened(
        Path(directory), rundir.Writer(writer, earlier=earlier_adapter), force=replace
    ) as opened:
        tensors = {key: t.to("cpu").contiguous() for key, t in adapter_state(model).items()}
        save_tensors(tensors, opened.where / WEIGHTS)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "base_sha256": base_sha256,
            "targets": targets if targets is not None else ",".join(settings["modules"]),
            **settings,
            "tensors": {key: list(t.shape) for key, t in sorted(tensors.items())},
            "weights_sha256": sha256_file(opened.where / WEIGHTS),
        }
        atomic_write_bytes(opened.where / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
        opened.commit()
    return Path(directory) / MANIFEST


def read_manifest(directory: Path) -> dict[str, Any]:
    """adapter.json, checked for its format and for the weights file it hashes."""
    directory = Path(directory)
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{directory} holds no {MANIFEST}: it is not an adapter directory") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path} is not readable JSON ({exc}); restore the adapter") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadInput(f"{path} is not a {FORMAT} manifest; restore the adapter")
    needed = ("base_sha256", "targets", "r", "alpha", "dropout", "rslora", "weights_sha256")
    lacking = [key for key in needed if key not in manifest]
    if lacking:
        raise BadInput(f"{path} lacks {', '.join(lacking)}; restore the adapter")
    weights = directory / WEIGHTS
    if not weights.is_file() or sha256_file(weights) != manifest["weights_sha256"]:
        raise BadInput(f"{weights} is missing or is not the file {MANIFEST} hashes; restore the adapter")
    return manifest


def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(Path(directory) / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise BadInput(f"{Path(directory) / WEIGHTS} is not a safetensors file ({exc})") from None


def load_measured(
    model: GPT, tensors: dict[str, torch.Tensor], recorded_base: str, base: str, stated: dict[str, Any]
) -> dict[str, Any]:
    """GATE-LORA-005's values: the file's tensors against the model's adapters, the two bases, and
    each wrapper's rank and the scale its forward multiplies by, beside the settings the adapter
    states (`stated`: r, alpha, rslora, from its manifest or peft config)."""
    expected = {key: tuple(t.shape) for key, t in adapter_state(model).items()}
    given = {key: tuple(t.shape) for key, t in tensors.items()}
    return {
        "missing": sorted(expected.keys() - given.keys()),
        "unexpected": sorted(given.keys() - expected.keys()),
        "mismatched": sorted(k for k in expected.keys() & given.keys() if expected[k] != given[k]),
        "adapter_base_sha256": recorded_base,
        "base_sha256": base,
        "settings_stated": {
            "r": int(stated["r"]),
            "alpha": float(stated["alpha"]),
            "rslora": bool(stated["rslora"]),
        },
        "wrapper_scales": {name: [wrapper.r, wrapper.scale] for name, wrapper in adapters(model)},
    }


@gate_require("GATE-LORA-005", lambda measured: measure("GATE-LORA-005", measured))
def check_load(measured: dict[str, Any]) -> None:
    """Judge an adapter load: every key matched both ways, every shape the same, the right base,
    every wrapper at the rank and scale the adapter's settings give."""


@torch.no_grad()
def load_adapter(model: GPT, directory: Path, base_sha256: str) -> dict[str, Any]:
    """Put the adapter of `directory` onto `model`, strictly (GATE-LORA-005); returns its manifest.

    `base_sha256` is the sha256 of the base the caller holds (`lora.base_sha256(model)`); the
    model must hash to it, and the manifest must name it. A model without adapters gets them
    applied with the manifest's settings first. A refused load leaves the model unusable: discard it.
    """
    manifest = read_manifest(Path(directory))
    own = lora.base_sha256(model)
    if own != base_sha256:
        raise BadInput(f"the model's base sha256 is {own[:12]}…, not the {base_sha256[:12]}… given")
    tensors = _read_tensors(Path(directory))
    if not adapters(model):
        apply_lora(
            model,
            str(manifest["targets"]),
            int(manifest["r"]),
            float(manifest["alpha"]),
            float(manifest["dropout"]),
            bool(manifest["rslora"]),
        )
    check_load(load_measured(model, tensors, str(manifest["base_sha256"]), base_sha256, manifest))
    for key, target in adapter_state(model).items():
        target.copy_(tensors[key])
    return manifest
