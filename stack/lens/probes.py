"""The tuned lens: per lens layer one affine probe h ↦ h + A·h + b, and the file that keeps it.

A and b start at zero, so an untrained tuned lens *is* the logit lens, bit for bit: A·h is an
exact zero and h + 0 is h (GATE-LENS-001). The probes live in a module of their own, apart
from the model, and the optimizer is built from that module's parameters: the validation doc's
probes were attached to the model where the framework's parameter discovery never saw them.
After training every probe must have moved, or have had nothing to learn (GATE-LENS-002).

A lens file is safetensors: `probes.<i>.weight` (A) and `probes.<i>.bias` (b) per layer, and
metadata naming the format, the layers, d_model and the sha256 of the model's final norm and
unembedding, which a lens must read through unchanged (GATE-LENS-004).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from torch import nn

from contracts.errors import BadInput
from contracts.gates import Outcome, measure
from stack.artifacts import LENS_FORMAT
from stack.model.gpt import GPT
from stack.model.layers import RMSNorm
from stack.outputs.staging import file_beside
from stack.outputs.tensor_files import save_tensors


class TunedLens(nn.Module):
    """One residual affine probe per lens layer; `model_sha256` names the model it reads through."""

    def __init__(self, n_layers: int, d_model: int, model_sha256: str) -> None:
        super().__init__()
        self.model_sha256 = model_sha256
        self.probes = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers))
        # Per probe, how its training went (stack.lens.train.FitWatch): None for a lens not trained here.
        self.fit: list[dict[str, object]] | None = None
        # The rates its optimizer applied and the schedule's, step by step (FitWatch): None likewise.
        self.schedule: dict[str, list[float]] | None = None
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Every probe back to the identity: A = 0, b = 0."""
        for probe in self.probes:
            probe.weight.zero_()
            probe.bias.zero_()

    def forward(self, layer: int, state: torch.Tensor) -> torch.Tensor:
        """Lens layer `layer`'s translation of the residual stream `state`."""
        return state + self.probes[layer](state)

    @property
    def n_layers(self) -> int:
        """How many lens layers (the model's blocks) it has probes for."""
        return len(self.probes)


def model_sha256(model: GPT) -> str:
    """sha256 of what every lens reads through: the final norm's and the unembedding's tensors."""
    digest = hashlib.sha256()
    for prefix, module in (("final_norm", model.final_norm), ("lm_head", model.lm_head)):
        for name, tensor in sorted(module.state_dict().items()):
            data = tensor.detach().to("cpu", torch.float32).contiguous()
            digest.update(f"{prefix}.{name}:{tuple(data.shape)}\0".encode())
            digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def for_model(model: GPT) -> TunedLens:
    """A fresh tuned lens (identity probes) for `model`, on its device."""
    weight = model.lm_head.weight
    lens = TunedLens(len(model.layers), model.config.d_model, model_sha256(model))
    return lens.to(weight.device)


def fit_outcome(model: GPT, lens: TunedLens | None) -> Outcome:
    """GATE-LENS-004: the model has its final norm, and a tuned lens was trained on this model."""
    measured = {
        "final_norm": isinstance(getattr(model, "final_norm", None), RMSNorm),
        "model_sha256": model_sha256(model),
        "lens_model_sha256": None if lens is None else lens.model_sha256,
    }
    return measure("GATE-LENS-004", measured, holds="the lens reads through the model it was trained on")


def health_outcome(lens: TunedLens) -> Outcome:
    """GATE-LENS-002: every probe's parameter norm, and whether it is finite; with how its training
    went when the lens was trained here (optimized, grad_every_step, max_kl: `FitWatch`), and then
    its check schedule (applied_lrs against scheduled_lrs, step by step)."""
    probes = []
    for layer, probe in enumerate(lens.probes):
        params = torch.cat([probe.weight.detach().flatten(), probe.bias.detach().flatten()]).double()
        norm = float(params.norm())
        fit = lens.fit[layer] if lens.fit is not None else {}
        probes.append({**fit, "layer": layer, "norm": norm, "finite": bool(torch.isfinite(params).all())})
    measured = {"probes": probes, **(lens.schedule or {})}
    return measure("GATE-LENS-002", measured, holds="every probe learned or had nothing to learn")


def save_lens(path: Path, lens: TunedLens, extra: dict[str, str]) -> None:
    """Write `lens` as safetensors with its metadata (`extra`: how it was trained), atomically."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in lens.state_dict().items()}
    metadata = {
        **extra,
        "format": LENS_FORMAT,
        "model_sha256": lens.model_sha256,
        "layers": str(lens.n_layers),
        "d_model": str(lens.probes[0].weight.shape[0]),
    }
    with file_beside(path) as tmp:
        save_tensors(tensors, tmp, metadata=metadata)


def lens_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a lens file, or None when `path` is not one."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError):
        return None
    return metadata if metadata.get("format") == LENS_FORMAT else None


def is_lens(path: Path) -> bool:
    """Whether `path` is a tuned-lens file: what `stack lens --train --save --force` may replace."""
    return lens_metadata(path) is not None


def load_lens(path: Path, device: torch.device) -> TunedLens:
    """Read a lens file; a file that is not one, or whose probes do not fit its metadata, is refused."""
    metadata = lens_metadata(path)
    if metadata is None:
        raise BadInput(f"--lens {path} is not a tuned-lens file; train one with `stack lens CKPT --train`")
    try:
        layers, d_model = int(metadata["layers"]), int(metadata["d_model"])
        lens = TunedLens(layers, d_model, metadata["model_sha256"])
        lens.load_state_dict(load_file(str(path)))
    except (KeyError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"--lens {path} is damaged ({first}); train it again") from None
    if not all(math.isfinite(float(t.abs().sum())) for t in lens.state_dict().values()):
        raise BadInput(f"--lens {path} holds NaN or Inf; train it again")
    return lens.to(device).eval()
