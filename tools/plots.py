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

plt.rcParams["svg.hashsalt"] = "gatestack"  # the same data gives the same SVG, byte for byte


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buffer.getvalue()


def _series(lines: list[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    points = [(ln["step"], ln[key]) for ln in lines if ln.get("type") == kind and ln.get(key) is not None]
    return [p[0] for p in points], [float(p[1]) for p in points]


def training_curves(lines: list[dict[str, Any]]) -> dict[str, str]:
    """name → SVG of: loss with held-out loss, learning rate, gradient norm, tokens/s, coherence."""
    plots: dict[str, str] = {}
    steps, loss = _series(lines, "step", "loss")
    if not steps:
        return plots
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(steps, loss, lw=1, label="train loss")
    eval_steps, heldout = _series(lines, "eval", "heldout_loss")
    if eval_steps:
        _, stderr = _series(lines, "eval", "heldout_stderr")
        ax.errorbar(eval_steps, heldout, yerr=stderr, fmt="o-", ms=4, lw=1.5, label="held-out loss ± s.e.")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    plots["loss"] = _svg(fig)
    for key, label, log in (
        ("lr", "learning rate", False),
        ("grad_norm", "gradient norm (before clipping)", True),
        ("tokens_per_s", "tokens / s", False),
    ):
        xs, ys = _series(lines, "step", key)
        fig, ax = plt.subplots(figsize=(7, 2.4))
        ax.plot(xs, ys, lw=1)
        if log and all(y > 0 for y in ys):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        plots[key] = _svg(fig)
    sample_steps, scores = _series(lines, "sample", "score")
    if sample_steps:
        fig, ax = plt.subplots(figsize=(7, 2.4))
        ax.plot(sample_steps, scores, "o-", ms=4)
        ax.set_ylim(0, 100)
        ax.set_xlabel("step")
        ax.set_ylabel("coherence score")
        ax.grid(alpha=0.3)
        plots["coherence"] = _svg(fig)
    return plots


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
