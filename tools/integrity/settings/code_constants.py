"""What a record states of a value a constant of the committed code decides, against that constant at
the record's commit.

Some values a record holds are set by no option: the code fixes them. `stack quantize` runs HQQ's
optimiser with stack.surgery.hqq.HalfQuadratic's defaults (metrics.optimiser; iters 20
is not 50); GATE-TRAIN-005's spread probe draws PROBE_ROWS × PROBE_TOKENS tokens
(stack.model.sampling_checks) in `stack sample`, `stack memorization` and `stack synth` (1024, not
4096); and `stack es`'s parser declares no defaults (None), so a setting its command
line leaves out is stack.es.settings.EsSettings' default, which the parser-default check of
tools/integrity/settings/default_sources.py cannot see (batch_size 8 restated as 16, workers 1 as 4); and
`make gpu-check` runs its kernel parity over PARITY_CASES (a case's shape said larger than it ran is
coverage the check never had). Each is
read from the file at the record's commit, without running it (literal values only), as
tools/integrity/settings/default_sources.py reads a parser. A file the commit lacks or that does not parse is
named, never passed in silence.
"""

from __future__ import annotations

import ast
from typing import Any

from contracts.derive.gpu_check import PARITY_STEP, parity_cases
from contracts.evidence import EvidenceRecord
from tools.integrity.settings.argv_record import _command_lines, given

SAMPLING = "stack/model/sampling_checks.py"
HQQ = "stack/surgery/hqq.py"
ES_SETTINGS = "stack/es/settings.py"
GPU_CHECK = "tools/records/gpu_check.py"
# The files whose constants decide what a record of each kind states.
KIND_SOURCES = {
    "sample": (SAMPLING,),
    "memorization": (SAMPLING,),
    "synth": (SAMPLING,),
    "quantize": (HQQ,),
    "es": (ES_SETTINGS,),
    "gpu-check": (GPU_CHECK,),
}
# Files whose code lived elsewhere at earlier commits, by the path it had: read there where a
# commit has no file at the newer path (`make gpu-check` runs tools/gpu_check.py, which held the
# check itself until it moved).
MOVED_FROM = {GPU_CHECK: "tools/gpu_check.py"}
# What `_literal` gives for a value that is no literal: equal to no value a record states.
NOT_LITERAL = object()


def constant_sources(record: EvidenceRecord) -> list[str]:
    """The repository files whose constants decide values the record states (none for most kinds,
    nor for a record that states none of those values: one made before its gate measured them),
    then the earlier paths of those that moved."""
    paths = [path for path in KIND_SOURCES.get(record.run.kind, ()) if STATES[path](record)]
    return [*paths, *(MOVED_FROM[path] for path in paths if path in MOVED_FROM)]


def _probe_drawn(record: EvidenceRecord) -> bool:
    """Whether the record states GATE-TRAIN-005's probe_draws."""
    return any(g.id == "GATE-TRAIN-005" and "probe_draws" in (g.measured or {}) for g in record.gates)


STATES = {
    SAMPLING: _probe_drawn,
    HQQ: lambda record: isinstance(record.metrics, dict) and "optimiser" in record.metrics,
    ES_SETTINGS: lambda record: isinstance(record.config, dict),
    GPU_CHECK: lambda record: bool(parity_cases(record.metrics)),
}


def _literal(node: ast.expr | None) -> Any:
    """A literal's value; NOT_LITERAL where the node is not one."""
    try:
        return ast.literal_eval(node) if node is not None else NOT_LITERAL
    except ValueError:
        return NOT_LITERAL


def module_constants(source: bytes) -> dict[str, Any] | None:
    """The module's top-level names bound once to a literal (`NAME = 1`, `NAME: int = 1`); None where
    the source does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    return tree_constants(tree)


def tree_constants(tree: ast.Module) -> dict[str, Any]:
    """`module_constants` of a parsed module (a name bound to another value maps to NOT_LITERAL)."""
    found: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = _literal(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = _literal(node.value)
    return found


def class_defaults(source: bytes, name: str) -> dict[str, Any] | None:
    """The literal defaults of the fields of class `name` (a dataclass: `field: type = literal`); None
    where the source does not parse or has no such class."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return {
                item.target.id: _literal(item.value)
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    return None


def _probe_problems(record: EvidenceRecord, source: bytes) -> list[str]:
    """GATE-TRAIN-005's probe_draws: the spread probe's PROBE_ROWS rows of PROBE_TOKENS draws."""
    measured = next((g.measured for g in record.gates if g.id == "GATE-TRAIN-005"), None)
    if not isinstance(measured, dict) or "probe_draws" not in measured:
        return []
    constants = module_constants(source) or {}
    rows, tokens = constants.get("PROBE_ROWS"), constants.get("PROBE_TOKENS")
    if not (isinstance(rows, int) and isinstance(tokens, int)):
        return [f"{SAMPLING} declares no literal PROBE_ROWS and PROBE_TOKENS: probe_draws is not held"]
    if measured["probe_draws"] == rows * tokens:
        return []
    return [
        f"gates[GATE-TRAIN-005].measured.probe_draws is {measured['probe_draws']!r}, but the spread probe "
        f"draws PROBE_ROWS {rows} × PROBE_TOKENS {tokens} = {rows * tokens} ({SAMPLING})"
    ]


def _optimiser_problems(record: EvidenceRecord, source: bytes) -> list[str]:
    """`stack quantize`'s metrics.optimiser: HalfQuadratic's defaults, which no option changes."""
    stated = record.metrics.get("optimiser") if isinstance(record.metrics, dict) else None
    if stated is None:
        return []
    declared = class_defaults(source, "HalfQuadratic")
    if declared is None:
        return [f"{HQQ} declares no HalfQuadratic: metrics.optimiser is not held"]
    if stated == declared:
        return []
    return [f"metrics.optimiser is {stated!r}, but HQQ's optimiser runs {HQQ}'s HalfQuadratic {declared!r}"]


def _es_problems(record: EvidenceRecord, source: bytes) -> list[str]:
    """Each setting of `stack es` its command lines leave out: EsSettings' default (not None)."""
    declared = class_defaults(source, "EsSettings")
    if declared is None:
        return [f"{ES_SETTINGS} declares no EsSettings: the settings its command line left out are not held"]
    config = record.config if isinstance(record.config, dict) else {}
    given_keys: set[str] = set()
    for argv, _places in _command_lines(record):
        given_keys |= set(given(argv) or {})
    return [
        f"config.{key} is {config[key]!r}, but its command line leaves --{key.replace('_', '-')} to "
        f"EsSettings' default {default!r} ({ES_SETTINGS})"
        for key, default in sorted(declared.items())
        if key in config and key not in given_keys and default not in (None, NOT_LITERAL)
        if config[key] != default
    ]


def _parity_case_problems(record: EvidenceRecord, source: bytes) -> list[str]:
    """A gpu-check's kernel parity cases: each case's shape and causality are its name's entry in
    PARITY_CASES, which no option changes, and every precision runs every case."""
    declared = (module_constants(source) or {}).get("PARITY_CASES")
    if not isinstance(declared, dict):
        return ["the gpu-check code at its commit declares no literal PARITY_CASES: its cases are not held"]
    where = f"metrics.steps[{PARITY_STEP}].measured.cases"
    problems, ran = [], {}
    for index, case in enumerate(parity_cases(record.metrics)):
        name = case.get("case")
        ran.setdefault(case.get("dtype"), set()).add(name)
        entry = declared.get(name)
        if entry is None:
            problems.append(f"{where}[{index}] is the case {name!r}, which PARITY_CASES does not declare")
        elif [case.get("shape"), case.get("causal")] != list(entry):
            problems.append(
                f"{where}[{index}] ({case.get('dtype')} {name}) states shape {case.get('shape')} and causal "
                f"{case.get('causal')}, but PARITY_CASES declares {entry[0]} and {entry[1]}"
            )
    problems += [
        f"{where} of {dtype} leave out {', '.join(map(repr, sorted(set(declared) - names)))}, which "
        "every precision runs"
        for dtype, names in ran.items()
        if set(declared) - names
    ]
    return problems


CHECKS = {
    SAMPLING: _probe_problems,
    HQQ: _optimiser_problems,
    ES_SETTINGS: _es_problems,
    GPU_CHECK: _parity_case_problems,
}


def constant_problems(record: EvidenceRecord, blobs: dict[str, bytes | None]) -> list[str]:
    """What the record states against each constant its kind's files declare at its commit (`blobs`:
    each of `constant_sources`'s bytes, None where the commit lacks it; a moved file is read at its
    earlier path where the commit has none at its newer one)."""
    problems = []
    for path in constant_sources(record):
        if path in MOVED_FROM.values():
            continue  # read in place of the path it moved to
        blob = blobs.get(path)
        if blob is None and path in MOVED_FROM:
            blob = blobs.get(MOVED_FROM[path])
        if blob is None:
            problems.append(f"{path} cannot be read at its commit: what its constants decide is not held")
            continue
        problems += CHECKS[path](record, blob)
    return problems
