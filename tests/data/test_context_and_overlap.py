"""Inputs checked against the model they meet and against each other.

A length-like parameter past the model's context is refused before any work, or cut with the cut
written into the output and the record: never a figure computed on less than was asked. An
evaluation whose held-out items or texts are training data says so in its output and record.
Each case is planted just past the context and shown accepted at it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.data.corpus import document
from stack.data.formats import Layout
from stack.data.manifest import load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.split import index_row
from stack.eval import overlap as overlap_module
from tests.support.ft_support import CTX as FT_CTX
from tests.support.ft_support import saved
from tests.support.ledger_support import findings
from tests.support.paths import DATA
from tests.support.train_support import prepared, smoke_args, train, write_corpus

CTX = 32  # the smoke preset's context


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A DATA_DIR and a smoke run trained on it (context 32); the run's record names the data."""
    root = tmp_path_factory.mktemp("context")
    data, run = prepared(root), root / "run"
    assert train(smoke_args(data, run)) == 0
    return {"root": root, "data": data, "run": run}


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err


# -- lengths against the context ---------------------------------------------------------------


def test_lens_seq_len_past_the_context_is_refused_and_the_default_is_the_context(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["lens", str(world["run"]), "--train", "--data", str(world["data"]), "--steps", "2"]
    argv += ["--batch-size", "1", "--heldout-batches", "1"]
    assert main([*argv, "--save", str(tmp_path / "a.lens"), "--seq-len", str(CTX + 1)]) == 2
    assert f"--seq-len {CTX + 1} is longer than the model's context of {CTX}" in _err(capsys)
    assert not (tmp_path / "a.lens").exists()
    out = tmp_path / "record"
    assert main([*argv, "--save", str(tmp_path / "b.lens"), "--out", str(out)]) == 0  # default: 128 > 32
    assert read_evidence(out / "metadata.json").config["seq_len"] == CTX
    assert f"× {CTX} tokens" in capsys.readouterr().out


def test_memorization_prefix_and_continuation_past_the_context_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    least = int(load_spec().threshold("GATE-FT-003", "min_verbatim_tokens"))
    examples = tmp_path / "examples.jsonl"
    examples.write_text("".join(json.dumps({"text": "gate evidence model " * 20}) + "\n" for _ in range(3)))
    run = str(saved(tmp_path, 0))  # a model of context ft_support.CTX: room for the least continuation
    argv = ["memorization", run, "--base", run, "--examples", str(examples), "--n", "3", "--json"]
    assert main([*argv, "--prefix", str(FT_CTX - least + 1)]) == 2
    err = _err(capsys)
    assert f"--prefix {FT_CTX - least + 1} + --continuation {least} tokens do not fit the context" in err
    assert main([*argv, "--prefix", str(FT_CTX - least)]) == 0


@pytest.mark.parametrize(
    ("prompt", "tokens", "notes"),
    [
        ("x" * (CTX - 5), 5, []),
        ("x" * (CTX - 5), 6, [f"{CTX - 5} + 6 tokens pass the model's context of {CTX}"]),
        (
            "x" * CTX,
            1,
            [f"the prompt is {CTX} tokens and the model's context {CTX}", f"{CTX} + 1 tokens pass"],
        ),
    ],
)
def test_sample_says_what_the_context_did_to_the_request(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str], prompt: str, tokens: int, notes: list[str]
) -> None:
    assert main(["sample", str(world["run"]), "--prompt", prompt, "--tokens", str(tokens)]) == 0
    err = _err(capsys)
    assert err.count("stack sample: note:") == len(notes)
    assert all(note in err for note in notes)


def test_synth_records_each_length_the_context_cuts(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "synth"
    argv = ["synth", str(world["run"]), "--out", str(out), "--samples", "2", "--min-chars", "0"]
    argv += ["--min-coherence", "0.001", "--max-instruction-tokens", "4", "--max-response-tokens", "500"]
    assert main(argv) == 0
    sidecar = json.loads((out / "synth.json").read_text())
    cut = sidecar["clamped"]
    assert list(cut) == ["max_response_tokens"] and cut["max_response_tokens"]["asked"] == 500
    assert cut["max_response_tokens"]["at_most"] < CTX
    assert read_evidence(out / "metadata.json").config["clamped"] == cut
    assert "--max-response-tokens 500 is more than the model's context" in _err(capsys)


def test_prepare_pack_len_is_checked_against_the_model_whose_tokenizer_it_takes(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chat = DATA / "chat_small.jsonl"
    argv = ["prepare", str(chat), "--format", "chat", "--tokenizer", str(world["run"]), "--val-fraction", "0"]
    assert main([*argv, "--pack-len", str(CTX + 1), "--out", str(tmp_path / "a")]) == 2
    assert f"--pack-len {CTX + 1} is longer than" in _err(capsys) and not (tmp_path / "a").exists()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"prompt": f"Q{i}", "chosen": " y", "rejected": " n"}) + "\n" for i in range(4))
    )
    prefs = [
        "prepare",
        str(pairs),
        "--format",
        "prefs",
        "--tokenizer",
        str(world["run"]),
        "--val-fraction",
        "0",
    ]
    assert main([*prefs, "--pack-len", str(CTX + 2), "--out", str(tmp_path / "b")]) == 2
    assert (
        main([*prefs, "--pack-len", str(CTX + 1), "--out", str(tmp_path / "c")]) == 0
    )  # a row predicts one more
    capsys.readouterr()
    # The default fits the examples within the model's context: the shortest that admits them all.
    assert main([*prefs, "--out", str(tmp_path / "d")]) == 0
    assert "--pack-len 5, the shortest that admits every example" in _err(capsys)
    entry = load_manifest(tmp_path / "d").sft
    assert entry is not None and entry.pack_len == 2 * 5


def test_prepare_offers_no_pack_len_beyond_the_model_its_data_is_for(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A too-long example's hint stays within the context of the model whose tokenizer is taken:
    it names the length that admits it only where that model reads it."""
    chats = tmp_path / "chats.jsonl"

    def chat(question: str) -> str:
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": "ok"}]
        return json.dumps({"messages": messages}) + "\n"

    chats.write_text(chat("word " * 20))
    argv = ["prepare", str(chats), "--format", "chat", "--tokenizer", str(world["run"])]
    argv += ["--val-fraction", "0"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert f"no --pack-len admits it, the model reads at most {CTX}" in _err(capsys)
    chats.write_text(chat("hi") + chat("word " * 20))
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "too_long 1" in out and f"no --pack-len admits it, the model reads at most {CTX}" in out
    chats.write_text(chat("hi") + chat("hi there"))
    assert main([*argv, "--pack-len", "26", "--out", str(tmp_path / "c")]) == 0
    longest = load_manifest(tmp_path / "c").sft.longest_dropped  # type: ignore[union-attr]
    assert longest is not None and longest <= CTX
    assert f"--pack-len {longest} admits it)" in capsys.readouterr().out


# -- evaluation overlap -------------------------------------------------------------------------


def _items(path: Path, items: list[tuple[str, str]]) -> Path:
    path.write_text(
        "".join(json.dumps({"id": i, "prompt": p, "completion": " done."}) + "\n" for i, p in items)
    )
    return path


def test_evalmatrix_names_held_out_items_that_are_training_items(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = [(f"t{i}", f"train prompt {i}:") for i in range(6)]
    held = [("t1", "another prompt:"), ("h1", "train   prompt 2:"), ("h2", "fresh prompt:")]
    argv = ["evalmatrix", str(world["run"]), "--train", str(_items(tmp_path / "train.jsonl", pool)), "--json"]
    record = tmp_path / "record"
    assert main([*argv, "--items", str(_items(tmp_path / "items.jsonl", held)), "--record", str(record)]) == 0
    found = capsys.readouterr()
    expected = {"by_id": ["t1"], "by_text": ["h1"]}
    assert json.loads(found.out)["overlap"] == expected
    assert read_evidence(record / "metadata.json").metrics["overlap"] == expected
    assert "2 held-out item(s) are also training items (by id: t1; by prompt text: h1)" in found.err
    clean = _items(tmp_path / "clean.jsonl", [("h2", "fresh prompt:"), ("h3", "other prompt:")])
    assert main([*argv, "--items", str(clean)]) == 0
    found = capsys.readouterr()
    assert (
        json.loads(found.out)["overlap"] == {"by_id": [], "by_text": []} and "also training" not in found.err
    )


def test_eval_says_when_its_text_is_training_data(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = world["root"] / "corpus"
    trained = next(p for p in sorted(corpus.iterdir()) if _is_training(world["data"], p.read_bytes()))
    record = tmp_path / "a"
    assert main(["eval", str(world["run"]), "--text", str(trained), "--record", str(record)]) == 0
    found = capsys.readouterr()
    whole = {"text_documents": 1, "text_documents_in_training": 1}
    assert json.loads(found.out)["overlap"].items() >= whole.items()
    assert read_evidence(record / "metadata.json").metrics["overlap"].items() >= whole.items()
    assert "the text is a training document of the run" in found.err
    fresh = tmp_path / "fresh.txt"
    fresh.write_text("a text the run never read\n")
    assert main(["eval", str(world["run"]), "--text", str(fresh)]) == 0
    found = capsys.readouterr()
    assert json.loads(found.out)["overlap"]["text_documents_in_training"] == 0 and "warning" not in found.err


def _is_training(data: Path, text: bytes) -> bool:
    from stack.eval.overlap import text_overlap

    return bool(text_overlap(text, data)["text_documents_in_training"])


@pytest.fixture(scope="module")
def cut(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One text file that `stack prepare` cut into pieces of at most 2 KiB, some held out, and a
    smoke run trained on the pieces it did not hold out."""
    root = tmp_path_factory.mktemp("cut")
    corpus = write_corpus(root)
    text = root / "whole" / "all.txt"
    text.parent.mkdir()
    text.write_bytes(b"".join(path.read_bytes() for path in sorted(corpus.iterdir())))
    data, run = root / "data", root / "run"
    prepare_corpus([text.parent], data, val_fraction=0.25, layout=Layout(doc_bytes=2048))
    assert train(smoke_args(data, run, "train.steps=2", "eval.every=2", "ckpt.every=2")) == 0
    return {"text": text, "data": data, "run": run}


def test_eval_counts_the_pieces_of_a_file_prepare_cut(
    cut: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file is in the document index as its pieces, never whole: scored whole, it is counted
    piece by piece, each found in the index, the training ones as the index has them."""
    index = overlap_module._index(cut["data"])
    pieces, trained = len(index), int((index["heldout"] == 0).sum())
    assert 0 < trained < pieces
    record = tmp_path / "record"
    assert main(["eval", str(cut["run"]), "--text", str(cut["text"]), "--record", str(record)]) == 0
    found = capsys.readouterr()
    counted = {"text_documents": pieces, "text_documents_in_training": trained}
    assert json.loads(found.out)["overlap"].items() >= counted.items()
    assert f"{trained} of the text's {pieces} documents, as `stack prepare` cut that data, are" in found.err
    gate = next(g for g in read_evidence(record / "metadata.json").gates if g.id == "GATE-EVAL-003")
    assert gate.verdict.value == "PASS"


@pytest.fixture(scope="module")
def tuned(cut: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cut run fine-tuned two steps on other text (`--init-from`): a model that learned from two
    DATA_DIRs, the tuning's last."""
    root = tmp_path_factory.mktemp("tuned")
    data, run = prepared(root), root / "tuned"  # a run id of its own beside the base's `run`
    steps = ("train.steps=2", "eval.every=2", "ckpt.every=2")
    assert train([*smoke_args(data, run, *steps), "--init-from", str(cut["run"])]) == 0
    return {"data": data, "run": run}


def _score_the_base_s_text(cut: dict[str, Path], tuned: dict[str, Path], tmp_path: Path) -> Path:
    """`stack eval` of the tuned model on the file its base trained on, recorded; the record's
    directory."""
    record = tmp_path / "record"
    assert main(["eval", str(tuned["run"]), "--text", str(cut["text"]), "--record", str(record)]) == 0
    return record


def test_a_tuned_model_is_compared_with_what_its_base_learned_from(
    cut: dict[str, Path], tuned: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scored on the file its base trained on, the tuned model states that file's pieces trained on
    in `earlier_training_data` and warns of them; the integrity check holds the list to the chain of
    the two runs' records."""
    index = overlap_module._index(cut["data"])
    record = _score_the_base_s_text(cut, tuned, tmp_path)
    found = capsys.readouterr()
    overlap = json.loads(found.out)["overlap"]
    assert overlap["training_data"] == str(tuned["data"].resolve())
    [earlier] = overlap["earlier_training_data"]
    counted = {"data": str(cut["data"].resolve()), "text_documents": len(index)}
    assert (
        earlier.items()
        >= {**counted, "text_documents_in_training": int((index["heldout"] == 0).sum())}.items()
    )
    assert "training documents of a model it was tuned from" in found.err
    assert findings(record, tuned["run"], cut["run"]) == []


@pytest.mark.holds("GATE-INTEG-001")
def test_a_base_gone_at_evaluation_is_stated_and_the_chain_stops_there(
    cut: dict[str, Path],
    tuned: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the base run is no longer where the tuning found it, what it learned from is unknown:
    the record says so as its list's last row, a note names it, and the integrity check, which
    finds the base in the chain of records, takes the list as ending there."""
    from stack.train import checkpoint

    listed = checkpoint.list_checkpoints

    def gone(run_dir: Path) -> list[Path]:
        return [] if Path(run_dir).resolve() == cut["run"].resolve() else listed(run_dir)

    monkeypatch.setattr(checkpoint, "list_checkpoints", gone)
    record = _score_the_base_s_text(cut, tuned, tmp_path)
    assert (
        f"the model was tuned from {cut['run'].resolve()}, which is not there any more"
        in capsys.readouterr().err
    )
    overlap = read_evidence(record / "metadata.json").metrics["overlap"]
    assert overlap["earlier_training_data"] == [{"model": str(cut["run"].resolve()), "gone": True}]
    assert findings(record, tuned["run"], cut["run"]) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_an_evaluation_that_drops_the_base_s_training_data_is_caught(
    cut: dict[str, Path],
    tuned: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: the chain of DATA_DIRs stops at the tuning's own. The record states no earlier
    training data, and the integrity check, following the chain of records, names the base's."""
    from stack.train import lineage

    chain = lineage.training_chain
    monkeypatch.setattr(
        lineage, "training_chain", lambda checkpoint: lineage.TrainingChain(chain(checkpoint).data_dirs[:1])
    )
    record = _score_the_base_s_text(cut, tuned, tmp_path)
    capsys.readouterr()
    assert "earlier_training_data" not in read_evidence(record / "metadata.json").metrics["overlap"]
    found = findings(record, tuned["run"], cut["run"])
    assert any(
        "earlier_training_data names [], but the models the scored model was tuned" in f for f in found
    )


def test_an_import_of_the_run_s_export_is_compared_with_the_run_s_data(
    cut: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exported and imported back, the weights are the run's: the import's overlap follows its
    export's record to the run's DATA_DIR. Weights swapped in the export after it was written are
    another model's, and nothing is followed (no training data known)."""
    export, imported = tmp_path / "hf", tmp_path / "imported"
    assert main(["export", str(cut["run"]), "--format", "hf", "--out", str(export)]) == 0
    assert main(["import-hf", str(export), "--out", str(imported)]) == 0
    capsys.readouterr()
    assert main(["eval", str(imported), "--text", str(cut["text"])]) == 0
    index = overlap_module._index(cut["data"])
    stated = json.loads(capsys.readouterr().out)["overlap"]
    assert stated["training_data"] == str(cut["data"].resolve())
    assert stated["text_documents_in_training"] == int((index["heldout"] == 0).sum())
    weights = export / "model.safetensors"
    swapped = load_file(weights)
    swapped = {name: tensor + 1e-3 for name, tensor in swapped.items()}
    save_file(swapped, weights)
    assert main(["import-hf", str(export), "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "other"), "--text", str(cut["text"])]) == 0
    assert json.loads(capsys.readouterr().out)["overlap"] == {"training_data": None}


def test_eval_says_when_other_data_was_cut_otherwise_than_the_run_s(
    cut: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Held-out documents of data cut at 4 KiB hold the run's 2 KiB pieces in other pieces, which no
    content id matches: the count of those trained on is a floor, and a note says why."""
    other = tmp_path / "other"
    prepare_corpus([cut["text"].parent], other, val_fraction=0.5, seed=3, layout=Layout(doc_bytes=4096))
    assert main(["eval", str(cut["run"]), "--split", "val", "--data", str(other)]) == 0
    err = capsys.readouterr().err
    assert "--doc-bytes 4.0 KiB there, 2.0 KiB in the run's" in err
    assert main(["eval", str(cut["run"]), "--split", "val"]) == 0
    assert "cut its files" not in capsys.readouterr().err


def test_a_text_is_read_at_the_separator_of_the_training_data(tmp_path: Path) -> None:
    """Data read with --doc-sep holds the text's documents between separators: each is found."""
    text = b"first story\n<|endoftext|>\nsecond story\n<|endoftext|>\nthird story\n"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "stories.txt").write_bytes(text)
    prepare_corpus(
        [tmp_path / "in"], tmp_path / "data", val_fraction=0.0, layout=Layout(doc_sep="<|endoftext|>")
    )
    stated = overlap_module.text_overlap(text, tmp_path / "data")
    assert stated["text_documents"] == 3 and stated["text_documents_in_training"] == 3


def test_eval_counts_held_out_documents_of_other_data_that_the_run_trained_on(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    argv = [
        "prepare",
        str(world["root"] / "corpus"),
        "--out",
        str(other),
        "--val-fraction",
        "0.5",
        "--seed",
        "7",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["eval", str(world["run"]), "--split", "val", "--data", str(other)]) == 0
    found = capsys.readouterr()
    overlap = json.loads(found.out)["overlap"]
    assert overlap["heldout_documents_in_training"] > 0
    assert (
        f"{overlap['heldout_documents_in_training']} of the {overlap['heldout_documents']} held-out"
        in found.err
    )
    assert main(["eval", str(world["run"]), "--split", "val"]) == 0  # its own held-out split: disjoint
    assert json.loads(capsys.readouterr().out)["overlap"]["heldout_documents_in_training"] == 0


def _heldout_read_as_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: a DATA_DIR's training documents read as those its index holds out."""

    def training_documents(data_dir: Path) -> object:
        index = overlap_module._index(data_dir)
        return index["doc"][index["heldout"] == 1]

    monkeypatch.setattr(overlap_module, "training_documents", training_documents)


@pytest.mark.gate("GATE-EVAL-003")
def test_an_overlap_counting_held_out_documents_as_training_ones_is_refused(
    world: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under the planted reading the run's own held-out split is stated as trained on, and a file the
    run trained on as not: each stated overlap is not the one the document indexes give, exit 3."""
    corpus = world["root"] / "corpus"
    trained = next(p for p in sorted(corpus.iterdir()) if _is_training(world["data"], p.read_bytes()))
    _heldout_read_as_training(monkeypatch)
    for extra in (["--split", "val"], ["--text", str(trained)]):
        _overlap_refused(world["run"], extra, tmp_path / extra[0].strip("-"))
    capsys.readouterr()


def _overlap_refused(run: Path, extra: list[str], record: Path) -> None:
    """`stack eval RUN *extra` exits 3, its record's GATE-EVAL-003 failing on the overlap stated."""
    assert main(["eval", str(run), *extra, "--record", str(record)]) == 3
    gate = next(g for g in read_evidence(record / "metadata.json").gates if g.id == "GATE-EVAL-003")
    assert gate.verdict.value == "FAIL" and "document indexes give" in str(gate.message)


def _read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the overlap stated reads the scored file as one document, whatever prepare cut it into."""

    def text_overlap(text: bytes, training: Path) -> dict[str, object]:
        whole = index_row(document("", text).sha, "train")[0]
        trained = int(np.isin(whole, overlap_module.training_documents(training)))
        return {"training_data": str(training), "text_documents": 1, "text_documents_in_training": trained}

    monkeypatch.setattr(overlap_module, "text_overlap", text_overlap)


@pytest.mark.gate("GATE-EVAL-003")
def test_an_overlap_that_reads_a_cut_file_whole_is_refused(
    cut: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under the planted reading the file the run trained most of is stated as 0 of 1 document
    trained on; the pieces the indexes hold say otherwise, and the check exits 3."""
    _read_whole(monkeypatch)
    _overlap_refused(cut["run"], ["--text", str(cut["text"])], tmp_path / "record")
    capsys.readouterr()
