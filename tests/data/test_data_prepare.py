"""`stack prepare`: what it writes, what it refuses, and that it never touches what it did not write."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contracts.errors import EXIT_BAD_INPUT, EXIT_GATE, BadInput, GateViolation
from contracts.judges import judge
from contracts.spec import load_spec
from contracts.split import document_identity, share_tail
from stack.artifacts import INDEX_FILE
from stack.data import prepare as prepare_module
from stack.data import split as splitting
from stack.data.corpus import STDLIB_SOURCE, stdlib_dir
from stack.data.filters.droplog import DROP_LOG_FILE
from stack.data.manifest import MANIFEST_FILE, load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.sft_prepare import prepare_sft
from stack.data.shards import HEADER, MAGIC, dtype_for
from stack.data.tokenizer import load_tokenizer
from tests.support.ledger_support import edited, findings, gate
from tests.support.paths import DATA
from tests.support.prepare_support import run_cli, text_docs, write_docs


def shard_tokens(data: Path, split: str) -> np.ndarray:
    manifest = load_manifest(data)
    parts = [
        np.fromfile(data / s.path, dtype="<u2", offset=HEADER.size).astype(np.int64)
        for s in manifest.shards_of(split)
    ]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def test_manifest_shards_and_counts(tmp_path: Path) -> None:
    docs = text_docs(30) | {
        "bin/blob.dat": b"\x00\x01\x02binary",
        "empty.txt": "",
        "latin1.txt": b"caf\xe9 au lait\n",
        ".hidden/secret.txt": "never read",
    }
    data = tmp_path / "data"
    corpus = write_docs(tmp_path / "in", docs)
    os.mkfifo(corpus / "pipe")  # reading it would block forever
    (corpus / "dangling").symlink_to(tmp_path / "gone")
    manifest = prepare_corpus([corpus], data, val_fraction=0.2)
    stats = manifest.sources["main"]
    assert (stats.files, stats.binary_skipped, stats.empty_skipped, stats.invalid_utf8_files) == (33, 1, 1, 1)
    assert stats.documents == 31 == manifest.totals["train"].documents + manifest.totals["heldout"].documents
    assert manifest.totals["heldout"].documents > 0
    assert manifest.dtype == "uint16" and manifest.tokenizer.vocab_size == 257
    assert manifest.sha256 == load_manifest(data).sha256
    for shard in manifest.shards:
        assert not Path(shard.path).is_absolute()
        magic, version, itemsize, tokens, documents = HEADER.unpack(
            (data / shard.path).read_bytes()[: HEADER.size]
        )
        assert (magic, version, itemsize, tokens, documents) == (MAGIC, 1, 2, shard.tokens, shard.documents)
    # Documents are separated by EOT, and the text comes back (invalid bytes as U+FFFD).
    tok = load_tokenizer(data)
    texts = {
        tok.decode(part.tolist())
        for split in ("train", "heldout")
        for part in np.split(
            shard_tokens(data, split), np.flatnonzero(shard_tokens(data, split) == tok.eot_id) + 1
        )
        if part.size
    }
    assert "caf\ufffd au lait\n" in texts and docs["doc007.txt"] in texts and "never read" not in texts


def test_prepare_is_deterministic(tmp_path: Path) -> None:
    corpus = write_docs(tmp_path / "in", text_docs(20))
    first = prepare_corpus([corpus], tmp_path / "a", val_fraction=0.3)
    second = prepare_corpus([corpus], tmp_path / "b", val_fraction=0.3)
    assert first.sha256 == second.sha256
    assert (tmp_path / "a" / MANIFEST_FILE).read_bytes() == (tmp_path / "b" / MANIFEST_FILE).read_bytes()
    third = prepare_corpus([corpus], tmp_path / "c", val_fraction=0.3, seed=1)
    assert third.sha256 != first.sha256


def test_split_follows_content_not_path(tmp_path: Path) -> None:
    docs = text_docs(40)
    copies = {f"copies/{rel}": text for rel, text in docs.items()}
    manifest = prepare_corpus([write_docs(tmp_path / "in", docs | copies)], tmp_path / "d", val_fraction=0.3)
    assert manifest.duplicate_documents == 40
    index = np.load(tmp_path / "d" / INDEX_FILE)
    for doc in np.unique(index["doc"]):
        assert len(set(index["heldout"][index["doc"] == doc])) == 1
    for rel, text in docs.items():
        sha = document_identity(text.encode())
        assert splitting.assign_split(sha, 0, 0.3) == splitting.assign_split(sha, 0, 0.3), rel


def test_sources_by_name_and_glob(tmp_path: Path) -> None:
    web = write_docs(tmp_path / "web", text_docs(8, seed=1) | {"page.html": "<p>skip me</p>"})
    code = write_docs(tmp_path / "code", {"a.py": "print('a')\n" * 30, "pkg/b.py": "x = 1\n" * 30})
    manifest = prepare_corpus(
        [f"web={web}", code], tmp_path / "d", source="code", glob="*.txt", val_fraction=0
    )
    assert set(manifest.sources) == {"web", "code"}
    assert manifest.sources["web"].documents == 8 and manifest.sources["code"].files == 0
    assert all(s.path.startswith(f"shards/train-{s.source}-") for s in manifest.shards)
    manifest = prepare_corpus([code], tmp_path / "e", glob="pkg/*.py", val_fraction=0)
    assert manifest.sources["main"].documents == 1


def test_input_containing_the_output_is_not_read_back(tmp_path: Path) -> None:
    corpus = write_docs(tmp_path / "in", text_docs(5))
    first = prepare_corpus([corpus], corpus / "data", val_fraction=0)
    again = prepare_corpus([corpus], corpus / "data", val_fraction=0, force=True)
    assert again.sha256 == first.sha256
    with pytest.raises(BadInput, match="inside --out"):
        prepare_corpus([corpus / "data" / "shards"], corpus / "data", force=True)


def test_bpe_prepare_writes_its_tokenizer(tmp_path: Path) -> None:
    docs = text_docs(12)
    data = tmp_path / "d"
    manifest = prepare_corpus(
        [write_docs(tmp_path / "in", docs)], data, tokenizer="bpe", vocab_size=320, val_fraction=0
    )
    assert manifest.tokenizer.path == "tokenizer.json" and (data / "tokenizer.json").is_file()
    assert manifest.tokenizer.vocab_size <= 320 and manifest.dtype == "uint16"
    tok = load_tokenizer(data)
    ids = shard_tokens(data, "train")
    assert manifest.totals["train"].tokens == len(ids) < sum(len(t.encode()) for t in docs.values())
    first_doc = ids[: int(np.flatnonzero(ids == tok.eot_id)[0])]
    assert tok.decode(first_doc.tolist()) == docs["doc000.txt"]


def test_a_bpe_that_runs_out_of_merges_says_how_many_ids_it_learned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corpus of a few documents cannot fill 4,096 ids: the manifest holds what was learned, and a
    note says so beside the size asked for; a size the corpus fills is not noted."""
    corpus = write_docs(tmp_path / "in", text_docs(12))
    manifest = prepare_corpus([corpus], tmp_path / "big", tokenizer="bpe", vocab_size=4096, val_fraction=0)
    learned = manifest.tokenizer.vocab_size
    assert (
        learned < 4096 and f"bpe learned {learned:,} ids of the 4,096 --vocab-size asked for" in caplog.text
    )
    caplog.clear()
    prepare_corpus([corpus], tmp_path / "small", tokenizer="bpe", vocab_size=300, val_fraction=0)
    assert "bpe learned" not in caplog.text


def test_dtype_follows_the_vocabulary() -> None:
    assert (
        dtype_for(257) == "uint16" and dtype_for(1 << 16) == "uint16" and dtype_for((1 << 16) + 1) == "uint32"
    )


def test_the_default_corpus_prepares_whole(tmp_path: Path) -> None:
    manifest = prepare_corpus([], tmp_path / "d", default=True)
    assert list(manifest.sources) == [STDLIB_SOURCE]
    # The default filters keep all of it (docs/data.md) but for the modules saved in another encoding on
    # purpose, which declare it (PEP 263): read as UTF-8 they are U+FFFD where their letters were.
    report = manifest.filters[STDLIB_SOURCE]
    assert set(report.dropped) <= {"mis_encoded"}
    for line in (tmp_path / "d" / DROP_LOG_FILE).read_text(encoding="utf-8").splitlines():
        head = (stdlib_dir() / json.loads(line)["where"]).read_bytes().split(b"\n")[:2]
        declared = re.search(rb"coding[:=]\s*([-\w.]+)", b"\n".join(head))
        assert declared and declared[1].lower() not in (b"utf-8", b"utf8"), line
    total = manifest.totals["train"].tokens + manifest.totals["heldout"].tokens
    assert total > 10_000_000 and manifest.totals["heldout"].tokens > 0
    assert manifest.sources[STDLIB_SOURCE].files == sum(
        1
        for p in stdlib_dir().rglob("*.py")
        if not ({"site-packages", "dist-packages", "__pycache__"} & set(p.parts))
        and not any(part.startswith(".") for part in p.relative_to(stdlib_dir()).parts)
    )


def test_default_corpus_subset_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run_cli(capsys, "prepare", "--default", "--glob", "json/*.py", "--out", str(tmp_path / "d"))
    assert code == 0
    manifest = load_manifest(tmp_path / "d")
    assert 3 <= manifest.sources[STDLIB_SOURCE].documents < 20


# -- --force: replace only what prepare wrote --------------------------------------------------


def test_existing_data_dir_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_docs(tmp_path / "in", text_docs(5))
    data = tmp_path / "d"
    assert run_cli(capsys, "prepare", str(corpus), "--out", str(data), "--val-fraction", "0")[0] == 0
    code, err = run_cli(capsys, "prepare", str(corpus), "--out", str(data))
    assert code == EXIT_BAD_INPUT and "already exists" in err and "--force" in err


def test_force_replaces_only_its_own_files(tmp_path: Path) -> None:
    data = tmp_path / "d"
    prepare_corpus([write_docs(tmp_path / "one", {"a.txt": "first corpus " * 50})], data, val_fraction=0)
    old = {s.path for s in load_manifest(data).shards}
    (data / "notes.md").write_text("mine", encoding="utf-8")
    (data / "shards" / "keep.bin").write_bytes(b"user file")
    prepare_corpus(
        [f"other={write_docs(tmp_path / 'two', {'b.txt': 'second ' * 50})}"], data, force=True, val_fraction=0
    )
    new = {s.path for s in load_manifest(data).shards}
    assert old.isdisjoint(new) and all((data / p).is_file() for p in new)
    assert not any((data / p).exists() for p in old)
    assert (data / "notes.md").read_text(encoding="utf-8") == "mine"
    assert (data / "shards" / "keep.bin").read_bytes() == b"user file"
    assert not [p for p in data.iterdir() if p.name.startswith(".prepare-")]


def test_force_never_overwrites_a_foreign_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d"
    write_docs(data, {"documents.npy": b"a user's own file"})
    corpus = write_docs(tmp_path / "in", text_docs(5))
    code, err = run_cli(capsys, "prepare", str(corpus), "--out", str(data), "--force")
    assert code == EXIT_BAD_INPUT and "is not part of the earlier output" in err and "documents.npy" in err
    assert (data / "documents.npy").read_bytes() == b"a user's own file"
    assert sorted(p.name for p in data.iterdir()) == ["documents.npy"]


def test_force_with_a_corrupt_manifest_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d"
    prepare_corpus([write_docs(tmp_path / "in", text_docs(5))], data, val_fraction=0)
    (data / MANIFEST_FILE).write_text("{not json", encoding="utf-8")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    code, err = run_cli(capsys, "prepare", str(tmp_path / "in"), "--out", str(data), "--force")
    assert code == EXIT_BAD_INPUT and "manifest.json" in err and "not JSON" in err
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


# -- bad input: one line, exit 2 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("docs", "extra", "needle"),
    [
        ({"a.bin": b"\x00\x00", "b.txt": ""}, [], "empty corpus"),
        ({"a.txt": "text"}, ["--glob", "*.md"], "no files matched --glob *.md"),
        (
            {"a.txt": "text"},
            ["--tokenizer", "bpe", "--vocab-size", "70000", "--dtype", "uint16"],
            "does not fit",
        ),
        ({"a.txt": "text"}, ["--vocab-size", "300"], "--vocab-size applies to --tokenizer bpe"),
        ({"a.txt": "text"}, ["--val-fraction", "1.5"], "--val-fraction"),
        ({"a.txt": "text"}, ["--source", "no/slash"], "source name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], docs: dict, extra: list[str], needle: str
) -> None:
    corpus = write_docs(tmp_path / "in", docs)
    code, err = run_cli(capsys, "prepare", str(corpus), "--out", str(tmp_path / "d"), *extra)
    assert code == EXIT_BAD_INPUT and needle in err
    assert not (tmp_path / "d").exists()  # a failed prepare leaves no DATA_DIR it created


def test_missing_input_and_no_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "d"))
    assert code == EXIT_BAD_INPUT and "is not there (no such file or directory)" in err
    code, err = run_cli(capsys, "prepare", "--out", str(tmp_path / "d"))
    assert code == EXIT_BAD_INPUT and "nothing to prepare" in err


def _prepared(tmp_path: Path, name: str = "d", seed: int = 0) -> Path:
    data = tmp_path / name
    prepare_corpus([write_docs(tmp_path / f"in-{name}", text_docs(20, seed))], data, val_fraction=0.2)
    return data


def test_corrupt_manifest_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _prepared(tmp_path)
    raw = json.loads((data / MANIFEST_FILE).read_text(encoding="utf-8"))
    raw["shards"][0]["tokens"] += 1  # totals no longer add up
    (data / MANIFEST_FILE).write_text(json.dumps(raw), encoding="utf-8")
    code, err = run_cli(capsys, "prepare", "--verify", "--out", str(data))
    assert code == EXIT_BAD_INPUT and "manifest.json is corrupt" in err
    (data / MANIFEST_FILE).write_text("[]", encoding="utf-8")
    assert run_cli(capsys, "prepare", "--verify", "--out", str(data))[0] == EXIT_BAD_INPUT
    code, err = run_cli(capsys, "prepare", "--verify", "--out", str(tmp_path / "none"))
    assert code == EXIT_BAD_INPUT and "is not there (no such file or directory)" in err


def test_manifest_pointing_outside_data_dir_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, other = _prepared(tmp_path), _prepared(tmp_path, "other", seed=1)
    raw = json.loads((data / MANIFEST_FILE).read_text(encoding="utf-8"))
    for path in (f"../other/{raw['shards'][0]['path']}", str(other / raw["shards"][0]["path"])):
        raw["shards"][0]["path"] = path
        (data / MANIFEST_FILE).write_text(json.dumps(raw), encoding="utf-8")
        code, err = run_cli(capsys, "prepare", "--verify", "--out", str(data))
        assert code == EXIT_BAD_INPUT and "stay inside" in err
    (data / "shards" / "link.bin").symlink_to(other / raw["shards"][0]["path"].split("other/")[-1])
    raw["shards"][0]["path"] = "shards/link.bin"
    (data / MANIFEST_FILE).write_text(json.dumps(raw), encoding="utf-8")
    code, err = run_cli(capsys, "prepare", "--verify", "--out", str(data))
    assert code == EXIT_BAD_INPUT and "resolves outside" in err


def test_shard_from_another_data_dir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, other = _prepared(tmp_path), _prepared(tmp_path, "other", seed=1)
    shard = load_manifest(data).shards_of("train")[0].path
    shutil.copyfile(other / shard, data / shard)
    code, err = run_cli(capsys, "prepare", "--verify", "--out", str(data))
    assert code == EXIT_BAD_INPUT and shard in err and "GATE-DATA-003" in err


def test_verify_preflight_catches_a_context_longer_than_the_corpus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _prepared(tmp_path)
    code, err = run_cli(capsys, "prepare", "--verify", "--out", str(data), "--seq-len", "100000")
    assert code == EXIT_BAD_INPUT and "context longer than the corpus" in err
    # the window by the names a user sets it with: it said `lower seq_len`, a key no run has
    assert "train.seq_len of a training run, --seq-len where a command takes one" in err, err
    heldout = load_manifest(data).totals["heldout"].tokens
    # 8 held-out windows, fewer than the 16 batches of a set: evaluated whole, not refused
    assert run_cli(capsys, "prepare", "--verify", "--out", str(data), "--seq-len", str(heldout // 8))[0] == 0
    # one window has a loss but no spread to measure: nothing to judge the held-out set by
    code, err = run_cli(capsys, "prepare", "--verify", "--out", str(data), "--seq-len", str(heldout - 1))
    assert code == EXIT_BAD_INPUT and "held-out split" in err, err
    assert run_cli(capsys, "prepare", "--verify", "--out", str(data))[0] == 0


@pytest.mark.gate("GATE-DATA-005")
def test_split_by_position_is_caught_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant the bug: split by position in the walk, so a duplicated file lands on both sides."""
    text = text_docs(1)["doc000.txt"]
    corpus = write_docs(tmp_path / "in", {"a/copy.txt": text, "b/copy.txt": text} | text_docs(6, seed=3))
    turn = iter(range(1000))
    monkeypatch.setattr(splitting, "assign_split", lambda *_: "heldout" if next(turn) % 2 else "train")
    code, err = run_cli(capsys, "prepare", str(corpus), "--out", str(tmp_path / "d"))
    assert code == EXIT_GATE and "GATE-DATA-005" in err and "in both train and held-out" in err
    assert not (tmp_path / "d").exists()


# -- GATE-DATA-005: the share held out is the one asked ---------------------------------------


def _half_the_share(real: Callable[[bytes, int, float], str]) -> Callable[[bytes, int, float], str]:
    """Each document held out at half the val_fraction asked."""
    return lambda sha, seed, val_fraction: real(sha, seed, val_fraction / 2)


@pytest.mark.gate("GATE-DATA-005")
@pytest.mark.parametrize("val_fraction", ["0.6", "0.25"])
def test_a_split_holding_half_the_share_asked_stops_stack_prepare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, val_fraction: str
) -> None:
    """Disjoint, deterministic by content, and a manifest stating the share asked: only the
    documents held to the rule one by one show the split is another."""
    monkeypatch.setattr(splitting, "assign_split", _half_the_share(splitting.assign_split))
    corpus = write_docs(tmp_path / "in", text_docs(80))
    out = tmp_path / "d"
    code, err = run_cli(capsys, "prepare", str(corpus), "--out", str(out), "--val-fraction", val_fraction)
    assert code == EXIT_GATE and "GATE-DATA-005" in err and "held-out rule" in err
    assert not out.exists()


@pytest.mark.gate("GATE-DATA-005")
def test_a_collector_handed_half_the_share_stops_stack_prepare_by_the_manifests_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documents follow the rule, but for half the val_fraction the manifest states: each is
    where that rule puts it, so only the manifest's own counts against its own share show it."""
    built = prepare_module._Collector.__init__

    def halved(self: Any, staging: Path, tokenizer: Any, dtype: str, plan: Any) -> None:
        built(self, staging, tokenizer, dtype, replace(plan, val_fraction=plan.val_fraction / 2))

    monkeypatch.setattr(prepare_module._Collector, "__init__", halved)
    corpus = write_docs(tmp_path / "in", text_docs(200))
    out = tmp_path / "d"
    code, err = run_cli(capsys, "prepare", str(corpus), "--out", str(out), "--val-fraction", "0.6")
    assert code == EXIT_GATE and "GATE-DATA-005" in err and "val_fraction 0.6" in err
    assert not out.exists()


@pytest.mark.gate("GATE-DATA-005")
def test_half_the_share_stops_a_fine_tuning_prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splitting, "assign_split", _half_the_share(splitting.assign_split))
    chat = DATA / "chat_small.jsonl"
    with pytest.raises(GateViolation, match="GATE-DATA-005"):
        prepare_sft([chat], tmp_path / "sft", fmt="chat", pack_len=96, val_fraction=0.5)


@pytest.mark.holds("GATE-DATA-005")
@pytest.mark.parametrize("val_fraction", ["0.6", "0.25", "0"])
def test_an_honest_split_holds_and_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], val_fraction: str
) -> None:
    corpus = write_docs(tmp_path / "in", text_docs(80))
    out, ledger = tmp_path / "d", tmp_path / "ledger"
    argv = ["prepare", str(corpus), "--out", str(out), "--val-fraction", val_fraction]
    assert run_cli(capsys, *argv, "--evidence-dir", str(ledger))[0] == 0
    (record,) = ledger.glob("*/metadata.json")
    result = next(g for g in json.loads(record.read_text())["gates"] if g["id"] == "GATE-DATA-005")
    measured = result["measured"]
    assert result["verdict"] == "PASS" and measured["documents_off_rule"] == 0
    assert measured["split_documents"] == measured["assigned_documents"] == 80
    assert measured["asked_val_fraction"] == float(val_fraction)


def _share(documents: int, heldout: int, val_fraction: float) -> dict[str, Any]:
    return {"split_documents": documents, "heldout_documents": heldout, "asked_val_fraction": val_fraction}


@pytest.mark.gate("GATE-DATA-005")
@pytest.mark.parametrize(("documents", "val_fraction"), [(80, 0.6), (80, 0.25), (5000, 0.05)])
def test_a_share_just_beyond_the_tail_bound_fires_and_just_inside_holds(
    documents: int, val_fraction: float
) -> None:
    """The fewest documents held out that the bound admits, and one fewer."""
    least = load_spec().threshold("GATE-DATA-005", "min_split_tail_p")
    inside = next(k for k in range(documents + 1) if share_tail(documents, k, val_fraction) >= least)
    assert share_tail(documents, inside - 1, val_fraction) < least  # the count just beyond
    assert judge("GATE-DATA-005", _share(documents, inside, val_fraction)) == []
    assert judge("GATE-DATA-005", _share(documents, inside - 1, val_fraction))


@pytest.mark.holds("GATE-DATA-005")
@pytest.mark.parametrize("val_fraction", [0.05, 0.25, 0.5, 0.9])
def test_every_split_of_five_documents_holds(val_fraction: float) -> None:
    """A handful of documents is judged by its exact distribution: no split of five that leaves one
    to train fires, though 4 of 5 held out at 0.05 is 7.7 standard errors from the mean, which a
    normal approximation would call impossible."""
    assert all(judge("GATE-DATA-005", _share(5, k, val_fraction)) == [] for k in range(5))


@pytest.mark.gate("GATE-DATA-005")
def test_any_document_held_out_at_a_share_of_zero_fires() -> None:
    assert judge("GATE-DATA-005", _share(80, 0, 0.0)) == []
    assert judge("GATE-DATA-005", _share(80, 1, 0.0))


@pytest.mark.gate("GATE-DATA-005")
def test_a_prepare_record_whose_manifest_holds_another_share_is_caught_by_the_checker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The checker reads the share again from the manifest the record cites: a manifest (and a
    record) restated to val_fraction 0.01 over a split drawn at 0.25 re-judges FAIL."""
    corpus = write_docs(tmp_path / "in", text_docs(80))
    ledger = tmp_path / "ledger"
    argv = ["prepare", str(corpus), "--out", str(tmp_path / "d"), "--val-fraction", "0.25"]
    assert run_cli(capsys, *argv, "--evidence-dir", str(ledger))[0] == 0
    (record,) = ledger.iterdir()
    assert findings(record) == []

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        manifest = json.loads((run_dir / MANIFEST_FILE).read_text())
        payload = json.dumps({**manifest, "val_fraction": 0.01}).encode()
        (run_dir / MANIFEST_FILE).write_bytes(payload)
        data["data"]["manifest_sha256"] = hashlib.sha256(payload).hexdigest()
        gate(data, "GATE-DATA-005")["measured"]["asked_val_fraction"] = 0.01

    found = findings(edited(record, restated))
    assert any("GATE-DATA-005" in line for line in found), found


# -- GATE-DATA-005 check contents: the share is a draw per content, copies counted once ---------


def _with_copies(root: Path, distinct: int, copies: int) -> Path:
    """`distinct` documents and `copies` copies of one more (a site's cookie banner)."""
    banner = text_docs(1, seed=7)["doc000.txt"]
    return write_docs(root, text_docs(distinct) | {f"banner/{i:03d}.txt": banner for i in range(copies)})


def _share_measured(ledger: Path) -> dict[str, Any]:
    (record,) = ledger.glob("*/metadata.json")
    return next(g for g in json.loads(record.read_text())["gates"] if g["id"] == "GATE-DATA-005")["measured"]


@pytest.mark.holds("GATE-DATA-005")
def test_a_correct_split_of_a_corpus_of_many_copies_holds_and_the_checker_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """80 documents and 200 copies of a banner, split by content as documented, must not be stopped
    (exit 3, "another share than it states") by every copy counted as a draw of its own. The
    split holds 81 contents, judged as such, and the checker derives them from the manifest."""
    corpus = _with_copies(tmp_path / "in", 80, 200)
    ledger = tmp_path / "ledger"
    argv = ["prepare", str(corpus), "--out", str(tmp_path / "d"), "--val-fraction", "0.25"]
    assert run_cli(capsys, *argv, "--evidence-dir", str(ledger))[0] == 0
    measured = _share_measured(ledger)
    manifest = load_manifest(tmp_path / "d")
    assert measured["split_contents"] == 81 == 280 - manifest.duplicate_documents
    assert findings(next(ledger.iterdir())) == []

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        gate(data, "GATE-DATA-005")["measured"]["split_contents"] = 280

    found = findings(edited(next(ledger.iterdir()), restated))
    assert any("split_contents" in line for line in found), found


@pytest.mark.gate("GATE-DATA-005")
def test_a_split_cut_at_half_the_share_still_fires_among_many_copies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies are no hiding place: the documents follow the rule at half the val_fraction the
    manifest states, in a corpus of 300 copies of one text; its distinct contents show it."""
    built = prepare_module._Collector.__init__

    def halved(self: Any, staging: Path, tokenizer: Any, dtype: str, plan: Any) -> None:
        built(self, staging, tokenizer, dtype, replace(plan, val_fraction=plan.val_fraction / 2))

    monkeypatch.setattr(prepare_module._Collector, "__init__", halved)
    corpus = _with_copies(tmp_path / "in", 200, 300)
    code, err = run_cli(capsys, "prepare", str(corpus), "--out", str(tmp_path / "d"), "--val-fraction", "0.6")
    assert code == EXIT_GATE and "GATE-DATA-005" in err and "distinct contents" in err, err
    assert not (tmp_path / "d").exists()


@pytest.mark.gate("GATE-DATA-005")
def test_copies_on_the_held_out_side_cannot_make_a_wrong_share_look_right() -> None:
    """300 of 500 documents held out is the share 0.6 asks, but they are 300 copies of the one
    content held out of 201: judged on contents it fires; and contents that do not add up with the
    documents fire."""
    documents = {"split_documents": 500, "heldout_documents": 300, "asked_val_fraction": 0.6}
    assert judge("GATE-DATA-005", documents) == []
    assert judge("GATE-DATA-005", {**documents, "split_contents": 201, "heldout_contents": 121}) == []
    assert judge("GATE-DATA-005", {**documents, "split_contents": 201, "heldout_contents": 1})
    assert judge("GATE-DATA-005", {**documents, "split_contents": 501, "heldout_contents": 300})


# -- GATE-DATA-005 check stored: no held-out document is stored as a train one -------------------

CHAT = DATA / "chat_small.jsonl"


def _doubled_chat(root: Path) -> Path:
    """Every example of the small chat set twice, the second copy after all the first."""
    lines = CHAT.read_text(encoding="utf-8").splitlines()
    path = root / "chat_dup.jsonl"
    path.write_text("\n".join(lines + lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.gate("GATE-DATA-005")
def test_an_example_identity_that_hashes_its_place_stops_a_fine_tuning_prepare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the identity a split is drawn from hashes the example's place too, so the two
    copies of an example land apart. Planted wherever prepare takes an example's identity, the
    index, the assignment and the disjointness check all read it and agree; the examples as stored
    do not. Exit 3 naming the gate."""
    from stack.data import sft_prepare

    places: dict[int, int] = {}  # each example's place, the same whoever asks its identity
    real = sft_prepare.example_identity

    def placed(turns: list[tuple[str, str]]) -> bytes:
        return real([*turns, ("at", str(places.setdefault(id(turns), len(places))))])

    monkeypatch.setattr(sft_prepare, "example_identity", placed)
    argv = ["prepare", str(_doubled_chat(tmp_path)), "--format", "chat", "--out", str(tmp_path / "d")]
    code, err = run_cli(capsys, *argv, "--pack-len", "96", "--val-fraction", "0.5")
    assert code == EXIT_GATE and "GATE-DATA-005" in err and "stored exactly as a train one" in err, err
    assert not (tmp_path / "d").exists()


@pytest.mark.gate("GATE-DATA-005")
def test_a_document_identity_that_hashes_its_place_stops_a_prepare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bug in text: a document's identity hashes where it was read, so copies of one file
    in two places land apart; the stored documents are keyed apart from any identity."""
    from stack.data import prepare_tasks
    from stack.data.corpus import Document

    held = prepare_tasks.held_whole

    def placed(found: Any) -> Document | None:
        doc = held(found)
        if doc is None:
            return None
        return Document(
            doc.source,
            doc.data,
            document_identity(doc.data + doc.where.encode()),
            doc.invalid_utf8,
            doc.where,
            doc.delimited,
            doc.raw,
            doc.crlf,
        )

    monkeypatch.setattr(prepare_tasks, "held_whole", placed)
    copies = {f"{d}/copy.txt": text_docs(1)["doc000.txt"] for d in "abcdefgh"}
    corpus = write_docs(tmp_path / "in", copies | text_docs(12, seed=3))
    code, err = run_cli(capsys, "prepare", str(corpus), "--out", str(tmp_path / "d"), "--val-fraction", "0.5")
    assert code == EXIT_GATE and "GATE-DATA-005" in err and "stored exactly as a train one" in err, err


@pytest.mark.holds("GATE-DATA-005")
def test_copies_of_an_example_are_stored_in_one_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Honest identities: each example's two copies land together, the manifest counts them as
    duplicates, and the record shows every example keyed as stored, none shared."""
    ledger = tmp_path / "ledger"
    argv = ["prepare", str(_doubled_chat(tmp_path)), "--format", "chat", "--out", str(tmp_path / "d")]
    assert (
        run_cli(capsys, *argv, "--pack-len", "96", "--val-fraction", "0.5", "--evidence-dir", str(ledger))[0]
        == 0
    )
    (record,) = ledger.glob("*/metadata.json")
    measured = next(g for g in json.loads(record.read_text())["gates"] if g["id"] == "GATE-DATA-005")[
        "measured"
    ]
    manifest = load_manifest(tmp_path / "d")
    assert measured["stored_shared"] == 0 and measured["stored_documents"] == sum(
        manifest.sft.examples.values()
    )
    assert manifest.duplicate_documents == len(CHAT.read_text().splitlines())


@pytest.mark.gate("GATE-DATA-005")
def test_one_held_out_document_stored_as_a_train_one_fires() -> None:
    stored = {"stored_documents": 10, "stored_heldout": 3, "stored_shared": 0}
    assert judge("GATE-DATA-005", stored) == []
    assert judge("GATE-DATA-005", {**stored, "stored_shared": 1})
    assert judge(
        "GATE-DATA-005", {**stored, "split_documents": 11, "heldout_documents": 3, "asked_val_fraction": 0.3}
    )
