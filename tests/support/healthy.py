"""Healthy models for GATE-TRACE-003's anomaly rule: trained on a fixed text, and with faults planted.

tests/trace/test_trace_healthy.py trains every CPU preset's shape with `trained` and holds its early,
middle and late checkpoints to no anomaly. The shapes too slow to train in `make test` (SLOW_SHAPES:
`small`, `base`, `gpt2`) keep the block sites' statistics of their checkpoints in fixtures instead,
which this module writes, one file a shape:

    python -m tests.support.healthy small base gpt2   # tests/fixtures/healthy_<preset>.json

Each shape is trained as the suite trains the others, its checkpoints kept at its SLOW_SHAPES steps,
and its last one traced again with each of `faults` planted: about 7 minutes of one core a shape
(`small` for 1,000 steps, `base` for 300, `gpt2` for 100).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
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

# The shapes the suite holds from fixtures, by preset: the steps their checkpoints are kept at.
SLOW_SHAPES = {"small": (10, 30, 100, 300, 1000), "base": (10, 30, 100, 300), "gpt2": (10, 30, 100)}


def faults(n_layers: int) -> tuple[tuple[str, int], ...]:
    """The weights scaled in a shape's last checkpoint, by (site, block): up and gate projections and
    down projections in the first, the third and the last block, a value projection in two."""
    last = n_layers - 1
    return (
        ("ffn_up", 0),
        ("ffn_up", 2),
        ("ffn_gate", 0),
        ("v", 3),
        ("v", last),
        ("ffn_out", 0),
        ("ffn_out", 2),
        ("ffn_out", last),
    )


def fixture_path(preset: str) -> Path:
    """Where the statistics of a slow shape's checkpoints are kept."""
    return TESTS / "fixtures" / f"healthy_{preset}.json"


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


def shape_fixture(preset: str) -> dict[str, dict[str, dict[str, Any]]]:
    """A slow shape's block-site statistics: healthy at each of its SLOW_SHAPES steps
    ("healthy-STEP"), and at the last with each of `faults` planted at twice gain_std_multiple (by the
    site it writes)."""
    steps = SLOW_SHAPES[preset]
    data = corpus()
    idx = prompt_of(data)
    kept = trained(preset, data, steps)
    found = {f"healthy-{step}": block_stats(model, idx) for step, model in kept.items()}
    times = 2 * float(load_spec().threshold("GATE-TRACE-003", "gain_std_multiple"))
    last = kept[steps[-1]]
    for where, layer in faults(last.config.n_layers):
        found[f"layers.{layer}.{where}"] = block_stats(planted(last, where, layer, times), idx)
    return found


def main(argv: list[str] | None = None) -> int:
    """Write the fixture of each shape named (every slow shape when none is), a line a site, in the
    layout of the suite's other fixtures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="*", choices=sorted(SLOW_SHAPES), metavar="PRESET")
    for preset in parser.parse_args(argv).presets or SLOW_SHAPES:
        lines = []
        for key, stats in shape_fixture(preset).items():
            sites = ",\n".join(f"  {json.dumps(name)}: {json.dumps(row)}" for name, row in stats.items())
            lines.append(f" {json.dumps(key)}: {{\n{sites}\n }}")
        path = fixture_path(preset)
        path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
        print(f"-> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
