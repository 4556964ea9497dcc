"""benchmarks/reference_run.py: the reference run's four commands, run for real at the smoke size on CPU.

On a GPU the script trains `base` for minutes; here the same commands run a smoke model for a few
steps, which is enough to see each one file its record in the ledger given, the export keep its
parity, and a failure stop the commands after it with its own exit code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import reference_run
from contracts.evidence import EVIDENCE_FILE, RunStatus, read_evidence
from tests.support.train_support import prepared

SMOKE = ["--preset", "smoke", "--device", "cpu", "--set", "train.device='cpu'"]
SMOKE += [word for value in ("train.steps=6", "train.warmup_steps=1", "eval.every=3", "ckpt.every=3",
                             "monitor.sample_every=3") for word in ("--set", value)]  # fmt: skip


def test_each_command_files_its_record_and_the_run_is_scored_traced_and_exported(tmp_path: Path) -> None:
    ledger, work = tmp_path / "ledger", tmp_path / "work"
    argv = ["--data", str(prepared(tmp_path)), "--work", str(work), "--ledger", str(ledger), *SMOKE]
    assert reference_run.main(argv) == 0
    records = [read_evidence(path) for path in sorted(ledger.glob(f"*/{EVIDENCE_FILE}"))]
    assert sorted(r.run.kind for r in records) == ["eval", "export-hf", "trace", "train"]
    assert all(r.run.status is RunStatus.COMPLETED for r in records)
    train = next(r for r in records if r.run.kind == "train")
    assert train.run.id.startswith("reference-smoke-") and (work / train.run.id / "checkpoints").is_dir()
    assert (work / f"{train.run.id}-hf" / "export.json").is_file()


def test_a_failed_command_stops_the_rest_with_its_own_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--data",
        str(tmp_path / "none"),
        "--work",
        str(tmp_path / "work"),
        "--ledger",
        str(tmp_path),
        *SMOKE,
    ]
    assert reference_run.main(argv) == 2
    out = capsys.readouterr().out
    assert "train ended with exit 2; the commands after it were not run" in out
    assert "reference_run: eval:" not in out and not list(tmp_path.glob(f"*/{EVIDENCE_FILE}"))


def test_commands_runs_those_named_and_refuses_a_list_without_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--commands train trace`: the two records a healthy checkpoint's calibration needs, no more."""
    ledger = tmp_path / "ledger"
    argv = [
        "--data",
        str(prepared(tmp_path)),
        "--work",
        str(tmp_path / "work"),
        "--ledger",
        str(ledger),
        *SMOKE,
    ]
    assert reference_run.main([*argv, "--commands", "train", "trace"]) == 0
    kinds = sorted(read_evidence(path).run.kind for path in ledger.glob(f"*/{EVIDENCE_FILE}"))
    assert kinds == ["trace", "train"]
    with pytest.raises(SystemExit) as stopped:
        reference_run.main([*argv, "--commands", "trace"])
    assert stopped.value.code == 2 and "must include train" in capsys.readouterr().err
