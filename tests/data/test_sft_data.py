"""Supervised fine-tuning data: templates, loss masks, packing, the reader, GATE-SFT-001 and 002."""

from __future__ import annotations

import codecs
import gzip
import inspect
import json
import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput, GateViolation
from contracts.packing import greedy_packing
from contracts.record_fields import fields_missing, record_texts
from contracts.spec import load_spec
from stack.cli import main
from stack.data import sft_prepare
from stack.data.chat_shapes import LeftOut, record_tools
from stack.data.manifest import load_manifest
from stack.data.prefs_rows import Pair, parse_pair
from stack.data.sft_gates import check_supervision, packing_outcome, supervision_outcome
from stack.data.sft_prepare import pack, prepare_sft
from stack.data.sft_reader import SftReader, sft_heldout_batches
from stack.data.sft_template import Rendered, example_turns, load_template, render
from stack.data.tokenizer import ByteTokenizer, train_bpe
from tests.support.ledger_support import findings
from tests.support.paths import DATA

CHAT = DATA / "chat_small.jsonl"
PROMPT_COMPLETION = DATA / "prompt_completion_small.jsonl"
BYTE = ByteTokenizer()
EOS = BYTE.eot_id


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small chat set, byte-tokenized and packed into windows of 96 tokens."""
    out = tmp_path_factory.mktemp("sft") / "data"
    prepare_sft([CHAT], out, fmt="chat", pack_len=96, val_fraction=0.5)
    return out


def _template(tmp_path: Path, marker: str, prefix: str = "Assistant: ") -> Path:
    """A template file like the shipped one, with its own assistant marker (and prefix)."""
    path = tmp_path / "template.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "test",
                "roles": {
                    "system": {"prefix": "System: ", "suffix": "\n"},
                    "user": {"prefix": "User: ", "suffix": "\n"},
                    "assistant": {"prefix": prefix},
                },
                "assistant_marker": marker,
            }
        )
    )
    return path


def _supervised_text(rendered: Rendered) -> str:
    """The supervised tokens of a rendering, EOS shown as <eos>."""
    ids = rendered.ids[rendered.mask.astype(bool)]
    return "".join("<eos>" if i == EOS else chr(i) for i in ids.tolist())


# -- rendering and the mask ------------------------------------------------------------------


@pytest.mark.holds("GATE-SFT-001")
def test_only_the_assistant_and_its_eos_are_supervised() -> None:
    template = load_template(None)
    turns = [("user", "What is 2 + 3?"), ("assistant", "5"), ("user", "And 2 + 4?"), ("assistant", "6")]
    rendered = render(template, BYTE, turns, "example")
    assert _supervised_text(rendered) == " 5<eos> 6<eos>"
    assert rendered.ids.tolist().count(EOS) == 2 and rendered.mask[0] == 0


safe_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20).filter(
    lambda s: "Assistant:" not in s
)


@settings(max_examples=40)
@given(turns=st.lists(st.tuples(safe_text, safe_text), min_size=1, max_size=3))
def test_the_mask_selects_exactly_the_assistant_contents(turns: list[tuple[str, str]]) -> None:
    """Round trip: the supervised ids decode to the assistant contents, each followed by its EOS."""
    chat = [(role, text) for user, answer in turns for role, text in (("user", user), ("assistant", answer))]
    rendered = render(load_template(None), BYTE, chat, "example")
    supervised = rendered.ids[rendered.mask.astype(bool)].tolist()
    expected: list[int] = []
    for _, answer in turns:
        expected += [*BYTE.encode(" " + answer), EOS]
    assert supervised == expected
    assert rendered.markers_missing == 0


def test_prompt_completion_as_chat_turns_is_a_user_turn_and_an_assistant_turn(tmp_path: Path) -> None:
    out = tmp_path / "pc"
    manifest = prepare_sft(
        [PROMPT_COMPLETION], out, fmt="prompt-completion", join="chat-turns", pack_len=64, val_fraction=0.25
    )
    assert manifest.sft is not None and manifest.sft.assistant_turns == 40
    assert sum(manifest.sft.examples.values()) == 40


def test_prompt_completion_is_joined_as_trl_joins_it_by_default(tmp_path: Path) -> None:
    """The prompt, then the completion as written (no template text, no extra space) and EOS."""
    records = tmp_path / "pc.jsonl"
    records.write_text(json.dumps({"prompt": "2 times 3 is", "completion": " 6"}) + "\n")
    out = tmp_path / "pc"
    manifest = prepare_sft([records], out, fmt="prompt-completion", pack_len=32, val_fraction=0.0)
    assert manifest.sft is not None and manifest.sft.join == "concatenate"
    batch = SftReader(out, "train", batch_size=1, seq_len=32, seed=0).next_batch()
    tokens, labels = batch.tokens[0].tolist(), batch.labels[0].tolist()
    text = bytes(t for t in tokens if t != EOS).decode()
    assert text == "2 times 3 is 6"
    supervised = [t for t, label in zip(tokens, labels, strict=True) if label & 1]
    assert supervised == [*BYTE.encode(" 6"), EOS]


def test_join_goes_with_prompt_completion_only(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="--join goes with --format prompt-completion"):
        prepare_sft([CHAT], tmp_path / "x", fmt="chat", join="concatenate")


# -- GATE-SFT-001 ----------------------------------------------------------------------------


def _packed(answers: list[str], template_file: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and labels of one-turn examples packed as prepare packs them."""
    template = load_template(None if template_file is None else str(template_file))
    examples = [render(template, BYTE, [("user", "Q?"), ("assistant", a)], "e") for a in answers]
    tokens, labels, _ = pack(examples, 64, EOS)
    return tokens, labels


@pytest.mark.gate("GATE-SFT-001")
def test_a_pad_equal_to_eos_that_masks_the_real_eos_fires() -> None:
    """The TRL trap: a collator masks every pad id, and pad = EOS, so the EOS leaves the loss."""
    tokens, labels = _packed(["Paris.", "Rome."])
    labels = np.where(tokens == EOS, labels & ~1, labels)  # the planted collator
    with pytest.raises(GateViolation) as fired:
        check_supervision(tokens, labels, EOS)
    assert fired.value.gate_id == "GATE-SFT-001" and "never learns to stop" in str(fired.value)


@pytest.mark.gate("GATE-SFT-001")
def test_one_unsupervised_eos_is_beyond_the_threshold() -> None:
    tokens, labels = _packed(["Paris.", "Rome."])
    first_eos = int(np.flatnonzero((tokens == EOS) & (labels > 1))[0])
    labels[first_eos] &= ~1
    outcome = supervision_outcome(tokens, labels, EOS)
    assert (
        outcome.measured["unsupervised_eos"]
        == 1
        == load_spec().threshold("GATE-SFT-001", "max_unsupervised_eos") + 1
    )
    with pytest.raises(GateViolation, match="GATE-SFT-001"):
        check_supervision(tokens, labels, EOS)


@pytest.mark.gate("GATE-SFT-001")
def test_an_example_that_supervises_nothing_fires_and_one_token_holds(tmp_path: Path) -> None:
    """An empty answer after a marker that ends the prefix supervises its EOS alone: 1 token, the
    minimum; with that EOS masked too, 0 fires."""
    tokens, labels = _packed(["", "Rome."], _template(tmp_path, "A:", prefix="A:"))
    outcome = supervision_outcome(tokens, labels, EOS)
    assert outcome.measured["fewest_supervised_tokens"] == 1 and outcome.ok
    check_supervision(tokens, labels, EOS)
    labels = np.where((labels >> 1) == 1, labels & ~1, labels)  # example 1 left wholly unsupervised
    with pytest.raises(GateViolation, match="GATE-SFT-001"):
        check_supervision(tokens, labels, EOS)


def _supervising_padding(real: Callable[..., tuple[np.ndarray, np.ndarray, int]]) -> Callable[..., Any]:
    """Planted: the packer labels the padding of every window supervised."""

    def planted(examples: list[Rendered], pack_len: int, eos_id: int) -> tuple[np.ndarray, np.ndarray, int]:
        tokens, labels, windows = real(examples, pack_len, eos_id)
        return tokens, np.where((labels >> 1) == 0, 1, labels), windows

    return planted


@pytest.mark.gate("GATE-SFT-001")
def test_a_packer_that_supervises_padding_stops_stack_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every example keeps its supervision and its EOS, so only the padding counts show it."""
    monkeypatch.setattr(sft_prepare, "pack", _supervising_padding(sft_prepare.pack))
    out = tmp_path / "data"
    argv = ["prepare", str(CHAT), "--format", "chat", "--pack-len", "96", "--val-fraction", "0.5"]
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 3 and "GATE-SFT-001" in err and "padding position(s)" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "supervised, fires",
    [
        pytest.param(1, True, marks=pytest.mark.gate("GATE-SFT-001")),
        pytest.param(0, False, marks=pytest.mark.holds("GATE-SFT-001")),
    ],
)
def test_one_supervised_padding_position_fires_and_none_holds(supervised: int, fires: bool) -> None:
    tokens, labels = _packed(["Paris.", "Rome."])
    padding = np.flatnonzero((labels >> 1) == 0)
    labels[padding[:supervised]] |= 1
    outcome = supervision_outcome(tokens, labels, EOS)
    assert outcome.measured["padding_supervised"] == supervised and outcome.ok is not fires


@pytest.mark.parametrize(
    "prompt, fires",
    [
        pytest.param("", True, marks=pytest.mark.gate("GATE-SFT-001")),
        pytest.param("Q", False, marks=pytest.mark.holds("GATE-SFT-001")),
    ],
)
def test_an_example_that_opens_with_a_supervised_token_fires_and_one_prompt_token_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prompt: str, fires: bool
) -> None:
    """Joined as TRL joins them, an empty prompt leaves the completion's first token first in its
    example: supervised, and predicted from nothing of it, so no loss could score it."""
    source = tmp_path / "pairs.jsonl"
    rows = [{"prompt": prompt, "completion": "Paris."}, {"prompt": "Q", "completion": "Rome."}]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["prepare", str(source), "--format", "prompt-completion", "--pack-len", "32"]
    code = main([*argv, "--val-fraction", "0", "--out", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert (code == 3 and "GATE-SFT-001" in err and "open with a supervised token" in err) is fires, err
    assert code == (3 if fires else 0), err


# -- GATE-SFT-002 ----------------------------------------------------------------------------


@pytest.mark.gate("GATE-SFT-002")
def test_a_marker_the_text_does_not_hold_fires_and_writes_nothing(tmp_path: Path) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text(CHAT.read_text().splitlines()[0] + "\n")
    out = tmp_path / "data"
    with pytest.raises(GateViolation) as fired:
        prepare_sft([one], out, fmt="chat", template=str(_template(tmp_path, "### Response:")))
    assert fired.value.gate_id == "GATE-SFT-002"
    assert "1 of 1 assistant turn" in str(fired.value)
    assert not out.exists()


@pytest.mark.holds("GATE-SFT-002")
def test_the_same_example_with_the_written_marker_holds(tmp_path: Path) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text(CHAT.read_text().splitlines()[0] + "\n")
    manifest = prepare_sft(
        [one],
        tmp_path / "data",
        fmt="chat",
        template=str(_template(tmp_path, "Assistant:")),
        val_fraction=0.0,
    )
    assert manifest.sft is not None and manifest.sft.markers_missing == 0


@pytest.mark.gate("GATE-SFT-002")
def test_a_bpe_that_joins_the_markers_space_to_the_answer_fires(tmp_path: Path) -> None:
    """The marker `Assistant: ` tokenized alone ends in a space token; in the text, byte-level BPE
    carries that space into the next word, so the marker's ids are never there."""
    template = load_template(str(_template(tmp_path, "Assistant: ")))
    bpe = train_bpe([m["content"] for line in CHAT.open() for m in json.loads(line)["messages"]], 400)
    rendered = render(template, bpe, [("user", "What is 2 + 3?"), ("assistant", "5")], "e")
    assert bpe.encode("Assistant: 5")[: len(bpe.encode("Assistant:"))] == bpe.encode("Assistant:")
    assert rendered.markers_missing == 1
    with pytest.raises(GateViolation, match="GATE-SFT-002"):
        prepare_sft([CHAT], tmp_path / "data", fmt="chat", template=str(template.path), tokenizer="bpe")


# -- packing ---------------------------------------------------------------------------------


@settings(max_examples=50)
@given(lengths=st.lists(st.integers(2, 32), min_size=1, max_size=12))
def test_packing_keeps_every_example_whole_inside_one_window(lengths: list[int]) -> None:
    examples = [
        Rendered(np.full(n, 7, dtype=np.int64), np.r_[np.zeros(n - 1), 1].astype(np.uint8), 1, 0)
        for n in lengths
    ]
    tokens, labels, windows = pack(examples, 32, EOS)
    assert len(tokens) == len(labels) == windows * 32 + 1
    example = labels >> 1
    for number, n in enumerate(lengths, start=1):
        where = np.flatnonzero(example == number)
        assert len(where) == n and where[-1] - where[0] == n - 1
        assert where[0] // 32 == where[-1] // 32  # never split across windows
    assert int((labels & 1).sum()) == len(lengths)


# -- GATE-SFT-001 check packed: the windows written are the greedy packing of the examples ----------


def _planted_pack(old: str, new: str) -> Callable[..., Any]:
    """stack.data.sft_prepare.pack with its one line `old` made `new`: the mutant itself,
    compiled from the packer's own source in its module's namespace (no packer rewritten here)."""
    source = textwrap.dedent(inspect.getsource(sft_prepare.pack))
    assert source.count(old) == 1
    namespace = dict(vars(sft_prepare))
    exec(compile(source.replace(old, new), sft_prepare.__file__, "exec"), namespace)
    return namespace["pack"]


def _exact_fill(tmp_path: Path) -> Path:
    """Four prompt-completion examples of 16 byte tokens each (prompt, completion, EOS): two fill a
    window of 32 exactly."""
    source = tmp_path / "fill.jsonl"
    rows = [{"prompt": "Q", "completion": f"Answer {i} is ok"} for i in range(4)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return source


@pytest.mark.gate("GATE-SFT-001")
def test_a_packer_that_moves_an_exactly_fitting_example_to_the_next_window_stops_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: `used + len(ids) > pack_len` made `>=`: an example that exactly fills the room
    left opens a new window, so every window here holds one example and half padding. Every
    supervision count is unchanged; the check packed re-packs the examples' lengths."""
    monkeypatch.setattr(
        sft_prepare,
        "pack",
        _planted_pack("used + len(example.ids) > pack_len", "used + len(example.ids) >= pack_len"),
    )
    argv = ["prepare", str(_exact_fill(tmp_path)), "--format", "prompt-completion", "--pack-len", "32"]
    code = main([*argv, "--val-fraction", "0", "--out", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 3 and "GATE-SFT-001" in err and "greedy packing" in err, err
    assert not (tmp_path / "data").exists()


@pytest.mark.holds("GATE-SFT-001")
def test_examples_that_exactly_fill_a_window_are_packed_into_it(tmp_path: Path) -> None:
    """The same examples, packed as the rule packs them: two windows, no example moved."""
    out = tmp_path / "data"
    argv = ["prepare", str(_exact_fill(tmp_path)), "--format", "prompt-completion", "--pack-len", "32"]
    assert main([*argv, "--val-fraction", "0", "--out", str(out)]) == 0
    assert sum(s.tokens for s in load_manifest(out).shards if s.split == "train") == 2 * 32 + 1


@pytest.mark.parametrize(
    "shift, fires",
    [
        pytest.param(1, True, marks=pytest.mark.gate("GATE-SFT-001")),
        pytest.param(0, False, marks=pytest.mark.holds("GATE-SFT-001")),
    ],
)
def test_examples_one_position_off_the_rule_fire_and_none_holds(shift: int, fires: bool) -> None:
    """The tables of a clean packing hold against their examples' lengths; the same tables against
    a first example one token longer (every later start one position off the rule) fire."""
    _, labels = _packed(["Paris.", "Rome.", "Madrid."])
    lengths = [int(n) for n in np.bincount(labels >> 1)[1:]]
    outcome = packing_outcome(labels, [lengths[0] + shift, *lengths[1:]], 64)
    assert outcome.ok is not fires and (outcome.measured["examples_misplaced"] > 0) is fires


@settings(max_examples=50)
@given(lengths=st.lists(st.integers(2, 32), min_size=1, max_size=12))
def test_the_packer_packs_as_the_greedy_rule_does(lengths: list[int]) -> None:
    """Any lengths up to pack_len: the stack's packer and contracts.packing agree on every start."""
    examples = [
        Rendered(np.full(n, 7, dtype=np.int64), np.r_[np.zeros(n - 1), 1].astype(np.uint8), 1, 0)
        for n in lengths
    ]
    _, labels, windows = pack(examples, 32, EOS)
    assert packing_outcome(labels, lengths, 32).ok and windows == greedy_packing(lengths, 32).windows


def test_a_window_packs_more_than_one_example(sft_data: Path) -> None:
    batches = sft_heldout_batches(sft_data, 1, 96, 4)
    assert max(len(set(b.docs[0].tolist()) - {0}) for b in batches) >= 2


# -- the reader ------------------------------------------------------------------------------


def test_targets_never_cross_from_one_example_into_the_next(sft_data: Path) -> None:
    reader = SftReader(sft_data, batch_size=2, seq_len=96, seed=0)
    for _ in range(4):
        batch = reader.next_batch()
        targets, docs, next_docs = batch.targets, batch.docs, batch.labels[:, 1:] >> 1
        assert bool(((targets >= 0) <= (docs == next_docs)).all())
        assert bool((targets[targets >= 0] == batch.tokens[:, 1:][targets >= 0]).all())
        assert int((targets >= 0).sum()) > 0


def test_the_reader_resumes_tokens_and_labels_exactly(sft_data: Path) -> None:
    first = SftReader(sft_data, batch_size=2, seq_len=96, seed=3)
    for _ in range(5):
        first.next_batch()
    state = first.state_dict()
    second = SftReader(sft_data, batch_size=2, seq_len=96, seed=3)
    second.load_state_dict(state)
    for _ in range(12):  # past the end of an epoch, so the wrap is resumed too
        a, b = first.next_batch(), second.next_batch()
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)


def test_a_window_length_other_than_the_packing_is_refused(sft_data: Path) -> None:
    with pytest.raises(BadInput, match="packed into windows of 96"):
        SftReader(sft_data, batch_size=1, seq_len=64, seed=0)


def _relabelled(
    sft_data: Path, tmp_path: Path, rewrite: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> Path:
    """A copy of `sft_data` whose label files `rewrite(labels, tokens)` changed, their sha256
    re-entered in the manifest: labels the reader must judge on their own."""
    import hashlib
    import shutil

    from stack.data.manifest import manifest_bytes
    from stack.data.shards import HEADER

    data = tmp_path / "data"
    shutil.copytree(sft_data, data)
    manifest = load_manifest(data)
    assert manifest.sft is not None
    entries = []
    for entry in manifest.sft.labels:
        path = data / entry.path
        raw = bytearray(path.read_bytes())
        labels = np.frombuffer(bytes(raw[HEADER.size :]), dtype="<u4").copy()
        tokens = np.fromfile(data / entry.shard, dtype="<u2", offset=HEADER.size)
        labels = rewrite(labels, tokens).astype("<u4")
        path.write_bytes(bytes(raw[: HEADER.size]) + labels.tobytes())
        entries.append(entry.model_copy(update={"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    sft = manifest.sft.model_copy(update={"labels": entries})
    (data / "manifest.json").write_bytes(manifest_bytes(manifest.model_copy(update={"sft": sft})))
    return data


@pytest.mark.gate("GATE-SFT-001")
def test_the_reader_judges_the_labels_it_maps(sft_data: Path, tmp_path: Path) -> None:
    """Labels rewritten with the EOS masked, and their sha256 re-entered in the manifest, still fail."""
    data = _relabelled(
        sft_data, tmp_path, lambda labels, tokens: np.where(tokens == EOS, labels >> 1 << 1, labels)
    )
    with pytest.raises(GateViolation, match="GATE-SFT-001"):
        SftReader(data, batch_size=1, seq_len=96, seed=0)


@pytest.mark.gate("GATE-SFT-001")
def test_the_reader_refuses_labels_that_supervise_padding(sft_data: Path, tmp_path: Path) -> None:
    """Data a packer that supervises its padding wrote (padding labelled supervised, the manifest
    resealed over it) is refused by the reader of every run, whatever prepare judged."""
    data = _relabelled(sft_data, tmp_path, lambda labels, tokens: np.where((labels >> 1) == 0, 1, labels))
    with pytest.raises(GateViolation, match="padding position"):
        SftReader(data, batch_size=1, seq_len=96, seed=0)


# -- the command line ------------------------------------------------------------------------


def test_prepare_chat_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    assert main(["prepare", str(CHAT), "--format", "chat", "--pack-len", "96", "--out", str(out)]) == 0
    assert load_manifest(out).sft is not None
    assert "prepared" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "chat", "--default"], "drop --default"),
        (["--template", "chat"], "go with --format chat"),
        (["--format", "chat", "--pack-len", "16"], "longer than --pack-len 16 (the longest needs"),
        (["--format", "chat", "--template", "nope.yaml"], "cannot read"),
    ],
)
def test_bad_sft_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code = main(["prepare", str(CHAT), "--out", str(tmp_path / "data"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_a_record_that_is_not_a_chat_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A record of no chat shape means the file is not chats: the file is refused, the record named."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(CHAT.read_text() + '{"text": "hi"}\n')
    code = main(["prepare", str(bad), "--format", "chat", "--out", str(tmp_path / "data")])
    err = capsys.readouterr().err
    lines = len(CHAT.read_text().splitlines()) + 1
    assert code == 2 and f"{bad}:{lines}: a chat record is" in err and "fields: text" in err, err


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("pc.csv", "prompt-completion"),
        ("pr.csv", "prefs"),
        ("chat.tsv", "chat"),
    ],
)
def test_a_table_given_to_a_fine_tuning_format_is_named_with_the_conversion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, fmt: str
) -> None:
    """A CSV/TSV table given to --format prompt-completion, prefs or chat is refused in one line
    saying it is a table, that the format reads JSONL or Parquet, and how to convert it, not "not
    JSON"."""
    table = tmp_path / name
    table.write_text("prompt,completion\nWhat is 1+1?, 2\n")
    code = main(["prepare", str(table), "--format", fmt, "--out", str(tmp_path / "data")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    kind = "a TSV table" if name.endswith(".tsv") else "a CSV table"
    assert code == 2 and f"--format {fmt} reads JSONL or Parquet files; {table} is {kind}: convert it" in line
    assert sft_prepare.JSONL_EXAMPLES[fmt] in line and "not JSON" not in line and "UTF-8" not in line
    assert not (tmp_path / "data").exists()


def _trl_conversational(i: int, system: bool) -> dict[str, Any]:
    """Record i in TRL's conversational prompt-completion form, its prompt opening with a system
    message when `system`."""
    asked = [{"role": "user", "content": f"What is {i} times 3?"}]
    if system:
        asked.insert(0, {"role": "system", "content": "Answer with the number."})
    return {"prompt": asked, "completion": [{"role": "assistant", "content": f"{3 * i}."}]}


@pytest.mark.parametrize("system", [False, True])
def test_conversational_prompt_completion_records_are_chats_whatever_the_join(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], system: bool
) -> None:
    """TRL renders a conversational prompt-completion record with the chat template; under the default
    --join concatenate such records joined the first two messages' texts: a prompt with a system
    message lost its completion (GATE-DATA-014, exit 3) and one without trained with no template.
    They are chats now, rendered as --join chat-turns renders them, and the template is the data's."""
    source = tmp_path / "pc.jsonl"
    source.write_text("".join(json.dumps(_trl_conversational(i, system)) + "\n" for i in range(40)))
    argv = ["prepare", str(source), "--format", "prompt-completion", "--pack-len", "128"]
    assert main([*argv, "--out", str(tmp_path / "default")]) == 0, capsys.readouterr().err
    assert main([*argv, "--join", "chat-turns", "--out", str(tmp_path / "turns")]) == 0
    made = [load_manifest(tmp_path / d) for d in ("default", "turns")]
    assert [(s.split, s.sha256) for s in made[0].shards] == [(s.split, s.sha256) for s in made[1].shards]
    assert made[0].sft is not None and made[0].sft.chat_template is not None
    assert "chat template: gatestack-chat" in capsys.readouterr().out


def _ultrafeedback(i: int) -> dict[str, Any]:
    """Pair i in UltraFeedback binarized's shape: its prompt, and chosen and rejected as whole
    conversations, with their scores."""
    ask = {"role": "user", "content": f"What is {i} + {i}?"}
    return {
        "prompt": ask["content"],
        "chosen": [ask, {"role": "assistant", "content": f"{2 * i}."}],
        "rejected": [ask, {"role": "assistant", "content": f"{2 * i + 1}, I think."}],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    }


@pytest.mark.parametrize("fmt", ["chat", "prompt-completion", "prefs"])
def test_a_parquet_file_of_records_prepares_as_its_jsonl_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """The Hub's fine-tuning sets are Parquet (nested messages as lists of structs): each row is read
    as the record its JSONL line is, so the DATA_DIR holds the same tokens. A struct field one
    message states is null in every other (a `weight`, a `tool_calls`), as `datasets` hands such
    rows to transformers, and reads as no value. Such files were refused with a conversion."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "prefs":  # UltraFeedback binarized's shape: whole conversations sharing their prompt
        records = [_ultrafeedback(i) for i in range(24)]
    else:
        source = CHAT if fmt == "chat" else PROMPT_COMPLETION
        records = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    if fmt == "chat":  # one message states a weight of 1: every other holds a null one
        records[0]["messages"][0]["weight"] = 1
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    argv = ["prepare", "--format", fmt, "--val-fraction", "0.3", "--pack-len", "256"]
    assert main([*argv, str(jsonl), "--out", str(tmp_path / "from-jsonl")]) == 0
    assert main([*argv, str(parquet), "--out", str(tmp_path / "from-parquet")]) == 0, capsys.readouterr().err
    shards = [
        [(s.split, s.tokens, s.sha256) for s in load_manifest(tmp_path / d).shards]
        for d in ("from-jsonl", "from-parquet")
    ]
    assert shards[0] == shards[1] and shards[0]


def test_a_chat_file_whose_name_is_not_utf8_is_named_with_its_bytes_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """For fine-tuning data: a record of a file named in Latin-1 that the diversity
    filter drops, and one left out for a blank answer, are named with the byte written as \\xe9 in
    the drop log and the manifest, and the set is prepared."""
    name = os.fsdecode(b"chat\xe9.jsonl")
    repeated = {"role": "user", "content": "again and again " * 40}
    extra = [
        {"messages": [repeated, {"role": "assistant", "content": "again and again " * 40}]},
        {"messages": [{"role": "user", "content": "Say nothing."}, {"role": "assistant", "content": " "}]},
    ]
    (tmp_path / name).write_text(CHAT.read_text() + "".join(json.dumps(row) + "\n" for row in extra))
    out = tmp_path / "data"
    code = main(["prepare", str(tmp_path / name), "--format", "chat", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    lines = len(CHAT.read_text().splitlines())
    (row,) = [json.loads(line) for line in (out / "drops.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["where"] == f"chat\\xe9.jsonl:{lines + 1}"
    manifest = load_manifest(out)
    assert manifest.filters["main"].examples["low_diversity"].startswith(f"chat\\xe9.jsonl:{lines + 1}: ")
    assert f"chat\\xe9.jsonl:{lines + 2}: every assistant turn is blank" in capsys.readouterr().out


def test_a_json_array_of_chats_prepares_the_same_examples_as_its_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ShareGPT-style dumps are one JSON array: each element is a record, named by its index."""
    rows = [json.loads(line) for line in CHAT.read_text().splitlines() if line.strip()]
    array = tmp_path / "chats.json"
    array.write_text(json.dumps(rows, indent=2))
    for source, out in ((CHAT, tmp_path / "lines"), (array, tmp_path / "array")):
        assert main(["prepare", str(source), "--format", "chat", "--pack-len", "96", "--out", str(out)]) == 0
    lines, elements = load_manifest(tmp_path / "lines"), load_manifest(tmp_path / "array")
    assert [shard.sha256 for shard in lines.shards] == [shard.sha256 for shard in elements.shards]
    assert lines.sft is not None and elements.sft is not None
    assert [label.sha256 for label in lines.sft.labels] == [label.sha256 for label in elements.sft.labels]
    rows[1] = {"messages": [{"role": "user", "content": "hi"}]}
    array.write_text(json.dumps(rows))
    assert main(["prepare", str(array), "--format", "chat", "--out", str(tmp_path / "left")]) == 0
    sft = load_manifest(tmp_path / "left").sft
    assert sft is not None and sft.dropped == {"unanswered": 1}
    assert sft.first_dropped["unanswered"].startswith("chats.json[1]: the last message is the user's")


def test_verify_checks_the_label_files(
    sft_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    assert main(["prepare", "--verify", "--out", str(sft_data)]) == 0
    data = tmp_path / "data"
    shutil.copytree(sft_data, data)
    labels = next((data / "shards").glob("train-*.labels"))
    raw = bytearray(labels.read_bytes())
    raw[-8] ^= 1  # one label changed: its sha256 no longer matches the manifest
    labels.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main(["prepare", "--verify", "--out", str(data)]) == 2
    assert "does not match its sha256" in capsys.readouterr().err


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize(("fmt", "path"), [("chat", CHAT), ("prefs", DATA / "prefs_small.jsonl")])
def test_a_fine_tuning_prepare_record_re_derives_clean(tmp_path: Path, fmt: str, path: Path) -> None:
    """Fine-tuning data packs its examples into one stream a shard: GATE-DATA-014's documents
    written are the examples the filters handed on, as `stack prepare` judged them."""
    ledger = tmp_path / "ledger"
    argv = ["prepare", str(path), "--format", fmt, "--val-fraction", "0.3", "--out", str(tmp_path / "data")]
    assert main([*argv, "--evidence-dir", str(ledger)]) == 0
    (record,) = list(ledger.iterdir())
    assert findings(record) == []


# -- the shapes fine-tuning data is exported in (stack.data.chat_shapes) -------------------------

OPENAI = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4."},
    ]
}
SAME_CHAT = {
    "sharegpt": {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "2+2?"},
            {"from": "gpt", "value": "4."},
        ]
    },
    "content-parts": {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "2+"}, {"type": "text", "text": "2?"}]},
            {"role": "assistant", "content": "4.", "weight": 1},
        ]
    },
}


@pytest.mark.parametrize("shape", sorted(SAME_CHAT))
def test_a_conversation_reads_the_same_in_every_shape_it_is_exported_in(shape: str, tmp_path: Path) -> None:
    """ShareGPT's from/value and OpenAI's content parts are the same turns as OpenAI's messages,
    and prepare the same shards."""
    assert example_turns(SAME_CHAT[shape], "chat", "x") == example_turns(OPENAI, "chat", "x")
    made = {}
    for name, record in (("openai", OPENAI), (shape, SAME_CHAT[shape])):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(record) + "\n")
        made[name] = prepare_sft([path], tmp_path / f"data-{name}", fmt="chat", pack_len=64, val_fraction=0)
    assert [s.sha256 for s in made["openai"].shards] == [s.sha256 for s in made[shape].shards]


def test_a_sharegpt_tool_turn_leaves_its_record_out_not_the_file(tmp_path: Path) -> None:
    """LLaMA-Factory's and Glaive's ShareGPT exports speak tool use as `function_call` and
    `observation` turns: such a record is left out as unrenderable and counted, the others kept,
    where the whole file was refused as of no shape."""
    calling = [
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
        {"from": "observation", "value": '{"temperature": 3}'},
        {"from": "gpt", "value": "It is 3 degrees."},
    ]
    records = [SAME_CHAT["sharegpt"]] * 9 + [{"conversations": calling}]
    path = tmp_path / "sharegpt.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    made = prepare_sft([path], tmp_path / "data", fmt="chat", pack_len=64, val_fraction=0)
    report = made.filters["sft"]
    assert report.dropped == {"unrenderable": 1} and report.documents_out == 9
    assert "'function_call' turn (tool use)" in report.examples["unrenderable"]


def test_alpaca_and_trl_records_are_a_user_turn_and_an_assistant_turn() -> None:
    alpaca = {"instruction": "Add the numbers.", "input": "2 and 2", "output": "4."}
    assert example_turns(alpaca, "chat", "x") == [
        ("user", "Add the numbers.\n\n2 and 2"),
        ("assistant", "4."),
    ]
    assert example_turns({**alpaca, "input": ""}, "chat", "x")[0] == ("user", "Add the numbers.")
    trl = {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": "4."}],
    }
    assert example_turns(trl, "prompt-completion", "x") == [("user", "2+2?"), ("assistant", "4.")]


def test_a_llama_factory_sharegpt_record_keeps_its_system_and_reads_its_tools() -> None:
    """LLaMA-Factory's ShareGPT records state the system prompt apart (`system`), which the reader
    dropped unsaid, and their tools as JSON text: the system is the first turn, the tools a list
    (which the stack's template, with no place for them, leaves out as unrenderable)."""
    record = {"system": "Be brief.", "conversations": SAME_CHAT["sharegpt"]["conversations"][1:]}
    assert example_turns(record, "chat", "x") == example_turns(OPENAI, "chat", "x")
    assert record_texts(record, "chat")[0] == ("system", "Be brief.")
    tools = json.dumps([{"type": "function", "function": {"name": "lookup"}}])
    assert record_tools({**record, "tools": tools}, "x") == json.loads(tools)
    assert record_tools({**record, "tools": ""}, "x") is None
    with pytest.raises(BadInput, match="no JSON list"):
        record_tools({**record, "tools": "lookup"}, "x")


def test_a_llama_factory_alpaca_record_keeps_its_system_and_history_as_turns() -> None:
    """LLaMA-Factory's Alpaca records carry a `system` and a `history` of earlier [instruction,
    response] rounds, which the reader dropped unsaid (GATE-DATA-014 declares them now): they are
    turns before the instruction, and the rendered example holds every field."""
    record = {
        "system": "Answer in French.",
        "history": [["Name a colour.", "Rouge."]],
        "instruction": "Name a fruit.",
        "input": "",
        "output": "Pomme.",
    }
    turns = example_turns(record, "chat", "x")
    assert turns == [
        ("system", "Answer in French."),
        ("user", "Name a colour."),
        ("assistant", "Rouge."),
        ("user", "Name a fruit."),
        ("assistant", "Pomme."),
    ]
    assert fields_missing(record_texts(record, "chat"), "\n".join(t for _, t in turns)) == []
    assert [name for name, _ in record_texts(record, "chat")] == [
        "system",
        "instruction",
        "output",
        "history[0][0]",
        "history[0][1]",
    ]
    with pytest.raises(BadInput, match="history must be a list of"):
        example_turns({**record, "history": ["Name a colour."]}, "chat", "x")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "no", "weight": 0},
                ]
            },
            "x: messages[1] has weight 0: a turn left out of training is not something prepare can mask",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "hi"},
                    {"from": "gpt", "value": "no", "weight": 0.0},
                ]
            },
            "x: conversations[1] has weight 0.0: a turn left out of training",
        ),
        ({"text": "a", "label": 1}, 'x: a chat record is {"messages"'),
        ({"conversations": [{"from": "narrator", "value": "hi"}]}, "x: conversations[0] must be {from:"),
    ],
    ids=["weight-zero", "sharegpt-weight-zero", "no-shape", "unknown-speaker"],
)
def test_a_chat_record_of_no_shape_or_with_a_turn_not_to_train_is_refused(record: dict, message: str) -> None:
    """A turn its data says not to train on (OpenAI's or a ShareGPT export's weight 0) was supervised
    in silence; a record of no known shape names its fields and the shapes taken."""
    with pytest.raises(BadInput, match=re.escape(message)):
        example_turns(record, "chat", "x")


def test_preference_pairs_read_the_same_in_every_shape_they_are_exported_in() -> None:
    """UltraFeedback's and TRL's implicit prompt (whole conversations sharing their prompt), OpenAI's
    preference line (`input.messages`, `preferred_output`, `non_preferred_output`; one that offers
    tools left out by the stack's template, which has no place for them), LLaMA-Factory's ShareGPT
    and Alpaca pairs (refused as of no shape before) and Anthropic HH's transcripts are the prompt
    and two completions of the explicit form."""
    template = load_template(None)
    user = {"role": "user", "content": "2+2?"}
    explicit = {"prompt": [user], "chosen": [{"role": "assistant", "content": "4."}], "rejected": "5."}
    good, bad = {"role": "assistant", "content": "4."}, {"role": "assistant", "content": "5."}
    ultra = {"prompt": "2+2?", "chosen": [user, good], "rejected": [user, bad]}
    implicit = {"chosen": [user, good], "rejected": [user, bad]}
    expected = parse_pair(explicit, "x", template)
    assert parse_pair(ultra, "x", template) == parse_pair(implicit, "x", template) == expected
    openai = {
        "input": {"messages": [user], "tools": []},
        "preferred_output": [good],
        "non_preferred_output": [bad],
    }
    assert parse_pair(openai, "x", template) == Pair(expected.prompt, expected.chosen, "5.")
    with pytest.raises(LeftOut, match="offers tools"):
        parse_pair({**openai, "input": {"messages": [user], "tools": [{"type": "function"}]}}, "x", template)
    sharegpt = {
        "conversations": [{"from": "human", "value": "2+2?"}],
        "chosen": {"from": "gpt", "value": "4."},
        "rejected": {"from": "gpt", "value": "5."},
    }
    alpaca = {"instruction": "2+2?", "input": "", "chosen": "4.", "rejected": "5."}
    assert parse_pair(sharegpt, "x", template) == parse_pair(alpaca, "x", template) == expected
    hh = {"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4.", "rejected": "\n\nHuman: 2+2?\n\nAssistant: 5."}
    assert parse_pair(hh, "x", template) == Pair("\n\nHuman: 2+2?\n\nAssistant:", " 4.", " 5.")
    with pytest.raises(BadInput, match="must share every message but their last"):
        parse_pair(
            {"chosen": [user, good], "rejected": [{"role": "user", "content": "3+3?"}, bad]}, "x", template
        )


def test_openai_preference_lines_prepare_and_one_offering_tools_is_left_out_and_booked(
    tmp_path: Path,
) -> None:
    """A file of OpenAI's preference lines prepares as pairs; a line whose input offers tools is left
    out as unrenderable by the stack's template, its bytes read and dropped, so GATE-DATA-014's books
    balance."""
    lines = []
    for i in range(12):
        ask = {"role": "user", "content": f"What is {i} + 1?"}
        line = {
            "input": {"messages": [ask], "tools": [{"type": "function"}] if i == 3 else []},
            "preferred_output": [{"role": "assistant", "content": f"{i + 1}."}],
            "non_preferred_output": [{"role": "assistant", "content": f"{i + 2}, roughly."}],
        }
        lines.append(json.dumps(line))
    path = tmp_path / "openai.jsonl"
    path.write_text("\n".join(lines) + "\n")
    made = prepare_sft([path], tmp_path / "data", fmt="prefs", pack_len=64, val_fraction=0)
    assert made.filters["sft"].dropped == {"unrenderable": 1} and made.filters["sft"].documents_out == 11
    books = made.accounting["sft"]
    assert books.dropped_bytes["unrenderable"] == len("What is 3 + 1?4.5, roughly.")
    assert sum(books.input_bytes.values()) == books.kept_bytes + sum(books.dropped_bytes.values())


def test_llama_factory_sharegpt_pairs_prepare_and_one_with_a_tool_turn_is_left_out_and_booked(
    tmp_path: Path,
) -> None:
    """LLaMA-Factory's ShareGPT preference records prepare as pairs; one whose prompt holds a tool
    turn is left out as unrenderable, its text read and dropped, so GATE-DATA-014's books balance."""
    lines = []
    for i in range(12):
        asked = [{"from": "human", "value": f"What is {i} + 1?"}]
        if i == 5:
            asked += [{"from": "function_call", "value": "{}"}, {"from": "observation", "value": "6"}]
        answers = {"chosen": {"from": "gpt", "value": f"{i + 1}."}, "rejected": {"from": "gpt", "value": "?"}}
        lines.append(json.dumps({"conversations": asked, **answers}))
    path = tmp_path / "lf.jsonl"
    path.write_text("\n".join(lines) + "\n")
    made = prepare_sft([path], tmp_path / "data", fmt="prefs", pack_len=64, val_fraction=0)
    assert made.filters["sft"].dropped == {"unrenderable": 1} and made.filters["sft"].documents_out == 11
    books = made.accounting["sft"]
    assert books.dropped_bytes["unrenderable"] > 0
    assert sum(books.input_bytes.values()) == books.kept_bytes + sum(books.dropped_bytes.values())


@pytest.mark.parametrize("where", ["chosen", "prompt"])
def test_a_pair_stating_reasoning_the_template_cannot_write_is_left_out_not_scored_without_it(
    where: str,
) -> None:
    """The stack's templates write a message's content alone: a pair whose answer (or prompt message)
    states its reasoning apart is left out as unrenderable, where it was scored without it."""
    thought = {"reasoning_content": "2 and 2 make 4"}
    user = {"role": "user", "content": "2+2?", **(thought if where == "prompt" else {})}
    good = {"role": "assistant", "content": "4.", **(thought if where == "chosen" else {})}
    record = {"prompt": [user], "chosen": [good], "rejected": "5."}
    with pytest.raises(LeftOut, match="states reasoning apart") as left:
        parse_pair(record, "x", load_template(None))
    assert left.value.rule == "unrenderable"
    assert parse_pair(
        {**record, "prompt": [{"role": "user", "content": "2+2?"}], "chosen": "4."}, "x", load_template(None)
    )


@pytest.mark.parametrize(
    ("suffix", "encode"),
    [
        (".jsonl.gz", gzip.compress),
        (".jsonl", lambda data: codecs.BOM_UTF16_LE + data.decode("utf-8").encode("utf-16-le")),
    ],
    ids=["gzip", "utf-16"],
)
@pytest.mark.parametrize("fmt", ["chat", "prefs"])
def test_fine_tuning_data_compressed_or_in_utf16_prepares_as_its_text(
    tmp_path: Path, suffix: str, encode: Callable[[bytes], bytes], fmt: str
) -> None:
    """Fine-tuning files are read as pretraining text is: a gzip or a UTF-16 file with a byte-order
    mark gives the shards of its plain UTF-8 text, not a refusal as not UTF-8."""
    source = CHAT if fmt == "chat" else DATA / "prefs_small.jsonl"
    (tmp_path / f"given{suffix}").write_bytes(encode(source.read_bytes()))
    made = [
        prepare_sft([path], tmp_path / f"data-{n}", fmt=fmt, pack_len=64, val_fraction=0.3)
        for n, path in enumerate((source, tmp_path / f"given{suffix}"))
    ]
    assert [s.sha256 for s in made[0].shards] == [s.sha256 for s in made[1].shards]


def test_prepare_says_how_many_examples_each_split_holds_and_how_to_give_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chat prepare's summary must not say "in 1 documents" per split (its shards count packed
    streams) nor leave the examples held out unprinted; and a directory of chat files must not be
    refused as "not a file" without the way to give it."""
    out = tmp_path / "d"
    argv = ["prepare", str(CHAT), "--format", "chat", "--pack-len", "96", "--val-fraction", "0.25"]
    assert main([*argv, "--out", str(out)]) == 0
    examples = load_manifest(out).sft.examples
    said = capsys.readouterr().out
    assert f"in {examples['train']:,} examples; " in said and f"in {examples['heldout']:,} examples; " in said
    assert main(["prepare", str(CHAT.parent), "--format", "chat", "--out", str(tmp_path / "e")]) == 2
    assert f"name its files (`{CHAT.parent}/*.jsonl`)" in capsys.readouterr().err
    hub = tmp_path / "hub"  # a Hub dataset's directory of Parquet shards
    hub.mkdir()
    (hub / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
    assert main(["prepare", str(hub), "--format", "chat", "--out", str(tmp_path / "f")]) == 2
    assert f"name its files (`{hub}/*.parquet`)" in capsys.readouterr().err
