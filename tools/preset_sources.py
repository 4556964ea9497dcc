"""What a training benchmark states of the preset it ran, against the repository at its commit.

benchmarks/train_throughput.py trains a named preset (`metrics.preset`) resolved as `stack train`
resolves it (stack.train.config.resolve: the preset's sections over the config classes' defaults)
with --set items of its own that touch only the device and the cadence of evaluations, samples and
checkpoints, and states what ran: the whole model (`metrics.model`, ModelConfig dumped) and the
train settings of TRAIN_KEYS. So each of those is decided by the repository at the record's commit:
the preset's value where stack/train/presets.py's PRESETS sets it, else the default its config
class declares there (ModelConfig in stack/model/config.py, TrainSection in stack/train/config.py),
read from the source without running it. A key no one decides there (the vocabulary, the data's)
is not compared; a file or class the commit does not have is a problem, never a silent pass.
"""

from __future__ import annotations

import ast
from typing import Any

from contracts.evidence import EvidenceRecord

# Where the presets a benchmark names are defined (stack.train.presets.PRESETS).
PRESETS_FILE = "stack/train/presets.py"
# Where each section's defaults are declared: the preset's section → (its file, its class).
DEFAULTS = {
    "model": ("stack/model/config.py", "ModelConfig"),
    "train": ("stack/train/config.py", "TrainSection"),
}
PRESET_SOURCES = (PRESETS_FILE, *(path for path, _ in DEFAULTS.values()))
# The train settings a training benchmark states of the config it ran (metrics.<key>).
TRAIN_KEYS = ("batch_size", "grad_accum", "precision", "deterministic")
# The pydantic helpers a config class declares a field's default with: Field(default=...) or its
# first argument, and ModelConfig's `_option(default, ...)` (an option left out while off).
DEFAULT_CALLS = ("Field", "_option")


def states_preset(record: EvidenceRecord) -> bool:
    """Whether `record` is a benchmark stating the preset it ran and that preset's model."""
    metrics = record.metrics
    return (
        record.run.kind == "benchmark"
        and isinstance(metrics.get("preset"), str)
        and isinstance(metrics.get("model"), dict)
    )


def presets_in(source: bytes) -> dict | None:
    """The PRESETS table a version of stack/train/presets.py assigns (a literal), or None."""
    try:
        body = ast.parse(source).body
    except (SyntaxError, ValueError):
        return None
    for node in body:
        if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if any(isinstance(t, ast.Name) and t.id == "PRESETS" for t in targets):
            try:
                found = ast.literal_eval(node.value)
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    return None


def _default(value: ast.expr) -> tuple[bool, Any]:
    """(whether it declares one, the default) of a field's right-hand side: a literal, or a
    DEFAULT_CALLS call's `default=` or first argument (a default_factory, or none, declares none)."""
    if isinstance(value, ast.Call):
        name = value.func.attr if isinstance(value.func, ast.Attribute) else getattr(value.func, "id", "")
        if name not in DEFAULT_CALLS:
            return False, None
        given = next((k.value for k in value.keywords if k.arg == "default"), None)
        value = given if given is not None else (value.args[0] if value.args else None)  # type: ignore[assignment]
        if value is None:
            return False, None
    try:
        return True, ast.literal_eval(value)
    except ValueError:
        return False, None


def class_defaults(source: bytes, name: str) -> dict[str, Any] | None:
    """The fields of class `name` in a module's source that declare a literal default, with it;
    None where the module does not parse or has no such class."""
    try:
        body = ast.parse(source).body
    except (SyntaxError, ValueError):
        return None
    found = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if found is None:
        return None
    defaults = {}
    for node in found.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            declared, value = _default(node.value)
            if declared:
                defaults[node.target.id] = value
    return defaults


def stated_settings(record: EvidenceRecord) -> dict[str, dict[str, Any]]:
    """What the record states of each section the preset and defaults decide."""
    metrics = record.metrics
    return {"model": metrics["model"], "train": {k: metrics[k] for k in TRAIN_KEYS if k in metrics}}


def preset_problems(record: EvidenceRecord, blobs: dict[str, bytes | None]) -> list[str]:
    """What `record` states of its preset that the repository at its commit (`blobs`: each of
    PRESET_SOURCES's bytes, None where the commit lacks it) decides otherwise (module docstring)."""
    name = record.metrics["preset"]
    presets = presets_in(blobs.get(PRESETS_FILE) or b"")
    if presets is None or not isinstance(presets.get(name), dict):
        return [f"metrics.preset is {name!r}, but {PRESETS_FILE} at its commit has no such preset"]
    problems = []
    for section, stated in stated_settings(record).items():
        path, owner = DEFAULTS[section]
        preset = presets[name].get(section) or {}
        defaults = class_defaults(blobs.get(path) or b"", owner)
        if defaults is None:
            problems.append(
                f"its commit has no {owner} in {path} to read the defaults of the preset's {section}"
            )
            continue
        where = "metrics.model." if section == "model" else "metrics."
        # The whole model is stated, so a key the preset sets is held to it; of the train section,
        # only the TRAIN_KEYS the record states.
        for key in sorted(set(stated) | set(preset)) if section == "model" else sorted(stated):
            if key in preset:
                decided, by = preset[key], f"the preset {name!r} in {PRESETS_FILE} has"
            elif key in defaults:
                decided, by = defaults[key], f"the preset {name!r} leaves it to {owner}'s default in {path},"
            else:
                continue
            if stated.get(key) != decided:
                problems.append(f"{where}{key} is {stated.get(key)!r}, but {by} {decided!r}")
    return problems
