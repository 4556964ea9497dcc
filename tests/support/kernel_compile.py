"""Compiles the statistics' CUDA kernels for Hopper, in a process of its own, and says how each went.

    python -m tests.support.kernel_compile   # one line a case: "ok CASE REG:n STACK:n" or "failed CASE: why"

Triton compiles without a GPU, for a named target, down to the cubin its own ptxas assembles, with
the warps the launch asks for; `cuobjdump -res-usage` (shipped in Triton's wheel beside ptxas)
reads back the registers a thread uses and the stack it spills to. It must run in a process where
Triton was never put in interpreter mode: tests/conftest.py imports the kernels (and Triton's own
library) interpreted on a machine without a GPU, and a kernel decorated there cannot be compiled
afterwards. tests/kernels/test_kernel_compile.py runs this.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

# Hopper (H100, H200): the GPUs docs/gpu.md's records are taken on.
TARGET = ("cuda", 90, 32)

Case = tuple[str, dict[str, str], dict[str, int], int]


def cases() -> dict[str, Case]:
    """Every case by name: the kernel's name in stack.kernels.site_stats, its argument types (as
    Triton writes them), its compile-time constants and its warps, over the site dtypes, index
    widths and tiles a traced forward launches (the tile in use and benchmarks/stats_tiles.py's
    candidates)."""
    from benchmarks.stats_tiles import CANDIDATES
    from stack.kernels.site_stats import MERGE_BLOCK, MERGE_WARPS, TILE

    found: dict[str, Case] = {}
    for dtype in ("fp32", "bf16", "fp16"):
        # 32-bit indices (every site but the largest) with tiles of two rows, for the tile in use;
        # 64-bit ones with tiles of one row, for it and every candidate.
        shapes = [("i32", TILE), *(("i64", tile) for tile in (TILE, *CANDIDATES))]
        for index, tile in shapes:
            rows, cols = (2, tile.elements // 2) if index == "i32" else (1, tile.elements)
            signature = {"X": f"*{dtype}", "P": "*fp64", "rows": index, "cols": index, "stride": index}
            signature |= {"col_tiles": index, "per_program": "i32"}
            signature |= {"AT": "*i64", "copies": "i32", "width": "i32", "DST": f"*{dtype}"}
            signature |= {"ROWS": "constexpr", "COLS": "constexpr", "PER_PROGRAM": "constexpr"}
            # A capped grid's share is a runtime count (PER_PROGRAM 0), a fixed one a constant.
            constant = 0 if tile.programs else tile.per_program
            found[f"partials-{dtype}-{index}-{rows}x{cols}-{tile}"] = (
                "_partials",
                signature,
                {"ROWS": rows, "COLS": cols, "PER_PROGRAM": constant},
                tile.warps,
            )
    signature = {"SITES": "*i64", "MERGE_BLOCK": "constexpr"}
    found["merge"] = ("_merge", signature, {"MERGE_BLOCK": MERGE_BLOCK}, MERGE_WARPS)
    return found


def resources(cubin: bytes, tools: str) -> str:
    """`REG:n STACK:n` of the one kernel in `cubin`, as cuobjdump -res-usage reports them."""
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "kernel.cubin")
        with open(path, "wb") as file:
            file.write(cubin)
        done = subprocess.run(
            [os.path.join(tools, "cuobjdump"), "-res-usage", path], capture_output=True, text=True, check=True
        )
    usage = next(line for line in done.stdout.splitlines() if "REG:" in line).split()
    return " ".join(field for field in usage if field.startswith(("REG:", "STACK:")))


def main() -> int:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from stack.kernels import site_stats

    target = GPUTarget(*TARGET)
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    for name, (kernel, signature, constants, warps) in cases().items():
        try:
            source = ASTSource(fn=getattr(site_stats, kernel), signature=signature, constexprs=constants)
            compiled = triton.compile(source, target=target, options={"num_warps": warps})
            cubin = compiled.asm.get("cubin")
            print(f"ok {name} {resources(cubin, tools)}" if cubin else f"failed {name}: no cubin")
        except Exception as error:  # any failure of the compiler is the finding this reports
            why = " ".join(str(error).split())[-300:]  # the compiler's message ends with the reason
            print(f"failed {name}: {type(error).__name__}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
