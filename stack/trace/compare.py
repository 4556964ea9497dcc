"""One site of path A against the same site of path B, in the manner of Polygraphy's reports.

An element fails only when it is over BOTH tolerances: |a - b| > atol and |a - b| / |a| > rtol
(a is path A, the reference). Non-finite elements agree only with the same non-finite value at
the same position. The comparison also says the minimum tolerance that would have passed:
the atol that suffices at the given rtol, and the rtol that suffices at the given atol.
Whether the site diverges is GATE-TRACE-003's judge's to say, from what the comparison measured:
the counts and tolerances here are the report's numbers, not the verdict.

Tolerances come per site from a `TolerancePolicy`: by default atol = m × the reference error
(how far the reference path lands from fp64 at that site, see stack.trace.calibrate) and
rtol = GATE-TRACE-003's default_rtol (0), with m = its fp64_error_multiple; `--atol`/`--rtol` rules, each
`GLOB=VALUE` or a bare VALUE for every site, replace them where they match (the last match wins).
GATE-TRACE-003's check `tolerance` holds the tolerance every compared site of the report was judged
at to the rule contracts.trace_tolerance states from the command line's --atol/--rtol words (a
policy handed no rules would judge every site at its calibrated tolerance while `--atol 0.05` was
asked).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_require, measure
from contracts.judges import judge
from contracts.spec import load_spec
from contracts.trace_tolerance import judged_tolerances
from stack.trace.sites import split
from stack.trace.tracer import SiteRecord

QUANTILES = (0.5, 0.99)


@dataclass(frozen=True)
class Tolerance:
    """The tolerance one site was judged by, and where it came from.

    `reference_error` is the site's error from fp64 when the atol was calibrated from it (the judge
    then allows its own multiple of it); None when the atol was given (`--atol`, or a fixed
    tolerance such as ablation's exact one), which the judge then allows instead.
    """

    atol: float
    rtol: float
    source: str
    reference_error: float | None = None


@dataclass(frozen=True)
class ToleranceRule:
    """`--atol GLOB=VALUE` or `--rtol GLOB=VALUE`: which sites, which bound."""

    pattern: str
    bound: str  # "atol" | "rtol"
    value: float


def parse_rules(atol: list[str], rtol: list[str]) -> list[ToleranceRule]:
    """Command-line tolerance rules in the order given; a malformed one is bad input."""
    rules = []
    for bound, items in (("atol", atol), ("rtol", rtol)):
        for item in items:
            pattern, _, text = item.rpartition("=")
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0:
                raise BadInput(f"--{bound} {item!r}: write VALUE or GLOB=VALUE with VALUE >= 0 (e.g. 1e-3)")
            rules.append(ToleranceRule(pattern or "*", bound, value))
    return rules


class TolerancePolicy:
    """Per-site tolerances: calibrated from fp64 by default, overridden by rules."""

    def __init__(self, reference_error: dict[str, float], rules: list[ToleranceRule]) -> None:
        self.reference_error = reference_error
        self.rules = rules
        spec = load_spec()
        self.multiple = float(spec.threshold("GATE-TRACE-003", "fp64_error_multiple"))
        self.default_rtol = float(spec.threshold("GATE-TRACE-003", "default_rtol"))

    def for_site(self, name: str) -> Tolerance:
        """The tolerance of one site."""
        error = self.reference_error.get(name, 0.0)  # none measured: no rounding is excused
        atol, rtol, calibrated_from = self.multiple * error, self.default_rtol, error
        sources = [f"atol {self.multiple:g} × fp64 error {error:.3g}"]
        short = split(name)[1]
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, rule.pattern) or fnmatch.fnmatchcase(short, rule.pattern):
                if rule.bound == "atol":
                    atol, calibrated_from = rule.value, None
                    sources[0] = f"--atol {rule.pattern}={rule.value:g}"
                else:
                    rtol = rule.value
                    sources = [sources[0], f"--rtol {rule.pattern}={rule.value:g}"]
        return Tolerance(atol, rtol, ", ".join(sources), calibrated_from)


@dataclass(frozen=True)
class ErrorStats:
    """max, mean, median and 99th percentile of an error over the compared elements."""

    max: float
    mean: float
    median: float
    p99: float


@dataclass(frozen=True)
class SiteComparison:
    """Everything the report says about one site of A against B."""

    name: str
    a: SiteRecord
    b: SiteRecord
    tolerance: Tolerance
    elements: int  # compared (all of them, or the dump's sample)
    failing: int  # elements over both tolerances, plus non-finite mismatches
    nonfinite_mismatch: int
    abs_error: ErrorStats
    rel_error: ErrorStats
    cosine: float
    sqnr_db: float
    min_atol: float  # the smallest atol that passes at this rtol
    min_rtol: float  # the smallest rtol that passes at this atol
    sampled: bool
    divergence: tuple[str, ...]  # what GATE-TRACE-003's judge found here; none: the paths agree

    @property
    def passed(self) -> bool:
        return not self.divergence


def _error_stats(errors: torch.Tensor) -> ErrorStats:
    if errors.numel() == 0:
        return ErrorStats(0.0, 0.0, 0.0, 0.0)
    ordered = errors.sort().values
    last = ordered.numel() - 1
    median, p99 = (ordered[round(q * last)] for q in QUANTILES)
    values = torch.stack([ordered[-1], ordered.mean(), median, p99]).tolist()
    return ErrorStats(*values)


def _largest(values: torch.Tensor) -> float:
    return float(values.max()) if values.numel() else 0.0


def _divergence(tol: Tolerance, over_rtol: float, mismatch: int, same_shape: bool) -> tuple[str, ...]:
    """GATE-TRACE-003's verdict on one site, from what the comparison measured there.

    `over_rtol` is the largest |a - b| among the elements over the site's rtol (the site's
    `min_atol`): an element is over both tolerances exactly when it is beyond the atol allowed.
    """
    measured = {
        "max_abs_error_over_rtol": over_rtol,
        "reference_error": tol.reference_error,
        "given_atol": tol.atol if tol.reference_error is None else None,
        "nonfinite_mismatch": mismatch,
        "same_shape": same_shape,
    }
    return tuple(judge("GATE-TRACE-003", measured))


def compare_site(
    name: str,
    a: SiteRecord,
    b: SiteRecord,
    va: torch.Tensor,
    vb: torch.Tensor,
    tol: Tolerance,
    *,
    sampled: bool = False,
) -> SiteComparison:
    """Compare the values of one site (computed in float64 on the host)."""
    if a.shape != b.shape:
        nan = ErrorStats(math.nan, math.nan, math.nan, math.nan)
        verdict = _divergence(tol, math.inf, 0, same_shape=False)
        return SiteComparison(
            name, a, b, tol, 0, 0, 0, nan, nan, math.nan, math.nan, math.inf, math.inf, sampled, verdict
        )
    x = va.detach().reshape(-1).to("cpu", torch.float64)
    y = vb.detach().reshape(-1).to("cpu", torch.float64)
    finite = x.isfinite() & y.isfinite()
    same_nonfinite = ~x.isfinite() & ((x == y) | (x.isnan() & y.isnan()))
    mismatch = int((~finite & ~same_nonfinite).sum())
    x, y = x[finite], y[finite]
    abs_err = (x - y).abs()
    reference = x.abs()
    # An element of A that is exactly zero makes any difference infinitely relative.
    rel_err = torch.where(abs_err == 0, 0.0, abs_err / reference)
    over_atol, over_rtol = abs_err > tol.atol, rel_err > tol.rtol
    norms = x.norm() * y.norm()
    cosine = float((x @ y) / norms) if norms > 0 else float(x.norm() == y.norm())
    noise = float(abs_err.square().sum())
    signal = float(x.square().sum())
    sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    min_atol = _largest(abs_err[over_rtol])
    return SiteComparison(
        name=name,
        a=a,
        b=b,
        tolerance=tol,
        elements=int(va.numel()),
        failing=int((over_atol & over_rtol).sum()) + mismatch,
        nonfinite_mismatch=mismatch,
        abs_error=_error_stats(abs_err),
        rel_error=_error_stats(rel_err),
        cosine=cosine,
        sqnr_db=sqnr,
        min_atol=min_atol,
        min_rtol=_largest(rel_err[over_atol]),
        sampled=sampled,
        divergence=_divergence(tol, min_atol, mismatch, same_shape=True),
    )


def tolerances_outcome(atol: list[str], rtol: list[str], payload: Mapping[str, Any]) -> Outcome:
    """GATE-TRACE-003's check `tolerance`: the command line's --atol/--rtol words and the tolerance
    each compared site of the report was judged at."""
    measured = {
        "atol_asked": list(atol),
        "rtol_asked": list(rtol),
        "site_tolerances": judged_tolerances(payload),
    }
    return measure("GATE-TRACE-003", measured, holds="every site judged at the tolerance asked for")


@gate_require("GATE-TRACE-003", tolerances_outcome)
def check_tolerances(atol: list[str], rtol: list[str], payload: Mapping[str, Any]) -> None:
    """Refuse a bisection any of whose sites was judged at another tolerance than --atol/--rtol ask
    for there (or, where none matches, than the calibrated atol and the default rtol)."""
