"""What the trace benchmark's record states of the shape it timed, against the command line it ran.

benchmarks/trace_overhead.py files one record per precision its command line asks for, and each
states what it timed: the preset (`preset`), the batch, the sequence length (`tokens`), the repeats,
the precision, the model's `parameters` and its number of `sites`. A reader takes the ratio for
that shape: `small` at 1.15 is not GPT-2 small's 1.15. Each of them is decided by the record's own
command line (`run.argv`), so a record edited to claim another shape contradicts its line:

* an option the line gives is read by the script's own parser (`build_parser`) with every default
  left out; one it leaves out holds the default the script's parser declared at the record's commit,
  read from the source without running it (default_sources.parser_defaults), as a `stack` command's
  defaults are read;
* a length of 0 is the preset's ctx; the parameters are counted (contracts.model_shape.param_count)
  and the sites named (stack.trace.sites) from the preset's model at the commit, the preset over
  ModelConfig's defaults there (preset_sources), at the line's vocabulary.

A record that also states its model whole (`model`) has it held to the preset by preset_sources. A
dirty tree's record may have run another parser than its commit's, so what only a default
contradicts there is a warning. A line that asks for both precisions files two records, and which of
them is which its line cannot tell. A file the commit lacks, a source that does not parse or a line
the parser refuses is named, never passed in silence.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import PurePath
from typing import Any

from pydantic import ValidationError

from benchmarks.trace_overhead import GOAL, build_parser
from contracts.evidence import EvidenceRecord
from contracts.model_shape import param_count
from stack.model import ModelConfig
from stack.trace.sites import layout_for, site_names
from tools.integrity.settings.argv_record import _suppress_defaults
from tools.integrity.settings.default_sources import UNRESOLVED, parser_defaults
from tools.integrity.settings.preset_sources import (
    DEFAULTS,
    PRESET_SOURCES,
    PRESETS_FILE,
    class_defaults,
    presets_in,
)

SCRIPT = "benchmarks/trace_overhead.py"
LINE_SOURCES = (SCRIPT, *PRESET_SOURCES)
# The options whose value the record states under the same name, and every option it restates.
STATED = ("preset", "batch", "repeats")
ASKED = (*STATED, "vocab", "tokens", "precision")


def states_trace_line(record: EvidenceRecord) -> bool:
    """Whether `record` is a trace benchmark's, which its command line decides (module docstring)."""
    return record.run.kind == "benchmark" and record.metrics.get("benchmark") == GOAL


def line_sources(record: EvidenceRecord) -> list[str]:
    """The files at the record's commit that decide what its line left out: the script's parser, the
    presets and ModelConfig's defaults."""
    return list(LINE_SOURCES) if states_trace_line(record) else []


def given(argv: list[str]) -> dict[str, Any] | None:
    """The options a command line of the script gives, by destination; None where the script's
    parser refuses it (its complaint to standard error is kept from the checker's output)."""
    parser = build_parser()
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


def line_problems(record: EvidenceRecord, blobs: dict[str, bytes | None]) -> tuple[list[str], list[str]]:
    """What `record` states of the shape it timed that its command line, read with the parser at the
    commit (`blobs`: each of LINE_SOURCES's bytes, None where the commit lacks it), decides otherwise:
    (problems, warnings). A record of a dirty tree may have run another parser than its commit's, so
    what only a default of the commit's parser contradicts there is a warning, as default_sources
    warns of a `stack` command's."""
    argv = record.run.argv or []
    if not argv or not PurePath(argv[0]).as_posix().endswith(SCRIPT):
        return [f"its command line {argv!r} does not run {SCRIPT}"], []
    options = given(argv[1:])
    if options is None:
        return [f"its command line {argv!r} is not one {SCRIPT}'s parser takes"], []
    defaults = parser_defaults(blobs.get(SCRIPT) or b"")
    if defaults is None:
        return [f"its commit has no {SCRIPT} that parses, to read the defaults of its command line"], []
    asked = {dest: options.get(dest, defaults.get(dest, UNRESOLVED)) for dest in ASKED}
    found = _contradictions(record.metrics, asked, blobs)
    problems = [problem for dest, problem in found if dest in options or not record.code.git_dirty]
    return problems, [problem for dest, problem in found if problem not in problems]


def _contradictions(
    metrics: dict[str, Any], asked: dict[str, Any], blobs: dict[str, bytes | None]
) -> list[tuple[str, str]]:
    """(the option that decides it, the problem) of each value `metrics` states otherwise than the
    options `asked` (given or defaulted) and the preset they name at the commit decide."""
    found = [
        (dest, f"metrics.{dest} is {metrics[dest]!r}, but its command line asks for {asked[dest]!r}")
        for dest in STATED
        if dest in metrics and metrics[dest] != asked[dest]
    ]
    precisions = asked["precision"]
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
    model = _preset_model(asked["preset"], asked["vocab"], blobs)
    if model is None:
        return [
            *found,
            (
                "preset",
                f"its command line's preset {asked['preset']!r} is no preset of {PRESETS_FILE} at its commit",
            ),
        ]
    try:
        config = ModelConfig.model_validate(model)
    except ValidationError as error:
        return [
            *found,
            (
                "preset",
                f"its preset {asked['preset']!r} at its commit makes no model today's ModelConfig takes "
                f"({error.error_count()} error(s))",
            ),
        ]
    counted = {
        "tokens": ("tokens", asked["tokens"] or config.ctx),
        "parameters": ("vocab", param_count(model)),
        "sites": ("preset", len(site_names(config.n_layers, layout_for(config)))),
    }
    found += [
        (dest, f"metrics.{key} is {metrics[key]!r}, but its command line's model gives {value!r}")
        for key, (dest, value) in counted.items()
        if key in metrics and metrics[key] != value
    ]
    return found
