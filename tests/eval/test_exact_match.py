"""An exact match compares the whole continuation: planted, a scorer comparing only the first character.

A check that holds only that every item has an exact match where config.exact_match is true lets
a scorer comparing only the first character of the greedy continuation and the completion pass
every gate (the smoke model matches nothing, so nothing shows the difference). GATE-FT-002's check
exact holds each item's exact match to contracts.exact_match of the greedy continuation the scorer
decoded, in the run (exit 3) and by the checker from the continuations evalmatrix.json keeps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.derive.evalmatrix import row_summary
from contracts.evidence import read_evidence
from contracts.exact_match import exact_match
from contracts.spec import load_spec
from stack.cli import main
from stack.data.tokenizer import ByteTokenizer
from stack.eval import completion as completion_module
from tests.support.ft_support import own_continuations, saved, write_jsonl
from tests.support.ledger_support import assert_caught, edited, rederive
from tools.integrity.record_checks import check_record_truth

EOT = (ByteTokenizer().eot_id,)


def _second_character_changed(text: str) -> str:
    """`text` with the character after its first non-space one changed: a completion whose first
    character (stripped) is the model's, the rest not."""
    at = len(text) - len(text.lstrip()) + 1
    assert at < len(text), f"{text!r} has no character after its first"
    return text[:at] + ("Z" if text[at] != "Z" else "Y") + text[at + 1 :]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Base (seed 1), adapter (seed 0), four items: the first the adapter's own greedy continuation,
    the other three the adapter's continuation with its second character changed (what a scorer of
    first characters alone takes for a match)."""
    root = tmp_path_factory.mktemp("exact-match-world")
    pairs = own_continuations(0, 7, 8, 10, lead=EOT)
    items = [
        {"id": f"h{i}", "prompt": p, "completion": c if i == 0 else _second_character_changed(c)}
        for i, (p, c) in enumerate(pairs[:4])
    ]
    pool = [{"id": f"t{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(pairs[4:])]
    return {
        "base": saved(root, 1),
        "adapter": saved(root, 0),
        "items": write_jsonl(root / "items.jsonl", items),
        "train": write_jsonl(root / "train.jsonl", pool),
    }


def _matrix(world: dict[str, Any], record: Path) -> int:
    argv = ["evalmatrix", str(world["base"]), "--items", str(world["items"]), "--train", str(world["train"])]
    return main([*argv, "--adapter", str(world["adapter"]), "--record", str(record), "--exact-match"])


def _gate(record: Path) -> dict[str, Any]:
    data = json.loads((record / "metadata.json").read_text())
    return next(g for g in data["gates"] if g["id"] == "GATE-FT-002")


@pytest.mark.holds("GATE-FT-002")
def test_honest_exact_matches_hold_and_the_checker_derives_them(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Just inside: the adapter's row matches its own continuation and not the three changed ones;
    every stated match is the statute's of the continuation kept, and the checker agrees."""
    record = tmp_path / "rec"
    assert _matrix(world, record) == 0
    result = _gate(record)
    assert result["verdict"] == "PASS"
    assert result["measured"]["exact_read"]["C"] == [True, False, False, False]
    kept = json.loads((record / "evalmatrix.json").read_text())["scores"]["C"]
    assert all(isinstance(score["greedy"], str) for score in kept)
    assert check_record_truth(read_evidence(record / "metadata.json"), record, load_spec()).violations == []


def _first_character_only(greedy: str, completion: str) -> bool:
    """The planted scorer: only the first characters compared."""
    return greedy.strip()[:1] == completion.strip()[:1]


@pytest.mark.gate("GATE-FT-002")
def test_a_first_character_exact_match_halts(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the scorer compares first characters; the three changed items match by it: exit 3."""
    monkeypatch.setattr(completion_module, "matches", _first_character_only)
    record = tmp_path / "rec"
    assert _matrix(world, record) == 3
    result = _gate(record)
    assert result["verdict"] == "FAIL"
    assert "row C: 3 of 4 items state an exact match other than contracts.exact_match" in result["message"]


def _matches_inflated(data: dict[str, Any], run_dir: Path) -> None:
    """A perfect forger's record of that scorer: row C's exact matches all true, its rows summed again by the
    checker's own function, the record re-derived from the file."""
    path = run_dir / "evalmatrix.json"
    report = json.loads(path.read_text())
    for score in report["scores"]["C"]:
        score["exact"] = True
    named = ("row", "label", "model", "context")
    report["rows"] = [
        row_summary({k: r[k] for k in named}, report["scores"][r["row"]]) for r in report["rows"]
    ]
    path.write_text(json.dumps(report, indent=2) + "\n")
    rederive(data, run_dir)


def _continuations_dropped(data: dict[str, Any], run_dir: Path) -> None:
    """The same record without the greedy continuations it must keep."""
    path = run_dir / "evalmatrix.json"
    report = json.loads(path.read_text())
    for scores in report["scores"].values():
        for score in scores:
            del score["greedy"]
    path.write_text(json.dumps(report, indent=2) + "\n")
    rederive(data, run_dir)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_matrix_with_inflated_exact_matches_is_named_by_the_checker(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Every number of the forged record agrees with evalmatrix.json; its continuations do not."""
    assert _matrix(world, tmp_path / "rec") == 0
    assert_caught(
        edited(tmp_path / "rec", _matches_inflated),
        "evalmatrix.json: row C: 3 of 4 items state an exact match other than contracts.exact_match",
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_matrix_without_its_continuations_is_named_by_the_checker(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """A current record that keeps no continuation cannot have its exact matches judged: missing."""
    assert _matrix(world, tmp_path / "rec") == 0
    assert_caught(edited(tmp_path / "rec", _continuations_dropped), "greedy continuations")


@given(st.text(max_size=6), st.text(max_size=6))
def test_the_scorer_agrees_with_the_statute(greedy: str, completion: str) -> None:
    """The stack's own comparison and contracts.exact_match agree on any pair of texts."""
    assert completion_module.matches(greedy, completion) == exact_match(greedy, completion)
    assert exact_match(f" {completion}\n", completion)
