"""A training run with `[lora]`, or one that starts from a LoRA run: adapters applied, merged or
continued before the optimizer exists, and judged when the run ends.

At set-up (`attach`, called by the Trainer right after it builds the model, so the optimizer,
DDP and torch.compile all see the adapted model): the adapters are applied with the run's seed,
every base parameter is frozen, and GATE-LORA-001 judges that the adapted model computes its
base's logits exactly; the Trainer then holds the adapted model to GATE-MODEL-003, whose
reference adds each adapter's term at the scale the run's settings name (`adapter_settings`).
`attach` returns the selection (the matrices adapted, and every other one with the reason it
carries none), which `stack train` prints and records. A base loaded
afterwards (`--init-from`) goes in through `stack.model.lora.loading_base`, which records it as
the base the adapters belong to.

`--init-from` a LoRA run (its checkpoint holds base and adapters; so do `stack dpo` and `stack
distill` given one) is the usual chain "SFT with LoRA, then DPO". `start_weights` decides what
the new run starts from, and says so in one line:
- merged: the source's adapters are merged into its base in memory (GATE-LORA-002 and -006
  judge the merge, as `stack lora merge` does) and the run starts from the merged model; with a
  `[lora]` section of its own, fresh adapters train on top of it;
- continued, when the run sets `lora.continue_adapter = true`: the source's base stays the base
  and its adapter, with the same r, alpha, rslora and targets, trains on.
Either way the adapter's sha256 (`lora.adapter_sha256`) is recorded with the run's start. Where
neither applies (continuing a source that has no adapter, or one of other settings) the refusal
names `stack lora merge`.

At the end (`finish`, called by `stack train` after the last checkpoint): GATE-LORA-004 judges
that the base did not move and every B trained, and the adapter is written beside the
checkpoints as RUN_DIR/adapter/adapter.safetensors + adapter.json (stack.model.adapters), from
the final weights. Checkpoints hold base and adapters together, so a resume needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput
from stack.artifacts import ADAPTER_DIR
from stack.model import lora
from stack.model.adapters import save_adapter
from stack.model.gpt import GPT
from stack.model.lora import apply_lora, base_sha256, has_lora, lora_selection
from stack.model.lora_checks import (
    check_identity,
    check_trained,
    checked_merge,
    identity_measured,
    trained_measured,
)
from stack.model.reference import Adapters
from stack.model.targets import Selection
from stack.train import checkpoint as ckpt
from stack.train.config import LoraSection, RunConfig


def attach(model: GPT, config: RunConfig, sharded: bool) -> Selection | None:
    """Apply the run's adapters to `model` under GATE-LORA-001; None when the config has no [lora]."""
    section: LoraSection | None = config.lora
    if section is None:
        return None
    if sharded:
        raise BadInput("[lora] does not run under train.parallel=fsdp; use ddp (the default)")
    selection = lora_selection(model, section.targets)
    generator = torch.Generator().manual_seed(config.train.seed)
    apply_lora(
        model, section.targets, section.r, section.alpha, section.dropout, section.rslora, generator=generator
    )
    check_identity(identity_measured(model))
    return selection


def adapter_settings(config: RunConfig) -> Adapters | None:
    """The run's LoRA settings as GATE-MODEL-003's reference reads them; None without [lora]."""
    section = config.lora
    return None if section is None else Adapters(section.r, section.alpha, section.rslora)


def adapter_parameters(model: torch.nn.Module) -> set[int]:
    """The ids of every adapter's A and B among the model's parameters (the optimizer's LoRA group)."""
    return {id(getattr(wrapper, key)) for _, wrapper in lora.adapters(model) for key in lora.ADAPTER_KEYS}


def finish(model: GPT, run_dir: Path, config: RunConfig) -> Path | None:
    """Judge the trained adapters (GATE-LORA-004) and write RUN_DIR/adapter; None without [lora]."""
    if config.lora is None or not has_lora(model):
        return None
    check_trained(trained_measured(model))
    return save_adapter(model, Path(run_dir) / ADAPTER_DIR, base_sha256(model), config.lora.targets)


@dataclass
class StartWeights:
    """What a run starts from: a checkpoint's weights as they are, its LoRA run merged in memory
    (`merged` holds the plain state), or its adapter continued; `note` is what the record keeps,
    `said` the line the command prints."""

    checkpoint: ckpt.Checkpoint
    mode: str  # "plain", "merged" or "continued"
    merged: dict[str, torch.Tensor] | None = None
    note: dict[str, Any] | None = None
    said: str | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors this start puts into the model, read apart from it (GATE-TRAIN-008's check
        start): the merged state, else the checkpoint's model file as saved (a continued adapter's
        base and adapter together)."""
        return self.merged if self.merged is not None else ckpt.saved_weights(self.checkpoint.path)

    def load(self, model: torch.nn.Module) -> None:
        """Put the start into `model` (the run's model, or a plain twin of it), strictly."""
        if self.mode == "continued":  # base and adapter under the same keys as the source's
            ckpt.load_weights(self.checkpoint, model)
            return
        with lora.loading_base(model):  # the base's keys; with [lora] it becomes the adapters' base
            if self.merged is None:
                ckpt.load_weights(self.checkpoint, model)
            else:
                model.load_state_dict(self.merged, strict=True)


def _source_lora(checkpoint: ckpt.Checkpoint) -> LoraSection | None:
    section = checkpoint.state["config"].get("lora")
    return None if section is None else LoraSection.model_validate(section)


def _source_model(checkpoint: ckpt.Checkpoint, section: LoraSection) -> GPT:
    """The source run's model with its adapters, as its checkpoint holds them (unmerged)."""
    from stack.model.config import ModelConfig

    model = GPT(ModelConfig.from_dict(checkpoint.state["config"]["model"]))
    apply_lora(model, section.targets, section.r, section.alpha, section.dropout, section.rslora)
    ckpt.load_weights(checkpoint, model)
    return model.eval()


def _continue_refusal(checkpoint: ckpt.Checkpoint, source: GPT | None, own: LoraSection) -> str | None:
    """Why the source's adapter (on `source`, None when it has none) cannot be trained on by this
    run's [lora], or None. Targets are compared by the projections they name, not as text."""
    if source is None:
        return (
            f"lora.continue_adapter=true trains --init-from's adapter on, but {checkpoint.path} has none "
            "(its run has no [lora]); drop the key to start fresh adapters"
        )
    wrapper = lora.adapters(source)[0][1]
    modules = [name for name, _ in lora.adapters(source)]
    theirs = {"r": wrapper.r, "alpha": wrapper.alpha, "rslora": wrapper.rslora}
    differing = [
        f"lora.{key} ({value!r} -> {getattr(own, key)!r})"
        for key, value in theirs.items()
        if value != getattr(own, key)
    ]
    with lora.without_adapters(source):
        if lora.target_modules(source, own.targets) != modules:
            differing.append(f"lora.targets ({', '.join(modules)} -> {own.targets!r})")
    if differing:
        return (
            f"lora.continue_adapter=true needs the adapter's own settings, and this run changes "
            f"{', '.join(differing)}: drop those keys, or merge the adapter first (stack lora merge "
            f"{checkpoint.path} --out MERGED) and start from MERGED"
        )
    return None


def start_weights(checkpoint: ckpt.Checkpoint, config: RunConfig) -> StartWeights:
    """What a run started from `checkpoint` begins with (see the module docstring)."""
    source, own = _source_lora(checkpoint), config.lora
    if own is not None and own.continue_adapter:
        model = None if source is None else _source_model(checkpoint, source)
        refusal = _continue_refusal(checkpoint, model, own)
        if refusal is not None:
            raise BadInput(refusal)
        assert model is not None
        adapter = lora.adapter_sha256(model)
        note = {"lora": "continued", "adapter_sha256": adapter, "base_sha256": base_sha256(model)}
        said = (
            f"--init-from {checkpoint.path} is a LoRA run: its adapter (sha256 {adapter[:12]}) trains on "
            "over the same base"
        )
        return StartWeights(checkpoint, "continued", note=note, said=said)
    if source is None:
        return StartWeights(checkpoint, "plain")
    model = _source_model(checkpoint, source)
    note = {"lora": "merged", "adapter_sha256": lora.adapter_sha256(model), "base_sha256": base_sha256(model)}
    checked_merge(model)  # GATE-LORA-006 and -002, as `stack lora merge` judges them
    lora.fold(model)
    then = "fresh adapters train on the merged model" if own is not None else "the whole model trains"
    said = (
        f"--init-from {checkpoint.path} is a LoRA run: its adapter (sha256 {note['adapter_sha256'][:12]}) "
        f"is merged into its base in memory and {then} (lora.continue_adapter=true trains the adapter on "
        "instead)"
    )
    return StartWeights(checkpoint, "merged", merged=model.state_dict(), note=note, said=said)
