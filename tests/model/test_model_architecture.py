"""GATE-MODEL-003: the model computes the architecture its config names, and starts as its class names.

The falsifiers plant a bug in one of the model's own modules, the way a slip in stack/model would
put it there, and call the start-up check the training loop calls (or run a real `stack train`);
only the float64 reference of stack/model/reference.py, which runs none of those modules, can
tell. Some bugs act in one form only: a document mask (packed windows), training mode (document
ids dropped), evaluation mode (adapter dropout drawn), an adapter's scale. The `init` check's
falsifiers draw the residual projections at init_std, or move one tensor's spread just beyond
and just inside init_max_z. The threshold falsifiers put a known error on the logits just beyond
and just inside the tolerance.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import GateViolation
from contracts.evidence import Verdict
from contracts.judges import judge
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.model import GPT, ModelConfig
from stack.model import attention as attention_module
from stack.model import gpt as gpt_module
from stack.model import layers as layers_module
from stack.model.attention import DOCUMENT_PATHS
from stack.model.checks import check_architecture
from stack.model.feedforward import SwiGLU
from stack.model.initialisation import check_initialisation
from stack.model.layers import Attention, Block, RMSNorm
from stack.model.lora import LoRALinear, apply_lora
from stack.model.lora import adapters as adapters_of
from stack.model.reference import Adapters
from tests.support.train_support import prepared, smoke_args, smoke_start, train

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

CONFIG = ModelConfig(vocab=61, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96, ctx=48)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level corpus for the falsifiers that run a real `stack train`."""
    return prepared(tmp_path_factory.mktemp("corpus"))


def _violation(model: GPT) -> GateViolation:
    """The GATE-MODEL-003 violation the start-up check raises on `model`, recorded as FAIL."""
    with recording(Ledger()) as ledger, pytest.raises(GateViolation) as caught:
        check_architecture(model)
    assert caught.value.gate_id == "GATE-MODEL-003"
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.FAIL
    return caught.value


def _message(model: GPT, **kwargs: object) -> str:
    """The GATE-MODEL-003 violation's message on `model`, recorded as FAIL."""
    with recording(Ledger()) as ledger, pytest.raises(GateViolation) as caught:
        check_architecture(model, **kwargs)
    assert caught.value.gate_id == "GATE-MODEL-003"
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.FAIL
    return caught.value.message


@settings(max_examples=10)
@given(
    kv_heads=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([8, 16]),
    layers=st.integers(1, 3),
    qkv_bias=st.booleans(),
    tie=st.booleans(),
    theta=st.sampled_from([500.0, 10000.0, 1e6]),
    ctx=st.integers(2, 48),
)
def test_the_model_is_the_architecture_its_config_names(
    kv_heads: int, head_dim: int, layers: int, qkv_bias: bool, tie: bool, theta: float, ctx: int
) -> None:
    """Any dense shape, with biases or without, tied or not, any RoPE base, any probe length."""
    config = ModelConfig(
        vocab=37, d_model=4 * head_dim, n_layers=layers, n_heads=4, n_kv_heads=kv_heads, ffn_hidden=40,
        ctx=ctx, qkv_bias=qkv_bias, tie_embeddings=tie, rope_theta=theta,
    )  # fmt: skip
    with recording(Ledger()) as ledger:
        parity = check_architecture(GPT(config, seed=0))
    assert set(parity.forms) == {"train", "eval", "train packed", "eval packed", "cached"}
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.PASS


@pytest.mark.holds("GATE-MODEL-003")
@pytest.mark.parametrize(
    "options",
    [{"moe_experts": 4}, {"diff_attn": True, "qkv_bias": True}, {"mod_every": 2, "moe_experts": 4}],
)
def test_an_option_is_compared_with_the_written_out_reference(options: dict[str, object]) -> None:
    """Since rev 5 the reference writes out experts, differential attention and depth routing."""
    parity = check_architecture(GPT(CONFIG.model_copy(update=options), seed=0))
    assert parity.outcome().ok
    assert set(parity.forms) == {"train", "eval", "train packed", "eval packed", "cached"}


@pytest.mark.gate("GATE-MODEL-003")
@pytest.mark.parametrize("options", [{"moe_experts": 4}, {"diff_attn": True}, {"mod_every": 2}])
def test_falsifier_a_leaky_document_mask_is_caught_with_an_option(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, object]
) -> None:
    """Each token sees the next one of its example: the packed forms leave the reference's."""
    monkeypatch.setattr(attention_module, "document_mask", _sees_the_next_token)
    message = _message(GPT(CONFIG.model_copy(update=options), seed=0))
    assert "eval packed differs" in message and "reference.py writes out" in message


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_documents_dropped_by_every_attention_are_caught_with_experts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attention of a model with experts ignores the document ids: later documents read the first."""
    real = attention_module.attention
    monkeypatch.setattr(layers_module, "attention", lambda *a, docs=None, **kw: real(*a, **kw))
    message = _message(GPT(CONFIG.model_copy(update={"moe_experts": 4}), seed=0))
    assert "train packed differs" in message and "eval packed differs" in message


def test_a_record_without_its_forms_is_malformed() -> None:
    problems = judge("GATE-MODEL-003", {"checked": True, "forms": {}})
    assert problems and "malformed" in problems[0] and "forms" in problems[0]


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_rope_left_out_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rotation is the identity: the attention check's own reference rotated with the same
    function, so only a reference that writes RoPE out again sees the positions gone."""
    monkeypatch.setattr(layers_module, "apply_rope", lambda x, cos, sin: x)
    message = _violation(GPT(CONFIG, seed=0)).message
    assert all(form in message for form in ("train", "eval", "cached"))


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_rope_turned_the_wrong_way_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's tables rotate by −angle: every position still differs from every other."""
    tables = gpt_module.rope_angles

    def backwards(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = tables(*args)
        return cos, -sin

    monkeypatch.setattr(gpt_module, "rope_angles", backwards)
    _violation(GPT(CONFIG, seed=0))


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_cached_decoding_restarting_positions_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each cached call rotates from position 0: the training forward is right, generation is not."""
    tables = gpt_module.rope_angles
    monkeypatch.setattr(gpt_module, "rope_angles", lambda c, start, n, d, t: tables(c, 0, n, d, t))
    message = _violation(GPT(CONFIG, seed=0)).message
    assert "cached differs" in message and "train differs" not in message


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_a_norm_without_its_gain_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Invisible at initialisation (every gain is 1): the probe draws the gains off 1."""
    monkeypatch.setattr(RMSNorm, "forward", lambda self, x: torch.nn.functional.rms_norm(x, x.shape[-1:]))
    _violation(GPT(CONFIG, seed=0))


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_a_dropped_residual_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    forward = Block.forward

    def without_residual(self: Block, x: torch.Tensor, *args: object) -> torch.Tensor:
        return forward(self, x, *args) - x

    monkeypatch.setattr(Block, "forward", without_residual)
    _violation(GPT(CONFIG, seed=0))


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_swiglu_without_its_silu_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SwiGLU, "forward", lambda self, gate, up: gate * up)
    _violation(GPT(CONFIG, seed=0))


def _allowed() -> float:
    """The tolerance of the clean model's probe: model_atol + model_rtol × max |reference logit|."""
    parity = check_architecture(GPT(CONFIG, seed=0))
    atol, rtol = (load_spec().threshold("GATE-MODEL-003", name) for name in ("model_atol", "model_rtol"))
    return atol + rtol * max(form["ref_absmax"] for form in parity.forms.values())


def _offset_head(model: GPT, offset: float) -> GPT:
    """A head that adds `offset` to the first logit of every call (the twin inherits the hook)."""

    def shifted(module: torch.nn.Module, args: object, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[0, 0, 0] += offset
        return logits

    model.lm_head.register_forward_hook(shifted)
    return model


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_an_error_just_beyond_the_tolerance_is_caught() -> None:
    _violation(_offset_head(GPT(CONFIG, seed=0), 1.1 * _allowed()))


@pytest.mark.holds("GATE-MODEL-003")
def test_an_error_just_inside_the_tolerance_passes() -> None:
    with recording(Ledger()) as ledger:
        check_architecture(_offset_head(GPT(CONFIG, seed=0), 0.9 * _allowed()))
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.PASS


# -- packed windows: the document mask in every mode ---------------------------------------------


def _sees_the_next_token(docs: torch.Tensor) -> torch.Tensor:
    """document_mask with tril(1) for the causal part: each token sees the next one of its document."""
    same = docs[:, :, None] == docs[:, None, :]
    n = docs.shape[1]
    return (same & torch.ones(n, n, dtype=torch.bool, device=docs.device).tril(1)).unsqueeze(1)


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_a_document_mask_seeing_the_next_token_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each token sees the next one of its example (tril(1)): only a packed probe can tell."""
    monkeypatch.setattr(attention_module, "document_mask", _sees_the_next_token)
    message = _message(GPT(CONFIG, seed=0))
    assert "train packed differs" in message and "eval packed differs" in message
    assert "train differs" not in message  # plain windows never build a document mask


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_documents_dropped_in_training_mode_are_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Packed examples see each other in training only: a real `stack train` stops before step 1."""
    forward = Attention.forward

    def unpacked_in_training(
        self: Attention, x: torch.Tensor, *args: object, **kwargs: object
    ) -> torch.Tensor:
        if self.training and len(args) >= 5:
            args = (*args[:4], None, *args[5:])
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(Attention, "forward", unpacked_in_training)
    assert train(smoke_args(data, tmp_path / "run")) == 3
    err = capsys.readouterr().err
    assert "GATE-MODEL-003" in err and "train packed differs" in err and "eval packed differs" not in err


@pytest.mark.holds("GATE-MODEL-003")
def test_a_model_on_the_triton_path_is_compared_unpacked() -> None:
    """The Triton kernel has no document mask (a packed run on it is refused): its forms are the
    plain ones, which hold, and the record shows no packed form."""
    assert "triton" not in DOCUMENT_PATHS
    with recording(Ledger()) as ledger:
        small = {"attention": "triton", "n_layers": 1, "ctx": 8}  # the kernel is interpreted on a CPU
        parity = check_architecture(GPT(CONFIG.model_copy(update=small), seed=0))
    assert set(parity.forms) == {"train", "eval", "cached"}
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.PASS


# -- LoRA adapters: s·B·A·x at the scale the run names ---------------------------------------------

LORA_CONFIG = CONFIG.model_copy(update={"tie_embeddings": False, "qkv_bias": True})


def _adapted(dropout: float, rslora: bool) -> tuple[GPT, Adapters]:
    """A model with r = 4, alpha = 8 adapters on every projection, the head included."""
    model = GPT(LORA_CONFIG, seed=0)
    apply_lora(model, "*", 4, 8.0, dropout, rslora, generator=torch.Generator().manual_seed(0))
    return model, Adapters(4, 8.0, rslora)


@pytest.mark.holds("GATE-MODEL-003")
@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_an_adapted_model_is_its_architecture_with_its_adapters(dropout: float, rslora: bool) -> None:
    model, adapters = _adapted(dropout, rslora)
    with recording(Ledger()) as ledger:
        check_architecture(model, adapters=adapters)
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.PASS
    assert all(wrapper.lora_dropout.p == dropout for _, wrapper in adapters_of(model))  # the twin's only


@pytest.mark.gate("GATE-MODEL-003")
@pytest.mark.parametrize("rslora", [False, True])
def test_falsifier_an_adapter_scaled_by_the_other_rule_is_caught(rslora: bool) -> None:
    """alpha / √r for alpha / r, or the other way round: what every LoRA run trains with."""
    model, adapters = _adapted(0.0, rslora)
    for _, wrapper in adapters_of(model):
        wrapper.scale = 8.0 / 4 if rslora else 8.0 / math.sqrt(4)
    message = _message(model, adapters=adapters)
    assert all(form in message for form in ("train differs", "eval differs", "cached differs"))


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_adapter_dropout_drawn_in_evaluation_mode_is_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The adapter drops its input in eval mode too: a real LoRA run stops before step 1."""

    def always_dropping(self: LoRALinear, x: torch.Tensor) -> torch.Tensor | None:
        dropped = torch.nn.functional.dropout(x, self.lora_dropout.p, training=True)
        return self.scale * torch.nn.functional.linear(
            torch.nn.functional.linear(dropped, self.lora_A), self.lora_B
        )

    monkeypatch.setattr(LoRALinear, "adapter", always_dropping)
    lora = ["lora.r=4", "lora.alpha=8", "lora.dropout=0.1"]
    start = ["--init-from", str(smoke_start(data, tmp_path / "base"))]  # [lora] needs a start
    assert train([*smoke_args(data, tmp_path / "run", *lora), *start]) == 3
    err = capsys.readouterr().err
    assert "GATE-MODEL-003" in err and "eval differs" in err and "train differs" not in err


def test_an_adapted_model_without_its_settings_is_refused() -> None:
    model, _ = _adapted(0.0, False)
    with pytest.raises(ValueError, match="LoRA adapters"):
        check_architecture(model)


# -- the initialisation a fresh model starts from ------------------------------------------------


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_residual_projections_drawn_at_init_std_are_caught(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """attn.o and ffn.down at init_std rather than init_std / √(2 n_layers): a real run stops."""
    original = GPT.init_weights

    @torch.no_grad()
    def unscaled(self: GPT, generator: torch.Generator | None = None) -> None:
        original(self, generator)
        for layer in self.layers:
            for linear in (layer.attn.o, layer.ffn.down):
                linear.weight.mul_(math.sqrt(2 * self.config.n_layers))

    monkeypatch.setattr(GPT, "init_weights", unscaled)
    assert train(smoke_args(data, tmp_path / "run", "model.n_layers=2")) == 3
    err = capsys.readouterr().err
    assert "GATE-MODEL-003" in err and "layers.0.attn.o.weight" in err and "layers.1.ffn.down.weight" in err


def _rescaled_to(z: float) -> GPT:
    """A fresh model whose layers.0.attn.q.weight is rescaled to a root mean square `z` standard
    errors (σ/√(2n)) above its named σ."""
    model = GPT(CONFIG, seed=0)
    weight = model.layers[0].attn.q.weight
    std = CONFIG.init_std
    target = std * (1 + z / math.sqrt(2 * weight.numel()))
    with torch.no_grad():
        weight.mul_(target / weight.double().pow(2).mean().sqrt().item())
    return model


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_a_spread_just_beyond_the_tolerance_is_caught() -> None:
    limit = load_spec().threshold("GATE-MODEL-003", "init_max_z")
    with recording(Ledger()) as ledger, pytest.raises(GateViolation, match=r"layers\.0\.attn\.q\.weight"):
        check_initialisation(_rescaled_to(1.1 * limit))
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.FAIL


@pytest.mark.holds("GATE-MODEL-003")
def test_a_spread_just_inside_the_tolerance_passes() -> None:
    limit = load_spec().threshold("GATE-MODEL-003", "init_max_z")
    with recording(Ledger()) as ledger:
        check_initialisation(_rescaled_to(0.9 * limit))
    assert ledger.results["GATE-MODEL-003"].verdict is Verdict.PASS


@pytest.mark.gate("GATE-MODEL-003")
def test_falsifier_a_norm_gain_off_one_is_caught() -> None:
    model = GPT(CONFIG, seed=0)
    with torch.no_grad():
        model.final_norm.weight[0] = 1.0 + 2**-20
    with pytest.raises(GateViolation, match=r"final_norm\.weight is .* off the constant 1"):
        check_initialisation(model)


@pytest.mark.holds("GATE-MODEL-003")
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"moe_experts": 4, "moe_shared_expert": True},
        {"diff_attn": True, "qkv_bias": True},
        {"mod_every": 2},
        {"tie_embeddings": False, "n_kv_heads": 1},
    ],
)
def test_every_option_starts_from_its_named_initialisation(options: dict[str, object]) -> None:
    for seed in range(3):
        with recording(Ledger()) as ledger:
            check_initialisation(GPT(CONFIG.model_copy(update=options), seed=seed))
        assert ledger.results["GATE-MODEL-003"].verdict is Verdict.PASS
