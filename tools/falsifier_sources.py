"""What a falsify or a conformance record lists of the tests at its commit.

A falsify record lists, per ACTIVE gate, the outcome of each test marked `gate(ID)` it ran, with
the gate on and forced off (`metrics.gates`); a conformance record, per test-kind gate, each test
marked `gate(ID)` or `holds(ID)` (its gates' `falsifiers`). The pytest plugin writes both from the
tests of the record's commit (tests/gate_plugin.py), so the checker reads those tests again, from
git at the commit (never this checkout's), and holds the record to them:

- every test it lists is there: its file, and in it the function or class method its node id names;
- a listed test whose marks can be read where they are written (tools/audit.gate_marked: a literal
  mark on the test, its class or its module, or on a parameter of its parametrisation) is marked
  for the gate it is listed under;
- a completed record lists, under each gate it lists, every test marked for that gate there.

A mark a helper makes at run time (`pytest.param(..., marks=mark(gate_id))`) is not read: a test
marked only so is held to exist. A record made from a dirty tree ran tests its commit may not
hold; it is not held to them, and the checker says so.
"""

from __future__ import annotations

import ast
import functools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from audit import SKIP_DIRS, gate_marked
from spec_history import objects

from contracts.evidence import EvidenceRecord, RunStatus

TESTS_DIR = "tests"
MODULE_MARK = "pytestmark"  # what a module-level mark marks: every test of the module
# The marks each kind of record lists its tests by (tests/gate_plugin.py: GATE_MARK, HOLDS_MARK).
LISTED_BY = {"falsify": ("gate",), "conformance": ("gate", "holds")}
MARKS = ("gate", "holds")


@dataclass(frozen=True)
class TestFile:
    """One test module as git holds it at a commit: the tests it defines (`name`, `Class::name`,
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
    try:
        tree = ast.parse(text)
    except SyntaxError:
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


def tests_at(root: Path, sha: str) -> dict[str, str]:
    """Each test module of commit `sha` (a .py file under tests/) → its blob id."""
    proc = subprocess.run(
        ["git", "-C", str(root), "ls-tree", "-r", "-z", sha, "--", TESTS_DIR],
        capture_output=True,
        check=False,
    )
    found = {}
    for entry in proc.stdout.decode("utf-8", "replace").split("\0"):
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if (
            len(parts) == 3
            and parts[1] == "blob"
            and path.endswith(".py")
            and not SKIP_DIRS & set(path.split("/"))
        ):
            found[path] = parts[2]
    return found


def listed_tests(record: EvidenceRecord) -> dict[str, list[str]]:
    """gate id → the node ids of the tests the record lists under it."""
    if record.run.kind == "falsify":
        detail = record.metrics.get("gates")
        gates = detail.items() if isinstance(detail, dict) else []
        return {
            g: list(v.get("falsifiers") or {}) for g, v in gates if isinstance(v, dict) and isinstance(g, str)
        }
    return {
        r.id: list((r.measured or {}).get("falsifiers") or {})
        for r in record.gates
        if isinstance(r.measured, dict)
    }


def _split(node_id: str) -> tuple[str, str]:
    """A node id's file and test (`name` or `Class::name`), its parameters cut off."""
    path, _, test = node_id.split("[", 1)[0].partition("::")
    return path, test


def listing_problems(record: EvidenceRecord, modules: dict[str, TestFile | None]) -> list[str]:
    """Where the tests `record` lists contradict the test modules of its commit (`modules`: path →
    the module read, None where it does not parse); the module docstring's three rules."""
    problems = []
    sha, kinds = str(record.code.git_sha)[:12], LISTED_BY[record.run.kind]
    listed = listed_tests(record)
    for gate_id, node_ids in listed.items():
        for node_id in node_ids:
            path, test = _split(node_id)
            module = modules.get(path)
            if path not in modules or (module is not None and test not in module.defined):
                problems.append(f"lists {node_id} under {gate_id}, but its commit {sha} has no such test")
            elif module is not None and (marked := module.gates_of(test, kinds)) and gate_id not in marked:
                problems.append(
                    f"lists {node_id} under {gate_id}, but at its commit {sha} that test is marked for "
                    f"{', '.join(sorted(marked))} only"
                )
    if record.run.status is RunStatus.COMPLETED:
        problems += _unlisted(listed, modules, kinds, sha)
    return problems


def _unlisted(
    listed: dict[str, list[str]], modules: dict[str, TestFile | None], kinds: tuple[str, ...], sha: str
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
                problems.append(
                    f"lists no outcome of {path}::{owner}, which its commit {sha} marks for {gate_id}"
                )
    return problems


def _listed_under(owner: str, path: str, seen: set[tuple[str, str]]) -> bool:
    """Whether a listed test is what a mark on `owner` (a test, a class, the module) marks."""
    return any(
        p == path and (owner == MODULE_MARK or t == owner or t.startswith(f"{owner}::")) for p, t in seen
    )


def modules_at(root: Path, sha: str) -> Iterator[tuple[str, TestFile | None]]:
    """Each test module of commit `sha`, read (`read_test_file`)."""
    files = tests_at(root, sha)
    blobs = objects(root, sorted(set(files.values())))
    for path, blob in files.items():
        text = blobs.get(blob)
        yield path, None if text is None else read_test_file(text.decode("utf-8", "replace"))
