"""`stack inspect`: what a checkpoint holds, and whether its checksums still hold."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "inspect", help="tensors, parameter count, config and checksum status of a checkpoint"
    )
    parser.add_argument("path", type=Path, metavar="RUN_DIR|CKPT")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Verify the checkpoint, then list its tensors and state."""
    import json

    from safetensors import safe_open

    from stack.train import checkpoint as ckpt
    from stack.train.trained import resolve_checkpoint

    path = resolve_checkpoint(args.path)
    loaded = ckpt.load_checkpoint(path)  # verifies every checksum first (GATE-CKPT-002)
    tensors = []
    with safe_open(str(path / "model.safetensors"), framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
            sliced = handle.get_slice(name)
            shape = sliced.get_shape()
            count = 1
            for dim in shape:
                count *= dim
            tensors.append({"name": name, "shape": shape, "dtype": sliced.get_dtype(), "numel": count})
    state = loaded.state
    summary = {
        "path": str(path),
        "checksums": "ok",
        "step": loaded.step,
        "epoch": state["epoch"],
        "spec_version": state["spec_version"],
        "parameters": sum(t["numel"] for t in tensors),
        "config": state["config"],
        "tensors": tensors,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{path}[/] step {loaded.step}, spec {state['spec_version']}, checksums ok")
    console.print(f"parameters: {summary['parameters']:,} (a tied embedding is stored once)")
    table = Table("tensor", "shape", "dtype")
    for t in tensors:
        table.add_row(t["name"], "×".join(map(str, t["shape"])), t["dtype"])
    console.print(table)
    config = Table("section", "key", "value")
    for section, values in state["config"].items():
        for key, value in values.items():
            config.add_row(section, key, json.dumps(value))
    console.print(config)
    return 0
