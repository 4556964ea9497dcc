"""`stack synth`: the output directory of a synthesis, its sidecar record and its evidence.

    OUT/synth.jsonl    the kept samples as chat records, {"messages": [user, assistant]} per line,
                       which `stack prepare OUT/synth.jsonl --format chat` reads as they are
    OUT/synth.json     the sidecar: seed, model (checkpoint and manifest sha256), template
                       (path and sha256), settings, counts generated, kept and dropped by reason,
                       the sha256 of synth.jsonl, and (from spec 1.33.0) the model's context and
                       every continuation as drawn (GATE-SYNTH-002's check budgets)
    OUT/metadata.json  the evidence record (run kind synth), naming both files

OUT must be new or empty: a synthesis never writes over data. It is one artifact, so it lives as
every such directory does (stack.outputs.rundir): checked before any work, built aside, and
swapped into place whole when the synthesis ends, or when a gate stops it (then OUT holds the
halted record and whatever the gate judged). A refusal or a crash before that leaves no OUT.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from contracts.errors import BadInput, GateViolation
from contracts.evidence import RunStatus, canonical_sha256, sha256_file
from stack.artifacts import SYNTH_RECORDS, SYNTH_SIDECAR
from stack.data.chat_jinja import chat_template_of
from stack.data.sft_prepare import chosen_renderer
from stack.data.sft_template import ChatTemplate
from stack.data.tokenizer import Tokenizer
from stack.eval.evidence import CommandEvidence
from stack.outputs import rundir
from stack.train import checkpoint as ckpt
from stack.train.trained import load_trained, resolve_checkpoint
from stack.tune import synth
from stack.tune.settings import SynthSettings

KIND = "synth"
RECORDS, SIDECAR = SYNTH_RECORDS, SYNTH_SIDECAR
WRITER = rundir.Writer("stack synth")  # no --force: a synthesis never replaces one


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
    rundir.check(out, WRITER)
    evidence = CommandEvidence(KIND, argv, device, evidence_dir)
    written: list[str] = []
    with rundir.opened(out, WRITER) as opened:
        where = opened.where
        try:
            with evidence.judging():
                checkpoint = resolve_checkpoint(source)
                trained = load_trained(checkpoint, device)
                evidence.note_checkpoint(checkpoint)
                template = synth_template(template_name, trained.checkpoint.state, trained.tokenizer)
                sidecar = {
                    "model": source_record(checkpoint),
                    "template": {"path": str(template.path.resolve()), "sha256": template.sha256},
                    "settings": asdict(settings),
                    "clamped": synth.clamps(trained.model, trained.tokenizer, template, settings),
                }
                for name, cut in sidecar["clamped"].items():
                    print(
                        f"stack synth: note: --{name.replace('_', '-')} {cut['asked']} is more than the "
                        f"model's context of {cut['ctx']} leaves; at most {cut['at_most']} are generated",
                        file=sys.stderr,
                    )
                evidence.record.config = dict(sidecar)  # the sidecar gains the counts below; the config not
                evidence.record.config_sha256 = canonical_sha256(evidence.record.config)
                report = synth.synthesize(trained.model, trained.tokenizer, template, settings, on_sample)
                synth.check_draws(trained.model, settings, report)
                synth.write_records(where / RECORDS, report.kept)
                written.append(RECORDS)
                synth.check_counts(report, where / RECORDS)
                synth.check_replay(trained.model, trained.tokenizer, template, settings, report)
                counts = {"generated": report.generated, "kept": len(report.kept), "dropped": report.dropped}
                evidence.record.metrics = counts
                sidecar |= {"seed": settings.seed, **counts, "records_sha256": sha256_file(where / RECORDS)}
                drawn = synth.budgets_measured(trained.model, settings, report)
                sidecar |= {key: drawn[key] for key in ("ctx", "continuations")}
                (where / SIDECAR).write_text(
                    json.dumps(sidecar, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
                )
                written.append(SIDECAR)
                evidence.settle(RunStatus.COMPLETED)
        except GateViolation:
            _write(evidence, opened, written)
            raise
        _write(evidence, opened, written)
    return report


def synth_template(name: str | None, state: dict[str, Any], tokenizer: Tokenizer) -> ChatTemplate:
    """The template the model is prompted in: `--template`'s when given, else the one its examples
    would be rendered by (`chosen_renderer`, prepare's rule): the model's own where it ships a
    stack template (a model tuned on chatml chats is asked in chatml, not the default's `User: `),
    else the default. A model shipping a Jinja template of its own (an import) is refused: a
    Magpie draw continues the user turn's prefix, which a Jinja template does not name apart."""
    renderer = chosen_renderer(name, chat_template_of(state), tokenizer)
    if isinstance(renderer, ChatTemplate):
        return renderer
    raise BadInput(
        f"the model ships its own chat template (sha256 {renderer.sha256[:12]}), which stack synth cannot "
        "split into a user prefix to continue: give --template FILE writing the same format as a stack "
        "template (docs/finetuning.md), or --template chat to prompt it in the stack's default"
    )


def source_record(checkpoint: Path) -> dict[str, str]:
    """The model a synthesis drew from: its checkpoint's path and the sha256 of its manifest."""
    return {
        "checkpoint": str(checkpoint.resolve()),
        "manifest_sha256": sha256_file(checkpoint / ckpt.MANIFEST),
    }


def _write(evidence: CommandEvidence, opened: rundir.RunDir, names: list[str]) -> None:
    """OUT/metadata.json naming the files written, OUT committed; filed when asked."""
    evidence.write(opened.where, [opened.where / name for name in names])
    out = opened.commit()
    evidence.file(tuple(out / name for name in names))
