"""Compiles the statistics' CUDA kernels for Hopper, in a process of its own, and says how each went.

    python -m tests.support.kernel_compile   # one line a case: "ok CASE" or "failed CASE: why"

Triton compiles without a GPU, for a named target, down to the cubin its own ptxas assembles. It
must run in a process where Triton was never put in interpreter mode: tests/conftest.py imports
the kernels (and Triton's own library) interpreted on a machine without a GPU, and a kernel
decorated there cannot be compiled afterwards. tests/kernels/test_kernel_compile.py runs this.
"""

from __future__ import annotations

import sys

# Hopper (H100, H200): the GPUs docs/gpu.md's records are taken on.
TARGET = ("cuda", 90, 32)


def cases() -> dict[str, tuple[str, dict[str, str], dict[str, int]]]:
    """Every case by name: the kernel's name in stack.kernels.site_stats, its argument types (as
    Triton writes them) and its compile-time constants, over the site dtypes, index widths and tile
    shapes a traced forward launches."""
    from stack.kernels.site_stats import MERGE_BLOCK, TILE

    found: dict[str, tuple[str, dict[str, str], dict[str, int]]] = {}
    # The tile in use, and programs of several tiles (benchmarks/stats_tiles.py's candidates).
    shapes = (("i32", 2, TILE.elements // 2, TILE.per_program), ("i64", 1, TILE.elements, 4))
    for dtype in ("fp32", "bf16", "fp16"):
        for index, rows, cols, per_program in shapes:
            signature = {"X": f"*{dtype}", "P": "*fp64", "rows": index, "cols": index, "stride": index}
            signature |= {"col_tiles": index, "tiles": index}
            signature |= {"ROWS": "constexpr", "COLS": "constexpr", "PER_PROGRAM": "constexpr"}
            found[f"partials-{dtype}-{index}-{rows}x{cols}-{per_program}"] = (
                "_partials",
                signature,
                {"ROWS": rows, "COLS": cols, "PER_PROGRAM": per_program},
            )
        signature = {"P": "*fp64", "OUT": "*fp64", "blocks": "i32", "X": f"*{dtype}", "cols": "i32"}
        signature |= {"stride": "i32", "AT": "*i64", "copies": "i32", "width": "i32", "DST": f"*{dtype}"}
        signature |= {"MERGE_BLOCK": "constexpr"}
        found[f"merge-{dtype}"] = ("_merge", signature, {"MERGE_BLOCK": MERGE_BLOCK})
    return found


def main() -> int:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from stack.kernels import site_stats

    target = GPUTarget(*TARGET)
    for name, (kernel, signature, constants) in cases().items():
        try:
            source = ASTSource(fn=getattr(site_stats, kernel), signature=signature, constexprs=constants)
            assembled = triton.compile(source, target=target).asm
            print(f"ok {name}" if assembled.get("cubin") else f"failed {name}: no cubin")
        except Exception as error:  # any failure of the compiler is the finding this reports
            why = " ".join(str(error).split())[-300:]  # the compiler's message ends with the reason
            print(f"failed {name}: {type(error).__name__}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
