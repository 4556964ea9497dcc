"""`stack gates`: list the spec's gates, their status and thresholds."""

from __future__ import annotations

import argparse
import json

from contracts.spec import GateStatus, load_spec


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("gates", help="list the acceptance gates of the spec")
    parser.add_argument("ids", nargs="*", help="only these gate ids")
    parser.add_argument("--status", choices=[s.value for s in GateStatus], help="only gates in this status")
    parser.add_argument("--area", help="only gates of this area, e.g. DATA or TRAIN")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the selected gates; an unknown id or area is bad input."""
    from rich.table import Table

    from stack.cli import data_console

    spec = load_spec()
    gates = [spec.gate(gid) for gid in args.ids] if args.ids else list(spec.gates.values())
    if args.area:
        areas = {g.area for g in spec.gates.values()}
        if args.area.upper() not in areas:
            from contracts.errors import BadInput

            raise BadInput(f"unknown area {args.area!r}; areas are {', '.join(sorted(areas))}")
        gates = [g for g in gates if g.area == args.area.upper()]
    if args.status:
        gates = [g for g in gates if g.status.value == args.status]
    gates.sort(key=lambda g: g.id)
    if args.json:
        print(json.dumps([g.model_dump(mode="json") for g in gates], indent=2))
        return 0
    table = Table(title=f"gatestack spec {spec.version}: {len(gates)} gate(s)")
    for column in ("id", "rev", "status", "kind", "severity", "title", "thresholds"):
        table.add_column(column, no_wrap=column in ("id", "status"))
    for gate in gates:
        thresholds = ", ".join(f"{k}={t.value}" for k, t in gate.thresholds.items())
        table.add_row(
            gate.id,
            str(gate.revision),
            gate.status.value,
            gate.kind.value,
            gate.severity.value,
            gate.title,
            thresholds,
        )
    data_console().print(table)
    return 0
