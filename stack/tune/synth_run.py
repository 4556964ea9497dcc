"""`stack synth`: the output directory of a synthesis, its sidecar record and its evidence.

    OUT/synth.jsonl    the kept samples as chat records, {"messages": [user, assistant]} per line,
                       which `stack prepare OUT/synth.jsonl --format chat` reads as they are
    OUT/synth.json     the sidecar: seed, model (checkpoint and manifest sha256), template
                       (path and sha256), settings, counts generated, kept and dropped by reason,
                       and the sha256 of synth.jsonl
    OUT/metadata.json  the evidence record (run kind synth), naming both files

OUT must be new or empty: a synthesis never writes over data.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from contracts.errors import GateViolation
from contracts.evidence import RunStatus, canonical_sha256, sha256_file
from stack.artifacts import SYNTH_RECORDS, SYNTH_SIDECAR
from stack.data.sft_template import load_template
from stack.es.rundir import check_fresh_out
from stack.eval.evidence import CommandEvidence
from stack.train import checkpoint as ckpt
from stack.train.trained import load_trained, resolve_checkpoint
from stack.tune import synth
from stack.tune.settings import SynthSettings

KIND = "synth"
RECORDS, SIDECAR = SYNTH_RECORDS, SYNTH_SIDECAR


def run(
    source: Path,
    out: Path,
    template_name: str | None,
    settings: SynthSettings,
    argv: list[str],
    evidence_dir: Path | None,
    on_sample: Callable[[int], None],
    device: str = "cpu",
) -> synth.Report:
    """Generate, filter, write and judge a synthesis from `source` into `out` on `device`."""
    check_fresh_out(out)
    evidence = CommandEvidence(KIND, argv, device, evidence_dir)
    written: list[Path] = []
    try:
        with evidence.judging():
            checkpoint = resolve_checkpoint(source)
            trained = load_trained(checkpoint, device)
            evidence.note_checkpoint(checkpoint)
            template = load_template(template_name)
            sidecar = {
                "model": source_record(checkpoint),
                "template": {"path": str(template.path.resolve()), "sha256": template.sha256},
                "settings": asdict(settings),
                "clamped": synth.clamps(trained.model, trained.tokenizer, template, settings),
            }
            for name, cut in sidecar["clamped"].items():
                print(
                    f"stack synth: note: --{name.replace('_', '-')} {cut['asked']} is more than the model's "
                    f"context of {cut['ctx']} leaves; at most {cut['at_most']} are generated",
                    file=sys.stderr,
                )
            evidence.record.config = dict(sidecar)  # the sidecar gains the counts below; the config not
            evidence.record.config_sha256 = canonical_sha256(evidence.record.config)
            report = synth.synthesize(trained.model, trained.tokenizer, template, settings, on_sample)
            out.mkdir(parents=True, exist_ok=True)
            synth.write_records(out / RECORDS, report.kept)
            written.append(out / RECORDS)
            synth.check_counts(report, out / RECORDS)
            synth.check_replay(trained.model, trained.tokenizer, template, settings, report)
            counts = {"generated": report.generated, "kept": len(report.kept), "dropped": report.dropped}
            evidence.record.metrics = counts
            sidecar |= {"seed": settings.seed, **counts, "records_sha256": sha256_file(out / RECORDS)}
            (out / SIDECAR).write_text(
                json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            written.append(out / SIDECAR)
            evidence.settle(RunStatus.COMPLETED)
    except GateViolation:
        _write(evidence, out, written)
        raise
    _write(evidence, out, written)
    return report


def source_record(checkpoint: Path) -> dict[str, str]:
    """The model a synthesis drew from: its checkpoint's path and the sha256 of its manifest."""
    return {
        "checkpoint": str(checkpoint.resolve()),
        "manifest_sha256": sha256_file(checkpoint / ckpt.MANIFEST),
    }


def _write(evidence: CommandEvidence, out: Path, files: list[Path]) -> None:
    """OUT/metadata.json naming the files written; filed when asked."""
    out.mkdir(parents=True, exist_ok=True)
    evidence.write(out, files)
    evidence.file(tuple(files))
