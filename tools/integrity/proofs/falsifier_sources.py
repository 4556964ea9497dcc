"""What the proof lock lists of the tests in the working tree.

The proof lock (evidence/proofs.lock, contracts/proof_lock.py) lists, per ACTIVE gate, the outcome
of each test marked `gate(ID)` with the gate on and forced off, and for the gates the conformance
kind judges each test marked `holds(ID)`. The pytest plugin writes it from the tests it ran
(tests/gate_plugin.py), so the checker reads the test modules again, as syntax trees, and holds the
lock to them:

- every test it lists is there: its file, and in it the function or class method its node id names;
- a listed test whose marks can be read where they are written (tools/integrity/audit.gate_marked: a literal
  mark on the test, its class or its module, or on a parameter of its parametrisation) is marked
  for the gate it is listed under;
- it lists, under each gate it lists, every test marked for that gate.

A mark a helper makes at run time (`pytest.param(..., marks=mark(gate_id))`) is not read: a test
marked only so is held to exist.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tools.integrity.audit import SKIP_DIRS, gate_marked, parse_source

TESTS_DIR = "tests"
MODULE_MARK = "pytestmark"  # what a module-level mark marks: every test of the module
MARKS = ("gate", "holds")


@dataclass(frozen=True)
class TestFile:
    """One test module: the tests it defines (`name`, `Class::name`,
    classes too) and, by each kind of mark (gate, holds), the gates its readable marks name on each
    test, class and (`pytestmark`) the module."""

    defined: frozenset[str]
    marks: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)
    _marked: dict[tuple[str, ...], dict[str, frozenset[str]]] = field(default_factory=dict, compare=False)

    def gates_of(self, test: str, kinds: tuple[str, ...]) -> frozenset[str]:
        """The gates marked `kinds` on `test` (`name` or `Class::name`), its class and its module."""
        owners = [test, test.split("::", 1)[0], MODULE_MARK]
        return frozenset().union(
            *(self.marks.get(kind, {}).get(owner, frozenset()) for kind in kinds for owner in owners)
        )

    def marked(self, kinds: tuple[str, ...]) -> dict[str, frozenset[str]]:
        """Each test, class or the module (by its owner name) → the gates marked `kinds` on it;
        worked out once per kinds (a module read once is asked by every record of its commits)."""
        if kinds not in self._marked:
            owners = {owner for kind in kinds for owner in self.marks.get(kind, {})}
            self._marked[kinds] = {owner: self.gates_of(owner, kinds) for owner in owners}
        return self._marked[kinds]


def _qualified(tree: ast.Module) -> dict[int, str]:
    """id of each function or class node of the module → its test name (`Class::method` in a class)."""
    names: dict[int, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[id(node)] = node.name
        if isinstance(node, ast.ClassDef):
            for inner in node.body:
                if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                    names[id(inner)] = f"{node.name}::{inner.name}"
    return names


@functools.lru_cache(maxsize=4096)
def read_test_file(text: str) -> TestFile | None:
    """A test module's tests and the gates each kind of mark of MARKS names on each; None where it
    does not parse. Parsed once per content: the modules of one commit are mostly another's."""
    tree = parse_source(text)
    if tree is None:
        return None
    names = _qualified(tree)
    marks: dict[str, dict[str, set[str]]] = {}
    for kind in MARKS:
        for gate_id, _, node in gate_marked(tree, kind):
            marks.setdefault(kind, {}).setdefault(names.get(id(node), MODULE_MARK), set()).add(gate_id)
    return TestFile(
        frozenset(names.values()),
        {kind: {owner: frozenset(g) for owner, g in by.items()} for kind, by in marks.items()},
    )


def modules_in(root: Path) -> Iterator[tuple[str, TestFile | None]]:
    """Each test module of the working tree at `root` (a .py file under tests/), read."""
    tests = root / TESTS_DIR
    for path in sorted(tests.rglob("*.py")) if tests.is_dir() else []:
        rel = path.relative_to(root).as_posix()
        if SKIP_DIRS & set(rel.split("/")):
            continue
        try:
            yield rel, read_test_file(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            yield rel, None


def _split(node_id: str) -> tuple[str, str]:
    """A node id's file and test (`name` or `Class::name`), its parameters cut off."""
    path, _, test = node_id.split("[", 1)[0].partition("::")
    return path, test


def listing_problems(
    listed: dict[str, list[str]], modules: dict[str, TestFile | None], kinds: tuple[str, ...]
) -> list[str]:
    """Where the tests listed (gate id → node ids) contradict the test modules (`modules`: path →
    the module read, None where it does not parse); the module docstring's three rules."""
    problems = []
    for gate_id, node_ids in listed.items():
        for node_id in node_ids:
            path, test = _split(node_id)
            module = modules.get(path)
            if path not in modules or (module is not None and test not in module.defined):
                problems.append(f"lists {node_id} under {gate_id}, but there is no such test")
            elif module is not None and (marked := module.gates_of(test, kinds)) and gate_id not in marked:
                problems.append(
                    f"lists {node_id} under {gate_id}, but that test is marked for "
                    f"{', '.join(sorted(marked))} only"
                )
    return list(dict.fromkeys(problems + _unlisted(listed, modules, kinds)))


def _unlisted(
    listed: dict[str, list[str]], modules: dict[str, TestFile | None], kinds: tuple[str, ...]
) -> list[str]:
    """Each test marked (`kinds`) for a gate the record lists that it lists no outcome of."""
    problems = []
    owners_of: dict[str, list[tuple[str, str]]] = {}  # gate → (path, owner) of each mark naming it
    for path, module in sorted(modules.items()):
        if module is not None:
            for owner, gates in sorted(module.marked(kinds).items()):
                for gate_id in gates:
                    owners_of.setdefault(gate_id, []).append((path, owner))
    for gate_id, node_ids in listed.items():
        seen = {_split(n) for n in node_ids}
        for path, owner in owners_of.get(gate_id, []):
            if not _listed_under(owner, path, seen):
                problems.append(f"lists no outcome of {path}::{owner}, which is marked for {gate_id}")
    return problems


def _listed_under(owner: str, path: str, seen: set[tuple[str, str]]) -> bool:
    """Whether a listed test is what a mark on `owner` (a test, a class, the module) marks."""
    return any(
        p == path and (owner == MODULE_MARK or t == owner or t.startswith(f"{owner}::")) for p, t in seen
    )
