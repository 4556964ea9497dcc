"""An Alpaca record's `input` left out of its example, and a gzip'd UTF-16 file skipped as holding no
text, are caught by GATE-DATA-014's checks `fields` (each rendered fine-tuning example
holds its record's text fields, contracts.record_fields) and `marks` (no file read as UTF-16 or
UTF-32 text never made UTF-8, contracts.text_marks), planted through `stack prepare`."""

from __future__ import annotations

import codecs
import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import curves
from contracts.file_modes import created_mode, off_mode
from contracts.record_fields import fields_missing, record_texts
from contracts.text_marks import marked_text
from stack.cli import main
from stack.data import chat_shapes, unpack
from stack.data.accounting import Fields, fields_outcome
from stack.data.corpus import InputFile
from stack.data.manifest import load_manifest
from stack.outputs import tensor_files
from stack.train import tensorboard
from stack.train.metrics import METRICS_FILE, read_lines
from tests.support.train_support import prepared, smoke_args, train


def _alpaca(tmp_path: Path, n: int = 12) -> Path:
    """Alpaca records, every other one with an `input` the output depends on."""
    rows = []
    for i in range(n):
        a, b = 10 + i, 30 + 2 * i
        given = f"{a} and {b}" if i % 2 else ""
        instruction = "Add the two numbers." if given else f"Say the number {a}."
        output = f"The sum is {a + b}." if given else f"{a}."
        rows.append({"instruction": instruction, "input": given, "output": output})
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _prepare(source: Path, out: Path, fmt: str = "chat") -> int:
    argv = ["prepare", str(source), "--format", fmt, "--pack-len", "128", "--val-fraction", "0.3"]
    return main([*argv, "--out", str(out)])


def _dropping_input(record: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """The planted reader: the instruction alone as the user's turn, the record's `input` lost."""
    return [("user", record["instruction"]), ("assistant", record["output"])]


@pytest.mark.gate("GATE-DATA-014")
def test_an_alpaca_reader_that_drops_the_input_stops_stack_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(chat_shapes, "_alpaca_turns", _dropping_input)
    out = tmp_path / "data"
    code = _prepare(_alpaca(tmp_path), out)
    err = capsys.readouterr().err
    assert code == 3 and "GATE-DATA-014" in err and ": input" in err and "Traceback" not in err, err
    assert not out.exists()


def _dropping_one_input(record: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """One record's `input` lost (the first that has one), every other record read as it is."""
    if record.get("input") == "11 and 32":
        return _dropping_input(record, where)
    return _read_alpaca(record, where)


_read_alpaca = chat_shapes._alpaca_turns


@pytest.mark.parametrize(
    "reader, fires",
    [
        pytest.param(_dropping_one_input, True, marks=pytest.mark.gate("GATE-DATA-014")),
        pytest.param(_read_alpaca, False, marks=pytest.mark.holds("GATE-DATA-014")),
    ],
)
def test_one_lost_field_fires_and_none_holds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reader: Any,
    fires: bool,
) -> None:
    monkeypatch.setattr(chat_shapes, "_alpaca_turns", reader)
    code = _prepare(_alpaca(tmp_path), tmp_path / "data")
    err = capsys.readouterr().err
    assert code == (3 if fires else 0), err
    assert ("1 of the" in err and "alpaca.jsonl:2: input" in err) is fires, err


def _dropping_system(
    messages: list[dict[str, Any]], roles: tuple[str, ...], where: str
) -> list[tuple[str, str]]:
    """A reader that leaves an OpenAI record's system message out of its turns."""
    return [(m["role"], m["content"]) for m in messages if m["role"] != "system"]


@pytest.mark.gate("GATE-DATA-014")
def test_an_openai_system_message_lost_stops_stack_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stack.data import sft_prepare

    rows = [
        {
            "messages": [
                {"role": "system", "content": f"Answer in French, case {i}."},
                {"role": "user", "content": f"Name {i}?"},
                {"role": "assistant", "content": f"Nom {i}."},
            ]
        }
        for i in range(8)
    ]
    source = tmp_path / "openai.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setattr(sft_prepare, "turns_of", _dropping_system)
    code = _prepare(source, tmp_path / "data")
    err = capsys.readouterr().err
    assert code == 3 and "GATE-DATA-014" in err and "messages[0].content" in err, err


def _reasoned(tmp_path: Path) -> Path:
    """OpenAI chats, every other answer stating its reasoning apart (`reasoning_content`)."""
    rows = []
    for i in range(12):
        answer: dict[str, Any] = {"role": "assistant", "content": f"It is {i + 2}."}
        if i % 2:
            answer["reasoning_content"] = f"{i} and 2 make {i + 2}"
        rows.append({"messages": [{"role": "user", "content": f"{i} + 2?"}, answer]})
    source = tmp_path / "reasoned.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return source


@pytest.mark.parametrize(
    "plant, code",
    [
        pytest.param(True, 3, marks=pytest.mark.gate("GATE-DATA-014")),
        pytest.param(False, 0, marks=pytest.mark.holds("GATE-DATA-014")),
    ],
)
def test_reasoning_a_template_does_not_write_is_never_trained_without_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    plant: bool,
    code: int,
) -> None:
    """The stack's template writes a message's content alone. Planted: a reader that takes a message
    stating its reasoning apart for one it can write, so its example trains on the answer without
    the reasoning: GATE-DATA-014 names the field lost. Unplanted, those records are left out."""
    if plant:
        monkeypatch.setattr(chat_shapes, "states_reasoning", lambda _message: False)
    out = tmp_path / "data"
    assert _prepare(_reasoned(tmp_path), out) == code
    err = capsys.readouterr().err
    assert ("GATE-DATA-014" in err and "reasoned.jsonl:2: messages[1].reasoning_content" in err) is plant, err
    if not plant:
        assert load_manifest(out).filters["main"].dropped == {"unrenderable": 6}


@pytest.mark.gate("GATE-DATA-014")
def test_an_alpaca_reader_that_drops_llama_factory_s_history_stops_stack_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """LLaMA-Factory's Alpaca records hold earlier rounds in `history`; a reader that keeps only the
    last round trains each example without its context: GATE-DATA-014 names the texts lost."""
    rows = [
        {"history": [[f"Say {i}.", f"{i}."]], "instruction": "Say it again.", "input": "", "output": f"{i}."}
        for i in range(8)
    ]
    source = tmp_path / "llama_factory.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setattr(chat_shapes, "_alpaca_turns", _dropping_input)
    assert _prepare(source, tmp_path / "data") == 3
    err = capsys.readouterr().err
    assert "GATE-DATA-014" in err and "llama_factory.jsonl:1: history[0][0]" in err, err


def test_the_judge_names_each_lost_field_and_passes_none() -> None:
    fields = Fields()
    fields.rendered([("instruction", "Add."), ("input", "2 and 2")], "User: Add.\nAssistant: 4.", "a:1")
    assert not fields_outcome(fields).ok and fields.missing == ["a:1: input"]
    kept = Fields()
    kept.rendered(
        [("instruction", "Add."), ("input", "2 and 2")], "User: Add.\n\n2 and 2\nAssistant: 4.", "a:1"
    )
    assert fields_outcome(kept).ok and kept.fields == 2


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@settings(max_examples=60)
@given(instruction=text.filter(str.strip), given_=text, output=text.filter(str.strip))
def test_the_shape_reader_keeps_every_declared_alpaca_field(
    instruction: str, given_: str, output: str
) -> None:
    """Whatever an Alpaca record says, the turns the stack's reader makes hold every field the contracts
    declare (so the check fires only on a reader that lost one)."""
    record = {"instruction": instruction, "input": given_, "output": output}
    turns = chat_shapes.chat_turns(record, "x")
    assert fields_missing(record_texts(record, "chat"), "\n".join(t for _, t in turns)) == []


# -- a gzip'd UTF-16 file skipped as holding no text "without a byte-order mark" -----------------------

STORY = [
    "The river ran past the mill and the miller counted the sacks of flour twice before dawn.",
    "A lantern swung over the door of the inn while the travellers argued about the road north.",
    "Snow covered the square, and the children built a fort beside the well of the old town.",
    "The clockmaker opened the case and found a note folded small behind the pendulum.",
    "At the harbour the boats came in late, their nets heavy with herring and weed.",
]


def _u16_folder(tmp_path: Path) -> Path:
    """Three plain files and two gzip'd UTF-16 files with their byte-order mark."""
    folder = tmp_path / "u16"
    folder.mkdir()
    for i, text in enumerate(STORY[:3]):
        (folder / f"plain{i}.txt").write_text(text * 20)
    for i, text in enumerate(STORY[3:]):
        (folder / f"wide{i}.txt.gz").write_bytes(
            gzip.compress(codecs.BOM_UTF16_LE + (text * 20).encode("utf-16-le"))
        )
    return folder


_readable, _encoding = unpack.readable, unpack._encoding


def _mark_sought_in_stored_bytes(item: InputFile, scratch: Path, number: int) -> InputFile:
    """The planted unpacking: the byte-order mark looked for in the file's bytes as stored (for a compressed
    file, its compressed bytes), never in the decompressed ones."""
    with open(item.path, "rb") as handle:
        stored = handle.read(8)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(unpack, "_encoding", lambda _head: _encoding(stored))
        return _readable(item, scratch, number)


@pytest.mark.parametrize(
    "reader, fires",
    [
        pytest.param(_mark_sought_in_stored_bytes, True, marks=pytest.mark.gate("GATE-DATA-014")),
        pytest.param(_readable, False, marks=pytest.mark.holds("GATE-DATA-014")),
    ],
)
def test_a_gzipped_utf16_file_skipped_as_no_text_stops_stack_prepare(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reader: Any,
    fires: bool,
) -> None:
    monkeypatch.setattr(unpack, "readable", reader)
    out = tmp_path / "data"
    code = main(["prepare", str(_u16_folder(tmp_path)), "--val-fraction", "0.2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == (3 if fires else 0), err
    assert ("GATE-DATA-014" in err and "wide0.txt.gz: utf-16 text" in err) is fires, err
    if not fires:
        assert load_manifest(out).filters["main"].documents_in == 5


@pytest.mark.holds("GATE-DATA-014")
def test_utf16_without_a_mark_is_still_skipped_as_such(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file its bytes say is UTF-16 without a mark is skipped with that true reason."""
    folder = _u16_folder(tmp_path)
    (folder / "old.txt").write_bytes("Windows notepad, no mark".encode("utf-16-le"))
    code = main(["prepare", str(folder), "--val-fraction", "0.2", "--out", str(tmp_path / "data")])
    assert code == 0 and "old.txt: text in UTF-16 without a byte-order mark" in caplog.text, caplog.text


@pytest.mark.parametrize(
    "head, encoding",
    [
        (codecs.BOM_UTF16_LE + "text".encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + "text".encode("utf-16-be"), "utf-16"),
        ("text".encode("utf-32"), "utf-32"),
        ("text".encode("utf-16-le"), None),  # no mark
        (codecs.BOM_UTF16_LE + b"\x00\x00\x00\x00" + bytes(64), None),  # a NUL is no text
        (b"\x89PNG\r\n\x1a\n" + bytes(64), None),
        (b"plain text", None),
    ],
)
def test_marked_text_names_utf16_and_utf32_text_by_its_mark(head: bytes, encoding: str | None) -> None:
    assert marked_text(head) == encoding


# -- TensorBoard's `samples` and `events` texts held to the metrics lines ------------------------------

SETS = ("train.steps=4", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2", "train.tensorboard=true")
_mirror = tensorboard.Board.line


def _first_sample_only(board: tensorboard.Board, kind: str, fields: dict[str, Any]) -> None:
    """The planted Board: the `samples` text keeps only the first of a sample line's texts."""
    if kind == "sample":
        fields = {**fields, "texts": fields.get("texts", [])[:1]}
    _mirror(board, kind, fields)


def _no_events(board: tensorboard.Board, kind: str, fields: dict[str, Any]) -> None:
    """The planted Board: event lines no longer mirrored as the `events` text."""
    if kind in ("step", "eval", "sample"):
        _mirror(board, kind, fields)


@pytest.fixture(scope="module")
def tb_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorboard")
    return prepared(tmp_path_factory.mktemp("data-tb"))


def _tb_gate(run: Path) -> dict[str, Any]:
    record = json.loads((run / "metadata.json").read_text())
    return next(g for g in record["gates"] if g["id"] == "GATE-TRAIN-001")


@pytest.mark.parametrize(
    "board, shown",
    [
        pytest.param(_first_sample_only, "text samples at step", marks=pytest.mark.gate("GATE-TRAIN-001")),
        pytest.param(_no_events, "text events at step", marks=pytest.mark.gate("GATE-TRAIN-001")),
        pytest.param(_mirror, None, marks=pytest.mark.holds("GATE-TRAIN-001")),
    ],
)
def test_a_board_that_loses_texts_halts_the_run(
    tb_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    board: Any,
    shown: str | None,
) -> None:
    monkeypatch.setattr(tensorboard.Board, "line", board)
    run = tmp_path / "run"
    code = train(smoke_args(tb_data, run, *SETS))
    err = capsys.readouterr().err
    measured = _tb_gate(run)["measured"]
    lines = read_lines(run / METRICS_FILE)
    assert measured["tensorboard_texts_expected"] == sum(curves.expected_texts(lines).values()) > 0
    if shown is None:
        assert code == 0 and measured["tensorboard_mismatches"] == 0, err
        assert measured["tensorboard_texts"] == measured["tensorboard_texts_expected"]
    else:
        assert code == 3 and "GATE-TRAIN-001" in err and shown in err, err
        assert measured["tensorboard_mismatches"] > 0


def test_the_texts_the_rule_writes_match_their_lines_and_one_lost_does_not() -> None:
    lines = [
        {"type": "event", "kind": "schedule", "step": 0},
        {"type": "step", "step": 1, "loss": 2.0},
        {"type": "sample", "step": 1, "score": 0.5, "texts": ["a\nb", "c", "d"]},
        {"type": "event", "kind": "checkpoint", "path": "step-0000001"},
    ]
    written = [(tag, step, text) for tag, step, text in curves.expected_texts(lines).elements()]
    assert curves.text_mismatches(written, lines) == [] and len(written) == 3
    assert ("samples", 1, "    a\n    b\n\n    c\n\n    d") in written
    assert ("events", 1, "event: kind=checkpoint, path=step-0000001") in written
    wrong = curves.text_mismatches(written[1:], lines)
    assert len(wrong) == 1 and "is missing" in wrong[0]


# -- weights files written with the umask, not its complement ------------------------------------------


def _umask_without_its_complement(path: Path) -> None:
    """The planted writer: the umask applied without its complement (mode 0022 under umask 022)."""
    os.chmod(path, 0o666 & tensor_files.process_umask())


@pytest.mark.parametrize(
    "permissions, fires",
    [
        pytest.param(_umask_without_its_complement, True, marks=pytest.mark.gate("GATE-CKPT-001")),
        pytest.param(tensor_files.ordinary_permissions, False, marks=pytest.mark.holds("GATE-CKPT-001")),
    ],
)
def test_weights_written_unreadable_halt_the_run(
    tb_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    permissions: Any,
    fires: bool,
) -> None:
    monkeypatch.setattr(tensor_files, "ordinary_permissions", permissions)
    old = os.umask(0o022)
    try:
        code = train(smoke_args(tb_data, tmp_path / "run", "train.steps=2", "ckpt.every=2"))
    finally:
        os.umask(old)
    err = capsys.readouterr().err
    assert code == (3 if fires else 0), err
    assert ("GATE-CKPT-001" in err and "model.safetensors 0o22 (not 0o644)" in err) is fires, err


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o000])
def test_created_mode_clears_the_umask_and_off_mode_names_each_other_mode(umask: int) -> None:
    wanted = created_mode(umask)
    assert wanted == 0o666 & ~umask and off_mode({"a": wanted}, umask) == []
    assert off_mode({"a": wanted ^ 0o400}, umask) == [f"a {wanted ^ 0o400:#o} (not {wanted:#o})"]
