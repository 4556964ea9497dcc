"""Tracing and bisection: where, layer and sub-operation, a model or a backend first goes wrong.

    sites       the site names, their forward order and data flow, the trace schema version
    stats       the statistics of one site, on device
    hooks       forward hooks that show every site to a visitor (and shadow-mode feeding)
    tracer      trace_forward: one forward, every site recorded (GATE-TRACE-001, -002)
    compare     one site of path A against path B, tolerances per site glob
    calibrate   paths (weights × backend × dtype) and the fp64 calibration of tolerances
    bisect      the first diverging site; the producer of NaN/Inf
    anomaly     single-model mode: a layer that stands out from the others
    ablation    zero a site and measure what it carried
    patch       activation patching, clean into corrupted, with its controls (GATE-PATCH-001..003)
    patch_report  a patching run or sweep as text and data
    identity    the bit-for-bit comparisons of tools that must change nothing at their identity
    dump        traces written here and compared elsewhere
    report      text, JSON and CSV
    modes       what `stack trace` runs for each combination of options
    record      the evidence record every trace leaves

docs/trace.md walks through a bisection of a planted bug and a patching sweep.
"""
