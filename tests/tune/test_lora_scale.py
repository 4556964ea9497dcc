"""GATE-LORA-005 check scale: an adapter is loaded at the rank and scale its
own settings give, read off the wrappers the forward multiplies by, not merely with the right keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.errors import GateViolation
from contracts.lora_scale import lora_scale
from stack.model import adapters as adapter_files
from stack.model import lora
from stack.model.adapters import load_adapter, save_adapter
from stack.model.lora import apply_lora, base_sha256
from tests.support.trace_support import tiny_model


def _saved(tmp_path: Path, rslora: bool) -> Path:
    """An adapter of rank 4, alpha 8, with trained-like B, saved from the tiny model of seed 0."""
    model = tiny_model()
    apply_lora(model, "q,v", r=4, alpha=8.0, rslora=rslora, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, wrapper in lora.adapters(model):
            wrapper.lora_B.copy_(torch.randn(wrapper.lora_B.shape, generator=generator) * 0.05)
    directory = tmp_path / "adapter"
    save_adapter(model, directory, base_sha256(model), "q,v")
    return directory


def _applied_without_rslora(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the load builds its wrappers without the manifest's rsLoRA (at alpha / r)."""

    def plain(model: Any, targets: str, r: int, alpha: float, dropout: float, _rslora: bool) -> Any:
        return apply_lora(model, targets, r, alpha, dropout, False)

    monkeypatch.setattr(adapter_files, "apply_lora", plain)


@pytest.mark.gate("GATE-LORA-005")
def test_an_rslora_adapter_loaded_at_alpha_over_r_fires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _saved(tmp_path, rslora=True)
    _applied_without_rslora(monkeypatch)
    model = tiny_model()
    wanted = lora_scale(4, 8.0, True)
    with pytest.raises(GateViolation, match=rf"GATE-LORA-005.*rslora True: scale {wanted:.6g}.*scale 2\b"):
        load_adapter(model, directory, base_sha256(model))


@pytest.mark.gate("GATE-LORA-005")
def test_a_wrapper_one_rank_off_fires(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank other than the stated one scales by another alpha / r even where the shapes were
    never compared (the wrapper's own r, which its scale came from)."""
    directory = _saved(tmp_path, rslora=False)
    model = tiny_model()
    original = adapter_files.load_measured

    def one_off(*args: Any) -> dict[str, Any]:
        measured = original(*args)
        name = next(iter(measured["wrapper_scales"]))
        measured["wrapper_scales"][name] = [3, 8.0 / 3]
        return measured

    monkeypatch.setattr(adapter_files, "load_measured", one_off)
    with pytest.raises(GateViolation, match=r"GATE-LORA-005.*1 adapter wrapper\(s\).*rank 3"):
        load_adapter(model, directory, base_sha256(model))


@pytest.mark.holds("GATE-LORA-005")
@pytest.mark.parametrize("rslora", [False, True])
def test_an_adapter_loads_at_its_own_scale(tmp_path: Path, rslora: bool) -> None:
    directory = _saved(tmp_path, rslora)
    model = tiny_model()
    load_adapter(model, directory, base_sha256(model))
    scales = {wrapper.scale for _, wrapper in lora.adapters(model)}
    assert scales == {lora_scale(4, 8.0, rslora)}


@pytest.mark.parametrize(("r", "alpha", "rslora", "expected"), [(4, 8.0, False, 2.0), (4, 8.0, True, 4.0)])
def test_the_scale_is_alpha_over_r_or_over_its_root(
    r: int, alpha: float, rslora: bool, expected: float
) -> None:
    assert lora_scale(r, alpha, rslora) == expected
