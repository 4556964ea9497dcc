"""The tokenizer travels with the model, and is known by what it does.

One tokenizer in three files (the stack's BPE record in a checkpoint, its Hugging Face export's
tokenizer.json, the model imported back) has one identity and encodes the probe text alike, so
GATE-DATA-007 lets a model fine-tune on data made by any of them; a tokenizer that differs in one
merge, one special token's id or its normalizer is another, and the gate fires. `stack prepare
--tokenizer RUN_DIR` takes the model's own tokenizer in every format and names its identity in
the manifest; a chat template's special tokens become the ids the model's tokenizer has for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from contracts.errors import EXIT_BAD_INPUT, BadInput, GateViolation
from stack.cli import main
from stack.data.manifest import load_manifest
from stack.data.sft_template import load_template, render
from stack.data.tokenizer import (
    BpeTokenizer,
    ByteTokenizer,
    PretrainedTokenizer,
    Tokenizer,
    load_tokenizer,
    train_bpe,
)
from stack.data.tokenizer_identity import PROBE_TEXT, hf_form, probe_sha256
from stack.export.hf_tokenizer import STATE_FILE, model_tokenizer
from stack.train import checkpoint as ckpt
from stack.train.tokenizer_match import check_data_tokenizer
from tests.support.hf_fixtures import TEXT, llama2_tokenizer, qwen2_tokenizer
from tests.support.paths import DATA
from tests.support.trace_support import save_run, tiny_model

GATE = "GATE-DATA-007"


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny model with the stack's BPE as a run, its Hugging Face export and the export imported."""
    root = tmp_path_factory.mktemp("family")
    bpe = train_bpe([TEXT], 300)
    run, export, imported = root / "run", root / "export", root / "imported"
    save_run(run, tiny_model(vocab=bpe.vocab_size, ctx=64), tokenizer=bpe)
    assert main(["export", str(run), "--format", "hf", "--out", str(export)]) == 0
    assert main(["import-hf", str(export), "--out", str(imported)]) == 0
    return {"run": run, "export": export, "imported": imported}


def checkpoint_of(run: Path) -> ckpt.Checkpoint:
    return ckpt.load_checkpoint(ckpt.latest_valid(run)[0])


def three_files(family: dict[str, Path]) -> dict[str, Tokenizer]:
    """The one tokenizer as the checkpoint's BPE record, the export's tokenizer.json, and re-imported."""
    return {
        "stack BPE record": model_tokenizer(family["run"]),
        "HF export tokenizer.json": PretrainedTokenizer.from_dir(family["export"]),
        "re-import": model_tokenizer(family["imported"]),
    }


@pytest.mark.holds(GATE)
def test_one_tokenizer_in_three_files_has_one_identity_and_the_gate_holds(family: dict[str, Path]) -> None:
    tokenizers = three_files(family)
    model = checkpoint_of(family["run"])
    assert isinstance(tokenizers["stack BPE record"], BpeTokenizer)
    assert isinstance(tokenizers["HF export tokenizer.json"], PretrainedTokenizer)
    assert len({t.sha256 for t in tokenizers.values()}) > 1  # the files differ byte for byte...
    assert len({t.identity for t in tokenizers.values()}) == 1  # ...the tokenizer does not
    assert len({probe_sha256(t) for t in tokenizers.values()}) == 1
    for tokenizer in tokenizers.values():
        assert tokenizer.encode(PROBE_TEXT) == tokenizers["stack BPE record"].encode(PROBE_TEXT)
        check_data_tokenizer(tokenizer, model)  # GATE-DATA-007 holds for each
    state = json.loads((family["export"] / STATE_FILE).read_text())
    assert state["identity"] == tokenizers["re-import"].identity


def test_every_checkpoint_and_the_run_carry_the_tokenizer_as_a_hugging_face_file(
    family: dict[str, Path],
) -> None:
    checkpoint = checkpoint_of(family["run"])
    identity = model_tokenizer(family["run"]).identity
    for directory in (checkpoint.path, family["run"], family["imported"], family["export"]):
        from_file = PretrainedTokenizer(
            (directory / "tokenizer.json").read_text(encoding="utf-8"), "<|endoftext|>", str(directory)
        )
        assert from_file.identity == identity, directory
    assert "tokenizer.json" in ckpt.read_manifest(checkpoint.path)["files"]  # verified on load


def test_the_byte_tokenizer_and_its_hugging_face_form_are_one(tmp_path: Path) -> None:
    byte = ByteTokenizer()
    hf_form(byte).save(str(tmp_path / "tokenizer.json"))
    again = PretrainedTokenizer((tmp_path / "tokenizer.json").read_text(), "<|endoftext|>", "byte export")
    assert again.identity == byte.identity and probe_sha256(again) == probe_sha256(byte)
    assert byte.identity != train_bpe([TEXT], 300).identity


def _one_merge_less(family: dict[str, Path]) -> Tokenizer:
    record = json.loads(model_tokenizer(family["run"]).to_json())  # type: ignore[attr-defined]
    record["model"]["merges"] = record["model"]["merges"][:-1]
    return BpeTokenizer.from_json(json.dumps(record), "one merge less")


def _normalized(family: dict[str, Path]) -> Tokenizer:
    record = json.loads((family["export"] / "tokenizer.json").read_text())
    record["normalizer"] = {"type": "NFKC"}
    return PretrainedTokenizer(json.dumps(record), "<|endoftext|>", "normalised")


@pytest.mark.gate(GATE)
@pytest.mark.parametrize("planted", ["one merge", "normalizer"])
def test_a_tokenizer_that_differs_in_one_merge_or_its_normalizer_fires_the_gate(
    planted: str, family: dict[str, Path]
) -> None:
    other = (_one_merge_less if planted == "one merge" else _normalized)(family)
    model = checkpoint_of(family["run"])
    assert other.vocab_size == model_tokenizer(family["run"]).vocab_size  # sizes cannot tell
    with pytest.raises(GateViolation, match=f"{GATE}.*is not the one the model learned"):
        check_data_tokenizer(other, model)


@pytest.mark.gate(GATE)
def test_a_tokenizer_that_differs_in_one_special_token_id_fires_the_gate(tmp_path: Path) -> None:
    own = PretrainedTokenizer.from_dir(llama2_tokenizer(tmp_path / "llama2"))
    model_dir = tmp_path / "model"
    save_run(model_dir, tiny_model(vocab=own.vocab_size, ctx=64), tokenizer=own)
    record = json.loads(own.to_json())
    ids = {"<s>": record["model"]["vocab"]["</s>"], "</s>": record["model"]["vocab"]["<s>"]}
    record["model"]["vocab"].update(ids)  # <s> and </s> trade ids, in the vocabulary and as added tokens
    for token in record["added_tokens"]:
        token["id"] = ids.get(token["content"], token["id"])
    swapped = PretrainedTokenizer(json.dumps(record), own.eot_token, "swapped")
    assert swapped.vocab_size == own.vocab_size and swapped.eot_id != own.eot_id
    assert swapped.encode(TEXT) == own.encode(TEXT)  # even the text's ids cannot tell
    check_data_tokenizer(own, checkpoint_of(model_dir))  # its own holds
    with pytest.raises(GateViolation, match=GATE):
        check_data_tokenizer(swapped, checkpoint_of(model_dir))


# -- `stack prepare --tokenizer RUN_DIR` ------------------------------------------------------


def _inputs(root: Path, fmt: str) -> tuple[list[str], list[str]]:
    """(INPUT arguments, extra options) of a small input of each prepare format."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = DOCUMENTS
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "text":
        for i, line in enumerate(lines):
            (root / f"doc{i}.txt").write_text(line)
        return [str(root)], []
    if fmt == "separated text":
        (root / "all.txt").write_text("\n\n".join(lines))
        return [str(root / "all.txt")], ["--doc-sep", "\\n\\n"]
    if fmt == "jsonl":
        (root / "docs.jsonl").write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
        return [str(root / "docs.jsonl")], []
    if fmt == "parquet":
        pq.write_table(pa.table({"text": lines}), root / "docs.parquet")
        return [str(root / "docs.parquet")], []
    if fmt == "csv":
        (root / "docs.csv").write_text(
            "n,body\n" + "".join(f'{i},"{line}"\n' for i, line in enumerate(lines))
        )
        return [str(root / "docs.csv")], ["--text-column", "body"]
    if fmt == "chat":
        return [str(DATA / "chat_small.jsonl")], ["--format", "chat", "--pack-len", "64"]
    if fmt == "prompt-completion":
        return [str(DATA / "prompt_completion_small.jsonl")], [
            "--format",
            "prompt-completion",
            "--pack-len",
            "64",
        ]
    return [str(DATA / "prefs_small.jsonl")], ["--format", "prefs", "--pack-len", "48"]


DOCUMENTS = [
    f"Document {i}: the gate holds when the run does what the spec says, {i * i} times." for i in range(20)
]
FORMATS = ["text", "separated text", "jsonl", "parquet", "csv", "chat", "prompt-completion", "prefs"]


@pytest.mark.holds(GATE)
@pytest.mark.parametrize("fmt", FORMATS)
def test_prepare_with_a_run_s_tokenizer_in_every_format(
    fmt: str, family: dict[str, Path], tmp_path: Path
) -> None:
    inputs, options = _inputs(tmp_path / "in", fmt)
    out = tmp_path / "data"
    argv = ["prepare", *inputs, *options, "--tokenizer", str(family["run"]), "--val-fraction", "0.2"]
    assert main([*argv, "--out", str(out)]) == 0
    own = model_tokenizer(family["run"])
    manifest = load_manifest(out)
    assert manifest.tokenizer.name == "bpe" and manifest.tokenizer.identity == own.identity
    check_data_tokenizer(load_tokenizer(out), checkpoint_of(family["run"]))  # GATE-DATA-007 holds
    if manifest.sft is None:  # a corpus: every document is the model's ids of its text, then EOT
        tokens = sum(len(own.encode(d)) + 1 for d in DOCUMENTS)
        assert sum(t.tokens for t in manifest.totals.values()) == tokens


@pytest.mark.parametrize("kind", ["run", "checkpoint", "export", "imported", "data dir"])
def test_every_directory_a_model_lives_in_names_its_tokenizer(
    kind: str, family: dict[str, Path], tmp_path: Path
) -> None:
    inputs, _ = _inputs(tmp_path / "in", "text")
    source = {
        "checkpoint": checkpoint_of(family["run"]).path,
        "data dir": tmp_path / "first",
    }.get(kind, family.get(kind))
    if kind == "data dir":
        assert main(["prepare", *inputs, "--tokenizer", str(family["run"]), "--out", str(source)]) == 0
    assert main(["prepare", *inputs, "--tokenizer", str(source), "--out", str(tmp_path / "data")]) == 0
    assert load_manifest(tmp_path / "data").tokenizer.identity == model_tokenizer(family["run"]).identity


def test_a_tokenizer_that_is_neither_a_name_nor_a_model_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs, _ = _inputs(tmp_path / "in", "text")
    for value, needle in (
        (str(tmp_path / "missing"), "is not there (no such file or directory); `stack prepare --tokenizer`"),
        (
            str(tmp_path / "in"),
            "is a directory of plain files; `stack prepare --tokenizer` needs a directory",
        ),
    ):
        assert (
            main(["prepare", *inputs, "--tokenizer", value, "--out", str(tmp_path / "data")])
            == EXIT_BAD_INPUT
        )
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    with pytest.raises(BadInput, match="--vocab-size applies to --tokenizer bpe"):
        from stack.data.pretrained import given_tokenizer

        given_tokenizer(ByteTokenizer(), 300)


# -- a chat template's special tokens are the tokenizer's ------------------------------------

CHATML = """
name: chatml
roles:
  system: {prefix: "<|im_start|>system\\n", suffix: "<|im_end|>\\n"}
  user: {prefix: "<|im_start|>user\\n", suffix: "<|im_end|>\\n"}
  assistant: {prefix: "<|im_start|>assistant\\n"}
assistant_marker: "<|im_start|>assistant\\n"
"""


def test_a_template_s_special_tokens_are_the_model_s_ids_and_a_message_s_are_text(tmp_path: Path) -> None:
    qwen = PretrainedTokenizer.from_dir(qwen2_tokenizer(tmp_path / "qwen"))
    (tmp_path / "chatml.yaml").write_text(CHATML)
    template = load_template(str(tmp_path / "chatml.yaml"))
    start, end = qwen.special_tokens["<|im_start|>"], qwen.special_tokens["<|im_end|>"]
    turns = [("user", "Say <|im_start|> twice."), ("assistant", "Done.")]
    rendered = render(template, qwen, turns, "example")
    assert list(rendered.ids).count(start) == 2 and list(rendered.ids).count(end) == 1  # the template's
    assert qwen.encode("<|im_start|>") != [start]  # the message's stays text
    supervised = rendered.ids[rendered.mask.astype(bool)]
    assert list(supervised) == [*qwen.encode("Done."), qwen.eot_id]
    # The byte tokenizer has no such token: the same template is text to it.
    as_bytes = render(template, ByteTokenizer(), turns, "example")
    assert bytes(as_bytes.ids[as_bytes.ids < 256].astype(np.uint8)).startswith(b"<|im_start|>user\n")


def test_prepare_chat_with_a_model_s_tokenizer_uses_its_special_tokens(tmp_path: Path) -> None:
    qwen = qwen2_tokenizer(tmp_path / "qwen")
    (tmp_path / "chatml.yaml").write_text(CHATML)
    out = tmp_path / "chat"
    argv = [
        "prepare",
        str(DATA / "chat_small.jsonl"),
        "--format",
        "chat",
        "--template",
        str(tmp_path / "chatml.yaml"),
    ]
    assert main([*argv, "--tokenizer", f"hf:{qwen}", "--pack-len", "128", "--out", str(out)]) == 0
    manifest = load_manifest(out)
    start = load_tokenizer(out).special_tokens["<|im_start|>"]
    assert manifest.sft is not None and manifest.sft.markers_missing == 0
    found = sum(
        int((np.fromfile(out / shard.path, dtype=manifest.dtype, offset=32) == start).sum())
        for shard in manifest.shards
    )
    lines = (DATA / "chat_small.jsonl").read_text().splitlines()
    assert found == sum(len(json.loads(line)["messages"]) for line in lines)  # one per turn, as one id
