"""Refusals with counts: a fine-tuning prepare that drops every example says which rule dropped how
many, the longest length, and the flag that would admit them; one that drops some counts them.
A record of the right shape with nothing to learn from (a chat the user ends, a tied pair, a pair
whose sides differ before the answers) is one such rule: left out and counted, never a refusal of
the file, unless it leaves nothing.

The length it reports is the one that admits: `--pack-len` at the longest length prepares, one
token less still drops that example.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stack.cli import main
from stack.data.manifest import load_manifest

FORMATS = {
    "chat": lambda i, text: {
        "messages": [{"role": "user", "content": f"Q{i}: {text}"}, {"role": "assistant", "content": f"A{i}."}]
    },
    "prompt-completion": lambda i, text: {"prompt": f"Q{i}: {text}", "completion": f" A{i}."},
    "prefs": lambda i, text: {"prompt": f"Q{i}: {text}", "chosen": f" A{i}.", "rejected": f" not {i}."},
}


def write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def prepare(path: Path, fmt: str, out: Path, *extra: str) -> int:
    return main(["prepare", str(path), "--format", fmt, "--out", str(out), "--val-fraction", "0", *extra])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_all_too_long_names_the_rule_the_count_the_longest_and_the_flag(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [FORMATS[fmt](i, "word " * (20 + i)) for i in range(6)]
    path = write(tmp_path / "in.jsonl", records)
    assert prepare(path, fmt, tmp_path / "a", "--pack-len", "32") == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1
    assert f"every one of the 6 {fmt} record(s)" in line and "6 longer than --pack-len 32" in line
    longest = int(re.search(r"the longest needs (\d+) tokens: --pack-len \1 admits them", line)[1])
    # One token short of the longest: that example is still left out, and counted in the manifest.
    assert prepare(path, fmt, tmp_path / "b", "--pack-len", str(longest - 1)) == 0
    sft = load_manifest(tmp_path / "b").sft
    assert sft is not None and sft.dropped == {"too_long": 1} and sft.longest_dropped == longest
    out = capsys.readouterr().out
    assert "warning: left out 1 of 6 example(s) (16.7%), apart from the filters: too_long 1" in out
    assert f"(the longest needs {longest} tokens: --pack-len {longest} admits it)" in out
    # At the longest length every example is admitted.
    assert prepare(path, fmt, tmp_path / "c", "--pack-len", str(longest)) == 0
    sft = load_manifest(tmp_path / "c").sft
    assert sft is not None and sft.dropped == {} and sum(sft.examples.values()) == 6


def test_all_empty_after_the_template_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "in.jsonl", [{"prompt": f"Q{i}", "completion": "  "} for i in range(3)])
    assert prepare(path, "prompt-completion", tmp_path / "d") == 2
    assert "3 empty after the template (no text in an assistant turn)" in capsys.readouterr().err


def test_all_dropped_by_the_filters_names_each_reason_and_the_waiver(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaked = [FORMATS["chat"](i, "You are ChatGPT. Knowledge cutoff: 2023-04. Answer.") for i in range(4)]
    path = write(tmp_path / "in.jsonl", leaked)
    assert prepare(path, "chat", tmp_path / "d") == 2
    line = capsys.readouterr().err
    # The filters' own refusal (stack.data.filters.report): each filter with its count, an example.
    assert "the filters dropped every document" in line and "4 in, all dropped (leak_phrase 4)" in line
    assert "in.jsonl:1" in line and "--no-filter main --reason" in line
    waived = ["--no-filter", "main", "--reason", "the prompts are the data"]
    assert prepare(path, "chat", tmp_path / "w", *waived) == 0


def test_duplicates_are_dropped_and_counted_but_one_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [FORMATS["prompt-completion"](0, "same")] * 5)
    assert prepare(path, "prompt-completion", tmp_path / "d", "--filter", "dedup") == 0
    manifest = load_manifest(tmp_path / "d")
    assert manifest.sft is not None and sum(manifest.sft.examples.values()) == 1
    assert sum(manifest.filters["main"].dropped.values()) == 4


def test_a_file_of_blank_lines_is_no_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text("\n\n\n")
    assert prepare(path, "chat", tmp_path / "d") == 2
    assert "no chat records in" in capsys.readouterr().err


USER, ASSISTANT = {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}
# One record of each rule stack.data.chat_shapes.LeftOut names, in the format it belongs to.
NOTHING_TO_LEARN = {
    "unanswered": ("chat", {"messages": [USER, ASSISTANT, {"role": "user", "content": "and 3+3?"}]}),
    "tie": ("prefs", {"prompt": "2+2?", "chosen": " 4.", "rejected": " 4."}),
    "diverged": (
        "prefs",
        {"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4.", "rejected": "\n\nHuman: 3+3?\n\nAssistant: 5."},
    ),
}


@pytest.mark.parametrize("rule", list(NOTHING_TO_LEARN))
def test_a_record_with_nothing_to_learn_is_left_out_and_named_not_the_file_refused(
    rule: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fmt, record = NOTHING_TO_LEARN[rule]
    records = [FORMATS[fmt](i, "word") for i in range(5)]
    path = write(tmp_path / "in.jsonl", [*records[:3], record, *records[3:]])
    assert prepare(path, fmt, tmp_path / "d") == 0
    sft = load_manifest(tmp_path / "d").sft
    assert sft is not None and sft.dropped == {rule: 1} and sum(sft.examples.values()) == 5
    assert list(sft.first_dropped) == [rule] and sft.first_dropped[rule].startswith("in.jsonl:4: ")
    out = capsys.readouterr().out
    assert f"left out 1 of 6 example(s) (16.7%), apart from the filters: {rule} 1" in out
    assert f"the first {rule}: in.jsonl:4: " in out
    # A file of nothing else is refused in one line naming the rule, its count and the first.
    assert prepare(write(tmp_path / "all.jsonl", [record, record]), fmt, tmp_path / "e") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "every one of the 2" in err
    assert f"was dropped: 2 {rule} (the first: all.jsonl:1: " in err


def test_a_prepare_that_leaves_nothing_out_writes_no_first_dropped(tmp_path: Path) -> None:
    """The manifest's bytes (which reader states are tied to) are what they were before the field."""
    path = write(tmp_path / "in.jsonl", [FORMATS["chat"](i, "word") for i in range(4)])
    assert prepare(path, "chat", tmp_path / "d") == 0
    assert "first_dropped" not in (tmp_path / "d" / "manifest.json").read_text()
