"""What the auditors read: gate citations, falsifier tests, contract bindings and evidence.

Shared by check_integrity.py (which judges) and render_site.py (which shows). Everything here
reads files as text or syntax trees; nothing imports or runs the stack, so a repository can be
audited even when its code is broken, and a test can plant a defect in a scratch copy.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.evidence import EVIDENCE_FILE, LEDGER_DIR, SCHEMA_VERSION, EvidenceRecord
from contracts.gates import gate_ensure, gate_require
from contracts.reading import Unreadable, read_bytes, read_text
from contracts.spec import GATE_ID_IN_TEXT_RE, Gate, GateKind, GateStatus, Spec

# Where gate ids may be cited, relative to the repository root.
CITING_DIRS = ("stack", "contracts", "tools", "tests", "benchmarks", "docs", "evidence")
CITING_FILES = ("README.md", "mkdocs.yml", "Makefile")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".jsonl", ".toml", ".txt", ".csv", ""}
SKIP_DIRS = {"__pycache__", ".venv", ".git", ".pytest_cache", ".ruff_cache", ".hypothesis"}
# The site's generated pages (tools/render_site.py writes them from spec/ and evidence/; git ignores
# them). They are a build of the repository, not part of it: what they cite, the spec and the
# ledger cite first, and a check must not depend on whether, or while, the site is being built.
GENERATED = Path("docs") / "reference"
BINDING_FUNCS = {gate_require.__name__, gate_ensure.__name__}
# A line carrying this marker cites an unknown gate id on purpose (a planted-defect test).
PLANTED_MARKER = "integrity: planted"
RUNS_DIR = LEDGER_DIR


@dataclass(frozen=True)
class Location:
    """A place in the repository: file relative to the root, line, and an optional name."""

    file: str
    line: int
    name: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where} ({self.name})" if self.name else where


@dataclass
class LoadedEvidence:
    """One metadata.json: its path, and the record or why it failed to validate.

    `derived` keeps what the checks across records (lineage, place links, copies, repeats) read of
    the files the record cites and work out of the record alone, once for the life of this object
    (tools.integrity.check.derived_once): a runs-only check joins its runs to the committed
    ledger's records, which it loads once for each state of evidence/, and each such check read
    every one of their metrics logs and parsed every one of their command lines again (1,533
    checks in `make test`, 45 s of joins)."""

    path: Path
    record: EvidenceRecord | None
    error: str | None = None
    raw: bytes = b""
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class GateVerdict:
    """One record's verdict on one gate, and whether it is stale under today's spec."""

    run: str
    verdict: str
    revision: int
    stale: bool

    @property
    def label(self) -> str:
        """The verdict as shown: a stale one says so, since it cannot be re-judged today."""
        return f"{self.verdict} (stale)" if self.stale else self.verdict


@dataclass
class CoverageRow:
    """One gate and everything that makes it real."""

    gate: Gate
    bindings: list[Location] = field(default_factory=list)
    falsifiers: list[Location] = field(default_factory=list)
    verdicts: list[GateVerdict] = field(default_factory=list)  # newest run first

    @property
    def covered(self) -> bool:
        """Whether the gate has what INTEG-002 asks of it."""
        if not self.falsifiers:
            return False
        return self.gate.kind is not GateKind.RUNTIME or bool(self.bindings)


def _walk(root: Path, rel_dir: str, suffixes: set[str] | None = None) -> Iterator[Path]:
    """The files below `rel_dir`, caches and the generated pages walked around, never entered: the
    site build deletes and rewrites those pages while `make test` runs the check beside it, and a
    folder that vanishes under a walk that entered it is an error, not an empty folder."""
    base = root / rel_dir
    if not base.is_dir():
        return
    stack, generated = [base], root / GENERATED
    while stack:
        current = stack.pop()
        for entry in sorted(current.iterdir()):
            if entry.is_dir():
                if entry.name not in SKIP_DIRS and entry != generated:
                    stack.append(entry)
            elif suffixes is None or entry.suffix in suffixes:
                yield entry


def prose_files(root: Path) -> list[Path]:
    """README.md and the Markdown of docs/, the generated pages left out: the prose that cites."""
    return [root / "README.md", *sorted(_walk(root, "docs", {".md"}))]


def citing_files(root: Path) -> Iterator[Path]:
    """Every text file in which a gate id may be cited.

    Evidence records are left out: their gate results are validated record by record (unknown
    gate, revision, re-judged verdict), and reading thousands of them twice is the checker's
    largest cost.
    """
    ledger = root / LEDGER_DIR
    for rel_dir in CITING_DIRS:
        for path in _walk(root, rel_dir, TEXT_SUFFIXES):
            if path.name == EVIDENCE_FILE and path.parent.parent == ledger:
                continue
            yield path
    for name in CITING_FILES:
        if (root / name).is_file():
            yield root / name


def scan_citations(root: Path) -> dict[str, list[Location]]:
    """gate id → every file and line that mentions it."""
    found: dict[str, list[Location]] = {}
    for path in citing_files(root):
        try:
            text = read_text(path)
        except Unreadable:
            continue  # a file that is not text cites no gate
        rel = path.relative_to(root).as_posix()
        for gate_id, lineno in _cited_in(text):
            found.setdefault(gate_id, []).append(Location(rel, lineno))
    return found


# The scans below are pure functions of a file's text, cached by it: the checker called again on
# a copy of a tree (its tests do, dozens of times) parses only what changed.
TEXT_CACHE = 4096


@functools.lru_cache(maxsize=TEXT_CACHE)
def _cited_in(text: str) -> tuple[tuple[str, int], ...]:
    """(gate id, line) of every mention in one file's text."""
    if "GATE-" not in text:
        return ()
    return tuple(
        (match.group(0), lineno)
        for lineno, line in enumerate(text.splitlines(), 1)
        if PLANTED_MARKER not in line
        for match in GATE_ID_IN_TEXT_RE.finditer(line)
    )


def _dotted(node: ast.AST) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _first_str_arg(call: ast.Call) -> str | None:
    if call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    return None


def _source(path: Path) -> str | None:
    """A source file's text, or None where it is not text (it binds and tests no gate)."""
    try:
        return read_text(path)
    except Unreadable:
        return None


@functools.cache
def parse_source(text: str) -> ast.Module | None:
    """A module's syntax tree (None where it does not parse), parsed once per content: the coverage
    scan, the fingerprints and the proof lock's test listing all read the same sources, and
    parsing them was most of a check's time. Callers read the tree, never change it."""
    try:
        return ast.parse(text)
    except SyntaxError:
        return None


def module_values(tree: ast.Module) -> dict[str, ast.expr]:
    """Module-level `NAME = <expression>` (annotated or not), so a decorator that names a shared
    `pytest.mark.parametrize(...)`, a list of `pytest.param`s or a table of gate ids is read where
    it is written."""
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            found.update({t.id: node.value for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            found[node.target.id] = node.value
    return found


def literal_strings(
    node: ast.expr, values: dict[str, ast.expr], bound: dict[str, list[str]] | None = None
) -> list[str]:
    """The literal strings an expression stands for: a string, a name bound to strings (by a
    comprehension's loop, `bound`, or at module level, `values`), a list, tuple, set or dict's keys
    of them, or `sorted`/`list`/`tuple`/`set` of such; [] otherwise."""
    bound = bound or {}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name):
        if node.id in bound:
            return bound[node.id]
        value = values.get(node.id)
        return (
            literal_strings(value, {k: v for k, v in values.items() if k != node.id}, bound) if value else []
        )
    if isinstance(node, ast.Call) and _dotted(node.func) in {"sorted", "list", "tuple", "set"} and node.args:
        return literal_strings(node.args[0], values, bound)
    elements = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
    if isinstance(node, ast.Dict | ast.List | ast.Tuple | ast.Set) and elements is not None:
        return [s for e in elements if e is not None for s in literal_strings(e, values, bound)]
    return []


def _marked_ids(
    node: ast.AST,
    values: dict[str, ast.expr],
    bound: dict[str, list[str]],
    seen: frozenset[str],
    mark: str = "gate",
) -> list[tuple[str, int]]:
    """(gate id, line) of every `...mark.gate(...)` (or another `mark`) inside `node`: a decorator
    itself, a `pytest.param(..., marks=...)` in its parametrisation (a comprehension's loop over a
    literal table included), or either behind a module-level name it uses."""
    if isinstance(node, ast.Call) and _dotted(node.func).endswith(f"mark.{mark}"):
        return [
            (gate_id, node.lineno) for arg in node.args for gate_id in literal_strings(arg, values, bound)
        ]
    if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp):
        inner = dict(bound)
        for loop in node.generators:
            if isinstance(loop.target, ast.Name):
                inner[loop.target.id] = literal_strings(loop.iter, values, inner)
        return _marked_ids(node.elt, values, inner, seen, mark)
    if isinstance(node, ast.Name) and node.id in values and node.id not in seen:
        return _marked_ids(values[node.id], values, bound, seen | {node.id}, mark)
    return [
        found
        for child in ast.iter_child_nodes(node)
        for found in _marked_ids(child, values, bound, seen, mark)
    ]


def _collected(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a module's body where pytest finds tests and `pytestmark`: the module's own,
    each class's in it (nested classes too), and those under a module-level `if`, `try` or `with`.
    Not a test's body: a function defined inside a test is no test, so its marks mark nothing (and
    walking every node of every test module made this a third of the whole integrity check)."""
    for node in body:
        yield node
        if isinstance(node, ast.ClassDef):
            yield from _collected(node.body)
        elif isinstance(node, ast.If | ast.With | ast.Try):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for inner in getattr(node, block, []):
                    yield from _collected(inner.body if isinstance(inner, ast.ExceptHandler) else [inner])


def gate_marked(tree: ast.Module, mark: str = "gate") -> list[tuple[str, int, ast.AST]]:
    """(gate id, line of the mark, what it marks) for every `pytest.mark.gate(...)` (or another
    `mark`, `holds`) of a test module: on a test or class, on a parameter of its parametrisation, or
    on the whole module (then what it marks is the `pytestmark` assignment). One reading for the
    coverage check, the gates' fingerprints (tools/integrity/proofs/fingerprints.py) and the tests a falsify
    record lists (tools/integrity/proofs/falsifier_sources.py)."""
    values = module_values(tree)
    found = []
    for node in _collected(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            marks = node.decorator_list
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            marks = [node.value]
        else:
            continue
        found += [
            (g, line, node) for made in marks for g, line in _marked_ids(made, values, {}, frozenset(), mark)
        ]
    return found


GATE_MARK_TEXT = re.compile(r"\bmark[\s\\]*\.[\s\\]*gate\b")


@functools.lru_cache(maxsize=TEXT_CACHE)
def _gate_marks(text: str) -> tuple[tuple[str, int, str], ...]:
    """(gate id, line, test or `pytestmark`) of every gate mark in one test file."""
    if not GATE_MARK_TEXT.search(text):
        return ()  # a mark is a `mark.gate` attribute: a file without that text holds none to parse
    tree = parse_source(text)
    if tree is None:
        return ()
    return tuple((g, line, getattr(node, "name", "pytestmark")) for g, line, node in gate_marked(tree))


@functools.lru_cache(maxsize=TEXT_CACHE)
def _binding_calls(text: str) -> tuple[tuple[str, int], ...]:
    """(gate id, line) of every `gate_require("ID", …)` / `gate_ensure("ID", …)` in one module."""
    if not any(name in text for name in BINDING_FUNCS):
        return ()  # most modules bind no gate: parsing them would find nothing
    tree = parse_source(text)
    if tree is None:
        return ()
    return tuple(
        (gate_id, node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and _dotted(node.func).split(".")[-1] in BINDING_FUNCS
        and (gate_id := _first_str_arg(node)) is not None
    )


def scan_falsifiers(root: Path) -> dict[str, list[Location]]:
    """gate id → tests marked `@pytest.mark.gate("ID")` (or a module-level `pytestmark`)."""
    found: dict[str, list[Location]] = {}
    for path in _walk(root, "tests", {".py"}):
        text = _source(path)
        rel = path.relative_to(root).as_posix()
        for gate_id, lineno, name in _gate_marks(text) if text is not None else ():
            found.setdefault(gate_id, []).append(Location(rel, lineno, name))
    return found


def scan_bindings(root: Path) -> dict[str, list[Location]]:
    """gate id → each `gate_require("ID", …)` / `gate_ensure("ID", …)` in stack/ and contracts/."""
    found: dict[str, list[Location]] = {}
    for rel_dir in ("stack", "contracts"):
        for path in _walk(root, rel_dir, {".py"}):
            text = _source(path)
            rel = path.relative_to(root).as_posix()
            for gate_id, lineno in _binding_calls(text) if text is not None else ():
                found.setdefault(gate_id, []).append(Location(rel, lineno))
    return found


def evidence_paths(root: Path) -> list[Path]:
    """Every evidence/runs/<run-id>/metadata.json, sorted by run id."""
    runs = root / RUNS_DIR
    if not runs.is_dir():
        return []
    return sorted(p / EVIDENCE_FILE for p in runs.iterdir() if (p / EVIDENCE_FILE).is_file())


def load_evidence(path: Path) -> LoadedEvidence:
    """Read and validate one evidence record, keeping the error instead of raising."""
    try:
        raw = read_bytes(path, path.parent)
    except Unreadable as exc:
        return LoadedEvidence(path, None, exc.problem)
    try:
        return LoadedEvidence(path, EvidenceRecord.model_validate_json(raw), raw=raw)
    except ValueError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        return LoadedEvidence(path, None, "; ".join(lines[:3]), raw=raw)


def coverage(
    spec: Spec,
    bindings: dict[str, list[Location]],
    falsifiers: dict[str, list[Location]],
    evidence: list[LoadedEvidence],
) -> list[CoverageRow]:
    """One row per gate of the spec, in id order, with verdicts newest run first."""
    rows = {
        gid: CoverageRow(g, bindings.get(gid, []), falsifiers.get(gid, [])) for gid, g in spec.gates.items()
    }
    dated = sorted(
        (e for e in evidence if e.record is not None),
        key=lambda e: e.record.run.started,  # type: ignore[union-attr]
        reverse=True,
    )
    for loaded in dated:
        record = loaded.record
        assert record is not None
        legacy = record.schema_version < SCHEMA_VERSION
        for result in record.gates:
            if result.id in rows:
                stale = legacy or result.revision < rows[result.id].gate.revision
                verdict = GateVerdict(record.run.id, result.verdict.value, result.revision, stale)
                rows[result.id].verdicts.append(verdict)
    return [rows[k] for k in sorted(rows)]


def active(gate: Gate) -> bool:
    """Whether the gate is in force."""
    return gate.status is GateStatus.ACTIVE
