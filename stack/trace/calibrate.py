"""Paths (weights × attention backend × dtype) and the fp64 calibration of default tolerances.

A path is a model's weights run under one attention backend in one dtype. Two paths can be
the same weights under different backends or dtypes, or two checkpoints.

Default tolerances are calibrated so that ordinary rounding is not a bug. The *reference path*
of a path is the same weights, in the same dtype, under the naive attention path (the written-
out reference of GATE-MODEL-001). Its error from fp64 at a site is the largest |reference -
fp64| there, where fp64 is the same weights (as loaded, before any cast) run in float64 under
naive attention. A difference between A and B at a site counts only beyond m times the larger
of the two paths' reference errors (m = GATE-TRACE-003's fp64_error_multiple): bf16 drift is
bf16's own error from fp64, a wrong kernel is far beyond it. In shadow mode the reference path
is fed the fp64 run's block inputs too, so its error is the local error of each layer alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_require, measure
from stack.model.checks import runnable_paths
from stack.model.gpt import GPT
from stack.trace.tracer import Trace, trace_forward

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


@dataclass(frozen=True)
class TracePath:
    """Weights (a loaded model, never modified) run under `backend` in `dtype`."""

    weights: GPT
    backend: str
    dtype: str
    label: str  # what the report calls it, e.g. the checkpoint

    def describe(self) -> str:
        return f"{self.label} ({self.backend}, {self.dtype})"

    def model(self) -> GPT:
        """A copy of the weights cast to the path's dtype and switched to its backend."""
        device = self.weights.embed.weight.device
        if self.backend not in runnable_paths(device):
            raise BadInput(
                f"attention backend {self.backend!r} cannot run on {device.type}: "
                "triton needs CUDA or TRITON_INTERPRET=1 (its CPU interpreter)"
            )
        model = copy.deepcopy(self.weights).to(DTYPES[self.dtype]).eval()
        model.set_attention_path(self.backend)
        return model

    def reference(self) -> TracePath:
        """The path's reference path: same weights and dtype, naive attention."""
        return TracePath(self.weights, "naive", self.dtype, self.label)

    def fp64(self) -> TracePath:
        """The same weights in float64 under naive attention."""
        return TracePath(self.weights, "naive", "fp64", self.label)


def dtypes_outcome(traced: dict[str, tuple[TracePath, Trace]]) -> Outcome:
    """GATE-TRACE-002's check dtype: per path (A, B), the dtype its name asks for and the dtypes the
    tensors its forward's hooks saw held (the sites' recorded dtypes, measured on the tensors)."""
    measured = {
        "dtype_asked": {label: path.dtype for label, (path, _) in traced.items()},
        "dtype_seen": {
            label: sorted({site.dtype for site in trace.sites.values()})
            for label, (_, trace) in traced.items()
        },
    }
    return measure("GATE-TRACE-002", measured, holds="every path ran in the dtype asked for")


@gate_require("GATE-TRACE-002", dtypes_outcome)
def check_dtypes(traced: dict[str, tuple[TracePath, Trace]]) -> None:
    """Bound to GATE-TRACE-002 (check dtype): a path whose sites held another dtype than its
    --dtype / --dtype-b names halts the trace before its report is believed."""


def run(path: TracePath, idx: torch.Tensor, feed: dict[str, torch.Tensor] | None = None) -> Trace:
    """A kept trace of `path` on idx (values on), optionally shadow-fed."""
    trace, _ = trace_forward(path.model(), idx, keep=True, feed=feed)
    return trace


def max_abs_error(trace: Trace, truth: Trace) -> dict[str, float]:
    """Per site, the largest |trace - truth| over elements finite on both sides (0 if none).

    A routed site (an expert's tokens) whose rows differ from fp64's, because rounding moved a
    token to another expert, has no element-wise error; it gets 0, so no rounding is excused there.
    """
    errors = {}
    for name, value in trace.values.items():
        if value.shape != truth.values[name].shape:
            errors[name] = 0.0
            continue
        x, y = value.double().reshape(-1), truth.values[name].double().reshape(-1)
        finite = x.isfinite() & y.isfinite()
        diff = (x - y)[finite].abs()
        errors[name] = float(diff.max()) if diff.numel() else 0.0
    return errors


def reference_error(path: TracePath, idx: torch.Tensor, shadow: bool = False) -> dict[str, float]:
    """Per site, how far `path`'s reference path lands from fp64 (locally, per layer, if shadow)."""
    truth = run(path.fp64(), idx)
    return max_abs_error(run(path.reference(), idx, feed=truth.values if shadow else None), truth)


def combined(*errors: dict[str, float]) -> dict[str, float]:
    """Site by site, the largest of several reference errors."""
    return {name: max(e[name] for e in errors) for name in errors[0]}
