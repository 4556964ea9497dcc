"""The house stands on floors: imports run downhill, and no files import each other in a circle.

The repository's Python lives in four trees, and they depend one way (docs/house.md draws it):
contracts/ (the spec's rules: judges, derivations, the ledger's schemas) imports nothing from the
others; stack/ (the training stack) imports contracts/ and nothing above; tools/ and benchmarks/
(the auditors, the site, the measurements) may import all. spec/ is data the contracts read.

Within stack/, a room is a package (stack/data/, stack/train/, ...) or a module standing alone in
it (stack/artifacts.py). Each room stands on one floor of FLOORS, and a module may import from its
own room and from rooms on lower floors only: never from a room on its own floor or above. So
what two rooms share lives in the lower one (the coherence score in stack/data, read by the
training monitor and by synth; the output rules in stack/outputs, read by every writer), the
data pipeline and the model know nothing of training, tuning or the commands, and no two rooms
can import each other.

Across the whole repository no two files may import each other, directly or round a loop: what
both need goes in a third file they both import. A registry imports what it gathers (contracts.judges
imports every area's judges), never the other way round.

Every import counts, wherever it stands: at the top, inside a function (a lazy import is still
a dependency) and under `if TYPE_CHECKING:` (a type named is a thing known). A name is resolved to
the module that defines it (`from contracts.judges import judge` is contracts/judges/__init__.py);
a submodule does not count as importing its package. A script in a folder that is no package
(tools/, benchmarks/ run as `python tools/x.py`) finds its neighbours by their bare names, so
`import audit` in tools/ is tools/audit.py. A new room of stack/ must be given its floor here,
which is where a newcomer reads the plan of the house.

Importing a module changes nothing of the process that imports it: no environment variable is
set there. Modules are imported for their names (the integrity check imports every benchmark
script for its goals), and a variable an import sets changes what that process, and every command
it starts, does next: TRITON_INTERPRET set so runs every later attention kernel in Triton's
interpreter, in the start-up check of every test after it. A script that needs a variable sets it
when it runs, in its `main`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from graphlib import TopologicalSorter
from pathlib import Path

import pytest

from tests.support.import_effects import environment_set_on_import

ROOT = Path(__file__).resolve().parent.parent
# Each tree of Python, with the trees it may import from (its own included).
TREES: dict[str, frozenset[str]] = {
    "contracts": frozenset({"contracts"}),
    "stack": frozenset({"stack", "contracts"}),
    "tools": frozenset({"tools", "stack", "contracts", "benchmarks"}),
    "benchmarks": frozenset({"benchmarks", "tools", "stack", "contracts"}),
}

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
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for tree in TREES for path in sorted((ROOT / tree).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The module of the repository that `name` (a module, or a name in one) is, or None outside it."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _script_folder(module: str) -> str | None:
    """The folder whose neighbours a module finds by bare name: its own, when that folder is no
    package (a script run as `python tools/x.py` has its folder on sys.path)."""
    path = MODULES[module]
    return None if (path.parent / "__init__.py").exists() else module.rpartition(".")[0]


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement of `body` and of the blocks inside it (functions, classes, branches, `try`,
    `with`, `match`): where an import may stand, without visiting every expression."""
    for statement in body:
        yield statement
        for name in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(statement, name, None) or [])
        for handler in getattr(statement, "handlers", None) or []:
            yield from _statements(handler.body)
        for case in getattr(statement, "cases", None) or []:
            yield from _statements(case.body)


def imports(module: str) -> set[str]:
    """Every module of the repository that `module` imports, anywhere in its file (module docstring)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    folder = _script_folder(module)
    found: set[str] = set()
    for node in _statements(ast.parse(path.read_text(encoding="utf-8")).body):
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
        relative = isinstance(node, ast.ImportFrom) and node.level > 0
        for name in names:
            target = _resolve(name)
            if target is None and folder is not None and not relative:
                target = _resolve(f"{folder}.{name}")
            if target is not None:
                found.add(target)
    found.discard(module)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def tree(module: str) -> str:
    """The tree a module stands in: contracts, stack, tools or benchmarks."""
    return module.split(".")[0]


def room(module: str) -> str:
    """The room of stack/ a module stands in: its package under stack/, or itself."""
    return ".".join(module.split(".")[:2])


STACK_GRAPH = {module: targets for module, targets in GRAPH.items() if tree(module) == "stack"}


def test_every_room_has_a_floor() -> None:
    rooms = {room(module) for module in STACK_GRAPH} - {"stack"}
    assert rooms - set(FLOOR) == set(), "give each new room of stack/ its floor in FLOORS"
    assert set(FLOOR) - rooms == set(), "FLOORS names a room stack/ no longer has"


def test_imports_run_downhill() -> None:
    uphill = [
        f"{module} -> {target} (floor {FLOOR[room(module)]} -> {FLOOR[room(target)]})"
        for module, targets in STACK_GRAPH.items()
        for target in sorted(targets)
        if tree(target) == "stack"
        and room(module) != "stack"
        and room(target) not in ("stack", room(module))
        and FLOOR[room(target)] >= FLOOR[room(module)]
    ]
    assert uphill == []


def test_the_trees_depend_downhill() -> None:
    """contracts/ imports nothing of stack/, tools/ or benchmarks/; stack/ nothing of tools/ or
    benchmarks/: the rules and the ledger stand without the stack, and the stack without its auditors."""
    uphill = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        for target in sorted(targets)
        if tree(target) not in TREES[tree(module)]
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


def test_every_tree_is_read() -> None:
    """The graph holds every tree, and a script's bare import of its neighbour is an edge (so the
    circle and downhill tests see tools/ and benchmarks/ as they run)."""
    assert {tree(module) for module in GRAPH} == set(TREES)
    assert any(
        tree(target) == "tools" for module in GRAPH if tree(module) == "tools" for target in GRAPH[module]
    )
    assert "contracts.judges.base" in GRAPH["contracts.judges.train"]


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
    monkeypatch.setitem(
        STACK_GRAPH, "stack.data.policy", GRAPH["stack.data.policy"] | {"stack.train.coherence"}
    )
    with pytest.raises(AssertionError, match=r"stack.data.policy -> stack.train.coherence"):
        test_imports_run_downhill()


def test_a_planted_import_of_the_stack_by_the_contracts_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """A judge that reads the stack would no longer be a pure function of the record."""
    monkeypatch.setitem(
        GRAPH, "contracts.judges.train", GRAPH["contracts.judges.train"] | {"stack.train.loop"}
    )
    with pytest.raises(AssertionError, match=r"contracts.judges.train -> stack.train.loop"):
        test_the_trees_depend_downhill()


def test_a_planted_registry_circle_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """An area's judges importing the registry that gathers them is the circle the registries undo."""
    monkeypatch.setitem(GRAPH, "contracts.judges.lora", GRAPH["contracts.judges.lora"] | {"contracts.judges"})
    with pytest.raises(AssertionError, match=r"contracts\.judges\.lora"):
        test_no_files_import_each_other_in_a_circle()


def test_no_import_sets_an_environment_variable() -> None:
    """Every module of the four trees, imported in turn in one fresh interpreter, each after the
    modules it imports (so a finding names the module whose own code set the variable, not the
    first one to import it); a module run as `python -m`, which starts its command, aside."""
    order = TopologicalSorter(GRAPH).static_order()
    modules = [module for module in order if not module.endswith(".__main__")]
    assert environment_set_on_import(modules, [ROOT]) == {}


def test_a_planted_import_that_sets_a_variable_is_named(tmp_path: Path) -> None:
    """A module that switches an interpreter on as it is imported is named with the variable; one
    that only reads the environment is not."""
    (tmp_path / "reads_only.py").write_text('import os\nINTERPRETED = os.environ.get("TRITON_INTERPRET")\n')
    (tmp_path / "sets_one.py").write_text('import os\nos.environ.setdefault("TRITON_INTERPRET", "1")\n')
    found = environment_set_on_import(["reads_only", "sets_one"], [tmp_path])
    assert found == {"sets_one": ["TRITON_INTERPRET"]}
