"""stack.trace.structure and what the tracer keeps with it: the modules each site hooks and each
identity recomputes, derived once per model structure.

What must never happen is a trace of a model whose modules changed since the last one made from
what was kept for the old ones: a site hooked on a module the forward no longer calls (missing,
so GATE-TRACE-002 fires on a healthy model), or an identity recomputed by a module or a forward
the forward no longer runs (a false alarm, or a fault hidden behind the old module).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stack.model.layers import RMSNorm
from stack.trace.hooks import SiteHooks
from stack.trace.site_identity import identities
from stack.trace.sites import layout_for
from stack.trace.structure import kept, structure
from stack.trace.tracer import trace_forward
from tests.support.trace_support import tiny_model, tokens


def test_a_kept_value_is_derived_again_exactly_when_the_structure_changes() -> None:
    model = tiny_model()
    made: list[int] = []

    def derive() -> int:
        made.append(len(made))
        return len(made)

    assert kept(model, "key", derive) == kept(model, "key", derive) == 1  # derived once
    model.train()  # a mode: a LoRA adapter's dropout decides whether a product check stands in
    assert kept(model, "key", derive) == 2
    model.layers[1].ffn.swiglu.act = nn.SiLU()  # a module replaced by another of the same kind
    assert kept(model, "key", derive) == 3
    model.layers[0].attn.q, model.layers[0].attn.k = model.layers[0].attn.k, model.layers[0].attn.q  # moved
    assert kept(model, "key", derive) == 4
    assert kept(model, "other", derive) == 5 and kept(model, "key", derive) == 4  # one value per key


def test_two_models_of_one_config_keep_their_own_modules() -> None:
    first, second = tiny_model(seed=0), tiny_model(seed=1)
    layout = layout_for(first.config)
    assert structure(first) != structure(second)
    assert identities(first, layout)["logits"].linear is first.lm_head
    assert identities(second, layout)["logits"].linear is second.lm_head


def test_a_module_replaced_between_two_traces_is_the_one_hooked_and_checked() -> None:
    """The second trace hooks and checks the new projection: with the old one kept, `layers.0.q`
    would be missing (the old module is no longer called) and GATE-TRACE-002 would fire."""
    model, idx = tiny_model(), tokens()
    trace_forward(model, idx)
    old = model.layers[0].attn.q
    new = nn.Linear(old.in_features, old.out_features, bias=False)
    with torch.no_grad():
        new.weight.copy_(old.weight * 1.5)
    model.layers[0].attn.q = new
    trace, _ = trace_forward(model, idx)  # GATE-TRACE-002 holds: complete, every identity within rtol
    assert identities(model, layout_for(model.config))["layers.0.q"].linear is new
    assert trace.identities["layers.0.q"]["rows_checked"] > 0


def test_an_identity_recomputes_with_its_module_forward_as_it_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """A norm's forward changed after a first trace (a class patched, as a planted bug or a new
    version would): the forward and the recomputation both run the new one, so the identity holds.
    A kept table holding the old forward would recompute the norms otherwise, and fire."""
    model, idx = tiny_model(), tokens()
    trace_forward(model, idx)
    original = RMSNorm.forward
    monkeypatch.setattr(RMSNorm, "forward", lambda self, x: 1.5 * original(self, x))
    trace, _ = trace_forward(model, idx)
    found = trace.identities["layers.1.ffn_norm"]
    assert found["max_abs_diff"] <= 1e-6 * found["ref_absmax"]


def test_the_tracers_hooks_leave_a_users_own_hooks_in_place_and_running() -> None:
    """The tracer puts its hooks straight into each module's table, under keys torch's handles
    never take: a hook the user registered before runs in the traced forward and stays after it,
    and the tracer's are all gone."""
    model, idx = tiny_model(), tokens()
    seen: list[tuple[int, ...]] = []
    handle = model.layers[0].ffn.register_forward_hook(lambda _m, _a, out: seen.append(tuple(out.shape)))
    before = {name: dict(m._forward_hooks) for name, m in model.named_modules()}
    trace_forward(model, idx)
    with SiteHooks(model, lambda _name, _tensor: None):
        model(idx)
    assert len(seen) == 2
    assert {name: dict(m._forward_hooks) for name, m in model.named_modules()} == before
    assert not any(m._forward_pre_hooks for m in model.modules())
    handle.remove()


def test_a_weight_changed_in_place_between_two_traces_is_the_one_checked() -> None:
    """An optimizer step between two traces changes a projection's weight in place: its probes are
    made again, and the product checks' prepared call reads the new ones (a call kept with the old
    probes would hold the new rows to the old weight, and fire)."""
    model, idx = tiny_model(), tokens()
    trace_forward(model, idx)  # the first forward sizes the scratch: the next ones reuse its views
    first, _ = trace_forward(model, idx)
    with torch.no_grad():
        model.layers[2].ffn.down.weight.mul_(-2.0)
    second, _ = trace_forward(model, idx)
    assert second.sites["logits"].stats != first.sites["logits"].stats
    found = second.identities["layers.2.ffn_out"]
    assert found["max_abs_diff"] <= 1e-5 * found["ref_absmax"]
