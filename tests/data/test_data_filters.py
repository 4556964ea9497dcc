"""Filters in `stack prepare` and their gates: GATE-DATA-012 (leaks dropped, near misses kept),
GATE-DATA-013 (every source filtered or waived), GATE-DATA-014 (drop counts add up).

Every limit a test plants at comes from the filter settings in force (stack/data/filters/
defaults.yaml, or a --filters file the test writes), never from a literal: a document at the
limit is kept and one just over it is dropped, so a detector off by one either way turns a test
red. The default limits themselves are pinned from both sides elsewhere: the default corpus loses
nothing to them but the modules saved in another encoding (test_data_prepare), and the
post-mortem's loop is dropped (test_data_postmortem).

The transcripts here are written out by hand in the formats people store chat data in, so a
change in how the filter finds a first user turn shows against text it did not make.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import filter_rules
from contracts.errors import EXIT_BAD_INPUT, EXIT_GATE, BadInput, GateViolation
from contracts.evidence import read_evidence, sha256_file
from contracts.filter_rules import letters_by_script
from contracts.judges import judge
from contracts.leak_canaries import canary_rows
from contracts.shingles import compared_pair, exact_jaccard, minhash_allowance
from contracts.spec import load_spec
from contracts.split import document_identity
from stack.cli import main
from stack.data import prepare_tasks
from stack.data.filters import canaries, leak
from stack.data.filters import dedup as dedup_module
from stack.data.filters import diversity as diversity_module
from stack.data.filters import encoding as encoding_module
from stack.data.filters import script as script_module
from stack.data.filters import size as size_module
from stack.data.filters.dedup import NearDuplicates, Rechecks
from stack.data.filters.diversity import diversity_score
from stack.data.filters.droplog import DROP_LOG_FILE, DropLog, recount
from stack.data.filters.gates import check_recorded, counts_outcome, stream_canaries_outcome
from stack.data.filters.rechecks import rule_settings
from stack.data.filters.runner import Doc, FilterRunner, Screen
from stack.data.filters.sample import sample_of, sample_text, spans
from stack.data.filters.script import (
    REPLACEMENT_CHARACTER,
    Held,
    SourceLetters,
    alphabets,
    letter_counts,
    main_system,
    mismatch,
    named,
    script_of,
)
from stack.data.filters.settings import load_settings
from stack.data.formats import Layout
from stack.data.manifest import load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.sft_prepare import prepare_sft
from stack.data.tokenizer import load_tokenizer
from stack.data.working_set import DEFAULT_WORKING_SET, HELD_DOCUMENT_BYTES, MIN_WORKING_SET, WorkingSet
from stack.eval.texts import split_documents, split_text
from tests.support import corpora
from tests.support.corpora import five_words, loop
from tests.support.paths import DATA
from tools.integrity.record_checks import check_record_truth
from tools.site.filters import drops_section

SETTINGS = load_settings()
LEAK = SETTINGS.leak
CASES = leak.canaries(LEAK)
PHRASE = LEAK.fingerprints[0]
# The stream canaries of the leak filter: the planted leaks a source's stream must lose.
LEAK_CANARIES = sum(case.must_drop for case in CASES.values())


def phrase_turn(lead: str) -> str:
    """`lead` (holding a fingerprint phrase) made into a first user turn long enough for the phrase
    to count without a header (leak.fingerprint_min_chars)."""
    text = lead
    while len(text) < LEAK.fingerprint_min_chars:
        text += " Answer only in French, and keep every reply short."
    return text


def headed(count: int) -> str:
    """A short prose text with `count` markdown headers (a leaked prompt's shape), under the weight limit."""
    return leak.prompt_like(count, 40 * count)


def chatml(user: str, answer: str = "Sure, here it is.", system: str = "Be brief.") -> str:
    """A ChatML transcript, as chat data is often flattened to text for pretraining."""
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
        f"<|im_start|>assistant\n{answer}<|im_end|>\n"
    )


def corpus(root: Path, sources: dict[str, dict[str, str]]) -> list[str]:
    """Write each source's documents under root/<source>/; the NAME=PATH inputs of prepare."""
    inputs = []
    for source, docs in sources.items():
        (root / source).mkdir(parents=True)
        for name, text in docs.items():
            (root / source / name).write_text(text, encoding="utf-8")
        inputs.append(f"{source}={root / source}")
    return inputs


def settings_file(root: Path, content: dict) -> Path:
    path = root / "filters.yaml"
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def judged(text: str) -> str | None:
    """The leak filter's verdict on a document of `text`."""
    return leak.judge(text.encode("utf-8"), LEAK)


def document(text: str, **options: object) -> Doc:
    """A document held in memory, as the screen judges it."""
    return Doc(text.encode("utf-8"), **options)  # type: ignore[arg-type]


NEAR_MISSES = {
    "at-limit.txt": chatml(str(CASES["headers_at_limit"].turn)),
    "weight-at-limit.txt": chatml(str(CASES["weight_at_limit"].turn)),
    "url.txt": "The list lives at https://example.org/docs/api/v2/users/list/#/section/a/b today.",
    "code-comments.txt": "# Copyright The Authors\n# Licensed under the MIT License\n# See LICENSE\n"
    "# Helpers Module\n# More Notes Here\n# And Another Line\n\nx = 1\n",
    "plain.txt": "A note on the weather. It rained in the morning and cleared up by noon.",
    # A document's own markdown, however many headers, and code holding a system prompt where it
    # belongs: no first user turn, never judged (npm docs, scripts and client code alike).
    "readme.md": f"{corpora.markdown_doc(0, sections=LEAK.max_headers + 3)}\n{PHRASE.capitalize()}.\n",
    "deploy.sh": corpora.shell_script(0),
    "client.py": corpora.chat_client(0),
    # A transcript's system turn and its answers are not the user's words.
    "system-turn.txt": chatml(
        "What is the capital of Peru?", system=f"{PHRASE}.\n\n{headed(LEAK.max_headers + 2)}"
    ),
    "answer.txt": chatml("How do I structure a report?", answer=headed(LEAK.max_headers + 3)),
}
LEAKS = {
    "over-limit.txt": chatml(str(CASES["headers_over_limit"].turn)),
    "weight-over-limit.txt": chatml(str(CASES["weight_over_limit"].turn)),
    "phrase.txt": chatml(phrase_turn(f"Hello there.\n{PHRASE.title()}. Answer the user.")),
}


@pytest.fixture(scope="module")
def leak_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("leak")
    inputs = corpus(root, {"web": NEAR_MISSES | LEAKS})
    manifest = prepare_corpus(inputs, root / "data", val_fraction=0)
    return root / "data", manifest


# -- GATE-DATA-012: leaked system prompts ------------------------------------------------------


@pytest.mark.holds("GATE-DATA-012", "GATE-DATA-014")
def test_planted_leaks_are_dropped_and_near_misses_kept(leak_data: tuple[Path, object]) -> None:
    _, manifest = leak_data
    report = manifest.filters["web"]  # type: ignore[attr-defined]
    assert report.documents_in == len(NEAR_MISSES) + len(LEAKS)
    assert report.documents_out == len(NEAR_MISSES) == manifest.sources["web"].documents  # type: ignore[attr-defined]
    assert report.dropped == {"leak_headers": 1, "leak_phrase": 1, "leak_weight": 1}


@pytest.mark.holds("GATE-DATA-012")
def test_the_written_documents_are_the_near_misses(leak_data: tuple[Path, object]) -> None:
    data, _ = leak_data
    text = split_text(data, "train")
    for kept in NEAR_MISSES.values():
        assert kept in text
    for dropped in LEAKS.values():
        assert dropped not in text


def test_headers_in_an_assistant_answer_are_no_leak() -> None:
    """Chat data is checked in its first user turn: an answer full of markdown is kept."""
    turns = [("user", "How do I structure a report?"), ("assistant", headed(LEAK.max_headers + 3))]
    runner = FilterRunner(SETTINGS, ["leak"], {})
    assert runner.judge_turns("chat", turns) is None
    pasted = [("user", headed(LEAK.max_headers + 1)), ("assistant", "Sure.")]
    assert runner.judge_turns("chat", pasted) is not None


# Transcripts as people store them, each with a prompt pasted into the user's turn (dropped) or in
# the system turn where it belongs (kept). The user's turn is where the `{}` goes.
FORMATS = {
    "chatml": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\nOK.<|im_end|>\n",
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|><|start_header_id|>assistant"
    "<|end_header_id|>\n\nOK.<|eot_id|>",
    "llama2": "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n{} [/INST] OK. </s>",
    "mistral": "<s>[INST] {} [/INST] OK.</s>",
    "gemma": "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\nOK.<end_of_turn>\n",
    "phi3": "<|system|>\nBe brief.<|end|>\n<|user|>\n{}<|end|>\n<|assistant|>\nOK.<|end|>\n",
    "hh": "\n\nHuman: {}\n\nAssistant: OK.",
    "alpaca": "Below is an instruction that describes a task.\n\n### Instruction:\n{}\n\n### Response:\nOK.",
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_transcript_is_judged_in_its_first_user_turn_in_every_format(name: str) -> None:
    """A prompt pasted into the user's turn is a leak in every format people store chats in; the same
    prompt as the transcript's system turn, or as the answer, is not."""
    shape = FORMATS[name]
    assert judged(shape.format(phrase_turn(f"{PHRASE}."))) == "leak_phrase"
    assert judged(shape.format(f"{PHRASE}. Answer in French.")) is None  # a system line before a question
    assert judged(shape.format(headed(LEAK.max_headers + 1))) == "leak_headers"
    assert judged(shape.format("What is the capital of Peru?")) is None
    system_prompt = shape.replace("Be brief.", f"{PHRASE}.\n\n{headed(LEAK.max_headers + 1)}")
    answer = shape.replace("OK.", f"{PHRASE}.\n\n{headed(LEAK.max_headers + 1)}")
    for kept in (system_prompt, answer):
        assert judged(kept.format("What is the capital of Peru?")) is None


def test_a_first_user_turn_after_a_long_system_turn_is_judged() -> None:
    """An agent's system prompt runs for pages; the user's turn after it is found all the same."""
    system = corpora.english_text(0, sentences=400)
    assert len(system) > SETTINGS.diversity.window_chars
    assert (
        judged(FORMATS["chatml"].replace("Be brief.", system).format(phrase_turn(f"{PHRASE}.")))
        == "leak_phrase"
    )


def test_plain_words_mark_a_transcript_only_with_the_answer_after_them() -> None:
    """`Human:` or `### Instruction:` in a document is a transcript only when its answer's marker follows."""
    alone = f"Human: notes on the species.\n\n{headed(LEAK.max_headers + 1)}"
    assert judged(alone) is None
    assert judged(f"{alone}\n\nAssistant: Sure.") == "leak_headers"


# Pieces of ordinary documents: markdown, fingerprint phrases, code, a ChatML template string with
# its user turn a placeholder. None holds a user's words.
PIECES = [
    *(f"{'#' * depth} Section {letter}\n\n" for depth in (1, 2, 3) for letter in "ABCDEFG"),
    *(f"{phrase}\n" for phrase in LEAK.fingerprints),
    '{"role": "system", "content": "You are a helpful assistant."}\n',
    "template = '<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{prompt}<|im_end|>'\n",
    "def main() -> None:\n    pass\n",
    "Some prose about the weather, which was fine.\n\n",
]


@given(st.lists(st.sampled_from(PIECES), max_size=40))
@settings(max_examples=60)
def test_a_document_without_a_users_words_is_never_a_leak(pieces: list[str]) -> None:
    """Markdown, fingerprint phrases and code, in any number and order, are no leak unless they sit in
    a user's turn: a document holds one only between a user marker and its end."""
    text = "".join(pieces)
    assert judged(text) is None
    turn = leak.transcript_turn(text.encode(), LEAK)
    assert turn is None or "{prompt}" in turn  # only the template's placeholder is a user's turn here


@pytest.mark.holds("GATE-DATA-012", "GATE-DATA-014")
def test_docs_scripts_and_client_code_are_kept_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Corpora as users hold them: markdown docs, shell scripts with `# Section` comments, and code calling a
    chat model with a system prompt, each alone in a source; the leak filter drops none of them."""
    inputs = corpus(
        tmp_path,
        {
            "docs": {f"page{i}.md": corpora.markdown_doc(i) for i in range(12)},
            "scripts": {f"deploy{i}.sh": corpora.shell_script(i) for i in range(12)},
            "clients": {f"client{i}.py": corpora.chat_client(i) for i in range(12)},
        },
    )
    code, out, err = run_cli(
        capsys, "prepare", *inputs, "--out", str(tmp_path / "data"), "--val-fraction", "0"
    )
    assert code == 0, err
    for source in ("docs", "scripts", "clients"):
        assert f"{source}: 12 in, 12 out, 0.00% dropped (none)" in out


@pytest.mark.gate("GATE-DATA-012")
def test_a_leak_filter_off_by_one_is_caught_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant the bug: the header counter misses the last header, so one over the limit passes."""
    real = leak.count_headers
    monkeypatch.setattr(leak, "count_headers", lambda region, s: max(real(region, s) - 1, 0))
    inputs = corpus(tmp_path, {"web": {"a.txt": "plain text here"}})
    with pytest.raises(GateViolation, match=r"GATE-DATA-012.*headers_over_limit.*kept") as raised:
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0)
    assert raised.value.gate_id == "GATE-DATA-012"
    assert not (tmp_path / "data").exists()  # refused before DATA_DIR was touched


@pytest.mark.gate("GATE-DATA-012")
def test_a_leak_filter_that_judges_whole_documents_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the head region is the document's beginning, not the first user turn, so
    markdown answers, system turns, docs and code are judged as leaks."""
    monkeypatch.setattr(
        leak, "head_region", lambda data, s, head=None: (head or data.decode())[: s.head_chars]
    )
    inputs = corpus(tmp_path, {"web": {"a.txt": "plain text here"}})
    with pytest.raises(GateViolation, match=r"GATE-DATA-012.*markdown_in_answer.*dropped") as raised:
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0)
    for near_miss in ("system_prompt_in_system_turn", "markdown_document", "client_code"):
        assert f"near miss '{near_miss}" in str(raised.value)
    monkeypatch.undo()
    prepare_corpus(inputs, tmp_path / "benign", val_fraction=0)  # the first user turn only: it holds


@pytest.mark.gate("GATE-DATA-012")
def test_a_leak_filter_blind_to_a_transcript_format_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant the bug: only the first turn format of the settings is looked for, so a prompt pasted into
    a Llama or Anthropic transcript passes. The canaries in every format catch it before reading."""
    real = leak.transcript_turn
    monkeypatch.setattr(
        leak, "transcript_turn", lambda data, s: real(data, s.model_copy(update={"turns": s.turns[:1]}))
    )
    inputs = corpus(tmp_path, {"web": {"a.txt": "plain text here"}})
    with pytest.raises(GateViolation, match=r"GATE-DATA-012.*planted leak 'headers_over_limit in \[INST\]'"):
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0)
    monkeypatch.setattr(leak, "transcript_turn", real)
    prepare_corpus(inputs, tmp_path / "benign", val_fraction=0)


@pytest.mark.gate("GATE-DATA-012")
def test_the_judge_wants_planted_leaks_dropped_and_both_kinds_of_canary() -> None:
    kept_leak = {"canaries": [{"name": "a", "must_drop": True, "dropped": False}]}
    assert any("planted leak 'a' was kept" in p for p in judge("GATE-DATA-012", kept_leak))
    only_misses = {"canaries": [{"name": "b", "must_drop": False, "dropped": False}]}
    assert judge("GATE-DATA-012", only_misses) == ["the canaries need both planted leaks and near misses"]
    fine = {"canaries": [{"name": "a", "must_drop": True, "dropped": True}, only_misses["canaries"][0]]}
    assert judge("GATE-DATA-012", fine) == []


@pytest.mark.holds("GATE-DATA-012")
def test_canaries_follow_a_users_limits_in_every_format(tmp_path: Path) -> None:
    """A --filters file moves the limits; the canaries move with them and still hold, in every turn
    format of the settings and as chat examples."""
    path = settings_file(tmp_path, {"leak": {"max_headers": 2, "max_header_weight": 3.0}})
    runner = FilterRunner(load_settings(path), None, {})
    rows = {row["name"]: row for row in runner.canary_results()}
    assert all(row["dropped"] == row["must_drop"] for row in rows.values())
    for markers in LEAK.turns:
        assert rows[f"headers_over_limit in {markers.user.strip()}"]["reason"] == "leak_headers"
    assert rows["headers_over_limit as chat"]["reason"] == "leak_headers"
    assert not rows["markdown_document"]["dropped"] and not rows["client_code"]["dropped"]


@settings(max_examples=40)
@given(
    max_headers=st.integers(0, 6),
    max_header_weight=st.floats(0.05, 40.0),
    head_chars=st.integers(1, 4000),
    fingerprints=st.lists(st.sampled_from(list(LEAK.fingerprints)), max_size=3, unique=True),
    fingerprint_min_chars=st.integers(0, 200),
)
def test_the_canaries_planted_are_the_cases_the_contract_lists(
    max_headers: int,
    max_header_weight: float,
    head_chars: int,
    fingerprints: list[str],
    fingerprint_min_chars: int,
) -> None:
    """The rows GATE-DATA-012 judges, and what each must do, are those contracts.leak_canaries
    rebuilds from the settings a record keeps: the integrity check holds a record's rows to them."""
    leak_settings = LEAK.model_copy(
        update={
            "max_headers": max_headers,
            "max_header_weight": max_header_weight,
            "head_chars": head_chars,
            "fingerprints": fingerprints,
            "fingerprint_min_chars": fingerprint_min_chars,
        }
    )
    runner = FilterRunner(SETTINGS.model_copy(update={"leak": leak_settings}), None, {})
    rows = {row["name"]: row["must_drop"] for row in runner.canary_results()}
    assert rows == canary_rows(leak_settings.model_dump(mode="json"))


# -- GATE-DATA-013: every source filtered or waived --------------------------------------------


@pytest.mark.holds("GATE-DATA-013")
def test_a_pre_clean_source_is_filtered_all_the_same(tmp_path: Path) -> None:
    path = settings_file(tmp_path, {"sources": {"curated": {"pre_clean": True}}})
    inputs = corpus(
        tmp_path, {"curated": {"ok.txt": NEAR_MISSES["plain.txt"], "leak.txt": LEAKS["phrase.txt"]}}
    )
    manifest = prepare_corpus(inputs, tmp_path / "data", val_fraction=0, filter_settings=path)
    report = manifest.filters["curated"]
    assert report.pre_clean and report.waiver is None and report.filters
    assert report.dropped == {"leak_phrase": 1} and report.documents_out == 1


@pytest.mark.gate("GATE-DATA-013")
def test_a_silent_skip_list_for_pre_clean_sources_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant the bug: a source marked pre-clean gets no filters, and no waiver says why."""
    opened = FilterRunner.report

    def skipping(self: FilterRunner, source: str):  # type: ignore[no-untyped-def]
        report = opened(self, source)
        if report.pre_clean:
            report.filters = []
        return report

    monkeypatch.setattr(FilterRunner, "report", skipping)
    path = settings_file(tmp_path, {"sources": {"curated": {"pre_clean": True}}})
    inputs = corpus(tmp_path, {"curated": {"leak.txt": LEAKS["phrase.txt"]}})
    with pytest.raises(GateViolation, match=r"GATE-DATA-013.*'curated'.*pre-clean") as raised:
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0, filter_settings=path)
    assert raised.value.gate_id == "GATE-DATA-013"


@pytest.mark.holds("GATE-DATA-013", "GATE-DATA-014")
def test_a_waived_source_is_recorded_with_its_reason(tmp_path: Path) -> None:
    inputs = corpus(tmp_path, {"curated": {"leak.txt": LEAKS["phrase.txt"]}, "web": {"ok.txt": "fine text"}})
    reason = "hand-checked prompt-injection test set"
    manifest = prepare_corpus(inputs, tmp_path / "data", val_fraction=0, no_filter={"curated": reason})
    assert manifest.filters["curated"].waiver == reason and manifest.filters["curated"].filters == []
    assert manifest.filters["curated"].documents_out == 1 == manifest.sources["curated"].documents
    assert manifest.filters["web"].waiver is None and manifest.filters["web"].filters


@pytest.mark.gate("GATE-DATA-013")
def test_the_judge_wants_a_reason_for_every_unfiltered_source() -> None:
    def row(filters: list[str], waiver: str | None) -> dict:
        canaries = {name: {"planted": 1, "dropped": 1} for name in filters}
        source = {
            "filters": filters,
            "waiver": waiver,
            "pre_clean": True,
            "documents_in": 1,
            "canaries": canaries,
        }
        return {"sources": {"s": source}}

    assert judge("GATE-DATA-013", row([], None)) == [
        "source 's' was not filtered and has no waiver (marked pre-clean, which waives nothing)"
    ]
    assert judge("GATE-DATA-013", row([], " ")) == ["source 's' is waived without a reason"]
    assert judge("GATE-DATA-013", row([], "checked by hand")) == []
    assert judge("GATE-DATA-013", row(["leak"], None)) == []


@pytest.mark.gate("GATE-DATA-013")
def test_the_judge_wants_every_filter_proven_by_its_canaries() -> None:
    """A filter named but with a canary kept, none planted, or no tally at all is not proven to have run."""

    def row(tallies: dict, documents_in: int = 5) -> dict:
        filters = ["leak", "script"]
        source = {"filters": filters, "waiver": None, "pre_clean": False, "documents_in": documents_in}
        return {"sources": {"s": source | {"canaries": tallies}}}

    proven = {"leak": {"planted": 3, "dropped": 3}, "script": {"planted": 1, "dropped": 1}}
    assert judge("GATE-DATA-013", row(proven)) == []
    kept = proven | {"script": {"planted": 1, "dropped": 0}}
    assert judge("GATE-DATA-013", row(kept)) == [
        "source 's': filter 'script' dropped 0 of its 1 canaries: "
        "it did not run over every document of the source"
    ]
    assert (
        "no canary of filter 'script' was planted"
        in judge("GATE-DATA-013", row(proven | {"script": {"planted": 0, "dropped": 0}}))[0]
    )
    assert "filter 'script' has no canary" in judge("GATE-DATA-013", row({"leak": proven["leak"]}))[0]
    assert judge("GATE-DATA-013", row({}, documents_in=0)) == []  # no document, nothing to prove


# -- GATE-DATA-014: the drop counts add up ------------------------------------------------------


@pytest.mark.gate("GATE-DATA-014")
def test_a_drop_that_is_never_counted_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the bug: the books take one document in and never count it out or dropped."""
    counted = FilterRunner.count
    lost = {"count": 0}

    def leaky(self: FilterRunner, source: str, reason: str | None, *args: object, **kwargs: object) -> None:
        if reason is None and not lost["count"]:
            lost["count"] += 1
            self.report(source).documents_in += 1
            return
        counted(self, source, reason, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(FilterRunner, "count", leaky)
    inputs = corpus(tmp_path, {"web": {"a.txt": "drop me quietly", "b.txt": "keep me", "c.txt": "and me"}})
    with pytest.raises(GateViolation, match=r"GATE-DATA-014.*'web': 3 document\(s\) in ≠ 2 out \+ 0 dropped"):
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0)


@pytest.mark.gate("GATE-DATA-014")
def test_a_drop_missing_from_the_drop_log_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the bug: the report counts a drop that the drop log never gets; with the log whole it holds."""
    inputs = corpus(tmp_path, {"web": LEAKS | {"ok.txt": NEAR_MISSES["plain.txt"]}})
    manifest = prepare_corpus(inputs, tmp_path / "benign", val_fraction=0)
    assert recount(tmp_path / "benign" / DROP_LOG_FILE) == {"web": manifest.filters["web"].dropped}
    added = DropLog.add
    monkeypatch.setattr(
        DropLog,
        "add",
        lambda self, source, reason, sha, where: (
            None if reason == "leak_phrase" else added(self, source, reason, sha, where)
        ),
    )
    with pytest.raises(
        GateViolation, match=r"GATE-DATA-014.*'web': the report drops .*'leak_phrase': 1.* but the drop log"
    ):
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0)


@pytest.mark.gate("GATE-DATA-014")
def test_verify_recounts_the_drop_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A drop log edited after the prepare, its sha256 in the manifest edited to match: --verify
    catches it."""
    inputs = corpus(tmp_path, {"web": LEAKS | {"ok.txt": NEAR_MISSES["plain.txt"]}})
    data = tmp_path / "data"
    prepare_corpus(inputs, data, val_fraction=0)
    assert main(["prepare", "--verify", "--out", str(data)]) == 0
    log = data / DROP_LOG_FILE
    log.write_text("".join(log.read_text().splitlines(keepends=True)[1:]))
    raw = json.loads((data / "manifest.json").read_text())
    raw["drop_log"] |= {"sha256": sha256_file(log), "bytes": log.stat().st_size}
    (data / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")
    capsys.readouterr()
    assert main(["prepare", "--verify", "--out", str(data)]) == EXIT_GATE
    assert "GATE-DATA-014" in capsys.readouterr().err


@pytest.mark.gate("GATE-DATA-014")
def test_kept_documents_must_be_the_written_ones() -> None:
    """One document more or fewer written than kept fires; the exact count holds."""
    runner = FilterRunner(SETTINGS, None, {})
    for text in ("one document", "another document"):
        runner.keep("web", document_identity(text.encode()), document(text))
    assert counts_outcome(runner.as_dict(), {"web": 2}, {}).ok
    for written in (1, 3):
        with pytest.raises(
            GateViolation, match=f"GATE-DATA-014.*2 document\\(s\\) kept but {written} written"
        ):
            check_recorded(runner.as_dict(), {"web": written}, {}, {})


@given(st.lists(st.sampled_from([*NEAR_MISSES.values(), *LEAKS.values(), "x" * 40]), max_size=12))
@settings(max_examples=25)
@pytest.mark.holds("GATE-DATA-014")
def test_in_is_out_plus_drops_for_any_mix(texts: list[str]) -> None:
    runner = FilterRunner(SETTINGS, [*SETTINGS.default, "dedup"], {})
    runner.set_scripts({"web": named(["LATIN"])})
    kept = sum(runner.keep("web", document_identity(t.encode()), document(t)) for t in texts)
    logged = {name: report["dropped"] for name, report in runner.as_dict().items()}
    assert counts_outcome(runner.as_dict(), {"web": kept} if texts else {}, logged).ok


# -- the filters themselves, each at its limit -------------------------------------------------


def separated(root: Path, source: str, texts: list[str]) -> list[str]:
    """One file of `texts` between `<|endoftext|>` separators: documents a separator made."""
    (root / source).mkdir(parents=True)
    (root / source / "docs.txt").write_text("<|endoftext|>".join(texts), encoding="utf-8")
    return [f"{source}={root / source}"]


SEPARATED = Layout(doc_sep="<|endoftext|>")


def test_oversize_at_the_limit_is_kept_and_one_byte_over_dropped(tmp_path: Path) -> None:
    limit = 200
    path = settings_file(tmp_path, {"oversize": {"max_bytes": limit}})
    texts = ["a b c d " * (limit // 8), "a b c d " * (limit // 8) + "e"]
    inputs = separated(tmp_path, "web", texts)
    manifest = prepare_corpus(
        inputs, tmp_path / "data", filter_settings=path, val_fraction=0, layout=SEPARATED
    )
    assert manifest.filters["web"].dropped == {"oversize": 1} and manifest.filters["web"].documents_out == 1


def test_a_file_read_whole_is_cut_by_size_not_judged_by_oversize(tmp_path: Path) -> None:
    """Oversize judges what a separator made; a file without one is cut into --doc-bytes documents,
    which put back together are the file."""
    limit = 200
    path = settings_file(tmp_path, {"oversize": {"max_bytes": limit}})
    text = "".join(f"line {i} of a file that has no separator\n" for i in range(40))
    inputs = corpus(tmp_path, {"web": {"whole.txt": text}})
    layout = Layout(doc_bytes=300)
    manifest = prepare_corpus(inputs, tmp_path / "data", filter_settings=path, val_fraction=0, layout=layout)
    report = manifest.filters["web"]
    tokenizer = load_tokenizer(tmp_path / "data")
    pieces = [
        tokenizer.decode(ids.tolist())
        for ids in split_documents(tmp_path / "data", "train", tokenizer.eot_id)
    ]
    assert "".join(pieces) == text and len(pieces) > len(text) // 300  # in order, they are the file
    assert all(piece.endswith("\n") and len(piece) <= 300 for piece in pieces)  # cut at line ends
    assert report.dropped == {} and report.documents_out == len(pieces) == manifest.sources["web"].documents


def test_a_long_unread_document_is_judged_on_its_first_window_and_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document longer than prepare holds whole (HELD_DOCUMENT_BYTES, made small here) is never
    held: oversize still applies to it, and so do the filters that read the first window."""
    batch = WorkingSet(MIN_WORKING_SET).batch_bytes
    monkeypatch.setattr(prepare_tasks, "HELD_DOCUMENT_BYTES", batch)
    path = settings_file(tmp_path, {"oversize": {"max_bytes": 2 * batch}})
    long_text = " ".join(
        f"word{i}" for i in range(batch * 3 // 2 // 8)
    )  # 1.5 batches: unread, under the limit
    loop = "region " * (batch * 3 // 2 // 7)  # as long, but a loop
    inputs = separated(tmp_path, "web", [long_text, long_text + long_text + long_text, loop, "short"])
    manifest = prepare_corpus(
        inputs,
        tmp_path / "data",
        filter_settings=path,
        val_fraction=0,
        working_set=MIN_WORKING_SET,
        layout=SEPARATED,
    )
    report = manifest.filters["web"]
    assert (
        report.dropped == {"oversize": 1, "low_diversity": 1}
        and report.unread == 3
        and report.documents_out == 2
    )


def test_a_repeated_line_is_dropped_once_long_enough_to_tell() -> None:
    screen = FilterRunner(SETTINGS, ["diversity"], {}).screen
    loop = "region " * 1000  # the 120M run's garbage
    short = loop[: SETTINGS.diversity.min_chars - 1].encode()
    enough = loop[: SETTINGS.diversity.min_chars].encode()
    assert screen.reason("web", Doc(short)) is None
    assert screen.reason("web", Doc(enough)) == "low_diversity"


@pytest.mark.parametrize("text", [five_words(1), loop("The quick brown fox jumps over the lazy dog. ")])
def test_diversity_at_the_limit_is_kept_and_just_below_dropped(text: str, tmp_path: Path) -> None:
    """A window compressing to exactly min_compression_ratio is kept; with the limit a hair above, dropped."""
    ratio = diversity_score(text, SETTINGS.diversity)
    for limit, expected in ((ratio, None), (ratio + 1e-9, "low_diversity")):
        path = settings_file(tmp_path, {"diversity": {"min_compression_ratio": limit}})
        screen = FilterRunner(load_settings(path), ["diversity"], {}).screen
        assert screen.reason("web", document(text)) == expected


def test_script_share_at_the_limit_is_kept_and_below_dropped() -> None:
    runner = FilterRunner(SETTINGS, ["script"], {})
    runner.set_scripts({"web": named(["LATIN"])})
    letters = max(SETTINGS.script.min_letters, 100)
    latin = round(letters * SETTINGS.script.min_share)
    at = "a" * latin + "д" * (letters - latin)
    below = "a" * (latin - 1) + "д" * (letters - latin + 1)
    assert runner.screen.reason("web", document(at)) is None
    assert runner.screen.reason("web", document(below)) == "script_mismatch"
    few = "д" * (SETTINGS.script.min_letters - 1)
    assert runner.screen.reason("web", document(few)) is None  # too few letters to tell
    assert runner.screen.reason("web", document(below, code=True)) is None  # code is not judged


@given(st.text(max_size=200))
@settings(max_examples=80)
def test_the_script_table_counts_as_the_plain_count_does(text: str) -> None:
    """The code-point table behind letter_counts counts every letter and mark, and every U+FFFD, as
    contracts.filter_rules counts them one character at a time (what GATE-DATA-013 rechecks with)."""
    letters, replaced = letters_by_script(text)
    assert letter_counts(text).scripts == letters and letter_counts(text).replaced == replaced


def test_letters_count_by_their_unicode_script_not_their_name() -> None:
    """K (KELVIN SIGN) is Latin and a modifier letter is its script's; ʼ, µ and the kana length
    mark, of no script of their own, count with the letter before them; Tai Le and Tai Viet are
    two scripts, Tangut one with a name. None of these is a script named by a word of its name."""
    assert script_of("\u212a") == script_of("\u02b0") == "LATIN" and script_of("\u02bc") is None
    assert letter_counts("під\u02bcїзд").scripts == {"CYRILLIC": 7}
    assert letter_counts("m\u00b5 \u00b5").scripts == {"LATIN": 2}  # µ after no letter: nothing
    assert letter_counts("コーヒー").scripts == {"KATAKANA": 4}
    assert script_of("\u1950") == "TAI LE" and script_of("\uaa80") == "TAI VIET"
    assert script_of("\U00017000") == "TANGUT"
    assert {"KELVIN", "MODIFIER", "INFORMATION", "TAI", "NEW", "UNKNOWN"}.isdisjoint(
        alphabets(beyond_bmp=True)
    )


def test_marks_count_with_their_script() -> None:
    """Hindi's vowel signs are marks (category M), not letters: they count as Devanagari, and a combining
    accent counts with the letter before it, so decomposed text counts as its composed form does."""
    hindi = "हिन्दी"  # four letters and two signs
    assert letter_counts(hindi).scripts == {"DEVANAGARI": len(hindi)}
    composed = "café crème"
    decomposed = unicodedata.normalize("NFD", composed)
    assert letter_counts(decomposed).scripts == {"LATIN": len(decomposed) - 1}  # all but the space
    assert letter_counts("\u0301 x").scripts == {"LATIN": 1}  # a mark after no letter counts for nothing


def test_japanese_and_korean_are_each_one_writing_system() -> None:
    """Kanji, hiragana and katakana are one writing system; hangul with hanja another; ideographs alone
    are Chinese."""
    assert main_system(letter_counts(corpora.japanese_text(0)).scripts) == "JAPANESE"
    hangul = corpora.alphabet_text("hangul", 0)
    assert main_system(letter_counts(hangul + "漢字").scripts) == "KOREAN"
    assert main_system(letter_counts(corpora.cjk_text(0)).scripts) == "CJK"


def measured(counts: list[dict[str, int]]) -> Held:
    """What the script filter keeps in a source of documents with these letter counts."""
    letters = SourceLetters()
    for one in counts:
        letters.add("web", one, SETTINGS.script)
    return letters.held(SETTINGS.script)["web"]


def test_a_source_is_in_one_system_from_main_share_of_its_documents() -> None:
    """A source whose documents are written in one system in main_share of them is in that system, and
    the rest is dropped; one document fewer and it is multilingual: every script found is kept."""
    share, total = SETTINGS.script.main_share, 40
    at = math.ceil(share * total)
    latin, greek = {"LATIN": 100}, {"GREEK": 100}
    single = measured([latin] * at + [greek] * (total - at))
    assert single == Held(("LATIN",), frozenset({"LATIN"}))
    several = measured([latin] * (at - 1) + [greek] * (total - at + 1))
    assert several.multilingual and several.scripts == {"GREEK", "LATIN"}
    # A document is written in a system when main_share of its letters are in it: translation files
    # whose every line mixes keys in Latin with text in another script make a source multilingual.
    mixed = {"LATIN": 50, "TAMIL": 50}
    assert measured([latin] * (at - 1) + [mixed] * (total - at + 1)).multilingual
    assert measured([{"LATIN": 100, "HIRAGANA": 1}] * total) == Held(("LATIN",), frozenset({"LATIN"}))
    assert measured([{"LATIN": SETTINGS.script.min_letters - 1}] * total) == Held()  # nothing to judge


def test_a_language_a_mostly_latin_source_holds_in_earnest_is_kept_and_a_stray_dropped() -> None:
    """A user's case: a man-page tree in twenty languages, Latin in over 90 % of its
    pages, lost every Japanese, Korean and Cyrillic page as a script mismatch. A system of the
    minority that is the main one of min_documents documents is held beside the main one (their
    markup may keep them under main_share); one document fewer and it is a stray the filter drops."""
    share, least = SETTINGS.script.main_share, SETTINGS.script.min_documents
    latin, cyrillic, kana = {"LATIN": 100}, {"CYRILLIC": 70, "LATIN": 30}, {"HIRAGANA": 60, "CJK": 40}
    minority = [cyrillic] * least + [kana] * (least - 1)
    total = math.ceil(len(minority) / (1 - share)) + 1  # the minority within 1 - main_share
    held = measured([latin] * (total - len(minority)) + minority)
    assert held.names == ("LATIN", "CYRILLIC") and not held.multilingual
    assert held.scripts == {"LATIN", "CYRILLIC"}  # Japanese, one document short, is not held
    kept = [mismatch(doc, held, SETTINGS.script) for doc in (latin, cyrillic, kana)]
    assert kept == [False, False, True]


@pytest.mark.holds("GATE-DATA-013", "GATE-DATA-015")
@pytest.mark.parametrize(
    "scripts",
    [
        ["latin", "cyrillic", "greek", "armenian", "georgian"],  # a corpus of five scripts
        [
            "latin",
            "cyrillic",
            "greek",
            "armenian",
            "georgian",
            "hebrew",
            "thai",
            "hangul",
            "tamil",
            "ethiopic",
            "arabic",
        ],
    ],
)
def test_a_multilingual_source_is_kept_whole_and_its_script_canary_dropped(
    scripts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Five documents in each of many alphabets in one directory: every document is kept, and the
    script filter's canary, in a script none of them is in, proves it ran (the canary once
    fell back to Greek and GATE-DATA-013 fired on good data)."""
    texts = {f"{name}{i}.txt": corpora.alphabet_text(name, i) for name in scripts for i in range(5)}
    inputs = corpus(tmp_path, {"main": texts | {"ja0.txt": corpora.japanese_text(0)}})
    code, out, err = run_cli(
        capsys, "prepare", *inputs, "--out", str(tmp_path / "data"), "--val-fraction", "0"
    )
    assert code == 0, err
    report = load_manifest(tmp_path / "data").filters["main"]
    assert report.documents_out == report.documents_in == len(texts) + 1 and report.multilingual
    assert report.canaries["script"] == {"planted": 1, "dropped": 1}
    assert "scripts kept: every script found, multilingual (" in out and "warning GATE" not in out
    assert "lost all" not in out


@given(st.sets(st.sampled_from(sorted(alphabets())), max_size=60))
@settings(max_examples=40)
def test_the_script_canary_is_foreign_to_whatever_a_source_holds(held: set[str]) -> None:
    """Whatever scripts a source holds, its script canary is written in another one, and dropped."""
    runner = FilterRunner(SETTINGS, ["script"], {})
    runner.set_scripts({"web": Held(tuple(sorted(held)), frozenset(held), multilingual=True)})
    (canary,) = runner.screen.canaries("web")
    assert canaries.foreign_script(runner.screen.scripts_of("web")) not in held
    assert runner.screen.reason("web", Doc(canary.data)) == "script_mismatch"


def test_a_source_holding_every_script_of_the_bmp_gets_a_canary_from_beyond_it() -> None:
    held = frozenset(alphabets())
    runner = FilterRunner(SETTINGS, ["script"], {})
    runner.set_scripts({"web": Held(tuple(sorted(held)), held, multilingual=True)})
    (canary,) = runner.screen.canaries("web")
    assert runner.screen.reason("web", Doc(canary.data)) == "script_mismatch"


@pytest.mark.gate("GATE-DATA-013")
def test_a_script_canary_in_a_script_the_source_holds_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the canary falls back to Greek in a source that holds Greek. The filter
    cannot drop it, and GATE-DATA-013 says so; the canary chosen against the source passes."""
    texts = {
        f"{name}{i}.txt": corpora.alphabet_text(name, i) for name in ("latin", "greek") for i in range(5)
    }
    inputs = corpus(tmp_path, {"main": texts})
    prepare_corpus(inputs, tmp_path / "benign", val_fraction=0)
    monkeypatch.setattr(canaries, "foreign_script", lambda held: "GREEK")
    with pytest.raises(GateViolation, match=r"GATE-DATA-013.*'main': filter 'script' dropped 0 of its 1"):
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0)


def test_a_document_is_judged_by_letters_spread_over_all_of_it(tmp_path: Path) -> None:
    """A Russian chapter that opens with a long English epigraph is Russian; an English document in the
    Russian source is dropped. The sample of a document too long to hold is the same bytes, read from
    disk, as that of the document held."""
    russian = [corpora.cyrillic_text(i, sentences=200) for i in range(30)]
    epigraph = corpora.english_text(99, sentences=400)
    assert len(epigraph.encode()) > SETTINGS.sample.bytes  # the document's whole first window is English
    chapter = epigraph + corpora.cyrillic_text(99, sentences=1000)
    texts = {f"ch{i}.txt": text for i, text in enumerate(russian)}
    texts |= {"opening.txt": chapter, "english.txt": corpora.english_text(98, 200)}
    manifest = prepare_corpus(corpus(tmp_path, {"novel": texts}), tmp_path / "data", val_fraction=0)
    report = manifest.filters["novel"]
    assert report.scripts == ["CYRILLIC"] and report.dropped == {"script_mismatch": 1}
    assert report.examples["script_mismatch"].startswith("english.txt")
    data = (epigraph + russian[1]).encode()
    ranges = spans(len(data), SETTINGS.sample)
    assert sample_of(data, SETTINGS.sample) == sample_text(data[a:b] for a, b in ranges)
    assert len(ranges) == SETTINGS.sample.spans and ranges[-1][1] == len(data)


@pytest.mark.holds("GATE-DATA-013", "GATE-DATA-014")
def test_code_is_not_judged_by_the_language_of_its_comments(tmp_path: Path) -> None:
    """Python files with Chinese docstrings in an English source are kept; the same text saved as a
    text file is a Chinese document there, and dropped."""
    chinese = corpora.cjk_text(0, sentences=400)
    commented = f'"""{chinese}"""\n\n{corpora.python_code(0)}'
    texts = {f"doc{i}.txt": corpora.english_text(i) for i in range(30)}
    texts |= {"helpers.py": commented, "notes.txt": commented}
    manifest = prepare_corpus(corpus(tmp_path, {"web": texts}), tmp_path / "data", val_fraction=0)
    report = manifest.filters["web"]
    assert report.dropped == {"script_mismatch": 1} and report.examples["script_mismatch"].startswith(
        "notes.txt"
    )


# -- encoding: text decoded with the wrong encoding ------------------------------------------------


def test_replacement_characters_at_the_limit_are_kept_and_past_it_dropped() -> None:
    screen = FilterRunner(SETTINGS, ["encoding"], {}).screen
    total = max(SETTINGS.encoding.min_letters, 100)
    replaced = math.floor(total * SETTINGS.encoding.max_replaced_share)
    at = REPLACEMENT_CHARACTER * replaced + "a" * (total - replaced)
    past = REPLACEMENT_CHARACTER * (replaced + 1) + "a" * (total - replaced - 1)
    assert screen.reason("web", document(at)) is None
    assert screen.reason("web", document(past)) == "mis_encoded"
    few = REPLACEMENT_CHARACTER * (SETTINGS.encoding.min_letters - 1)
    assert screen.reason("web", document(few)) is None  # too few to tell


@pytest.mark.holds("GATE-DATA-013", "GATE-DATA-014")
def test_a_file_in_another_encoding_is_dropped_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """cp1251 Russian read as UTF-8 is U+FFFD where its letters were: dropped as mis_encoded, the file
    named, and the fix is to convert it. Latin-1 French loses a few accents and is kept."""
    root = tmp_path / "in"
    root.mkdir()
    for i in range(6):
        (root / f"en{i}.txt").write_text(corpora.english_text(i), encoding="utf-8")
    (root / "ru.txt").write_bytes(corpora.cyrillic_text(0).encode("cp1251"))
    (root / "fr.txt").write_bytes((corpora.english_text(7) + " café crème été").encode("latin-1"))
    code, out, err = run_cli(
        capsys, "prepare", str(root), "--out", str(tmp_path / "data"), "--val-fraction", "0"
    )
    assert code == 0, err
    assert "main: 8 in, 7 out, 12.50% dropped (mis_encoded 1)" in out
    assert "2 file(s) had bytes that are not UTF-8, read as U+FFFD: fr.txt; ru.txt" in caplog.text
    assert "convert such files to UTF-8 (iconv -f ENCODING -t utf-8 FILE" in caplog.text
    example = load_manifest(tmp_path / "data").filters["main"].examples["mis_encoded"]
    assert example.startswith("ru.txt: '" + REPLACEMENT_CHARACTER)


def test_exact_and_near_duplicates_are_dropped_and_distinct_texts_kept() -> None:
    base = " ".join(f"word{i}" for i in range(400))
    near = base.replace("word200", "wordXYZ")
    other = " ".join(f"term{i}" for i in range(400))
    runner = FilterRunner(SETTINGS, ["dedup"], {})
    texts = (base, base, near, other)
    found = [runner.verdict("web", document(t), document_identity(t.encode())).reason for t in texts]
    assert found == [None, "dedup_exact", "dedup_near", None]


@given(st.text(min_size=1, max_size=300))
@settings(max_examples=40)
def test_a_signature_is_a_function_of_the_text(text: str) -> None:
    index = NearDuplicates(SETTINGS.dedup)
    first, second = index.signature(text.encode()), NearDuplicates(SETTINGS.dedup).signature(text.encode())
    assert (first == second).all() and index.similarity(first, second) == 1.0


# -- the command line ----------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    if code:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return code, out, err


@pytest.mark.holds("GATE-DATA-012", "GATE-DATA-013", "GATE-DATA-014")
def test_the_cli_prints_drops_and_files_a_prepare_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = corpus(tmp_path, {"web": NEAR_MISSES | LEAKS, "notes": {"a.txt": LEAKS["phrase.txt"]}})
    code, out, err = run_cli(
        capsys,
        "prepare",
        *inputs,
        "--out",
        str(tmp_path / "data"),
        "--val-fraction",
        "0",
        "--no-filter",
        "notes",
        "--reason",
        "kept on purpose",
        "--evidence-dir",
        str(tmp_path / "ledger"),
    )
    assert code == 0, err
    assert "web: 13 in, 10 out, 23.08% dropped (leak_headers 1, leak_phrase 1, leak_weight 1)" in out
    assert "notes: not filtered, waived: kept on purpose (1 document(s))" in out
    (record_path,) = (tmp_path / "ledger").glob("prepare-*/metadata.json")
    record = json.loads(record_path.read_text())
    verdicts = {g["id"]: g["verdict"] for g in record["gates"]}
    assert {verdicts[g] for g in ("GATE-DATA-012", "GATE-DATA-013", "GATE-DATA-014")} == {"PASS"}
    assert record["metrics"]["filters"]["web"]["dropped"]["leak_phrase"] == 1
    assert [a["path"] for a in record["artifacts"]] == ["manifest.json"]  # the per-source reports, raw
    assert check_record_truth(read_evidence(record_path), record_path.parent, load_spec()).violations == []
    page = "\n".join(drops_section(read_evidence(record_path)))  # the site's prepare-record section
    assert "## Filters" in page and "| 13 | 10 | 23.08 % |" in page and "waived: kept on purpose" in page


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--filter", "nope"], "unknown --filter 'nope'"),
        (["--no-filter", "web"], "1 --no-filter and 0 --reason"),
        (["--no-filter", "ghost", "--reason", "x"], "no input belongs to source 'ghost'"),
        (["--filters", "missing.yaml"], "does not exist"),
    ],
)
def test_bad_filter_options_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    inputs = corpus(tmp_path, {"web": {"a.txt": "text"}})
    args = [a if a != "missing.yaml" else str(tmp_path / a) for a in extra]
    code, _, err = run_cli(capsys, "prepare", *inputs, "--out", str(tmp_path / "data"), *args)
    assert code == EXIT_BAD_INPUT and message in err
    assert not (tmp_path / "data").exists()


def test_a_misspelt_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"leak\.max_header"):
        load_settings(settings_file(tmp_path, {"leak": {"max_header": 3}}))


def test_expected_names_unicode_scripts_and_writing_systems(tmp_path: Path) -> None:
    """`expected` takes scripts as letters are counted by (any case) and the writing systems; a
    language's name is no script, and is refused in words that name both kinds, not read as a
    script no letter is in (which would drop every document)."""
    given = load_settings(settings_file(tmp_path, {"script": {"expected": ["latin", "Tai Le", "japanese"]}}))
    assert given.script.expected == ["LATIN", "TAI LE", "JAPANESE"]
    with pytest.raises(
        BadInput, match=r"script\.expected: ENGLISH names no Unicode script nor writing system"
    ):
        load_settings(settings_file(tmp_path, {"script": {"expected": ["English"]}}))


@pytest.mark.holds("GATE-DATA-012", "GATE-DATA-014")
def test_chat_examples_are_checked_in_their_first_user_turn(tmp_path: Path) -> None:
    """Chat data is filtered too: a prompt pasted into the user turn is dropped, a markdown answer kept."""

    def chat(user: str, assistant: str) -> str:
        return json.dumps(
            {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}
        )

    shipped = (DATA / "chat_small.jsonl").read_text(encoding="utf-8").splitlines()
    planted = [
        chat(LEAKS["phrase.txt"], "I can't share that."),
        chat(headed(LEAK.max_headers + 1), "Done."),
        chat("How should I lay out a report?", headed(LEAK.max_headers + 3)),
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(shipped + planted) + "\n", encoding="utf-8")
    manifest = prepare_sft([path], tmp_path / "data", fmt="chat", pack_len=1024)
    report = manifest.filters["sft"]
    assert report.dropped == {"leak_headers": 1, "leak_phrase": 1}
    assert report.documents_out == len(shipped) + 1 == manifest.sources["sft"].documents


# -- every source through every filter: the canaries ----------------------------------------------


def leaky_corpus(root: Path) -> list[str]:
    """Ten transcripts with a system prompt pasted into the user's turn in a source
    of notes, and a clean source."""
    leaks = {f"leak{i}.txt": chatml(phrase_turn(f"Note {i}.\n{PHRASE.title()}.")) for i in range(10)}
    notes = {f"note{i}.txt": f"A note on the weather, day {i}. It rained, then cleared." for i in range(10)}
    return corpus(root, {"web": leaks | notes, "books": {"b.txt": NEAR_MISSES["plain.txt"]}})


def skip_source(monkeypatch: pytest.MonkeyPatch, source: str, filter_name: str | None = None) -> None:
    """Planted: `source`'s documents skip its filters (or only `filter_name`), while
    its report still names them."""
    checks_of = Screen._checks_of

    def skipping(self: Screen, name: str) -> list:
        checks = checks_of(self, name)
        if name != source:
            return checks
        return [] if filter_name is None else [c for c in checks if c.__name__ != CHECK_NAMES[filter_name]]

    monkeypatch.setattr(Screen, "_checks_of", skipping)


CHECK_NAMES = {
    "leak": "leaked",
    "oversize": "oversize",
    "encoding": "garbled",
    "diversity": "repetitive",
    "script": "foreign",
}


@pytest.mark.gate("GATE-DATA-013")
def test_a_source_whose_filtering_is_skipped_stops_the_prepare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """That plant through the real CLI: exit 3 naming the gate, nothing published; the same
    command unmutated drops the ten leaks and exits 0."""
    inputs = leaky_corpus(tmp_path)
    benign = run_cli(capsys, "prepare", *inputs, "--out", str(tmp_path / "benign"), "--val-fraction", "0")
    assert benign[0] == 0 and "web: 20 in, 10 out, 50.00% dropped (leak_phrase 10)" in benign[1]
    skip_source(monkeypatch, "web")
    code, _, err = run_cli(capsys, "prepare", *inputs, "--out", str(tmp_path / "data"), "--val-fraction", "0")
    assert code == EXIT_GATE and "GATE-DATA-013" in err
    assert (
        f"source 'web': filter 'leak' dropped 0 of its {LEAK_CANARIES} canaries" in err
        and "source 'books'" not in err
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.gate("GATE-DATA-012")
def test_leak_canaries_kept_in_a_source_fire_the_leak_gate() -> None:
    """Once the corpus is read, a source the leak filter runs on must have had its planted leaks
    dropped by it; one kept, or none planted, fires; a source with no document has nothing to prove."""
    runner = FilterRunner(SETTINGS, None, {})
    for canary in runner.screen.canaries("web"):
        runner.count_canary("web", canary, "leak_phrase" if canary.filter == "leak" else None)
    runner.report("web").documents_in = 1
    assert stream_canaries_outcome(runner).ok
    runner.report("web").canaries["leak"]["dropped"] -= 1
    assert (
        f"source 'web': filter 'leak' dropped {LEAK_CANARIES - 1} of its {LEAK_CANARIES} canaries"
        in stream_canaries_outcome(runner).message
    )
    runner.report("web").canaries.pop("leak")
    assert "filter 'leak' has no canary" in stream_canaries_outcome(runner).message
    runner.report("web").documents_in = 0
    assert stream_canaries_outcome(runner).ok


@pytest.mark.gate("GATE-DATA-013")
@pytest.mark.parametrize("filter_name", ["oversize", "encoding", "diversity", "script"])
def test_one_filter_skipped_for_one_source_is_caught(
    filter_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One filter left out for one source fires GATE-DATA-013 naming both; the other source is fine."""
    inputs = leaky_corpus(tmp_path)
    prepare_corpus(inputs, tmp_path / "benign", val_fraction=0)
    skip_source(monkeypatch, "web", filter_name)
    with pytest.raises(
        GateViolation, match=f"GATE-DATA-013.*'web': filter '{filter_name}' dropped 0 of its 1"
    ):
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0)


@pytest.mark.holds("GATE-DATA-013")
def test_canaries_are_counted_apart_and_never_written(tmp_path: Path) -> None:
    manifest = prepare_corpus(leaky_corpus(tmp_path), tmp_path / "data", val_fraction=0)
    web = manifest.filters["web"]
    assert web.documents_in == 20 and web.dropped == {"leak_phrase": 10}  # the canaries are not in it
    assert web.canaries == {
        "diversity": {"planted": 1, "dropped": 1},
        "encoding": {"planted": 1, "dropped": 1},
        "leak": {"planted": LEAK_CANARIES, "dropped": LEAK_CANARIES},
        "oversize": {"planted": 1, "dropped": 1},
        "script": {"planted": 1, "dropped": 1},
    }
    runner = FilterRunner(SETTINGS, None, {})
    runner.set_scripts({"web": named(web.scripts or [])})
    text = split_text(tmp_path / "data", "train")
    assert not [c.name for c in runner.screen.canaries("web") if c.data.decode()[:40] in text]
    logged = recount(tmp_path / "data" / DROP_LOG_FILE)
    assert logged == {"web": {"leak_phrase": 10}}  # the drop log holds documents, not canaries


# -- GATE-DATA-015: a source that loses most of its documents is announced ------------------------


def losing(root: Path, dropped: int, total: int) -> list[str]:
    """A source of `total` documents of which `dropped` are loops the diversity filter drops."""
    texts = {f"loop{i}.txt": loop(f"loop {i} again and again. ") for i in range(dropped)}
    texts |= {f"prose{i}.txt": five_words(i) for i in range(total - dropped)}
    return corpus(root, {"web": texts})


@pytest.mark.gate("GATE-DATA-015")
def test_a_source_losing_more_than_the_share_is_a_warning_on_record_and_on_screen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Just beyond max_source_drop_share: WARN in the record, and the summary names the filter, an
    example and the fix; exactly at it: PASS and no warning. The prepare goes on either way."""
    share = load_spec().threshold("GATE-DATA-015", "max_source_drop_share")
    total = 20
    at = int(share * total)
    for dropped, verdict in ((at, "PASS"), (at + 1, "WARN")):
        root = tmp_path / f"d{dropped}"
        argv = ["prepare", *losing(root, dropped, total), "--out", str(root / "data"), "--val-fraction", "0"]
        code, out, err = run_cli(capsys, *argv, "--evidence-dir", str(root / "ledger"))
        assert code == 0, err
        (record,) = (root / "ledger").glob("prepare-*/metadata.json")
        verdicts = {g["id"]: g["verdict"] for g in json.loads(record.read_text())["gates"]}
        assert verdicts["GATE-DATA-015"] == verdict
        warned = f"warning GATE-DATA-015: source 'web' lost {dropped} of {total} document(s)"
        assert (warned in out) == (verdict == "WARN")
        if verdict == "WARN":
            assert "low_diversity" in out and "e.g. loop0.txt: 'loop 0 again and again." in out
            assert "the cause is the diversity filter" in out and '--no-filter web --reason "..."' in out


@pytest.mark.gate("GATE-DATA-015")
def test_the_judge_names_the_reasons_largest_first_and_an_example() -> None:
    share = load_spec().threshold("GATE-DATA-015", "max_source_drop_share")
    row = {
        "documents_in": 10,
        "dropped": {"oversize": 1, "script_mismatch": 5},
        "examples": {"script_mismatch": "a.txt: 'x'"},
    }
    assert judge("GATE-DATA-015", {"sources": {"s": row}}, {"max_source_drop_share": share}) == [
        "source 's' lost 6 of 10 document(s) (60.0% > 50%) to the filters: script_mismatch 5, oversize 1; "
        "e.g. a.txt: 'x'"
    ]
    row["dropped"] = {"script_mismatch": 5}
    assert judge("GATE-DATA-015", {"sources": {"s": row}}, {"max_source_drop_share": share}) == []


def test_the_working_set_never_changes_what_dedup_keeps(tmp_path: Path) -> None:
    """Documents longer than a small working set's batch (33 KiB against 26 KiB at 1 MiB) are
    judged whole and deduplicated like the rest: the manifest and shards are those of the default
    working set."""
    batch = WorkingSet(MIN_WORKING_SET).batch_bytes
    long_text = " ".join(f"mot{i}" for i in range(batch // 5))
    assert batch < len(long_text) < HELD_DOCUMENT_BYTES
    texts = [long_text] * 4 + [long_text + " fin"] * 2 + [corpora.english_text(i) for i in range(6)]
    inputs = separated(tmp_path, "web", texts)
    made = {
        size: prepare_corpus(
            inputs,
            tmp_path / f"data-{size}",
            filters=["dedup"],
            val_fraction=0,
            working_set=size,
            layout=SEPARATED,
        )
        for size in (MIN_WORKING_SET, DEFAULT_WORKING_SET)
    }
    small, default = made[MIN_WORKING_SET], made[DEFAULT_WORKING_SET]
    assert (
        small.filters["web"].dropped == default.filters["web"].dropped == {"dedup_exact": 3, "dedup_near": 2}
    )
    assert small.model_dump(exclude={"documents"}) == default.model_dump(exclude={"documents"})


def test_one_system_line_before_a_question_is_kept_and_a_pasted_prompt_is_not() -> None:
    """Gemma's chat format carries a system prompt at the head of the user's turn: one short line
    holding a fingerprint is kept (dropping it would lose every such example); two
    fingerprints, or one in a long turn, are a pasted prompt."""
    runner = FilterRunner(SETTINGS, ["leak"], {})
    question = "What is the capital of Peru?"
    cases = {
        f"{PHRASE.capitalize()}.\n\n{question}": True,
        f"{LEAK.fingerprints[0]}. {LEAK.fingerprints[2]} 2023-04.\n\n{question}": False,
        phrase_turn(f"{PHRASE.capitalize()}.\n\n{question}"): False,
    }
    for turn, kept in cases.items():
        assert (runner.judge_turns("chat", [("user", turn), ("assistant", "Lima.")]) is None) is kept, turn


# -- GATE-DATA-013's dedup check: each drop judged again by the exact Jaccard of byte shingles -----


def dup_corpus(root: Path) -> list[str]:
    """Thirty distinct English documents, four near copies (one word changed), six that share half a
    document with one of them (similar, not duplicates) and one exact copy."""
    docs = {f"doc{i:02d}.txt": corpora.english_text(i, 12) for i in range(30)}
    for i in range(4):
        text = docs[f"doc{i:02d}.txt"]
        word = text.split()[5]
        docs[f"near{i}.txt"] = text.replace(word, word.upper(), 1)
    for i in range(6):
        first, second = docs[f"doc{10 + i:02d}.txt"], corpora.english_text(100 + i, 12)
        docs[f"half{i}.txt"] = first[: len(first) // 2] + second[len(second) // 2 :]
    docs["copy.txt"] = docs["doc05.txt"]
    return corpus(root, {"web": docs})


def prepare_dedup(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> tuple[int, str, str]:
    inputs = dup_corpus(tmp_path / f"{name}-in")
    argv = ("prepare", *inputs, "--out", str(tmp_path / name), "--val-fraction", "0", "--filter", "dedup")
    return run_cli(capsys, *argv)


@pytest.mark.holds("GATE-DATA-013")
def test_a_correct_dedup_on_real_near_duplicates_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The four near copies and the exact copy are dropped, the half-shared documents kept, and each
    drop re-judged holds."""
    code, out, _ = prepare_dedup(tmp_path, capsys, "data")
    assert code == 0 and "web: 41 in, 36 out, 12.20% dropped (dedup_exact 1, dedup_near 4)" in out


def _one_byte_shingles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: every offset hashes the same slice, so a shingle depends on one byte."""
    hashes = dedup_module.shingle_hashes
    monkeypatch.setattr(dedup_module, "shingle_hashes", lambda data, width: hashes(data, 1))


def _reversed_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A candidate is dropped when its estimated similarity is at most min_jaccard, not at least."""
    similarity = NearDuplicates.similarity
    monkeypatch.setattr(
        NearDuplicates,
        "similarity",
        lambda self, a, b: 2 * self.settings.min_jaccard - similarity(self, a, b),
    )


def _band_taken_as_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands misused: a candidate that shares one band is a duplicate, whatever its signature says."""
    monkeypatch.setattr(NearDuplicates, "similarity", lambda self, a, b: 1.0)


def _short_exact_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact index keyed by one byte of the sha256, not its 64-bit prefix."""
    check = NearDuplicates.check_signature
    monkeypatch.setattr(
        NearDuplicates, "check_signature", lambda self, sha, sig: check(self, sha[:1].ljust(32, b"\0"), sig)
    )


@pytest.mark.gate("GATE-DATA-013")
@pytest.mark.parametrize(
    "plant", [_one_byte_shingles, _reversed_threshold, _band_taken_as_duplicate, _short_exact_key]
)
def test_wrong_dedup_drops_stop_the_prepare(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plant: Callable[[pytest.MonkeyPatch], None],
) -> None:
    """Each planted dedup bug drops documents that are not duplicates: exit 3 naming the gate, and
    nothing published."""
    plant(monkeypatch)
    code, _, err = prepare_dedup(tmp_path, capsys, "data")
    assert code == EXIT_GATE and "GATE-DATA-013" in err and "dedup: " in err
    assert not (tmp_path / "data").exists()


@pytest.mark.gate("GATE-DATA-013")
def test_a_near_drop_just_below_the_minhash_allowance_fires() -> None:
    """The re-judged similarity against min_jaccard less dedup_error_sds standard errors: just
    inside holds, just beyond fires."""
    runner = FilterRunner(SETTINGS, ["dedup"], {})
    base = corpora.english_text(3, 12)
    for text in (base, base.replace(base.split()[5], "CHANGED", 1)):
        runner.verdict("web", document(text), document_identity(text.encode()))
    measured = {"dedup": runner.rechecks.as_dict()}
    assert measured["dedup"]["near_drops"] == 1 and judge("GATE-DATA-013", measured) == []
    t = load_spec().gate("GATE-DATA-013").threshold_values
    dedup = SETTINGS.dedup
    floor = dedup.min_jaccard - minhash_allowance(dedup.min_jaccard, dedup.permutations, t["dedup_error_sds"])
    for jaccard, fires in ((floor + 1e-9, False), (floor - 1e-9, True)):
        measured["dedup"]["near"][0]["jaccard"] = jaccard
        assert bool(judge("GATE-DATA-013", measured)) is fires


def _drop_compared_with_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the recheck compares the dropped document with itself (Jaccard 1.0)."""
    monkeypatch.setattr(
        dedup_module, "compared_pair", lambda kept, data, width: compared_pair(data, data, width)
    )


class _NothingFound(dict[bytes, bytes]):
    """Held bytes no lookup finds, as when the kept document is looked up by the drop's own sha256."""

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        return default


def _kept_never_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recheck never finds the kept document, so every near drop is "unheld"."""
    init = Rechecks.__init__

    def planted(self: Rechecks, *args: object) -> None:
        init(self, *args)  # type: ignore[arg-type]
        self._held = _NothingFound()

    monkeypatch.setattr(Rechecks, "__init__", planted)


@pytest.mark.gate("GATE-DATA-013")
@pytest.mark.parametrize("plant", [_drop_compared_with_itself, _kept_never_found])
def test_a_recheck_that_judges_no_true_pair_stops_the_prepare(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plant: Callable[[pytest.MonkeyPatch], None],
) -> None:
    """The drops are right but their recheck is not: a pair that is one document twice, or near
    drops left unjudged as unheld though the kept bytes fit in dedup_held_bytes. Exit 3 naming the
    gate, and nothing published."""
    plant(monkeypatch)
    code, _, err = prepare_dedup(tmp_path, capsys, "data")
    assert code == EXIT_GATE and "GATE-DATA-013" in err and "dedup: " in err
    assert not (tmp_path / "data").exists()


@pytest.mark.gate("GATE-DATA-013")
def test_unheld_near_drops_are_excused_only_beyond_the_held_bytes() -> None:
    """A recheck holding nothing leaves the near drop unheld: that fires while the kept documents'
    bytes are at most dedup_held_bytes, and holds just beyond it."""
    t = load_spec().gate("GATE-DATA-013").threshold_values
    runner = FilterRunner(SETTINGS, ["dedup"], {})
    runner.rechecks = Rechecks(SETTINGS.dedup, int(t["dedup_recheck_pairs"]), 0)
    base = corpora.english_text(3, 12)
    for text in (base, base.replace(base.split()[5], "CHANGED", 1)):
        runner.verdict("web", document(text), document_identity(text.encode()))
    measured = {"dedup": runner.rechecks.as_dict()}
    assert measured["dedup"]["unheld"] == 1 and measured["dedup"]["kept_bytes"] == len(base.encode())
    assert judge("GATE-DATA-013", measured)
    for kept_bytes, fires in ((t["dedup_held_bytes"], True), (t["dedup_held_bytes"] + 1, False)):
        measured["dedup"]["kept_bytes"] = kept_bytes
        assert bool(judge("GATE-DATA-013", measured)) is fires


def test_the_exact_jaccard_counts_byte_windows() -> None:
    """Known values: 'abcdef' and 'abcdeg' share 'abcde' of their 5-byte windows {abcde, bcdef} and
    {abcde, bcdeg}; a text shorter than the width is one window; the allowance at the defaults is 0.28."""
    assert exact_jaccard(b"abcdef", b"abcdeg", 5) == 1 / 3
    assert exact_jaccard(b"abc", b"abc", 5) == 1.0 and exact_jaccard(b"abc", b"abd", 5) == 0.0
    assert math.isclose(minhash_allowance(0.8, 32, 4), 0.2828, abs_tol=1e-4)


# -- GATE-DATA-013's check rules: each measuring filter's drops measured again, held to its rule ---


def bilingual(seed: int, latin_share: float, letters: int = 2000) -> str:
    """A document of English words and Russian ones, `latin_share` of its letters Latin."""
    english, russian = corpora.english_text(seed, 60), corpora.cyrillic_text(seed, 60)
    latin_chars = [c for c in english if c.isalpha() or c == " "]
    cyrillic_chars = [c for c in russian if c.isalpha() or c == " "]
    latin = "".join(latin_chars)[: round(letters * latin_share)]
    cyrillic = "".join(cyrillic_chars)[: letters - len(latin)]
    return f"{latin}\n{cyrillic}\n"


def news_corpus(root: Path, shares: dict[str, float]) -> list[str]:
    """Thirty English documents and one bilingual document per entry, its share of Latin letters."""
    docs = {f"doc{i:02d}.txt": corpora.english_text(i, 12) for i in range(30)}
    docs |= {f"{name}.txt": bilingual(i, share) for i, (name, share) in enumerate(shares.items())}
    return corpus(root, {"news": docs})


def _main_share_for_min_share(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the script filter compares a document's share with main_share (0.9)."""
    monkeypatch.setattr(
        script_module,
        "mismatch",
        lambda scripts, held, s: filter_rules.script_mismatch(
            scripts, held.scripts, s.main_share, s.min_letters
        ),
    )


def _held_letters_halved(monkeypatch: pytest.MonkeyPatch) -> None:
    """The script filter counts half of a document's letters in its source's scripts as another's."""
    real = script_module.mismatch

    def halved(scripts: dict[str, int], held: Held, s: Any) -> bool:
        kept = sum(n for name, n in scripts.items() if name in held.scripts)
        others = {name: n for name, n in scripts.items() if name not in held.scripts}
        return real({**others, "LATIN": kept // 2, "OTHER": kept - kept // 2}, held, s)

    monkeypatch.setattr(script_module, "mismatch", halved)


@pytest.mark.gate("GATE-DATA-013")
@pytest.mark.parametrize("plant", [_main_share_for_min_share, _held_letters_halved])
def test_a_script_filter_off_its_rule_stops_the_prepare(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plant: Callable[[pytest.MonkeyPatch], None],
) -> None:
    """Documents 70 % Latin in an English source are dropped as script_mismatch by a filter off its
    rule: the drop log and the counts agree, and only the recheck, counting each drop's letters again,
    shows their share is over min_share. Exit 3 naming the gate."""
    plant(monkeypatch)
    inputs = news_corpus(tmp_path / "in", {"bilingual-a": 0.7, "bilingual-b": 0.7})
    code, _, err = run_cli(capsys, "prepare", *inputs, "--out", str(tmp_path / "data"), "--val-fraction", "0")
    assert code == EXIT_GATE and "GATE-DATA-013" in err and "script_mismatch drops measured again" in err, err
    assert not (tmp_path / "data").exists()


@pytest.mark.holds("GATE-DATA-013")
def test_documents_on_either_side_of_min_share_are_kept_and_dropped_by_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Just inside min_share is kept, just outside is dropped, and the drop measured again holds."""
    share = SETTINGS.script.min_share
    inputs = news_corpus(tmp_path / "in", {"inside": share + 0.01, "outside": share - 0.01})
    code, out, err = run_cli(
        capsys, "prepare", *inputs, "--out", str(tmp_path / "data"), "--val-fraction", "0"
    )
    assert code == 0, err
    assert "news: 32 in, 31 out" in out and "script_mismatch 1" in out


def _oversize_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The oversize filter drops a document of exactly max_bytes (>= for >)."""
    monkeypatch.setattr(size_module, "oversize", lambda length, s: length >= s.max_bytes)


def _encoding_half_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoding filter compares U+FFFD's share with half of max_replaced_share."""
    monkeypatch.setattr(
        encoding_module,
        "mis_encoded",
        lambda letters, s: filter_rules.mis_encoded(
            letters.total, letters.replaced, s.max_replaced_share / 2, s.min_letters
        ),
    )


def _diversity_without_its_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The diversity filter drops on the ratio alone, ten times min_compression_ratio, no probe asked."""
    monkeypatch.setattr(
        diversity_module,
        "low_diversity",
        lambda text, s: (
            len(text[: s.window_chars]) >= s.min_chars
            and filter_rules.compression_ratio(text[: s.window_chars].encode()) < 10 * s.min_compression_ratio
        ),
    )


RULES_MAX_BYTES = 8000  # oversize.max_bytes of the rules corpus's settings, above its other documents


def rules_corpus(root: Path) -> list[str]:
    """English documents and, for the filters the plants above move: a separated document of exactly
    oversize.max_bytes (a --filters file makes it small), one with U+FFFD for a third of its letters,
    and repetitive but no loop (five words at random)."""
    max_bytes = RULES_MAX_BYTES
    english = [corpora.english_text(i, 12) for i in range(20)]
    at_limit = (corpora.english_text(99, 60) * 8)[:max_bytes].strip()
    at_limit += "x" * (max_bytes - len(at_limit.encode()))
    replaced = "".join(c if i % 3 else "\ufffd" for i, c in enumerate(corpora.english_text(98, 30)))
    docs = [*english, at_limit, replaced, five_words(7)]
    (root / "web").mkdir(parents=True)
    (root / "web" / "docs.txt").write_text("\n<|endoftext|>\n".join(docs), encoding="utf-8")
    return [f"web={root / 'web'}"]


@pytest.mark.gate("GATE-DATA-013")
@pytest.mark.parametrize(
    "plant", [_oversize_at_the_limit, _encoding_half_the_limit, _diversity_without_its_probes]
)
def test_a_measuring_filter_off_its_rule_stops_the_prepare(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    plant: Callable[[pytest.MonkeyPatch], None],
) -> None:
    """The oversize, encoding and diversity filters each moved off their rule drop a document their
    rule keeps; the recheck measures it again and names the reason. Without the plant it holds."""
    inputs = rules_corpus(tmp_path / "in")
    options = ["--doc-sep", "\\n<|endoftext|>\\n", "--val-fraction", "0"]
    options += ["--filters", str(settings_file(tmp_path, {"oversize": {"max_bytes": RULES_MAX_BYTES}}))]
    assert run_cli(capsys, "prepare", *inputs, "--out", str(tmp_path / "benign"), *options)[0] == 0
    plant(monkeypatch)
    code, _, err = run_cli(capsys, "prepare", *inputs, "--out", str(tmp_path / "data"), *options)
    assert code == EXIT_GATE and "GATE-DATA-013" in err and "drops measured again are no drop" in err, err


def _rules(reason: str, rows: list[dict[str, Any]], drops: int | None = None) -> dict[str, Any]:
    """GATE-DATA-013's rules values for `rows` measured again of `drops` drops for `reason`."""
    dropped = len(rows) if drops is None else drops
    return {
        "rules": {
            "settings": rule_settings(SETTINGS),
            "drops": {reason: dropped},
            "rechecked": {reason: rows},
            "held": {"web": ["LATIN"]},
        }
    }


@pytest.mark.gate("GATE-DATA-013")
def test_each_rule_holds_a_drop_just_beyond_its_limit_and_refuses_one_just_inside() -> None:
    """Each reason's drop measured again, just beyond the setting (a drop the rule makes: holds) and
    just inside it (no drop of the rule: fires)."""
    s = SETTINGS
    least = s.script.min_letters
    below, at = math.ceil(least * s.script.min_share) - 1, math.ceil(least * s.script.min_share)
    ratio = s.diversity.min_compression_ratio
    limit = s.leak.max_headers
    cases = {
        "script_mismatch": (
            {
                "source": "web",
                "letters": {"LATIN": below, "CYRILLIC": least - below},
                "replaced": 0,
                "code": False,
            },
            {"source": "web", "letters": {"LATIN": at, "CYRILLIC": least - at}, "replaced": 0, "code": False},
        ),
        "mis_encoded": (
            {"letters": {"LATIN": 20}, "replaced": 30, "code": False},
            {"letters": {"LATIN": 25}, "replaced": 25, "code": False},
        ),
        "low_diversity": (
            {"chars": s.diversity.min_chars, "repeats": True, "ratio": ratio - 1e-9},
            {"chars": s.diversity.min_chars, "repeats": True, "ratio": ratio},
        ),
        "oversize": (
            {"bytes": s.oversize.max_bytes + 1, "delimited": True},
            {"bytes": s.oversize.max_bytes, "delimited": True},
        ),
        "leak_headers": (
            {"turn": True, "headers": limit + 1, "chars": 40 * (limit + 1), "phrases": 0},
            {"turn": True, "headers": limit, "chars": 40 * limit, "phrases": 0},
        ),
    }
    for reason, (beyond, inside) in cases.items():
        assert judge("GATE-DATA-013", _rules(reason, [{"where": "a", **beyond}])) == [], reason
        assert judge("GATE-DATA-013", _rules(reason, [{"where": "a", **inside}])), reason


@pytest.mark.gate("GATE-DATA-013")
def test_the_recheck_takes_the_first_filter_recheck_docs_drops_of_each_reason() -> None:
    """As many drops measured again as there are, up to filter_recheck_docs: one fewer fires."""
    docs = int(load_spec().threshold("GATE-DATA-013", "filter_recheck_docs"))
    row = {"where": "a", "bytes": SETTINGS.oversize.max_bytes + 1, "delimited": True}
    assert judge("GATE-DATA-013", _rules("oversize", [row] * docs, docs + 5)) == []
    assert judge("GATE-DATA-013", _rules("oversize", [row] * (docs - 1), docs + 5))
    assert judge("GATE-DATA-013", _rules("oversize", [row] * 2, 3))


@given(st.text(max_size=300))
@settings(max_examples=120)
def test_the_plain_letter_count_is_the_filters_table(text: str) -> None:
    """contracts.filter_rules counts letters one character at a time through unicodedata; the filter
    through its table: the same letters by script and the same U+FFFD, marks and all."""
    letters, replaced = filter_rules.letters_by_script(text)
    assert (letters, replaced) == (letter_counts(text).scripts, letter_counts(text).replaced)
