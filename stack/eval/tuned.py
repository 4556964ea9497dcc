"""A fine-tuned model as the evaluation commands take it, in any of the forms fine-tuning leaves.

- a run or checkpoint: a full fine-tune, a LoRA run (base and adapters in one checkpoint), or
  the output of `stack lora merge` — `load_trained` reads them all;
- an adapter directory (adapter.json beside adapter.safetensors): put onto a fresh load of the
  base it was trained on, strictly, refused unless the base is the one its manifest names
  (GATE-LORA-005, judged in the command's record).
"""

from __future__ import annotations

from pathlib import Path

from stack.artifacts import identify
from stack.model import adapters, lora
from stack.train.trained import Trained, load_trained


def load_tuned(path: Path, base: Path, device: str) -> Trained:
    """The fine-tuned model at `path`; an adapter directory is loaded onto the model at `base`."""
    if identify(path).kind.name != "adapter":
        return load_trained(path, device)
    tuned = load_trained(base, "cpu")
    adapters.load_adapter(tuned.model, Path(path), lora.base_sha256(tuned.model))
    tuned.model.to(device).eval()
    return tuned
