"""Flash attention in Triton: forward, backward, causal or not, with native grouped-query heads.

    out = flash_attention(q, k, v, causal=True)   # q (B, H, N_q, D); k, v (B, H_kv, N_kv, D)

The forward walks the keys in tiles of BLOCK_N with an online softmax, so the N_q x N_kv score
matrix never exists; it saves the log-sum-exp of each row for the backward, which recomputes
the probabilities tile by tile. Query head h reads key/value head h // (H // H_kv) directly, so
grouped-query attention needs no repeat_interleave; the dK/dV program of one key/value head
sums the contributions of its whole group of query heads in fp32 before storing once.

Causal masking is aligned bottom-right: query i sees keys j <= i + (N_kv - N_q), which is
ordinary causal masking when N_q == N_kv and the right thing for a KV-cache step. A row that
sees no key at all (possible only when N_q > N_kv) gives zeros, not NaN, and no gradient.

Without a GPU the kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1 set
before triton is imported). The interpreter computes bf16/fp16 wrongly without a word, so there
every tile is upcast to fp32 right after it is loaded. The device always comes from the tensors;
the active driver is never queried.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from contracts.errors import BadInput


@dataclass(frozen=True)
class Tile:
    """One kernel's launch shape: query rows and keys per tile, warps, and software-pipeline stages."""

    BLOCK_M: int
    BLOCK_N: int
    num_warps: int
    num_stages: int


# Each kernel's tile per head dim (D <= 64, and 128): the fastest of the candidates that
# benchmarks/attention_tiles.py timed on an H100 (bf16, causal, N = 4096), recorded in
# evidence/runs/bench-attention-tiles-20261122T160045 (within 1 % of the best where a smaller tile
# tied). The interpreter runs the same tiles, so the CPU tests cover the masks a GPU runs.
TILES: dict[str, dict[int, Tile]] = {
    "fwd": {64: Tile(64, 64, 4, 3), 128: Tile(64, 64, 4, 3)},
    "dkdv": {64: Tile(64, 64, 4, 4), 128: Tile(64, 64, 4, 2)},
    "dq": {64: Tile(64, 32, 4, 4), 128: Tile(64, 32, 4, 3)},
}
HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Masks the scores of the keys past N_kv in the last, partial tile. Only GATE-KERNEL-001's
# falsifier turns it off, to show that the tests catch a kernel that reads past the last tile.
MASK_KV_TAIL = True


@triton.jit
def _load_tile(ptrs, mask, UPCAST: tl.constexpr):
    """A masked tile load (out-of-range elements read as 0), in fp32 under the interpreter."""
    tile = tl.load(ptrs, mask=mask, other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _scores(q, k, scale, rows, cols, N_Q, N_KV, CAUSAL: tl.constexpr, MASK_TAIL: tl.constexpr):
    """Scaled scores q·kᵀ of one tile, with hidden keys set to -inf; the only place scale is applied."""
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
    if MASK_TAIL:
        s = tl.where(cols[None, :] < N_KV, s, float("-inf"))
    if CAUSAL:
        s = tl.where(cols[None, :] <= rows[:, None] + (N_KV - N_Q), s, float("-inf"))
    return s


@triton.jit
def _unmasked_keys(start_m, N_Q, N_KV, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """End of the leading key tiles that rows start_m.. all see whole (a multiple of BLOCK_N)."""
    full = (N_KV // BLOCK_N) * BLOCK_N
    if CAUSAL:  # a tile is whole to the block when its last key is visible to the block's first row
        full = tl.minimum(full, (tl.maximum(start_m + (N_KV - N_Q) + 1, 0) // BLOCK_N) * BLOCK_N)
    return full


@triton.jit
def _fwd_tiles(
    acc, l_i, m_i, q, K, V, bh_kv, rows, dims, scale, N_Q, N_KV, lo, hi,
    BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, MASK_TAIL: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """The online softmax over key tiles lo..hi of one query block; returns acc, l_i, m_i."""
    D = q.shape[1]
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        kv_tile = (bh_kv * N_KV + cols[:, None]) * D + dims[None, :]
        k = _load_tile(K + kv_tile, cols[:, None] < N_KV, UPCAST)
        v = _load_tile(V + kv_tile, cols[:, None] < N_KV, UPCAST)
        s = _scores(q, k, scale, rows, cols, N_Q, N_KV, CAUSAL, MASK_TAIL)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with no visible key yet has m_new = -inf; subtracting 0 keeps exp() at 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision="ieee")
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(
    Q, K, V, Out, LSE,
    scale, N_Q, N_KV,
    H: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_TAIL: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """One program: BLOCK_M query rows of one (batch, head) against all the keys they may see."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    bh_kv = (bh // H) * (H // GROUP) + (bh % H) // GROUP
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, D)
    q_tile = (bh * N_Q + rows[:, None]) * D + dims[None, :]
    q = _load_tile(Q + q_tile, rows[:, None] < N_Q, UPCAST)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max
    l_i = tl.zeros([BLOCK_M], tl.float32)  # running row sum of exp(s - m_i)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    hi = N_KV
    if CAUSAL:  # tiles wholly right of this block's last visible key are skipped
        hi = tl.minimum(N_KV, start_m + BLOCK_M + (N_KV - N_Q))
    # Tiles every row of the block sees whole need no mask; only the diagonal and the tail do.
    full = _unmasked_keys(start_m, N_Q, N_KV, BLOCK_N, CAUSAL)
    acc, l_i, m_i = _fwd_tiles(
        acc, l_i, m_i, q, K, V, bh_kv, rows, dims, scale, N_Q, N_KV, 0, full,
        BLOCK_N, False, False, UPCAST,
    )  # fmt: skip
    acc, l_i, m_i = _fwd_tiles(
        acc, l_i, m_i, q, K, V, bh_kv, rows, dims, scale, N_Q, N_KV, full, hi,
        BLOCK_N, CAUSAL, MASK_TAIL, UPCAST,
    )  # fmt: skip

    seen = l_i > 0.0  # false only for rows that see no key: their output is 0
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    # lse = +inf makes the backward's exp(s - lse) exactly 0 for such rows.
    lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("inf"))
    tl.store(Out + q_tile, out.to(Out.dtype.element_ty), mask=rows[:, None] < N_Q)
    tl.store(LSE + bh * N_Q + rows, lse, mask=rows < N_Q)


@triton.jit
def _dkdv_tiles(
    dk, dv, k, v, Q, DO, LSE, DELTA, bh, cols, dims, scale, N_Q, N_KV, lo, hi,
    BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr, MASK_TAIL: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """dK (unscaled) and dV of one key tile, summed over query blocks lo..hi of head bh."""
    D = k.shape[1]
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + tl.arange(0, BLOCK_M)
        q_tile = (bh * N_Q + rows[:, None]) * D + dims[None, :]
        q = _load_tile(Q + q_tile, rows[:, None] < N_Q, UPCAST)
        do = _load_tile(DO + q_tile, rows[:, None] < N_Q, UPCAST)
        # Rows past N_q read lse = +inf, so their probabilities are exactly 0.
        lse = tl.load(LSE + bh * N_Q + rows, mask=rows < N_Q, other=float("inf"))
        delta = tl.load(DELTA + bh * N_Q + rows, mask=rows < N_Q, other=0.0)
        s = _scores(q, k, scale, rows, cols, N_Q, N_KV, CAUSAL, MASK_TAIL)
        p = tl.exp(s - lse[:, None])
        dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv, input_precision="ieee")
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dk = tl.dot(tl.trans(ds.to(q.dtype)), q, dk, input_precision="ieee")
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    scale, N_Q, N_KV,
    H: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_TAIL: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """One program: dK, dV of BLOCK_N keys of one key/value head, summed over its query heads."""
    start_n = tl.program_id(0) * BLOCK_N
    bh_kv = tl.program_id(1).to(tl.int64)
    b = bh_kv // (H // GROUP)
    h_kv = bh_kv % (H // GROUP)
    cols = start_n + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, D)
    kv_tile = (bh_kv * N_KV + cols[:, None]) * D + dims[None, :]
    k = _load_tile(K + kv_tile, cols[:, None] < N_KV, UPCAST)
    v = _load_tile(V + kv_tile, cols[:, None] < N_KV, UPCAST)

    dk = tl.zeros([BLOCK_N, D], tl.float32)
    dv = tl.zeros([BLOCK_N, D], tl.float32)
    lo = 0
    if CAUSAL:  # query blocks wholly above this tile's first key cannot see it
        lo = (tl.maximum(start_n - (N_KV - N_Q), 0) // BLOCK_M) * BLOCK_M
    # Query blocks from `mid` on see every key of this tile: no causal mask there.
    mid = lo
    if CAUSAL:
        first_whole = start_n + BLOCK_N - 1 - (N_KV - N_Q)  # the first row that sees the tile's last key
        mid = lo + tl.cdiv(tl.maximum(first_whole - lo, 0), BLOCK_M) * BLOCK_M
    for g in range(GROUP):
        bh = b * H + h_kv * GROUP + g
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, Q, DO, LSE, DELTA, bh, cols, dims, scale, N_Q, N_KV, lo, tl.minimum(mid, N_Q),
            BLOCK_M, CAUSAL, MASK_TAIL, UPCAST,
        )  # fmt: skip
        dk, dv = _dkdv_tiles(
            dk, dv, k, v, Q, DO, LSE, DELTA, bh, cols, dims, scale, N_Q, N_KV, mid, N_Q,
            BLOCK_M, False, MASK_TAIL, UPCAST,
        )  # fmt: skip
    tl.store(DK + kv_tile, (dk * scale).to(DK.dtype.element_ty), mask=cols[:, None] < N_KV)
    tl.store(DV + kv_tile, dv.to(DV.dtype.element_ty), mask=cols[:, None] < N_KV)


@triton.jit
def _dq_tiles(
    dq, q, do, lse, delta, K, V, bh_kv, rows, dims, scale, N_Q, N_KV, lo, hi,
    BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, MASK_TAIL: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """dQ's sum over key tiles lo..hi of one query block (unscaled)."""
    D = q.shape[1]
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        kv_tile = (bh_kv * N_KV + cols[:, None]) * D + dims[None, :]
        k = _load_tile(K + kv_tile, cols[:, None] < N_KV, UPCAST)
        v = _load_tile(V + kv_tile, cols[:, None] < N_KV, UPCAST)
        s = _scores(q, k, scale, rows, cols, N_Q, N_KV, CAUSAL, MASK_TAIL)
        p = tl.exp(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision="ieee")
    return dq


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ,
    scale, N_Q, N_KV,
    H: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, MASK_TAIL: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """One program: dQ of BLOCK_M query rows of one (batch, head), over the keys they see."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    bh_kv = (bh // H) * (H // GROUP) + (bh % H) // GROUP
    rows = start_m + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, D)
    q_tile = (bh * N_Q + rows[:, None]) * D + dims[None, :]
    q = _load_tile(Q + q_tile, rows[:, None] < N_Q, UPCAST)
    do = _load_tile(DO + q_tile, rows[:, None] < N_Q, UPCAST)
    lse = tl.load(LSE + bh * N_Q + rows, mask=rows < N_Q, other=float("inf"))
    delta = tl.load(DELTA + bh * N_Q + rows, mask=rows < N_Q, other=0.0)

    dq = tl.zeros([BLOCK_M, D], tl.float32)
    hi = N_KV
    if CAUSAL:
        hi = tl.minimum(N_KV, start_m + BLOCK_M + (N_KV - N_Q))
    full = _unmasked_keys(start_m, N_Q, N_KV, BLOCK_N, CAUSAL)
    dq = _dq_tiles(
        dq, q, do, lse, delta, K, V, bh_kv, rows, dims, scale, N_Q, N_KV, 0, full,
        BLOCK_N, False, False, UPCAST,
    )  # fmt: skip
    dq = _dq_tiles(
        dq, q, do, lse, delta, K, V, bh_kv, rows, dims, scale, N_Q, N_KV, full, hi,
        BLOCK_N, CAUSAL, MASK_TAIL, UPCAST,
    )  # fmt: skip
    tl.store(DQ + q_tile, (dq * scale).to(DQ.dtype.element_ty), mask=rows[:, None] < N_Q)


def _launch_options(kernel: str, q: torch.Tensor, causal: bool) -> dict[str, object]:
    """Compile-time switches and the tile of one of the three kernels."""
    return {
        "CAUSAL": causal,
        "MASK_TAIL": MASK_KV_TAIL,
        "UPCAST": isinstance(_attn_fwd, InterpretedFunction),
        **asdict(tile_of(kernel, q.shape[-1])),
    }


def tile_of(kernel: str, dim: int) -> Tile:
    """The tile `kernel` ("fwd", "dkdv" or "dq") runs with at head dim `dim`."""
    return TILES[kernel][64 if dim <= 64 else 128]


# The kernels are registered as torch operators, forward and backward, each with a fake (meta)
# implementation that gives only shapes and dtypes: torch.compile then keeps them as opaque calls
# instead of tracing into Triton's launcher, which Inductor cannot compile (traced, it ends in a
# CompilationError at `_fwd_tiles` under train.compile=true). Eager and compiled run the same
# kernels, so they agree bit for bit. The operators are declared through torch.library's
# Library, not its custom_op decorator, which imports the whole of torch._dynamo (seconds) on an
# op's first eager call.
_LIBRARY = torch.library.Library("stack", "FRAGMENT")
_LIBRARY.define(
    "flash_attention_fwd(Tensor q, Tensor k, Tensor v, bool causal, float scale) -> (Tensor, Tensor)"
)
_LIBRARY.define(
    "flash_attention_bwd(Tensor d_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, bool causal, "
    "float scale) -> (Tensor, Tensor, Tensor)"
)


def _forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): the attention output and each query row's log-sum-exp, which the backward reuses."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    batch, heads, n_q, dim = q.shape
    heads_kv, n_kv = k.shape[1], k.shape[2]
    out = torch.empty_like(q)
    lse = torch.empty(batch, heads, n_q, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(n_q, tile_of("fwd", dim).BLOCK_M), batch * heads)
    _attn_fwd[grid](
        q, k, v, out, lse, scale, n_q, n_kv,
        H=heads, GROUP=heads // heads_kv, D=dim, **_launch_options("fwd", q, causal),
    )  # fmt: skip
    return out, lse


def _forward_shapes(q: torch.Tensor, *_rest: object) -> tuple[torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


def _backward(
    d_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) from the saved inputs, output and log-sum-exp; the probabilities are recomputed."""
    d_out, q, k, v = d_out.contiguous(), q.contiguous(), k.contiguous(), v.contiguous()
    batch, heads, n_q, dim = q.shape
    heads_kv, n_kv = k.shape[1], k.shape[2]
    # delta_i = sum_d dO_id * O_id = sum_j P_ij dP_ij: the softmax backward's row term.
    delta = (d_out.float() * out.float()).sum(-1).contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    shape = {"H": heads, "GROUP": heads // heads_kv, "D": dim}
    grid_kv = (triton.cdiv(n_kv, tile_of("dkdv", dim).BLOCK_N), batch * heads_kv)
    _attn_bwd_dkdv[grid_kv](
        q, k, v, d_out, lse, delta, dk, dv, scale, n_q, n_kv,
        **shape, **_launch_options("dkdv", q, causal),
    )  # fmt: skip
    grid_q = (triton.cdiv(n_q, tile_of("dq", dim).BLOCK_M), batch * heads)
    _attn_bwd_dq[grid_q](
        q, k, v, d_out, lse, delta, dq, scale, n_q, n_kv,
        **shape, **_launch_options("dq", q, causal),
    )  # fmt: skip
    return dq, dk, dv


def _backward_shapes(
    _d_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *_saved: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _save_for_backward(
    ctx: torch.autograd.function.FunctionCtx,
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, float],
    output: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """The forward keeps q, k, v, out and the row log-sum-exp, nothing N²."""
    q, k, v, causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.mark_non_differentiable(lse)
    ctx.causal, ctx.scale = causal, scale  # type: ignore[attr-defined]


def _gradients(
    ctx: torch.autograd.function.FunctionCtx, d_out: torch.Tensor, _d_lse: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
    q, k, v, out, lse = ctx.saved_tensors  # type: ignore[attr-defined]
    dq, dk, dv = torch.ops.stack.flash_attention_bwd(d_out, q, k, v, out, lse, ctx.causal, ctx.scale)  # type: ignore[attr-defined]
    return dq, dk, dv, None, None


for _name, _kernel, _shapes in (
    ("flash_attention_fwd", _forward, _forward_shapes),
    ("flash_attention_bwd", _backward, _backward_shapes),
):
    _LIBRARY.impl(_name, _kernel, "CompositeExplicitAutograd")
    torch.library.register_fake(f"stack::{_name}", _shapes, lib=_LIBRARY)
torch.library.register_autograd(
    "stack::flash_attention_fwd", _gradients, setup_context=_save_for_backward, lib=_LIBRARY
)


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Refuse shapes, dtypes and devices the kernel does not handle, naming the fix."""
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise BadInput(
            f"flash_attention wants q (B, H, N_q, D) and k, v (B, H_kv, N_kv, D); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[1] % k.shape[1] != 0:
        raise BadInput(
            f"flash_attention: q {tuple(q.shape)} and k {tuple(k.shape)} must share B and D, "
            "and H must be a multiple of H_kv"
        )
    if q.shape[3] not in HEAD_DIMS:
        raise BadInput(f"flash_attention: head_dim {q.shape[3]} is not one of {HEAD_DIMS}; pick one of those")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        raise BadInput(
            f"flash_attention: q, k, v must share one dtype of fp32/fp16/bf16; got {q.dtype}, {k.dtype}, "
            f"{v.dtype}"
        )
    if not (q.device == k.device == v.device):
        raise BadInput(
            f"flash_attention: q, k, v must share a device; got {q.device}, {k.device}, {v.device}"
        )
    if q.device.type != "cuda" and not isinstance(_attn_fwd, InterpretedFunction):
        raise BadInput(
            f"flash_attention: tensors on {q.device} need Triton's interpreter: set TRITON_INTERPRET=1 "
            "before triton is imported, or use a CUDA device, or the sdpa attention path"
        )


def flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, scale: float | None = None
) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v for q (B, H, N_q, D) and k, v (B, H_kv, N_kv, D).

    `scale` defaults to 1/sqrt(D) and is applied once, to the scores. The output has q's
    shape and dtype; accumulation is fp32 whatever the input dtype.
    """
    _check_inputs(q, k, v)
    # Contiguous before the op, so that what it saves for the backward is what the kernels read.
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    softmax_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out, _ = torch.ops.stack.flash_attention_fwd(q, k, v, causal, softmax_scale)
    return out
