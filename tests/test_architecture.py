"""The house of stack/ stands on floors: imports run downhill, and no files import each other in a circle.

A room is a package of stack/ (stack/data/, stack/train/, ...) or a module standing alone in it
(stack/artifacts.py). Each room stands on one floor of FLOORS, and a module may import from its
own room and from rooms on lower floors only: never from a room on its own floor or above. So
what two rooms share lives in the lower one (the coherence score in stack/data, read by the
training monitor and by synth; the output rules in stack/outputs, read by every writer), the
data pipeline and the model know nothing of training, tuning or the commands, and no two rooms
can import each other. Within a room, no two files may import each other either, directly or
round a loop: what both need goes in a third file they both import.

Every import counts, wherever it stands: at the top, inside a function (a lazy import is still
a dependency) and under `if TYPE_CHECKING:` (a type named is a thing known). A new room must be
given its floor here, which is where a newcomer reads the plan of the house.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STACK = Path(__file__).resolve().parent.parent / "stack"

# Lowest first. What each floor holds, and why it stands there:
FLOORS: tuple[tuple[str, ...], ...] = (
    # names and settings every room reads: artifact file names, config sections, Triton kernels
    ("stack.artifacts", "stack.config", "stack.kernels"),
    # the rules of every output (paths, --force, the lock, staging, run directories, filing)
    ("stack.outputs",),
    # the data pipeline and the model: neither knows of the other, nor of anything above
    ("stack.data", "stack.model"),
    # the math of tuning (the DPO and distillation losses, frozen models, synthetic samples)
    ("stack.tune",),
    # the training loop, its objectives, checkpoints and runs
    ("stack.train",),
    # reading trained models: evaluation, tracing
    ("stack.eval", "stack.trace"),
    # what is made of trained models: ES runs, exports, lenses, releases, syntheses, the matrix
    ("stack.es", "stack.export", "stack.lens", "stack.options_matrix", "stack.release", "stack.synth_run"),
    # surgery, which writes its outputs as an import does
    ("stack.surgery",),
    # the command line
    ("stack.cli",),
    ("stack.__main__",),
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def _module_name(path: Path) -> str:
    parts = path.relative_to(STACK.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(STACK.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The module of stack/ that `name` (a module, or a name in one) is, or None outside stack/."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """Every module of stack/ that `module` imports, anywhere in its file (module docstring)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for name in names if (target := _resolve(name)) is not None}
    found.discard(module)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def room(module: str) -> str:
    """The room a module stands in: its package under stack/, or itself."""
    return ".".join(module.split(".")[:2])


def test_every_room_has_a_floor() -> None:
    rooms = {room(module) for module in MODULES} - {"stack"}
    assert rooms - set(FLOOR) == set(), "give each new room of stack/ its floor in FLOORS"
    assert set(FLOOR) - rooms == set(), "FLOORS names a room stack/ no longer has"


def test_imports_run_downhill() -> None:
    uphill = [
        f"{module} -> {target} (floor {FLOOR[room(module)]} -> {FLOOR[room(target)]})"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if room(module) != "stack"
        and room(target) not in ("stack", room(module))
        and FLOOR[room(target)] >= FLOOR[room(module)]
    ]
    assert uphill == []


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected sets of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(sorted(members))
    return found


def test_no_files_import_each_other_in_a_circle() -> None:
    assert circles(GRAPH) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_a_planted_circle_is_found(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert circles(graph) == expected


def test_a_planted_uphill_import_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data pipeline importing the training loop is the arrow this file exists to stop."""
    monkeypatch.setitem(GRAPH, "stack.data.policy", GRAPH["stack.data.policy"] | {"stack.train.coherence"})
    with pytest.raises(AssertionError, match=r"stack.data.policy -> stack.train.coherence"):
        test_imports_run_downhill()
