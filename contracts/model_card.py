"""MODEL_CARD.md of a release: written from the record it cites, and re-written by the checker.

`stack release` writes the card with `model_card`; `tools/check_integrity.py` calls the same
function with the registry entry and the cited record and compares the result with the card in
the repository byte for byte, so a card that says PASS where its record says WAIVED, or that
leaves out a waiver the release accepted, is caught. One function, two callers, as for every
rule of a release (contracts.release_rules).
"""

from __future__ import annotations

from contracts.evidence import EVIDENCE_FILE, LEDGER_DIR, CheckpointRef, EvidenceRecord, GateResult, Verdict
from contracts.registry import REGISTRY_FILE, ReleasedModel

CARD_FILE = "MODEL_CARD.md"


def _cell(text: object) -> str:
    """A value as one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _verdict_note(result: GateResult, reasons: dict[str, str]) -> str:
    if result.verdict is Verdict.WAIVED:
        return f"waived: {reasons.get(result.id, 'no reason recorded')}" + (
            f" ({result.message})" if result.message else ""
        )
    return result.message or ""


def model_card(entry: ReleasedModel, record: EvidenceRecord, ref: CheckpointRef, directory: str) -> str:
    """MODEL_CARD.md, written from the record: what was trained, how it was judged, how to load it."""
    metrics, run = record.metrics, record.run
    model = record.config.get("model", {})
    shape = (
        ", ".join(f"{key} {value}" for key, value in sorted(model.items())) if isinstance(model, dict) else ""
    )
    reasons = {waiver.gate: waiver.reason for waiver in record.waivers}
    citation = entry.evidence[0]
    lines = [
        f"# {entry.name} {entry.version}",
        "",
        f"Released by `stack release` from the training run `{record.run.id}`. Everything below is read",
        f"from its evidence record, `{LEDGER_DIR.as_posix()}/{citation.run}/{EVIDENCE_FILE}` (sha256",
        f"`{citation.sha256}`), which `{REGISTRY_FILE.as_posix()}` cites by content.",
        "",
        "| | |",
        "|---|---|",
        f"| run | `{run.id}` ({run.kind}, {run.status.value}: {_cell(run.stop_reason)}) |",
        f"| steps | {metrics.get('step')} (checkpoint `{ref.name}`) |",
        f"| held-out loss | best {metrics.get('best_heldout_loss')}, last {metrics.get('last_heldout_loss')} "
        "(nats per token) |",
        f"| parameters | {metrics.get('parameters')} |",
        f"| model | {_cell(shape)} |",
        f"| tokenizer | sha256 `{record.data.tokenizer_sha256}` (in state.json) |",
        f"| spec | judged under {record.spec.version}; released under {entry.spec_version} |",
        f"| git sha | `{entry.git_sha}` (clean tree) |",
        f"| license | {_cell(entry.license)} |",
        "",
        "## Gate verdicts",
        "",
        "| gate | verdict | note |",
        "|---|---|---|",
        *(f"| {g.id} | {g.verdict.value} | {_cell(_verdict_note(g, reasons))} |" for g in record.gates),
        "",
        *_accepted(entry),
        "## Files",
        "",
        "| file | sha256 | bytes |",
        "|---|---|---|",
        *(f"| {a.name} | `{a.sha256}` | {a.bytes} |" for a in entry.artifacts),
        "",
        "## Using it",
        "",
        *_download(entry, directory),
        "The directory is a weights-only checkpoint: every command that reads one accepts it as it is.",
        "Loading checks each file against manifest.json (GATE-CKPT-002), and the manifest against this",
        "release's registry entry. It holds no optimizer state, so it cannot be resumed; start a new",
        "run from it with `--init-from`.",
        "",
        "```sh",
        f'stack sample {directory} --prompt "def "',
        f"stack eval {directory} --text FILE",
        f"stack export {directory} --format hf --out DIR",
        f"stack train --data DATA_DIR --out RUN_DIR --preset tiny --init-from {directory}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _download(entry: ReleasedModel, directory: str) -> list[str]:
    """For each file kept elsewhere (a URL): where to fetch it, and where to put it."""
    lines = []
    for art in entry.artifacts:
        if art.url is not None:
            lines += [
                f"{art.name} is not in the repository: download {art.url} into `{directory}/` (its",
                ".gitignore keeps the copy out of git). Loading checks it against manifest.json like",
                "any other file, and refuses to start without it.",
                "",
            ]
    return lines


def _accepted(entry: ReleasedModel) -> list[str]:
    """The waivers the release accepted, each with its reason (nothing when it accepted none)."""
    if not entry.accepted_waivers:
        return []
    return [
        "## Waivers accepted by this release",
        "",
        "A blocking gate was waived in the run, and the release was made knowing it:",
        "",
        "| gate | why the release accepts it |",
        "|---|---|",
        *(f"| {w.gate} | {_cell(w.reason)} |" for w in entry.accepted_waivers),
        "",
    ]
