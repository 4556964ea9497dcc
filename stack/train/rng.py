"""Random-number-generator states of python, numpy, torch and CUDA, in JSON-safe encodings.

Saved with every checkpoint so that a resumed run draws the same numbers the uninterrupted run
would have drawn. The torch version is stored beside them: a state made by another version is
restored with a warning, since its layout is not promised to be stable.
"""

from __future__ import annotations

import base64
import random
import warnings
from typing import Any

import numpy as np
import torch


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode()


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture() -> dict[str, Any]:
    """Every RNG state of this process as plain data."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch_version": torch.__version__,
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": pos, "has_gauss": has_gauss, "cached": cached},
        "torch": _b64(torch.get_rng_state()),
        "cuda": [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def restore(state: dict[str, Any]) -> None:
    """Put every RNG back where `capture` found it."""
    if state["torch_version"] != torch.__version__:
        warnings.warn(
            f"RNG state was saved by torch {state['torch_version']}, restoring under {torch.__version__}",
            stacklevel=2,
        )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    keys = np.asarray(npy["keys"], dtype=np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(_unb64(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])
