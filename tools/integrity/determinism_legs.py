"""The determinism benchmark's legs, held to what their names say they switched.

benchmarks/determinism_parts.py prices each part of `train.deterministic` by a leg that trains with
every switch as `train.deterministic` sets it but that part's (PARTS), against the leg with every
part on ("on") and the leg with `train.deterministic` off ("off"). Each leg records the switches
torch reported while it trained, and the record's prices are derived from the legs' rates
(contracts.derive.benchmarks). A price is the part's only if its leg differs from "on" in that part
alone: a leg that also ran with another switch changed prices both, and one that changed nothing
prices noise. So:

- each leg is named once, by a name the benchmark times (LEGS), "on" and "off" among them;
- "on" lets only deterministic kernels run (contracts.derive.training.deterministic_kernels: every
  switch `train.deterministic` sets, as it sets it, no SDPA backend without a deterministic
  backward, cuBLAS's workspace fixed), and "off" has PyTorch's determinism checks off as
  `train.deterministic` off leaves them (SWITCHES_WHEN_DETERMINISTIC);
- each part's leg differs from "on" in some of its part's switches and in no other.

Which way a part's leg switches it is not held: the fill's leg filled new memory from b5ce7779
(2026-11-28 20:40) on, when `train.deterministic` stopped filling it, and left it unfilled before;
which switches each part names has not changed.
"""

from __future__ import annotations

from collections import Counter

from benchmarks.determinism_parts import LEGS, PARTS
from contracts.derive.benchmarks import DETERMINISM_BENCHMARK
from contracts.derive.training import SWITCHES_WHEN_DETERMINISTIC, deterministic_kernels
from contracts.evidence import EvidenceRecord


def leg_switch_problems(record: EvidenceRecord) -> list[str]:
    """What a determinism benchmark's legs state they switched that their names deny."""
    metrics = record.metrics
    if record.run.kind != "benchmark" or metrics.get("benchmark") != DETERMINISM_BENCHMARK:
        return []
    legs = [leg for leg in metrics.get("legs") or [] if isinstance(leg, dict)]
    if not all(isinstance(leg.get("leg"), str) for leg in legs):
        return ["a leg is named by no string: which part it priced cannot be read"]
    names = Counter(leg["leg"] for leg in legs)
    problems = [f"leg {name!r} is timed {count} times" for name, count in names.items() if count > 1]
    problems += [
        f"leg {name!r} is no leg the benchmark times ({', '.join(LEGS)})"
        for name in names
        if name not in LEGS
    ]
    problems += [
        f"has no {name!r} leg, which every price is taken against"
        for name in ("on", "off")
        if name not in names
    ]
    switches = {leg.get("leg"): leg.get("switches") for leg in legs}
    if not all(isinstance(flags, dict) for flags in switches.values()):
        return [*problems, "a leg states no switches it trained with"]
    on, off = switches.get("on"), switches.get("off")
    if on is not None and not (isinstance(on.get("sdpa_backends"), list) and deterministic_kernels(on)):
        problems.append(f"leg 'on' trained with switches that let non-deterministic kernels run: {on!r}")
    if off is not None:
        problems += [
            f"leg 'off' trained with {key}={off.get(key)!r}, which train.deterministic off sets to {value!r}"
            for key, value in SWITCHES_WHEN_DETERMINISTIC[False].items()
            if off.get(key) != value
        ]
    for part, owned in PARTS.items():
        flags = switches.get(part)
        if flags is None or on is None:
            continue
        changed = sorted(key for key in {*flags, *on} if flags.get(key) != on.get(key))
        foreign = [key for key in changed if key not in owned]
        if foreign:
            problems.append(
                f"leg {part!r} differs from leg 'on' in {', '.join(foreign)}, not its part's switches"
            )
        elif not changed:
            problems.append(f"leg {part!r} trained with the switches of leg 'on': it switched nothing")
    return problems
