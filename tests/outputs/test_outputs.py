"""The output rules themselves (stack.outputs), below any command: what --force may replace, how a
directory is committed or left as it was, and the paths no output may take.

Every command's use of them is held in tests/cli/test_artifacts.py (one row per output option).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from stack.artifacts import LOCK_FILE
from stack.outputs import lock, ownership, rundir
from stack.outputs.destination import check_directory, check_file
from stack.outputs.lock import exclusive
from stack.outputs.ownership import Earlier
from tests.support.tree_snapshot import snapshot

NAMES = ("a.bin", "b.json", "sub/c.txt", "sub/deep/d.txt")


def _earlier_of(out: Path, listed: list[str]) -> Earlier:
    """A record listing `listed` with the sha256s the files have now (as a command writes it)."""
    return Earlier("record.json", {rel: frozenset({sha256_file(out / rel)}) for rel in listed})


@settings(max_examples=60)
@given(
    present=st.sets(st.sampled_from(NAMES), min_size=1),
    unlisted=st.sets(st.sampled_from(NAMES)),
    changed=st.sets(st.sampled_from(NAMES)),
)
def test_force_replaces_only_what_the_record_vouches_for(
    present: set[str], unlisted: set[str], changed: set[str]
) -> None:
    """A directory replaced whole: refused unless every file in it is listed and unchanged, naming
    one that is not. Only the paths a command writes (`writes`): those must be listed, and no
    listed file may have changed. Either way nothing is touched."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        for rel in present:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text(rel)
        earlier = _earlier_of(out, sorted(present - unlisted))
        for rel in present & changed:
            (out / rel).write_text("edited")
        edited = (present & changed) - unlisted  # listed, but not as the record has them
        strangers = (present & unlisted) | edited
        before = snapshot(out)
        if strangers:
            with pytest.raises(BadInput) as refused:
                ownership.claim(out, earlier)
            named = strangers | {p.as_posix() for rel in strangers for p in Path(rel).parents if p.name}
            assert any(f"{out / rel} " in str(refused.value) for rel in named)  # a folder by itself
        else:
            assert ownership.claim(out, earlier) == present
        for writes in ([], sorted(present & unlisted)):
            if edited:
                with pytest.raises(BadInput, match="was changed since it was written"):
                    ownership.claim(out, earlier, writes)
            elif writes:
                with pytest.raises(BadInput, match="is not part of the earlier output"):
                    ownership.claim(out, earlier, writes)
            else:
                assert ownership.claim(out, earlier, writes) == present - unlisted
        assert snapshot(out) == before


def test_a_link_in_place_of_a_listed_file_is_not_the_file(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"weights")
    earlier = _earlier_of(tmp_path, ["model.bin"])
    (tmp_path / "elsewhere.bin").write_bytes(b"weights")
    (tmp_path / "model.bin").unlink()
    (tmp_path / "model.bin").symlink_to(tmp_path / "elsewhere.bin")
    with pytest.raises(BadInput, match=r"model\.bin was changed since it was written"):
        ownership.claim(tmp_path, earlier, ["model.bin"])


WRITERS = {
    "in place": rundir.Writer("stack test", resumable=True),
    "aside": rundir.Writer("stack test", earlier=ownership.by_record("record.json")),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_directory_not_committed_is_left_as_if_never_asked_for(kind: str, tmp_path: Path) -> None:
    """What opening made goes again: the lock, the staging, the directory and the parents it made.
    (In place, set-up writes nothing; aside, what it built is dropped.)"""
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError), rundir.opened(out, WRITERS[kind]) as opened:
        if kind == "aside":
            (opened.where / "half.bin").write_bytes(b"half")
        raise RuntimeError("set-up failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_committed_directory_holds_what_was_written(kind: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), rundir.opened(out, WRITERS[kind]) as opened:
        opened.commit()
        (out / "record.json").write_text("{}")
        raise RuntimeError("failed after the commit")
    assert (out / "record.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left beside


@pytest.mark.parametrize("state", ["filled", "locked", "removed"])
def test_another_rank_of_a_launch_never_judges_the_directory_rank_0_opens(state: str, tmp_path: Path) -> None:
    """Another rank reads the directory while rank 0 opens it: under rank 0's lock, removed again
    after rank 0 refused the run, or holding what is there. Rank 0 alone judges and opens it; another
    rank goes on (and on a refusal of rank 0's is stopped by torchrun), never adding a refusal or a
    failure of its own to rank 0's line, and touches nothing. Rank 0 on a directory that holds
    something is refused as ever."""
    out = tmp_path / "run"
    if state != "removed":
        out.mkdir()
        (out / (LOCK_FILE if state == "locked" else "config.toml")).write_text("rank 0's")
    before = snapshot(tmp_path)
    with rundir.opened(out, WRITERS["in place"], main=False) as opened:
        assert opened.where == out
    assert snapshot(tmp_path) == before
    if state == "filled":
        refused = pytest.raises(BadInput, match="already exists and is not empty")
        with refused, rundir.opened(out, WRITERS["in place"]):
            pass


def test_a_resumed_directory_refused_in_set_up_is_byte_for_byte_as_it_was(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("[train]\n")
    before = snapshot(tmp_path)
    with pytest.raises(BadInput), rundir.opened(run, WRITERS["in place"], resume=True):
        rundir.refuse_changes(run, run / "step-0000002", [rundir.change("train.seed", 0, 1)], "drop it")
    assert snapshot(tmp_path) == before
    assert not (run / LOCK_FILE).exists()


def test_an_output_filled_while_it_was_built_is_checked_again_before_the_swap(tmp_path: Path) -> None:
    """A file that appears in OUT while the command runs is refused at the commit, and kept."""
    out = tmp_path / "out"
    refused = pytest.raises(BadInput, match="already exists and is not empty")
    with refused, rundir.opened(out, WRITERS["aside"]) as opened:
        (opened.where / "record.json").write_text('{"files": {}}')
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        opened.commit()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_swaps_an_earlier_output_for_the_new_one_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.bin").write_bytes(b"old")
    ownership.write_record(out, "record.json", {"kind": "test"})
    with rundir.opened(out, WRITERS["aside"], force=True) as opened:
        (opened.where / "new.bin").write_bytes(b"new")
        ownership.write_record(opened.where, "record.json", {"kind": "test"})
        assert (out / "old.bin").exists()  # the earlier output stands until the commit
        opened.commit()
    assert sorted(p.name for p in out.iterdir()) == ["new.bin", "record.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("check", [check_directory, check_file])
def test_a_name_that_is_not_utf8_is_refused_for_any_caller(check: object, tmp_path: Path) -> None:
    """The command line refuses it while parsing; a caller of the library is refused here."""
    with pytest.raises(BadInput, match=r"holds bytes that are not UTF-8 \(at character"):
        check(tmp_path / "caf\udcc3", "--out")  # type: ignore[operator]


def test_what_is_there_is_never_removed_when_a_new_run_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match=r"choose another --out$"), rundir.opened(out, WRITERS["in place"]):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("continues", [True, False], ids=["a-run-it-continues", "anything-else"])
def test_a_refusal_offers_resume_only_where_resume_would_take_the_directory(
    continues: bool, tmp_path: Path
) -> None:
    """A folder of the user's files was told `continue it with --resume`, which then
    refused it. The writer says which directories its --resume continues; only those are offered it."""
    (tmp_path / "notes.txt").write_text("mine")
    writer = rundir.Writer("stack test", resumable=True, continues=lambda out: continues)
    with pytest.raises(BadInput) as refused:
        rundir.check(tmp_path, writer)
    assert ("--resume" in str(refused.value)) is continues


@pytest.mark.parametrize("earlier", [True, False], ids=["an-earlier-output", "the-users-files"])
def test_a_refusal_offers_force_only_where_force_would_replace_the_directory(
    earlier: bool, tmp_path: Path
) -> None:
    """The same for --force: offered for a directory that holds an earlier output and nothing else."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.bin").write_bytes(b"weights")
    if earlier:
        ownership.write_record(out, "record.json", {"kind": "test"})
    with pytest.raises(BadInput) as refused:
        rundir.check(out, WRITERS["aside"])
    assert ("--force" in str(refused.value)) is earlier
    if earlier:
        rundir.check(out, WRITERS["aside"], force=True)  # what it offered is taken


def _taken_elsewhere(lock_file: Path) -> bool:
    """Whether another process would be refused the lock `lock_file` (flock, as stack.outputs.lock)."""
    probe = "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    return subprocess.run([sys.executable, "-c", probe, str(lock_file)], capture_output=True).returncode != 0


def _one_writer_dir(root: Path) -> Path:
    """A run directory as `stack train` leaves it: its configuration beside its writer's lock file."""
    root.mkdir()
    (root / "config.toml").write_text("[train]\n")
    (root / LOCK_FILE).write_text("")
    return root


@pytest.mark.parametrize("check", [check_directory, check_file])
def test_an_output_under_a_directory_another_process_writes_is_refused_naming_it(
    check: object, tmp_path: Path
) -> None:
    """One writer per run directory, whatever the output and whichever command writes it:
    a path under a run being written is refused naming the writer, before anything is written."""
    run = _one_writer_dir(tmp_path / "run")
    writing = rf"lies in {run}, which is being written by another process \(pid \d+, stack train\)"
    # A live writer of the run: this process's own open of the lock, outside any command.
    with exclusive(run, "stack train"), pytest.raises(BadInput, match=writing):
        check(run / "traces" / "t", "--out")  # type: ignore[operator]
    with lock.command_scope("stack test"):  # the writer is gone: the check takes the run's lock
        check(run / "traces" / "t", "--out")  # type: ignore[operator]
        assert _taken_elsewhere(run / LOCK_FILE)
        assert (run / LOCK_FILE).read_text().split(" ", 1)[1] == "stack test\n"  # for the next refusal
    assert not _taken_elsewhere(run / LOCK_FILE)  # released when the command ends


def test_a_stray_lock_file_makes_no_directory_a_run(tmp_path: Path) -> None:
    """Another program's `.lock` above an output is not taken, truncated or waited for."""
    (tmp_path / LOCK_FILE).write_text("someone else's\n")
    with lock.command_scope("stack test"):
        check_directory(tmp_path / "out", "--out")
    assert (tmp_path / LOCK_FILE).read_text() == "someone else's\n"
