"""The dtype a `stack trace` path's name asks for (`--dtype`, `--dtype-b`: fp32, bf16, fp16, fp64),
as the torch dtype its sites' tensors must hold.

It lives in the contracts, apart from the stack's own table (stack.trace.calibrate.DTYPES), so a
path cast to another dtype than its name is held to the name: a bf16 path run in fp16 would report
fp16's seven-times smaller drift as bf16's and pass every other gate.
GATE-TRACE-002's check dtype holds every traced site to it at run time, and the checker every site
trace.json keeps (contracts.derive.trace.site_dtype_problems).
"""

from __future__ import annotations

PATH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}
