"""Where a loop's memory is at its peak: the allocations live at the high-water mark, by what made them.

A peak-memory ratio says how much more one loop holds than another, not where. PyTorch can record
every allocation and free with the Python stack that made it: on CUDA as the caching allocator's
memory history (`torch.cuda.memory._record_memory_history`, the trace pytorch.org/memory_viz
draws), on the CPU as the profiler's memory profile, which `torch.cuda._memory_viz.
_profile_to_snapshot` turns into the same kind of trace. `at_peak` replays such a trace, finds
the moment the most bytes were live, and sums what was live then by its owner: the innermost
frame in this repository's code (a gate's probe, the reader, the monitor), else the innermost
Python frame. Set side by side for `stack train` and a plain loop (benchmarks/train_throughput.py),
the owners one holds and the other does not are where the difference lives.

Both recorders are PyTorch's private interfaces (the documented way to take a memory snapshot);
their trace entries are dicts with `action` ("alloc", "free_requested", "free_completed", and
segment events), `addr`, `size` and `frames` (innermost first), and, from the profiler, a
`category` (activation, gradient, parameter, optimizer state, ...).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

# Top-level folders of this repository whose frames name an owner.
OWN_CODE = ("stack", "contracts", "benchmarks", "tools")
_OWN = re.compile(r"(?:^|/)((?:" + "|".join(OWN_CODE) + r")/[\w/]+\.py)$")
# A profiler frame is one string, "path/to/file.py(LINE): function".
_PROFILER_FRAME = re.compile(r"^(?P<file>.+\.py)\((?P<line>\d+)\): (?P<function>.+)$")
# How many owners a summary lists by name; the rest are summed as one.
SHOWN = 8
NO_FRAME = "no Python frame (the backward's engine, or C++)"
MAX_ENTRIES = 2_000_000  # allocator events CUDA's history keeps (a ring: the oldest go first)


@dataclass(frozen=True)
class Peak:
    """The most bytes live at once in a trace, and who held them then, largest first."""

    bytes: int
    owners: tuple[tuple[str, int], ...]
    categories: tuple[tuple[str, int], ...]

    def as_record(self, shown: int = SHOWN) -> dict[str, Any]:
        """The record's form: the peak, its `shown` largest owners and the rest as one."""
        named = [{"owner": owner, "bytes": size} for owner, size in self.owners[:shown]]
        rest = sum(size for _, size in self.owners[shown:])
        if rest:
            named.append({"owner": f"{len(self.owners) - shown} others", "bytes": rest})
        categories = {category: size for category, size in self.categories}
        return {
            "peak_bytes": self.bytes,
            "owners": named,
            **({"categories": categories} if categories else {}),
        }


def _frame(frame: Mapping[str, Any]) -> tuple[str | None, str]:
    """(file, function) of one trace frame, from CUDA's {filename, line, name} or the profiler's
    "file(line): function" name (its filename is "none")."""
    filename, name = str(frame.get("filename", "none")), str(frame.get("name", "?"))
    if filename not in ("none", "", "??"):
        return filename, name
    parsed = _PROFILER_FRAME.match(name)
    return (parsed["file"], parsed["function"]) if parsed else (None, name)


def owner(frames: Sequence[Mapping[str, Any]]) -> str:
    """Who made an allocation: `file:function` of its innermost frame in this repository's code
    (OWN_CODE), else of its innermost Python frame (library paths from the package folder on),
    else its innermost frame's name; NO_FRAME without frames (on CUDA, an allocation of the
    autograd engine's own thread, which runs the backward with no Python stack)."""
    parsed = [_frame(frame) for frame in frames]
    for file, function in parsed:
        own = _OWN.search(file) if file else None
        if own:
            return f"{own[1]}:{function}"
    for file, function in parsed:
        if file:
            return f"{file.rsplit('site-packages/', 1)[-1]}:{function}"
    return parsed[0][1] if parsed else NO_FRAME


def at_peak(entries: Iterable[Mapping[str, Any]]) -> Peak:
    """The trace's high-water mark and what was live at it. An allocation counts from its "alloc"
    to its "free_completed" (on CUDA the block is reusable only then); a free of an address the
    trace never saw allocated (made before recording began) is ignored, so the peak is over what
    the trace saw. The first moment the mark is reached is the one summarised."""
    entries = list(entries)
    live: dict[int, int] = {}
    held = peak = 0
    peak_at = -1
    for i, entry in enumerate(entries):
        action, addr = entry["action"], entry["addr"]
        if action == "alloc":
            live[addr] = int(entry["size"])
            held += live[addr]
            if held > peak:
                peak, peak_at = held, i
        elif action == "free_completed" and addr in live:
            held -= live.pop(addr)
    alive: dict[int, Mapping[str, Any]] = {}
    for entry in entries[: peak_at + 1]:
        if entry["action"] == "alloc":
            alive[entry["addr"]] = entry
        elif entry["action"] == "free_completed":
            alive.pop(entry["addr"], None)
    owners: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    for entry in alive.values():
        owners[owner(entry.get("frames") or ())] += int(entry["size"])
        if entry.get("category"):
            categories[str(entry["category"])] += int(entry["size"])
    return Peak(peak, tuple(owners.most_common()), tuple(categories.most_common()))


class ProfilerEvent(Protocol):
    """What `running_peak` reads of one of the CPU profiler's events (its kineto results)."""

    def name(self) -> str: ...
    def nbytes(self) -> int: ...
    def start_ns(self) -> int: ...


def running_peak(events: Iterable[ProfilerEvent]) -> int:
    """The largest running sum, in time order, of the bytes the profiler's memory events ("[memory]":
    an allocation's size, a free's negated) report: the CPU allocator's own high-water mark, frees
    of tensors made before recording included. Only an event with bytes is asked its name: the
    profiler can hold an operator's event whose name is not UTF-8 (seen in a process's first
    profile), and reading that name raises."""
    memory = [event for event in events if event.nbytes() and event.name() == "[memory]"]
    held = peak = 0
    for event in sorted(memory, key=lambda event: event.start_ns()):
        held += event.nbytes()
        peak = max(peak, held)
    return peak


def profiled_peak(run: Callable[[], object]) -> int:
    """The CPU allocator's high-water mark while `run` ran (`running_peak` of the profiler's memory
    events) and nothing else: without the Python stacks and torch's memory profile that `recorded`
    adds to name who held it, which cost a short `stack train` run of the smoke preset 24 s of
    post-processing after 3 s of steps. The events, and so the count, are the same with or without."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profiler:
        run()
    return running_peak(profiler.profiler.kineto_results.events())


def recorded(run: Callable[[], object], device: torch.device) -> tuple[list[dict[str, Any]], Any]:
    """The allocator trace of `run` on `device` (CUDA's memory history, or the CPU profiler's memory
    profile as the same kind of trace), with the CPU profiler itself (None on CUDA), whose raw
    memory events a caller may also read."""
    if device.type == "cuda":
        torch.cuda.memory._record_memory_history(max_entries=MAX_ENTRIES, stacks="python")
        try:
            run()
            torch.cuda.synchronize(device)
            snapshot = torch.cuda.memory._snapshot()
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return list(snapshot["device_traces"][index]), None
    from torch.cuda._memory_viz import _profile_to_snapshot

    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(
        activities=activities, profile_memory=True, record_shapes=True, with_stack=True
    ) as profiler:
        run()
    return list(_profile_to_snapshot(profiler)["device_traces"][-1]), profiler
