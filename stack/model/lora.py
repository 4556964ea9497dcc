"""LoRA: low-rank adapters on chosen linear projections, merged into the weights and taken out again.

A wrapped projection computes W·x + b + s·B·A·dropout(x), s = alpha / r (rsLoRA: alpha / √r),
with A (r × in) drawn like torch's own Linear init and B (out × r) zero, so at init the adapter
adds exactly zero and the model computes what its base does, bit for bit (GATE-LORA-001). The
base weight W and bias b stay frozen; only A and B train.

The wrapper takes the place of the projection under the same name and keeps its `weight` and
`bias` under the same state-dict keys, so a trace hook on `layers.0.attn.q` still sees what the
projection outputs (the adapter's term included) and a base checkpoint's keys still name the base.
Its own keys are `lora_A`, `lora_B` and `lora_base_sha256`: the sha256 of the base weight it was
attached to, as 32 bytes, saved with every checkpoint so a resumed run still knows the base it
must not have moved (GATE-LORA-004).

`merge` folds s·B·A into W (the sum taken in float64, stored in W's dtype) and keeps a copy of
the base W, so `unmerge` restores it bit for bit, checked by the sha256 (GATE-LORA-003): W + Δ − Δ
in floating point is not W. A merged wrapper refuses a second merge rather than add Δ twice.
`fold` replaces merged wrappers by plain nn.Linear modules: the model is then an ordinary GPT of
its config, which every checkpoint reader takes.

Targets are named as `stack laser` names matrices (stack.model.targets): every 2-D weight of the
model by the trace site it feeds (`q`, `k`, `v`, `attn_out`, `ffn_gate`, `ffn_up`, `ffn_out`, `q2`,
`k2`, `router`, `moe.router`, `logits`) or, for an expert's projections, its module path
(`moe.expert0.up`), or by the Hugging Face names of the dense model's projections (`q_proj`,
`k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`, `lm_head`; stack.model.names),
globs on the full or short name, comma-separated; `'*'` is every projection, experts and routers
included. `embed` is an embedding, not a projection, and `logits` of a model with tied embeddings
is refused: its weight *is* the input embedding, and a delta merged into it would change what
every token embeds to (GATE-LORA-006 checks that no merge does).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from contracts.errors import BadInput
from stack.model.gpt import GPT
from stack.model.targets import Selection, select

ADAPTER_KEYS = ("lora_A", "lora_B")
BASE_HASH_KEY = "lora_base_sha256"


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes (read on the host): equal hashes, equal tensors.

    Any rank hashes, a 0-dim buffer included (mixture of depths' `route_threshold`): the bytes are
    read from the tensor flattened, since a 0-dim tensor cannot be viewed as bytes itself.
    """
    data = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{data.dtype}:{tuple(data.shape)}\0".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def tensor_hashes(model: GPT) -> dict[str, str]:
    """state-dict key → sha256 of the tensor's dtype, shape and bytes (on the host)."""
    return {key: tensor_sha256(tensor) for key, tensor in model.state_dict().items()}


def _digest_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The sha256 of `tensor` as a (32,) uint8 tensor on its device, storable in a state dict."""
    digest = list(bytes.fromhex(tensor_sha256(tensor)))
    return torch.tensor(digest, dtype=torch.uint8, device=tensor.device)


class LoRALinear(nn.Module):
    """A linear projection with a low-rank adapter; `weight` and `bias` are the base's own tensors."""

    def __init__(
        self,
        base: nn.Linear,
        r: int,
        alpha: float,
        dropout: float,
        rslora: bool,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.r, self.alpha, self.rslora = r, alpha, rslora
        self.scale = alpha / math.sqrt(r) if rslora else alpha / r
        device, dtype = base.weight.device, base.weight.dtype
        # torch's Linear init for A (kaiming uniform, a = √5), drawn on the host so a CPU generator
        # seeds it on any device; B = 0 makes the adapter add nothing.
        a = nn.init.kaiming_uniform_(
            torch.empty(r, self.in_features, dtype=dtype), a=math.sqrt(5), generator=generator
        )
        self.lora_A = nn.Parameter(a.to(device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=device, dtype=dtype))
        self.lora_dropout = nn.Dropout(dropout)
        self.register_buffer(BASE_HASH_KEY, _digest_bytes(self.weight))
        self.merges = 0  # merge() calls since the last unmerge: 0 or 1, a second one is refused
        self._base_copy: torch.Tensor | None = None
        # Rows the adapter's term was computed for with autograd on (training): an expert that no
        # token was routed to has none, and its B rightly stays zero (GATE-LORA-004 reads this).
        # A tensor the forward adds to, not a Python int: torch.compile guards on an int
        # attribute's value, so a count kept in one would have the forward compiled at every step.
        self.fed = torch.zeros((), dtype=torch.int64, device=device)

    @property
    def merged(self) -> bool:
        """Whether Δ = s·B·A is folded into `weight` (the adapter branch is then skipped)."""
        return self.merges > 0

    def delta(self) -> torch.Tensor:
        """Δ = s·B·A in float64, the weight's shape."""
        return self.scale * (self.lora_B.detach().double() @ self.lora_A.detach().double())

    def base_intact(self) -> bool:
        """Whether `weight` still hashes to the base it was attached to."""
        recorded = bytes(getattr(self, BASE_HASH_KEY).tolist()).hex()
        return recorded == tensor_sha256(self.weight)

    def stamp_base(self) -> None:
        """Record the current `weight` as the base (after a base checkpoint was loaded into it)."""
        getattr(self, BASE_HASH_KEY).copy_(_digest_bytes(self.weight))

    @torch.no_grad()
    def merge(self) -> None:
        """W ← W + Δ, keeping the base W; refused when Δ is already in W."""
        if self.merged:
            raise BadInput("this LoRA adapter is already merged; unmerge it before merging again")
        if self._base_copy is None:  # the base is what the first merge found
            self._base_copy = self.weight.detach().clone()
        self.weight.copy_((self.weight.double() + self.delta()).to(self.weight.dtype))
        self.merges += 1

    def merge_mismatch(self) -> int:
        """Elements of the merged weight that are not W_base + Δ as `merge` rounds it (0 when Δ went in
        once); exact, so a Δ too small to move W in its dtype is not mistaken for a missing one."""
        if self._base_copy is None:
            return self.weight.numel()
        expected = (self._base_copy.double() + self.delta()).to(self.weight.dtype)
        return int((self.weight.detach() != expected).sum())

    @torch.no_grad()
    def unmerge(self) -> None:
        """W ← the base W kept at merge (bit for bit; subtracting Δ would not be)."""
        if not self.merged or self._base_copy is None:
            raise BadInput("this LoRA adapter is not merged; there is nothing to unmerge")
        self.weight.copy_(self._base_copy)
        self._base_copy = None
        self.merges = 0

    def adapter(self, x: torch.Tensor) -> torch.Tensor | None:
        """The adapter's term s·B·A·dropout(x), added to the base projection; None once merged.
        (stack.model.projection adds it to this projection's slice of a shared product.)"""
        if self.merged:
            return None
        if torch.is_grad_enabled():
            self.fed.add_(x.numel() // self.in_features)
        return self.scale * F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        term = self.adapter(x)
        return y if term is None else y + term

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
            f"alpha={self.alpha:g}, rslora={self.rslora}, merged={self.merged}"
        )


def _linear_like(wrapper: LoRALinear) -> nn.Linear:
    """A plain nn.Linear over the wrapper's own weight and bias (no new storage)."""
    linear = nn.Linear(
        wrapper.in_features, wrapper.out_features, bias=wrapper.bias is not None, device="meta"
    )
    linear.weight = wrapper.weight
    linear.bias = wrapper.bias
    return linear


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def adapters(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """(module path, wrapper) of every LoRA wrapper, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def has_lora(model: nn.Module) -> bool:
    """Whether any projection of the model carries an adapter."""
    return bool(adapters(model))


def _refusal(model: GPT, site: str) -> str | None:
    """Why a matrix cannot carry an adapter, or None when it can."""
    if site == "embed":
        return "LoRA wraps linear projections; 'embed' is an embedding, not a projection"
    if site == "logits" and model.config.tie_embeddings:
        return (
            "LoRA on 'logits' of a model with tied embeddings is refused: lm_head is the input "
            "embedding, and merging a delta into it would change every token's embedding"
        )
    return None


def lora_selection(model: GPT, targets: str) -> Selection:
    """The projections `targets` names (comma-separated globs of stack.model.targets' names),
    and every other matrix of the model with the reason it carries no adapter.

    A name that is exactly a matrix that cannot carry an adapter is refused; a glob passes over
    it, and the selection records why.
    """
    patterns = [p.strip() for p in targets.split(",")]
    if not all(patterns):
        raise BadInput(f"LoRA targets {targets!r} hold an empty name; write e.g. 'q,v' or 'ffn_*'")
    return select(model, patterns, option="lora.targets", refusal=lambda name: _refusal(model, name))


def target_modules(model: GPT, targets: str) -> list[str]:
    """Module paths of the projections `targets` names (`lora_selection`), each once."""
    return [t.keys[-1].removesuffix(".weight") for t in lora_selection(model, targets).targets]


def apply_lora(
    model: GPT,
    targets: str | list[str],
    r: int,
    alpha: float,
    dropout: float = 0.0,
    rslora: bool = False,
    *,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Wrap the projections `targets` names with rank-r adapters and freeze every base parameter.

    Returns the module paths wrapped. The model computes what it did before (B = 0). `targets` is
    a comma-separated string of site globs or a list of them.
    """
    if r < 1:
        raise BadInput(f"LoRA rank r must be at least 1, not {r}")
    if not 0.0 <= dropout < 1.0:
        raise BadInput(f"LoRA dropout must be in [0, 1), not {dropout}")
    if has_lora(model):
        raise BadInput("this model already carries LoRA adapters; apply them once")
    names = target_modules(model, targets if isinstance(targets, str) else ",".join(targets))
    for param in model.parameters():
        param.requires_grad_(False)
    for path in names:
        base = model.get_submodule(path)
        assert isinstance(base, nn.Linear), f"{path} is not a linear projection"
        _set_module(model, path, LoRALinear(base, r, alpha, dropout, rslora, generator))
    return names


def merge(model: nn.Module) -> list[str]:
    """Fold every adapter's Δ into its weight (refused for one already merged); returns the paths."""
    found = adapters(model)
    if not found:
        raise BadInput("the model carries no LoRA adapter to merge")
    for _, wrapper in found:
        wrapper.merge()
    return [name for name, _ in found]


def unmerge(model: nn.Module) -> list[str]:
    """Restore every merged adapter's base weight, bit for bit; returns the paths."""
    found = adapters(model)
    if not found:
        raise BadInput("the model carries no LoRA adapter to unmerge")
    for _, wrapper in found:
        wrapper.unmerge()
    return [name for name, _ in found]


def fold(model: nn.Module) -> list[str]:
    """Replace every merged wrapper by a plain nn.Linear holding the merged weight (no adapter left)."""
    found = adapters(model)
    for path, wrapper in found:
        if not wrapper.merged:
            raise BadInput(f"{path}: merge the adapter before folding it into a plain projection")
        _set_module(model, path, _linear_like(wrapper))
    for param in model.parameters():  # an ordinary model again: every tensor trainable
        param.requires_grad_(True)
    return [name for name, _ in found]


@contextlib.contextmanager
def without_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its wrappers swapped for plain projections over the same tensors: the base."""
    found = adapters(model)
    for path, wrapper in found:
        _set_module(model, path, _linear_like(wrapper))
    try:
        yield model
    finally:
        for path, wrapper in found:
            _set_module(model, path, wrapper)


@contextlib.contextmanager
def loading_base(model: nn.Module) -> Iterator[nn.Module]:
    """`without_adapters`, for loading a base checkpoint strictly (its keys are the base's): what is
    loaded becomes the base each adapter belongs to, its hash stamped when the load succeeded."""
    with without_adapters(model):
        yield model
    for _, wrapper in adapters(model):
        wrapper.stamp_base()


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """`<path>.lora_A` and `<path>.lora_B` of every adapter: what an adapter file holds."""
    return {
        f"{path}.{key}": getattr(wrapper, key).detach()
        for path, wrapper in adapters(model)
        for key in ADAPTER_KEYS
    }


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state without any adapter key: the base's tensors under the base's keys."""
    own = (*ADAPTER_KEYS, BASE_HASH_KEY)
    return {k: v for k, v in model.state_dict().items() if k.rsplit(".", 1)[-1] not in own}


def base_sha256(model: nn.Module) -> str:
    """One sha256 over the base's tensors (key and tensor hash, sorted by key), adapters excluded.

    A plain model and the same model with unmerged adapters hash the same; a merged one is refused,
    since its weights are no longer the base's.
    """
    if any(wrapper.merged for _, wrapper in adapters(model)):
        raise BadInput("the model's adapters are merged: unmerge them to hash the base")
    return state_sha256(base_state(model))


def adapter_sha256(model: nn.Module) -> str:
    """One sha256 over the adapters' A and B (key and tensor hash, sorted by key): which adapter a
    model carries, whatever checkpoint or file it came from."""
    return state_sha256(adapter_state(model))


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """One sha256 over a state's tensors: each key with its tensor's hash (`tensor_sha256`), sorted
    by key. Equal digests, equal states, whatever device the tensors are on."""
    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        digest.update(f"{key}={tensor_sha256(tensor)}\n".encode())
    return digest.hexdigest()
