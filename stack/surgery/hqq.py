"""Half-quadratic quantisation (HQQ) of a matrix, and round-to-nearest (RTN) as its baseline.

Both quantise each group of `group` consecutive weights of a row (along the input dimension)
to `bits` bits on an affine grid w ≈ s·(q − z), q an integer in [0, 2^bits − 1]:

* RTN takes the min-max grid: s = (max − min) / (2^bits − 1), z = −min / s, and rounds.
* HQQ (Badri & Shaji, 2023) keeps that scale and optimises the zero-point z by half-quadratic
  splitting of the sparsity-promoting loss ‖W − s·(q − z)‖_p^p, p = 0.7: alternately shrink the
  error with the l_p proximal operator and set z to the mean of q − (W − W_e)/s over the group,
  with β growing by κ each step (the authors' defaults: p 0.7, β 10, κ 1.01, 20 steps). It needs
  no calibration data. Per group the zero-point with the smallest squared error seen is kept, the
  RTN one included, so HQQ can only lose to RTN through a bug (GATE-HQQ-001 checks it is none).

A group must divide a row. Unless one is asked for, each matrix takes the largest power of two up
to 64 (the authors' default) that divides its row, so the presets' feed-forward widths (176 of
`tiny`, 352 of `demo`: 16 · 11 and 32 · 11) quantise in groups of 16 and 32 while the rest keep
64; a size asked for that does not divide some matrix is refused, naming the sizes that would.

The result is stored dequantised, in the matrix's dtype, as the tinygpt validation doc did: the
model is then an ordinary checkpoint every command reads, with the quantisation's error and none
of its memory win. The win needs the integers and the per-group (s, z) stored packed and a
kernel that multiplies by them, which this module does not provide. The weights written must
still be the grid: GATE-HQQ-001's check grid counts each group's distinct values in the model
after the write (at most 2^bits) and holds them to the contracts' dequantisation of the codes,
with one scale and one zero-point per group.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_ensure, gate_require, measure
from contracts.quantisation import dequantise, most_levels, rtn_baseline
from stack.model.targets import Target

DEFAULT_GROUP = 64  # the HQQ authors' default group size, and the largest one picked automatically
MIN_AUTO_GROUP = 8  # the smallest power of two picked automatically; below it, say which sizes divide


@dataclass(frozen=True)
class HalfQuadratic:
    """The optimiser's settings (the HQQ authors' defaults)."""

    lp_norm: float = 0.7
    beta: float = 10.0
    kappa: float = 1.01
    iters: int = 20


@dataclass(frozen=True)
class Quantised:
    """One matrix quantised and stored dequantised, with its grid: the integer code of each weight
    (groups, group) and each group's scale and zero-point, (groups, 1) each."""

    site: str
    weight: torch.Tensor
    bits: int
    group: int
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor


def grouped(weight: torch.Tensor, group: int) -> torch.Tensor:
    """The weights as (groups, group) rows in float64 (`group` divides a row: `group_sizes`)."""
    return weight.detach().double().reshape(-1, group)


def _divisors(n: int, up_to: int = 4 * DEFAULT_GROUP) -> list[int]:
    return [d for d in range(2, min(n, up_to) + 1) if n % d == 0]


def auto_group(columns: int) -> int | None:
    """The largest power of two up to DEFAULT_GROUP that divides `columns`, or None below MIN_AUTO_GROUP."""
    group = DEFAULT_GROUP
    while group >= MIN_AUTO_GROUP:
        if columns % group == 0:
            return group
        group //= 2
    return None


def group_sizes(targets: list[Target], requested: int | None) -> list[int]:
    """Each target's group size along its rows: `requested` where given, else `auto_group` per matrix.

    A size that does not divide some matrix's columns is refused before any work, naming the
    sizes that would divide every chosen matrix; so is a matrix no automatic size divides.
    """
    columns = [t.weight.shape[-1] for t in targets]
    if requested is None:
        sizes = [auto_group(c) for c in columns]
        for target, width, size in zip(targets, columns, sizes, strict=True):
            if size is None:
                # one --group-size serves every chosen matrix: the sizes dividing them all
                common = _divisors(math.gcd(*columns))
                fix = (
                    f"pass --group-size G with G one of {_listed(common)}"
                    if common
                    else "choose fewer --targets"
                )
                raise BadInput(
                    f"no power of two from {MIN_AUTO_GROUP} to {DEFAULT_GROUP} divides the {width} columns "
                    f"of {target.site}; {fix} (a size that divides every chosen matrix)"
                )
        return [s for s in sizes if s is not None]
    misfits = [(t.site, c) for t, c in zip(targets, columns, strict=True) if c % requested]
    if misfits:
        site, width = misfits[0]
        others = f" (and of {len(misfits) - 1} more matrices)" if len(misfits) > 1 else ""
        common = _divisors(math.gcd(*columns))
        fits = f"sizes that divide every chosen matrix: {_listed(common)}; " if common else ""
        raise BadInput(
            f"--group-size {requested} does not divide the {width} columns of {site}{others}; "
            f"{fits}or leave --group-size out to pick one per matrix"
        )
    return [requested] * len(targets)


def _listed(sizes: list[int]) -> str:
    return ", ".join(map(str, sizes)) if sizes else "none"


def minmax_grid(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group the scale and zero-point that map [min, max] onto [0, 2^bits − 1]."""
    low, high = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    scale = (high - low) / (2**bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant group: any scale is exact
    return scale, -low / scale


def levels(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """The integer level of each weight on the grid (scale, zero)."""
    return torch.clamp(torch.round(w / scale + zero), 0, 2**bits - 1)


def dequantised(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """What the grid (scale, zero) stores of `w`: s·(q − z)."""
    return scale * (levels(w, scale, zero, bits) - zero)


def _squared_error(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    return (w - dequantised(w, scale, zero, bits)).square().sum(dim=1, keepdim=True)


def _shrink(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    """The proximal operator of the l_p penalty (p < 1), as the HQQ paper's generalised soft threshold."""
    magnitude = x.abs()
    return torch.sign(x) * torch.relu(magnitude - magnitude.clamp_min(1e-12).pow(p - 1) / beta)


def optimise_zero(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, settings: HalfQuadratic
) -> torch.Tensor:
    """The zero-points after half-quadratic splitting, each group keeping its best seen (RTN's first)."""
    best, best_error = zero, _squared_error(w, scale, zero, bits)
    beta = settings.beta
    for _ in range(settings.iters):
        q = levels(w, scale, zero, bits)
        w_e = _shrink(w - scale * (q - zero), beta, settings.lp_norm)
        zero = (q - (w - w_e) / scale).mean(dim=1, keepdim=True)
        beta *= settings.kappa
        error = _squared_error(w, scale, zero, bits)
        better = error < best_error
        best, best_error = torch.where(better, zero, best), torch.where(better, error, best_error)
    return best


def hqq(target: Target, bits: int, group: int, settings: HalfQuadratic) -> Quantised:
    """HQQ of one target on the min-max scale with an optimised zero-point: its weights dequantised in
    their shape and dtype, with the codes and the grid they came from."""
    weight = target.weight
    w = grouped(weight, group)
    scale, zero = minmax_grid(w, bits)
    zero = optimise_zero(w, scale, zero, bits, settings)
    stored = dequantised(w, scale, zero, bits).reshape(weight.shape).to(weight.dtype)
    return Quantised(target.site, stored, bits, group, levels(w, scale, zero, bits), scale, zero)


def error_outcome(targets: list[Target], quantised: list[Quantised]) -> Outcome:
    """GATE-HQQ-001: per matrix, the Frobenius error of HQQ as stored against RTN's at its bits and
    group, RTN as the contracts define it (contracts.quantisation), not on the quantiser's own grid."""
    rows = []
    for target, q in zip(targets, quantised, strict=True):
        original = target.weight.detach().double()
        baseline = rtn_baseline(target.weight, q.bits, q.group).to(target.weight.dtype).double()
        rows.append(
            {
                "matrix": q.site,
                "hqq_error": float(torch.linalg.matrix_norm(original - q.weight.double())),
                "rtn_error": float(torch.linalg.matrix_norm(original - baseline)),
            }
        )
    return measure("GATE-HQQ-001", {"matrices": rows}, holds="HQQ is no worse than round-to-nearest")


@gate_ensure("GATE-HQQ-001", lambda targets, result: error_outcome(targets, result))
@torch.no_grad()
def quantise(
    targets: list[Target],
    bits: int,
    group: int | None,
    settings: HalfQuadratic,
    reached: Callable[[int, int], None] = lambda _done, _total: None,
) -> list[Quantised]:
    """Every target quantised by HQQ in groups of `group` weights (None: `auto_group` per matrix);
    the model is not changed (`changes.write_weights` does). `reached(done, total)` after each
    matrix, for progress on long work."""
    sizes = group_sizes(targets, group)
    done = []
    for target, size in zip(targets, sizes, strict=True):
        done.append(hqq(target, bits, size, settings))
        reached(len(done), len(targets))
    return done


def grid_outcome(
    model: nn.Module, targets: list[Target], quantised: list[Quantised], bits: int, requested: int | None
) -> Outcome:
    """GATE-HQQ-001's check grid, on the weights written into the model (the tensor its state holds
    under each target's key after `changes.write_weights`): per matrix, the most distinct values a group holds
    (contracts.quantisation.most_levels), the range of the quantiser's codes and whether they are
    integers, how many scales and zero-points it kept (one each per group), and how many written
    weights differ from the contracts' dequantisation of its codes, in the weight's dtype. And its
    check requested: beside the rows, the --group-size the command's settings state (`requested`,
    None for one picked per matrix), which every row's group, pinned to the grid by its count of
    scales, must be."""
    state, rows = model.state_dict(), []
    for target, q in zip(targets, quantised, strict=True):
        written = state[target.keys[0]].detach()
        again = dequantise(q.codes, q.scale, q.zero).reshape(written.shape).to(written.dtype)
        rows.append(
            {
                "matrix": q.site,
                "key": target.keys[0],
                "group": q.group,
                "groups": written.numel() // q.group,
                "levels": most_levels(written, q.group),
                "codes_min": float(q.codes.min()) + 0.0,  # never -0.0
                "codes_max": float(q.codes.max()),
                "codes_integral": bool(torch.equal(q.codes, q.codes.round())),
                "scales": q.scale.numel(),
                "zeros": q.zero.numel(),
                "unreproduced": int((again != written).sum()),
            }
        )
    measured = {"grid": rows, "bits": bits, "group_requested": requested}
    return measure("GATE-HQQ-001", measured, holds=f"every written group lies on a {bits}-bit grid")


@gate_require("GATE-HQQ-001", grid_outcome)
def check_grid(
    model: nn.Module, targets: list[Target], quantised: list[Quantised], bits: int, requested: int | None
) -> None:
    """Refuse quantised weights, as written, that are not a 2^bits-level grid per group reproduced
    by dequantising the quantiser's codes, or whose groups are not the `requested` size."""
