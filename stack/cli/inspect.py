"""`stack inspect`: what a checkpoint holds, and whether its checksums still hold.

Inspecting is how a damaged checkpoint is diagnosed, so once the checksums verify it shows what
state.json holds rather than failing on what it lacks: missing keys are listed, not tripped over.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "inspect", help="tensors, parameter count, config and checksum status of a checkpoint"
    )
    parser.add_argument("path", type=Path, metavar="RUN_DIR|CKPT")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Verify the checkpoint, then list its tensors and state."""
    from stack.cli.inputs import check_inputs
    from stack.train import checkpoint as ckpt
    from stack.train.trained import resolve_checkpoint

    check_inputs("inspect", args)
    path = resolve_checkpoint(args.path)
    loaded = ckpt.load_checkpoint(path)  # verifies every checksum first (GATE-CKPT-002)
    state = loaded.state
    tensors = _tensors(path / "model.safetensors")
    implied = _implied_count(state.get("config"))
    counted = sum(t["numel"] for t in tensors if not t["buffer"])
    summary = {
        "path": str(path),
        "checksums": "ok",
        "step": state.get("step"),
        "epoch": state.get("epoch"),
        "spec_version": state.get("spec_version"),
        "parameters": counted,
        "parameters_implied": implied,
        "config": state.get("config"),
        "state_keys_missing": [key for key in ckpt.STATE_KEYS if key not in state],
        "tensors": tensors,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_tables(summary)
    if isinstance(implied, int) and implied != counted:
        print(
            f"stack inspect: warning: the checkpoint holds {counted:,} parameters but its config implies "
            f"{implied:,} (contracts.model_parameters): the model is not built as its config names",
            file=sys.stderr,
        )
    return 0


def _implied_count(config: Any) -> int | str:
    """How many parameters the checkpoint's `[model]` and `[lora]` tables imply, written out by the
    statute GATE-MODEL-003 holds every run's model to (contracts.model_parameters), apart from the
    tensors counted in the file: the two disagree when the file or the count is wrong. A state too
    damaged to say is named, not tripped over (the module docstring)."""
    from contracts.model_parameters import implied_parameters

    try:
        implied = implied_parameters(config["model"], config.get("lora"))
        return sum(math.prod(entry["shape"]) for entry in implied.values())
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"unknown: its config cannot say ({type(exc).__name__}: {exc})"


def _tensors(weights: Path) -> list[dict[str, Any]]:
    """Name, shape, dtype and element count of each tensor, read from the header only, and whether
    it is a buffer the model keeps beside its parameters (not counted as one, as training counts)."""
    from stack.model.depth_router import THRESHOLD
    from stack.model.lora import BASE_HASH_KEY

    buffers = (THRESHOLD, BASE_HASH_KEY)
    from safetensors import safe_open

    tensors = []
    with safe_open(str(weights), framework="pt") as handle:
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
            sliced = handle.get_slice(name)
            shape = sliced.get_shape()
            count = 1
            for dim in shape:
                count *= dim
            buffer = name.rsplit(".", 1)[-1] in buffers
            tensors.append(
                {"name": name, "shape": shape, "dtype": sliced.get_dtype(), "numel": count, "buffer": buffer}
            )
    return tensors


def _print_tables(summary: dict[str, Any]) -> None:
    """The summary as tables, names and values printed as they are."""
    from rich.table import Table

    from stack.cli import data_console

    console = data_console()
    console.print(f"{summary['path']} step {summary['step']}, spec {summary['spec_version']}, checksums ok")
    implied = summary["parameters_implied"]
    said = f"{implied:,}" if isinstance(implied, int) else implied
    model = summary["config"].get("model") if isinstance(summary["config"], dict) else None
    tied_model = isinstance(model, dict) and model.get("tie_embeddings")
    tied = "; a tied embedding is stored once" if tied_model else ""
    console.print(f"parameters: {summary['parameters']:,} (its config implies {said}{tied})")
    if summary["state_keys_missing"]:
        console.print(f"state.json lacks: {', '.join(summary['state_keys_missing'])}")
    table = Table("tensor", "shape", "dtype")
    for t in summary["tensors"]:
        table.add_row(t["name"], "×".join(map(str, t["shape"])), t["dtype"])
    console.print(table)
    config = Table("section", "key", "value")
    sections = summary["config"] if isinstance(summary["config"], dict) else {}
    for section, values in sections.items():
        for key, value in values.items() if isinstance(values, dict) else [("", values)]:
            config.add_row(section, key, json.dumps(value))
    console.print(config)
