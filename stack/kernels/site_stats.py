"""A trace site's statistics in Triton launches: tile partials as the site is shown, then a merge.

    row = site_stats_fused(x)   # float64 (9,): mean, std, min, max, absmax, nan, inf, zero, l1

On a GPU the tracer's cost is not arithmetic but launches: the torch-op statistics
(stack/trace/stats.py) take about fifteen small kernels per site, and a traced forward has
hundreds of sites. Here the first kernel reads every element once, where it lies, in tiles
(`Tile`), and each of its programs writes the partial statistics of its tiles (count of
finite-or-not elements, sum, sum of squared deviations from their mean, min, max, NaN, Inf and
zero counts, and the sum of |x| in float64, a column of a matrix with a row per statistic); the
merge, a program a site, merges a site's columns into its row. Both merge with Chan's pairwise
update for the variance, so the std is as stable as a two-pass one. A traced forward queues its
sites' merges and launches them together after the forward (`merge_all`): a launch for every
site, and one for the forward.

A site is read in its own layout: rows of contiguous elements at a fixed stride
(stack.kernels.host_stats.rows_of), as a slice of a fused projection hands over q, k, v, the gate
and the up projection, in tiles of whole rows (or of row pieces, for rows longer than a tile). So
no site is copied to make it contiguous (a copy as large as the activation, and a launch), and
an element's address needs no division. Where the tracer asks for a site's sampled token rows
(GATE-TRACE-002's identities read them after the forward), the partials' launch copies them too,
as the CPU kernel does in its visit, and the row is written where the caller keeps it (the
forward's statistics matrix): a traced site costs one launch and its share of the merge's, with
no copy of its row, no gather of its sampled rows and no copy of the site besides.

Conventions are the tracer's (docs/trace.md): population std; a NaN anywhere makes mean, std,
min, max and absmax NaN; an Inf makes the mean infinite (or NaN for +Inf and -Inf) and the std
NaN. Every sum runs in float64 (l1 included, so one ulp in one element still moves it). A float64
site is left to the torch path, which keeps its precision. The float64 reference test holds both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from contracts.device_copy import sent
from stack.kernels.host_stats import rows_of

MERGE_BLOCK = 1024  # programs' partials a merge program reads per step
MERGE_WARPS = 8  # a merge program's warps: 4 elements a thread, whose accumulators fit registers
PARTIALS = 9  # count, sum, m2, min, max, nan, inf, zero, l1 per program
ELEMENTS_PER_THREAD = 8  # of a tile, in a program of the partials kernel (Tile.warps)


@dataclass(frozen=True)
class Tile:
    """How the partials kernel cuts a site: tiles of `elements` elements (a power of two: whole rows,
    or pieces of a longer row), `per_program` consecutive tiles to a program, which reduces each
    into its partials as it reads it and writes one column. More tiles a program mean fewer
    programs and fewer columns for the merge to read, but a small site then
    leaves most of the GPU's multiprocessors idle: with `programs` (0: none), a site is dealt to at
    most that many programs instead, each its equal share of consecutive tiles, so that a site
    smaller than the cap keeps a program a tile and only a larger one shares programs out. Which
    is fastest is the GPU's to say (benchmarks/stats_tiles.py)."""

    elements: int = 2048
    per_program: int = 1
    programs: int = 0

    def __str__(self) -> str:
        """As a command line names it (`benchmarks/trace_overhead.py --tile 2048x16`, or 2048/1024
        for tiles of 2,048 elements dealt to at most 1,024 programs a site)."""
        return f"{self.elements}/{self.programs}" if self.programs else f"{self.elements}x{self.per_program}"

    def shares(self, tiles: int) -> int:
        """The tiles each program of a site of `tiles` tiles reads."""
        return triton.cdiv(tiles, self.programs) if self.programs else self.per_program

    @property
    def warps(self) -> int:
        """The warps a program runs on: a thread per ELEMENTS_PER_THREAD elements of a tile, 4 to 8
        warps of 32 threads. A thread holds its elements of the tile it is reducing and the
        program's partials (`_partials`), so the registers a thread takes grow with its elements:
        tests/kernels/test_kernel_compile.py holds every tile to none spilled to memory."""
        return min(8, max(4, self.elements // (32 * ELEMENTS_PER_THREAD)))


# The tile every traced forward's statistics use on CUDA: the one the H200 records of docs/gpu.md
# ("Tracing on a GPU") ran; benchmarks/stats_tiles.py times the others against it.
TILE = Tile()

# The tile of the traced forwards run now: TILE, but inside `cut_in`.
_CUT: ContextVar[Tile] = ContextVar("tile", default=TILE)


@contextmanager
def cut_in(tile: Tile) -> Iterator[None]:
    """Every site's statistics computed inside cut in `tile` instead of TILE: a traced forward timed
    at a candidate of benchmarks/stats_tiles.py (benchmarks/trace_overhead.py --tile), measured
    before anyone copies the candidate into TILE."""
    token = _CUT.set(tile)
    try:
        yield
    finally:
        _CUT.reset(token)


@triton.jit
def _tile_partials(X, top, left, rows, cols, stride, shift, ROWS: tl.constexpr, COLS: tl.constexpr):
    """One tile's partial statistics, each reduced across the program's threads at once: (elements,
    Σ(x − shift), Σ(x − shift)², Σ|x|, min, max, NaNs, Infs, zeros), the sums in float64, min and
    max in float32 (which holds a float32, bf16 or fp16 element exactly; where the site holds a NaN
    the merge writes NaN for both, whatever a tile's were). The tile's first element is (top,
    left): one past the site's last tile (a program's, when it has fewer left) starts below the
    site's last row and reads no element."""
    r, c = top + tl.arange(0, ROWS), left + tl.arange(0, COLS)
    valid = (r[:, None] < rows) & (c[None, :] < cols)
    # Its elements, counted from where it starts (no reduction): a tile is cut short only at the
    # site's last row and last column, and one past the last tile has none.
    height = tl.maximum(tl.minimum(rows - top, ROWS), 0)
    n = height.to(tl.float64) * tl.minimum(cols - left, COLS).to(tl.float64)
    # float32 right after the load, exact for every dtype read here (and computed right by
    # Triton's interpreter, which gets bf16 wrong); float64 only inside the sums. An element outside
    # the site reads as 0: no NaN, no Inf and nothing to |x|, so only the zeros, the deviations, min
    # and max must leave it out.
    x = tl.load(X + r[:, None] * stride + c[None, :], mask=valid, other=0.0).to(tl.float32)
    wide = x.to(tl.float64)  # one conversion an element: a 64-bit one runs at a quarter of an add's rate
    deviation = tl.where(valid, wide - shift, 0.0)
    return (
        n,
        tl.sum(deviation),
        tl.sum(deviation * deviation),
        tl.sum(tl.abs(wide)),
        tl.min(tl.where(valid, x, float("inf"))),
        tl.max(tl.where(valid, x, float("-inf"))),
        tl.sum((x != x).to(tl.int32)),
        tl.sum((tl.abs(x) == float("inf")).to(tl.int32)),
        tl.sum(((x == 0.0) & valid).to(tl.int32)),
    )


@triton.jit
def _partials(
    X,
    P,
    rows,
    cols,
    stride,
    col_tiles,
    per_program,
    AT,
    copies,
    width,
    DST,
    ROWS: tl.constexpr,
    COLS: tl.constexpr,
    PER_PROGRAM: tl.constexpr,
):
    """The partial statistics of tiles PER_PROGRAM · program on (PER_PROGRAM of them, those the site
    has; where PER_PROGRAM is 0, `per_program` of them, a site's share of a capped grid, counted
    at run time so that sites of other sizes share one compiled kernel) into column `program` of P
    (float64, a row per statistic): of a site of `rows` rows of `cols` elements, `stride` elements
    apart, cut in tiles of ROWS rows × COLS columns, `col_tiles` to a row, counted in row-major
    order. The programs also copy the `copies` token rows AT[0..copies) of the site (rows of
    `width` elements) one after another into DST, element for element, each program every
    num_programs-th of them: the site is read where the forward shows it, before anything after it
    could write into it.

    Each tile is reduced across the program's threads as soon as it is read, into a program's
    scalars (`_tile_partials`), so a thread holds its elements of one tile and nothing per element
    besides. Compiled for Hopper at the tile in use (2,048 elements on 8 warps) a thread takes 52
    to 60 registers, where accumulators kept per element across the tiles took 92 to 102: four
    programs fit a multiprocessor's 65,536 registers instead of two, with twice the loads in
    flight (`python -m tests.support.kernel_compile` reads the counts). The sums run around a
    shift, the program's first element (0 when that is not finite), as the CPU kernel's do
    (stack/kernels/host_stats.c): the squared deviations are q − s²/n of s = Σ(x − shift) and
    q = Σ(x − shift)², in float64, which loses at most a factor n + 1 of its precision since the
    shift is one of the elements."""
    program = tl.program_id(0).to(tl.int64)
    count = per_program
    if PER_PROGRAM > 0:
        count = PER_PROGRAM
    first = program * count
    # Where the program's tiles start, and from there tile by tile in row-major order: a division
    # once, not one a tile (a 64-bit one is a call, and the registers it saves spill to the stack).
    top, tile_column = (first // col_tiles) * ROWS, first % col_tiles
    origin = X + top * stride + tile_column * COLS
    shift = tl.load(origin).to(tl.float64)
    shift = tl.where((shift == shift) & (tl.abs(shift) != float("inf")), shift, 0.0)
    n = tl.full([], 0.0, tl.float64)
    s = tl.full([], 0.0, tl.float64)
    q = tl.full([], 0.0, tl.float64)
    low = tl.full([], float("inf"), tl.float32)
    high = tl.full([], float("-inf"), tl.float32)
    nans = tl.full([], 0, tl.int32)
    infs = tl.full([], 0, tl.int32)
    zeros = tl.full([], 0, tl.int32)
    l1 = tl.full([], 0.0, tl.float64)
    for _ in range(count):
        part = _tile_partials(X, top, tile_column * COLS, rows, cols, stride, shift, ROWS, COLS)
        tile_column += 1
        top = tl.where(tile_column == col_tiles, top + ROWS, top)
        tile_column = tl.where(tile_column == col_tiles, 0, tile_column)
        n += part[0]
        s += part[1]
        q += part[2]
        l1 += part[3]
        low = tl.minimum(low, part[4])
        high = tl.maximum(high, part[5])
        nans += part[6]
        infs += part[7]
        zeros += part[8]
    m2 = q - s * s / tl.maximum(n, 1.0)
    # Column `program` of P, statistic k at row k: the merge reads each statistic of consecutive
    # programs from consecutive addresses (coalesced), not nine doubles apart.
    column, programs = P + program, tl.num_programs(0).to(tl.int64)
    tl.store(column + 0 * programs, n)
    tl.store(column + 1 * programs, n * shift + s)
    tl.store(column + 2 * programs, tl.where(m2 > 0.0, m2, 0.0))
    tl.store(column + 3 * programs, low.to(tl.float64))
    tl.store(column + 4 * programs, high.to(tl.float64))
    tl.store(column + 5 * programs, nans.to(tl.float64))
    tl.store(column + 6 * programs, infs.to(tl.float64))
    tl.store(column + 7 * programs, zeros.to(tl.float64))
    tl.store(column + 8 * programs, l1)
    for i in range(program, copies, programs):
        first = tl.load(AT + i) * width
        source = X + (first // cols) * stride + first % cols
        for start in range(0, width, ROWS * COLS):
            offsets = start + tl.arange(0, ROWS * COLS)
            inside = offsets < width
            tl.store(DST + i * width + offsets, tl.load(source + offsets, mask=inside), mask=inside)


@triton.jit
def _merge(SITES, MERGE_BLOCK: tl.constexpr):
    """Site `program`'s partials into its row: SITES holds a site a row, (the address of its
    partials, the programs that wrote them, the address of its row), and the partials are a column
    per program, a row per statistic (float64). Sums add, m2 merges by Chan's update."""
    entry = SITES + tl.program_id(0).to(tl.int64) * 3
    P = tl.load(entry).to(tl.pointer_type(tl.float64), bitcast=True)
    blocks = tl.load(entry + 1)
    OUT = tl.load(entry + 2).to(tl.pointer_type(tl.float64), bitcast=True)
    total = tl.zeros([MERGE_BLOCK], tl.float64)
    count = tl.zeros([MERGE_BLOCK], tl.float64)
    low = tl.full([MERGE_BLOCK], float("inf"), tl.float64)
    high = tl.full([MERGE_BLOCK], float("-inf"), tl.float64)
    nans = tl.zeros([MERGE_BLOCK], tl.float64)
    infs = tl.zeros([MERGE_BLOCK], tl.float64)
    zeros = tl.zeros([MERGE_BLOCK], tl.float64)
    l1 = tl.zeros([MERGE_BLOCK], tl.float64)
    for start in range(0, blocks, MERGE_BLOCK):
        rows = start + tl.arange(0, MERGE_BLOCK)
        valid = rows < blocks
        count += tl.load(P + 0 * blocks + rows, mask=valid, other=0.0)
        total += tl.load(P + 1 * blocks + rows, mask=valid, other=0.0)
        low = tl.minimum(low, tl.load(P + 3 * blocks + rows, mask=valid, other=float("inf")))
        high = tl.maximum(high, tl.load(P + 4 * blocks + rows, mask=valid, other=float("-inf")))
        nans += tl.load(P + 5 * blocks + rows, mask=valid, other=0.0)
        infs += tl.load(P + 6 * blocks + rows, mask=valid, other=0.0)
        zeros += tl.load(P + 7 * blocks + rows, mask=valid, other=0.0)
        l1 += tl.load(P + 8 * blocks + rows, mask=valid, other=0.0)
    n_all = tl.sum(count)
    mean = tl.sum(total) / n_all
    # Chan: M2 = sum of the blocks' M2 + sum of count_b * (mean_b - mean)^2.
    m2 = tl.zeros([MERGE_BLOCK], tl.float64)
    for start in range(0, blocks, MERGE_BLOCK):
        rows = start + tl.arange(0, MERGE_BLOCK)
        valid = rows < blocks
        c = tl.load(P + 0 * blocks + rows, mask=valid, other=1.0)
        block_mean = tl.load(P + 1 * blocks + rows, mask=valid, other=0.0) / c
        shift = tl.where(valid, block_mean - mean, 0.0)
        m2 += tl.load(P + 2 * blocks + rows, mask=valid, other=0.0) + tl.where(valid, c * shift * shift, 0.0)
    std = tl.sqrt(tl.sum(m2) / n_all)
    lo, hi = tl.min(low), tl.max(high)
    n_nan, n_inf = tl.sum(nans), tl.sum(infs)
    nan = float("nan")
    tl.store(OUT + 0, tl.where(n_nan > 0, nan, mean))
    tl.store(OUT + 1, tl.where(n_nan + n_inf > 0, nan, std))
    tl.store(OUT + 2, tl.where(n_nan > 0, nan, lo))
    tl.store(OUT + 3, tl.where(n_nan > 0, nan, hi))
    tl.store(OUT + 4, tl.where(n_nan > 0, nan, tl.maximum(-lo, hi)))
    tl.store(OUT + 5, n_nan)
    tl.store(OUT + 6, n_inf)
    tl.store(OUT + 7, tl.sum(zeros))
    tl.store(OUT + 8, tl.sum(l1))


def tiling(height: int, cols: int, elements: int = TILE.elements) -> tuple[int, int, int, int]:
    """(tiles, tiles a row, tile rows, tile columns) of a site of `height` rows of `cols` elements:
    a tile is as many whole rows as fit in `elements`, or an `elements`-long piece of a longer row.

    The programs run on a one-dimensional grid, whose CUDA limit (2^31 - 1) no site reaches; a
    grid of (row tiles, column tiles) is refused at launch ("invalid argument") once a dimension
    after the first passes 65,535, as GPT-2's logits, one contiguous row of 8 × 1,024 × 32,768
    elements, cut in 131,072 pieces, did."""
    tile_cols = min(elements, triton.next_power_of_2(cols))
    tile_rows = elements // tile_cols
    col_tiles = triton.cdiv(cols, tile_cols)
    return triton.cdiv(height, tile_rows) * col_tiles, col_tiles, tile_rows, tile_cols


# A site's merge, queued (`site_stats_fused(pending=...)`): its partials, the programs that wrote
# them, and the row they merge into.
Pending = tuple[torch.Tensor, int, torch.Tensor]


def site_stats_fused(
    tensor: torch.Tensor,
    out: torch.Tensor | None = None,
    rows: tuple[torch.Tensor, torch.Tensor] | None = None,
    tile: Tile | None = None,
    pending: list[Pending] | None = None,
) -> torch.Tensor:
    """The site's statistics as float64 (9,) on its device, in two launches, with no host read:
    written into `out` (a contiguous float64 row on that device) and returned when it is given.
    `rows`, (at, into): token rows `at` (int64, contiguous) of the site seen as (-1, width) rows
    copied into the contiguous (len(at), width) `into` of its dtype, by the partials' launch. `tile`
    is how the partials kernel cuts the site (`Tile`; None: TILE, or `cut_in`'s).

    With `pending`, the merge is queued there instead of launched: a traced forward merges all its
    sites in one launch after it (`merge_all`), a program a site, rather than a launch a site as it
    is shown (launches cost the host more than a site's merge costs the GPU); `out` is written only
    then, and the list keeps the site's partials until then."""
    x = tensor.detach()
    layout = rows_of(x)
    if layout is None:  # leading dimensions that do not flatten: the one layout read as a copy
        x = x.contiguous()
        layout = 1, x.numel(), x.numel()
    height, cols, stride = layout
    tile = _CUT.get() if tile is None else tile
    if out is None:
        out = torch.empty(PARTIALS, dtype=torch.float64, device=x.device)
    if x.numel() == 0:  # nothing computed, nothing wrong: zeros (and no row to copy)
        return out.zero_()
    tiles, col_tiles, tile_rows, tile_cols = tiling(height, cols, tile.elements)
    share = tile.shares(tiles)
    programs = triton.cdiv(tiles, share)
    partials = torch.empty(PARTIALS, programs, dtype=torch.float64, device=x.device)
    # With no rows to copy (copies 0) AT and DST are never read: any pointers of their types do.
    at, into = rows if rows is not None else (partials.view(torch.int64), x)
    copies, token_width = (at.numel() if rows is not None else 0), (x.shape[-1] if x.dim() else 1)
    _partials[(programs,)](
        *(x, partials, height, cols, stride, col_tiles, share, at, copies, token_width, into),
        ROWS=tile_rows,
        COLS=tile_cols,
        PER_PROGRAM=0 if tile.programs else tile.per_program,
        num_warps=tile.warps,
    )
    if pending is None:
        merge_all([(partials, programs, out)])
    else:
        pending.append((partials, programs, out))
    return out


def merge_all(pending: list[Pending]) -> None:
    """Every queued site's partials merged into its row, in one launch (a program a site). The
    sites' addresses go to the device in one copy that waits for nothing queued before it (`sent`)."""
    if not pending:
        return
    device = pending[0][0].device
    sites = [(partials.data_ptr(), programs, out.data_ptr()) for partials, programs, out in pending]
    table = sent(torch.tensor(sites, dtype=torch.int64), device)
    _merge[(len(sites),)](table, MERGE_BLOCK=MERGE_BLOCK, num_warps=MERGE_WARPS)
