"""Shared set-up for the training tests: a small generated corpus and a way to run `stack train`."""

from __future__ import annotations

import builtins
import contextlib
import json
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from contracts.evidence import Verdict
from contracts.spec import Severity, load_spec
from stack.cli import main
from stack.cli.progress import is_amount_line
from stack.data.prepare import prepare_corpus
from stack.data.tokenizer import load_tokenizer
from stack.model import GPT
from stack.model import gpt as gpt_module
from stack.train import checkpoint as ckpt
from stack.train.config import resolve
from stack.train.loop import Trainer
from stack.train.metrics import MetricsLog
from stack.train.resume_check import tensors_digest
from tests.support.trace_support import save_run

WORDS = [
    "gate",
    "evidence",
    "model",
    "token",
    "loss",
    "batch",
    "step",
    "layer",
    "attention",
    "kernel",
    "reader",
    "shard",
    "manifest",
    "spec",
    "contract",
    "resume",
    "checkpoint",
    "sample",
    "monitor",
    "coherence",
    "train",
    "eval",
    "split",
    "window",
    "epoch",
    "seed",
]


def write_corpus(root: Path, documents: int = 80, seed: int = 0) -> Path:
    """Files of varied, word-like text: enough for train and a held-out split of 16+ batches."""
    rng = random.Random(seed)
    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for i in range(documents):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) for _ in range(12)]
        (corpus / f"doc{i:03d}.txt").write_text(f"# document {i}\n" + "\n".join(lines) + "\n")
    return corpus


def prepared(root: Path) -> Path:
    """A byte-tokenised DATA_DIR of the generated corpus."""
    data = root / "data"
    prepare_corpus([write_corpus(root)], data, val_fraction=0.25, seed=0)
    return data


def two_layer_run(root: Path) -> tuple[Path, Path]:
    """(DATA_DIR, RUN_DIR): a two-layer smoke model trained 20 steps on the generated corpus, the
    smallest run with more than one layer for the tools that look across layers (lens, patching)."""
    data, run = prepared(root), root / "run"
    steps = [
        "model.n_layers=2",
        "train.steps=20",
        "eval.every=20",
        "ckpt.every=20",
        "monitor.sample_every=20",
    ]
    assert train(smoke_args(data, run, *steps)) == 0
    return data, run


def smoke_start(data: Path, run_dir: Path) -> Path:
    """RUN_DIR: the smoke preset's model, as initialised, saved as a run on DATA_DIR's tokenizer: a
    start for `--init-from` where only the shape matters (a [lora] run needs one) and a trained
    base would cost seconds."""
    tokenizer = load_tokenizer(data)
    config = resolve("smoke", None, [], vocab=tokenizer.vocab_size)
    save_run(run_dir, GPT(config.model), tokenizer=tokenizer)
    return run_dir


def smoke_args(data: Path, out: Path, *sets: str) -> list[str]:
    """`stack train` arguments for a run of a few seconds on CPU."""
    argv = [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--preset",
        "smoke",
        "--set",
        "train.device='cpu'",
    ]
    for item in sets:
        argv += ["--set", item]
    return argv


def train(argv: list[str]) -> int:
    """Run the CLI in-process and return its exit code."""
    return main(argv)


def metric_lines(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The metrics lines of one type (`step`, `eval`, `sample`, `event`) of a run."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [ln for ln in lines if ln["type"] == kind]


def step_lines(run_dir: Path) -> list[dict[str, Any]]:
    """The per-step metrics lines of a run."""
    return metric_lines(run_dir, "step")


def evidence(run_dir: Path) -> dict[str, Any]:
    """The run's metadata.json as plain data."""
    return json.loads((run_dir / "metadata.json").read_text())


def verdicts(run_dir: Path) -> dict[str, str]:
    """gate id → verdict, from the run's evidence."""
    return {g["id"]: g["verdict"] for g in evidence(run_dir)["gates"]}


def unjudged(run_dir: Path, kind: str = "train") -> dict[str, str]:
    """Gates `kind` must judge that the run's record does not show holding: gate id → verdict.

    A gate absent from the record reads "missing". WARN counts as holding only for a gate of
    severity warning, which records what it saw and lets the run go on by design; a blocking
    gate at WARN, NOT_RUN or FAIL is a gate the run did not show holding.
    """
    spec, got = load_spec(), verdicts(run_dir)
    found = {}
    for gate_id in spec.required_gates(kind, evidence(run_dir).get("config")):
        verdict = got.get(gate_id, "missing")
        held = {Verdict.PASS.value}
        if spec.gate(gate_id).severity is Severity.WARNING:
            held.add(Verdict.WARN.value)
        if verdict not in held:
            found[gate_id] = verdict
    return found


@contextmanager
def smoke_trainer(data: Path, run_dir: Path, *sets: str) -> Iterator[Trainer]:
    """A Trainer of the smoke preset on CPU, built as `stack train` builds it, its metrics log open.

    For tests that drive the real loop one `train_step()` at a time and look at its state in
    between, which a whole `stack train` run does not let them do.
    """
    tokenizer = load_tokenizer(data)
    config = resolve("smoke", None, ["train.device='cpu'", *sets], vocab=tokenizer.vocab_size)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, data, run_dir, tokenizer, lambda _event, _t: None, lambda _step, _line: None)
    trainer.metrics = MetricsLog(run_dir)
    try:
        yield trainer
    finally:
        trainer.metrics_log.close()


def one_line_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run `stack argv` in process: its exit code and stderr, which on a failure is one line beside
    the progress lines of the work done before it (stack.cli.progress.is_amount_line)."""
    code = main(list(argv))
    err = capsys.readouterr().err
    if code:
        said = [line for line in err.strip().splitlines() if not is_amount_line(line)]
        assert len(said) == 1 and "Traceback" not in err, err
    return code, err


class CrossEntropyScaled:
    """torch.nn.functional as the model's forward sees it, with its cross-entropy multiplied by
    `factor()` (NaN included): a change made where the model computes its loss, so the forward's
    own record of it (GATE-TRAIN-007's logged check) carries it too, as a real kernel's would.
    Install it with `monkeypatch.setattr(stack.model.gpt, "F", CrossEntropyScaled(...))`."""

    def __init__(self, factor: Callable[[], float]) -> None:
        self.factor = factor

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.nn.functional, name)

    def cross_entropy(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(*args, **kwargs)
        factor = self.factor()
        return loss if factor == 1.0 else loss * factor


def weights_and_moments(trainer: Trainer) -> tuple[str, str]:
    """sha256 of the model's weights and of every tensor of the optimizer's state."""
    return (
        tensors_digest(trainer.model.state_dict()),
        tensors_digest(ckpt.optimizer_tensors(trainer.optimizer)[0]),
    )


def nan_loss(_trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's loss NaN, where the model computes it."""
    monkeypatch.setattr(gpt_module, "F", CrossEntropyScaled(lambda: float("nan")))


def nan_in_one_gradient(trainer: Trainer, _monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss stays finite; only one weight's gradient is poisoned on its way back."""
    trainer.model.layers[0].ffn.up.weight.register_hook(lambda grad: grad * float("nan"))


class MeanCrossEntropy:
    """torch.nn.functional as a scorer sees it, but its cross-entropy averaged whatever reduction it asks for:
    an NLL that is to be a sum is a mean (a bug once seen in an evaluation matrix and in `stack eval`).
    Install it with `monkeypatch.setattr(module, "F", MeanCrossEntropy())`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.nn.functional, name)

    @staticmethod
    def cross_entropy(*args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(*args, **{**kwargs, "reduction": "mean"})


def characters_for_bytes(value: Any) -> int:
    """`len` as a module of the stack sees it once planted there (`monkeypatch.setattr(module,
    "len", characters_for_bytes, raising=False)`): a bytes object counts the characters it encodes,
    every other value its length. Every UTF-8 byte count of the module becomes a count of
    characters, consistently."""
    return builtins.len(value.decode("utf-8")) if isinstance(value, bytes) else builtins.len(value)


def autocast_of(dtype: str | None) -> Callable[[Trainer], contextlib.AbstractContextManager[object]]:
    """A stand-in for `Trainer._autocast`: an autocast to `dtype` (torch's name, "bfloat16") whatever
    the run configures, or none at all for None."""
    if dtype is None:
        return lambda self: contextlib.nullcontext()
    return lambda self: torch.autocast(self.device.type, dtype=getattr(torch, dtype))


COMPARED = ("step", "epoch", "loss", "lr", "grad_norm", "batch_sha256")


def differences(a: Path, b: Path) -> list[str]:
    """Where two runs' step histories or final weights differ (empty when bit-identical)."""
    found = []
    lines_a, lines_b = step_lines(a), step_lines(b)
    if len(lines_a) != len(lines_b):
        found.append(f"{len(lines_a)} vs {len(lines_b)} steps")
    for la, lb in zip(lines_a, lines_b, strict=False):
        found += [f"step {la['step']} {k}" for k in COMPARED if la[k] != lb[k]]
    wa = load_file(str(ckpt.list_checkpoints(a)[-1] / "model.safetensors"))
    wb = load_file(str(ckpt.list_checkpoints(b)[-1] / "model.safetensors"))
    found += [f"weight {k}" for k in wa if not wa[k].equal(wb[k])]
    return found


def interrupted_copy(straight: Path, tmp_path: Path, at_step: int) -> Path:
    """The straight run as if it had died right after its checkpoint at `at_step`."""
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    for path in ckpt.list_checkpoints(run):
        if int(path.name.split("-")[1]) > at_step:
            shutil.rmtree(path)
    return run


@contextmanager
def compiled_once() -> Iterator[None]:
    """A block in which torch.compile compiling a function again is an error (RecompileError, which a
    `stack` command reports as an internal error, exit 1), with dynamo's caches emptied first so
    that what earlier tests compiled does not count. Set through dynamo's own `config.patch`:
    a monkeypatched attribute of that config module does not come back when undone."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
