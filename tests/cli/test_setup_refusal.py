"""A gate that fires during set-up leaves evidence, and nothing that blocks the same command.

The run directory stays as if never asked for (stack.train.run's rule: nothing is written before
set-up has passed); with --evidence-dir the halted record, naming the gate, is filed in the ledger
under `<run-id>-refused-<time>`, so the run id stays free. Each case plants a bug in the stack's
own model code that a start-up gate exists for: attention scaled twice (GATE-MODEL-001), λ_init
counted from depth 1 (GATE-ARCH-005), one token too many routed through a depth-routed block
(GATE-ARCH-008).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contracts.evidence import Verdict, read_evidence
from contracts.spec import load_spec
from stack.model import attention, depth_router, diff_attention
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.record_checks import check_record_truth

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

# gate → (module, name, planted replacement, the --set items that turn the option on)
PLANTS: dict[str, tuple[Any, str, Any, tuple[str, ...]]] = {
    "GATE-MODEL-001": (attention, "softmax_scale", lambda head_dim: 1.0 / head_dim, ()),
    "GATE-ARCH-005": (
        diff_attention,
        "lambda_init",
        lambda depth, real=diff_attention.lambda_init: real(depth + 1),
        ("model.diff_attn=true",),
    ),
    "GATE-ARCH-008": (
        depth_router,
        "capacity_tokens",
        lambda capacity, length, real=depth_router.capacity_tokens: real(capacity, length) + 1,
        ("model.mod_every=1", "model.mod_capacity=0.5"),
    ),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepared(tmp_path_factory.mktemp("refusal-data"))


@pytest.mark.parametrize("gate_id", [pytest.param(g, marks=pytest.mark.gate(g)) for g in sorted(PLANTS)])
def test_a_set_up_refusal_is_filed_and_the_same_command_runs_again(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    gate_id: str,
) -> None:
    module, name, plant, sets = PLANTS[gate_id]
    ledger, out = tmp_path / "ledger", tmp_path / "run"
    argv = [*smoke_args(data, out, "train.steps=2", *sets), "--evidence-dir", str(ledger)]
    monkeypatch.setattr(module, name, plant)
    for attempt in (1, 2):  # refused twice in a row: the second is not blocked by the first
        assert train(argv) == 3
        err = capsys.readouterr().err
        assert gate_id in err and "the refusal is filed at" in err and "Traceback" not in err
        assert not out.exists()
        assert len(list(ledger.iterdir())) == attempt
    filed = sorted(ledger.iterdir())
    assert all(path.name.startswith("run-refused-") for path in filed)
    record = read_evidence(filed[0] / "metadata.json")
    assert record.run.status.value == "halted" and record.run.id == filed[0].name
    assert gate_id in str(record.run.stop_reason) and record.run.kind == "train"
    assert {g.id: g.verdict for g in record.gates}[gate_id] is Verdict.FAIL
    assert record.config["train"]["steps"] == 2
    assert {a.path for a in record.artifacts} == {"config.toml", "metrics.jsonl"}
    assert (filed[0] / "metrics.jsonl").read_text() == ""
    assert check_record_truth(record, filed[0], load_spec()).violations == []
    monkeypatch.undo()  # the bug fixed, the same command trains and files under the run's own id
    assert train(argv) == 0
    assert out.is_dir() and (ledger / "run" / "metadata.json").is_file()


@pytest.mark.gate("GATE-MODEL-001")
def test_without_an_evidence_dir_a_refusal_writes_nothing(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module, name, plant, _ = PLANTS["GATE-MODEL-001"]
    monkeypatch.setattr(module, name, plant)
    out = tmp_path / "nested" / "run"
    assert train(smoke_args(data, out, "train.steps=2")) == 3
    assert "GATE-MODEL-001" in capsys.readouterr().err
    assert not (tmp_path / "nested").exists()
