"""Filters in `stack prepare` and their gates: GATE-DATA-012 (leaks dropped, near misses kept),
GATE-DATA-013 (every source filtered or waived), GATE-DATA-014 (drop counts add up).

Every limit a test plants at comes from the filter settings in force (stack/data/filters/
defaults.yaml, or a --filters file the test writes), never from a literal: a document at the
limit is kept and one just over it is dropped, so a detector off by one either way turns a test
red. The default limits themselves are pinned from both sides elsewhere: the default corpus loses
nothing to them (test_data_prepare), and the post-mortem's loop is dropped (test_data_postmortem).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from record_checks import check_record_truth
from site_filters import drops_section

from contracts.errors import EXIT_BAD_INPUT, BadInput, GateViolation
from contracts.evidence import read_evidence
from contracts.judges import judge
from contracts.spec import load_spec
from stack.cli import main
from stack.data.filters import leak
from stack.data.filters.dedup import NearDuplicates
from stack.data.filters.gates import check_reports, counts_outcome
from stack.data.filters.runner import FilterRunner
from stack.data.filters.settings import load_settings
from stack.data.prepare import prepare_corpus
from stack.data.sft_prepare import prepare_sft
from stack.data.split import content_sha256
from stack.data.working_set import MIN_WORKING_SET, WorkingSet
from stack.eval.texts import split_text

SETTINGS = load_settings()
LEAK = SETTINGS.leak


CANARIES = {name: text for name, (text, _head, _must_drop) in leak.canaries(LEAK).items()}


def headed(count: int) -> str:
    """A short prose text with `count` markdown headers (a leaked prompt's shape), under the weight limit."""
    return leak.prompt_like(count, 40 * count)


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


NEAR_MISSES = {
    "at-limit.txt": CANARIES["headers_at_limit"],
    "weight-at-limit.txt": CANARIES["weight_at_limit"],
    "url.txt": "The list lives at https://example.org/docs/api/v2/users/list/#/section/a/b today.",
    "code-comments.txt": "# Copyright The Authors\n# Licensed under the MIT License\n# See LICENSE\n"
    "# Helpers Module\n# More Notes Here\n# And Another Line\n\nx = 1\n",
    "plain.txt": "A note on the weather. It rained in the morning and cleared up by noon.",
}
LEAKS = {
    "over-limit.txt": CANARIES["headers_over_limit"],
    "weight-over-limit.txt": CANARIES["weight_over_limit"],
    "phrase.txt": f"Hello there.\n{LEAK.fingerprints[0].title()}. Answer the user.",
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
    text = "\n".join(content for _, content in turns)
    head = leak.first_user_turn(turns)
    assert runner.keep("chat", content_sha256(text.encode()), text.encode(), head=head)
    pasted = [("user", headed(LEAK.max_headers + 1)), ("assistant", "Sure.")]
    text = "\n".join(content for _, content in pasted)
    assert not runner.keep(
        "chat", content_sha256(text.encode()), text.encode(), head=leak.first_user_turn(pasted)
    )


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
def test_a_leak_filter_that_drops_markdown_answers_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant the bug: the head region is the whole text, not the first user turn."""
    monkeypatch.setattr(leak, "head_region", lambda text, s, head=None: text[: s.head_chars])
    inputs = corpus(tmp_path, {"web": {"a.txt": "plain text here"}})
    with pytest.raises(GateViolation, match=r"GATE-DATA-012.*markdown_in_answer.*dropped"):
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0)


@pytest.mark.gate("GATE-DATA-012")
def test_the_judge_wants_planted_leaks_dropped_and_both_kinds_of_canary() -> None:
    kept_leak = {"canaries": [{"name": "a", "must_drop": True, "dropped": False}]}
    assert any("planted leak 'a' was kept" in p for p in judge("GATE-DATA-012", kept_leak))
    only_misses = {"canaries": [{"name": "b", "must_drop": False, "dropped": False}]}
    assert judge("GATE-DATA-012", only_misses) == ["the canaries need both planted leaks and near misses"]
    fine = {"canaries": [{"name": "a", "must_drop": True, "dropped": True}, only_misses["canaries"][0]]}
    assert judge("GATE-DATA-012", fine) == []


@pytest.mark.holds("GATE-DATA-012")
def test_canaries_follow_a_users_limits(tmp_path: Path) -> None:
    """A --filters file moves the limits; the canaries move with them and still hold."""
    path = settings_file(tmp_path, {"leak": {"max_headers": 2, "max_header_weight": 3.0}})
    runner = FilterRunner(load_settings(path), None, {})
    rows = {row["name"]: row for row in runner.canary_results()}
    assert all(row["dropped"] == row["must_drop"] for row in rows.values())
    assert rows["headers_over_limit"]["reason"] == "leak_headers"


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
        return {"sources": {"s": {"filters": filters, "waiver": waiver, "pre_clean": True}}}

    assert judge("GATE-DATA-013", row([], None)) == [
        "source 's' was not filtered and has no waiver (marked pre-clean, which waives nothing)"
    ]
    assert judge("GATE-DATA-013", row([], " ")) == ["source 's' is waived without a reason"]
    assert judge("GATE-DATA-013", row([], "checked by hand")) == []
    assert judge("GATE-DATA-013", row(["leak"], None)) == []


# -- GATE-DATA-014: the drop counts add up ------------------------------------------------------


@pytest.mark.gate("GATE-DATA-014")
def test_a_drop_that_is_never_counted_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant the bug: a filter returns early for one document, dropping it without a reason."""
    kept = FilterRunner.keep
    lost = {"count": 0}

    def leaky(self: FilterRunner, source: str, sha: bytes, data: bytes, head: str | None = None) -> bool:
        if b"drop me quietly" in data and not lost["count"]:
            lost["count"] += 1
            self.report(source).documents_in += 1
            return False
        return kept(self, source, sha, data, head)

    monkeypatch.setattr(FilterRunner, "keep", leaky)
    inputs = corpus(tmp_path, {"web": {"a.txt": "drop me quietly", "b.txt": "keep me", "c.txt": "and me"}})
    with pytest.raises(GateViolation, match=r"GATE-DATA-014.*'web': 3 document\(s\) in ≠ 2 out \+ 0 dropped"):
        prepare_corpus(inputs, tmp_path / "data", val_fraction=0)


@pytest.mark.gate("GATE-DATA-014")
def test_kept_documents_must_be_the_written_ones() -> None:
    """One document more or fewer written than kept fires; the exact count holds."""
    runner = FilterRunner(SETTINGS, None, {})
    for text in ("one document", "another document"):
        runner.keep("web", content_sha256(text.encode()), text.encode())
    assert counts_outcome(runner, {"web": 2}).ok
    for written in (1, 3):
        with pytest.raises(
            GateViolation, match=f"GATE-DATA-014.*2 document\\(s\\) kept but {written} written"
        ):
            check_reports(runner, {"web": written})


@given(st.lists(st.sampled_from([*NEAR_MISSES.values(), *LEAKS.values(), "x" * 40]), max_size=12))
@settings(max_examples=25, deadline=None)
@pytest.mark.holds("GATE-DATA-014")
def test_in_is_out_plus_drops_for_any_mix(texts: list[str]) -> None:
    runner = FilterRunner(SETTINGS, [*SETTINGS.default, "dedup"], {})
    kept = sum(runner.keep("web", content_sha256(t.encode()), t.encode()) for t in texts)
    assert counts_outcome(runner, {"web": kept} if texts else {}).ok


# -- the filters themselves, each at its limit -------------------------------------------------


def test_oversize_at_the_limit_is_kept_and_one_byte_over_dropped(tmp_path: Path) -> None:
    limit = 200
    path = settings_file(tmp_path, {"oversize": {"max_bytes": limit}})
    texts = {"at.txt": "a b c d " * (limit // 8), "over.txt": "a b c d " * (limit // 8) + "e"}
    manifest = prepare_corpus(
        corpus(tmp_path, {"web": texts}), tmp_path / "data", filter_settings=path, val_fraction=0
    )
    assert manifest.filters["web"].dropped == {"oversize": 1} and manifest.filters["web"].documents_out == 1


def test_a_long_unread_document_is_judged_by_its_length(tmp_path: Path) -> None:
    """A document longer than the working set's batch is never held: oversize still applies to it."""
    batch = WorkingSet(MIN_WORKING_SET).batch_bytes
    path = settings_file(tmp_path, {"oversize": {"max_bytes": 2 * batch}})
    long_text = "a line of a long file\n" * (batch * 3 // 2 // 22)  # 1.5 batches: unread, under the limit
    texts = {"long.txt": long_text, "huge.txt": long_text * 3, "short.txt": "short"}
    manifest = prepare_corpus(
        corpus(tmp_path, {"web": texts}),
        tmp_path / "data",
        filter_settings=path,
        val_fraction=0,
        working_set=MIN_WORKING_SET,
    )
    report = manifest.filters["web"]
    assert report.dropped == {"oversize": 1} and report.unread == 1 and report.documents_out == 2


def test_a_repeated_line_is_dropped_once_long_enough_to_tell() -> None:
    runner = FilterRunner(SETTINGS, ["diversity"], {})
    loop = "region " * 1000  # the 120M run's garbage
    short = loop[: SETTINGS.diversity.min_chars - 1]
    enough = loop[: SETTINGS.diversity.min_chars]
    assert runner.reason("web", short, b"", short.encode()) is None
    assert runner.reason("web", enough, b"", enough.encode()) == "low_diversity"


def test_script_share_at_the_limit_is_kept_and_below_dropped() -> None:
    runner = FilterRunner(SETTINGS, ["script"], {})
    letters = max(SETTINGS.script.min_letters, 100)
    latin = round(letters * SETTINGS.script.min_share)
    at = "a" * latin + "д" * (letters - latin)
    below = "a" * (latin - 1) + "д" * (letters - latin + 1)
    assert runner.reason("web", at, b"", at.encode()) is None
    assert runner.reason("web", below, b"", below.encode()) == "script_mismatch"
    few = "д" * (SETTINGS.script.min_letters - 1)
    assert runner.reason("web", few, b"", few.encode()) is None  # too few letters to tell


def test_exact_and_near_duplicates_are_dropped_and_distinct_texts_kept() -> None:
    base = " ".join(f"word{i}" for i in range(400))
    near = base.replace("word200", "wordXYZ")
    other = " ".join(f"term{i}" for i in range(400))
    runner = FilterRunner(SETTINGS, ["dedup"], {})
    found = [
        runner.reason("web", t, content_sha256(t.encode()), t.encode()) for t in (base, base, near, other)
    ]
    assert found == [None, "dedup_exact", "dedup_near", None]


@given(st.text(min_size=1, max_size=300))
@settings(max_examples=40, deadline=None)
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
    assert "web: 8 in, 5 out, 37.50% dropped (leak_headers 1, leak_phrase 1, leak_weight 1)" in out
    assert "notes: not filtered, waived: kept on purpose (1 document(s))" in out
    (record_path,) = (tmp_path / "ledger").glob("prepare-*/metadata.json")
    record = json.loads(record_path.read_text())
    verdicts = {g["id"]: g["verdict"] for g in record["gates"]}
    assert {verdicts[g] for g in ("GATE-DATA-012", "GATE-DATA-013", "GATE-DATA-014")} == {"PASS"}
    assert record["metrics"]["filters"]["web"]["dropped"]["leak_phrase"] == 1
    assert [a["path"] for a in record["artifacts"]] == ["manifest.json"]  # the per-source reports, raw
    assert check_record_truth(read_evidence(record_path), record_path.parent, load_spec()).violations == []
    page = "\n".join(drops_section(read_evidence(record_path)))  # the site's prepare-record section
    assert "## Filters" in page and "| 8 | 5 | 37.50 % |" in page and "waived: kept on purpose" in page


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


@pytest.mark.holds("GATE-DATA-012", "GATE-DATA-014")
def test_chat_examples_are_checked_in_their_first_user_turn(tmp_path: Path) -> None:
    """Chat data is filtered too: a prompt pasted into the user turn is dropped, a markdown answer kept."""

    def chat(user: str, assistant: str) -> str:
        return json.dumps(
            {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}
        )

    shipped = (Path(__file__).parent / "data" / "chat_small.jsonl").read_text(encoding="utf-8").splitlines()
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
