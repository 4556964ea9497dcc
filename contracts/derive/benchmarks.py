"""A benchmark record from its own measurements: its headline numbers, and whether it met its goals.

A benchmark cites no artifacts: the raw measurements (each contender's tokens/s or milliseconds,
each round's seconds, each shape's TFLOP/s) sit in the record beside the numbers the record is
read for (a ratio, an overhead, the worst run). Those headline numbers are functions of the
measurements. The benchmark computes each one with a formula of this module from its unrounded
measurements and keeps both rounded; the checker computes it again from the rounded
measurements. So a ratio edited to look better is a contradiction with the contenders' speeds
beside it, the way a summary edited against a training log is.

Rounding is not tampering. A number written with d decimals stands for anything within half a
unit of its last digit, so the formula is evaluated over that box of its inputs (every formula
here is monotone in each input, so the box's corners bound it) and the headline must lie within
those bounds widened by half a unit of its own last digit.

`met` is re-judged from the value measured, the goal the record states and the direction of
spec/benchmarks.yaml, and the goal itself must be the spec's when the record cites the benchmarks
policy the spec is at. A gpu-check record measures benchmark goals too: contracts/derive/gpu_check.py
holds it to these rules and to its own steps.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.derive.base import Derivation, Deriver, Inputs, registrar
from contracts.derive.reports import version_key
from contracts.errors import interrupted_by

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds

MIB = 1 << 20
# A measurement kept at full float precision still carries the last bit of its own arithmetic.
FLOAT_SLACK = 1e-12


# -- the formulas: the benchmarks compute their headline numbers with these ---------------------


def quotient(numerator: float, denominator: float) -> float:
    """A speed ratio: one contender's rate (or time) over another's."""
    return numerator / denominator


def overhead(plain: float, gated: float) -> float:
    """The share of a plain loop's throughput that the gated loop loses (negative when faster)."""
    return 1 - gated / plain


def median_rate(tokens_per_step: float, *step_seconds: float) -> float:
    """Tokens/s of a training loop at its median step: the tokens one optimizer step takes over the
    median of its steady steps' wall-clock seconds (the warm-up steps already left out). A median,
    so a step that waited on the shared machine does not move it."""
    return tokens_per_step / statistics.median(step_seconds)


def utilisation(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the FLOPs a second of training did over the device's peak."""
    return tokens_per_s * flops_per_token / peak_flops


def largest(*values: float) -> float:
    """The largest of one or more measurements (a worst case over legs)."""
    return max(values)


def smallest(*values: float) -> float:
    """The smallest of one or more measurements (a worst case over modes or legs)."""
    return min(values)


def amdahl_limit(share: float) -> float:
    """The most any speed-up of the rest can give when `share` of the time cannot shrink."""
    return 1 / (1 - share)


def ns_per_element(traced_ms: float, hooks_ms: float, elements: float) -> float:
    """What the site statistics add per element: traced minus hooks-only time, in nanoseconds."""
    return 1e6 * (traced_ms - hooks_ms) / elements


def share(whole_ms: float, without_ms: float) -> float:
    """The share of a timed whole that one part takes: the whole less the whole without it, over it."""
    return (whole_ms - without_ms) / whole_ms


def total(*parts: float) -> float:
    """A sum of timed parts."""
    return math.fsum(parts)


def remainder(whole: float, *parts: float) -> float:
    """What a whole's time leaves after its timed parts."""
    return whole - math.fsum(parts)


def mib_per_s(text_bytes: float, *seconds: float) -> float:
    """A prepare's throughput: its text over its fastest round (other work only slows a round)."""
    return text_bytes / min(seconds) / MIB


def rate_over_best(rate: float, *baselines: float) -> float:
    """A throughput over the best of the baseline's rounds."""
    return rate / max(baselines)


def prepare_ratio(text_bytes: float, seconds: Sequence[float], baselines: Sequence[float]) -> float:
    """A prepare's fastest round over the best round of the bare encode baseline."""
    return rate_over_best(mib_per_s(text_bytes, *seconds), *baselines)


def steady_median(*rates: float) -> float:
    """A contender's tokens/s: the median of its steady-state steps' rates (the warm-up steps, which
    pay for allocation and compilation, are not among them). The benchmarks keep those rates in
    the record, so the checker takes the median again."""
    return statistics.median(rates)


def logged_median_rate(metrics_text: str) -> float:
    """A repeatability leg's throughput: the upper median of the tokens/s its metrics.jsonl logs
    for its steps (the benchmark reads the rates the run itself logged, so the checker reads them
    again from the leg filed in the ledger)."""
    rates = sorted(
        line["tokens_per_s"]
        for text in metrics_text.splitlines()
        if (line := json.loads(text)).get("type") == "step"
    )
    return rates[len(rates) // 2]


def geometric_mean(*ratios: float) -> float:
    """The mean of ratios that treats ×2 and ×½ alike: the attention benchmark's summary over shapes."""
    return math.exp(math.fsum(math.log(r) for r in ratios) / len(ratios))


# The names the benchmark scripts file their records under, where no goal's module names them:
# benchmarks/train_throughput.py's per-step cost and its options' measurement,
# benchmarks/determinism_parts.py's prices (no goal of spec/benchmarks.yaml), and
# benchmarks/integrity.py's timing of the checker.
TRAIN_BENCHMARK = "train_overhead"
OPTIONS_BENCHMARK = "train_options"
DETERMINISM_BENCHMARK = "determinism_parts"
INTEGRITY_BENCHMARK = "integrity_10k"

# benchmarks/repeatability.py's record: the benchmark's name, its straight run, and per repeated run
# (B again, C stopped and resumed) the key of a mode that lists what it differs from A in.
REPEAT_BENCHMARK = "repeatable_runs_gpu"
STRAIGHT_RUN = "A"
REPEATED_RUNS = {"B": "B_differs", "C": "C_differs"}


def mismatched_runs(modes: list[dict[str, Any]]) -> int:
    """How many of the repeated runs (B, and C resumed, per mode) differ from the straight run A:
    each lists what differs, and a run never compared counts as differing."""
    return sum(bool(mode.get(key, True)) for mode in modes for key in REPEATED_RUNS.values())


def leg_failures(codes: dict[str, int]) -> str:
    """What went wrong with a mode's exit codes, or "" when each leg ended as it must: A, B and C's
    resume with 0, C's first leg with SIGTERM's 143 (the stack's exit for a run a signal stopped
    after saving, contracts.errors.Interrupted); a C that exited 0 was never stopped. A mode whose
    legs did not end so compares nothing and states the failure instead (its `error`)."""
    wrong = [f"{leg} exited {code}" for leg, code in codes.items() if leg != "C" and code != 0]
    if interrupted_by(codes["C"]) != "SIGTERM":
        wrong.append(f"C exited {codes['C']}, not stopped by SIGTERM (143): lower --stop-at")
    return "; ".join(wrong)


def legs_ended(modes: list[Any]) -> list[str]:
    """The modes that compared their runs (`runs`) although their exit codes say a leg did not end
    as it must (`leg_failures`): the codes are the mode's own measurement, so a failed leg's exit
    edited to look clean, or a comparison kept beside a leg that failed, contradicts the mode.
    (A mode that states an error is not held to today's wording of it: the benchmark's rule for C's
    exit changed on 2026-11-26, and a record of the rule before states an error its codes no longer
    give.)"""
    problems = []
    for mode in modes:
        codes = mode.get("exit_codes") if isinstance(mode, dict) else None
        if not isinstance(codes, dict) or "runs" not in mode:
            continue
        try:
            failed = leg_failures(codes)
        except (KeyError, TypeError):
            failed = f"no exit of C among {sorted(codes)}"
        if failed:
            problems.append(f"mode {mode.get('mode')!r} compared its runs, but its exit codes say {failed}")
    return problems


# Keys of a metrics line that measure time, not what was computed (their names hold one of these).
TIMED_KEYS = ("tokens_per_s", "seconds")


def computed_lines(metrics_text: str) -> dict[tuple[str, int], dict[str, Any]]:
    """(line type, step) → the line without its timings, for every step and held-out line of a
    metrics.jsonl (the last one written, where a resumed run logs a step again)."""
    lines: dict[tuple[str, int], dict[str, Any]] = {}
    for text in metrics_text.splitlines():
        line = json.loads(text)
        if line.get("type") in ("step", "eval"):
            kept = {k: v for k, v in line.items() if not any(t in k for t in TIMED_KEYS)}
            lines[(line["type"], line["step"])] = kept
    return lines


def run_differences(
    straight: str, other: str, straight_weights: str | None, other_weights: str | None
) -> list[str]:
    """Where a repeated run differs from its straight run (benchmarks/repeatability.py): a step or
    held-out line missing on one side, a value unequal, or the final weights' sha256 (each run's
    metrics.jsonl text and the digest of its last checkpoint's weights, as the ledger files them).
    The benchmark computes each run's list with this and the checker again from the filed runs."""
    a, b = computed_lines(straight), computed_lines(other)
    found = [f"{kind} {step}: missing" for kind, step in sorted(set(a) ^ set(b))]
    for key in sorted(set(a) & set(b)):
        found += [
            f"{key[0]} {key[1]} {k}"
            for k in sorted(set(a[key]) | set(b[key]))
            if a[key].get(k) != b[key].get(k)
        ]
    if straight_weights is None or straight_weights != other_weights:
        found.append("final weights")
    return found


def fastest(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate that took the fewest milliseconds (one that could not run has no `ms`)."""
    return min((row for row in candidates if "ms" in row), key=lambda row: row["ms"])


# -- the check --------------------------------------------------------------------------------


def half_unit(value: float) -> float:
    """Half a unit of the last digit `value` is written with: what its rounding may have moved it.

    An integer was rounded to a whole number; a float's shortest representation (what JSON keeps)
    shows its decimals. A float kept unrounded shows about seventeen digits, so its half unit is
    negligible and the check is exact but for FLOAT_SLACK.
    """
    if isinstance(value, int):
        return 0.5
    mantissa, _, exponent = repr(float(value)).partition("e")
    decimals = len(mantissa.partition(".")[2]) - int(exponent or 0)
    return 0.5 * 10.0 ** (-decimals)


def bounds(formula: Callable[..., float], args: Sequence[float]) -> tuple[float, float]:
    """The least and greatest `formula` gives over the box of its inputs' roundings.

    Every formula here is monotone in each input, so its extremes lie at the two corners where
    each input sits at the end of its box that lowers, or raises, the formula. Which end that is
    is found one input at a time: 2n + 2 evaluations, not the 2^n corners of a box of n inputs
    (a benchmark may time dozens of legs).
    """
    low, high = list(args), list(args)
    for index, arg in enumerate(args):
        unit = half_unit(arg)
        if unit <= FLOAT_SLACK * max(abs(arg), 1.0):
            continue  # kept unrounded: no box
        down, up = list(args), list(args)
        down[index], up[index] = arg - unit, arg + unit
        rising = formula(*up) >= formula(*down)
        low[index], high[index] = (arg - unit, arg + unit) if rising else (arg + unit, arg - unit)
    ends = formula(*low), formula(*high)
    return min(ends), max(ends)


@dataclass(frozen=True)
class Identity:
    """One headline number of a record and the formula of the measurements beside it."""

    field: str  # as the report names it: metrics.ratio, metrics.runs[1].ratio
    recorded: Any
    formula: Callable[..., float]
    args: tuple[Any, ...]
    name: str = ""  # the formula's name in the report, when not its function's own

    def problem(self) -> str | None:
        """A sentence when the recorded number lies outside what its measurements allow, else None."""
        if not all(finite_number(a) for a in self.args):
            return None  # a measurement the record lacks: nothing to derive
        if not finite_number(self.recorded):
            return f"{self.field} is {self.recorded!r}, but its measurements give a number"
        try:
            low, high = bounds(self.formula, self.args)
        except (ZeroDivisionError, ValueError, OverflowError):
            return None
        slack = half_unit(self.recorded) + FLOAT_SLACK * max(abs(low), abs(high))
        if low - slack <= self.recorded <= high + slack:
            return None
        shown = f"{low:.6g}" if math.isclose(low, high, rel_tol=1e-6) else f"{low:.6g} to {high:.6g}"
        name = self.name or self.formula.__name__
        return f"{self.field} is {self.recorded}, but {name} of its measurements gives {shown}"


def real(value: Any) -> bool:
    """Whether a value is a number (an integer or a float), not a boolean (a JSON true is no
    measurement)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_number(value: Any) -> bool:
    """A finite int or float, never a bool."""
    return real(value) and math.isfinite(value)


def _split(formula: Callable[..., float], count: int) -> Callable[..., float]:
    """`formula(first, rest[:count], rest[count:])` over flat arguments, so each can be boxed."""

    def flat(first: float, *rest: float) -> float:
        return formula(first, rest[:count], rest[count:])

    return flat


def _flat(*values: Any) -> tuple[Any, ...]:
    """Scalars and lists of scalars, as one tuple of arguments."""
    out: list[Any] = []
    for value in values:
        out.extend(value if isinstance(value, list) else [value])
    return tuple(out)


Metrics = dict[str, Any]
IdentityRule = Callable[[Metrics], Iterator[Identity]]
IDENTITIES: dict[str, IdentityRule] = {}


identities = registrar(IDENTITIES)  # @identities("trace_overhead"): the identities of its records


def _of(metrics: Metrics, field: str, formula: Callable[..., float], *keys: str) -> Iterator[Identity]:
    """`metrics[field]` = formula(metrics[k] for k in keys), when the record has the field."""
    if field in metrics and metrics[field] is not None:
        yield Identity(f"metrics.{field}", metrics[field], formula, tuple(metrics.get(k) for k in keys))


def _steps(where: str, recorded: Any, rates: Any) -> Iterator[Identity]:
    """`recorded` tokens/s = steady_median of the per-step rates kept beside it, when it keeps them."""
    if isinstance(rates, list) and rates:
        yield Identity(where, recorded, steady_median, tuple(rates))


@identities("reader_vs_memmap")
def _reader(m: Metrics) -> Iterator[Identity]:
    yield from _of(m, "ratio", quotient, "tokens_per_s", "baseline_tokens_per_s")
    yield from _of(m, "ratio_vs_strided", quotient, "tokens_per_s", "strided_tokens_per_s")


@identities("trace_overhead")
def _trace(m: Metrics) -> Iterator[Identity]:
    yield from _of(m, "ratio", quotient, "traced_ms", "untraced_ms")
    yield from _of(m, "hooks_only_ratio", quotient, "hooks_only_ms", "untraced_ms")
    yield from _of(m, "one_read_ratio", quotient, "one_read_ms", "untraced_ms")
    yield from _of(
        m, "statistics_ns_per_element", ns_per_element, "traced_ms", "hooks_only_ms", "site_elements"
    )
    yield from _of(m, "verification_share", share, "traced_ms", "unchecked_ms")
    yield from _of(m, "verified_ratio", quotient, "verified_ms", "untraced_ms")


def leg_of(legs: list[dict[str, Any]], loop: str, deterministic: bool, grad_accum: int) -> dict[str, Any]:
    """The training benchmark's leg of `loop` ("plain" or "stack") at one determinism setting and
    accumulation (an empty one when the record has none)."""
    wanted = {"loop": loop, "deterministic": deterministic, "grad_accum": grad_accum}
    return next((leg for leg in legs if all(leg.get(k) == v for k, v in wanted.items())), {})


def _leg_rates(legs: list[dict[str, Any]], m: Metrics, where: str = "legs") -> Iterator[Identity]:
    """Each timed leg's tokens/s (a training benchmark's `metrics.<where>`) from its per-step seconds
    past the warm-up, and its MFU where it states one."""
    warmup = m.get("warmup_steps")
    for index, leg in enumerate(legs):
        seconds = leg.get("step_seconds")
        if isinstance(seconds, list) and isinstance(warmup, int) and len(seconds) > warmup:
            args = _flat(leg.get("tokens_per_step"), seconds[warmup:])
            field = f"metrics.{where}[{index}].tokens_per_s"
            yield Identity(field, leg.get("tokens_per_s"), median_rate, args)
        if leg.get("mfu") is not None:
            args = (leg.get("tokens_per_s"), m.get("flops_per_token"), m.get("peak_flops"))
            yield Identity(f"metrics.{where}[{index}].mfu", leg["mfu"], utilisation, args)


def _stack_over_plain(
    where: str, rows: Any, legs: list[dict[str, Any]], deterministic: Any = None
) -> Iterator[Identity]:
    """Each row of `metrics.<where>`: stack ÷ plain and the per-step cost from the two legs at its
    determinism setting (the row's own, else `deterministic`) and accumulation."""
    for index, row in enumerate(r for r in rows or [] if isinstance(r, dict)):
        at = (row.get("deterministic", deterministic), row.get("grad_accum"))
        plain, stack = leg_of(legs, "plain", *at), leg_of(legs, "stack", *at)
        rates = (plain.get("tokens_per_s"), stack.get("tokens_per_s"))
        yield Identity(f"metrics.{where}[{index}].step_cost", row.get("step_cost"), overhead, rates)
        ratio = row.get("stack_over_plain")
        yield Identity(f"metrics.{where}[{index}].stack_over_plain", ratio, quotient, rates[::-1])
        if "peak_ratio" in row:
            peaks = (stack.get("peak_bytes"), plain.get("peak_bytes"))
            yield Identity(f"metrics.{where}[{index}].peak_ratio", row["peak_ratio"], quotient, peaks)


def _compiled_legs(m: Metrics) -> Iterator[Identity]:
    """The compiled legs (`compiled_legs`, at the preset's determinism setting): their rates, stack ÷
    plain and the peaks' ratio at each accumulation, and the headlines read off them: the compiled
    tokens/s at the preset's accumulation, the per-step cost at grad_accum 1, the larger peak ratio."""
    legs = [leg for leg in m.get("compiled_legs") or [] if isinstance(leg, dict)]
    if not legs:
        return
    deterministic = m.get("deterministic")
    yield from _leg_rates(legs, m, "compiled_legs")
    rows = [row for row in m.get("compiled_vs_plain") or [] if isinstance(row, dict)]
    yield from _stack_over_plain("compiled_vs_plain", rows, legs, deterministic)
    for loop, field in (("stack", "compiled_tokens_per_s"), ("plain", "plain_compiled_tokens_per_s")):
        at_preset = leg_of(legs, loop, deterministic, m.get("grad_accum"))
        if at_preset and field in m:
            yield Identity(f"metrics.{field}", m[field], same, (at_preset.get("tokens_per_s"),))
    plain, stack = (leg_of(legs, loop, deterministic, 1) for loop in ("plain", "stack"))
    if plain and stack and m.get("compiled_overhead") is not None:
        rates = (plain.get("tokens_per_s"), stack.get("tokens_per_s"))
        yield Identity("metrics.compiled_overhead", m["compiled_overhead"], overhead, rates)
    if m.get("compiled_peak_memory_ratio") is not None:
        ratios = tuple(row.get("peak_ratio") for row in rows)
        yield Identity("metrics.compiled_peak_memory_ratio", m["compiled_peak_memory_ratio"], largest, ratios)


def _train_legs(m: Metrics) -> Iterator[Identity]:
    """benchmarks/train_throughput.py's legs: each loop's tokens/s from its per-step seconds, past
    the warm-up, and its MFU; then stack ÷ plain at the same determinism setting, the determinism
    price of each loop (on against off) and the peak-memory ratio, each from the legs it compares;
    and the same of its compiled legs."""
    legs = [leg for leg in m.get("legs") or [] if isinstance(leg, dict)]
    yield from _leg_rates(legs, m)
    yield from _stack_over_plain("vs_plain", m.get("vs_plain"), legs)
    yield from _compiled_legs(m)
    for index, row in enumerate(r for r in m.get("determinism_prices") or [] if isinstance(r, dict)):
        loop, accum = row.get("loop"), row.get("grad_accum")
        on, off = leg_of(legs, str(loop), True, accum), leg_of(legs, str(loop), False, accum)
        rates = (off.get("tokens_per_s"), on.get("tokens_per_s"))
        yield Identity(f"metrics.determinism_prices[{index}].price", row.get("price"), overhead, rates)
    memory = [row for row in m.get("memory") or [] if isinstance(row, dict)]
    for index, row in enumerate(memory):
        peaks = (row.get("stack_peak_bytes"), row.get("plain_peak_bytes"))
        yield Identity(f"metrics.memory[{index}].ratio", row.get("ratio"), quotient, peaks)
        # What was live at each loop's peak adds up to the peak its trace saw, by owner and (where
        # the profiler named them, on a CPU) by category alike.
        for loop in ("plain", "stack"):
            held = row.get(f"{loop}_at_peak")
            field = f"metrics.memory[{index}].{loop}_at_peak.peak_bytes"
            if isinstance(held, dict) and isinstance(held.get("owners"), list):
                parts = tuple(owned.get("bytes") for owned in held["owners"] if isinstance(owned, dict))
                yield Identity(field, held.get("peak_bytes"), total, parts)
            if isinstance(held, dict) and isinstance(held.get("categories"), dict) and held["categories"]:
                sizes = tuple(held["categories"].values())
                yield Identity(field, held.get("peak_bytes"), total, sizes, "the sum of its categories")
    if memory:
        ratios = tuple(row.get("ratio") for row in memory)
        yield Identity("metrics.peak_memory_ratio", m.get("peak_memory_ratio"), largest, ratios)
    # The headlines, at grad_accum 1: each loop's tokens/s at the preset's determinism setting (the
    # per-step cost, `overhead`, is derived from them) and the stack's determinism price.
    accum1 = leg_of(legs, "stack", True, 1), leg_of(legs, "stack", False, 1)
    if "determinism_price" in m and all(accum1):
        rates = (accum1[1].get("tokens_per_s"), accum1[0].get("tokens_per_s"))
        yield Identity("metrics.determinism_price", m["determinism_price"], overhead, rates)
    for loop in ("plain", "stack"):
        leg = leg_of(legs, loop, m.get("deterministic"), 1)
        if leg and f"{loop}_tokens_per_s" in m:
            field = f"metrics.{loop}_tokens_per_s"
            yield Identity(field, m[f"{loop}_tokens_per_s"], same, (leg.get("tokens_per_s"),))


# The loops benchmarks/train_throughput.py times, each at a determinism setting and accumulation.
TRAIN_LOOPS = ("plain", "stack")


def train_leg_problems(m: Metrics) -> list[str]:
    """The legs a training benchmark's rows and headlines are read off, held to being in it, once.

    Each comparison (`vs_plain`, `compiled_vs_plain`, `determinism_prices`, the headline tokens/s)
    is derived from the legs it names by loop, determinism setting and accumulation (`leg_of`). A
    leg renamed, or restated at another accumulation, leaves the row naming it with nothing to be
    derived from, and a leg timed twice lets either be read; both say the row is not what its legs
    measured. So every leg is a loop the benchmark times, each (loop, setting, accumulation) is
    timed once, and every leg a row or headline names is there."""
    problems = []
    timed: dict[str, list[dict[str, Any]]] = {}
    for where in ("legs", "compiled_legs"):
        legs = timed[where] = [leg for leg in m.get(where) or [] if isinstance(leg, dict)]
        keys = Counter((leg.get("loop"), leg.get("deterministic"), leg.get("grad_accum")) for leg in legs)
        for (loop, deterministic, accum), count in keys.items():
            if loop not in TRAIN_LOOPS:
                problems.append(
                    f"metrics.{where} has a leg of loop {loop!r}, which the benchmark does not time"
                )
            if count > 1:
                problems.append(
                    f"metrics.{where} times {loop!r} at deterministic={deterministic}, grad_accum={accum} "
                    f"{count} times"
                )
    named: list[tuple[str, str, str, Any, Any]] = []  # (row, legs it reads, loop, setting, accumulation)
    for rows, where, setting in (
        ("vs_plain", "legs", None),
        ("compiled_vs_plain", "compiled_legs", m.get("deterministic")),
    ):
        for index, row in enumerate(r for r in m.get(rows) or [] if isinstance(r, dict)):
            at = (row.get("deterministic", setting), row.get("grad_accum"))
            named += [(f"metrics.{rows}[{index}]", where, loop, *at) for loop in TRAIN_LOOPS]
    for index, row in enumerate(r for r in m.get("determinism_prices") or [] if isinstance(r, dict)):
        named += [
            (f"metrics.determinism_prices[{index}]", "legs", str(row.get("loop")), on, row.get("grad_accum"))
            for on in (True, False)
        ]
    for loop in TRAIN_LOOPS:  # a record of legs reads its headlines off them (before, off its contenders)
        if timed["legs"] and m.get(f"{loop}_tokens_per_s") is not None:
            named.append((f"metrics.{loop}_tokens_per_s", "legs", loop, m.get("deterministic"), 1))
    for row, where, loop, deterministic, accum in named:
        if not leg_of(timed[where], loop, deterministic, accum):
            problems.append(
                f"{row} is read off the {loop} leg at deterministic={deterministic}, grad_accum={accum}, "
                f"which metrics.{where} does not hold"
            )
    return problems + _memory_accumulation_problems(m, timed["legs"])


def _memory_accumulation_problems(m: Metrics, legs: list[dict[str, Any]]) -> list[str]:
    """The memory rows measure each loop's peak at the accumulations the legs are timed at, each
    once: a row's peak was taken at the accumulation it names, which nothing else in the record
    restates, so a row relabelled to another would otherwise stand."""
    rows = [row.get("grad_accum") for row in m.get("memory") or [] if isinstance(row, dict)]
    timed = sorted({str(leg.get("grad_accum")) for leg in legs})
    if not rows or not legs or sorted(map(str, rows)) == timed:
        return []
    return [
        f"metrics.memory measures peaks at grad_accum {', '.join(map(str, rows))}, but metrics.legs "
        f"are timed at {', '.join(timed)}: each timed accumulation has one peak"
    ]


def same(value: float) -> float:
    """A value stated twice in one record."""
    return value


# benchmarks/train_throughput.py's contenders: each has `<name>_tokens_per_s`, the steady median of
# the per-step rates it keeps as `<name>_step_tokens_per_s`.
TRAIN_CONTENDERS = ("plain", "stack", "plain_compiled", "compiled")


@identities(TRAIN_BENCHMARK)
def _train(m: Metrics) -> Iterator[Identity]:
    yield from _train_legs(m)
    yield from _of(m, "overhead", overhead, "plain_tokens_per_s", "stack_tokens_per_s")
    yield from _of(m, "compiled_speedup", quotient, "compiled_tokens_per_s", "plain_tokens_per_s")
    yield from _of(m, "eager_ratio", quotient, "stack_tokens_per_s", "plain_tokens_per_s")
    yield from _of(m, "ratio", quotient, "compiled_tokens_per_s", "plain_compiled_tokens_per_s")
    for contender in TRAIN_CONTENDERS:
        field = f"{contender}_tokens_per_s"
        yield from _steps(f"metrics.{field}", m.get(field), m.get(f"{contender}_step_tokens_per_s"))
    bound = m.get("compile_bound")
    if isinstance(bound, dict) and "amdahl_limit" in bound:
        yield Identity(
            "metrics.compile_bound.amdahl_limit",
            bound["amdahl_limit"],
            amdahl_limit,
            (bound.get("library_share"),),
        )


# benchmarks/model_speed.py's record name by the device it measured on (its --device, its SHAPES key).
SPEED_BENCHMARKS = {"cuda": "model_vs_reference_gpu", "cpu": "model_vs_reference_cpu"}


@identities(*SPEED_BENCHMARKS.values())
def _model(m: Metrics) -> Iterator[Identity]:
    rows, ratios = m.get("rows") or {}, m.get("ratios") or {}
    for name, row in rows.items():
        if isinstance(row, dict):
            where = f"metrics.rows.{name}.tokens_per_s"
            yield from _steps(where, row.get("tokens_per_s"), row.get("step_tokens_per_s"))
    for mode, recorded in ratios.items():
        stack, reference = rows.get(f"stack_{mode}") or {}, rows.get(f"reference_{mode}") or {}
        args = (stack.get("tokens_per_s"), reference.get("tokens_per_s"))
        yield Identity(f"metrics.ratios.{mode}", recorded, quotient, args)
    if ratios and "ratio" in m:
        yield Identity("metrics.ratio", m["ratio"], smallest, tuple(ratios.values()))


@identities("prepare_peak_rss")
def _prepare(m: Metrics) -> Iterator[Identity]:
    runs = [run for run in m.get("runs") or [] if isinstance(run, dict)]
    for index, run in enumerate(runs):
        where = f"metrics.runs[{index}]"
        seconds, baselines = run.get("seconds") or [], run.get("baseline_mib_per_s") or []
        if not seconds or not baselines:
            continue
        text = run.get("text_bytes")
        yield Identity(f"{where}.mib_per_s", run.get("mib_per_s"), mib_per_s, _flat(text, seconds))
        yield Identity(
            f"{where}.best_baseline_mib_per_s", run.get("best_baseline_mib_per_s"), largest, _flat(baselines)
        )
        for field, timed in (
            ("ratio", seconds),
            ("ratio_tokenizer_given", run.get("seconds_tokenizer_given")),
        ):
            if run.get(field) is None and field != "ratio":
                continue
            count = len(timed) if isinstance(timed, list) else 1
            ratio = _split(prepare_ratio, count)
            args = _flat(text, timed, baselines)
            yield Identity(f"{where}.{field}", run.get(field), ratio, args, prepare_ratio.__name__)
    if runs:
        yield Identity(
            "metrics.peak_rss_gib",
            m.get("peak_rss_gib"),
            largest,
            _flat([r.get("peak_rss_gib") for r in runs]),
        )
        yield Identity(
            "metrics.throughput_ratio",
            m.get("throughput_ratio"),
            smallest,
            _flat([r.get("ratio") for r in runs]),
        )


@identities("smoke_wall_time")
def _smoke(m: Metrics) -> Iterator[Identity]:
    fixed = list((m.get("fixed_costs_seconds") or {}).values())
    legs = list((m.get("legs_seconds") or {}).values())
    waited = list((m.get("console_script_waited_seconds") or {}).values())
    if fixed:
        yield Identity("metrics.floor_seconds", m.get("floor_seconds"), total, tuple(fixed))
        yield Identity(
            "metrics.above_floor_seconds",
            m.get("above_floor_seconds"),
            remainder,
            _flat(m.get("seconds"), fixed),
        )
    if legs:
        yield Identity(
            "metrics.outside_legs_seconds",
            m.get("outside_legs_seconds"),
            remainder,
            _flat(m.get("seconds"), legs, waited),
        )


@identities(OPTIONS_BENCHMARK)
def _options(m: Metrics) -> Iterator[Identity]:
    rows = [row for row in m.get("options") or [] if isinstance(row, dict)]
    dense = next((row.get("tokens_per_s") for row in rows if row.get("option") == "dense"), None)
    for index, row in enumerate(rows):
        if "vs_dense" in row:
            args = (row.get("tokens_per_s"), dense)
            yield Identity(f"metrics.options[{index}].vs_dense", row["vs_dense"], quotient, args)


@identities(DETERMINISM_BENCHMARK)
def _determinism_parts(m: Metrics) -> Iterator[Identity]:
    """benchmarks/determinism_parts.py: each leg's tokens/s from its per-step seconds past the
    warm-up; each part's price from the every-part-on leg and the leg with that part off, and the
    price of all from the on and off legs; whether a leg's weights repeat from its digests."""
    legs = [leg for leg in m.get("legs") or [] if isinstance(leg, dict)]
    yield from _leg_rates(legs, m)
    for index, leg in enumerate(legs):
        digests = leg.get("weights")
        if isinstance(digests, list) and len(digests) > 1:
            args = (float(len(set(map(str, digests))) == 1),)
            yield Identity(f"metrics.legs[{index}].repeats", float(leg.get("repeats") is True), same, args)
    rate = {leg.get("leg"): leg.get("tokens_per_s") for leg in legs}
    for part, price in (m.get("prices") or {}).items():
        without = rate.get("off" if part == "all" else part)
        yield Identity(f"metrics.prices.{part}", price, overhead, (without, rate.get("on")))


def attention_identities(where: str, shapes: Any, ratio: Any) -> Iterator[Identity]:
    """Each shape's triton ÷ sdpa forward+backward TFLOP/s (`where`: the shapes' field), and their
    geometric mean, `metrics.ratio`."""
    rows = [row for row in shapes or [] if isinstance(row, dict) and "triton_over_sdpa" in row]
    for index, row in enumerate(rows):
        args = (
            (row.get("triton") or {}).get("fwd_bwd_tflops"),
            (row.get("sdpa") or {}).get("fwd_bwd_tflops"),
        )
        yield Identity(f"{where}[{index}].triton_over_sdpa", row["triton_over_sdpa"], quotient, args)
    if rows and ratio is not None:
        yield Identity("metrics.ratio", ratio, geometric_mean, tuple(r["triton_over_sdpa"] for r in rows))


@identities("attention_triton_vs_sdpa")
def _attention(m: Metrics) -> Iterator[Identity]:
    yield from attention_identities("metrics.shapes", m.get("shapes"), m.get("ratio"))


# -- met ---------------------------------------------------------------------------------------


def _met(inputs: Inputs, name: str, measured: Any, goal: Any) -> bool | None:
    """Whether `measured` meets `goal` in the direction the spec gives benchmark `name`."""
    spec_goal = inputs.spec.benchmarks.get(name)
    if spec_goal is None or not isinstance(measured, int | float) or not isinstance(goal, int | float):
        return None
    return spec_goal.model_copy(update={"goal": float(goal)}).met(float(measured))


# From this spec version a benchmark record states the goal of each benchmark it names (its own and
# each of `also`) whose measurement it holds, and `met` answers for every one: a goal left unstated
# would take a missed measurement out of the verdict.
EVERY_GOAL_SINCE = "1.61.0"


def goals_met(inputs: Inputs, derived: Derivation) -> None:
    """`met` of every goal the record states (from 1.61.0, of every goal it measured), from its value
    and goal."""
    metrics, spec = inputs.record.metrics, inputs.spec
    goals = metrics.get("goals")
    if isinstance(goals, dict):  # several goals, each with its own measurement
        for name, row in goals.items():
            if isinstance(row, dict) and name in spec.benchmarks:
                derived.put(
                    ("metrics", "goals", name, "met"),
                    _met(inputs, name, row.get("measured"), row.get("goal")),
                )
        return
    name = metrics.get("benchmark")
    if not isinstance(name, str) or name not in spec.benchmarks:
        return
    # Where the record states each goal it was measured against: `goal` for the main benchmark,
    # `goal_<metric>` for each benchmark of several.
    every = version_key(inputs.record.spec.version) >= version_key(EVERY_GOAL_SINCE)
    stated = [(name, "goal")] if "goal" in metrics else []
    also = metrics.get("also")
    for other in [name, *(also if isinstance(also, list) else [])]:
        bench = spec.benchmarks.get(other) if isinstance(other, str) else None
        if bench is None:
            continue
        key = f"goal_{bench.metric}"
        if key in metrics:
            stated.append((other, key))
        elif every and not (other == name and stated) and real(metrics.get(bench.metric)):
            derived.put(("metrics", key), bench.goal)  # measured, so it must be stated and judged
            stated.append((other, key))
    verdicts = [
        _met(
            inputs,
            bench,
            metrics.get(spec.benchmarks[bench].metric),
            metrics.get(key, spec.benchmarks[bench].goal),
        )
        for bench, key in stated
    ]
    if verdicts:
        derived.put(("metrics", "met"), None if None in verdicts else all(verdicts))
    cited = inputs.record.spec.policies.get("benchmarks")
    current = spec.policies.get("benchmarks")
    if cited is not None and current is not None and cited.revision == current.revision:
        for bench, key in stated:  # judged under the spec's own goals: the record states them
            derived.put(("metrics", key), spec.benchmarks[bench].goal)


def problems_of(found: Iterator[Identity]) -> list[str]:
    """The sentences of the identities a record breaks."""
    return [problem for identity in found if (problem := identity.problem()) is not None]


def _choices(metrics: Metrics, derived: Derivation) -> None:
    """What a benchmark concluded from its own measurements: the tile search's best of each kernel,
    how many repeated runs differed, whether the prepare benchmark's worker counts wrote one manifest."""
    for dim, found in (metrics.get("search") or {}).items():
        kernels = {k: v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}
        for kernel, tried in kernels.items():  # beside them: the shape searched at (n, batch, heads)
            timed = [row for row in tried.get("candidates") or [] if isinstance(row, dict) and "ms" in row]
            if timed:
                derived.put(("metrics", "search", dim, kernel, "best"), fastest(timed))
    modes = metrics.get("modes")
    if isinstance(modes, list) and "mismatched_runs" in metrics:
        compared = [mode for mode in modes if isinstance(mode, dict)]
        derived.put(("metrics", "mismatched_runs"), mismatched_runs(compared))
        derived.problems += legs_ended(compared)
    manifests = metrics.get("worker_manifests")
    if isinstance(manifests, dict) and manifests and "manifests_identical" in metrics:
        derived.put(("metrics", "manifests_identical"), len(set(manifests.values())) == 1)


def _profiled_step(metrics: Metrics, derived: Derivation) -> None:
    """The step the training benchmark profiles in each loop: the first steady one, past its
    warm-up, at grad_accum 1 (benchmarks/train_throughput.py's PROFILED_STEP), so that a profile
    of a warm-up step (compilation, first allocations) cannot stand as a steady step's."""
    profiles, warmup = metrics.get("step_profiles"), metrics.get("warmup_steps")
    if isinstance(profiles, dict) and isinstance(warmup, int) and not isinstance(warmup, bool):
        derived.put(("metrics", "step_profiles", "step"), warmup + 1)
        derived.put(("metrics", "step_profiles", "grad_accum"), 1)


@derives("benchmark")
def benchmark_record(inputs: Inputs) -> Derivation:
    """The headline numbers from the measurements beside them, its choices from its candidates, and
    `met` from value and goal."""
    derived = Derivation()
    metrics = inputs.record.metrics
    rule = IDENTITIES.get(str(metrics.get("benchmark")))
    if rule is not None:
        derived.problems += problems_of(rule(metrics))
    if metrics.get("benchmark") == TRAIN_BENCHMARK:
        derived.problems += train_leg_problems(metrics)
        _profiled_step(metrics, derived)
    _choices(metrics, derived)
    goals_met(inputs, derived)
    return derived
