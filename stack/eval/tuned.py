"""A fine-tuned model as the evaluation commands take it, in any of the forms fine-tuning leaves.

- a run or checkpoint: a full fine-tune, a LoRA run (base and adapters in one checkpoint), or
  the output of `stack lora merge` — `load_trained` reads them all;
- an adapter directory (adapter.json beside adapter.safetensors): put onto a fresh load of the
  base it was trained on, strictly, refused unless the base is the one its manifest names
  (GATE-LORA-005, judged in the command's record).

A run or checkpoint is refused when its records show it was made from another model than BASE:
following the lineage of its record back through each parent's record, every branch ends at a
model trained from scratch and none read BASE's weights. Where a branch ends at a model without
a record (made elsewhere), nothing says where it came from, and the model is taken as given.
"""

from __future__ import annotations

from pathlib import Path

from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, EvidenceRecord, read_evidence
from stack.artifacts import identify
from stack.model import adapters, lora
from stack.model.checks import check_architecture
from stack.model.reference import Adapters
from stack.train import checkpoint as ckpt
from stack.train.lineage import WEIGHTS_FILE, parent
from stack.train.trained import Trained, load_measured, load_trained


def load_tuned(path: Path, base: Path, device: str) -> Trained:
    """The fine-tuned model at `path`; an adapter directory is loaded onto the model at `base`.
    Either is then held to the architecture its config names, an adapter's terms at the scale its
    manifest states (GATE-MODEL-003, as `load_measured`): the commands that take it score its
    forward, which a module computing an option wrongly would move unseen."""
    if identify(path).kind.name != "adapter":
        problem = descent_problem(Path(path), Path(base))
        if problem is not None:
            raise BadInput(problem)
        return load_measured(path, device)
    tuned = load_trained(base, "cpu")
    manifest = adapters.load_adapter(tuned.model, Path(path), lora.base_sha256(tuned.model))
    stated = Adapters(int(manifest["r"]), float(manifest["alpha"]), bool(manifest["rslora"]))
    check_architecture(tuned.model, adapters=stated)
    tuned.model.to(device).eval()
    return tuned


def _record(model_dir: Path) -> EvidenceRecord | None:
    """The record of the run or output that wrote the model at `model_dir` (a run, or a
    checkpoint inside one), or None when there is none to read."""
    owner = model_dir.parent.parent if model_dir.parent.name == ckpt.CKPT_DIR else model_dir
    try:
        return read_evidence(owner / EVIDENCE_FILE)
    except (BadInput, OSError, ValueError):
        return None


def descent_problem(tuned: Path, base: Path) -> str | None:
    """Why the model at `tuned` is not one made from `base`, by the records (module docstring); None
    when it is, or when a record is missing on the way (then nothing can be told)."""
    wanted = parent(base, "base").checkpoint_sha256
    if parent(tuned, "tuned").checkpoint_sha256 == wanted:
        return None
    seen: set[Path] = set()
    read: set[str] = set()
    pending = [tuned]
    while pending:
        here = pending.pop().resolve()
        if here in seen:
            continue
        seen.add(here)
        record = _record(here)
        if record is None:
            return None  # a model made elsewhere on the way: its origin is unknown
        parents = record.lineage.parents if record.lineage is not None else []
        if any(ref.checkpoint_sha256 == wanted for ref in parents):
            return None
        read |= {ref.checkpoint_sha256 for ref in parents}
        pending += [Path(ref.path) for ref in parents if ref.path is not None]
    earlier = _earlier_checkpoint(base, read)
    if earlier is not None:
        return (
            f"{tuned} was tuned from {base} as it was at {earlier.name}, but {base} has trained on since "
            f"(its newest checkpoint's weights are {wanted[:12]}): give --base {earlier}"
        )
    return (
        f"{tuned} was not made from {base}: its records' lineage never reads that model's weights "
        f"({wanted[:12]}); give as the base the model it was tuned from"
    )


def _earlier_checkpoint(base: Path, read: set[str]) -> Path | None:
    """The checkpoint of run `base` whose weights the lineage read (`read`: their sha256), when the
    run has trained on since the model was tuned from it and that checkpoint is still on disk."""
    for checkpoint in sorted((Path(base) / ckpt.CKPT_DIR).glob("step-*"), reverse=True):
        try:
            sha = ckpt.read_manifest(checkpoint)["files"][WEIGHTS_FILE]["sha256"]
        except (BadInput, OSError, KeyError, TypeError, ValueError):
            continue
        if sha in read:
            return checkpoint
    return None
