"""What a gate's proof by mutation rests on, as one digest per gate: its code fingerprint.

A falsify record proves, for the code it ran, that each gate's falsifiers pass with the gate on
and turn red with it forced off. Which code that is, per gate:

* its judge in contracts/judges/ (the function registered with `@judges`, its declaration,
  and every module-level helper it calls, transitively, in its area module or in the modules
  of the package it imports them from);
* its bindings in stack/ and contracts/ (each function decorated with `gate_require` or
  `gate_ensure` naming it, with the outcome function the decorator calls);
* its falsifier tests in tests/ (each test marked `@pytest.mark.gate` with it, with the
  module-level helpers it calls);
* its entry in spec/gates/*.yaml (thresholds, severity, status).

`gate_fingerprints(root)` digests all four per gate from the files under `root`, reading source
as syntax trees (nothing is imported or run), so the same function serves a checkout and a
scratch repository. `make proofs` stores the digests in the proof lock (evidence/proofs.lock);
`make test` re-runs the falsifiers of every gate whose digest differs from the lock's
(tests/gate_plugin.py), and the integrity check refuses a lock whose digests are not those of the
code as it stands (tools/integrity/proofs/mutation.py).
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from contracts.reading import Unreadable, read_text, read_yaml
from tools.integrity.audit import (
    BINDING_FUNCS,
    _dotted,
    _walk,
    gate_marked,
    literal_strings,
    module_values,
    parse_source,
)

# The trees whose files a fingerprint reads, relative to the repository root.
FINGERPRINTED = ("contracts", "stack", "tests", "spec/gates")
# The package of the judges (one module per area, their shared helpers, the registry).
JUDGES_DIR = "contracts/judges"
JUDGES_PACKAGE = JUDGES_DIR.replace("/", ".")
GATE_MARK = "gate"


class Module:
    """One parsed source file: its module-level functions, classes and assignments by name, and
    their source."""

    def __init__(self, path: Path, rel: str) -> None:
        self.rel = rel
        self.text = read_text(path)
        self.lines = self.text.splitlines()
        tree = parse_source(self.text)
        if tree is None:
            raise SyntaxError(f"{rel} does not parse")
        self.tree = tree
        self.defs: dict[str, ast.AST] = {
            node.name: node
            for node in self.tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        self.assigned: dict[str, ast.stmt] = {
            target.id: node
            for node in self.tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        self.values = module_values(self.tree)
        # name → the module of the judges' package it is imported from (`from contracts.judges.x import name`)
        self.imported: dict[str, str] = {
            alias.asname or alias.name: f"{JUDGES_DIR}/{node.module.rpartition('.')[2]}.py"
            for node in self.tree.body
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(JUDGES_PACKAGE + ".")
            for alias in node.names
        }

    def source(self, node: ast.AST) -> str:
        """The node's source, decorators included."""
        decorators = getattr(node, "decorator_list", [])
        first = min([node.lineno, *(d.lineno for d in decorators)])  # type: ignore[attr-defined]
        return "\n".join(self.lines[first - 1 : node.end_lineno])  # type: ignore[attr-defined]

    def closure(self, node: ast.AST, others: dict[str, Module] | None = None) -> str:
        """The node's source and that of every module-level function, class and assignment it names,
        transitively (in this module, then in the module of `others`, by path, that it imports the
        name from: the judges' shared readers and helpers). A table or parametrisation a test or
        judge reads is part of what it proves."""
        seen: dict[str, str] = {}
        todo: list[tuple[Module, ast.AST]] = [(self, node)]
        while todo:
            module, current = todo.pop()
            key = f"{module.rel}:{current.lineno}"  # type: ignore[attr-defined]
            if key in seen:
                continue
            seen[key] = module.source(current)
            for name in {n.id for n in ast.walk(current) if isinstance(n, ast.Name)}:
                if name in module.defs:
                    todo.append((module, module.defs[name]))
                elif name in module.assigned:
                    todo.append((module, module.assigned[name]))
                elif others and (source := others.get(module.imported.get(name, ""))) is not None:
                    if name in source.defs:
                        todo.append((source, source.defs[name]))
                    elif name in source.assigned:
                        todo.append((source, source.assigned[name]))
        # In an order of their text, not of their place: a function inserted above a helper, or
        # helpers reordered, change no code a gate rests on, and must not ask for its proof again.
        return "\n".join(sorted(seen.values()))


def _defs(module: Module) -> Iterator[ast.AST]:
    """Every function and class of the module and every method of its classes: where marks and
    bindings are written (a full walk of every tree costs more than the rest together)."""
    for node in module.tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node
        if isinstance(node, ast.ClassDef):
            yield from (n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


def _modules(root: Path, rel_dir: str, mentions: tuple[str, ...] = ()) -> Iterator[Module]:
    """The parsed Python files under `rel_dir` whose text mentions one of `mentions` (the others
    hold no judge, binding or falsifier: parsing them would cost the most and find nothing)."""
    for path in _walk(root, rel_dir, {".py"}):
        try:
            if mentions and not any(word in read_text(path) for word in mentions):
                continue
            yield Module(path, path.relative_to(root).as_posix())
        except (SyntaxError, Unreadable):
            continue  # no Python the tests could run: it holds no judge, binding or falsifier


def _string_args(call: ast.Call, values: dict[str, ast.expr]) -> list[str]:
    """The gate ids a decorator call names: literal strings, or module-level names bound to them."""
    return [text for arg in call.args for text in literal_strings(arg, values)]


def _judges(root: Path, parts: dict[str, list[str]]) -> None:
    """Each judge with its declaration and the helpers it calls."""
    modules = list(_modules(root, JUDGES_DIR))
    shared = {module.rel: module for module in modules}
    for module in modules:
        for node in module.defs.values():
            for decorator in getattr(node, "decorator_list", []):
                if isinstance(decorator, ast.Call) and _dotted(decorator.func).endswith("judges"):
                    code = module.closure(node, shared)
                    for gate_id in _string_args(decorator, module.values):
                        parts.setdefault(gate_id, []).append(f"judge {module.rel}\n{code}")


def _bindings(root: Path, parts: dict[str, list[str]]) -> None:
    """Each function bound to a gate, with its decorators and the outcome function they call."""
    for rel_dir in ("stack", "contracts"):
        for module in _modules(root, rel_dir, tuple(BINDING_FUNCS)):
            for node in _defs(module):
                for decorator in getattr(node, "decorator_list", []):
                    if not isinstance(decorator, ast.Call):
                        continue
                    if _dotted(decorator.func).split(".")[-1] not in BINDING_FUNCS:
                        continue
                    code = module.closure(node)
                    for gate_id in _string_args(decorator, module.values)[:1]:
                        parts.setdefault(gate_id, []).append(f"binding {module.rel}\n{code}")


def _falsifiers(root: Path, parts: dict[str, list[str]]) -> None:
    """Each falsifier test with the module-level helpers and tables it reads; a module's
    `pytestmark` whole. Which tests are falsifiers is read as the coverage check reads it
    (audit.gate_marked): a mark on one parameter counts."""
    for module in _modules(root, "tests", (f"mark.{GATE_MARK}",)):
        for gate_id, _, node in gate_marked(module.tree):
            text = module.text if isinstance(node, ast.Assign) else module.closure(node)
            parts.setdefault(gate_id, []).append(f"falsifier {module.rel}\n{text}")


def _statutes(root: Path, parts: dict[str, list[str]]) -> None:
    """Each gate's entry in spec/gates/*.yaml, in canonical form."""
    for path in sorted((root / "spec" / "gates").glob("*.yaml")):
        data = read_yaml(path) or {}
        for gate in data.get("gates", []):
            if isinstance(gate, dict) and isinstance(gate.get("id"), str):
                parts.setdefault(gate["id"], []).append(
                    "spec " + json.dumps(gate, sort_keys=True, default=str)
                )


# Fingerprints by the digest of the files they were computed from: a checker that audits many
# copies of one repository (the integrity tests do) parses each version of the code once.
_SEEN: dict[str, dict[str, str]] = {}


def _sources_digest(root: Path) -> str:
    """sha256 over the path and bytes of every file a fingerprint reads."""
    digest = hashlib.sha256()
    for rel_dir in FINGERPRINTED:
        for path in _walk(root, rel_dir, {".py", ".yaml"}):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def gate_fingerprints(root: Path) -> dict[str, str]:
    """gate id → sha256 of its judge, bindings, falsifier tests and spec entry under `root`."""
    key = _sources_digest(root)
    if key not in _SEEN:
        _SEEN[key] = _computed(root)
    return dict(_SEEN[key])


def _computed(root: Path) -> dict[str, str]:
    parts: dict[str, list[str]] = {}
    _judges(root, parts)
    _bindings(root, parts)
    _falsifiers(root, parts)
    _statutes(root, parts)
    return {
        gate_id: hashlib.sha256("\n\x00".join(sorted(texts)).encode()).hexdigest()
        for gate_id, texts in sorted(parts.items())
    }
