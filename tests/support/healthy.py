"""Healthy models for GATE-TRACE-003's anomaly rule: trained on a fixed text, and with faults planted.

tests/trace/test_trace_healthy.py trains every CPU preset's shape with `trained` and holds its early,
middle and late checkpoints to no anomaly. A shape too slow to train in `make test` keeps the block
sites' statistics of its checkpoints in a fixture instead, which this module writes:

    python -m tests.support.healthy   # tests/fixtures/healthy_small.json: about 7 minutes of one core

The `small` preset's shape (6 × 384) is trained for 1,000 steps there, its checkpoints kept at
SMALL_STEPS, and its last one traced again with each of SMALL_FAULTS planted.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import torch

from contracts.spec import load_spec
from stack.data.corpus import stdlib_dir
from stack.model import GPT, ModelConfig
from stack.trace.anomaly import site_stats
from stack.trace.tracer import trace_forward
from stack.train.presets import PRESETS
from tests.support.paths import TESTS

STEPS = (10, 30, 100)  # early, middle, late
CTX, BATCH = 64, 8
CORPUS_BYTES = 1 << 20
PROMPT_AT = 1000  # where in the corpus the prompt every checkpoint is traced on starts

SMALL_STEPS = (10, 30, 100, 300, 1000)
# The weights scaled in the last `small` checkpoint, by (site, layer): up and gate projections and
# down projections in the first, a middle and the last block, a value projection in two.
SMALL_FAULTS = (
    ("ffn_up", 0),
    ("ffn_up", 2),
    ("ffn_gate", 0),
    ("v", 3),
    ("v", 5),
    ("ffn_out", 0),
    ("ffn_out", 2),
    ("ffn_out", 5),
)
SMALL_FIXTURE = TESTS / "fixtures" / "healthy_small.json"


def corpus() -> torch.Tensor:
    """The first CORPUS_BYTES of the standard library's top-level modules, the corpus `stack prepare
    --default` makes: a text no edit of this repository changes, so the suite trains the same models
    until the rule or the model does (on this repository's docs every docs edit trained others)."""
    files = sorted(stdlib_dir().glob("*.py"))
    text = b"".join(path.read_bytes() for path in files)[:CORPUS_BYTES]
    return torch.tensor(list(text), dtype=torch.long)


def prompt_of(data: torch.Tensor) -> torch.Tensor:
    """The CTX bytes of `data` every checkpoint is traced on, as a batch of one."""
    return data[PROMPT_AT : PROMPT_AT + CTX].unsqueeze(0)


def trained(preset: str, data: torch.Tensor, steps: tuple[int, ...] = STEPS) -> dict[int, GPT]:
    """A model of `preset`'s shape (byte vocabulary, ctx at least CTX) trained by AdamW at its
    preset's rate on sequences of CTX bytes of `data`, copied at each of `steps`. One thread, so that
    the same machine trains the same weights (a reduction split otherwise sends training elsewhere)."""
    shape = PRESETS[preset]["model"]
    model = GPT(ModelConfig(vocab=256, **{**shape, "ctx": max(CTX, shape["ctx"])}), seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRESETS[preset]["train"].get("lr", 3e-3))
    generator = torch.Generator().manual_seed(0)
    kept = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(1, max(steps) + 1):
            starts = torch.randint(len(data) - CTX - 1, (BATCH,), generator=generator)
            x = torch.stack([data[s : s + CTX] for s in starts])
            y = torch.stack([data[s + 1 : s + CTX + 1] for s in starts])
            logits, _ = model(x)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step in steps:
                kept[step] = copy.deepcopy(model).eval()
    finally:
        torch.set_num_threads(threads)
    return kept


def planted(model: GPT, where: str, layer: int, times: float) -> GPT:
    """A copy of `model` with the weight that writes site `where` of block `layer` scaled `times`-fold."""
    copied = copy.deepcopy(model)
    block = copied.layers[layer]
    module = {
        "ffn_up": block.ffn.up,
        "ffn_gate": block.ffn.gate,
        "v": block.attn.v,
        "ffn_out": block.ffn.down,
    }
    with torch.no_grad():
        module[where].weight *= times
    return copied


def block_stats(model: GPT, idx: torch.Tensor) -> dict[str, dict[str, Any]]:
    """What GATE-TRACE-003's baselines read of a traced forward of `model` on `idx`
    (stack.trace.anomaly.site_stats), as a fixture keeps it."""
    trace, _ = trace_forward(model, idx)
    return site_stats(trace)


def small_fixture() -> dict[str, dict[str, dict[str, Any]]]:
    """The `small` shape's block-site statistics: healthy at each of SMALL_STEPS ("healthy-STEP"), and
    at the last with each of SMALL_FAULTS planted at twice gain_std_multiple (by the site it writes)."""
    data = corpus()
    idx = prompt_of(data)
    kept = trained("small", data, SMALL_STEPS)
    found = {f"healthy-{step}": block_stats(model, idx) for step, model in kept.items()}
    times = 2 * float(load_spec().threshold("GATE-TRACE-003", "gain_std_multiple"))
    last = kept[SMALL_STEPS[-1]]
    for where, layer in SMALL_FAULTS:
        found[f"layers.{layer}.{where}"] = block_stats(planted(last, where, layer, times), idx)
    return found


def main() -> None:
    """Write SMALL_FIXTURE, a line a site, in the layout of the suite's other fixtures."""
    found = small_fixture()
    lines = []
    for key, stats in found.items():
        sites = ",\n".join(f"  {json.dumps(name)}: {json.dumps(row)}" for name, row in stats.items())
        lines.append(f" {json.dumps(key)}: {{\n{sites}\n }}")
    SMALL_FIXTURE.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"-> {SMALL_FIXTURE}")


if __name__ == "__main__":
    main()
