"""The rows `stack lens --csv` writes, derived from the reading `--json` writes: one per layer × position.

The CSV is written from the same readings as the JSON, by the stack's own table code
(stack.lens.report), so a fault there (a CSV carrying the shown position's KL on every row)
passes unless something reads the file back. This is the table's definition apart from that
code: GATE-LENS-006's check table parses the CSV file as written and holds every row to
`table_rows` of the reading's JSON, cell for cell as csv writes them (`table_cells`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from typing import Any

Decode = Callable[[list[int]], str]


def table_rows(reading: Mapping[str, Any], decode: Decode, schema_version: int) -> list[dict[str, Any]]:
    """Per reading (layers and the final one, in order) and position: the site, the token at the
    position, KL to final, entropy, and the top-1 token and probability, from a lens reading's
    `tokens` (decoded) and `readings` (kl, entropy, top (id, probability) lists per position)."""
    tokens = reading["tokens"]
    return [
        {
            "trace_schema_version": schema_version,
            "name": r["site"],
            "layer": r["layer"],
            "position": p,
            "token": tokens[p],
            "kl_to_final": r["kl"][p],
            "entropy": r["entropy"][p],
            "top1": decode([int(r["top"][p][0][0])]),
            "top1_prob": r["top"][p][0][1],
        }
        for r in reading["readings"]
        for p in range(len(tokens))
    ]


def table_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    """The rows as csv writes and reads them back: a header, then each row's cells as text."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    return list(csv.reader(io.StringIO(text.getvalue(), newline="")))
