#!/usr/bin/env python3
"""Attention tiles: which launch shape each Triton attention kernel should run with, per head dim.

    python benchmarks/attention_tiles.py [--n 4096] [--repeats 20] [--ledger DIR]

The three kernels (forward, dK/dV, dQ) each take a tile (query rows, keys, warps, pipeline
stages) from `stack.kernels.flash_attention.TILES`. This benchmark times each kernel's
candidates on the GPU at hand, bf16 and causal at one length per head dim, one kernel at a time
(coordinate descent: the forward first, then dK/dV with the best forward, then dQ), and records
every candidate's time with the best per kernel. A candidate that does not fit the GPU's shared
memory or registers is recorded as refused, not fatal. It never edits the table: the numbers go
into an evidence record, and a person copies the winners into TILES citing it.

Needs CUDA: without a GPU it says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

from benchmarks.attention import D_MODEL, TOKENS, _backward_through, _qkv, _time_ms
from contracts.derive.benchmarks import fastest
from contracts.evidence import RunStatus, file_record, ledger_slot, new_record, now, run_id
from contracts.gates import contract_mode
from stack.kernels import flash_attention as fa

ROOT = Path(__file__).resolve().parent.parent

KERNELS = ("fwd", "dkdv", "dq")
# (BLOCK_M, BLOCK_N) pairs worth trying per kernel; each with 4 or 8 warps and 2 to 4 stages.
BLOCKS = {
    "fwd": ((64, 64), (128, 64), (128, 32), (64, 128), (128, 128)),
    "dkdv": ((64, 64), (32, 64), (32, 128), (64, 128), (16, 128)),
    "dq": ((64, 64), (128, 32), (128, 64), (64, 32), (32, 64)),
}
WARPS = (4, 8)
STAGES = (2, 3, 4)


def candidates(kernel: str) -> list[fa.Tile]:
    """Every tile tried for `kernel`."""
    return [fa.Tile(m, n, w, s) for m, n in BLOCKS[kernel] for w in WARPS for s in STAGES]


def time_tiles(dim: int, n: int, repeats: int) -> dict[str, object]:
    """Each kernel's candidates at head dim `dim`, timed as the whole forward (+ backward) takes."""
    batch, heads = max(TOKENS // n, 1), D_MODEL // dim
    q, k, v = _qkv(batch, heads, heads, n, dim, "cuda", torch.bfloat16)
    d_out = torch.randn_like(q)
    forward = functools.partial(fa.flash_attention, q, k, v, causal=True)
    both = functools.partial(_backward_through, forward, d_out)
    found: dict[str, object] = {"n": n, "batch": batch, "heads": heads}
    for kernel in KERNELS:
        timed = forward if kernel == "fwd" else both
        rows = []
        for tile in candidates(kernel):
            fa.TILES[kernel][dim] = tile
            try:
                ms = _time_ms(timed, repeats)
            except Exception as exc:  # out of shared memory or registers: recorded, not fatal
                rows.append({"tile": tile.__dict__, "refused": f"{type(exc).__name__}: {str(exc)[:120]}"})
                continue
            rows.append({"tile": tile.__dict__, "ms": ms})
            print(f"D={dim} {kernel} {tile}: {ms:.3f} ms", flush=True)
        best = fastest(rows)
        fa.TILES[kernel][dim] = fa.Tile(**best["tile"])  # the next kernel is timed with this one
        found[kernel] = {"best": best, "candidates": rows}
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="sequence length timed (default 4096)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions per candidate")
    parser.add_argument(
        "--ledger", type=Path, default=ROOT / "evidence" / "runs", help="file the record here"
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: the tile search times compiled kernels and needs a GPU", file=sys.stderr)
        return 2
    rid = run_id("bench-attention-tiles")
    ledger_slot(args.ledger, rid)
    device = torch.cuda.get_device_name(0)
    record = new_record("benchmark", rid, sys.argv, device, torch.version.cuda, contract_mode().value)
    record.config = {"n": args.n, "dtype": "bfloat16", "causal": True, "repeats": args.repeats}
    before = {
        kernel: {dim: tile.__dict__ for dim, tile in tiles.items()} for kernel, tiles in fa.TILES.items()
    }
    results = {str(dim): time_tiles(dim, args.n, args.repeats) for dim in (64, 128)}
    record.metrics = {"tiles_before": before, "search": results}
    record.run.status, record.run.finished = RunStatus.COMPLETED, now()
    path = file_record(args.ledger, record)
    for dim, found in results.items():
        best = {kernel: found[kernel]["best"] for kernel in KERNELS}  # type: ignore[index]
        print(f"D={dim}: " + "; ".join(f"{k} {b['tile']} {b['ms']:.3f} ms" for k, b in best.items()))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
