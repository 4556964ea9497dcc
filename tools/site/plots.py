"""Plots for the evidence pages, drawn with matplotlib and embedded as SVG.

Each function takes the plain data a run left behind (metrics.jsonl lines, a trace summary)
and returns SVG text, so the site generator stays free of plotting details.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: draw to memory only
import matplotlib.pyplot as plt

from tools.site.cache import kept

plt.rcParams["svg.hashsalt"] = "gatestack"  # the same data gives the same SVG, byte for byte
# Text stays text: drawing every label as glyph paths took half the time of a site build's plots
# and made each SVG 60 % larger; the browser renders it in the page's own sans-serif.
plt.rcParams["svg.fonttype"] = "none"


def _svg(fig: Any, margins: dict[str, float] | None = None) -> str:
    """The figure as SVG text. With `margins` (fractions of the figure, as `subplots_adjust` takes
    them) the axes sit there; without, the bounding box is fitted to what was drawn, which costs a
    second drawing of the whole figure."""
    buffer = io.StringIO()
    if margins is None:
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    else:
        fig.subplots_adjust(**margins)
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    return buffer.getvalue()


def _series(lines: list[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    points = [(ln["step"], ln[key]) for ln in lines if ln.get("type") == kind and ln.get(key) is not None]
    return [p[0] for p in points], [float(p[1]) for p in points]


def _named(label: str, what: str) -> str:
    return f"{label}: {what}" if label else what


def _finish(fig: Any, ax: Any, xlabel: str, ylabel: str, legend: bool) -> str:
    """A curve's labels, grid and legend, in fixed margins that fit the curves' tick labels (the
    curves are drawn for every training record, so they skip fitting the bounding box)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    width, height = fig.get_size_inches()
    return _svg(fig, {"left": 0.95 / width, "right": 0.98, "top": 1 - 0.1 / height, "bottom": 0.55 / height})


@kept
def curves(runs: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """name → SVG of loss with held-out loss ± s.e., learning rate, gradient norm, tokens/s and
    coherence, one colour per run: a run page passes one run (label ""), a comparison two."""
    plots: dict[str, str] = {}
    runs = {label: lines for label, lines in runs.items() if _series(lines, "step", "loss")[0]}
    if not runs:
        return plots
    several = len(runs) > 1
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for index, (label, lines) in enumerate(runs.items()):
        colour = f"C{index}"
        steps, loss = _series(lines, "step", "loss")
        ax.plot(
            steps, loss, lw=1, color=colour, alpha=0.6 if several else 1.0, label=_named(label, "train loss")
        )
        eval_steps, heldout = _series(lines, "eval", "heldout_loss")
        if eval_steps:
            _, stderr = _series(lines, "eval", "heldout_stderr")
            ax.errorbar(
                eval_steps,
                heldout,
                yerr=stderr if len(stderr) == len(heldout) else None,
                fmt="o-" if not several else "s--",
                color=colour if several else None,
                ms=4,
                lw=1.5,
                label=_named(label, "held-out loss ± s.e."),
            )
    plots["loss"] = _finish(fig, ax, "step", "loss (nats/token)", legend=True)
    for key, label_y, log, kind, style in (
        ("lr", "learning rate", False, "step", "-"),
        ("grad_norm", "grad norm (unclipped)", True, "step", "-"),
        ("tokens_per_s", "tokens / s", False, "step", "-"),
        ("score", "coherence score", False, "sample", "o-"),
    ):
        series = {label: _series(lines, kind, key) for label, lines in runs.items()}
        if not any(xs for xs, _ in series.values()):
            continue
        fig, ax = plt.subplots(figsize=(7, 2.4))
        for index, (label, (xs, ys)) in enumerate(series.items()):
            ax.plot(xs, ys, style, lw=1, ms=4, color=f"C{index}", label=label or None)
        values = [y for _, ys in series.values() for y in ys]
        if log and values and all(y > 0 for y in values):
            ax.set_yscale("log")
        if key == "score":
            ax.set_ylim(0, 100)
        plots["coherence" if key == "score" else key] = _finish(fig, ax, "step", label_y, legend=several)
    return plots


def training_curves(lines: list[dict[str, Any]]) -> dict[str, str]:
    """name → SVG of one run's curves (see `curves`)."""
    return curves({"": lines})


def heat_map(
    layers: list[str],
    sites: list[str],
    values: list[list[float | None]],
    flagged: set[tuple[int, int]],
    title: str,
) -> str:
    """A layer × site grid of log10 values; flagged cells are outlined in red."""
    grid = [[math.log10(v) if v is not None and v > 0 else float("nan") for v in row] for row in values]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(sites)), max(2.5, 0.35 * len(layers))))
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(sites)), sites, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(layers)), layers, fontsize=8)
    for row, col in flagged:
        ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    fig.colorbar(image, ax=ax, label=f"log10 {title}")
    return _svg(fig)


@kept
def trace_heat_map(report: dict[str, Any]) -> str | None:
    """The std of every layer × site of a `stack trace` report (trace.json), anomalies outlined."""
    sites = [s for s in report.get("trace", {}).get("sites", []) if s.get("layer") is not None]
    if not sites:
        return None
    layers = sorted({s["layer"] for s in sites})
    names = list(dict.fromkeys(s["site"] for s in sites))  # forward order
    grid: list[list[float | None]] = [[None] * len(names) for _ in layers]
    for s in sites:
        grid[layers.index(s["layer"])][names.index(s["site"])] = s["stats"].get("std")
    flagged = {
        (layers.index(entry["layer"]), names.index(site))
        for entry in report.get("per_layer", [])
        for site in entry.get("anomalies", [])
        if entry["layer"] in layers and site in names
    }
    return heat_map([f"layer {i}" for i in layers], names, grid, flagged, "std")


@kept
def position_map(report: dict[str, Any]) -> str | None:
    """A layer × position grid of a `stack lens` reading (KL to the final distribution, nats) or
    of a `stack trace --patch-sweep` (recovered fraction: 0 the corrupted run, 1 the clean one),
    read from the record's trace.json; None for any other report."""
    mode, rows = report.get("mode"), report.get("per_layer") or []
    key = {"logit-lens": "kl", "tuned-lens": "kl", "patch-sweep": "recovered"}.get(str(mode))
    if key is None or not rows or not all(isinstance(r.get(key), list) for r in rows):
        return None
    grid = [[float(v) for v in r[key]] for r in rows]
    tokens = [repr(t)[1:-1] or " " for t in report.get("tokens") or []]
    width = max(len(row) for row in grid)
    labels = tokens if len(tokens) == width else [str(i) for i in range(width)]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * width), max(2.5, 0.4 * len(grid))))
    if key == "recovered":  # diverging around 0, full recovery at 1
        image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
        label = "recovered fraction of the logit difference"
    else:
        image = ax.imshow(grid, aspect="auto", cmap="magma_r", vmin=0)
        label = f"KL to the final distribution, nats ({mode})"
    ax.set_xticks(range(width), labels, fontsize=8)
    ax.set_yticks(range(len(grid)), [f"layer {r.get('layer')}" for r in rows], fontsize=8)
    ax.set_xlabel("position (token)")
    fig.colorbar(image, ax=ax, label=label)
    return _svg(fig)


@kept
def lens_training_chart(report: dict[str, Any]) -> str | None:
    """Per layer, the held-out KL of the logit lens and of the trained tuned lens (GATE-LENS-003
    warns at a layer where the tuned lens is the worse), from a `stack lens --train` record."""
    rows = report.get("per_layer") or []
    if report.get("mode") != "lens-train" or not rows:
        return None
    layers = [r.get("layer") for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(layers, [r.get("kl_logit") for r in rows], marker="o", label="logit lens")
    ax.plot(layers, [r.get("kl_tuned") for r in rows], marker="o", label="tuned lens")
    ax.set_xticks(layers)
    return _finish(fig, ax, "layer", "held-out KL to the final distribution, nats", legend=True)
