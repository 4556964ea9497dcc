"""Replay a training record: its first steps run again from its config and data, compared bit for bit.

    python tools/check_integrity.py --replay RUN --data DATA_DIR [--steps K] [--init-from CKPT]

Everything else the integrity check does compares a record with what it cites; a forger who edits
a record and its metrics log consistently (and re-hashes both) passes all of it. Only running the
steps again shows what the run actually computed. RUN is a record's directory (a ledger entry
evidence/runs/<id>, or the run directory itself) holding metadata.json, config.toml and
metrics.jsonl; DATA_DIR must be the data the run read, by its manifest's sha256. The replay builds
the stack's own trainer from config.toml, takes the first K optimizer steps on the CPU with
nothing written, and compares each step's line with the log's (every key but the wall-clock
throughput), and each held-out evaluation's line at those steps (the evaluation's forwards read
what training alone does not, such as a mixture-of-depths block's inference threshold), then
GATE-TRAIN-004's first loss with the record's.

Which kinds replay: `train` from DATA_DIR alone; `finetune` and `sft` with `--init-from` the
checkpoint they started from, refused unless its weights hash to the parent the record's lineage
names. `dpo` and `distill` read a frozen reference or teacher named by path in their config and do
not replay here; command kinds (eval, prepare, lens, surgery) have no replay yet. A run of the
Triton attention kernel (`model.attention = "triton"`) replays with that kernel, in Triton's
interpreter. A replay is bit for bit on the machine and build of the run; another CPU, thread
count or torch build can differ in the last bits of a float, and the report then names the first
step and key that differ.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.derive.training import METRICS_LOG
from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, EvidenceRecord, read_evidence, sha256_file
from contracts.ledger import Ledger, recording
from contracts.replay import STATE_KEY

# The kinds a replay can rebuild from the record, the data and (for a fine-tune) its start.
REPLAYABLE = ("train", "finetune", "sft")
FROM_CHECKPOINT = ("finetune", "sft")
# A step line's keys that measure the machine, not the computation.
WALL_CLOCK = ("tokens_per_s",)
WEIGHTS = "model.safetensors"


@dataclass
class Replay:
    """What a replay compared and what differed (empty `differences`: bit for bit)."""

    run: str
    steps: int
    differences: list[str]


def _logged(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The log's lines of one `type` (step, eval), in order."""
    lines = []
    for raw in (run_dir / METRICS_LOG).read_text(encoding="utf-8").splitlines():
        if raw.strip():
            line = json.loads(raw)
            if line.get("type") == kind:
                lines.append(line)
    return lines


def _differences(logged: list[dict[str, Any]], replayed: list[dict[str, Any]], kind: str) -> list[str]:
    """Every key of paired lines that is not bit for bit, the wall clock aside; an unpaired line too.
    The state digest is compared where the log holds one (a run logs it at its first steps, and
    a log written before runs did holds none)."""
    differences = [
        f"{kind} {ours.get('step')}: {key} is {theirs.get(key)!r} in {METRICS_LOG}, "
        f"{ours.get(key)!r} replayed"
        for theirs, ours in zip(logged, replayed, strict=False)
        for key in sorted(set(theirs) | set(ours))
        if key not in (*WALL_CLOCK, "type")
        and (key != STATE_KEY or key in theirs)
        and not _same(theirs.get(key), ours.get(key))
    ]
    if len(logged) != len(replayed):
        differences.append(
            f"{METRICS_LOG} has {len(logged)} {kind} line(s) at the replayed steps, "
            f"the replay makes {len(replayed)}"
        )
    return differences


def _same(a: Any, b: Any) -> bool:
    """Bit for bit: values of one type and equal, a NaN equal to a NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and bool(a == b)


def _check_inputs(record: EvidenceRecord, data_dir: Path, init_from: Path | None) -> None:
    """The data is the run's (by manifest sha256); a fine-tune's start is its recorded parent."""
    from stack.data.manifest import load_manifest

    if record.run.kind not in REPLAYABLE:
        raise BadInput(
            f"a {record.run.kind} record does not replay here; the kinds that do are {', '.join(REPLAYABLE)}"
        )
    manifest = load_manifest(data_dir)
    if manifest.sha256 != record.data.manifest_sha256:
        raise BadInput(
            f"--data {data_dir} has manifest sha256 {manifest.sha256[:12]}, the record's data is "
            f"{str(record.data.manifest_sha256)[:12]}; give the DATA_DIR the run read"
        )
    if record.run.kind in FROM_CHECKPOINT:
        if init_from is None:
            raise BadInput(f"a {record.run.kind} record replays from its start: pass --init-from CKPT")
        parents = record.lineage.parents if record.lineage else []
        wanted = {p.checkpoint_sha256 for p in parents if p.role == "init"}
        from stack.train.trained import resolve_checkpoint

        weights = resolve_checkpoint(init_from) / WEIGHTS
        if sha256_file(weights) not in wanted:
            raise BadInput(
                f"--init-from {init_from}: its weights are not the parent the record's lineage names; "
                "give the checkpoint the run started from"
            )
    elif init_from is not None:
        raise BadInput("--init-from is for a finetune or sft record; a train record starts from scratch")


@contextmanager
def kernel_runnable(attention: str) -> Iterator[None]:
    """Triton's interpreter meanwhile, for a run of the Triton attention kernel: a replay runs on the
    CPU, where the kernel runs only interpreted, and it computes with the run's own kernel, not
    another path's. The interpreter must be on before triton is first imported, which nothing the
    checker does before a replay imports; where the caller set TRITON_INTERPRET it is left as it is."""
    if attention != "triton" or "TRITON_INTERPRET" in os.environ:
        yield
        return
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        del os.environ["TRITON_INTERPRET"]


def replay(run_dir: Path, data_dir: Path, steps: int = 5, init_from: Path | None = None) -> Replay:
    """Take the record's first `steps` steps again and compare them with its log and record."""
    from stack.data.tokenizer import load_tokenizer
    from stack.train import checkpoint as ckpt
    from stack.train import determinism
    from stack.train.config import resolve
    from stack.train.loop import Trainer
    from stack.train.metrics import MetricsLog
    from stack.train.trained import resolve_checkpoint

    record = read_evidence(run_dir / EVIDENCE_FILE)
    _check_inputs(record, data_dir, init_from)
    config = resolve(None, run_dir / "config.toml", ["train.device='cpu'"])  # the run's, on the CPU
    logged = _logged(run_dir, "step")[:steps]
    tokenizer = load_tokenizer(data_dir)
    with (
        tempfile.TemporaryDirectory(prefix="gatestack-replay-") as tmp,
        recording(Ledger()),  # the gates judge the replayed steps too; their verdicts are not kept
        kernel_runnable(config.model.attention),
        determinism.kernels(config.train.deterministic),
    ):
        trainer = Trainer(config, data_dir, Path(tmp), tokenizer, lambda *_: None, lambda *_: None)
        if init_from is not None:
            trainer.start_from(ckpt.load_checkpoint(resolve_checkpoint(init_from)))
        trainer.metrics = MetricsLog(Path(tmp), write=False)
        trainer.objective.start(trainer.model, trainer.heldout)
        replayed, evaluated = [], []
        for _ in logged:  # the loop's schedule: a probe after the first step, a probe and an evaluation
            replayed.append(trainer.train_step())  # after each step it evaluates at (they set no weight)
            step = replayed[-1]["step"]
            if len(replayed) == 1 or trainer.evaluates_after(step):
                trainer.probe(step)
            if trainer.evaluates_after(step):
                evaluated.append(trainer.evaluate())
        trainer.metrics.close()
    last = replayed[-1]["step"] if replayed else 0
    evals = [line for line in _logged(run_dir, "eval") if line.get("step", math.inf) <= last]
    differences = _differences(logged, replayed, "step") + _differences(evals, evaluated, "eval")
    first = next((g for g in record.gates if g.id == "GATE-TRAIN-004"), None)
    measured = first.measured if first is not None and isinstance(first.measured, dict) else None
    if measured is not None and replayed and not _same(measured.get("loss"), replayed[0]["loss"]):
        differences.append(
            f"GATE-TRAIN-004 measured a first loss of {measured.get('loss')!r}, "
            f"the replay computes {replayed[0]['loss']!r}"
        )
    return Replay(record.run.id, len(replayed), differences)
