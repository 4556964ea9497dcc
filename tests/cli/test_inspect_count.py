"""`stack inspect`'s parameter count, held to what the checkpoint's config implies.

Planted: a mutant that counts a depth-routed model's threshold buffers (and a LoRA run's base
hashes) as parameters; inspect writes no record and runs no gate, so nothing else sees the wrong
number. Its count stands beside the one contracts.model_parameters writes out from the config, and a
difference is said on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stack.cli import inspect as inspect_cli
from stack.cli import main
from stack.model import GPT
from stack.train.config import resolve
from tests.support.trace_support import save_run

MOD = ["model.mod_every=2", "model.mod_capacity=0.25", "model.n_layers=2"]


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A depth-routed smoke model saved as a run: it keeps a threshold buffer beside its parameters."""
    config = resolve("smoke", None, MOD, vocab=257)
    return save_run(tmp_path_factory.mktemp("routed") / "run", GPT(config.model))


def _inspected(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    assert main(["inspect", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


def test_the_count_is_the_configs_and_buffers_are_left_out(
    routed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The buffers are listed as tensors but not counted: the count equals the config's, silently."""
    summary, err = _inspected(routed, capsys)
    assert any(t["buffer"] for t in summary["tensors"])
    assert summary["parameters"] == summary["parameters_implied"]
    assert "warning" not in err


def test_buffers_counted_as_parameters_are_said(
    routed: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plant the mutant: every tensor counted, buffers too. The count exceeds the config's by the
    buffers' elements and inspect says so."""
    read = inspect_cli._tensors
    monkeypatch.setattr(inspect_cli, "_tensors", lambda w: [{**t, "buffer": False} for t in read(w)])
    summary, err = _inspected(routed, capsys)
    buffers = sum(t["numel"] for t in read(routed / "model.safetensors") if t["buffer"])
    assert summary["parameters"] == summary["parameters_implied"] + buffers
    assert f"holds {summary['parameters']:,} parameters but its config implies" in err


def test_a_config_too_damaged_to_say_is_named() -> None:
    """A state whose config lacks its [model] table still inspects, the implied count named unknown."""
    assert inspect_cli._implied_count({}).startswith("unknown: its config cannot say (KeyError")
