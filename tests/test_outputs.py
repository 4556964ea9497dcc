"""The output rules themselves (stack.outputs), below any command: what --force may replace, how a
directory is committed or left as it was, and the paths no output may take.

Every command's use of them is held in tests/test_artifacts.py (one row per output option).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tree_snapshot import snapshot

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from stack.artifacts import LOCK_FILE
from stack.outputs import ownership, rundir
from stack.outputs.destination import check_directory, check_file
from stack.outputs.ownership import Earlier

NAMES = ("a.bin", "b.json", "sub/c.txt", "sub/deep/d.txt")


def _earlier_of(out: Path, listed: list[str]) -> Earlier:
    """A record listing `listed` with the sha256s the files have now (as a command writes it)."""
    return Earlier("record.json", {rel: frozenset({sha256_file(out / rel)}) for rel in listed})


@settings(max_examples=60, deadline=None)
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
    with pytest.raises(BadInput, match="continue it with --resume"), rundir.opened(out, WRITERS["in place"]):
        pass
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
