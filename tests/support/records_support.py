"""Fresh records of the commands whose records the ledger lacks at today's spec, in one scratch ledger.

`filed_runs(root)` makes, at smoke size and each by the command that makes it, a prepared DATA_DIR
and a training run on it, chat examples and a LoRA fine-tune of that run on them, an evaluation of
the run's held-out split, its Hugging Face export (and that export imported again), the
fine-tune's adapter exported for peft, and a quantization of the run: every record filed
into one ledger directory, so the records that name each other (the fine-tune its init parent and
its data's prepare record, the evaluation the run it scored) are checked together. The integrity
tests plant one tampering in a copy of one of these records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contracts.evidence import EVIDENCE_FILE
from stack.cli import main
from tests.support.paths import DATA
from tests.support.train_support import smoke_args, write_corpus

CHAT = DATA / "chat_small.jsonl"
# A fine-tune's windows are its data's packed length: the run it starts from reads as many.
PACK_LEN = "64"
FINE_TUNE = ["train.steps=2", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2", "eval.batches=2"]


@dataclass(frozen=True)
class Filed:
    """The filed record of each command, by its run directory in the scratch ledger."""

    ledger: Path
    prepare: Path  # of the pretraining data
    train: Path
    prepare_chat: Path
    sft: Path
    eval: Path
    export: Path
    imported: Path
    lora_export: Path
    quantize: Path


def _run(*argv: str | Path) -> None:
    """One command that must succeed."""
    code = main([str(a) for a in argv])
    assert code == 0, f"`stack {' '.join(map(str, argv))}` exited {code}"


def _filed(ledger: Path, before: set[str]) -> Path:
    """The one record filed into `ledger` since its records were `before`."""
    (new,) = {p.name for p in ledger.iterdir()} - before
    assert (ledger / new / EVIDENCE_FILE).is_file()
    return ledger / new


def _command(ledger: Path, *argv: str | Path) -> Path:
    """Run a command that files its record into `ledger` (--evidence-dir); that record's directory."""
    before = {p.name for p in ledger.iterdir()}
    _run(*argv, "--evidence-dir", ledger)
    return _filed(ledger, before)


def filed_runs(root: Path) -> Filed:
    """Every command of the module docstring, run under `root`, its record filed in root/ledger."""
    ledger = root / "ledger"
    ledger.mkdir(parents=True)
    data, run, chat = root / "data", root / "run", root / "chat"
    prepare = _command(ledger, "prepare", write_corpus(root), "--val-fraction", "0.25", "--out", data)
    trained = _command(ledger, *smoke_args(data, run, "model.ctx=64"))
    prepare_chat = _command(
        ledger,
        "prepare",
        CHAT,
        "--format",
        "chat",
        "--pack-len",
        PACK_LEN,
        "--val-fraction",
        "0.5",
        "--out",
        chat,
    )
    lora = ["lora.r=4", "lora.targets='q,v'", *FINE_TUNE]
    sft = ["sft", "--init-from", run, "--data", chat, "--out", root / "sft"]
    sft_record = _command(
        ledger,
        *sft,
        *(w for s in lora for w in ("--set", s)),
        "--waive",
        "GATE-EVAL-001",
        "--reason",
        "two batches",
    )
    evaluated = _command(ledger, "eval", run, "--split", "val", "--record", root / "evalrec")
    export = _command(ledger, "export", run, "--format", "hf", "--out", root / "hf")
    imported = _command(ledger, "import-hf", root / "hf", "--out", root / "imported")
    lora_export = _command(ledger, "lora", "export", root / "sft", "--out", root / "peft")
    quantized = root / "quantized"
    quantize = _command(
        ledger, "quantize", run, "--targets", "*ffn_up*", "--method", "hqq", "--bits", "4", "--out", quantized
    )
    return Filed(
        ledger, prepare, trained, prepare_chat, sft_record, evaluated, export, imported, lora_export, quantize
    )
