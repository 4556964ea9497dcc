"""Two runs side by side: their curves overlaid, their configurations, verdicts and metrics diffed.

"Why is this run worse than that one?" starts with what differs between them. A comparison page
puts the answer on one screen: provenance (commit, spec, data and tokenizer hashes), the
configuration keys that differ, the gates whose verdict changed, the summary metrics with their
difference, and every curve of both runs on the same axes. Pairs come from
tools/site_config.toml or from `render_site.py --compare RUN_A RUN_B`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contracts.evidence import EvidenceRecord
from tools.integrity.audit import LoadedEvidence
from tools.site.formatting import (
    BANNER,
    badge,
    code,
    gate_path,
    json_details,
    link,
    number,
    scalar,
    short_sha,
    status_badge,
    table,
    text,
    unit_of,
    verdict_badge,
)
from tools.site.ledger import Ledger, record_of
from tools.site.plots import curves
from tools.site.runs import PLOT_TITLES, metrics_lines, run_link, run_tally

COMPARE_DIR = "compare"
DIFFERS = badge("≠", "diff", "the two runs differ here")


def compare_path(run_a: str, run_b: str) -> str:
    """The comparison page of a pair, relative to docs/reference/."""
    return f"{COMPARE_DIR}/{run_a}--{run_b}.md"


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested configuration as dotted keys (`train.lr`), so two can be diffed key by key."""
    if not isinstance(config, dict) or not config:
        return {prefix: config} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def compare_plots(a: LoadedEvidence, b: LoadedEvidence) -> dict[str, str]:
    """plot name → SVG with both runs' curves on the same axes (A in blue, B in orange)."""
    return curves({"A": metrics_lines(a), "B": metrics_lines(b)})


def _mark(name: str, left: Any, right: Any) -> str:
    return f"{name} {DIFFERS}" if left != right else name


# What two runs are compared on before their numbers: (label, how to read it off a record).
PROVENANCE: tuple[tuple[str, Callable[[EvidenceRecord], Any]], ...] = (
    ("kind", lambda r: r.run.kind),
    ("stop reason", lambda r: r.run.stop_reason),
    ("git", lambda r: r.code.git_sha),
    ("dirty tree", lambda r: r.code.git_dirty),
    ("spec", lambda r: r.spec.version),
    ("contract mode", lambda r: r.contract_mode),
    ("device", lambda r: r.env.device),
    ("config sha256", lambda r: r.config_sha256),
    ("data manifest sha256", lambda r: r.data.manifest_sha256),
    ("tokenizer sha256", lambda r: r.data.tokenizer_sha256),
)


def _provenance(a: LoadedEvidence, b: LoadedEvidence, ledger: Ledger, page: str) -> list[str]:
    """What ran, from which commit, spec, configuration and data, with what differs marked."""
    ra, rb = record_of(a), record_of(b)
    rows = [
        ["run", run_link(page, ra.run.id), run_link(page, rb.run.id)],
        [
            _mark("status", ra.run.status, rb.run.status),
            status_badge(ra.run.status.value),
            status_badge(rb.run.status.value),
        ],
        ["started", f"{ra.run.started:%Y-%m-%d %H:%M}", f"{rb.run.started:%Y-%m-%d %H:%M}"],
    ]
    for name, read in PROVENANCE:
        left, right = read(ra), read(rb)
        hashed = name.endswith("sha256") or name == "git"
        rows.append(
            [_mark(name, left, right), *(short_sha(v) if hashed else scalar(v) for v in (left, right))]
        )
    rows.append(["verdicts", run_tally(ledger, ra.run.id), run_tally(ledger, rb.run.id)])
    return table(["", "A", "B"], rows)


def _verdicts(a: LoadedEvidence, b: LoadedEvidence, ledger: Ledger, page: str) -> list[str]:
    """Every gate either run judged; those whose verdict changed first."""
    ids = (record_of(a).run.id, record_of(b).run.id)
    gates = sorted({gate for run, gate in ledger.verdicts if run in ids})
    if not gates:
        return ["Neither run judged a gate."]

    def shown(run: str, gate: str) -> str:
        v = ledger.verdicts.get((run, gate))
        return verdict_badge(v.verdict, v.stale) + f" rev {v.revision}" if v else "not judged"

    def changed(gate: str) -> bool:
        va, vb = (ledger.verdicts.get((run, gate)) for run in ids)
        return (va.verdict if va else None) != (vb.verdict if vb else None)

    ordered = sorted(gates, key=lambda g: (not changed(g), g))
    rows = [
        [
            f"[{gate}]({link(page, gate_path(gate))})" + (f" {DIFFERS}" if changed(gate) else ""),
            shown(ids[0], gate),
            shown(ids[1], gate),
        ]
        for gate in ordered
    ]
    n_changed = sum(changed(g) for g in gates)
    return [f"{n_changed} of {len(gates)} gate(s) changed verdict.\n", *table(["gate", "A", "B"], rows)]


def _config(a: LoadedEvidence, b: LoadedEvidence) -> list[str]:
    """The configuration keys whose values differ; the full configurations one click away."""
    fa, fb = flatten(record_of(a).config), flatten(record_of(b).config)
    keys = sorted(set(fa) | set(fb))
    differing = [k for k in keys if fa.get(k) != fb.get(k)]
    out = [f"{len(differing)} of {len(keys)} key(s) differ.\n"]
    if differing:
        out += table(
            ["key", "A", "B"],
            [[code(k), scalar(fa.get(k), unit_of(k)), scalar(fb.get(k), unit_of(k))] for k in differing],
        )
    out.append(
        "\n"
        + json_details({"A": record_of(a).config, "B": record_of(b).config}, "both configurations as JSON")
    )
    return out


def _metrics(a: LoadedEvidence, b: LoadedEvidence) -> list[str]:
    """Summary metrics both runs have as numbers, with B − A."""
    ma, mb = record_of(a).metrics, record_of(b).metrics
    rows = []
    for key in sorted(set(ma) & set(mb)):
        left, right = ma[key], mb[key]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
        if not numeric:
            continue
        unit = unit_of(key)
        delta = number(right - left, unit) if right != left else "="
        rows.append([code(key), number(left, unit), number(right, unit), delta])
    if not rows:
        return ["No numeric summary metric is in both records."]
    return table(["metric", "A", "B", "B − A"], rows)


def compare_page(a: LoadedEvidence, b: LoadedEvidence, ledger: Ledger, plots: list[str]) -> str:
    """The comparison of run A with run B."""
    ra, rb = record_of(a), record_of(b)
    page = compare_path(ra.run.id, rb.run.id)
    out = [BANNER, f"# {text(ra.run.id)} vs {text(rb.run.id)}\n"]
    out.append(
        f"A is {run_link(page, ra.run.id)}, B is {run_link(page, rb.run.id)}. {DIFFERS} marks what differs.\n"
    )
    out += _provenance(a, b, ledger, page)
    out.append("\n## Gate verdicts\n")
    out += _verdicts(a, b, ledger, page)
    out.append("\n## Configuration\n")
    out += _config(a, b)
    out.append("\n## Metrics\n")
    out += _metrics(a, b)
    if plots:
        out.append("\n## Curves (A blue, B orange)\n")
        stem = page.removesuffix(".md").rsplit("/", 1)[-1]
        out += [f"### {PLOT_TITLES.get(name, name)}\n\n![{name}]({stem}/{name}.svg)\n" for name in plots]
    return "\n".join(out) + "\n"


def compare_index(pairs: list[tuple[str, str]]) -> str:
    """The comparison pages of this build, and how to add one."""
    out = [BANNER, "# Comparisons\n"]
    out.append(
        "Pairs come from `tools/site_config.toml` (`compare`); "
        "`python tools/render_site.py --compare RUN_A RUN_B` adds one for a build.\n"
    )
    if not pairs:
        out.append("No pair is configured.")
    out += [
        f"- [{text(a)} vs {text(b)}]({link(f'{COMPARE_DIR}/index.md', compare_path(a, b))})" for a, b in pairs
    ]
    return "\n".join(out) + "\n"
