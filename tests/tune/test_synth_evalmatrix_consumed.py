"""`stack synth` and `stack evalmatrix`: a value the command consumes,
measured where it acts and held to the setting its record states.

- A synth that draws every response with the instruction's budget: GATE-SYNTH-002 rev 3 (check budgets)
  holds every continuation, as the sampler returned it, to contracts.synth_budget; the checker judges
  synth.json's continuations again against the settings it states.
- An evalmatrix that never computes exact match under --exact-match: GATE-FT-002 rev 7 (check exact)
  holds every item's exact match to config.exact_match; the checker holds evalmatrix.json to it.
- The checker holds synth's settings and model, and evalmatrix's models, to the command line
  (tools/argv_record.NESTED_OPTIONS).

Each bug is planted in this process (monkeypatch) and run through the real command.
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
from contracts.judges import judge
from contracts.spec import load_spec
from contracts.synth_budget import part_budget, text_tokens
from stack.cli import main
from stack.data.tokenizer import ByteTokenizer
from stack.eval import matrix as matrix_module
from stack.tune import synth
from tests.support.ft_support import own_continuations, saved, write_jsonl
from tests.support.ledger_support import assert_caught, edited, gate, rederive
from tests.support.trace_support import save_run, tiny_model
from tools.integrity.record_checks import check_record_truth
from tools.integrity.settings.argv_record import option_problems

# Loose filters, so that a random model's samples are kept; lengths that tell the two budgets apart.
SYNTH_OPTIONS = (
    "--samples",
    "4",
    "--min-chars",
    "1",
    "--min-coherence",
    "0.001",
    "--max-instruction-tokens",
    "16",
    "--max-response-tokens",
    "40",
    "--temperature",
    "0.5",
    "--seed",
    "2",
)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random byte-level model of context 128: room for a 16-token instruction and a 40-token response."""
    root = tmp_path_factory.mktemp("synth")
    save_run(root / "source", tiny_model(ctx=128))
    return root / "source"


def _synth(source: Path, out: Path, *extra: str) -> int:
    return main(["synth", str(source), "--out", str(out), *SYNTH_OPTIONS, *extra])


def _gate(run_dir: Path, gate_id: str) -> dict[str, Any]:
    data = read_evidence(run_dir / "metadata.json").model_dump(mode="json")
    return gate(data, gate_id)


def _budget_planted(monkeypatch: pytest.MonkeyPatch, budget: Any) -> None:
    """stack.tune.synth's continuation handed `budget(settings, asked)` for a response's budget."""
    real = synth._continue

    def planted(*args: Any, reserve: int = 0) -> str | None:
        if reserve:
            args = (*args[:3], budget(args[5], args[3]), *args[4:])
        return real(*args, reserve=reserve)

    monkeypatch.setattr(synth, "_continue", planted)


# -- GATE-SYNTH-002 check budgets: each response drawn with the response's budget --------------


@pytest.mark.holds("GATE-SYNTH-002")
def test_a_synthesis_holds_its_budgets_and_the_checker_derives_them(source: Path, tmp_path: Path) -> None:
    """The clean synthesis: every response drew min(40, the room left) tokens, every instruction 16;
    synth.json keeps what the record measured, and the checker finds nothing."""
    out = tmp_path / "ok"
    assert _synth(source, out) == 0
    result = _gate(out, "GATE-SYNTH-002")
    assert result["verdict"] == "PASS"
    measured = result["measured"]
    sidecar = json.loads((out / "synth.json").read_text())
    assert sidecar["continuations"] == measured["continuations"] and sidecar["ctx"] == measured["ctx"] == 128
    parts = [c["part"] for c in measured["continuations"]]
    assert parts.count("instruction") == parts.count("response") == 4
    for c in measured["continuations"]:
        asked = 16 if c["part"] == "instruction" else 40
        assert c["drawn"] == part_budget(c["part"], asked, 128, c["prompt_tokens"]) == asked
    assert check_record_truth(read_evidence(out / "metadata.json"), out, load_spec()).violations == []


@pytest.mark.gate("GATE-SYNTH-002")
def test_responses_drawn_with_the_instruction_budget_halt(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: every response drawn with max_instruction_tokens (16 of 40). The replay draws the same,
    so only the budgets check sees it: exit 3 naming the gate and the budget."""
    _budget_planted(monkeypatch, lambda settings, asked: settings.max_instruction_tokens)
    out = tmp_path / "instruction-budget"
    assert _synth(source, out) == 3
    result = _gate(out, "GATE-SYNTH-002")
    assert result["verdict"] == "FAIL"
    assert "drew other than the budget" in result["message"] and "response drew 16" in result["message"]
    assert result["measured"]["mismatched"] == 0  # the replay agreed with the bug


@pytest.mark.gate("GATE-SYNTH-002")
def test_a_response_budget_one_short_halts(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just beyond: every response one token short of its budget (39 of 40) fires."""
    _budget_planted(monkeypatch, lambda settings, asked: asked - 1)
    out = tmp_path / "short"
    assert _synth(source, out) == 3
    assert "response drew 39" in _gate(out, "GATE-SYNTH-002")["message"]


@pytest.mark.holds("GATE-SYNTH-002")
def test_a_response_budget_cut_by_the_context_holds(source: Path, tmp_path: Path) -> None:
    """Just inside: a response asked for more than the context leaves draws what it leaves, as the
    statute's budget says (the clamp recorded), and holds."""
    out = tmp_path / "clamped"
    assert _synth(source, out, "--max-response-tokens", "500") == 0
    measured = _gate(out, "GATE-SYNTH-002")["measured"]
    responses = [c for c in measured["continuations"] if c["part"] == "response"]
    assert all(c["drawn"] == 128 - c["prompt_tokens"] - 1 for c in responses)
    assert "max_response_tokens" in json.loads((out / "synth.json").read_text())["clamped"]


@given(
    drawn=st.integers(1, 64),
    eot_at=st.none() | st.integers(0, 63),
    prompt=st.integers(1, 100),
    asked=st.integers(1, 80),
)
def test_the_budget_judge_is_the_statute(drawn: int, eot_at: int | None, prompt: int, asked: int) -> None:
    """A continuation holds exactly where it drew the statute's budget and kept what came before the
    end-of-text (property: over any lengths)."""
    eot_at = None if eot_at is None or eot_at >= drawn else eot_at
    c = {"part": "response", "prompt_tokens": prompt, "drawn": drawn, "eot_at": eot_at}
    measured = {
        "continuations": [{**c, "text": text_tokens(drawn, eot_at)}],
        "ctx": 128,
        "max_instruction_tokens": 16,
        "max_response_tokens": asked,
    }
    holds = drawn == part_budget("response", asked, 128, prompt)
    assert (judge("GATE-SYNTH-002", measured) == []) is holds


def _responses_cut_to_instruction_budget(data: dict[str, Any], run_dir: Path) -> None:
    """A perfect forger's record of that plant: synth.json's responses as drawn with the instruction's budget
    (16 tokens, no end-of-text), the record re-derived from the file."""
    path = run_dir / "synth.json"
    report = json.loads(path.read_text())
    for c in report["continuations"]:
        if c["part"] == "response":
            c.update(drawn=16, eot_at=None, text=16)
    path.write_text(json.dumps(report, indent=1) + "\n")
    rederive(data, run_dir)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_synthesis_record_with_short_responses_is_named_by_the_checker(
    source: Path, tmp_path: Path
) -> None:
    """The checker judges synth.json's continuations again against the settings synth.json states:
    every field of the forged record agrees with the file, and the statute does not."""
    assert _synth(source, tmp_path / "rec") == 0
    run_dir = edited(tmp_path / "rec", _responses_cut_to_instruction_budget)
    assert_caught(run_dir, "synth.json:", "drew other than the budget", "response drew 16")


@pytest.mark.gate("GATE-INTEG-001")
def test_synth_settings_are_held_to_the_command_line(source: Path, tmp_path: Path) -> None:
    """config.settings.max_response_tokens (and the model read) against the command line's words,
    named by the integrity check (GATE-INTEG-001) of the edited record."""
    assert _synth(source, tmp_path / "rec") == 0
    assert option_problems(read_evidence(tmp_path / "rec" / "metadata.json")) == []

    def restated(data: dict[str, Any], _run_dir: Path) -> None:
        data["config"]["settings"]["max_response_tokens"] = 16
        data["config"]["model"]["checkpoint"] = str(tmp_path / "elsewhere")

    run_dir = edited(tmp_path / "rec", restated)
    assert_caught(run_dir, "config.settings.max_response_tokens is 16, but its command line gives 40")
    assert_caught(run_dir, "config.model.checkpoint is")


@pytest.mark.gate("GATE-INTEG-001")
def test_the_synth_template_is_held_to_the_command_line(source: Path, tmp_path: Path) -> None:
    """`--template chat` reads the shipped chat template: a record naming another template's file is
    named by the integrity check; the one read holds."""
    assert _synth(source, tmp_path / "rec", "--template", "chat") == 0
    data = json.loads((tmp_path / "rec" / "metadata.json").read_text())
    assert data["config"]["template"]["path"].endswith("stack/data/templates/chat.yaml")
    assert option_problems(read_evidence(tmp_path / "rec" / "metadata.json")) == []

    def restated(data: dict[str, Any], _run_dir: Path) -> None:
        data["config"]["template"]["path"] = str(tmp_path / "mine.yaml")

    assert_caught(edited(tmp_path / "rec", restated), "config.template.path is", "'chat'")


# -- GATE-FT-002 check exact: exact match computed where --exact-match asks for it -------------


EOT = (ByteTokenizer().eot_id,)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Base (seed 1), adapter (seed 0), four items the adapter continues itself, a pool."""
    root = tmp_path_factory.mktemp("evalmatrix")
    pairs = own_continuations(0, 7, 8, 10, lead=EOT)
    items = [{"id": f"h{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(pairs[:4])]
    pool = [{"id": f"t{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(pairs[4:])]
    docs = root / "docs"
    docs.mkdir()
    paragraphs = [f"{item['prompt']} note {n}" for item in items for n in range(3)]
    (docs / "notes.md").write_text("\n\n".join(paragraphs) + "\n")
    return {
        "base": saved(root, 1),
        "adapter": saved(root, 0),
        "items": write_jsonl(root / "items.jsonl", items),
        "train": write_jsonl(root / "train.jsonl", pool),
        "docs": docs,
    }


def _matrix(world: dict[str, Any], record: Path, *extra: str) -> int:
    argv = ["evalmatrix", str(world["base"]), "--items", str(world["items"]), "--train", str(world["train"])]
    return main([*argv, "--adapter", str(world["adapter"]), "--record", str(record), *extra])


def _setup_planted(monkeypatch: pytest.MonkeyPatch, **planted: Any) -> None:
    """The matrix's setup built with the `planted` fields whatever the command line asked (for
    example exact=False)."""
    real = matrix_module.Setup
    names = list(real.__dataclass_fields__)
    monkeypatch.setattr(
        matrix_module, "Setup", lambda *args: real(**{**dict(zip(names, args, strict=True)), **planted})
    )


@pytest.mark.holds("GATE-FT-002")
@pytest.mark.parametrize("asked", [True, False])
def test_exact_match_as_asked_holds(world: dict[str, Any], tmp_path: Path, asked: bool) -> None:
    """Just inside: with --exact-match every item of every row has true/false, without it none; the
    checker agrees."""
    record = tmp_path / "rec"
    assert _matrix(world, record, *(["--exact-match"] if asked else [])) == 0
    result = _gate(record, "GATE-FT-002")
    assert result["verdict"] == "PASS" and result["measured"]["exact_stated"] is asked
    for values in result["measured"]["exact_read"].values():
        assert all(isinstance(v, bool) if asked else v is None for v in values)
    assert check_record_truth(read_evidence(record / "metadata.json"), record, load_spec()).violations == []


@pytest.mark.gate("GATE-FT-002")
def test_exact_match_never_computed_under_exact_match_halts(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: --exact-match given, the scorer never asked: exit 3 naming the gate."""
    _setup_planted(monkeypatch, exact=False)
    record = tmp_path / "rec"
    assert _matrix(world, record, "--exact-match") == 3
    result = _gate(record, "GATE-FT-002")
    assert result["verdict"] == "FAIL"
    assert "have exact match None, but the record asks for exact match" in result["message"]


@pytest.mark.gate("GATE-FT-002")
def test_exact_match_computed_unasked_halts(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converse: exact match decoded where the record says it was not asked for."""
    _setup_planted(monkeypatch, exact=True)
    record = tmp_path / "rec"
    assert _matrix(world, record) == 3
    assert "asks for no exact match" in _gate(record, "GATE-FT-002")["message"]


def _exact_matches_dropped(data: dict[str, Any], run_dir: Path) -> None:
    """A perfect forger's record of exact match never computed: evalmatrix.json's exact matches null,
    its rows summed again by the checker's own function, the record re-derived from the file,
    config.exact_match kept."""
    path = run_dir / "evalmatrix.json"
    report = json.loads(path.read_text())
    for scores in report["scores"].values():
        for score in scores:
            score["exact"] = None
    named = ("row", "label", "model", "context")
    report["rows"] = [
        row_summary({k: r[k] for k in named}, report["scores"][r["row"]]) for r in report["rows"]
    ]
    path.write_text(json.dumps(report, indent=2) + "\n")
    rederive(data, run_dir)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_matrix_whose_exact_matches_are_dropped_is_named_by_the_checker(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Every number of the forged record agrees with evalmatrix.json; config.exact_match does not."""
    assert _matrix(world, tmp_path / "rec", "--exact-match") == 0
    run_dir = edited(tmp_path / "rec", _exact_matches_dropped)
    assert_caught(run_dir, "evalmatrix.json: row A's 4 item(s) have exact match None, but config.exact_match")


@pytest.mark.gate("GATE-INTEG-001")
def test_evalmatrix_models_are_held_to_the_command_line(world: dict[str, Any], tmp_path: Path) -> None:
    """config.models.adapter (and config.exact_match) against the command line's words, named by the
    integrity check (GATE-INTEG-001) of the edited record."""
    assert _matrix(world, tmp_path / "rec", "--exact-match") == 0
    assert option_problems(read_evidence(tmp_path / "rec" / "metadata.json")) == []

    def restated(data: dict[str, Any], _run_dir: Path) -> None:
        data["config"]["models"]["adapter"] = None
        data["config"]["exact_match"] = False

    run_dir = edited(tmp_path / "rec", restated)
    assert_caught(run_dir, "config.models.adapter is None, but its command line gives")
    assert_caught(run_dir, "config.exact_match is False, but its command line gives True")


# -- the other settings a matrix consumes: held to what the record states, at run time -------------


@pytest.mark.gate("GATE-FT-002")
def test_passages_that_never_reached_the_retriever_halt(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--passages 3 with the retriever asked for 2 (every item has three passages scoring above 0):
    the retrieval is judged against config.passages, not the setup's count. Exit 3."""
    _setup_planted(monkeypatch, passages=2)
    record = tmp_path / "rec"
    assert _matrix(world, record, "--docs", str(world["docs"]), "--passages", "3") == 3
    result = _gate(record, "GATE-FT-002")
    assert result["verdict"] == "FAIL" and {r["asked"] for r in result["measured"]["retrieval"]} == {3}
    assert "2 passages retrieved of 3 asked" in result["message"]


@pytest.mark.holds("GATE-FT-002")
def test_passages_as_asked_hold(world: dict[str, Any], tmp_path: Path) -> None:
    """Just inside: the same matrix unplanted retrieves three passages an item and holds; the checker
    derives each item's asked count from config.passages."""
    record = tmp_path / "rec"
    assert _matrix(world, record, "--docs", str(world["docs"]), "--passages", "3") == 0
    assert all(
        len(found) == 3
        for found in json.loads((record / "evalmatrix.json").read_text())["retrieved"].values()
    )
    assert check_record_truth(read_evidence(record / "metadata.json"), record, load_spec()).violations == []


@pytest.mark.gate("GATE-FT-002")
def test_a_few_shot_count_that_never_reached_the_draw_halts(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--shots 3 with the draw made for 2: each item's draw is judged against config.shots. Exit 3."""
    _setup_planted(monkeypatch, shots=2)
    record = tmp_path / "rec"
    assert _matrix(world, record, "--shots", "3") == 3
    result = _gate(record, "GATE-FT-002")
    assert result["verdict"] == "FAIL" and "other few-shot examples than the seeded draw" in result["message"]


@pytest.mark.gate("GATE-FT-002")
def test_a_draw_seed_that_never_reached_the_draw_halts(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--seed 5 with the draw seeded 0: each item's draw is judged against config.seed. Exit 3."""
    _setup_planted(monkeypatch, seed=0)
    record = tmp_path / "rec"
    assert _matrix(world, record, "--seed", "5") == 3
    result = _gate(record, "GATE-FT-002")
    assert result["verdict"] == "FAIL" and "other few-shot examples than the seeded draw" in result["message"]
