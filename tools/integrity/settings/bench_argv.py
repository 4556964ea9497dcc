"""What a benchmark's record states of the command line it ran, against that line.

A benchmark script states in its record the settings it ran with: benchmarks/trace_overhead.py
the preset, batch, repeats and precision it timed (one record per precision the line asks for),
the sequence length (`tokens`), the model's `parameters` and its number of `sites`;
benchmarks/train_throughput.py the preset and steps both loops trained; benchmarks/
determinism_parts.py those and its runs and whether the plain loop was compiled;
benchmarks/repeatability.py the preset and the `--set` items its runs trained with. A reader takes the
numbers for those settings (`small` at 1.15 is not GPT-2 small's 1.15), and each is decided by the
record's own command line (`run.argv`), so a record edited to claim other settings contradicts it:

* an option the line gives is read by the script's own parser (its `build_parser`) with every
  default left out; one it leaves out holds the default the script's parser declared at the
  record's commit, read from the source without running it (default_sources.parser_defaults), as
  a `stack` command's defaults are read;
* the device its line runs it on (`--device`, given or a literal default) is env.device's kind
  (the CPU, or a CUDA GPU by its name);
* of a trace benchmark, the tile its statistics were cut in (`tile`) is stated where the line gives
  `--tile`, as it gives it, and nowhere else; a length of 0 is the preset's ctx, and the parameters
  are counted (contracts.model_shape.param_count) and the sites named (stack.trace.sites) from the
  preset's model at the commit, the preset over ModelConfig's defaults there (preset_sources), at
  the line's vocabulary;
* of a training benchmark, the steps each leg warms up for and the steps of a memory leg are the
  script's WARMUP and MEMORY_STEPS at the commit, which no option sets.

A record that also states its model whole (`model`) has it held to the preset by preset_sources. A
dirty tree's record may have run another parser than its commit's, so what only a default
contradicts there is a warning. A line that asks for both precisions files two records, and which of
them is which its line cannot tell. A file the commit lacks, a source that does not parse or a line
the parser refuses is named, never passed in silence.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from pydantic import ValidationError

from benchmarks import determinism_parts, repeatability, trace_overhead, train_throughput
from contracts.derive.benchmarks import DETERMINISM_BENCHMARK, OPTIONS_BENCHMARK, TRAIN_BENCHMARK
from contracts.evidence import EvidenceRecord
from contracts.model_shape import param_count
from stack.model import ModelConfig
from stack.trace.sites import layout_for, site_names
from tools.integrity.env_checks import device_type
from tools.integrity.settings.argv_record import _suppress_defaults
from tools.integrity.settings.code_constants import NOT_LITERAL, module_constants
from tools.integrity.settings.default_sources import UNRESOLVED, parser_defaults
from tools.integrity.settings.preset_sources import (
    DEFAULTS,
    PRESET_SOURCES,
    PRESETS_FILE,
    class_defaults,
    presets_in,
)


@dataclass(frozen=True)
class Script:
    """A benchmark script whose records restate its command line: where it lives, its parser, and
    each setting its records state, by the metrics key, with the option's destination."""

    path: str
    parser: Callable[[], argparse.ArgumentParser]
    stated: dict[str, str]
    # Values its records state that no option sets, by the metrics key, with the script's constant.
    constants: dict[str, str] = field(default_factory=dict)


TRAINING = Script(
    "benchmarks/train_throughput.py",
    train_throughput.build_parser,
    {"preset": "preset", "steps": "steps"},
    {"warmup_steps": "WARMUP", "memory_steps": "MEMORY_STEPS"},
)
# The scripts by the benchmark their records name (metrics.benchmark).
SCRIPTS = {
    trace_overhead.GOAL: Script(
        "benchmarks/trace_overhead.py",
        trace_overhead.build_parser,
        {"preset": "preset", "batch": "batch", "repeats": "repeats"},
    ),
    TRAIN_BENCHMARK: TRAINING,
    OPTIONS_BENCHMARK: TRAINING,
    DETERMINISM_BENCHMARK: Script(
        "benchmarks/determinism_parts.py",
        determinism_parts.build_parser,
        {"preset": "preset", "steps": "steps", "runs": "runs", "compiled": "compile"},
    ),
    repeatability.REPEAT_BENCHMARK: Script(
        "benchmarks/repeatability.py", repeatability.build_parser, {"preset": "preset", "sets": "sets"}
    ),
}


def script_of(record: EvidenceRecord) -> Script | None:
    """The script whose command line decides what `record` states, None for any other record."""
    if record.run.kind != "benchmark":
        return None
    return SCRIPTS.get(str(record.metrics.get("benchmark")))


def line_sources(record: EvidenceRecord) -> list[str]:
    """The files at the record's commit that decide what its line left out: the script's parser, and
    for a trace benchmark the presets and ModelConfig's defaults."""
    script = script_of(record)
    if script is None:
        return []
    return [script.path, *(PRESET_SOURCES if record.metrics.get("benchmark") == trace_overhead.GOAL else ())]


def given(script: Script, argv: list[str]) -> dict[str, Any] | None:
    """The options a command line of `script` gives, by destination (flags always); None where its
    parser refuses it (its complaint to standard error is kept from the checker's output)."""
    parser = script.parser()
    _suppress_defaults(parser)
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return vars(parser.parse_args(argv))
        except SystemExit:
            return None


def _preset_model(name: Any, vocab: Any, blobs: dict[str, bytes | None]) -> dict[str, Any] | None:
    """The model the preset `name` makes at the commit at `vocab`: the preset's model section over
    ModelConfig's defaults there; None where the commit has no such preset."""
    presets = presets_in(blobs.get(PRESETS_FILE) or b"")
    path, owner = DEFAULTS["model"]
    defaults = class_defaults(blobs.get(path) or b"", owner)
    if presets is None or defaults is None or not isinstance(presets.get(name), dict):
        return None
    return {**defaults, **(presets[name].get("model") or {}), "vocab": vocab}


def line_problems(
    record: EvidenceRecord, script: Script, blobs: dict[str, bytes | None]
) -> tuple[list[str], list[str]]:
    """What `record` states of the settings it ran with that its command line, read with the parser
    of `script` (its `script_of`) at the commit (`blobs`: each of `line_sources`'s bytes, None where
    the commit lacks it), decides otherwise: (problems, warnings), what only a default contradicts
    in a dirty tree's record a warning (module docstring)."""
    argv = record.run.argv or []
    if not argv or not PurePath(argv[0]).as_posix().endswith(script.path):
        return [f"its command line {argv!r} does not run {script.path}"], []
    options = given(script, argv[1:])
    if options is None:
        return [f"its command line {argv!r} is not one {script.path}'s parser takes"], []
    defaults = parser_defaults(blobs.get(script.path) or b"")
    if defaults is None:
        return [f"its commit has no {script.path} that parses, to read the defaults of its command line"], []
    # What the line decides: each option it gives, and each the commit's parser declares (an option
    # it did not have yet left its value to the code, not to the line).
    asked = {**defaults, **options}
    metrics = record.metrics
    found = [
        (dest, _contradiction(key, metrics[key], asked[dest]))
        for key, dest in script.stated.items()
        if key in metrics and dest in asked and metrics[key] != asked[dest]
    ]
    device = asked.get("device")
    if isinstance(device, str) and device.split(":")[0] != device_type(record):
        found.append(
            ("device", f"env.device is {record.env.device!r}, but its command line runs it on {device!r}")
        )
    if metrics.get("benchmark") == trace_overhead.GOAL:
        found += _trace_contradictions(metrics, asked, blobs)
        if "tile" in options and "tile" not in defaults:  # a clean tree's script had no --tile to take
            untaken = f"its command line gives --tile, which {script.path} at its commit does not take"
            found.append(("", untaken))
    declared = module_constants(blobs.get(script.path) or b"") or {}
    found += [
        ("", f"metrics.{key} is {metrics[key]!r}, but {script.path} runs {name} = {declared[name]!r}")
        for key, name in script.constants.items()
        if key in metrics
        and declared.get(name, NOT_LITERAL) is not NOT_LITERAL
        and metrics[key] != declared[name]
    ]
    problems = [problem for dest, problem in found if dest in options or not record.code.git_dirty]
    return problems, [problem for dest, problem in found if problem not in problems]


def _contradiction(key: str, stated: Any, asked: Any) -> str:
    """The sentence for a setting `metrics.<key>` states otherwise than the line `asked` for."""
    if asked is UNRESOLVED:
        return f"metrics.{key} is {stated!r}, but no literal default of its commit's parser decides it"
    return f"metrics.{key} is {stated!r}, but its command line asks for {asked!r}"


def _trace_contradictions(
    metrics: dict[str, Any], asked: dict[str, Any], blobs: dict[str, bytes | None]
) -> list[tuple[str, str]]:
    """(the option that decides it, the problem) of each value a trace benchmark's `metrics` state
    otherwise than its precisions `asked` and the preset's model at the commit give."""
    found = []
    precisions = asked.get("precision")
    if "precision" in metrics and (
        not isinstance(precisions, list) or metrics["precision"] not in precisions
    ):
        found.append(
            (
                "precision",
                f"metrics.precision is {metrics['precision']!r}, "
                f"but its command line asks for {precisions!r}",
            )
        )
    # The tile a CUDA record's statistics were cut in is stated exactly where its line gives --tile.
    if metrics.get("tile") != asked.get("tile"):
        found.append(("tile", _contradiction("tile", metrics.get("tile"), asked.get("tile"))))
    model = _preset_model(asked.get("preset"), asked.get("vocab"), blobs)
    if model is None:
        return [
            *found,
            (
                "preset",
                f"its command line's preset {asked.get('preset')!r} is no preset of {PRESETS_FILE} "
                "at its commit",
            ),
        ]
    try:
        config = ModelConfig.model_validate(model)
    except ValidationError as error:
        return [
            *found,
            (
                "preset",
                f"its preset {asked.get('preset')!r} at its commit makes no model today's ModelConfig takes "
                f"({error.error_count()} error(s))",
            ),
        ]
    counted = {
        "tokens": ("tokens", asked.get("tokens") or config.ctx),
        "parameters": ("vocab", param_count(model)),
        "sites": ("preset", len(site_names(config.n_layers, layout_for(config)))),
    }
    found += [
        (dest, f"metrics.{key} is {metrics[key]!r}, but its command line's model gives {value!r}")
        for key, (dest, value) in counted.items()
        if key in metrics and metrics[key] != value
    ]
    stated = metrics.get("model")
    if isinstance(stated, dict) and stated.get("vocab") != model["vocab"]:  # the one key no preset decides
        found.append(("vocab", _contradiction("model.vocab", stated.get("vocab"), model["vocab"])))
    return found
