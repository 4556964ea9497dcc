"""The tolerance `stack trace --atol/--rtol` asks for at each site of a bisection, and where a
report shows the tolerance each site was judged at.

It lives in the contracts, apart from the stack's policy (stack.trace.compare.TolerancePolicy),
because a policy handed no rules is self-consistent whatever the command line said: a trace that
drops `--atol 0.05` judges every site at its calibrated tolerance (0.18 at the norms, looser
than asked), records each site's tolerance honestly, and passes every other gate.
GATE-TRACE-003's check `tolerance` holds the tolerance of every compared site to this rule, at run
time from the command line and in the checker from the record's config and trace.json:

* each `--atol`/`--rtol` word is `GLOB=VALUE` or a bare `VALUE` (every site: `*`);
* a rule matches a site when its glob matches the site's full name or its kind (the part after
  `layers.<i>.`); of the rules of one bound that match, the last given wins;
* a site no `--atol` rule matches is judged at its calibrated atol (GATE-TRACE-003's
  fp64_error_multiple × the reference path's error from fp64 there), one no `--rtol` rule matches
  at GATE-TRACE-003's default_rtol.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

from contracts.selection import layer_of


def _rule(word: str) -> tuple[str, float]:
    """(glob, value) of one `--atol`/`--rtol` word; ValueError where VALUE is no number."""
    pattern, _, text = word.rpartition("=")
    return pattern or "*", float(text)


def asked_bounds(site: str, atol: Sequence[str], rtol: Sequence[str]) -> tuple[float | None, float | None]:
    """The (atol, rtol) the command line's words ask for at `site`, None for a bound no rule of it
    matches (the calibrated atol, the default rtol apply)."""
    kind = site.split(".", 2)[2] if layer_of(site) is not None else site
    bounds: list[float | None] = []
    for words in (atol, rtol):
        value = None
        for pattern, given in map(_rule, words):
            if fnmatch.fnmatchcase(site, pattern) or fnmatch.fnmatchcase(kind, pattern):
                value = given
        bounds.append(value)
    return bounds[0], bounds[1]


def judged_tolerances(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tolerance each compared site of a bisection report (trace.json's `comparisons`, and
    `shadow` under --shadow) was judged at: its name, atol, rtol and the reference error the atol
    was calibrated from (None where a rule gave it)."""
    rows = [*(report.get("comparisons") or []), *(report.get("shadow") or [])]
    return [
        {
            "name": row.get("name"),
            "atol": (row.get("tolerance") or {}).get("atol"),
            "rtol": (row.get("tolerance") or {}).get("rtol"),
            "reference_error": (row.get("tolerance") or {}).get("reference_error"),
        }
        for row in rows
        if isinstance(row, Mapping)
    ]


def tolerance_margins(a: Any, b: Any, atol: float, rtol: float) -> dict[str, float]:
    """The minimum tolerances that pass at one site of a bisection, from the two paths' values
    there (A the reference), in float64 over the elements finite on both sides:

    * `min_atol`, the largest |a − b| among the elements over `rtol` (|a − b| / |a| > rtol, an
      element of A exactly 0 making any difference infinitely relative): the atol that suffices at
      this rtol, which is also what decides the site (an element is over both tolerances exactly
      when it is beyond the atol allowed);
    * `min_rtol`, the largest |a − b| / |a| among the elements over `atol`.

    0 where no element is over; both infinite where the shapes differ. It lives here, apart from
    stack.trace.compare, because the report's margins feed the verdict itself: a margin taken over
    the wrong elements (over atol, so 0.0 at every site) judges nothing.
    """
    import torch

    x, y = torch.as_tensor(a), torch.as_tensor(b)
    if tuple(x.shape) != tuple(y.shape):
        return {"min_atol": math.inf, "min_rtol": math.inf}
    x, y = x.detach().reshape(-1).to("cpu", torch.float64), y.detach().reshape(-1).to("cpu", torch.float64)
    finite = x.isfinite() & y.isfinite()
    x, y = x[finite], y[finite]
    difference = (x - y).abs()
    relative = torch.where(difference == 0, 0.0, difference / x.abs())
    over_rtol, over_atol = difference[relative > rtol], relative[difference > atol]
    return {
        "min_atol": float(over_rtol.max()) if over_rtol.numel() else 0.0,
        "min_rtol": float(over_atol.max()) if over_atol.numel() else 0.0,
    }
