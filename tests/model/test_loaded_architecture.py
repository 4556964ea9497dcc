"""GATE-MODEL-003 in the commands whose record measures a checkpoint's model: `stack eval` and
`stack sample` hold the model they loaded to the written-out architecture, as the training loop
does before step 1 (stack.train.trained.load_measured). A planted bug (RoPE
frequencies over the whole head instead of half of it) halted training at once but let `stack
eval` score the wrong forward of a trained checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stack.cli import main
from stack.model import gpt as gpt_module
from stack.model.config import ModelConfig
from tests.support.trace_support import save_run, tiny_model

REAL_ROPE = gpt_module.rope_angles


def _rope_over_the_whole_head(
    config: ModelConfig, start: int, length: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Planted: inverse frequencies θ^(−i/head_dim), where the architecture says θ^(−i/(head_dim/2))."""
    slower = config.model_copy(update={"rope_theta": config.rope_theta**0.5})
    return REAL_ROPE(slower, start, length, device, dtype)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_run(tmp_path_factory.mktemp("loaded") / "run", tiny_model())


def _argv(command: str, run: Path, record: Path) -> list[str]:
    given = {"eval": ["--text", __file__], "sample": ["--prompt", "gate ", "--tokens", "8", "--seed", "1"]}
    return [command, str(run), *given[command], "--record", str(record)]


@pytest.mark.gate("GATE-MODEL-003")
@pytest.mark.parametrize("command", ["eval", "sample"])
def test_a_command_whose_model_computes_another_architecture_exits_3(
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    monkeypatch.setattr(gpt_module, "rope_angles", _rope_over_the_whole_head)
    assert main(_argv(command, run, tmp_path / "rec")) == 3
    err = capsys.readouterr().err
    assert "GATE-MODEL-003" in err and "Traceback" not in err, err


@pytest.mark.holds("GATE-MODEL-003")
@pytest.mark.parametrize("command", ["eval", "sample"])
def test_a_command_measuring_a_checkpoint_records_its_architecture_held(
    run: Path, tmp_path: Path, command: str
) -> None:
    assert main(_argv(command, run, tmp_path / "rec")) == 0
    gates = json.loads((tmp_path / "rec" / "metadata.json").read_text())["gates"]
    result = next(g for g in gates if g["id"] == "GATE-MODEL-003")
    assert result["verdict"] == "PASS" and result["measured"]["checked"] is True
