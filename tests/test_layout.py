"""The tests' own layout: each test module in the folder of the subject it tests, named for that
subject, and standing alone.

A test module that imports another runs the other's module-level set-up and couples two files that
move apart; what several modules share lives in tests/support/ (or in conftest.py's fixtures). A
file named after the review that asked for it says nothing of what it proves.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# Folders of the tests package that hold no tests: shared helpers, and the data and records read.
NOT_SUBJECTS = {"support", "fixtures", "__pycache__"}
# A review round ("round9") or a finding's code ("r158", "k07") as a part of the file's name.
REVIEW_NAMED = re.compile(r"(?:^|_)(?:round\d+|[rkjxy]\d{2,3})(?:_|$)", re.IGNORECASE)


def suite_modules() -> list[Path]:
    """Every test module of the suite."""
    return sorted(p for p in TESTS.rglob("test_*.py") if "fixtures" not in p.relative_to(TESTS).parts)


def imported_modules(path: Path) -> list[str]:
    """The dotted names a module imports, at any depth of its code."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def is_test_module(name: str) -> bool:
    """Whether a dotted import names a test module (`test_x`, `tests.data.test_x`, ...)."""
    return any(part.startswith("test_") for part in name.split("."))


@pytest.mark.parametrize("path", suite_modules(), ids=lambda p: p.relative_to(TESTS).as_posix())
def test_a_test_module_imports_no_other_test_module(path: Path) -> None:
    imported = [name for name in imported_modules(path) if is_test_module(name)]
    where = path.relative_to(TESTS)
    assert not imported, f"{where} imports {imported}: move what they share to tests/support/"


def test_every_test_module_sits_in_a_subject_folder_and_is_named_for_its_subject() -> None:
    repository_wide = {"test_architecture.py", "test_layout.py"}
    misplaced = [
        p.relative_to(TESTS).as_posix()
        for p in suite_modules()
        if (p.parent == TESTS and p.name not in repository_wide)
        or (p.parent != TESTS and p.relative_to(TESTS).parts[0] in NOT_SUBJECTS)
    ]
    assert not misplaced, f"test modules outside a subject folder: {misplaced}"
    review_named = [p.relative_to(TESTS).as_posix() for p in suite_modules() if REVIEW_NAMED.search(p.stem)]
    assert not review_named, f"test modules named after a review, not a subject: {review_named}"


def test_the_support_modules_are_no_test_modules() -> None:
    """pytest collects nothing from tests/support/: a helper named test_* would be collected there."""
    named_as_tests = [p.name for p in (TESTS / "support").glob("*.py") if p.name.startswith("test_")]
    assert not named_as_tests


def test_a_review_named_file_is_seen() -> None:
    """The name check can fail: the names this suite's files once had are seen, its subjects' are not."""
    assert all(REVIEW_NAMED.search(n) for n in ("test_round9_trace9", "test_integrity_round8", "test_r158"))
    assert not any(REVIEW_NAMED.search(n) for n in ("test_data_prepare", "test_es_estimate", "test_bpb"))


def test_the_import_check_sees_a_test_module_imported(tmp_path: Path) -> None:
    """The check above can fail: a module importing a test module, in either spelling, is seen."""
    module = tmp_path / "test_planted.py"
    module.write_text("from test_data_prepare import run_cli\nimport tests.data.test_data_policy as p\n")
    assert [n for n in imported_modules(module) if is_test_module(n)] == [
        "test_data_prepare",
        "test_data_prepare.run_cli",
        "tests.data.test_data_policy",
    ]
