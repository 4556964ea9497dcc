"""What was live at a loop's memory peak, by owner (benchmarks/memory_peak.py).

The summary explains a peak-memory ratio, so it must add up to the peak it explains: whatever
order allocations and frees come in, the owners' bytes at the high-water mark sum to it, and
nothing freed before the mark is counted. On the CPU the trace is the profiler's memory profile
of a real training step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.memory_peak import NO_FRAME, at_peak, owner, recorded, running_peak
from stack.model import GPT, ModelConfig

OWNERS = ("stack/train/loop.py", "stack/model/gpt.py", "torch/optim/adamw.py")


def _frames(file: str, function: str) -> list[dict[str, Any]]:
    """One CUDA-style frame (its own filename), below a library frame."""
    return [{"filename": f"/usr/lib/python3/site-packages/{file}", "line": 3, "name": function}]


@st.composite
def traces(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Allocations and frees in any order (each address freed at most once, some never), and a free
    of an address made before recording began."""
    entries: list[dict[str, Any]] = [{"action": "free_completed", "addr": 10**9, "size": 64, "frames": []}]
    live: list[int] = []
    for addr in range(draw(st.integers(1, 30))):
        entries.append(
            {
                "action": "alloc",
                "addr": addr,
                "size": draw(st.integers(1, 4096)),
                "frames": _frames(draw(st.sampled_from(OWNERS)), "f"),
            }
        )
        live.append(addr)
        while live and draw(st.booleans()):
            gone = live.pop(draw(st.integers(0, len(live) - 1)))
            entries.append({"action": "free_requested", "addr": gone, "size": 0, "frames": []})
            entries.append({"action": "free_completed", "addr": gone, "size": 0, "frames": []})
    return entries


@settings(max_examples=200)
@given(traces())
def test_the_owners_at_the_peak_add_up_to_the_highest_running_sum(entries: list[dict[str, Any]]) -> None:
    sizes: dict[int, int] = {}
    held, highest = 0, 0
    for entry in entries:
        if entry["action"] == "alloc":
            sizes[entry["addr"]] = entry["size"]
            held += entry["size"]
            highest = max(highest, held)
        elif entry["action"] == "free_completed" and entry["addr"] in sizes:
            held -= sizes.pop(entry["addr"])
    peak = at_peak(entries)
    assert peak.bytes == highest
    assert sum(size for _, size in peak.owners) == highest
    record = peak.as_record(shown=1)
    assert sum(owned["bytes"] for owned in record["owners"]) == record["peak_bytes"] == highest


def test_an_allocation_freed_before_the_peak_is_not_among_its_owners() -> None:
    made = [
        {"action": "alloc", "addr": 1, "size": 100, "frames": _frames("stack/train/probe.py", "keep")},
        {"action": "free_completed", "addr": 1, "size": 100, "frames": []},
        {"action": "alloc", "addr": 2, "size": 300, "frames": _frames("stack/model/gpt.py", "forward")},
        {"action": "alloc", "addr": 3, "size": 50, "frames": _frames("stack/model/gpt.py", "forward")},
    ]
    peak = at_peak(made)
    assert (peak.bytes, peak.owners) == (350, (("stack/model/gpt.py:forward", 350),))


def test_an_owner_is_the_innermost_frame_in_the_repository_else_the_innermost_python_frame() -> None:
    cuda = [
        {
            "filename": "/venv/lib/python3.11/site-packages/torch/nn/functional.py",
            "line": 9,
            "name": "linear",
        },
        {"filename": "/work/repo/stack/train/probes.py", "line": 40, "name": "retain"},
        {"filename": "/work/repo/stack/train/run.py", "line": 7, "name": "train"},
    ]
    assert owner(cuda) == "stack/train/probes.py:retain"
    profiler = [
        {"filename": "none", "line": 0, "name": "<built-in function linear>"},
        {"filename": "none", "line": 0, "name": "torch/nn/modules/linear.py(130): forward"},
    ]
    assert owner(profiler) == "torch/nn/modules/linear.py:forward"
    assert owner(cuda[:1]) == "torch/nn/functional.py:linear"
    assert owner(profiler[:1]) == "<built-in function linear>"
    assert owner([]) == NO_FRAME


def test_a_cpu_training_step_is_traced_and_its_activations_have_the_models_frames() -> None:
    config = ModelConfig(vocab=64, n_layers=2, d_model=32, n_heads=2, n_kv_heads=2, ffn_hidden=64, ctx=16)
    model = GPT(config, seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    idx = torch.randint(64, (4, 16), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        _, loss = model(idx, idx)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # the optimizer's state exists before the traced step, as in a loop's steady state
    entries, _ = recorded(step, torch.device("cpu"))
    peak = at_peak(entries)
    assert peak.bytes > 0 and sum(size for _, size in peak.owners) == peak.bytes
    assert any(name.startswith("stack/model/") for name, _ in peak.owners), peak.owners
    assert dict(peak.categories), "the profiler's trace names each allocation's category"


@dataclass(frozen=True)
class Event:
    """One profiler event as `running_peak` reads it; `label` None stands for a name that is not
    UTF-8, which the profiler's own event raises on when asked (a process's first profile held one)."""

    label: str | None
    bytes: int
    start: int

    def name(self) -> str:
        if self.label is None:
            raise UnicodeDecodeError("utf-8", b"\xc9", 0, 1, "invalid continuation byte")
        return self.label

    def nbytes(self) -> int:
        return self.bytes

    def start_ns(self) -> int:
        return self.start


def test_the_cpu_peak_is_the_highest_running_sum_of_memory_events_in_time_order() -> None:
    events = [
        Event("[memory]", -64, 5),  # a tensor made before recording, freed at 5
        Event("aten::mm", 0, 1),
        Event(None, 0, 2),  # an operator whose name cannot be read: never asked
        Event("[memory]", 300, 4),
        Event("[memory]", 100, 1),
        Event("[memory]", -100, 3),
        Event("[memory]", 50, 6),
    ]
    # in time order: +100, −100, +300, −64, +50 → the highest running sum is 300, at 4
    assert running_peak(events) == 300
    assert running_peak([Event(None, 0, 0)]) == 0
