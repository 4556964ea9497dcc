"""File the ledger's current records: one record of each command, made under today's spec.

The checker's tests tamper with copies of committed records (tests/ledger_support.py,
tests/test_integrity_*.py name them); a record judged under an older revision of a gate is stale
and is no longer re-derived, so after a spec version revises gates the ledger needs records of
the new version. This script makes them the way every earlier set was made, so the next set is
made the same way: the demo release (evidence/models/stdlib-byte-demo-0.2.0) through each
command that reads or writes a model, on a mixture of the default corpus and this repository's
docs, from a clean tree (a record of a dirty tree names no commit anyone can check out).

    python tools/current_records.py --work /tmp/records

Each command files its record into evidence/runs/ (--ledger for another), and the script prints
the run ids the tests' constants name. It stops at the first command that fails, with its
output. It takes about five minutes on a two-core machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = "evidence/models/stdlib-byte-demo-0.2.0"
# Run directories whose name is the run id (the training loop names a run after its directory).
TRAINING_IDS = ("mix-run", "finetune", "sft-lora", "dpo", "distill-moe4")


def commands(work: Path, version: str) -> list[tuple[str, list[str]]]:
    """(label, stack argv) of every record, in the order their inputs need."""
    data, sft_data, pairs = str(work / "mix-data"), str(work / "sft-data"), str(work / "dpo-pairs")
    lens = str(work / "demo.lens.safetensors")
    out = {name: str(work / f"{name}-spec-{version}") for name in TRAINING_IDS}
    return [
        (
            "prepare",
            ["prepare", "--default", f"docs={ROOT / 'docs'}", "--val-fraction", "0.2", "--out", data],
        ),
        ("export", ["export", RELEASE, "--format", "hf", "--out", str(work / "demo-hf")]),
        ("trace", ["trace", RELEASE, "--prompt", "def main():"]),
        (
            "laser",
            [
                "laser",
                RELEASE,
                "--targets",
                "ffn_*",
                "--layers",
                "2-3",
                "--rho",
                "0.5",
                "--out",
                str(work / "laser"),
            ],
        ),
        (
            "quantize",
            [
                "quantize",
                RELEASE,
                "--targets",
                "ffn_*",
                "--bits",
                "4",
                "--group-size",
                "32",
                "--out",
                str(work / "hqq"),
            ],
        ),
        ("sample", ["sample", RELEASE, "--prompt", "def main():", "--tokens", "64", "--seed", "1"]),
        (
            "finetune",
            [
                "train",
                "--init-from",
                RELEASE,
                "--data",
                data,
                "--out",
                out["finetune"],
                "--set",
                "train.steps=20",
                "--set",
                "eval.every=10",
                "--set",
                "ckpt.every=10",
            ],
        ),
        (
            "memorization",
            [
                "memorization",
                out["finetune"],
                "--base",
                RELEASE,
                "--data",
                data,
                "--n",
                "50",
                "--record",
                str(work / "recall"),
            ],
        ),
        (
            "es",
            [
                "es",
                RELEASE,
                "--data",
                data,
                "--out",
                str(work / "es"),
                "--steps",
                "3",
                "--population",
                "4",
                "--sigma",
                "0.001",
                "--lr",
                "0.001",
            ],
        ),
        ("lens-train", ["lens", RELEASE, "--train", "--data", data, "--steps", "20", "--save", lens]),
        (
            "patch",
            [
                "trace",
                RELEASE,
                "--prompt",
                "import os",
                "--patch",
                "import re",
                "--target",
                "s",
                "--patch-sweep",
                "output",
            ],
        ),
        (
            "ablate",
            ["trace", RELEASE, "--prompt", "def main():", "--ablate", "layers.1.ffn_up", "--sample", "8"],
        ),
        ("lens", ["lens", RELEASE, "--prompt", "def main():", "--lens", lens]),
        ("eval", ["eval", RELEASE, "--text", str(ROOT / "docs" / "concepts" / "gates.md")]),
        (
            "mix-run",
            [
                "train",
                "--data",
                data,
                "--out",
                out["mix-run"],
                "--preset",
                "smoke",
                "--set",
                "train.device='cpu'",
                "--set",
                "train.steps=40",
                "--set",
                "eval.every=10",
                "--set",
                "ckpt.every=10",
                "--set",
                "model.moe_experts=4",
                "--set",
                "model.moe_balance_coef=0.1",
                "--set",
                "data.caps={docs=0.3}",
                "--set",
                "data.phases=[{after_step=20, caps={docs=0.5}}]",
                "--set",
                "data.policy=bandit",
                "--set",
                'data.bandit={reward="improvement", warmup_steps=10}',
            ],
        ),
        (
            "sft-data",
            [
                "prepare",
                str(ROOT / "tests" / "data" / "chat_small.jsonl"),
                "--format",
                "chat",
                "--tokenizer",
                RELEASE,
                "--out",
                sft_data,
            ],
        ),
        (
            "sft",
            [
                "sft",
                "--data",
                sft_data,
                "--init-from",
                RELEASE,
                "--out",
                out["sft-lora"],
                "--set",
                "train.steps=40",
                "--set",
                "train.batch_size=1",
                "--set",
                "eval.every=20",
                "--set",
                "ckpt.every=20",
                "--set",
                "monitor.sample_every=20",
                "--set",
                "lora.r=8",
                "--set",
                "lora.alpha=16",
                "--set",
                "lora.targets=q,v",
            ],
        ),
        (
            "dpo-pairs",
            [
                "prepare",
                str(ROOT / "tests" / "data" / "prefs_small.jsonl"),
                "--format",
                "prefs",
                "--tokenizer",
                RELEASE,
                "--out",
                pairs,
            ],
        ),
        (
            "dpo",
            [
                "dpo",
                RELEASE,
                "--data",
                pairs,
                "--out",
                out["dpo"],
                "--steps",
                "20",
                "--save-every",
                "10",
                "--batch-size",
                "2",
                "--device",
                "cpu",
                "--set",
                "eval.batches=2",
                "--waive",
                "GATE-EVAL-001",
                "--reason",
                "a dozen pairs: 4 held out, two batches",
            ],
        ),
        (
            "distill",
            [
                "distill",
                RELEASE,
                "--data",
                data,
                "--out",
                out["distill-moe4"],
                "--preset",
                "tiny",
                "--set",
                "model.moe_experts=4",
                "--steps",
                "60",
                "--batch-size",
                "8",
                "--save-every",
                "30",
                "--device",
                "cpu",
            ],
        ),
    ]


def spec_version() -> str:
    sys.path.insert(0, str(ROOT))
    from contracts.spec import load_spec_from

    return load_spec_from(ROOT / "spec").version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", type=Path, required=True, help="an empty or new directory for data and runs"
    )
    parser.add_argument(
        "--ledger", type=Path, default=ROOT / "evidence" / "runs", help="where records are filed"
    )
    args = parser.parse_args(argv)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    if dirty.stdout.strip():
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
    before = set(p.name for p in args.ledger.iterdir())
    for label, stack_argv in commands(args.work.resolve(), spec_version()):
        files = label not in ("sft-data", "dpo-pairs")  # the fine-tuning data is prepared, not filed
        cmd = [
            sys.executable,
            "-m",
            "stack",
            *stack_argv,
            *(["--evidence-dir", str(args.ledger)] if files else []),
        ]
        print(f"current_records: {label}", flush=True)
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
            print(f"current_records: {label} exited {done.returncode}", file=sys.stderr)
            return 1
    for name in sorted(set(p.name for p in args.ledger.iterdir()) - before):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
