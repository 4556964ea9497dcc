"""A model trained with the Triton kernel, used where Triton cannot run (a CPU without its interpreter).

The attention paths compute the same numbers (GATE-MODEL-001), so every command that runs the
model falls back to sdpa and says so in one line on stderr; `stack trace`, whose subject is the
path, refuses naming --backend sdpa; a training run refuses triton for packed documents at set-up,
and no refusal comes after a command wrote its output.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contracts.errors import BadInput
from stack.cli import main
from stack.es import rundir as es_rundir
from stack.model.gpt import GPT
from stack.train.checkpoint import read_state
from stack.train.trained import load_trained, resolve_checkpoint
from tests.support.trace_support import CONFIG, save_run, tiny_model
from tests.support.train_support import prepared

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

TUNE = ("--steps", "2", "--batch-size", "2", "--device", "cpu")
NOTE = "it runs with attention='sdpa', the same numbers (GATE-MODEL-001)"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A byte-level model whose config says attention=triton (head_dim 16, one the kernel takes),
    a mixture-of-depths one, and a DATA_DIR in the same bytes."""
    root = tmp_path_factory.mktemp("triton")
    # At the default init_std: quantizing tiny_model's weights (std 0.2) moves its logits past GATE-HQQ-002.
    save_run(root / "triton", GPT(CONFIG.model_copy(update={"attention": "triton"}), seed=0).eval())
    save_run(root / "routed", tiny_model(mod_every=1, mod_capacity=0.5))
    text = root / "notes.txt"
    text.write_text("the gate fired at layer one\nand the spec said why\n")
    return {"triton": root / "triton", "routed": root / "routed", "data": prepared(root), "text": text}


@pytest.fixture
def no_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as a CPU without Triton's interpreter (conftest sets it for the kernel tests)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _ran(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    return err


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "{triton}", "--prompt", "gate", "--tokens", "4"],
        ["sample", "{triton}", "--prompt", "gate", "--tokens", "4", "--temperature", "0"],
        ["eval", "{triton}", "--text", "{text}"],
        ["lens", "{triton}", "--prompt", "gate model", "--out", "{out}"],
        ["quantize", "{triton}", "--targets", "*", "--out", "{out}"],
        ["laser", "{triton}", "--targets", "*", "--rho", "0.5", "--out", "{out}"],
        ["es", "{triton}", "--data", "{data}", "--out", "{out}", "--steps", "1", "--population", "2"],
        ["distill", "{triton}", "--data", "{data}", "--out", "{out}", "--preset", "smoke", *TUNE],
    ],
    ids=["sample", "greedy", "eval", "lens", "quantize", "laser", "es", "distill-teacher"],
)
def test_every_command_runs_a_triton_model_where_triton_cannot(
    world: dict[str, Path],
    tmp_path: Path,
    command: list[str],
    no_triton: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each ran on sdpa with one note (they refused with a fix they do not offer, and es and distill
    after writing OUT, which could then be neither retried nor resumed)."""
    places = {**{k: str(v) for k, v in world.items()}, "out": str(tmp_path / "out")}
    assert main([a.format(**places) for a in command]) == 0
    err = _ran(capsys)
    assert NOTE in err and f"{world['triton'].name}" in err
    if command[0] in ("quantize", "laser"):  # the output is still the model trained with triton
        state = read_state(resolve_checkpoint(tmp_path / "out"))
        assert state["config"]["model"]["attention"] == "triton"


def test_loading_says_which_path_runs(world: dict[str, Path], no_triton: None) -> None:
    trained = load_trained(world["triton"])
    assert trained.model.config.attention == "sdpa" and trained.config.model.attention == "triton"
    assert load_trained(world["triton"], attention="naive").model.config.attention == "naive"


def test_loading_keeps_triton_where_it_runs(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_trained(world["triton"]).model.config.attention == "triton"  # TRITON_INTERPRET=1 here
    assert NOTE not in capsys.readouterr().err


def test_trace_of_a_triton_model_names_the_backend_it_can_trace_on(
    world: dict[str, Path], tmp_path: Path, no_triton: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tracing is about the path, so it does not fall back: it names --backend sdpa."""
    argv = ["trace", str(world["triton"]), "--prompt", "gate", "--out", str(tmp_path / "t")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "trace it with --backend sdpa" in err and err.count("\n") == 1
    assert not (tmp_path / "t").exists()
    assert main([*argv, "--backend", "sdpa"]) == 0
    _ran(capsys)
    assert main([*argv[:4], "--backend", "sdpa", "--backend-b", "triton", "--out", str(tmp_path / "b")]) == 2
    assert "--backend-b triton cannot run on cpu here" in capsys.readouterr().err


def test_trace_backend_b_triton_on_an_option_without_a_kernel_names_backend_b(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the model config's "set attention = sdpa", which the trace command has no way to do."""
    argv = ["trace", str(world["routed"]), "--prompt", "gate", "--backend-b", "triton"]
    assert main([*argv, "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "--backend-b triton: the Triton kernel has no path for a model with mod_every=1" in err
    assert "use --backend-b sdpa" in err and err.count("\n") == 1


def test_sft_refuses_triton_at_set_up_where_triton_runs(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Packed examples need the document mask the kernel has not: refused before anything is
    written (not at the first step, 12 s in, with OUT written)."""
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        "".join(
            f'{{"messages": [{{"role": "user", "content": "{i}+1?"}}, '
            f'{{"role": "assistant", "content": "{i + 1}."}}]}}\n'
            for i in range(24)
        )
    )
    sft_data = tmp_path / "sft"
    prep = ["prepare", str(chats), "--format", "chat", "--tokenizer", str(world["triton"])]
    assert main([*prep, "--out", str(sft_data), "--val-fraction", "0.5", "--pack-len", "32"]) == 0
    out = tmp_path / "out"
    argv = ["sft", "--init-from", str(world["triton"]), "--data", str(sft_data), "--out", str(out)]
    assert main([*argv, "--set", "train.steps=2", "--set", "train.device='cpu'"]) == 2
    err = capsys.readouterr().err
    assert "has no document mask, and train.task=sft packs" in err and "model.attention=sdpa" in err
    assert not out.exists()


def test_es_refuses_a_model_that_cannot_run_before_it_writes_out(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever stops the model from running is refused while OUT is still as it was."""

    def refused(model: torch.nn.Module) -> None:
        raise BadInput("planted: this model cannot run here")

    monkeypatch.setattr(es_rundir, "check_runs", lambda model: refused(model))
    out = tmp_path / "out"
    argv = ["es", str(world["triton"]), "--data", str(world["data"]), "--out", str(out), "--steps", "1"]
    assert main([*argv, "--population", "2"]) == 2
    assert "planted" in capsys.readouterr().err and not out.exists()
