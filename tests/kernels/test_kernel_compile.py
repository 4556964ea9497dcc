"""The CUDA kernels of the statistics compile for the GPUs the project is measured on, and fit.

Triton's interpreter runs a kernel's arithmetic on a CPU (the tests marked `triton`), but it does
not compile it: a reduction over a 2-D tile, a pointer of the wrong type or an integer of the wrong
width is found only when the kernel is compiled for a GPU. Triton compiles without one, for a
named target (tests/support/kernel_compile.py), so a kernel that would not build on the lent
H100/H200 fails here, before a GPU session's minutes are spent on it. So does a tile whose
accumulators would not fit a thread's registers with the warps it launches on: spilled, each
element's update goes through memory, which no GPU run should have to find.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.kernel_compile import cases
from tests.support.paths import REPO


@pytest.fixture(scope="module")
def compiled() -> dict[str, str]:
    """Each case's line from one compiling process, by case: "ok CASE" or "failed CASE: why"."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.kernel_compile"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return {line.split()[1].rstrip(":"): line for line in done.stdout.splitlines() if line.strip()}


@pytest.mark.parametrize("case", list(cases()))
def test_the_statistics_kernel_compiles_for_hopper_unspilled(case: str, compiled: dict[str, str]) -> None:
    line = compiled.get(case, f"{case}: no line")
    assert line.startswith(f"ok {case} REG:"), line
    assert line.endswith(" STACK:0"), f"spills to the stack: {line}"
