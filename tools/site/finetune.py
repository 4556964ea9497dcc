"""The fine-tuning evaluation sections of a run page: an `evalmatrix` record's rows and a
`memorization` record's two models, read from the record's metrics alone (what the command
measured), so the page shows the numbers GATE-FT-001..003 were judged on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.evidence import EvidenceRecord
from tools.site.formatting import code, number, scalar, table, text


def _share(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, int | float) and not isinstance(value, bool) else "—"


def _matrix(metrics: Mapping[str, Any]) -> list[str]:
    rows = [r for r in metrics.get("rows", []) if isinstance(r, Mapping)]
    if not rows:
        return []
    items = number(metrics.get("items", 0))
    out = [f"\n## Evaluation matrix\n\n{items} held-out items, the same in every row.\n"]
    cells = [
        [
            code(r.get("row")),
            text(r.get("label")),
            scalar(r.get("bits_per_byte")),
            scalar(r.get("loss")),
            _share(r.get("exact_match")),
            number(r.get("context_tokens_dropped", 0)),
        ]
        for r in rows
    ]
    out += table(["row", "what", "bits per byte", "loss", "exact match", "context tokens cut"], cells)
    gain = metrics.get("adapter_gain_bpb")
    if isinstance(gain, int | float):
        out.append(f"\nThe adapter (row C) is {scalar(gain)} bits per byte below few-shot (row B).")
    return out


def _recall(metrics: Mapping[str, Any]) -> list[str]:
    models = metrics.get("models")
    if not isinstance(models, Mapping) or not models:
        return []
    least, prefix = scalar(metrics.get("min_verbatim_tokens")), number(metrics.get("prefix", 0))
    out = [
        f"\n## Verbatim recall\n\nGreedy continuations of {number(metrics.get('continuation', 0))} tokens "
        f"after {prefix}-token prefixes of training examples; reproduced = a verbatim run of at least "
        f"{least} tokens.\n"
    ]
    cells = [
        [
            text(name),
            number(m.get("reproduced", 0)),
            _share(m.get("rate")),
            number(m.get("longest_run", 0)),
            scalar(m.get("mean_run")),
        ]
        for name, m in models.items()
        if isinstance(m, Mapping)
    ]
    return out + table(["model", "reproduced", "rate", "longest run", "mean run"], cells)


def finetune_section(record: EvidenceRecord) -> list[str]:
    """The rows of an evalmatrix record or the models of a memorization record; nothing for others."""
    if record.run.kind == "evalmatrix":
        return _matrix(record.metrics)
    if record.run.kind == "memorization":
        return _recall(record.metrics)
    return []
