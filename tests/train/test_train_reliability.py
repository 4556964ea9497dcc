"""Every way `stack train` and its checkpoints end badly: one line, the right exit code, nothing lost.

One writer per run directory; a resume checked against its checkpoint before it writes; a set-up
refusal that leaves nothing behind; checkpoints pruned atomically and validated by schema before
torch reads them; the end of a corpus as a clean stop; fp16 loss scaling on CPU, resumed exactly.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from contracts.errors import BadInput
from contracts.evidence import EvidenceRecord, RunStatus, read_evidence
from contracts.spec import load_spec
from stack.artifacts import LOCK_FILE
from stack.cli import describe, os_error_line
from stack.data.prepare import prepare_corpus
from stack.data.reader import TokenReader
from stack.outputs.lock import exclusive
from stack.train import checkpoint as ckpt
from stack.train import run as run_module
from tests.support.train_support import (
    evidence,
    prepared,
    smoke_args,
    step_lines,
    train,
    verdicts,
    write_corpus,
)
from tests.support.tree_snapshot import snapshot
from tools.integrity.record_checks import check_record_truth

# A corpus that runs out after a few steps: 8 windows of 65 tokens per micro-batch, 8 per step.
EXHAUSTING = ("train.batch_size=8", "model.ctx=64", "train.grad_accum=8", "train.steps=1000")
FP16 = ("train.precision='fp16'", "train.steps=6", "ckpt.every=2", "ckpt.keep_last=8")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def finished(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed four-step run with checkpoints at steps 2 and 4."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert train(smoke_args(data, run, "train.steps=4", "ckpt.every=2", "ckpt.keep_last=8")) == 0
    return run


@pytest.fixture(scope="module")
def fp16_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six fp16 steps on CPU without interruption, a checkpoint every two."""
    run = tmp_path_factory.mktemp("fp16") / "run"
    assert train(smoke_args(data, run, *FP16)) == 0
    return run


def copy_of(run: Path, tmp_path: Path, keep_until: int | None = None) -> Path:
    """A copy of `run`, as if it had died right after its checkpoint at `keep_until`."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for path in ckpt.list_checkpoints(copy):
        if keep_until is not None and int(path.name.split("-")[1]) > keep_until:
            shutil.rmtree(path)
    return copy


def one_line(err: str) -> str:
    """The only line of stderr (a refusal says one thing)."""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def rehash(checkpoint: Path, name: str) -> None:
    """Make the manifest vouch for `name` as it now is: the checksums hold, the content is the damage."""
    manifest = json.loads((checkpoint / ckpt.MANIFEST).read_text())
    payload = (checkpoint / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
    (checkpoint / ckpt.MANIFEST).write_text(json.dumps(manifest, indent=1))


# -- one writer per run directory --------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder_and_touches_nothing(
    data: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(finished, tmp_path)
    with exclusive(run, "stack train"):  # a live writer: this process, through its own open of the lock
        before = snapshot(run)
        assert train(["train", "--resume", str(run)]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"being written by another process (pid {os.getpid()}, stack train)" in line
        assert train(smoke_args(data, run)) == 2  # a new run there is refused before the lock is asked
        assert "already exists and is not empty" in one_line(capsys.readouterr().err)
        assert snapshot(run) == before


def test_a_lock_left_by_a_dead_process_is_taken_over(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory holding only a dead writer's lock file is empty to a new run, which takes it over."""
    run = tmp_path / "run"
    run.mkdir()
    pid = dead_pid()
    (run / LOCK_FILE).write_text(f"{pid}\n")
    assert train(smoke_args(data, run, "train.steps=2")) == 0
    assert f"took over {run / LOCK_FILE}: its previous holder (pid {pid}) is gone" in capsys.readouterr().err
    assert evidence(run)["run"]["status"] == "completed"


def test_a_new_run_into_a_used_directory_is_refused_and_touches_nothing(
    data: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(finished, tmp_path)
    before = snapshot(run)
    assert train(smoke_args(data, run)) == 2
    assert "already exists and is not empty" in one_line(capsys.readouterr().err)
    assert snapshot(run) == before


# -- a resume is checked against its checkpoint before it writes -------------------------------


@pytest.mark.parametrize(
    ("sets", "named"),
    [
        (["train.batch_size=2"], ["train.batch_size (4 -> 2)"]),
        (["model.n_layers=2"], ["model.n_layers (1 -> 2)"]),
        (["model.d_model=64", "train.batch_size=2"], ["model.d_model (32 -> 64)", "train.batch_size"]),
        (["train.precision='fp16'"], ["train.precision (fp32 -> fp16)"]),
        (["train.seed=7"], ["train.seed (0 -> 7)"]),
    ],
    ids=["batch-size", "layers", "width-and-batch", "fp16", "seed"],
)
def test_a_resume_that_cannot_continue_its_checkpoint_is_refused_touching_nothing(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], sets: list[str], named: list[str]
) -> None:
    run = copy_of(finished, tmp_path)
    before = snapshot(run)
    argv = ["train", "--resume", str(run)]
    for item in sets:
        argv += ["--set", item]
    assert train(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"stack train: error: cannot resume {run} from step-0000004 with a changed ")
    assert all(key in line for key in named)
    assert snapshot(run) == before


def test_a_resume_on_other_data_or_another_world_size_is_refused_touching_nothing(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(finished, tmp_path)
    before = snapshot(run)
    other = tmp_path / "other-data"
    prepare_corpus([write_corpus(tmp_path / "other", seed=1)], other, val_fraction=0.25, seed=0)
    assert train(["train", "--resume", str(run), "--data", str(other)]) == 2
    line = one_line(capsys.readouterr().err)
    assert (
        f"--data {other} holds other prepared data than the run started on, a changed data manifest (" in line
    )
    assert "--set" not in line  # no key was set, so no `--set` is advised
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun announces to a resume under --nproc 2
    assert train(["train", "--resume", str(run)]) == 2
    assert "with a changed world_size (1 -> 2)" in one_line(capsys.readouterr().err)
    assert snapshot(run) == before


def test_a_resume_after_its_data_dir_was_prepared_again_says_so(
    finished: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run's own DATA_DIR prepared again (`prepare --out D --force`) under a run: the resume is
    refused, but not as a changed key ("drop those --set/--config keys, use the run's own --data"),
    for no key is set and the data is the run's own; the line says what happened and what to do."""
    run, again = copy_of(finished, tmp_path), tmp_path / "again"
    shutil.copytree(data, again)
    record = json.loads((run / "metadata.json").read_text())
    record["metrics"]["data_dir"] = str(again.resolve())
    (run / "metadata.json").write_text(json.dumps(record, indent=2) + "\n")
    prepare_corpus([write_corpus(tmp_path / "other", seed=1)], again, val_fraction=0.25, seed=0, force=True)
    before = snapshot(run)
    assert train(["train", "--resume", str(run)]) == 2
    line = one_line(capsys.readouterr().err)
    assert (
        f"its DATA_DIR {again} was prepared again since the run started, which changed its data manifest ("
        in line
    )
    assert "prepare that data into another DATA_DIR and pass it with --data" in line
    assert "--set" not in line
    assert snapshot(run) == before


def test_a_resume_reads_moved_data_where_data_says_and_names_data_when_it_moved(
    finished: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--data` with `--resume` is honoured (the run's data at a new place, held to
    the checkpoint's manifest), not ignored. A resume whose recorded DATA_DIR is gone said "make it
    with `stack prepare`"; it names --data, the way to give the place it moved to."""
    run = copy_of(finished, tmp_path)
    record = json.loads((run / "metadata.json").read_text())
    gone = tmp_path / "gone"
    record["metrics"]["data_dir"] = str(gone)  # where the run's data was before it moved
    (run / "metadata.json").write_text(json.dumps(record, indent=2) + "\n")
    before = snapshot(run)
    assert train(["train", "--resume", str(run)]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"was trained on DATA_DIR {gone}, which is not there any more" in line
    assert "give its new place with --data DATA_DIR" in line
    assert snapshot(run) == before
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    assert train(["train", "--resume", str(run), "--data", str(moved), "--set", "train.steps=5"]) == 0
    assert [ln["step"] for ln in step_lines(run)][-1] == 5


def test_after_refused_resumes_a_plain_resume_continues(finished: Path, tmp_path: Path) -> None:
    """Two refused resumes leave config.toml as it was: a plain resume after them continues the run."""
    run = copy_of(finished, tmp_path, keep_until=2)
    assert train(["train", "--resume", str(run), "--set", "train.batch_size=2"]) == 2
    assert train(["train", "--resume", str(run), "--set", "model.n_layers=2"]) == 2
    assert train(["train", "--resume", str(run)]) == 0
    assert [line["step"] for line in step_lines(run)] == [1, 2, 3, 4]
    assert [line["batch_sha256"] for line in step_lines(run)] == [
        line["batch_sha256"] for line in step_lines(finished)
    ]
    assert evidence(run)["metrics"]["resumes"][-1] == {
        "from_step": 2,
        "argv": ["stack", "train", "--resume", str(run)],
        "places": {str(run): str(run.resolve())},
        "changed": [],
    }


# -- a refused set-up leaves nothing that blocks the same command -----------------------------


def _bad_config(data: Path, out: Path) -> list[str]:
    return smoke_args(data, out, "train.nope=1")


def _missing_data(data: Path, out: Path) -> list[str]:
    return smoke_args(data.parent / "no-such-data", out)


def _unclipped(data: Path, out: Path) -> list[str]:
    return smoke_args(data, out, "train.clip_norm=0")  # GATE-TRAIN-002 refuses it at start-up


@pytest.mark.parametrize(
    ("argv_of", "code", "said"),
    [
        (_bad_config, 2, "unknown train config key(s) nope"),
        (_missing_data, 2, "no-such-data"),
        (_unclipped, 3, "GATE-TRAIN-002"),
    ],
    ids=["bad-config", "missing-data", "start-up-gate"],
)
def test_a_refused_set_up_leaves_nothing_behind(
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv_of: Callable[[Path, Path], list[str]],
    code: int,
    said: str,
) -> None:
    """The run directory and the parents this command made are gone, so running it again says the same."""
    out = tmp_path / "new" / "nested" / "run"
    for _ in range(2):
        assert train(argv_of(data, out)) == code
        assert said in one_line(capsys.readouterr().err)
        assert not (tmp_path / "new").exists()


def test_a_refused_set_up_removes_only_what_it_created(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine" / "run"
    out.mkdir(parents=True)
    (tmp_path / "mine" / "notes.txt").write_text("the user's\n")
    before = snapshot(tmp_path / "mine")
    assert train(_unclipped(data, out)) == 3
    assert "GATE-TRAIN-002" in one_line(capsys.readouterr().err)
    assert snapshot(tmp_path / "mine") == before  # the empty run directory stays, without a lock file


# -- checkpoints: atomic pruning, leftovers swept, schema and headers checked on load ---------


def test_pruning_spares_what_is_not_a_checkpoint(finished: Path, tmp_path: Path) -> None:
    run = copy_of(finished, tmp_path)
    base = run / ckpt.CKPT_DIR
    shutil.copytree(base / "step-0000002", base / "step-0000001-my-backup")
    shutil.copytree(base / "step-0000002", base / "step-0000003")
    (base / "step-0000003" / ckpt.MANIFEST).unlink()  # not one of the run's checkpoints: no manifest
    pruned = ckpt.prune(run, 1, ckpt.written_checkpoints(run), keep=())
    assert pruned.deleted == ["step-0000002"] and pruned.set_aside == []
    assert sorted(p.name for p in base.iterdir()) == [
        "step-0000001-my-backup",
        "step-0000003",
        "step-0000004",
    ]


def test_a_prune_that_dies_mid_delete_leaves_no_half_checkpoint_in_sight(
    finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_of(finished, tmp_path)

    def dies_after_one_file(path: Path) -> None:  # the process is killed while deleting
        next(p for p in Path(path).iterdir() if p.is_file()).unlink()
        raise OSError("killed mid-delete")

    monkeypatch.setattr(ckpt.shutil, "rmtree", dies_after_one_file)
    with pytest.raises(OSError, match="killed mid-delete"):
        ckpt.prune(run, 1, ckpt.written_checkpoints(run), keep=())
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step-0000004"]
    assert (run / ckpt.CKPT_DIR / f".retired-step-0000002-{os.getpid()}").is_dir()


def test_leftovers_of_dead_writers_are_swept_at_start(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(finished, tmp_path)
    base, dead = run / ckpt.CKPT_DIR, dead_pid()
    for name in (
        f".tmp-step-0000006-{dead}",
        f".retired-step-0000002-{dead}",
        f".tmp-step-0000008-{os.getpid()}",
    ):
        shutil.copytree(base / "step-0000002", base / name)
    assert train(["train", "--resume", str(run), "--set", "train.steps=5"]) == 0
    swept = [line for line in capsys.readouterr().err.splitlines() if "dead processes" in line]
    assert swept == [
        f"stack train: removed what dead processes left in {base}: "
        f".retired-step-0000002-{dead}, .tmp-step-0000006-{dead}"
    ]
    assert sorted(p.name for p in base.iterdir() if p.name.startswith(".")) == [
        f".tmp-step-0000008-{os.getpid()}"  # a live writer's is not ours to remove
    ]


def _manifest_is_a_list(checkpoint: Path) -> None:
    (checkpoint / ckpt.MANIFEST).write_text("[]")


def _manifest_lacks_a_checksum(checkpoint: Path) -> None:
    manifest = json.loads((checkpoint / ckpt.MANIFEST).read_text())
    del manifest["files"]["state.json"]["sha256"]
    (checkpoint / ckpt.MANIFEST).write_text(json.dumps(manifest))


def _state_lacks_its_tokenizer(checkpoint: Path) -> None:
    state = json.loads((checkpoint / ckpt.STATE_FILE).read_text())
    del state["tokenizer"]
    (checkpoint / ckpt.STATE_FILE).write_text(json.dumps(state))
    rehash(checkpoint, ckpt.STATE_FILE)


def _tensor_past_the_end(checkpoint: Path) -> None:
    """The header claims 4 bytes more for one tensor than the file holds after it."""
    path = checkpoint / "model.safetensors"
    payload = path.read_bytes()
    length = struct.unpack("<Q", payload[:8])[0]
    header = json.loads(payload[8 : 8 + length])
    name = max((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][1])
    header[name]["data_offsets"][1] += 4
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload[8 + length :])
    rehash(checkpoint, "model.safetensors")


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (_manifest_is_a_list, r"manifest\.json is not a checkpoint's manifest\.json"),
        (_manifest_lacks_a_checksum, r"manifest\.json lacks key 'files\.state\.json\.sha256'"),
        (_state_lacks_its_tokenizer, r"state\.json lacks key 'tokenizer'"),
        (
            _tensor_past_the_end,
            r"model\.safetensors: tensor '.+' declares bytes \d+\.\.\d+ but the file holds",
        ),
    ],
    ids=["manifest-list", "manifest-key", "state-key", "tensor-header"],
)
def test_a_malformed_checkpoint_is_bad_input_naming_file_and_key(
    finished: Path, tmp_path: Path, damage: Callable[[Path], None], named: str
) -> None:
    """Form, not checksum: the checksums hold (or cannot be read), so it is bad input, not GATE-CKPT-002."""
    run = copy_of(finished, tmp_path)
    newest = ckpt.list_checkpoints(run)[-1]
    damage(newest)
    with pytest.raises(BadInput, match=named) as refused:
        ckpt.load_checkpoint(newest)
    assert "\n" not in str(refused.value)


def _state_lacks_its_rng(checkpoint: Path) -> None:
    state = json.loads((checkpoint / ckpt.STATE_FILE).read_text())
    del state["rng"]
    (checkpoint / ckpt.STATE_FILE).write_text(json.dumps(state))
    rehash(checkpoint, ckpt.STATE_FILE)


@pytest.mark.parametrize(
    ("damage", "note"),
    [
        (_state_lacks_its_rng, "state.json lacks key 'rng'"),
        (_manifest_is_a_list, "manifest.json is not a checkpoint's manifest.json"),
    ],
    ids=["state-key", "manifest-list"],
)
def test_a_resume_passes_over_a_malformed_checkpoint(
    finished: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    note: str,
) -> None:
    """Skipped with a note naming file and key; the run continues from the one before and replaces it."""
    run = copy_of(finished, tmp_path)
    damage(ckpt.step_dir(run, 4))
    assert train(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"skipping step-0000004: {ckpt.step_dir(run, 4)}/{note}" in err
    assert "resuming from step-0000002 instead" in err
    assert [line["step"] for line in step_lines(run)] == [1, 2, 3, 4]
    assert ckpt.problem(ckpt.step_dir(run, 4), resumable=True) is None  # written again at step 4
    assert evidence(run)["checkpoint"]["name"] == "step-0000004"


def test_a_checkpoint_newer_than_its_logs_steps_is_refused_touching_nothing_then_resumed_past(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The harder variant of a kill between checkpoint and log line (a power cut: the checkpoint was synced,
    the log's tail was not): the log lost step-0000004's event and the step lines before it, so adopting it
    would leave a gap in the run's history. Refused in one line, touching nothing, naming the way on; after
    that `mv` the resume continues from the newest checkpoint the log records, and retakes the lost steps."""
    run = copy_of(finished, tmp_path)
    log = run / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    lost = next(at for at, line in enumerate(lines) if json.loads(line).get("step", 0) > 2)
    log.write_text("".join(lines[:lost]))
    before = snapshot(run)
    assert train(["train", "--resume", str(run)]) == 2
    line = one_line(capsys.readouterr().err)
    newest = ckpt.step_dir(run, 4)
    assert f"cannot resume {run} from step-0000004" in line and "nor the steps after 2" in line
    assert line.rstrip().endswith(
        f"move {newest} aside (mv {newest} {newest}.set-aside) to resume from the newest checkpoint "
        "the log records"
    )
    assert snapshot(run) == before
    newest.rename(f"{newest}.set-aside")
    assert train(["train", "--resume", str(run)]) == 0
    assert [ln["batch_sha256"] for ln in step_lines(run)] == [
        ln["batch_sha256"] for ln in step_lines(finished)
    ]
    assert evidence(run)["metrics"]["resumes"][-1]["from_step"] == 2
    assert (run / ckpt.CKPT_DIR / "step-0000004.set-aside").is_dir()  # nothing deleted
    assert check_record_truth(read_evidence(run / "metadata.json"), run, load_spec()).violations == []


# -- a disk that fills while the run writes ------------------------------------------------------

NO_SPACE = "Error while serializing: I/O error: No space left on device (os error 28)"


def _full_at(step: int, real: Callable[..., None], *, rust: bool) -> Callable[..., None]:
    """A safetensors save that writes half its file, then meets a full disk, at the checkpoint of
    `step` (as the staging writer does on a tmpfs that fills): an OSError that names no file, as
    Python's write reports it, or safetensors' own error, whose text alone says it (`rust`)."""

    def save(what: object, filename: str | Path, *args: object, **kwargs: object) -> None:
        if f"step-{step:07d}" not in str(filename):
            return real(what, filename, *args, **kwargs)
        Path(filename).write_bytes(b"\0" * 4096)
        if rust:
            raise SafetensorError(NO_SPACE)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def ending(err: str) -> str:
    """The line a run ends on, after its progress lines (one line: no traceback)."""
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


def _stopped_cleanly(run: Path, line: str) -> None:
    """What a run the disk filled under leaves: no staging directory, its lock free for the next
    command, and its record `failed` for the reason the line gives."""
    assert not [p.name for p in (run / ckpt.CKPT_DIR).iterdir() if p.name.startswith(".")]
    with exclusive(run, "stack train"):
        pass
    record = evidence(run)["run"]
    assert record["status"] == "failed"
    assert line == f"stack train: error: {record['stop_reason']}"


def test_a_disk_full_at_the_first_checkpoint_names_it_cleans_up_and_says_how_to_start_again(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The line names the checkpoint being written and how to start again, not a bare "run again"
    that is then refused; the half-written staging directory (what filled the disk) is removed and
    metadata.json says `failed`, not `running`. The line's own advice works."""
    monkeypatch.setattr(ckpt, "save_weights", _full_at(2, ckpt.save_weights, rust=False))
    run = tmp_path / "run"
    argv = smoke_args(data, run, "train.steps=4", "ckpt.every=2")
    assert train(argv) == 2
    line = ending(capsys.readouterr().err)
    assert line.startswith(
        f"stack train: error: the disk is full writing checkpoint step-0000002 ({ckpt.step_dir(run, 2)}; "
        "what it had written is removed); "
    )
    assert line.endswith(
        f"{run} holds no checkpoint to resume: free space, then remove {run} and run the same command "
        "again, or choose another --out"
    )
    _stopped_cleanly(run, line)
    monkeypatch.undo()
    shutil.rmtree(run)
    assert train(argv) == 0


def test_a_disk_full_at_a_later_checkpoint_is_no_malformed_file_and_resume_continues(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Safetensors' I/O error writing a checkpoint was called "a .safetensors file it read is
    malformed; restore it or re-create it". It is the disk, and --resume is the way on."""
    monkeypatch.setattr(ckpt, "save_tensors", _full_at(4, ckpt.save_tensors, rust=True))
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.steps=6", "ckpt.every=2", "ckpt.keep_last=8")) == 2
    line = ending(capsys.readouterr().err)
    assert line == (
        f"stack train: error: the disk is full writing checkpoint step-0000004 ({ckpt.step_dir(run, 4)}; "
        f"what it had written is removed); free space, then continue from step-0000002 with: stack "
        f"train --resume {run}"
    )
    _stopped_cleanly(run, line)
    monkeypatch.undo()
    assert train(["train", "--resume", str(run)]) == 0
    assert [ln["step"] for ln in step_lines(run)] == list(range(1, 7))
    assert check_record_truth(read_evidence(run / "metadata.json"), run, load_spec()).violations == []


def test_a_record_the_full_disk_will_not_take_is_said_not_the_error_of_writing_it(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The record's own write failing too must not replace the error that stopped the run: the line
    says the write that stopped it, and that metadata.json still says `running`."""
    monkeypatch.setattr(ckpt, "save_weights", _full_at(2, ckpt.save_weights, rust=False))
    real = run_module.write_evidence

    def full_for_the_failure(run_dir: Path, record: EvidenceRecord) -> None:
        if record.run.status == RunStatus.FAILED:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(run_dir, record)

    monkeypatch.setattr(run_module, "write_evidence", full_for_the_failure)
    run = tmp_path / "run"
    assert train(smoke_args(data, run, "train.steps=2", "ckpt.every=2")) == 2
    line = ending(capsys.readouterr().err)
    assert "the disk is full writing checkpoint step-0000002" in line
    assert line.endswith("; metadata.json could not be written either, and still says the run is running")
    assert evidence(run)["run"]["status"] == "running"


def test_a_safetensors_error_that_reports_the_disk_is_said_as_the_disk() -> None:
    """Every command: safetensors' text of an operating system's refusal is that refusal's line."""
    assert describe(SafetensorError(NO_SPACE)) == os_error_line(OSError(errno.ENOSPC, "x"))
    assert "is malformed" in str(
        describe(SafetensorError("Error while deserializing header: HeaderTooLarge"))
    )


# -- the end of the corpus is a clean stop ------------------------------------------------------


def test_an_exhausted_corpus_stops_cleanly_and_resumes_with_wrap(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert train(smoke_args(data, run, *EXHAUSTING, "data.wrap=false")) == 3
    err = capsys.readouterr().err  # the progress lines, then the one line that ends the run
    last_line = err.splitlines()[-1]
    assert "Traceback" not in err and last_line.startswith("stack train: gate fired: GATE-DATA-001")
    assert "data.wrap=true" in last_line
    batches = TokenReader(data, batch_size=8, seq_len=64, seed=0).steps_per_epoch
    last = batches // 8  # whole steps of 8 micro-batches in one epoch
    assert [ln["step"] for ln in step_lines(run)] == list(range(1, last + 1))
    assert ckpt.list_checkpoints(run)[-1].name == f"step-{last:07d}"
    record = read_evidence(run / "metadata.json")
    assert record.run.status.value == "exhausted" and "GATE-DATA-001" in str(record.run.stop_reason)
    assert verdicts(run)["GATE-DATA-001"] == "PASS"  # the reader served no placeholder
    assert check_record_truth(record, run, load_spec()).violations == []

    more = ["--set", "data.wrap=true", "--set", f"train.steps={last + 2}"]
    assert train(["train", "--resume", str(run), *more]) == 0
    assert f"stack train: step {last + 1}: the train split wrapped to epoch 1" in capsys.readouterr().err
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"type": "event", "step": last + 1, "event": "wrap", "epoch": 1} in lines
    assert [ln["step"] for ln in step_lines(run)] == list(range(1, last + 3))
    assert evidence(run)["run"]["status"] == "completed"


# -- fp16 loss scaling on CPU, resumed exactly ---------------------------------------------------


@pytest.mark.holds("GATE-CKPT-003")
def test_fp16_on_cpu_resumes_bit_exact_with_its_loss_scaler(fp16_run: Path, tmp_path: Path) -> None:
    run = copy_of(fp16_run, tmp_path, keep_until=2)
    assert train(["train", "--resume", str(run)]) == 0
    keys = ("step", "loss", "grad_norm", "loss_scale", "batch_sha256")
    assert [[ln[k] for k in keys] for ln in step_lines(run)] == [
        [ln[k] for k in keys] for ln in step_lines(fp16_run)
    ]
    saved = [
        json.loads((ckpt.step_dir(r, 6) / ckpt.STATE_FILE).read_text())["scaler"] for r in (run, fp16_run)
    ]
    assert saved[0] == saved[1] and saved[0]["_growth_tracker"] == 6  # counted on from 2, not restarted
    weights = [load_file(str(ckpt.step_dir(r, 6) / "model.safetensors")) for r in (run, fp16_run)]
    assert all(weights[0][name].equal(weights[1][name]) for name in weights[1])


@pytest.mark.gate("GATE-CKPT-003")
def test_a_resume_that_forgets_the_loss_scaler_halts(
    fp16_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.amp.GradScaler, "load_state_dict", lambda self, state: None)  # the planted bug
    run = copy_of(fp16_run, tmp_path, keep_until=2)
    assert train(["train", "--resume", str(run)]) == 3
    (result,) = [g for g in evidence(run)["gates"] if g["id"] == "GATE-CKPT-003"]
    assert result["verdict"] == "FAIL" and result["measured"]["mismatched"] == ["scaler"]


# -- destinations that cannot be written are refused before any work ---------------------------


@pytest.mark.parametrize(
    ("flag", "where", "said"),
    [
        ("--out", "a-file", "exists and is not a directory"),
        ("--out", "a-file/run", "a-file is a file; choose another --out"),
        ("--out", "/proc/self/run", "/proc/self does not let this user create files"),
        ("--evidence-dir", "a-file", "exists and is not a directory"),
        ("--evidence-dir", "a-file/ledger", "a-file is a file; choose another --evidence-dir"),
    ],
    ids=["out-file", "out-under-file", "out-unwritable", "ledger-file", "ledger-under-file"],
)
def test_an_unusable_destination_is_refused_before_any_work(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, where: str, said: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    target = Path(where) if where.startswith("/") else tmp_path / where
    argv = smoke_args(data, tmp_path / "run") if flag == "--evidence-dir" else smoke_args(data, target)
    if flag == "--evidence-dir":
        argv += [flag, str(target)]
    before = snapshot(tmp_path)
    assert train(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"error: {flag} {target.absolute()}" in line and said in line
    assert snapshot(tmp_path) == before


# -- one writer per run directory, whatever the output ----------------------------------


def test_no_command_writes_under_a_run_that_another_process_is_writing(
    data: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While `stack train` holds RUN/.lock, `stack trace RUN` and `stack lens RUN` must not write
    their records into RUN/traces/: every output under the run (a record's default home, --out,
    --json, --record, --save, a run nested in it) is refused naming the writer, and nothing is
    written; once the writer is gone, the same command writes there."""
    run = copy_of(finished, tmp_path)
    outputs = [
        ["trace", str(run), "--prompt", "hello"],
        ["lens", str(run), "--prompt", "hello"],
        ["trace", str(run), "--prompt", "hello", "--out", str(tmp_path / "t"), "--json", str(run / "t.json")],
        ["lens", str(run), "--prompt", "hello", "--out", str(run / "lens")],
        ["eval", str(run), "--split", "val", "--record", str(run / "scored")],
        ["sample", str(run), "--tokens", "2", "--record", str(run / "sampled")],
        ["export", str(run), "--format", "hf", "--out", str(run / "hf")],
        smoke_args(data, run / "nested"),
    ]
    with exclusive(run, "stack train"):  # a live writer (this process's own open of the lock)
        before = snapshot(run)
        for argv in outputs:
            assert train(argv) == 2, argv
            line = one_line(capsys.readouterr().err)
            assert f"which is being written by another process (pid {os.getpid()}, stack train)" in line, line
        assert snapshot(run) == before
    assert train(outputs[0]) in (0, 3)  # the writer is gone: a trace's finding is exit 3, not a refusal
    assert [p.name.split("-")[0] for p in (run / "traces").iterdir()] == ["trace"]


# -- a refusal offers only what would be accepted ----------------------------------------


def test_a_folder_of_the_users_files_is_not_offered_resume_and_a_run_is(
    data: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --out MYDIR` on the user's own files said `continue it with --resume MYDIR`, which was
    then refused; a run it would continue is still offered --resume, and following it works."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("notes\n")
    assert train(smoke_args(data, mine)) == 2
    line = one_line(capsys.readouterr().err)
    assert line.endswith("already exists and is not empty; choose another --out\n"), line
    run = copy_of(finished, tmp_path)
    assert train(smoke_args(data, run)) == 2
    assert f"or continue it with --resume {run}" in one_line(capsys.readouterr().err)
    assert train(["train", "--resume", str(run)]) == 0  # complete: told how to train on, left alone
    assert "is complete at step 4 (train.steps=4): nothing to resume" in capsys.readouterr().err
    assert train(["train", "--resume", str(run), "--set", "train.steps=5"]) == 0
    assert "resuming from step-" in capsys.readouterr().err  # the resume says where it starts
    for path in ckpt.list_checkpoints(run):  # a run none of whose checkpoints a resume can take
        (path / "model.safetensors").write_bytes(b"damaged")
    assert train(smoke_args(data, run)) == 2
    assert "--resume" not in one_line(capsys.readouterr().err)


def test_resume_with_new_run_options_names_only_those_given(
    finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(finished, tmp_path)
    assert train(["train", "--resume", str(run), "--preset", "smoke"]) == 2
    assert "drop --preset (use --set" in one_line(capsys.readouterr().err)


# -- refusals that say what is wrong and what to do -------------------------


def test_a_run_name_that_cannot_be_a_run_id_says_ascii_and_offers_one(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--out …/läufe` is refused because the name is the run's id, which the rule holds to ASCII,
    and the line says so (not "letters, digits, '.', '_' and '-'", for ä is a letter)."""
    out = tmp_path / "läufe"
    assert train(smoke_args(data, out)) == 2
    line = one_line(capsys.readouterr().err)
    assert (
        "run directory name 'läufe' is the run's id in its record and ledger, so it must use ASCII " in line
    )
    assert line.rstrip().endswith("e.g. 'laufe'") and not out.exists()


@pytest.mark.parametrize(
    ("item", "said"),
    [
        (
            "monitor.prompts=[hello, world]",
            "--set monitor.prompts=[hello, world] is not a TOML list: quote its items, e.g. "
            '--set \'monitor.prompts=["hello", "world"]\'',
        ),
        ("data.exclude=[main]", "is not a TOML list: quote its items, e.g. --set 'data.exclude=[\"main\"]'"),
        (
            "data.weights={main=x}",
            "is not a TOML table: quote its string values, e.g. --set 'data.weights={main=\"x\"}'",
        ),
    ],
)
def test_a_set_value_that_opens_a_list_but_is_not_toml_says_to_quote_its_items(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str, said: str
) -> None:
    """The bare words of `[hello, world]` are not TOML; the value must not fall back to a string
    refused as "Input should be a valid list", for a list was written."""
    assert train(smoke_args(data, tmp_path / "run", item)) == 2
    line = one_line(capsys.readouterr().err)
    assert said in line and "valid list" not in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("item", "command"),
    [
        ("dpo.beta=0.5", "`stack dpo RUN_DIR|CKPT --data PAIRS --out RUN_DIR`"),
        ("distill.temperature=2.0", "`stack distill TEACHER --data DATA_DIR --out RUN_DIR`"),
    ],
)
def test_a_section_of_another_command_names_that_command(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], item: str, command: str
) -> None:
    """`stack train --set dpo.beta=0.5` said "config dpo.reference: Field required", a key the
    user never heard of; dpo.* and distill.* belong to their tasks and the commands that run them."""
    assert train(smoke_args(data, tmp_path / "run", item)) == 2
    line = one_line(capsys.readouterr().err)
    section = item.split(".")[0]
    assert (
        f"{item.split('=')[0]}: {section}.* settings are for train.task={section}, which {command} " in line
    )
    assert "this run's train.task is pretrain" in line and "Field required" not in line


def test_a_phase_that_starts_after_the_last_step_is_noted(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A phase after step 500 of a 10-step run never applied, and the run said nothing. It is a
    note, not a refusal: a resume may raise train.steps past it."""
    phases = "data.phases=[{after_step=500, weights={main=1.0}}]"
    assert train(smoke_args(data, tmp_path / "run", "train.steps=2", phases)) == 0
    err = capsys.readouterr().err
    assert "data.phases[0] (phase 1) starts after step 500, but train.steps is 2: it never applies" in err


def test_a_run_that_ends_inside_its_warmup_says_it_never_reaches_its_learning_rate(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--set train.steps=50` on a preset whose warmup is 200 steps trained at a quarter of train.lr
    and said nothing. A warmup one step longer than the run is noted with the rate its last step
    logged; a warmup as long as the run reaches train.lr at its last step and is not."""
    assert train(smoke_args(data, tmp_path / "long", "train.steps=2", "train.warmup_steps=3")) == 0
    err = capsys.readouterr().err
    last = step_lines(tmp_path / "long")[-1]["lr"]
    assert "train.warmup_steps 3 is more than train.steps 2: the learning rate never reaches" in err, err
    assert f"(it rises to {last:.3g} at the last step, 67% of it)" in err, err
    assert train(smoke_args(data, tmp_path / "even", "train.steps=2", "train.warmup_steps=2")) == 0
    assert "warmup_steps" not in capsys.readouterr().err


# -- a size that cannot fit is refused in one line before anything is allocated ---------


@pytest.mark.parametrize(
    "setting", ["model.ctx=100000000", "train.batch_size=100000000", "model.d_model=200000"]
)
def test_a_size_that_cannot_fit_is_one_line_naming_it_not_an_internal_error(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    setting: str,
) -> None:
    """A mistyped `--set model.ctx=100000000` was exit 1: the start-up check's KV cache asked for 25.6
    GB. The step's estimated memory is held to the machine's before the model is built: exit 2, one
    line naming the setting and its value, no crash file, and no run directory left."""
    monkeypatch.setenv("GATESTACK_CRASH_DIR", str(tmp_path / "crashes"))
    out = tmp_path / "run"
    assert train(smoke_args(data, out, setting)) == 2
    line = one_line(capsys.readouterr().err)
    assert "for a training step" in line and "; lower " in line and setting in line.rsplit("; lower ")[1], (
        line
    )
    assert not (tmp_path / "crashes").exists() and not out.exists()


def test_the_start_up_checks_allocate_by_their_probe_not_by_the_context() -> None:
    """The architecture check decodes a few tokens through the KV cache; sized by ctx it would ask a
    model of ctx 10^12 for petabytes. It runs whatever ctx says."""
    from stack.model.checks import check_architecture
    from stack.model.config import ModelConfig
    from stack.model.gpt import GPT

    config = ModelConfig(vocab=64, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, ffn_hidden=32, ctx=10**12)
    check_architecture(GPT(config, seed=0))


def test_a_required_key_left_out_names_how_to_give_it() -> None:
    """`stack sft` without train.steps does not say pydantic's bare "config train.steps: Field
    required" with no way to give it: a required key left out names --set, --config and
    --preset."""
    from stack.config import parse_section
    from stack.train.config import TrainSection

    with pytest.raises(BadInput) as caught:
        parse_section(TrainSection, "train", {"task": "sft"})
    line = str(caught.value)
    assert "config train.steps is not set: give it with --set train.steps=VALUE" in line
    assert "Field required" not in line
