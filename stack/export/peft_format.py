"""LoRA adapters in peft's format, both ways: adapter_config.json + adapter_model.safetensors.

peft names an adapter tensor `base_model.model.<HF module>.lora_A.weight` (and `.lora_B.weight`),
the HF module being the Hugging Face export's name for the projection (stack.model.names:
`model.layers.0.self_attn.q_proj` for the stack's `layers.0.attn.q`), so the adapter loads onto
the export of its base. The tensors are the stack's own, unchanged: A is r × in and B out × r in
both libraries. The settings are the same numbers under peft's names: `r`, `lora_alpha`,
`lora_dropout`, `use_rslora` (the scale is alpha / r, or alpha / √r, in both), `target_modules`.

What the stack's adapters cannot be is refused on the way in, in one line naming every reason:
another adapter type than LoRA, DoRA, biases trained with the adapter, modules saved whole
(`modules_to_save`), a rank or alpha that differs by module, a Conv1D layout (`fan_in_fan_out`),
adapters on embeddings, or a tensor under a name the table does not hold. peft itself only warns
when an adapter's keys miss the model; here an unknown name is bad input, and GATE-LORA-005
judges the load of what is known.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from contracts.errors import BadInput
from stack.artifacts import PEFT_CONFIG, PEFT_WEIGHTS
from stack.model import names
from stack.model.adapters import settings_of
from stack.model.gpt import GPT
from stack.model.lora import ADAPTER_KEYS, adapter_state
from stack.outputs.tensor_files import save_tensors

MODEL_SITES = {m.site for m in names.MODEL}
# Sites in the order a forward pass meets them within a block (the model's head last).
ORDER = {m.site: i for i, m in enumerate((*names.BLOCK, *names.MODEL))}
CONFIG, WEIGHTS = PEFT_CONFIG, PEFT_WEIGHTS  # the files a peft adapter directory is (stack.artifacts)
PREFIX = "base_model.model."
KEY = re.compile(rf"{re.escape(PREFIX)}(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight")
# Settings of peft's LoraConfig that the stack's adapters have no counterpart for: each must be
# unset (None, false, empty) for an adapter to be read.
UNSUPPORTED = {
    "use_dora": "DoRA (use_dora)",
    "modules_to_save": "modules saved whole (modules_to_save)",
    "rank_pattern": "a rank per module (rank_pattern)",
    "alpha_pattern": "an alpha per module (alpha_pattern)",
    "fan_in_fan_out": "a Conv1D layout (fan_in_fan_out)",
    "lora_bias": "a bias trained with the adapter (lora_bias)",
    "layer_replication": "replicated layers (layer_replication)",
    "target_parameters": "adapters on parameters (target_parameters)",
    "trainable_token_indices": "trained token rows (trainable_token_indices)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "use_qalora": "QA-LoRA (use_qalora)",
}


def _forward(site: str) -> tuple[int, int]:
    """A site's place in the forward pass: its layer (the head after every layer), then its matrix."""
    parts = site.split(".")
    layer = int(parts[1]) if len(parts) == 3 else 1 << 30
    return layer, ORDER[parts[-1]]


@dataclass(frozen=True)
class PeftAdapter:
    """A peft adapter read into the stack's terms: settings, `<module path>.lora_A|B` tensors, and the
    trace site of every adapted module."""

    r: int
    alpha: float
    dropout: float
    rslora: bool
    sites: tuple[str, ...]
    tensors: dict[str, torch.Tensor]
    config: dict[str, Any]

    def targets(self, n_layers: int) -> str:
        """`lora.targets` for these sites in a model of `n_layers` blocks: the short names (`q,v`) when
        every block has the same adapted projections, else every site by its layer (`layers.1.q`)."""
        shorts = sorted({site.rsplit(".", 1)[-1] for site in self.sites}, key=ORDER.__getitem__)
        blocks = [short for short in shorts if short not in MODEL_SITES]
        every = {f"layers.{i}.{short}" for i in range(n_layers) for short in blocks}
        every |= {short for short in shorts if short in MODEL_SITES}
        return ",".join(shorts) if every == set(self.sites) else ",".join(sorted(self.sites, key=_forward))


def peft_key(path: str, part: str) -> str:
    """peft's key of one adapter tensor: `layers.0.attn.q`, `lora_A` → `base_model.model.model.layers.0
    .self_attn.q_proj.lora_A.weight`."""
    hf = names.hf_module(path)
    if hf is None:
        raise BadInput(f"{path} has no Hugging Face name, so its adapter cannot be written in peft's format")
    return f"{PREFIX}{hf}.{part}.weight"


def target_modules(modules: list[str], n_layers: int) -> list[str]:
    """peft's target_modules for the adapted `modules`: the short HF names (`q_proj`) when every layer
    has the same adapted projections, else every module's full HF name."""
    full = [peft_key(path, "lora_A").removeprefix(PREFIX).removesuffix(".lora_A.weight") for path in modules]
    shorts = sorted({name.rsplit(".", 1)[-1] for name in full})
    by_short = {
        f"{names.HF_LAYERS}.{i}.{m.hf}" for i in range(n_layers) for m in names.BLOCK if m.hf_short in shorts
    } | {m.hf for m in names.MODEL if m.hf_short in shorts}
    return shorts if by_short == set(full) else sorted(full)


def peft_config(model: GPT, base: str | None) -> dict[str, Any]:
    """adapter_config.json of the model's adapters; `base` is base_model_name_or_path (the HF base)."""
    settings = settings_of(model)
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": settings["r"],
        "lora_alpha": settings["alpha"],
        "lora_dropout": settings["dropout"],
        "use_rslora": settings["rslora"],
        "target_modules": target_modules(settings["modules"], model.config.n_layers),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_dora": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "inference_mode": True,
    }


def peft_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """The model's adapter tensors under peft's keys, contiguous on the host (safetensors-ready)."""
    tensors = {}
    for key, tensor in adapter_state(model).items():
        path, part = key.rsplit(".", 1)
        tensors[peft_key(path, part)] = tensor.detach().to("cpu").contiguous().clone()
    return tensors


def write_peft(directory: Path, model: GPT, base: str | None) -> list[Path]:
    """adapter_config.json and adapter_model.safetensors of the model's adapters into `directory`."""
    directory = Path(directory)
    config, weights = directory / CONFIG, directory / WEIGHTS
    config.write_text(json.dumps(peft_config(model, base), indent=1) + "\n", encoding="utf-8")
    save_tensors(peft_tensors(model), weights, metadata={"format": "pt"})
    return [config, weights]


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{directory} holds no {CONFIG}: it is not a peft adapter directory") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path} is not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise BadInput(f"{path} is not a JSON object")
    return config


def _refusals(config: dict[str, Any]) -> list[str]:
    """Every setting of a peft config the stack's adapters cannot reproduce."""
    problems = []
    if config.get("peft_type") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')!r} (only LORA)")
    problems += [what for key, what in UNSUPPORTED.items() if config.get(key)]
    if config.get("bias", "none") != "none":
        problems.append(f"bias={config['bias']!r} (trained biases)")
    for key, kind in (("r", int), ("lora_alpha", (int, float)), ("lora_dropout", (int, float))):
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            problems.append(f"{key}={config.get(key)!r} (a number is needed)")
    return problems


def _read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    path = directory / WEIGHTS
    if not path.is_file():
        raise BadInput(f"{directory} holds no {WEIGHTS}; a peft adapter directory has both files")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise BadInput(f"{path} is not a safetensors file ({exc})") from None


def read_peft(directory: Path) -> PeftAdapter:
    """A peft LoRA adapter directory in the stack's terms; everything it cannot be is refused."""
    directory = Path(directory)
    config = _read_config(directory)
    problems = _refusals(config)
    if problems:
        raise BadInput(
            f"{directory / CONFIG} asks for {'; '.join(problems)}, which the stack's LoRA does not "
            "compute: export the adapter without them"
        )
    tensors, unknown, modules = {}, [], []
    for key, tensor in _read_tensors(directory).items():
        match = KEY.fullmatch(key)
        path = names.stack_module(match["module"]) if match else None
        if match is None or path is None:
            unknown.append(key)
            continue
        tensors[f"{path}.{match['part']}"] = tensor
        modules.append(path)
    if unknown:
        raise BadInput(
            f"{directory / WEIGHTS} holds {len(unknown)} tensor(s) under names that are not LoRA A/B of a "
            f"Llama projection ({', '.join(sorted(unknown)[:3])}); only q/k/v/o_proj, gate/up/down_proj "
            "and lm_head adapters are read"
        )
    if not tensors:
        raise BadInput(f"{directory / WEIGHTS} holds no adapter tensor")
    wanted = (f"{path}.{part}" for path in dict.fromkeys(modules) for part in ADAPTER_KEYS)
    lacking = [key for key in wanted if key not in tensors]
    if lacking:
        raise BadInput(f"{directory / WEIGHTS} lacks {', '.join(lacking)}: a module needs lora_A and lora_B")
    sites = [str(names.site_of(path)) for path in dict.fromkeys(modules)]
    return PeftAdapter(
        r=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        dropout=float(config["lora_dropout"]),
        rslora=bool(config.get("use_rslora", False)),
        sites=tuple(sites),
        tensors=tensors,
        config=config,
    )
