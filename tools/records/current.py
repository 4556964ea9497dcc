"""Regenerate the tests' current records in place: one record of each command, under today's spec.

The checker's tests tamper with copies of these records (tests/support/ledger_support.py); a record judged
under an older revision of a gate is stale and is no longer re-derived, so when an edit changes
what a record would say (a spec version that revises gates, a change to what a command writes),
the set is made again, the same way each time: the demo release (evidence/models/stdlib-byte-demo-
0.2.0) through each command that reads or writes a model, on a mixture of the default corpus and
this repository's docs as they stood at DOCS_COMMIT, from a clean tree (a record of a dirty tree
names no commit anyone can check out). They are fixtures of the tests, not ledger entries:

    python tools/current_records.py --work /tmp/records      (make fixtures)

files each command's record into a scratch ledger under --work, then replaces
tests/fixtures/records/current/<command>/ with it; commit the result. It stops at the first command
that fails, with its output, and replaces nothing then. It takes about five minutes on a two-core
machine.
"""

from __future__ import annotations

import argparse
import io
import shlex
import shutil
import subprocess
import sys
import tarfile
from datetime import UTC, datetime
from pathlib import Path

from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, REPO_ROOT, collect_code, read_evidence

RELEASE = "evidence/models/stdlib-byte-demo-0.2.0"
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "records" / "current"
# The commit whose docs/ the records' training mixture reads, checked out into --work: the docs
# as they stand would make every docs edit train other fixture models (one sentence added to
# docs/trace.md once made the distilled mixture's router collapse, GATE-ARCH-012, and stopped the
# set). Move it forward only to re-make the records on other text on purpose.
DOCS_COMMIT = "a3563cd31b27bcf3c1949e93e35182682a83f3f8"
# Run directories whose name is the run id (the training loop names a run after its directory).
TRAINING_IDS = ("mix-run", "finetune", "sft-lora", "dpo", "distill-moe4")


def commands(work: Path, version: str) -> list[tuple[str, list[str]]]:
    """(label, stack argv) of every record, in the order their inputs need."""
    w, r, docs = shlex.quote(str(work)), RELEASE, shlex.quote(str(work / "text" / "docs"))
    # the evaluation's text is the checkout's own file: the checker reads it at the record's commit
    page = shlex.quote(str(REPO_ROOT / "docs" / "concepts" / "gates.md"))
    tests = shlex.quote(str(REPO_ROOT / "tests" / "data"))
    day = datetime.now(UTC).strftime("%Y%m%dT%H%M")  # two sets filed on one day get their own ids
    run = {name: f"{w}/{name}-{day}-spec-{version}" for name in TRAINING_IDS}
    lines = f"""
        prepare      prepare --default docs={docs} --val-fraction 0.2 --out {w}/mix-data
        export       export {r} --format hf --out {w}/demo-hf
        trace        trace {r} --prompt 'def main():'
        laser        laser {r} --targets 'ffn_*' --layers 2-3 --rho 0.5 --out {w}/laser
        quantize     quantize {r} --targets 'ffn_*' --bits 4 --group-size 32 --out {w}/hqq
        sample       sample {r} --prompt 'def main():' --tokens 64 --seed 1
        finetune     train --init-from {r} --data {w}/mix-data --out {run["finetune"]}
                     --set train.steps=20 --set eval.every=10 --set ckpt.every=10
        memorization memorization {run["finetune"]} --base {r} --data {w}/mix-data --n 50 --record {w}/recall
        es           es {r} --data {w}/mix-data --out {w}/es --steps 3 --population 4 --sigma 0.001
                     --lr 0.001
        lens-train   lens {r} --train --data {w}/mix-data --steps 20 --save {w}/demo.lens.safetensors
        patch        trace {r} --prompt 'import os' --patch 'import re' --target s --patch-sweep output
        ablate       trace {r} --prompt 'def main():' --ablate layers.1.ffn_up --sample 8
        lens         lens {r} --prompt 'def main():' --lens {w}/demo.lens.safetensors
        eval         eval {r} --text {page}
        mix-run      train --data {w}/mix-data --out {run["mix-run"]} --preset smoke
                     --set "train.device='cpu'" --set train.steps=40 --set eval.every=10 --set ckpt.every=10
                     --set model.moe_experts=4 --set model.moe_balance_coef=0.1 --set 'data.caps={{docs=0.3}}'
                     --set 'data.phases=[{{after_step=20, caps={{docs=0.5}}}}]' --set data.policy=bandit
                     --set 'data.bandit={{reward="improvement", warmup_steps=10}}'
        sft-data     prepare {tests}/chat_small.jsonl --format chat --tokenizer {r} --val-fraction 0.5
                     --out {w}/sft-data
        sft          sft --data {w}/sft-data --init-from {r} --out {run["sft-lora"]} --set train.steps=40
                     --set train.batch_size=1 --set eval.every=20 --set ckpt.every=20
                     --set monitor.sample_every=20 --set lora.r=8 --set lora.alpha=16 --set lora.targets=q,v
        dpo-pairs    prepare {tests}/prefs_small.jsonl --format prefs --tokenizer {r} --val-fraction 0.3
                     --out {w}/dpo-pairs
        dpo          dpo {r} --data {w}/dpo-pairs --out {run["dpo"]} --steps 20 --save-every 10
                     --batch-size 2 --device cpu --set eval.batches=2 --waive GATE-EVAL-001
                     --reason 'a dozen pairs: 4 held out, two batches'
        distill      distill {r} --data {w}/mix-data --out {run["distill-moe4"]} --preset tiny
                     --set model.moe_experts=4 --set model.moe_balance_coef=0.5 --steps 60 --batch-size 8
                     --save-every 30 --device cpu
    """
    found: list[tuple[str, list[str]]] = []
    for line in lines.strip().splitlines():  # a line that starts with a label starts a command
        label, _, rest = line.strip().partition(" ")
        if label.startswith("--"):
            found[-1][1].extend(shlex.split(line))
        else:
            found.append((label, shlex.split(rest)))
    return found


def spec_version() -> str:
    from contracts.spec import load_spec_from

    return load_spec_from(REPO_ROOT / "spec").version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, required=True, help="an empty or new directory for data and runs"
    )
    parser.add_argument("--into", type=Path, default=FIXTURES, help="where the records are put, by command")
    args = parser.parse_args(argv)
    if collect_code(REPO_ROOT).git_dirty:  # the stack's own rule: records filed since the commit are no dirt
        print(
            "current_records: the tree has uncommitted changes; commit them first (a record of a dirty "
            "tree names no commit)",
            file=sys.stderr,
        )
        return 2
    if args.work.exists() and any(args.work.iterdir()):
        print(f"current_records: {args.work} is not empty; give a new directory", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    if (problem := checked_out_docs(args.work / "text")) is not None:
        print(f"current_records: {problem}", file=sys.stderr)
        return 2
    ledger = args.work / "ledger"  # a scratch ledger: these records are fixtures, not evidence
    ledger.mkdir()
    filed: list[tuple[str, str]] = []  # (label, run id): the fixture directory each record goes to
    for label, stack_argv in commands(args.work.resolve(), spec_version()):
        files = label not in ("sft-data", "dpo-pairs")  # the fine-tuning data is prepared, not filed
        cmd = [
            sys.executable,
            "-m",
            "stack",
            *stack_argv,
            *(["--evidence-dir", str(ledger)] if files else []),
        ]
        print(f"current_records: {label}", flush=True)
        before = {p.name for p in ledger.iterdir()}
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
            print(f"current_records: {label} exited {done.returncode}", file=sys.stderr)
            return 1
        filed += [(label, name) for name in sorted({p.name for p in ledger.iterdir()} - before)]
    foreign = [label for label, _ in filed if not _replaceable(args.into / label)]
    if foreign:
        print(
            f"current_records: {args.into / foreign[0]} holds something other than a record this script "
            f"made; move it away first (the new records are in {ledger})",
            file=sys.stderr,
        )
        return 2
    for label, name in filed:
        shutil.rmtree(args.into / label, ignore_errors=True)
        shutil.copytree(ledger / name, args.into / label)
        print(f"{label:<13} {name} -> {args.into / label}")
    return 0


def checked_out_docs(into: Path) -> str | None:
    """docs/ of DOCS_COMMIT written under `into` (as `into`/docs), or why it could not be."""
    done = subprocess.run(
        ["git", "archive", "--format=tar", DOCS_COMMIT, "docs"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        why = done.stderr.decode().strip()
        return f"docs/ of {DOCS_COMMIT[:12]} cannot be read here ({why}); run from a clone with its history"
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(into, filter="data")
    return None


def _replaceable(target: Path) -> bool:
    """Whether `target` may be replaced: absent, or a record directory (its metadata.json a record of
    the command this script ran for it), which is what an earlier run of this script left there."""
    if not target.exists():
        return True
    try:
        read_evidence(target / EVIDENCE_FILE)
    except (BadInput, OSError, ValueError):
        return False
    return target.is_dir()
