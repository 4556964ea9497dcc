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

benchmarks/train_throughput.py --options (`metrics.benchmark` train_options) trains each option of
spec/options_matrix.yaml on the preset's model with the ffn_hidden that gives it the dense model's
active parameters, and states each row's `params` and `active_params`: both are counted again from
the preset and ModelConfig's defaults at the commit, the option's settings in the matrix there and
the row's ffn_hidden (contracts.model_shape.param_count and active_params, the benchmark's rule).

benchmarks/model_speed.py times one model per device and states it (`metrics.config`, ModelConfig
dumped) with its batch (`metrics.batch`): the model is `config_for(device)`, a ModelConfig call
whose keywords are the device's SHAPES entry (`**shape`), literals, or keys of that entry
(`shape["n_heads"]`), over ModelConfig's defaults, and the batch BATCH[device], all read from the
source at the commit (an n_kv_heads restated to claim grouped-query attention is caught).
"""

from __future__ import annotations

import ast
from typing import Any

import yaml

from contracts.derive.benchmarks import OPTIONS_BENCHMARK, SPEED_BENCHMARKS, TRAIN_BENCHMARK
from contracts.evidence import EvidenceRecord
from contracts.judges.arch import DENSE, JOIN
from contracts.model_shape import active_params, param_count
from contracts.reading import load_yaml

# Where the presets a benchmark names are defined (stack.train.presets.PRESETS).
PRESETS_FILE = "stack/train/presets.py"
# Where each section's defaults are declared: the preset's section → (its file, its class).
DEFAULTS = {
    "model": ("stack/model/config.py", "ModelConfig"),
    "train": ("stack/train/config.py", "TrainSection"),
}
PRESET_SOURCES = (PRESETS_FILE, *(path for path, _ in DEFAULTS.values()))
# The options a train_options benchmark shapes (spec/options_matrix.yaml: each option's model settings).
OPTIONS_FILE = "spec/options_matrix.yaml"
OPTIONS_SOURCES = (*PRESET_SOURCES, OPTIONS_FILE)
# The train settings a training benchmark states of the config it ran (metrics.<key>).
TRAIN_KEYS = ("batch_size", "grad_accum", "precision", "deterministic")
# The benchmarks that train the preset (benchmarks/train_throughput.py): the others that state a
# preset's model (benchmarks/trace_overhead.py) run its forward only, at a precision of their own.
TRAINED = frozenset({TRAIN_BENCHMARK})
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
    """What the record states of each section the preset and defaults decide: the model, and the
    train settings of a benchmark that trains it."""
    metrics = record.metrics
    trained = metrics.get("benchmark") in TRAINED
    return {
        "model": metrics["model"],
        "train": {k: metrics[k] for k in TRAIN_KEYS if trained and k in metrics},
    }


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


def states_options(record: EvidenceRecord) -> bool:
    """Whether `record` is a train_options benchmark: each option of the matrix shaped to the dense
    model's active parameters on a preset (benchmarks/train_throughput.py --options)."""
    metrics = record.metrics
    return (
        record.run.kind == "benchmark"
        and metrics.get("benchmark") == OPTIONS_BENCHMARK
        and isinstance(metrics.get("preset"), str)
        and isinstance(metrics.get("options"), list)
    )


def _option_settings(blob: bytes | None, name: str) -> dict[str, Any] | None:
    """The model settings of option `name` in a version of spec/options_matrix.yaml: the option of
    that name, or the options its `+`-joined parts name together (a combination), or none for the
    dense model, which the matrix no longer lists (contracts.judges.arch.DENSE); None where the
    file names no such option."""
    try:
        listed = (load_yaml(blob or b"") or {}).get("options") or []
    except (yaml.YAMLError, AttributeError):
        return None
    by_name = {o.get("name"): o.get("model") or {} for o in listed if isinstance(o, dict)}
    if name in by_name:
        return dict(by_name[name])
    if name == DENSE:
        return {}
    parts = name.split(JOIN)
    if not all(part in by_name for part in parts):
        return None
    return {key: value for part in parts for key, value in by_name[part].items()}


def options_problems(record: EvidenceRecord, blobs: dict[str, bytes | None]) -> list[str]:
    """Each option row's `params` and `active_params` of a train_options benchmark, against the
    model its commit decides (`blobs`: each of OPTIONS_SOURCES's bytes): the preset's model over
    ModelConfig's defaults there, the option's settings in spec/options_matrix.yaml there and the
    row's ffn_hidden, counted by contracts.model_shape (param_count; active_params, the benchmark's
    rule). The vocabulary is the one the dense row's parameters hold (so the moe row's active
    parameters cannot be restated)."""
    name = record.metrics["preset"]
    presets = presets_in(blobs.get(PRESETS_FILE) or b"")
    defaults = class_defaults(blobs.get(DEFAULTS["model"][0]) or b"", DEFAULTS["model"][1])
    if presets is None or not isinstance(presets.get(name), dict) or defaults is None:
        return [f"metrics.preset is {name!r}, but its commit has no such preset with ModelConfig's defaults"]
    base = {**defaults, **(presets[name].get("model") or {})}
    rows = [row for row in record.metrics["options"] if isinstance(row, dict) and "ffn_hidden" in row]
    dense = next((row for row in rows if row.get("option") == "dense"), None)
    if dense is None or not isinstance(dense.get("params"), int):
        return ["metrics.options has no dense row stating its parameters, which fixes the vocabulary"]
    shape = {**base, "ffn_hidden": dense["ffn_hidden"], "vocab": 0}
    per_id = param_count({**shape, "vocab": 1}) - param_count(shape)
    vocab, left = divmod(dense["params"] - param_count(shape), per_id)
    if left or vocab <= 0:
        return [f"metrics.options' dense row states {dense['params']} parameters, which no vocabulary gives"]
    problems = []
    for index, row in enumerate(rows):
        settings = _option_settings(blobs.get(OPTIONS_FILE), str(row.get("option")))
        if settings is None:
            problems.append(
                f"metrics.options[{index}] is option {row.get('option')!r}, which {OPTIONS_FILE} lacks"
            )
            continue
        model = {**base, **settings, "ffn_hidden": row["ffn_hidden"], "vocab": vocab}
        for key, derived in (("params", param_count(model)), ("active_params", round(active_params(model)))):
            if key in row and row[key] != derived:
                problems.append(
                    f"metrics.options[{index}].{key} is {row[key]!r}, but option {row.get('option')!r} of "
                    f"the preset {name!r} at ffn_hidden {row['ffn_hidden']} has {derived}"
                )
    return problems


SPEED_FILE = "benchmarks/model_speed.py"
SPEED_SOURCES = (SPEED_FILE, DEFAULTS["model"][0])
# The SHAPES key (its --device) of each benchmark name benchmarks/model_speed.py gives its records.
SPEED_DEVICES = {name: device for device, name in SPEED_BENCHMARKS.items()}


def states_speed_model(record: EvidenceRecord) -> bool:
    """Whether `record` is benchmarks/model_speed.py's, stating the model it timed."""
    metrics = record.metrics
    return (
        record.run.kind == "benchmark"
        and metrics.get("benchmark") in SPEED_DEVICES
        and isinstance(metrics.get("config"), dict)
    )


def _literal_tables(body: list[ast.stmt]) -> dict[str, Any]:
    """The module-level names a source assigns a literal to, with it."""
    found = {}
    for node in body:
        if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
            continue
        targets, value = (node.targets if isinstance(node, ast.Assign) else [node.target]), node.value
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    continue
    return found


def speed_settings(source: bytes, device: str) -> tuple[dict[str, Any], Any] | None:
    """(the model settings `config_for(device)` passes ModelConfig, the batch BATCH gives `device`) of
    a version of benchmarks/model_speed.py: a keyword it cannot read is left out. None where the
    source has no SHAPES entry for the device or no config_for calling ModelConfig."""
    try:
        body = ast.parse(source).body
    except (SyntaxError, ValueError):
        return None
    tables = _literal_tables(body)
    shape = (tables.get("SHAPES") or {}).get(device)
    function = next((n for n in body if isinstance(n, ast.FunctionDef) and n.name == "config_for"), None)
    nodes = ast.walk(function) if function is not None else iter(())
    calls = [n for n in nodes if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "ModelConfig"]
    if not isinstance(shape, dict) or len(calls) != 1:
        return None
    settings: dict[str, Any] = {}
    for keyword in calls[0].keywords:
        value = keyword.value
        if keyword.arg is None:
            settings.update(shape)
        elif isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Constant):
            if value.slice.value in shape:
                settings[keyword.arg] = shape[value.slice.value]
        else:
            try:
                settings[keyword.arg] = ast.literal_eval(value)
            except ValueError:
                continue
    return settings, (tables.get("BATCH") or {}).get(device)


def speed_problems(record: EvidenceRecord, blobs: dict[str, bytes | None]) -> list[str]:
    """What benchmarks/model_speed.py's record states of the model it timed and its batch, against
    the source at its commit (`blobs`: each of SPEED_SOURCES's bytes; module docstring)."""
    device = SPEED_DEVICES[record.metrics["benchmark"]]
    found = speed_settings(blobs.get(SPEED_FILE) or b"", device)
    defaults = class_defaults(blobs.get(DEFAULTS["model"][0]) or b"", DEFAULTS["model"][1])
    if found is None or defaults is None:
        return [f"its commit has no {SPEED_FILE} config_for({device!r}) with ModelConfig's defaults to read"]
    settings, batch = found
    decided = {**defaults, **settings}
    stated = record.metrics["config"]
    problems = [
        f"metrics.config.{key} is {stated[key]!r}, but config_for({device!r}) in {SPEED_FILE} gives {value!r}"
        for key, value in sorted(decided.items())
        if key in stated and stated[key] != value
    ]
    if batch is not None and record.metrics.get("batch") != batch:
        problems.append(
            f"metrics.batch is {record.metrics.get('batch')!r}, but {SPEED_FILE} has BATCH {batch!r}"
        )
    return problems
