"""`stack prepare` when things go wrong: one line, the right exit code, and nothing lost.

Every refused or failed prepare is checked against a sha256 snapshot of the directories it was
given: what was there before is there after, byte for byte, and nothing half-written is added.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest

from contracts.errors import EXIT_BAD_INPUT, BadInput
from contracts.evidence import Verdict, sha256_file
from contracts.ledger import Ledger, recording
from stack.artifacts import LOCK_FILE
from stack.cli import main
from stack.data import ownership, shards, split
from stack.data.filters.droplog import DROP_LOG_FILE
from stack.data.manifest import MANIFEST_FILE, load_manifest, manifest_bytes, parse_manifest
from stack.data.prepare import prepare_corpus
from stack.data.reader import TokenReader
from stack.data.shards import HEADER
from stack.data.tokenizer import BpeTokenizer
from stack.outputs.lock import exclusive
from tests.support.train_support import smoke_args, write_corpus
from tests.support.tree_snapshot import snapshot, unwritable

REPO = Path(__file__).resolve().parents[2]
SHARD = "shards/train-main"


def corpus(root: Path, n: int = 12, word: str = "alpha") -> Path:
    """n small distinct documents under root."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"doc{i:02d}.txt").write_text(f"document {i}: " + f"{word} beta gamma " * (5 + i))
    return root


def prepare(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and stderr of `stack prepare ARGV`; a failure must be exactly one line."""
    code = main(["prepare", *argv])
    err = capsys.readouterr().err
    if code:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return code, err


@pytest.fixture
def prepared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A DATA_DIR written by `stack prepare`, from corpus `in`."""
    data = tmp_path / "d"
    assert prepare(capsys, str(corpus(tmp_path / "in")), "--out", str(data), "--val-fraction", "0.2")[0] == 0
    return data


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- one writer per DATA_DIR --------------------------------------------------------------------


def test_prepare_holds_the_lock_while_it_writes(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    publish = ownership.publish
    probed = []

    def probe_then_publish(staging: Path, out: Path, owned: frozenset[str]) -> None:
        with pytest.raises(BadInput, match="being written by another process"), exclusive(out, "probe"):
            pass
        probed.append(out)
        publish(staging, out, owned)

    monkeypatch.setattr(ownership, "publish", probe_then_publish)
    assert prepare(capsys, str(tmp_path / "in"), "--out", str(prepared), "--force")[0] == 0
    assert probed == [prepared]


def test_a_second_writer_is_refused_and_changes_nothing(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with exclusive(prepared, "stack prepare"):
        before = snapshot(prepared)
        code, err = prepare(capsys, str(tmp_path / "in"), "--out", str(prepared), "--force")
        assert code == EXIT_BAD_INPUT and "being written by another process" in err
        assert snapshot(prepared) == before


def test_the_lock_file_neither_fills_an_empty_out_nor_counts_as_foreign(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (prepared / LOCK_FILE).is_file()  # prepare took it
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / LOCK_FILE).write_text("")
    assert prepare(capsys, str(tmp_path / "in"), "--out", str(empty))[0] == 0  # no --force needed
    assert prepare(capsys, str(tmp_path / "in"), "--out", str(prepared), "--force")[0] == 0
    assert (prepared / LOCK_FILE).is_file()


# -- --force touches only what prepare wrote ------------------------------------------------------


def test_force_refuses_a_listed_file_that_changed_and_changes_nothing(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = load_manifest(prepared).shards_of("train")[0].path
    with open(prepared / shard, "ab") as handle:
        handle.write(b"a user's appended bytes")
    before = snapshot(prepared)
    code, err = prepare(capsys, str(tmp_path / "in"), "--out", str(prepared), "--force")
    assert code == EXIT_BAD_INPUT and "refusing to replace" in err and shard in err and "sha256" in err
    assert snapshot(prepared) == before


def test_force_refuses_a_users_file_under_a_shard_name_and_changes_nothing(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (prepared / "shards" / "train-main-00042.bin").write_bytes(b"mine")
    before = snapshot(prepared)
    code, err = prepare(capsys, str(tmp_path / "in"), "--out", str(prepared), "--force")
    assert (
        code == EXIT_BAD_INPUT
        and "is not part of the earlier output" in err
        and "train-main-00042.bin" in err
    )
    assert snapshot(prepared) == before


def test_force_replaces_its_own_files_and_keeps_the_users(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (prepared / "notes.md").write_text("mine")
    other = corpus(tmp_path / "other", n=6, word="delta")
    assert prepare(capsys, str(other), "--out", str(prepared), "--force", "--val-fraction", "0")[0] == 0
    assert (prepared / "notes.md").read_text() == "mine"
    assert load_manifest(prepared).totals["heldout"].documents == 0
    assert prepare(capsys, "--verify", "--out", str(prepared))[0] == 0


# -- leftovers of an interrupted prepare -------------------------------------------------------------

CHILD = """
import os, signal, sys
from pathlib import Path
from stack.data import ownership, prepare
{patch}
prepare.prepare_corpus([sys.argv[1]], sys.argv[2], force=True, val_fraction=0.2)
"""

STALL_WHILE_TOKENIZING = """
take = prepare._Collector.take
def stall(self, part, spill=None):
    take(self, part, spill)
    Path(sys.argv[3]).touch()
    signal.pause()
prepare._Collector.take = stall
"""

DIE_HALFWAY_THROUGH_PUBLISHING = """
replace, published = os.replace, []
def die_after_one(src, dst):
    if ".prepare-" not in str(dst):  # a move into DATA_DIR, not a write inside the staging directory
        if published:
            os.kill(os.getpid(), signal.SIGKILL)
        published.append(dst)
    replace(src, dst)
ownership.os.replace = die_after_one
"""


def kill_child(tmp_path: Path, patch: str, inputs: Path, out: Path) -> int:
    """Run prepare in a child process that is killed outright (SIGKILL) where `patch` says."""
    ready = tmp_path / "ready"
    script = CHILD.format(patch=textwrap.dedent(patch))
    child = subprocess.Popen([sys.executable, "-c", script, str(inputs), str(out), str(ready)], cwd=REPO)
    deadline = time.monotonic() + 120
    while child.poll() is None and not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    return child.pid


def test_a_killed_prepare_does_not_block_the_same_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    inputs, out = corpus(tmp_path / "in"), tmp_path / "d"
    pid = kill_child(tmp_path, STALL_WHILE_TOKENIZING, inputs, out)
    assert [p.name for p in out.iterdir() if p.name.startswith(f".prepare-{pid}-")]  # what it left
    assert prepare(capsys, str(inputs), "--out", str(out), "--val-fraction", "0.2")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        LOCK_FILE,
        "documents.npy",
        DROP_LOG_FILE,
        MANIFEST_FILE,
        "shards",
    ]
    notes = [r.getMessage() for r in caplog.records]
    assert any(f".prepare-{pid}-" in n and "interrupted stack prepare" in n for n in notes), notes
    assert any(f"pid {pid}" in n and "is gone" in n for n in notes), notes  # the lock, taken over


def test_a_prepare_killed_while_publishing_does_not_block_the_same_command(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (prepared / "notes.md").write_text("mine")
    other = corpus(tmp_path / "other", n=8, word="omega")
    kill_child(tmp_path, DIE_HALFWAY_THROUGH_PUBLISHING, other, prepared)
    # Half moved in: the old manifest no longer vouches for every file, the staged one does.
    assert prepare(capsys, str(other), "--out", str(prepared), "--force", "--val-fraction", "0.2")[0] == 0
    assert prepare(capsys, "--verify", "--out", str(prepared))[0] == 0
    assert (prepared / "notes.md").read_text() == "mine"
    assert not [p for p in prepared.iterdir() if p.name.startswith(".prepare-")]


def test_stale_staging_of_a_dead_process_is_removed_and_a_live_ones_is_refused(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = prepared / f".prepare-{dead_pid()}-x"
    stale.mkdir()
    (stale / "half.bin").write_bytes(b"\0" * 10)
    assert prepare(capsys, str(tmp_path / "in"), "--out", str(prepared), "--force")[0] == 0
    assert not stale.exists()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (prepared / f".prepare-{live.pid}-x").mkdir()
        before = snapshot(prepared)
        code, err = prepare(capsys, str(tmp_path / "in"), "--out", str(prepared), "--force")
        assert code == EXIT_BAD_INPUT and f"process {live.pid}, which is still running" in err
        assert snapshot(prepared) == before
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupt_leaves_nothing_behind(
    existing: bool,
    prepared: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = prepared if existing else tmp_path / "new" / "d"
    before = snapshot(tmp_path)

    def interrupted(self: object, part: object, spill: object = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("stack.data.prepare._Collector.take", interrupted)
    assert main(["prepare", str(tmp_path / "in"), "--out", str(out), "--force"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert snapshot(tmp_path) == before  # no staging, no new DATA_DIR (nor its parent)


# -- a full disk -------------------------------------------------------------------------------------


class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left: past that, writes fail with ENOSPC."""

    room = 200

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if len(data) > FullDisk.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        FullDisk.room -= len(data)
        return super().write(data)


def full_disk_open(path: Path, mode: str = "r", *args: object, **kwargs: object) -> io.BufferedWriter:
    assert mode == "wb"
    return io.BufferedWriter(FullDisk(path, "wb"), buffer_size=64)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no second error at exit
@pytest.mark.parametrize(("module", "written"), [(shards, f"{SHARD}-00000.bin"), (split, "documents.npy")])
@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_names_the_file_and_leaves_nothing_half_written(
    module: object,
    written: str,
    existing: bool,
    prepared: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = prepared if existing else tmp_path / "new"
    before = snapshot(tmp_path)
    monkeypatch.setattr(FullDisk, "room", 200)
    monkeypatch.setattr(module, "open", full_disk_open, raising=False)
    code, err = prepare(capsys, str(tmp_path / "in"), "--out", str(out), "--force")
    assert code == EXIT_BAD_INPUT, err
    assert "the disk is full" in err and str(out / written) in err and ".prepare-" not in err
    assert snapshot(tmp_path) == before


# -- hostile files with recomputed checksums ------------------------------------------------------------


def rewrite_manifest(data: Path, **changes: object) -> None:
    """Replace manifest fields and write it back the way prepare does, so it is self-consistent."""
    manifest = parse_manifest(data, (data / MANIFEST_FILE).read_bytes())
    (data / MANIFEST_FILE).write_bytes(manifest_bytes(manifest.model_copy(update=changes)))


@pytest.mark.gate("GATE-DATA-003")
def test_a_token_id_past_the_vocabulary_is_refused_by_verify_and_by_the_reader(
    prepared: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = load_manifest(prepared)
    entry = manifest.shards_of("train")[0]
    raw = bytearray((prepared / entry.path).read_bytes())
    raw[HEADER.size : HEADER.size + 2] = np.array([300], dtype="<u2").tobytes()  # vocab is 257
    (prepared / entry.path).write_bytes(bytes(raw))
    hostile = entry.model_copy(update={"sha256": sha256_file(prepared / entry.path)})
    rewrite_manifest(prepared, shards=[hostile if s.path == entry.path else s for s in manifest.shards])
    code, err = prepare(capsys, "--verify", "--out", str(prepared))
    assert code == EXIT_BAD_INPUT and "GATE-DATA-003" in err
    assert f"{entry.path} holds token id 300, but the vocabulary has 257 ids" in err
    with recording(Ledger()) as ledger, pytest.raises(BadInput, match="token id 300"):
        TokenReader(prepared, batch_size=1, seq_len=8, seed=0)
    result = ledger.results["GATE-DATA-003"]
    assert result.verdict is Verdict.FAIL and result.measured["mismatched_files"] == 1
    assert entry.path in result.measured["first_problem"]


def test_a_garbage_bpe_tokenizer_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d"
    inputs = str(corpus(tmp_path / "in"))
    assert prepare(capsys, inputs, "--out", str(data), "--tokenizer", "bpe", "--vocab-size", "300")[0] == 0
    garbage = '{"version": "1.0", "model": {"type": "BPE", "vocab": 7}}'
    (data / "tokenizer.json").write_text(garbage, encoding="utf-8")
    manifest = load_manifest(data)
    sha = hashlib.sha256(garbage.encode()).hexdigest()
    rewrite_manifest(data, tokenizer=manifest.tokenizer.model_copy(update={"sha256": sha}))
    code, err = prepare(capsys, "--verify", "--out", str(data))
    assert code == EXIT_BAD_INPUT
    assert "tokenizer.json is not a BPE tokenizer record: its model.vocab is not a map" in err


def test_a_bpe_vocabulary_with_a_hole_is_refused_before_the_library_panics(tmp_path: Path) -> None:
    """An entry deleted from model.vocab makes the tokenizers library panic in Rust (not an
    Exception, and a Rust backtrace on stderr); the record is checked before it is handed over."""
    data = tmp_path / "d"
    prepare_corpus([corpus(tmp_path / "in")], data, tokenizer="bpe", vocab_size=300)
    record = json.loads((data / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = record["model"]["vocab"]
    del vocab[max(vocab, key=len)]
    with pytest.raises(BadInput, match=r"model\.vocab ids are not 0\.\.\d+, each once"):
        BpeTokenizer.from_json(json.dumps(record), "the record")


# -- paths -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("dangling-link", "is a symbolic link to"),
        ("under-a-file", "cannot be created: "),
        ("a-file", "exists and is not a directory"),
        ("unwritable", "is not writable"),
        ("unwritable-parent", "is not writable"),
    ],
)
def test_an_out_prepare_cannot_write_is_one_line_naming_it(
    setup: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = str(corpus(tmp_path / "in"))
    place = tmp_path / "place"
    place.mkdir()
    out = {
        "dangling-link": place / "link",
        "under-a-file": place / "file" / "d",
        "a-file": place / "file",
        "unwritable": place / "ro",
        "unwritable-parent": place / "ro" / "d",
    }[setup]
    if setup == "dangling-link":
        out.symlink_to(tmp_path / "nowhere")
    elif setup in ("under-a-file", "a-file"):
        (place / "file").write_text("a user's file")
    with unwritable(place / "ro") if setup.startswith("unwritable") else nullcontext():
        before = snapshot(place)
        code, err = prepare(capsys, inputs, "--out", str(out))
        assert snapshot(place) == before
    assert code == EXIT_BAD_INPUT and needle in err and f"--out {out}" in err


def test_verify_names_an_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("x")
    code, err = prepare(capsys, "--verify", "--out", str(tmp_path / "f"))
    assert code == EXIT_BAD_INPUT and "is a plain file; `stack prepare --verify --out` needs" in err


def test_manifest_hashes_cover_every_listed_file(prepared: Path) -> None:
    manifest = load_manifest(prepared)
    assert set(manifest.hashes()) | {MANIFEST_FILE} == set(manifest.files())
    assert all(sha256_file(prepared / rel) == sha for rel, sha in manifest.hashes().items())


# -- the advice of every refusal of a damaged DATA_DIR works when followed ------------


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(data)


def _retype_shards(data: Path) -> None:
    manifest = json.loads((data / MANIFEST_FILE).read_text())
    manifest["shards"] = "none"
    (data / MANIFEST_FILE).write_text(json.dumps(manifest))


HELD_OUT = ("--val-fraction", "0.25")  # enough held-out text for a smoke run's evaluation
DAMAGES = {
    "manifest-cut": lambda data: (data / MANIFEST_FILE).write_text('{"format_version": 1, "tok'),
    "manifest-retyped": _retype_shards,
    "shard-altered": lambda data: _flip_last_byte(data / "shards" / "train-main-00000.bin"),
    "shard-deleted": lambda data: (data / "shards" / "train-main-00000.bin").unlink(),
    "heldout-deleted": lambda data: (data / "shards" / "heldout-main-00000.bin").unlink(),
    "index-altered": lambda data: _flip_last_byte(data / "documents.npy"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_the_fix_a_damaged_data_dir_is_refused_with_works_when_followed(
    damage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt manifest must not make `stack train` advise "re-run `stack prepare ... --force`"
    where --force then refuses, repeating it: the advice is --force only where prepare's --force rule
    takes the directory as it is; else a new --out, or moving DATA_DIR away, each of which works, and
    --force's own refusal names no --force."""
    source = write_corpus(tmp_path / "in")
    data = tmp_path / "d"
    assert main(["prepare", str(source), "--out", str(data), *HELD_OUT]) == 0
    DAMAGES[damage](data)
    capsys.readouterr()
    assert main(smoke_args(data, tmp_path / "run", "train.steps=1")) == EXIT_BAD_INPUT
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "Traceback" not in line, line
    if f"`stack prepare ... --out {data} --force`" in line:
        followed = [["prepare", str(source), "--out", str(data), "--force", *HELD_OUT]]
        targets = [data]
    else:
        assert "`stack prepare ... --out NEW_DIR`" in line and "--force would not replace it" in line, line
        code, err = prepare(capsys, str(source), "--out", str(data), "--force", *HELD_OUT)
        assert code == EXIT_BAD_INPUT and "--force" not in err.rsplit(";", 1)[1], err  # not circular
        moved = tmp_path / "moved-away"
        data.rename(moved)
        followed = [
            ["prepare", str(source), "--out", str(tmp_path / "new"), *HELD_OUT],
            ["prepare", str(source), "--out", str(data), *HELD_OUT],
        ]
        targets = [tmp_path / "new", data]
    for argv, target in zip(followed, targets, strict=True):
        assert main(argv) == 0, capsys.readouterr().err
        assert main(smoke_args(target, tmp_path / f"run-{target.name}", "train.steps=1")) == 0
