"""`stack evalmatrix`: the same held-out items scored by base, base + few-shot, base + adapter and
adapter + retrieval, under GATE-FT-001 (the adapter beats few-shot) and GATE-FT-002 (the rows
score the same items; no item is its own few-shot example).

The "adapter" is a tiny random model whose own greedy continuations are the items' reference
completions, so it scores them far better than the base (another seed) by construction. The
falsifiers plant each bug in the matrix's own code path: a row that skips an item, a few-shot
draw that does not leave the item out, and one that leaves it out by id only.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.bm25 import bm25
from contracts.derive.evalmatrix import row_summary
from contracts.evidence import read_evidence
from contracts.judges import judge
from contracts.spec import load_spec
from stack.cli import main
from stack.data.chat_jinja import STATE_KEY, jinja_of, render_text
from stack.data.sft_template import load_template
from stack.data.tokenizer import ByteTokenizer
from stack.eval import completion as completion_module
from stack.eval import matrix as matrix_module
from stack.eval.items import Item
from stack.eval.matrix import Matrix, Row, RowResult, adapter_outcome
from stack.eval.retrieval import BM25, Passage, read_passages
from tests.support.ft_support import model as ft_model
from tests.support.ft_support import own_continuations, saved, write_jsonl
from tests.support.ledger_support import assert_caught, edited, gate, rederive
from tests.support.trace_support import save_run
from tests.support.train_support import MeanCrossEntropy, characters_for_bytes
from tools.integrity.record_checks import check_record_truth
from tools.site.finetune import finetune_section

EOT = (ByteTokenizer().eot_id,)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Base (seed 1), adapter (seed 0), six items the adapter continues itself, a pool, documents."""
    root = tmp_path_factory.mktemp("evalmatrix")
    pairs = own_continuations(0, 8, 8, 10, lead=EOT)
    items = [{"id": f"h{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(pairs[:6])]
    pool = [{"id": f"t{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(pairs[6:])]
    docs = root / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text(f"# notes\n\n{items[0]['prompt']} is a gate\n\nunrelated words here\n")
    return {
        "base": saved(root, 1),
        "adapter": saved(root, 0),
        "items": items,
        "pool": pool,
        "items_file": write_jsonl(root / "items.jsonl", items),
        "train_file": write_jsonl(root / "train.jsonl", pool),
        "docs": docs,
    }


def _argv(world: dict[str, Any], record: Path, *extra: str) -> list[str]:
    return [
        "evalmatrix",
        str(world["base"]),
        "--items",
        str(world["items_file"]),
        "--train",
        str(world["train_file"]),
        "--record",
        str(record),
        *extra,
    ]


def _record(record: Path) -> tuple[dict[str, str], dict[str, Any]]:
    evidence = read_evidence(record / "metadata.json")
    return {g.id: g.verdict.value for g in evidence.gates}, evidence.model_dump(mode="json")


def _result(record: Path) -> dict[str, Any]:
    return json.loads((record / "evalmatrix.json").read_text())


# -- the clean path, through the real CLI ---------------------------------------------------


@pytest.mark.holds("GATE-FT-001", "GATE-FT-002")
def test_four_rows_score_the_same_items_and_the_adapter_wins(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "rec"
    extra = ("--adapter", str(world["adapter"]), "--docs", str(world["docs"]), "--exact-match")
    assert main(_argv(world, record, *extra)) == 0
    said = capsys.readouterr()
    assert "evaluation matrix over 6 items" in said.out
    verdicts, evidence = _record(record)
    assert verdicts == dict.fromkeys(load_spec().required_gates("evalmatrix", evidence["config"]), "PASS")
    assert "GATE-FT-001" in verdicts
    result = _result(record)
    rows = {row["row"]: row for row in result["rows"]}
    assert list(rows) == ["A", "B", "C", "D"] and all(row["items"] == 6 for row in rows.values())
    assert rows["C"]["exact_match"] == 1.0 and rows["C"]["bits_per_byte"] < rows["A"]["bits_per_byte"]
    assert result["adapter_gain_bpb"] == pytest.approx(
        rows["B"]["bits_per_byte"] - rows["C"]["bits_per_byte"]
    )
    assert result["retrieved"]["h0"][0]["source"] == "notes.md"  # the passage that names h0's prompt
    empty = [item for item, found in result["retrieved"].items() if not found]
    assert (f"row D retrieved no passage for {len(empty)} of 6" in said.err) == bool(empty), said.err
    filed = read_evidence(record / "metadata.json")
    assert check_record_truth(filed, record, load_spec()).violations == []  # rows re-derive from the items
    section = "\n".join(finetune_section(filed))  # the site's run page
    assert "## Evaluation matrix" in section and "base &#43; adapter" in section  # escaped, as the site shows


@pytest.mark.holds("GATE-FT-002")
def test_a_pool_holding_every_item_never_shows_an_item_itself(world: dict[str, Any], tmp_path: Path) -> None:
    record = tmp_path / "rec"
    argv = _argv(world, record, "--shots", "5")
    argv[argv.index("--train") + 1] = str(world["items_file"])  # the pool is the held-out set itself
    assert main(argv) == 0
    assert _record(record)[0]["GATE-FT-002"] == "PASS"
    for draw in _result(record)["few_shot"]:
        assert len(draw["examples"]) == 5 and draw["item"] not in {e["id"] for e in draw["examples"]}


def test_the_base_as_its_own_adapter_and_a_folder_that_matches_nothing_change_nothing(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder no prompt shares a word with: row D is row C again, which the table would show without
    a word of why; a note names the items it retrieved nothing for."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "other.txt").write_text("zzz qqq\n")  # no word of any prompt: nothing is retrieved
    argv = _argv(world, tmp_path / "rec", "--adapter", str(world["base"]), "--docs", str(docs), "--json")
    capsys.readouterr()
    assert main(argv) == 0
    rows = {row["row"]: row for row in _result(tmp_path / "rec")["rows"]}
    assert rows["C"]["bits_per_byte"] == rows["A"]["bits_per_byte"] == rows["D"]["bits_per_byte"]
    assert _result(tmp_path / "rec")["retrieved"] == {item["id"]: [] for item in world["items"]}
    err = capsys.readouterr().err
    assert "row D retrieved no passage for 6 of 6 item(s)" in err and "row D scores as row C does" in err, err


def test_a_passage_longer_than_the_context_is_said_to_be_cut(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A paragraph of 100 bytes that names the first item's prompt (and shares words with others'):
    row D reads only the end of it in a 64-token context, and a note says so and what to change;
    passages that fit say nothing."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.md").write_text(f"{world['items'][0]['prompt']} " + "x" * 91 + "\n")
    capsys.readouterr()
    assert main(_argv(world, tmp_path / "long", "--docs", str(docs))) == 0
    cut = [item["dropped"] for item in _result(tmp_path / "long")["scores"]["D"] if item["dropped"]]
    assert cut and _result(tmp_path / "long")["scores"]["D"][0]["dropped"]  # the first item's, at least
    err = capsys.readouterr().err
    assert f"row D's context was cut to fit the model on {len(cut)} of 6 item(s) ({sum(cut)} tokens)" in err
    assert "fewer --passages" in err
    assert main(_argv(world, tmp_path / "short", "--docs", str(world["docs"]))) == 0
    assert "context was cut" not in capsys.readouterr().err


def test_an_adapter_tuned_on_chats_asked_without_its_template_is_said_to_be(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An adapter whose checkpoint carries the stack's chat template, scored on bare prompts: a note
    names the template and the first prompt written in it; prompts that hold its assistant marker
    get none."""
    spec = load_template("chat").spec
    adapter = tmp_path / "chat-adapter"
    save_run(adapter, ft_model(0), extra={STATE_KEY: {"name": "chat", "jinja": jinja_of(spec)}})
    capsys.readouterr()
    assert main(_argv(world, tmp_path / "bare", "--adapter", str(adapter))) == 0
    err = capsys.readouterr().err
    first = render_text(spec, [("user", world["items"][0]["prompt"].strip())], "", add_generation_prompt=True)
    assert f"tuned on chats in the template {spec.name}, and no item's prompt has 'Assistant:'" in err, err
    assert repr(first) in err
    templated = [{**item, "prompt": f"User: {item['prompt']}\nAssistant: "} for item in world["items"]]
    argv = _argv(world, tmp_path / "asked", "--adapter", str(adapter))
    argv[argv.index("--items") + 1] = str(write_jsonl(tmp_path / "templated.jsonl", templated))
    assert main(argv) == 0
    assert "tuned on chats" not in capsys.readouterr().err


def test_a_repeated_item_id_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    items = write_jsonl(tmp_path / "items.jsonl", [world["items"][0], world["items"][0]])
    argv = _argv(world, tmp_path / "rec")
    argv[argv.index("--items") + 1] = str(items)
    assert main(argv) == 2


# -- GATE-FT-002: same items, no leak ------------------------------------------------------


@pytest.mark.gate("GATE-FT-002")
def test_a_row_that_skips_an_item_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = matrix_module.row_contexts

    def skipping(row: Row, *args: Any) -> list[tuple[Item, str]]:
        contexts = real(row, *args)
        return contexts[:-1] if row.context == "few-shot" else contexts  # the longest contexts, dropped

    monkeypatch.setattr(matrix_module, "row_contexts", skipping)
    record = tmp_path / "rec"
    assert main(_argv(world, record)) == 3
    verdicts, evidence = _record(record)
    assert verdicts["GATE-FT-002"] == "FAIL" and evidence["run"]["status"] == "halted"


@pytest.mark.gate("GATE-FT-002")
def test_a_draw_that_keeps_the_item_in_the_pool_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matrix_module, "eligible_examples", lambda item, pool: pool)
    argv = _argv(world, tmp_path / "rec", "--shots", "6")
    argv[argv.index("--train") + 1] = str(world["items_file"])  # every draw of all six holds the item
    assert main(argv) == 3
    assert _record(tmp_path / "rec")[0]["GATE-FT-002"] == "FAIL"


@pytest.mark.gate("GATE-FT-002")
def test_the_item_under_another_id_is_a_leak(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        matrix_module, "eligible_examples", lambda item, pool: [p for p in pool if p.id != item.id]
    )
    copy = {**world["items"][0], "id": "renamed"}
    pool = write_jsonl(tmp_path / "train.jsonl", [copy, *world["pool"]])
    argv = _argv(world, tmp_path / "rec", "--shots", str(1 + len(world["pool"])))
    argv[argv.index("--train") + 1] = str(pool)
    assert main(argv) == 3
    verdicts, evidence = _record(tmp_path / "rec")
    assert verdicts["GATE-FT-002"] == "FAIL" and "same sha256" in evidence["run"]["stop_reason"]


@pytest.mark.holds("GATE-FT-002")
def test_an_example_sharing_only_the_prompt_is_no_leak(world: dict[str, Any], tmp_path: Path) -> None:
    near = {**world["items"][0], "id": "near", "completion": world["items"][0]["completion"] + "!"}
    pool = write_jsonl(tmp_path / "train.jsonl", [near, *world["pool"]])
    argv = _argv(world, tmp_path / "rec", "--shots", str(1 + len(world["pool"])))
    argv[argv.index("--train") + 1] = str(pool)
    assert main(argv) == 0
    assert _record(tmp_path / "rec")[0]["GATE-FT-002"] == "PASS"
    first = _result(tmp_path / "rec")["few_shot"][0]
    assert "near" in {e["id"] for e in first["examples"]}


def _prompts_only(real: Any) -> Any:
    """Planted in `row_contexts`: few-shot examples shown without their completions."""

    def contexts(
        row: Row, items: list[Item], draws: dict[str, Any], retrieved: Any
    ) -> list[tuple[Item, str]]:
        if row.context != "few-shot":
            return real(row, items, draws, retrieved)
        return [
            (item, matrix_module.framed([e.prompt for e in draws[item.id].examples], item.prompt))
            for item in items
        ]

    return contexts


def _passages_of_the_next_item(real: Any) -> Any:
    """Row D reads the passages retrieved for the next item, not its own."""

    def contexts(
        row: Row, items: list[Item], draws: dict[str, Any], retrieved: Any
    ) -> list[tuple[Item, str]]:
        if row.context != "retrieval":
            return real(row, items, draws, retrieved)
        shifted = {item.id: retrieved[items[(i + 1) % len(items)].id] for i, item in enumerate(items)}
        return real(row, items, draws, shifted)

    return contexts


@pytest.mark.gate("GATE-FT-002")
@pytest.mark.parametrize(
    "planted", [_prompts_only, _passages_of_the_next_item], ids=["no-completions", "other-passages"]
)
def test_a_row_scored_after_another_text_than_it_states_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: Any
) -> None:
    """What each forward read before a completion is held to what its row states: the draw's
    examples in full, or the passages retrieved for that item, then the item's prompt."""
    monkeypatch.setattr(matrix_module, "row_contexts", planted(matrix_module.row_contexts))
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--docs", str(_ranked_docs(world, tmp_path)))) == 3
    verdicts, evidence = _record(record)
    assert verdicts["GATE-FT-002"] == "FAIL" and "after another text than the row states" in str(
        next(g for g in evidence["gates"] if g["id"] == "GATE-FT-002")["message"]
    )


def _ranked_docs(world: dict[str, Any], tmp_path: Path, tie: bool = False) -> Path:
    """Per item, a passage of its whole prompt twice and one of its first word only (or, with `tie`,
    the whole-prompt passage twice): BM25 ranks the first above the second (or ties them)."""
    docs = tmp_path / "ranked"
    docs.mkdir()
    paragraphs = []
    for item in world["items"]:
        words = item["prompt"].strip(".").split()
        paragraphs.append(" ".join(words * 2))
        paragraphs.append(" ".join(words * 2) if tie else f"{words[0]} filler text")
    (docs / "ranked.md").write_text("\n\n".join(paragraphs) + "\n")
    return docs


def _worst_first(self: BM25, query: str, n: int) -> list[tuple[Passage, float]]:
    """Planted in `BM25.top`: the passages above 0 ranked worst first."""
    scored = [(self.score(query, i), i) for i in range(len(self.passages))]
    ranked = sorted((pair for pair in scored if pair[0] > 0), key=lambda pair: (pair[0], pair[1]))
    return [(self.passages[i], s) for s, i in ranked[:n]]


@pytest.mark.gate("GATE-FT-002")
def test_retrieval_that_takes_the_worst_passages_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BM25, "top", _worst_first)
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--docs", str(_ranked_docs(world, tmp_path)))) == 3
    verdicts, evidence = _record(record)
    message = str(next(g for g in evidence["gates"] if g["id"] == "GATE-FT-002")["message"])
    assert verdicts["GATE-FT-002"] == "FAIL" and "retrieval did not take the best" in message


@pytest.mark.holds("GATE-FT-002")
def test_a_passage_left_out_that_ties_the_one_retrieved_holds(world: dict[str, Any], tmp_path: Path) -> None:
    """The boundary: one passage asked, two that score the same; the one left out is no better."""
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--docs", str(_ranked_docs(world, tmp_path, tie=True)))) == 0
    verdicts, evidence = _record(record)
    result = next(g for g in evidence["gates"] if g["id"] == "GATE-FT-002")
    assert verdicts["GATE-FT-002"] == "PASS"
    assert all(e["best_left"] == e["scores"][0] > 0 for e in result["measured"]["retrieval"])


# -- GATE-FT-001: the adapter beats few-shot ------------------------------------------------


def _matrix(few_shot_bpb: float, adapter_bpb: float, few_shot_cut: tuple[int, ...] = (0, 0)) -> Matrix:
    """Rows of two items of one byte each, scored at the bits given; row B's items had `few_shot_cut`
    context tokens cut, row D's always some (its passages: never GATE-FT-001's business)."""

    def row(name: str, bpb: float, cut: tuple[int, ...] = (0, 0)) -> RowResult:
        scores = [
            {"id": f"i{i}", "nll": bpb * math.log(2), "tokens": 1, "bytes": 1, "dropped": n, "exact": None}
            for i, n in enumerate(cut)
        ]
        return RowResult(Row(name, name, "base", "none"), scores, ["0" * 64] * len(cut))

    rows = [row("A", 4.0), row("B", few_shot_bpb, few_shot_cut), row("C", adapter_bpb), row("D", 2.0, (9, 9))]
    return Matrix(rows, [], {}, {})


@pytest.mark.gate("GATE-FT-001")
def test_an_adapter_short_of_the_margin_is_reported() -> None:
    assert not adapter_outcome(_matrix(3.0, 2.991)).ok  # better by 0.009 bits per byte: not enough


@pytest.mark.holds("GATE-FT-001")
def test_an_adapter_just_past_the_margin_holds() -> None:
    assert adapter_outcome(_matrix(3.0, 2.989)).ok  # better by 0.011


@pytest.mark.gate("GATE-FT-001")
def test_a_few_shot_row_cut_to_fit_the_context_on_one_item_is_no_comparison() -> None:
    """An adapter far better than a row B whose one item lost one context token to the cut: the
    examples that item was shown are not the ones asked, so the margin proves nothing."""
    outcome = adapter_outcome(_matrix(3.0, 1.0, few_shot_cut=(0, 1)))
    assert not outcome.ok
    assert "cut to fit the model on 1 of 2 item(s), at most 0 wanted (1 tokens cut)" in outcome.message
    assert "fewer --shots" in outcome.message


@pytest.mark.holds("GATE-FT-001")
def test_a_few_shot_row_shown_whole_is_compared_though_retrieval_was_cut() -> None:
    assert adapter_outcome(_matrix(3.0, 1.0, few_shot_cut=(0, 0))).ok


@pytest.mark.gate("GATE-FT-001")
def test_more_shots_than_the_context_holds_warn_through_the_cli_and_the_checker_agrees(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two examples fit the 64-token context before every item; three do not (7 tokens cut each):
    the adapter still wins by bits, and the gate says the comparison is not the one asked."""
    adapter = ("--adapter", str(world["adapter"]))
    assert main(_argv(world, tmp_path / "two", *adapter, "--shots", "2")) == 0
    assert _record(tmp_path / "two")[0]["GATE-FT-001"] == "PASS"
    assert main(_argv(world, tmp_path / "three", *adapter, "--shots", "3")) == 0
    assert (
        "GATE-FT-001: the few-shot row's contexts were cut to fit the model on 6 of 6"
        in capsys.readouterr().err
    )
    verdicts, evidence = _record(tmp_path / "three")
    result = next(g for g in evidence["gates"] if g["id"] == "GATE-FT-001")
    assert verdicts["GATE-FT-001"] == "WARN" and result["measured"]["few_shot_cut_items"] == 6
    assert _result(tmp_path / "three")["adapter_gain_bpb"] > 0  # the bits alone would have passed
    filed = read_evidence(tmp_path / "three" / "metadata.json")
    assert check_record_truth(filed, tmp_path / "three", load_spec()).violations == []


@pytest.mark.gate("GATE-INTEG-001")
def test_a_warn_turned_pass_over_a_few_shot_row_cut_is_caught(world: dict[str, Any], tmp_path: Path) -> None:
    """The record of a 3-shot matrix, its GATE-FT-001 flipped to PASS with the cut items said to be
    none: the checker counts row B's cuts again from evalmatrix.json and derives the WARN."""
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--adapter", str(world["adapter"]), "--shots", "3")) == 0

    def flip(data: dict[str, Any], _dir: Path) -> None:
        result = gate(data, "GATE-FT-001")
        assert result["verdict"] == "WARN"
        result.update(verdict="PASS", message=None, measured={**result["measured"], "few_shot_cut_items": 0})

    edited(record, flip)
    assert_caught(record, 'gates[GATE-FT-001].verdict is "PASS", but its artifacts derive "WARN"')
    assert_caught(record, "gates[GATE-FT-001].measured.few_shot_cut_items is 0")


@pytest.mark.gate("GATE-FT-001")
def test_an_adapter_worse_than_few_shot_warns_through_the_cli(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(world, tmp_path / "rec", "--adapter", str(world["base"]))
    argv[1] = str(world["adapter"])  # swapped: the "base" knows the items, the "adapter" does not
    assert main(argv) == 0
    assert _record(tmp_path / "rec")[0]["GATE-FT-001"] == "WARN"
    assert "GATE-FT-001" in capsys.readouterr().err


# -- the retriever ---------------------------------------------------------------------------


def test_bm25_ranks_the_passage_sharing_rare_words_first() -> None:
    passages = [Passage("a", 0, "the gate and the model"), Passage("b", 0, "the kernel reads shards")]
    passages.append(Passage("c", 0, "the gate fired on the kernel shards"))
    ranked = BM25(passages).top("kernel shards", 3)
    assert [p.source for p, _ in ranked] == ["b", "c"]  # "a" shares no word and is never returned
    assert ranked[0][1] > ranked[1][1] > 0


@settings(max_examples=40)
@given(
    query=st.lists(
        st.sampled_from(["gate", "kernel", "model", "shards", "the", "absent"]), min_size=1, max_size=5
    )
)
def test_bm25_counts_a_query_word_each_time_it_occurs(query: list[str]) -> None:
    """The formula sums over the query's words as they occur (as rank_bm25 does): asking twice
    scores twice."""
    index = BM25([Passage("a", 0, "the gate and the model"), Passage("b", 0, "the kernel reads shards")])
    once, twice = " ".join(query), " ".join(query + query)
    for at in (0, 1):
        assert index.score(twice, at) == pytest.approx(2 * index.score(once, at), rel=1e-12)


def test_a_repeated_query_word_can_change_which_passage_ranks_first() -> None:
    """`kernel` is rare and `gate` common: asked once each, the kernel passage wins; a query that
    says gate four times is about the gate (counted once per distinct word, it would not be)."""
    passages = [Passage("gate", 0, "gate one two three"), Passage("kernel", 0, "kernel one two three")]
    passages += [Passage("other", i, f"gate filler words here {i}") for i in range(2)]
    index = BM25(passages)
    first = index.top("kernel gate", 1)[0][0].source
    again = index.top("kernel gate gate gate gate", 1)[0][0].source
    assert (first, again) == ("kernel", "gate")


def test_documents_are_cut_into_paragraphs(tmp_path: Path) -> None:
    (tmp_path / "one.md").write_text("first para\n\n  \nsecond para\n")
    (tmp_path / "skip.bin").write_bytes(b"\xff")
    assert [(p.source, p.index, p.text) for p in read_passages(tmp_path)] == [
        ("one.md", 0, "first para"),
        ("one.md", 1, "second para"),
    ]


# -- GATE-FT-002 check windows: the ids each scoring forward read, held to the documented cut ----------


def _oldest_kept(fit: Any) -> Any:
    """Planted: the context cut keeps its oldest tokens (the prompt itself is cut off)."""

    def fit_context(context: list[int], completion: int, ctx: int, where: str) -> tuple[list[int], int]:
        kept, dropped = fit(context, completion, ctx, where)
        return context[: len(kept)], dropped

    return fit_context


def _room_off_by_one(fit: Any) -> Any:
    """The room is one token short: one context token too many is cut."""
    return lambda context, completion, ctx, where: fit(context, completion + 1, ctx, where)


def _no_eot(fit: Any) -> Any:
    """The context loses its leading end-of-text id."""
    return lambda context, completion, ctx, where: fit(context[1:], completion, ctx, where)


@pytest.mark.holds("GATE-FT-002")
def test_a_cut_few_shot_context_is_the_documented_cut(world: dict[str, Any], tmp_path: Path) -> None:
    """Four shots overflow the model's 64 tokens: row B's contexts are cut, and what each forward read
    is the stated context's newest tokens before the whole completion."""
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--shots", "4")) == 0
    verdicts, evidence = _record(record)
    measured = next(g for g in evidence["gates"] if g["id"] == "GATE-FT-002")["measured"]
    assert verdicts["GATE-FT-002"] == "PASS" and min(measured["dropped_read"]["B"]) > 0
    assert measured["windows_read"] == measured["windows_stated"]


@pytest.mark.gate("GATE-FT-002")
@pytest.mark.parametrize("planted", [_oldest_kept, _room_off_by_one, _no_eot])
def test_a_context_cut_other_than_documented_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: Any
) -> None:
    """Each planted cut reads other ids than the rule gives for the stated context: exit 3."""
    monkeypatch.setattr(completion_module, "fit_context", planted(completion_module.fit_context))
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--shots", "4")) == 3
    verdicts, evidence = _record(record)
    assert verdicts["GATE-FT-002"] == "FAIL" and evidence["run"]["status"] == "halted"


@pytest.mark.gate("GATE-FT-002")
def test_a_completion_cut_instead_of_the_context_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forward scores the completion less its last token: the taped targets are not the rule's."""
    ids = completion_module.check_round_trip
    monkeypatch.setattr(
        completion_module, "check_round_trip", lambda tokenizer, text: ids(tokenizer, text)[:-1]
    )
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--shots", "4")) == 3
    assert _record(record)[0]["GATE-FT-002"] == "FAIL"


# -- GATE-FT-002 check nll: each item's NLL, held to the sum its taped logits give its taped targets ---


@pytest.mark.gate("GATE-FT-002")
def test_a_completion_nll_averaged_not_summed_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scorer's NLL is a mean over the completion: every row's bits per byte shrink by its
    length, and the stated NLLs are not the sums the taped logits give. Exit 3 naming the gate."""
    monkeypatch.setattr(completion_module, "F", MeanCrossEntropy())
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--shots", "4")) == 3
    verdicts, evidence = _record(record)
    message = str(next(g for g in evidence["gates"] if g["id"] == "GATE-FT-002")["message"])
    assert verdicts["GATE-FT-002"] == "FAIL" and "NLL other than the sum" in message


@pytest.mark.gate("GATE-FT-002")
def test_a_stated_nll_just_beyond_nll_rtol_fires(world: dict[str, Any], tmp_path: Path) -> None:
    """The clean matrix's NLLs hold; one item's moved by just inside nll_rtol of its taped sum holds,
    just beyond fires."""
    record = tmp_path / "rec"
    assert main(_argv(world, record)) == 0
    measured = next(g for g in _record(record)[1]["gates"] if g["id"] == "GATE-FT-002")["measured"]
    nll = {k: measured[k] for k in ("nll_read", "nll_taped")}
    assert judge("GATE-FT-002", nll) == []
    rtol = load_spec().gate("GATE-FT-002").threshold_values["nll_rtol"]
    taped = nll["nll_taped"]["A"][0]
    for factor, fires in ((0.99, False), (1.01, True)):
        nll["nll_read"]["A"][0] = taped * (1 + factor * rtol)
        assert bool(judge("GATE-FT-002", nll)) is fires


# -- GATE-FT-002 check retrieval, rescored by the statute (contracts.bm25), apart from the retriever ---


def _idf_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the retriever's idf lacks Lucene's 1, so a word in more than half the passages
    weighs below 0 and passages sharing words with the prompt score at or below 0."""
    init = BM25.__init__

    def planted(self: BM25, passages: list[Passage]) -> None:
        init(self, passages)
        n, holding = len(passages), Counter(w for c in self.counts for w in c)
        self.idf = {w: math.log((n - held + 0.5) / (held + 0.5)) for w, held in holding.items()}

    monkeypatch.setattr(BM25, "__init__", planted)


def _shared_docs(world: dict[str, Any], tmp_path: Path) -> Path:
    """Four passages that each hold every item's prompt, and a word of their own: under the statute
    every passage scores above 0 for every prompt, so three are there to retrieve for each item."""
    docs = tmp_path / "shared"
    docs.mkdir()
    prompts = " ".join(item["prompt"] for item in world["items"])
    paragraphs = [f"{prompts} {own}" for own in ("north", "south", "east", "west")]
    (docs / "shared.md").write_text("\n\n".join(paragraphs) + "\n")
    return docs


@pytest.mark.holds("GATE-FT-002")
def test_three_passages_asked_and_held_are_retrieved(world: dict[str, Any], tmp_path: Path) -> None:
    """The clean retriever takes three passages per item, as the statute rescores them."""
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--docs", str(_shared_docs(world, tmp_path)), "--passages", "3")) == 0
    retrieval = next(g for g in _record(record)[1]["gates"] if g["id"] == "GATE-FT-002")["measured"][
        "retrieval"
    ]
    assert all(len(entry["scores"]) == 3 for entry in retrieval)


@pytest.mark.gate("GATE-FT-002")
def test_a_retriever_whose_idf_lacks_its_one_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the planted idf the retriever returns fewer passages than asked (or other ones), while
    the statute scores more above 0: exit 3 naming the gate."""
    _idf_without_one(monkeypatch)
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--docs", str(_shared_docs(world, tmp_path)), "--passages", "3")) == 3
    verdicts, evidence = _record(record)
    message = str(next(g for g in evidence["gates"] if g["id"] == "GATE-FT-002")["message"])
    assert verdicts["GATE-FT-002"] == "FAIL" and "passages retrieved of 3 asked" in message


def test_the_statute_scores_known_values_and_the_retriever_agrees() -> None:
    """Two passages 'a b' and 'a c' (both of the mean length): 'b' is in one of two, idf ln 2, and
    its term weight is 1 at f = 1, so it scores ln 2 and 0; 'a' is in both, idf ln 1.2, each. The
    retriever's own index gives the same scores."""
    texts = ["a b", "a c"]
    statute = bm25(texts)
    assert statute("b") == pytest.approx([math.log(2), 0.0])
    assert statute("a") == pytest.approx([math.log(1.2)] * 2)
    retriever = BM25([Passage("x.md", i, t) for i, t in enumerate(texts)])
    for query in ("a", "b", "a b b", "z"):
        assert [retriever.score(query, i) for i in range(2)] == pytest.approx(statute(query))


# -- GATE-FT-002 check bytes: each item's bytes, the UTF-8 bytes of the completion its forward scored ---

ACCENTED = ["un café crème", "la naïveté", "déjà vu", "une façade à côté"]


def _accented_argv(world: dict[str, Any], root: Path) -> list[str]:
    """`stack evalmatrix` of the base over items whose completions are accented, recorded in root/rec."""
    items = [{"id": f"a{i}", "prompt": f"Réponse {i} : ", "completion": c} for i, c in enumerate(ACCENTED)]
    pool = [
        {"id": f"p{i}", "prompt": f"Exemple {i} : ", "completion": c[::-1]} for i, c in enumerate(ACCENTED)
    ]
    items_file, train_file = write_jsonl(root / "items.jsonl", items), write_jsonl(root / "train.jsonl", pool)
    argv = ["evalmatrix", str(world["base"]), "--items", str(items_file), "--train", str(train_file)]
    return [*argv, "--record", str(root / "rec")]


def _bytes_measured(record: Path) -> tuple[str, dict[str, Any]]:
    """GATE-FT-002's verdict and measured values in the matrix's record."""
    result = next(g for g in _record(record)[1]["gates"] if g["id"] == "GATE-FT-002")
    return result["verdict"], result


@pytest.mark.gate("GATE-FT-002")
def test_completion_bytes_counted_as_characters_are_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: every byte count the matrix makes counts the completion's characters, so
    each row's bits per byte rises by the accents' share (17 % on these items) and the rows
    still sum their items; the UTF-8 bytes of the text each forward's taped targets decode to,
    counted by contracts.likelihood, do not match. Exit 3 naming the gate."""
    monkeypatch.setattr(matrix_module, "len", characters_for_bytes, raising=False)
    assert main(_accented_argv(world, tmp_path)) == 3
    verdict, result = _bytes_measured(tmp_path / "rec")
    assert verdict == "FAIL" and "characters counted for bytes?" in str(result["message"])
    assert result["measured"]["bytes_read"]["A"] == [len(c) for c in ACCENTED]
    assert result["measured"]["bytes_decoded"]["A"] == [len(c.encode("utf-8")) for c in ACCENTED]


@pytest.mark.holds("GATE-FT-002")
def test_accented_completions_are_scored_over_their_utf8_bytes(world: dict[str, Any], tmp_path: Path) -> None:
    """Unplanted: each item's bytes are its completion's UTF-8 bytes in every row, evalmatrix.json
    keeps the completions, and the checker finds the record true to them."""
    assert main(_accented_argv(world, tmp_path)) == 0
    verdict, result = _bytes_measured(tmp_path / "rec")
    utf8 = [len(c.encode("utf-8")) for c in ACCENTED]
    assert verdict == "PASS" and result["measured"]["bytes_read"] == {"A": utf8, "B": utf8}
    assert result["measured"]["bytes_decoded"] == result["measured"]["bytes_read"]
    assert _result(tmp_path / "rec")["completions"] == ACCENTED
    filed = read_evidence(tmp_path / "rec" / "metadata.json")
    assert check_record_truth(filed, tmp_path / "rec", load_spec()).violations == []


def _bytes_as_characters(data: dict[str, Any], run_dir: Path) -> None:
    """A perfect forger of bytes counted as characters: evalmatrix.json's item bytes made their
    completions' characters, its rows summed again by the checker's own function, the record
    re-derived from the file."""
    path = run_dir / "evalmatrix.json"
    report = json.loads(path.read_text())
    for scores in report["scores"].values():
        for score, completion in zip(scores, report["completions"], strict=True):
            score["bytes"] = len(completion)
    named = ("row", "label", "model", "context")
    report["rows"] = [
        row_summary({k: r[k] for k in named}, report["scores"][r["row"]]) for r in report["rows"]
    ]
    path.write_text(json.dumps(report, indent=2) + "\n")
    rederive(data, run_dir)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_matrix_whose_bytes_are_edited_with_its_rows_is_named_from_its_completions(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Every number of the edited record agrees with every other; the completions evalmatrix.json
    keeps, counted again by contracts.likelihood, do not."""
    assert main(_accented_argv(world, tmp_path)) == 0
    run_dir = edited(tmp_path / "rec", _bytes_as_characters)
    assert_caught(
        run_dir, "evalmatrix.json: row A's item a0 counts 13 bytes, but its completion holds 15 UTF-8"
    )


# -- GATE-FT-002 check draws: each item's examples are its own seeded draw (contracts.few_shot) ---------


@pytest.mark.gate("GATE-FT-002")
def test_a_draw_seeded_without_the_item_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: `random.Random(f"{seed}:{item.id}")` made `random.Random(seed)`: every item is
    shown the same examples. None is the item itself, so only drawing again from the seed, the item
    and the pool shows it. Exit 3 naming the gate."""
    monkeypatch.setattr(
        matrix_module,
        "seeded_sample",
        lambda seed, item_id, eligible, shots: random.Random(seed).sample(eligible, shots),
    )
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--shots", "2")) == 3
    verdicts, evidence = _record(record)
    message = str(next(g for g in evidence["gates"] if g["id"] == "GATE-FT-002")["message"])
    assert verdicts["GATE-FT-002"] == "FAIL" and "every item shows the same examples" in message


@pytest.mark.holds("GATE-FT-002")
def test_every_item_shows_its_own_seeded_draw_and_the_checker_draws_it_again(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Unplanted: the record keeps the pool, seed and shots the draws are held to; evalmatrix.json
    keeps the pool, and the checker finds the record true to it."""
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--shots", "2", "--seed", "5")) == 0
    measured = next(g for g in _record(record)[1]["gates"] if g["id"] == "GATE-FT-002")["measured"]
    assert measured["draws_seed"] == 5 and measured["draws_shots"] == 2
    assert [p["id"] for p in _result(record)["pool"]] == [p["id"] for p in world["pool"]]
    assert len({tuple(e["id"] for e in d["examples"]) for d in _result(record)["few_shot"]}) > 1
    filed = read_evidence(record / "metadata.json")
    assert check_record_truth(filed, record, load_spec()).violations == []


def _same_shots_for_every_item(data: dict[str, Any], run_dir: Path) -> None:
    """evalmatrix.json's draws all made the first item's (one draw of shots for every item)."""
    path = run_dir / "evalmatrix.json"
    report = json.loads(path.read_text())
    for draw in report["few_shot"]:
        draw["examples"] = report["few_shot"][0]["examples"]
    path.write_text(json.dumps(report, indent=2) + "\n")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_matrix_whose_draws_are_not_their_items_own_is_caught(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """The record says PASS; evalmatrix.json's draws, drawn again from its pool and the record's seed,
    say otherwise."""
    record = tmp_path / "rec"
    assert main(_argv(world, record, "--shots", "2")) == 0
    assert_caught(edited(record, _same_shots_for_every_item), "GATE-FT-002")
