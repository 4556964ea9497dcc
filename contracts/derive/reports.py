"""Command records from the result files they cite: an evaluation matrix from its per-item scores,
a surgery from its per-matrix results, a prepare from its manifest's per-source reports, a
synthesis from the lines it wrote, and so on.

Each command writes its results as a file beside its record (`evalmatrix.json`, `surgery.json`,
`memorization.json`, `matrix.json`, `synth.json` and `synth.jsonl`, `eval.json`, `export.json`,
`trace.json`, a prepare's `manifest.json`). The derivations here read those files and say what the
record's metrics and the measured values of the gates they decide must be; each gate so derived
is judged again from the derived values, so its verdict follows from the files and not from the
record. Files a kind gained in spec 1.7.0 (per-item scores, per-gate results, the manifest) are
asked of records made under 1.7.0 or later only.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np

from contracts import peft_config
from contracts.checkpoints import STATE_FILE, chat_template_sha256, manifest_sha256
from contracts.coherence import coherence_score
from contracts.derive import Derivation, Inputs, derives, same
from contracts.derive.benchmarks import Identity, finite_number, total
from contracts.derive.prepare_options import OPTIONS_SINCE, prepare_options
from contracts.evidence import EvidenceRecord, RunStatus, Verdict
from contracts.hf_export import DTYPE_FIELDS
from contracts.hf_export import stored_dtypes as hf_stored_dtypes
from contracts.judges import judge
from contracts.judges.ft import reproduced
from contracts.leak_canaries import canary_rows
from contracts.ledger import settle
from contracts.likelihood import bits_per_byte_of, predicted_positions_sha256, utf8_bytes
from contracts.onnx_weights import declared_opset, quantised_weight_types
from contracts.overlap import items_in_training
from contracts.schedule import linear_decay
from contracts.seeds import seeded_state_sha256
from contracts.selection import selected_by, trace_sites
from contracts.shard_layout import shard_bytes
from contracts.site_statistics import STATISTICS, inconsistencies, strict
from contracts.site_statistics import real as statistic_value
from contracts.spec import thresholds_digest
from contracts.split import share_measured
from contracts.trace_anomaly import block_site, site_baselines
from contracts.trace_paths import PATH_DTYPES
from contracts.trace_tolerance import judged_tolerances
from contracts.truncation import rank_kept
from contracts.verbatim import longest_common_run

PER_ITEM_SINCE = "1.7.0"  # the spec version from which these kinds cite their raw per-item results
# The revision of GATE-FT-002 that brought its check draws (evalmatrix.json keeps the pool).
FEW_SHOT_DRAWS_SINCE = 6
# The revision of GATE-LORA-007 that brought its check config; the file it reads back.
PEFT_CONFIG_SINCE, PEFT_CONFIG, PEFT_BASE_WEIGHTS = 2, "adapter_config.json", "base/model.safetensors"


def judged(inputs: Inputs, derived: Derivation, gate_id: str, measured: dict[str, Any]) -> None:
    """A gate judged once from `measured`: its values and its verdict, derived."""
    spec = inputs.spec
    if gate_id not in spec.gates or gate_id in inputs.stale:
        return
    waived = any(w.gate == gate_id for w in inputs.record.waivers)
    ok = not judge(gate_id, measured, spec.gates[gate_id].threshold_values)
    result = settle(spec, gate_id, None, measured, ok, waived)
    assert result is not None
    derived.verdict(gate_id, result.verdict)
    derived.gate(gate_id, measured)


def thresholds_in_force(inputs: Inputs, gate_id: str) -> dict[str, float | int] | None:
    """The thresholds of the revision of `gate_id` the record judged under (the one its spec
    version had where it states no result of the gate): the values its result states where they
    hash to the digest spec/revisions.yaml keeps for that revision, else the spec's own where that
    revision's digest is today's. None where neither holds: an older revision's values are kept
    only as their digest, so what a result file restates of them is not derived."""
    spec, record = inputs.spec, inputs.record
    result = next((g for g in record.gates if g.id == gate_id), None)
    revision = result.revision if result is not None else spec.revision_at(gate_id, record.spec.version)
    entry = next((e for e in spec.revisions.get(gate_id, []) if e.revision == revision), None)
    if entry is None or gate_id not in spec.gates:
        return None
    if result is not None and thresholds_digest(result.threshold) == entry.thresholds_sha256:
        return dict(result.threshold)
    gate = spec.gates[gate_id]
    return gate.threshold_values if gate.thresholds_sha256 == entry.thresholds_sha256 else None


def restated_threshold_problems(inputs: Inputs, where: str, restated: Any) -> list[str]:
    """A result file's block that names the gate it was judged by (`gate`) and restates its
    thresholds (`threshold`, a parity report's) states the thresholds in force for that gate's
    revision (`thresholds_in_force`), each key it names; found at any depth of `restated`."""
    if isinstance(restated, list):
        return [
            p
            for i, item in enumerate(restated)
            for p in restated_threshold_problems(inputs, f"{where}[{i}]", item)
        ]
    if not isinstance(restated, dict):
        return []
    problems = [
        p
        for key, value in restated.items()
        for p in restated_threshold_problems(inputs, f"{where}.{key}", value)
    ]
    gate_id, stated = restated.get("gate"), restated.get("threshold")
    in_force = thresholds_in_force(inputs, gate_id) if isinstance(gate_id, str) else None
    if isinstance(stated, dict) and in_force is not None:
        problems += [
            f"{where}.threshold.{key} is {value!r}, but {gate_id} judged under {in_force.get(key)!r}"
            for key, value in stated.items()
            if not same(value, in_force.get(key))
        ]
    return problems


def report_of(inputs: Inputs, derived: Derivation, name: str, since: str) -> dict[str, Any] | None:
    """The command's result file as an object; None (with the file missing, or a problem) otherwise.

    A command a gate halted wrote no result, so only a completed record must cite one.
    """
    try:
        report = inputs.artifacts.json(name)
    except ValueError:
        derived.problems.append(f"{name} is not JSON")
        return None
    if report is None:
        if inputs.record.run.status is RunStatus.COMPLETED:
            derived.missing.append((name, since))
        return None
    if not isinstance(report, dict):
        derived.problems.append(f"{name} is not a JSON object")
        return None
    return report


def mirrored(derived: Derivation, report: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Metrics the record copies from the report, key for key."""
    for key in keys:
        if key in report:
            derived.put(("metrics", key), report[key])


@lru_cache(maxsize=256)
def version_key(version: str) -> tuple[int, ...]:
    """A semantic version as a sortable tuple (its pre-release part ignored)."""
    core = version.split("-", 1)[0]
    return tuple(int(part) for part in core.split(".") if part.isdigit())


def whole(*values: Any) -> bool:
    """Whether every value is an integer (a count, a step), not a boolean."""
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def real(value: Any) -> bool:
    """Whether a value is a number (an integer or a float), not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- what a result file says of the record that cites it ---------------------------------------

WEIGHTS_FILE = "model.safetensors"
# The result files of `stack import-hf` and `stack lora export`, and the adapter the latter makes.
IMPORT_RECORD, LORA_EXPORT_RECORD, PEFT_WEIGHTS = (
    "import.json",
    "lora_export.json",
    "adapter_model.safetensors",
)


def basename(path: str) -> str:
    """The last part of a path as a result file writes it (the name a record gives a checkpoint)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def cited_checkpoint(inputs: Inputs, derived: Derivation, where: str, path: Any, manifest: Any) -> None:
    """A result file that cites the checkpoint it read by its directory (`path`) and by the sha256
    of its manifest.json (`manifest`, at `where`) cites the record's checkpoint: the record names
    it by that directory, and the manifest its step and files make again (contracts.checkpoints)
    hashes as cited, so neither its step nor a file's hash can be swapped for another's."""
    checkpoint = inputs.record.checkpoint
    if checkpoint is None:
        return
    if isinstance(path, str) and basename(path):
        derived.put(("checkpoint", "name"), basename(path))
    made = manifest_sha256(checkpoint)
    if isinstance(manifest, str) and manifest != made:
        derived.problems.append(
            f"checkpoint.files: the manifest of step {checkpoint.step} and its files hashes to {made[:12]}, "
            f"but {where} cites {manifest[:12]}: the record names another checkpoint than the one read"
        )


def source_parent_problems(record: EvidenceRecord) -> list[str]:
    """A derived model's `source` parent (stack.train.lineage) is the checkpoint its record read:
    the weights the lineage names are that checkpoint's (`checkpoint.files`)."""
    hashed = record.checkpoint.files.get(WEIGHTS_FILE) if record.checkpoint is not None else None
    parents = record.lineage.parents if record.lineage is not None else []
    return [
        f"lineage's source parent names the weights {ref.checkpoint_sha256[:12]}, but the checkpoint it "
        f"read (checkpoint.files) holds {hashed.sha256[:12]}"
        for ref in parents
        if ref.role == "source" and hashed is not None and ref.checkpoint_sha256 != hashed.sha256
    ]


def made_weights(inputs: Inputs, derived: Derivation, report: dict[str, Any], name: str) -> None:
    """`lineage.model_sha256`, the weights a command made, is the sha256 its result file lists for
    them (`name`, relative to its output) when it made them."""
    listed = (report.get("files") or {}).get(name)
    if inputs.record.lineage is not None and isinstance(listed, dict) and "sha256" in listed:
        derived.put(("lineage", "model_sha256"), listed["sha256"])


def created_problems(
    record: EvidenceRecord, name: str, report: dict[str, Any], settled_first: bool
) -> list[str]:
    """When a command wrote its result file (its `created`), against the run's start and finish:
    after the run started, and before it finished, or, for a command that settles its record before
    it writes the file (`settled_first`: a surgery), no earlier than the finish."""
    try:
        created = datetime.fromisoformat(str(report["created"]))
    except (KeyError, ValueError):
        return []
    run = record.run
    problems = []
    if created < run.started:
        problems.append(
            f"run.started is {run.started.isoformat()}, after {name} was created ({created.isoformat()})"
        )
    finished = run.finished
    if finished is not None and (created < finished if settled_first else created > finished):
        order = "after" if settled_first else "before"
        problems.append(
            f"run.finished is {finished.isoformat()}, {order} {name} was created ({created.isoformat()})"
        )
    return problems


def written_under(derived: Derivation, report: dict[str, Any]) -> None:
    """The spec a command wrote its result file under is the one its record names."""
    if isinstance(report.get("spec_version"), str):
        derived.put(("spec", "version"), report["spec_version"])


# -- the evaluation matrix ---------------------------------------------------------------------


def row_summary(row: dict[str, Any], scores: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the matrix from its per-item scores, summed in item order as the command sums them."""
    nll = tokens = n_bytes = dropped = 0
    exact: int | None = 0
    for item in scores:
        nll, tokens = nll + item["nll"], tokens + item["tokens"]
        n_bytes, dropped = n_bytes + item["bytes"], dropped + item["dropped"]
        exact = None if exact is None or item.get("exact") is None else exact + bool(item["exact"])
    return {
        **row,
        "items": len(scores),
        "bits_per_byte": bits_per_byte_of(nll, n_bytes),
        "loss": nll / tokens,
        "completion_tokens": tokens,
        "completion_bytes": n_bytes,
        "context_tokens_dropped": dropped,
        "exact_match": None if exact is None or not scores else exact / len(scores),
    }


def bpb_identity(loss: Any, tokens: Any, n_bytes: Any) -> float | None:
    """Bits per byte of a mean loss over `tokens` predicted tokens of a text of `n_bytes` bytes: the
    one formula (`bits_per_byte_of`) over the loss's total; None when an input is not a number."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (loss, tokens, n_bytes)):
        return None
    if n_bytes <= 0 or not math.isfinite(loss):
        return None
    return bits_per_byte_of(loss * tokens, n_bytes)


def _row_problems(row: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """A matrix row whose bits per byte is not its loss over its completion tokens and bytes, or whose
    item count is not the matrix's."""
    problems, name = [], row.get("row")
    bpb = bpb_identity(row.get("loss"), row.get("completion_tokens"), row.get("completion_bytes"))
    if bpb is not None and not same(row.get("bits_per_byte"), bpb):
        problems.append(
            f"row {name}'s bits_per_byte is {row.get('bits_per_byte')}, but its loss over its completion "
            f"tokens and bytes gives {bpb}"
        )
    items = report.get("items")
    if isinstance(items, list) and "items" in row and row["items"] != len(items):
        problems.append(f"row {name} counts {row['items']} items, but the matrix has {len(items)}")
    return problems


def _completion_bytes(
    inputs: Inputs, derived: Derivation, report: dict[str, Any], scores: dict[str, Any]
) -> list[str]:
    """Each item's bytes, as each row states them, against the UTF-8 bytes of the completion
    evalmatrix.json keeps for it (from 1.30.0): what GATE-FT-002's check bytes (rev 5) read, derived."""
    completions, ids = report.get("completions"), report.get("items")
    if not (isinstance(completions, list) and isinstance(ids, list) and len(completions) == len(ids)):
        return []
    counted = [utf8_bytes(c) if isinstance(c, str) else None for c in completions]
    if "GATE-FT-002" not in inputs.stale:
        stated = {name: [item.get("bytes") for item in items] for name, items in scores.items()}
        derived.put(("gates", "GATE-FT-002", "measured", "bytes_read"), stated, optional=True)
        derived.put(
            ("gates", "GATE-FT-002", "measured", "bytes_decoded"),
            dict.fromkeys(scores, counted),
            optional=True,
        )
    return [
        f"evalmatrix.json: row {name}'s item {item.get('id')} counts {item.get('bytes')} bytes, but its "
        f"completion holds {n_bytes} UTF-8 bytes"
        for name, items in scores.items()
        for item, n_bytes in zip(items, counted, strict=False)
        if item.get("bytes") != n_bytes
    ]


def _exact_matches(
    inputs: Inputs, derived: Derivation, report: dict[str, Any], scores: dict[str, Any]
) -> list[str]:
    """Each item's exact match, as evalmatrix.json's per-item scores state it, against the record's
    config.exact_match (which the checker holds to --exact-match): a number for every item where it
    is true, none where it is false, and (`_greedy_matches`) the one its greedy continuation gives;
    GATE-FT-002's check exact (rev 7) reads the same, derived."""
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    stated = config.get("exact_match")
    read = {name: [item.get("exact") for item in items] for name, items in scores.items()}
    if "GATE-FT-002" not in inputs.stale:
        derived.put(("gates", "GATE-FT-002", "measured", "exact_read"), read, optional=True)
        derived.put(("gates", "GATE-FT-002", "measured", "exact_stated"), stated, optional=True)
    if not isinstance(stated, bool):
        return [f"config.exact_match is {stated!r}, not true or false: the matrix's exact matches go unheld"]
    return _greedy_matches(inputs, derived, report, scores, stated) + [
        f"evalmatrix.json: row {name}'s {len(off)} item(s) have exact match {off[0]!r}, but "
        f"config.exact_match is {stated}"
        for name, values in read.items()
        if (off := [v for v in values if not (isinstance(v, bool) if stated else v is None)])
    ]


def _retrieval_asked(inputs: Inputs, derived: Derivation) -> None:
    """GATE-FT-002's check retrieval judges each item's passages against how many were asked for:
    that is the record's config.passages (which the checker holds to --passages), never a count of
    the command's own, so a setting that never reached the retriever is judged against the one stated."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-FT-002"), None)
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    retrieval = result.measured.get("retrieval") if result is not None else None
    if "GATE-FT-002" in inputs.stale or not isinstance(retrieval, list):
        return
    asked = config.get("passages")
    stated = [{**r, "asked": asked} if isinstance(r, dict) else r for r in retrieval]
    derived.put(("gates", "GATE-FT-002", "measured", "retrieval"), stated, optional=True)


def _few_shot_draws(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> dict[str, Any]:
    """GATE-FT-002's check draws (rev 6) from evalmatrix.json's pool and the record's seed and shots:
    each item's examples are drawn again by contracts.few_shot. A record of that revision whose file
    keeps no pool is a problem, never a skipped check."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-FT-002"), None)
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    if "pool" not in report:
        if result is not None and result.revision >= FEW_SHOT_DRAWS_SINCE:
            derived.problems.append("evalmatrix.json keeps no few-shot pool: its draws cannot be drawn again")
        return {}
    return {
        "draws_pool": report["pool"],
        "draws_seed": config.get("seed"),
        "draws_shots": config.get("shots"),
    }


# The revision of GATE-FT-002 that brought its check overlap (evalmatrix.json keeps the prompts).
ITEM_OVERLAP_SINCE = 8


def _item_overlap(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> dict[str, Any]:
    """GATE-FT-002's check overlap (rev 8) from evalmatrix.json's items and pool with their prompts:
    the overlap the record and the file state is contracts.overlap.items_in_training of them,
    judged by the same judge. A record of that revision whose file keeps no prompts is a problem,
    never a skipped check."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-FT-002"), None)
    pool = [e.get("id") if isinstance(e, dict) else None for e in report.get("pool") or []]
    pairs = [(report.get("items"), report.get("prompts")), (pool, report.get("pool_prompts"))]
    if not all(isinstance(ids, list) and isinstance(texts, list) for ids, texts in pairs):
        if result is not None and result.revision >= ITEM_OVERLAP_SINCE:
            derived.problems.append(
                "evalmatrix.json keeps no prompts of its items and pool: no overlap to find"
            )
        return {}
    found, held = ([{"id": i, "prompt": p} for i, p in zip(ids, texts, strict=False)] for ids, texts in pairs)
    if any(len(ids) != len(texts) for ids, texts in pairs) or not all(
        isinstance(e["id"], str) and isinstance(e["prompt"], str) for e in found + held
    ):
        derived.problems.append("evalmatrix.json: its prompts do not pair with the ids of its items or pool")
        return {}
    overlap = items_in_training(
        [(e["id"], e["prompt"]) for e in found], [(e["id"], e["prompt"]) for e in held]
    )
    derived.put(("metrics", "overlap"), overlap)
    if report.get("overlap") != overlap:
        derived.problems.append(
            f"evalmatrix.json states the overlap {_short(report.get('overlap'))}, but its items and pool "
            f"give {_short(overlap)} (contracts.overlap)"
        )
    return {"overlap_stated": report.get("overlap"), "overlap_items": found, "overlap_pool": held}


# The spec version from which evalmatrix.json keeps each item's greedy continuation (GATE-FT-002 rev 7).
GREEDY_SINCE = "1.33.0"


def _greedy_matches(
    inputs: Inputs, derived: Derivation, report: dict[str, Any], scores: dict[str, Any], stated: bool
) -> list[str]:
    """Where exact match was asked for, each item's stated exact match against contracts.exact_match
    of the greedy continuation evalmatrix.json keeps and the item's completion, by the same judge
    (GATE-FT-002's check exact, rev 7); a record of a gate revision that kept no continuation is
    excused as stale, a current one without them is missing them."""
    if not stated or "GATE-FT-002" in inputs.stale:
        return []
    if not all("greedy" in item for items in scores.values() for item in items):
        derived.missing.append(("evalmatrix.json: greedy continuations", GREEDY_SINCE))
        return []
    measured = {
        "exact_read": {name: [item.get("exact") for item in items] for name, items in scores.items()},
        "exact_stated": stated,
        "exact_greedy": {name: [item.get("greedy") for item in items] for name, items in scores.items()},
        "exact_completions": report.get("completions"),
    }
    derived.put(("gates", "GATE-FT-002", "measured", "exact_greedy"), measured["exact_greedy"], optional=True)
    return [f"evalmatrix.json: {p}" for p in judge("GATE-FT-002", measured)]


@derives("evalmatrix")
def evalmatrix_record(inputs: Inputs) -> Derivation:
    """Rows from per-item scores; the adapter's gain and GATE-FT-001 from rows B and C; GATE-FT-002's
    item ids, few-shot draws and each item's context tokens cut from the same file."""
    derived = Derivation()
    report = report_of(inputs, derived, "evalmatrix.json", "1.6.0")
    if report is None:
        return derived
    rows = report.get("rows") or []
    scores = report.get("scores")
    if isinstance(scores, dict):
        try:
            from_items = [row_summary(row, scores[row["row"]]) for row in rows]
        except (KeyError, TypeError, ZeroDivisionError, ValueError) as exc:
            derived.problems.append(f"evalmatrix.json: its per-item scores do not sum to rows ({exc!r})")
        else:
            if from_items != rows:
                derived.problems.append("evalmatrix.json: its rows are not the sums of its per-item scores")
            rows = from_items
        ids = {name: [item.get("id") for item in items] for name, items in scores.items()}
        judged_rows: dict[str, Any] | None = ids
    else:
        judged_rows = None
        derived.missing.append(("evalmatrix.json: per-item scores", PER_ITEM_SINCE))
    derived.problems += [
        f"evalmatrix.json: {p}" for r in rows if isinstance(r, dict) for p in _row_problems(r, report)
    ]
    derived.put(("metrics", "rows"), rows)
    derived.put(("metrics", "items"), len(report.get("items") or []))
    by_name = {row.get("row"): row for row in rows if isinstance(row, dict)}
    few_shot, adapter = by_name.get("B"), by_name.get("C")
    if few_shot is not None and adapter is not None:
        derived.put(("metrics", "adapter_gain_bpb"), few_shot["bits_per_byte"] - adapter["bits_per_byte"])
        measured = {"few_shot_bpb": few_shot["bits_per_byte"], "adapter_bpb": adapter["bits_per_byte"]}
        judged(inputs, derived, "GATE-FT-001", measured)
    else:
        derived.put(("metrics", "adapter_gain_bpb"), None)
    if judged_rows is not None:
        drawn = _few_shot_draws(inputs, derived, report) | _item_overlap(inputs, derived, report)
        judged(
            inputs, derived, "GATE-FT-002", {"rows": judged_rows, "few_shot": report.get("few_shot"), **drawn}
        )
        # the context tokens each item records as cut, as GATE-FT-002's check windows read them (rev 3)
        assert isinstance(scores, dict)
        cut = {name: [item.get("dropped") for item in items] for name, items in scores.items()}
        derived.put(("gates", "GATE-FT-002", "measured", "dropped_read"), cut, optional=True)
        # the NLLs the rows sum, as GATE-FT-002's check nll read them (rev 4)
        nll = {name: [item.get("nll") for item in items] for name, items in scores.items()}
        derived.put(("gates", "GATE-FT-002", "measured", "nll_read"), nll, optional=True)
        derived.problems += _completion_bytes(inputs, derived, report, scores)
        derived.problems += _exact_matches(inputs, derived, report, scores)
        _retrieval_asked(inputs, derived)
    elif "few_shot" in report:
        derived.gate("GATE-FT-002", {"few_shot": report["few_shot"]})
    return derived


# What `stack sample` writes beside its record: the text, the prompt's token count, the ids drawn.
SAMPLE_RESULT = "sample.json"


@derives("sample")
def sample_record(inputs: Inputs) -> Derivation:
    """A sample's text digest, its draws and its prompt's length from sample.json (cited since
    1.24.0): `stack sample` draws exactly config.tokens after the prompt, one row, so GATE-TRAIN-005
    replayed that many draws of a prompt of that many tokens."""
    derived = Derivation()
    report = report_of(inputs, derived, SAMPLE_RESULT, "1.24.0")
    if report is None:
        return derived
    if isinstance(text := report.get("text"), str):
        derived.put(("metrics", "text_sha256"), hashlib.sha256(text.encode("utf-8")).hexdigest())
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    drawn, asked = report.get("drawn"), config.get("tokens")
    if isinstance(drawn, list) and isinstance(asked, int) and len(drawn) != asked:
        derived.problems.append(
            f"{SAMPLE_RESULT} holds {len(drawn)} drawn token(s), but config.tokens is {asked}: "
            "`stack sample` draws exactly that many"
        )
    if "GATE-TRAIN-005" not in inputs.stale:
        if isinstance(drawn, list):
            derived.put(("gates", "GATE-TRAIN-005", "measured", "draws"), len(drawn), optional=True)
        if isinstance(prompt := report.get("prompt_tokens"), int):
            derived.put(("gates", "GATE-TRAIN-005", "measured", "prompt_tokens"), prompt, optional=True)
    # check seeded (GATE-TRAIN-005 rev 10): `stack sample --seed`, as its config states it
    seeded(inputs, derived, "GATE-TRAIN-005", config.get("seed"))
    return derived


def seeded(inputs: Inputs, derived: Derivation, gate_id: str, seed: Any) -> None:
    """A check seeded's values the record's config decides (where the record shows the check): the
    seed is the one `seed` states, and the state a generator freshly seeded with it holds, on the
    device the record's generator drew on, is contracts.seeds' (not derived where this machine has
    no generator of that device)."""
    measured = next((g.measured for g in inputs.record.gates if g.id == gate_id), None)
    if gate_id in inputs.stale or not isinstance(measured, dict) or "seed" not in measured or not whole(seed):
        return
    derived.put(("gates", gate_id, "measured", "seed"), seed, optional=True)
    device = measured.get("generator_device")
    digest = seeded_state_sha256(seed, device) if isinstance(device, str) else None
    if digest is not None:
        derived.put(("gates", gate_id, "measured", "seeded_state_sha256"), digest, optional=True)


# -- surgery: laser, quantize, lora merge ------------------------------------------------------

# Before 1.7.0 surgery.json held the measured blocks but not the gates' results: the gates whose
# values are one of those blocks, by block.
SURGERY_BLOCKS = {
    "GATE-LORA-002": "parity",
    "GATE-LORA-003": "unmerge",
    "GATE-LORA-006": "embedding",
    "GATE-HQQ-002": "agreement",
}


@derives("laser", "quantize", "lora-merge")
def surgery_record(inputs: Inputs) -> Derivation:
    """The metrics block is surgery.json's `measured`; every gate's values are its `gates` (since 1.7.0)."""
    derived = Derivation()
    report = report_of(inputs, derived, "surgery.json", "1.5.0")
    if report is None:
        return derived
    surgery_provenance(inputs, derived, report)
    measured = report.get("measured")
    if isinstance(measured, dict):
        derived.put(("metrics",), measured)
    gates = report.get("gates")
    rows = measured.get("matrices") if isinstance(measured, dict) else None
    rho = (report.get("settings") or {}).get("rho")
    if isinstance(rows, list) and isinstance(rho, int | float) and not isinstance(rho, bool):
        derived.problems += [
            f"surgery.json: {row.get('matrix')} kept {row.get('kept')} of {row.get('rank')} singular values, "
            f"but ρ = {rho:g} keeps {rank_kept(row['rank'], rho)} (⌈ρ·rank⌉)"
            for row in rows
            if isinstance(row, dict)
            and isinstance(row.get("rank"), int)
            and row.get("kept") != rank_kept(row["rank"], rho)
        ]
    if isinstance(gates, dict):
        for gate_id, values in sorted(gates.items()):
            if isinstance(values, dict):
                judged(inputs, derived, gate_id, values)
                if isinstance(rows, list):
                    derived.problems += [
                        f"surgery.json: gates.{gate_id}.{key} is {_short(value)}, but its measured matrices "
                        f"give {_short(want)}"
                        for key, want in matrix_lists(gate_id, rows, values).items()
                        if not same(value := values.get(key), want)
                    ]
        derived.problems += _selection_problems(inputs, derived, gates)
        derived.problems += _template_problems(inputs, derived, gates, report)
        settings = report.get("settings")
        if isinstance(settings, dict) and "group_size" in settings and "GATE-HQQ-001" in gates:
            # the size GATE-HQQ-001's check requested held the groups to is the settings' own,
            # whatever surgery.json's gate block restates of it
            group = settings["group_size"]
            derived.put(("gates", "GATE-HQQ-001", "measured", "group_requested"), group, optional=True)
    else:
        derived.missing.append(("surgery.json: per-gate results", PER_ITEM_SINCE))
        for gate_id, block in SURGERY_BLOCKS.items():
            judged_here = any(g.id == gate_id for g in inputs.record.gates)
            if judged_here and isinstance(measured, dict) and isinstance(measured.get(block), dict):
                judged(inputs, derived, gate_id, measured[block])
        if isinstance(rows, list):
            for result in inputs.record.gates:
                if result.id in inputs.stale or not isinstance(result.measured, dict):
                    continue
                for key, want in matrix_lists(result.id, rows, result.measured).items():
                    derived.put(("gates", result.id, "measured", key), want)
    return derived


def _selection_problems(inputs: Inputs, derived: Derivation, gates: dict[str, Any]) -> list[str]:
    """GATE-LASER-003's check selection (from 1.30.0): the tensors it held the targets to are what
    the record's command line (`run.argv`: --targets, --layers) selects of the model its config.toml
    describes, by contracts.selection; the record's and surgery.json's alike."""
    values = gates.get("GATE-LASER-003")
    text = inputs.artifacts.text("config.toml")
    if not (isinstance(values, dict) and "selected" in values and text is not None):
        return []
    try:
        model = tomllib.loads(text).get("model")
    except tomllib.TOMLDecodeError:
        return ["config.toml is not TOML"]
    if not isinstance(model, dict):
        return []
    want = selected_by(inputs.record.run.argv or [], model)
    derived.put(("gates", "GATE-LASER-003", "measured", "selected"), want)
    if same(values["selected"], want):
        return []
    return [
        f"surgery.json: gates.GATE-LASER-003.selected is {_short(values['selected'])}, but the command "
        f"line's --targets and --layers select {_short(want)} of its model"
    ]


def _template_problems(
    inputs: Inputs, derived: Derivation, gates: dict[str, Any], report: dict[str, Any]
) -> list[str]:
    """GATE-LASER-003's check template (from rev 3): the digest of the chat template the surgery's
    checkpoint carries is the one contracts.checkpoints.chat_template_sha256 gives of the state.json
    the record cites under surgery.json's `checkpoint`. A record filed into a ledger
    (`--evidence-dir`) cites surgery.json alone, not the run directory's checkpoint: there the
    digest is the in-run gate's measurement, which nothing stored decides; a cited state that is not
    a JSON object is named."""
    values = gates.get("GATE-LASER-003")
    if not (isinstance(values, dict) and "template_written" in values):
        return []
    state_file = f"{report.get('checkpoint')}/{STATE_FILE}"
    if not (isinstance(report.get("checkpoint"), str) and inputs.artifacts.has(state_file)):
        return []
    state = inputs.artifacts.json(state_file)
    if not isinstance(state, dict):
        return [f"surgery.json: {state_file} is not a checkpoint state to read the chat template in"]
    want = chat_template_sha256(state)
    derived.put(("gates", "GATE-LASER-003", "measured", "template_written"), want)
    if values["template_written"] == want:
        return []
    return [
        f"surgery.json: gates.GATE-LASER-003.template_written is {_short(values['template_written'])}, but "
        f"{state_file} carries a chat template of digest {_short(want)}"
    ]


def surgery_provenance(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> None:
    """What the record restates of surgery.json (stack.surgery.output): its config is the source
    and the settings, its checkpoint and source parent the source read, its status, spec and the
    weights it made the file's; the file was written once the record was settled."""
    settings = report.get("settings")
    if isinstance(settings, dict):
        for key, value in settings.items():
            derived.put(("config", key), value)
    source = report.get("source") or {}
    cited_checkpoint(
        inputs, derived, "surgery.json's source", source.get("checkpoint"), source.get("manifest_sha256")
    )
    if inputs.record.checkpoint is not None and isinstance(source.get("model_sha256"), str):
        derived.put(("checkpoint", "files", WEIGHTS_FILE, "sha256"), source["model_sha256"])
    derived.problems += source_parent_problems(inputs.record)
    if report.get("status") in ("completed", "halted"):
        derived.put(("run", "status"), report["status"])
    if report.get("status") == "completed" and isinstance(report.get("checkpoint"), str):
        made_weights(inputs, derived, report, f"{report['checkpoint']}/{WEIGHTS_FILE}")
    written_under(derived, report)
    derived.problems += created_problems(inputs.record, "surgery.json", report, settled_first=True)


# What each surgery gate lists of the matrices a surgery touched, by key: the keys of each row that
# surgery.json's `measured.matrices` holds too (the rest, an error measured, are the gate's own).
MATRIX_ROWS = {"GATE-LASER-002": ("matrix", "rank", "kept", "discarded_norm"), "GATE-HQQ-001": ("matrix",)}


def matrix_lists(gate_id: str, rows: list[Any], values: dict[str, Any]) -> dict[str, Any]:
    """What `gate_id`'s values must list of the surgery's matrices (`rows`, surgery.json's
    `measured.matrices`): GATE-LASER-001 their names, GATE-LASER-003 every tensor they hold as its
    targets, GATE-LASER-002 and GATE-HQQ-001 one row per matrix in order (each row's own measurements
    taken from the gate's row of the same matrix, the keys surgery.json holds from it)."""
    rows = [row for row in rows if isinstance(row, dict)]
    if gate_id == "GATE-LASER-001" and "matrices" in values:
        return {"matrices": [row.get("matrix") for row in rows]}
    if gate_id == "GATE-LASER-003" and "targets" in values:
        return {"targets": sorted(str(key) for row in rows for key in row.get("keys") or [])}
    shared = MATRIX_ROWS.get(gate_id)
    listed = values.get("matrices")
    if shared is None or not isinstance(listed, list):
        return {}
    own = {str(row.get("matrix")): row for row in listed if isinstance(row, dict)}
    expected = []
    for row in rows:
        mine = own.get(str(row.get("matrix")), {})
        expected.append({**mine, **{key: row.get(key) for key in shared if key in row}})
    return {"matrices": expected}


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the other commands' result files ------------------------------------------------------------


def memorization_summary(runs: list[int], least: int) -> dict[str, Any]:
    """One model's row of a memorization report from its per-example longest verbatim runs: how many
    reach `least` tokens (GATE-FT-003's count), their share, the longest run and the mean run."""
    count = reproduced(runs, least)
    return {
        "reproduced": count,
        "rate": count / len(runs),
        "longest_run": max(runs),
        "mean_run": sum(runs) / len(runs),
    }


# The rows of a memorization report, by their key in memorization.json's `continuations`.
MEMORIZATION_ROWS = {"fine-tuned": "tuned_runs", "base": "base_runs"}


def recomputed_runs(report: dict[str, Any]) -> dict[str, list[int]] | None:
    """Each row's per-example longest verbatim run, found again by contracts.verbatim between the
    continuation memorization.json keeps for it and the true one (from 1.30.0); None without them."""
    kept = report.get("continuations")
    if not isinstance(kept, dict):
        return None
    lists = [kept.get(name) for name in ("true", *MEMORIZATION_ROWS)]
    if not all(isinstance(x, list) and all(isinstance(c, list) for c in x) for x in lists):
        return None
    true = lists[0]
    return {
        name: [longest_common_run(g, t) for g, t in zip(kept[name], true, strict=False)]
        for name in MEMORIZATION_ROWS
    }


def _continuation_problems(report: dict[str, Any], recomputed: dict[str, list[int]]) -> list[str]:
    """The continuations kept: each as long as the report's continuation, one per example in every row,
    and each row's stated runs the ones they give."""
    kept, length = report["continuations"], report.get("continuation")
    problems = [
        f"memorization.json: {sum(len(c) != length for c in kept[name])} of its {name} continuations are "
        f"not {length} tokens"
        for name in ("true", *MEMORIZATION_ROWS)
        if isinstance(length, int) and any(len(c) != length for c in kept[name])
    ]
    problems += [
        f"memorization.json keeps {len(kept[name])} {name} continuations for {len(kept['true'])} examples"
        for name in MEMORIZATION_ROWS
        if len(kept[name]) != len(kept["true"])
    ]
    problems += [
        f"memorization.json: its {key} are {_short(report.get(key), 120)}, but the continuations it keeps "
        f"give {_short(recomputed[name], 120)} (contracts.verbatim)"
        for name, key in MEMORIZATION_ROWS.items()
        if report.get(key) != recomputed[name]
    ]
    return problems


# The sampler `stack memorization` continues every example with: greedy by construction (its GREEDY,
# stack/eval/memorization.py; no option sets it), as GATE-FT-003's verbatim runs are defined, so the
# settings GATE-TRAIN-005 states of its draws are these.
GREEDY_SAMPLER = {"temperature": 0.0, "top_k": None, "top_p": None, "repetition_penalty": 1.0}


@derives("memorization")
def memorization_record(inputs: Inputs) -> Derivation:
    """GATE-FT-003 from the per-example verbatim runs, found again in the continuations kept where
    the file keeps them; the summary from the same runs."""
    derived = Derivation()
    report = report_of(inputs, derived, "memorization.json", "1.6.0")
    if report is None:
        return derived
    mirrored(derived, report, ("prefix", "continuation", "min_verbatim_tokens", "models"))
    for key in ("prefix", "continuation"):  # the lengths it was asked for, in its config too
        if key in report:
            derived.put(("config", key), report[key])
    least = _least_verbatim(inputs, derived, report)
    runs = {name: report.get(key) for name, key in MEMORIZATION_ROWS.items()}
    recomputed = recomputed_runs(report)
    if recomputed is not None:
        derived.problems += _continuation_problems(report, recomputed)
        runs = dict(recomputed)
    if isinstance(least, int) and all(isinstance(r, list) and r for r in runs.values()):
        models = {name: memorization_summary(r, least) for name, r in runs.items()}  # type: ignore[arg-type]
        if not same(report.get("models"), models):
            derived.problems.append(
                f"memorization.json: its models are {_short(report.get('models'), 120)}, but its runs give "
                f"{_short(models, 120)}"
            )
        derived.put(("metrics", "models"), models)
    if all(key in report for key in ("tuned_runs", "base_runs", "continuation")):
        measured = {
            "tuned_overlaps": report["tuned_runs"],
            "base_overlaps": report["base_runs"],
            "continuation_tokens": report["continuation"],
        }
        if recomputed is not None:  # check runs (rev 3): the runs stated, against those found again
            measured |= {
                "tuned_runs_recomputed": recomputed["fine-tuned"],
                "base_runs_recomputed": recomputed["base"],
            }
        measured |= _drawn_measured(inputs, derived, report) | _texts_measured(inputs)
        judged(inputs, derived, "GATE-FT-003", measured)
    derived.problems += _memorization_count_problems(inputs, report)
    examples, continuation = report.get("examples"), report.get("continuation")
    if isinstance(examples, list) and whole(continuation):
        # every row continues every example for `continuation` greedy draws, all in one tally (W03),
        # under every revision of GATE-TRAIN-005 a memorization record holds
        draws = len(MEMORIZATION_ROWS) * len(examples) * continuation
        derived.put(("gates", "GATE-TRAIN-005", "measured", "draws"), draws, optional=True)
    for key, value in GREEDY_SAMPLER.items():  # no option reaches the sampler (round-11 Y102, Y103)
        derived.put(("gates", "GATE-TRAIN-005", "measured", key), value, optional=True)
    return derived


def _drawn_measured(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> dict[str, Any]:
    """GATE-FT-003's check drawn (rev 4) where the record holds it: the seed, n and length the draw is
    made again with are the config's and the file's, not the gate's own word; the eligible count,
    the ranks and the indices are the record's, the indices those of the examples memorization.json
    lists (a DATA_DIR's train document i is index i; a JSONL pool's lines are not kept, so only
    their count is held)."""
    result = next((g.measured for g in inputs.record.gates if g.id == "GATE-FT-003"), None)
    if not isinstance(result, dict) or "examples_drawn" not in result:
        return {}
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    prefix, continuation = report.get("prefix"), report.get("continuation")
    measured = {
        "examples_seed": config.get("seed"),
        "examples_n": config.get("n"),
        "examples_length": prefix + continuation if whole(prefix, continuation) else None,
        "examples_eligible": result.get("examples_eligible"),
        "examples_ranks": result.get("examples_ranks"),
        "examples_drawn": result["examples_drawn"],
    }
    drawn, listed = result["examples_drawn"], report.get("examples")
    if isinstance(drawn, list) and isinstance(listed, list):
        named = [f"train document {i}" for i in drawn] if config.get("data") is not None else None
        if len(drawn) != len(listed) or (named is not None and named != listed):
            derived.problems.append(
                f"memorization.json lists the examples {_short(listed)}, but GATE-FT-003 measured the pool "
                f"indices {_short(drawn)}"
            )
    return measured


def _texts_measured(inputs: Inputs) -> dict[str, Any]:
    """GATE-FT-003's check tokens (rev 5) where the record holds it: the texts of the ids measured and
    of the records are the record's (memorization.json keeps no prefix, and the --examples file is
    an input, not an artifact), judged again by the same judge so the verdict derived is the one
    they give."""
    result = next((g.measured for g in inputs.record.gates if g.id == "GATE-FT-003"), None)
    keys = ("examples_decoded", "examples_rendered")
    return {key: result[key] for key in keys} if isinstance(result, dict) and keys[0] in result else {}


def _least_verbatim(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> Any:
    """The run an example must share with its true continuation to count as reproduced: GATE-FT-003's
    min_verbatim_tokens, which `stack memorization` reads from the spec and writes into the file
    (stack/cli/memorization.py), so the file's count and the record's are made with the threshold
    in force; the file's own value where that is not known (`thresholds_in_force`)."""
    in_force = (thresholds_in_force(inputs, "GATE-FT-003") or {}).get("min_verbatim_tokens")
    if in_force is None:
        return report.get("min_verbatim_tokens")
    derived.put(("metrics", "min_verbatim_tokens"), in_force)
    if "min_verbatim_tokens" in report and not same(report["min_verbatim_tokens"], in_force):
        derived.problems.append(
            f"memorization.json: min_verbatim_tokens is {report['min_verbatim_tokens']!r}, but GATE-FT-003 "
            f"counts an example reproduced from {in_force!r} tokens (its threshold min_verbatim_tokens)"
        )
    return int(in_force)


def _memorization_count_problems(inputs: Inputs, report: dict[str, Any]) -> list[str]:
    """The examples the table lists: at most config.n (the draw takes up to n), one run per example
    in each row, and (with --data) the count GATE-DATA-005 held to the train split."""
    examples = report.get("examples")
    if not isinstance(examples, list):
        return []
    problems = []
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    if isinstance(asked := config.get("n"), int) and len(examples) > asked:
        problems.append(f"memorization.json lists {len(examples)} examples, more than config.n {asked}")
    for key in ("tuned_runs", "base_runs"):
        if isinstance(runs := report.get(key), list) and len(runs) != len(examples):
            problems.append(f"memorization.json has {len(runs)} {key} for {len(examples)} examples")
    held = next((g.measured for g in inputs.record.gates if g.id == "GATE-DATA-005"), None) or {}
    drawn = held.get("train_examples", len(examples)) if isinstance(held, dict) else len(examples)
    if "GATE-DATA-005" not in inputs.stale and drawn != len(examples):
        problems.append(
            f"gates[GATE-DATA-005].measured.train_examples is {drawn}, but "
            f"memorization.json lists {len(examples)} examples"
        )
    return problems


@derives("options-matrix")
def options_matrix_record(inputs: Inputs) -> Derivation:
    """Each cell's outcome and last line, and the count of cells by outcome, from matrix.json."""
    derived = Derivation()
    report = report_of(inputs, derived, "matrix.json", "1.6.0")
    if report is None or not isinstance(report.get("cells"), dict):
        return derived
    if isinstance(report.get("model"), dict):  # the matrix's model, as its config states the matrix
        derived.put(("config", "matrix", "model"), report["model"])
    cells, outcomes, messages = report["cells"], {}, {}
    for option, paths in cells.items():
        if not isinstance(paths, dict):
            continue
        outcomes[option] = {
            path: cell.get("outcome") for path, cell in paths.items() if isinstance(cell, dict)
        }
        for path, cell in paths.items():
            if isinstance(cell, dict) and cell.get("outcome") != "ok":
                messages[f"{option}/{path}"] = cell.get("message")
    counted = Counter(outcome for row in outcomes.values() for outcome in row.values())
    derived.put(("metrics", "cells"), dict(counted))
    derived.gate("GATE-ARCH-013", {"cells": outcomes, "messages": messages})
    listed = [cell for paths in cells.values() if isinstance(paths, dict) for cell in paths.values()]
    listed = [cell for cell in listed if isinstance(cell, dict)]
    if listed and all("verdict" in cell for cell in listed):
        derived.put(("metrics", "verdicts"), dict(Counter(cell["verdict"] for cell in listed)), optional=True)
    seconds = [cell.get("seconds") for cell in listed]
    metrics = inputs.record.metrics
    if listed and "seconds" in metrics and all(isinstance(x, int | float) for x in seconds):
        found = Identity("metrics.seconds", metrics["seconds"], total, tuple(seconds)).problem()
        derived.problems += [f"{found} (the sum of its cells' seconds)"] if found else []
    return derived


def _synth_counts(report: dict[str, Any]) -> list[str]:
    """A synthesis draws `settings.samples` samples, and keeps or drops each one for a reason."""
    problems, samples = [], (report.get("settings") or {}).get("samples")
    generated, kept, dropped = report.get("generated"), report.get("kept"), report.get("dropped")
    if isinstance(samples, int) and isinstance(generated, int) and generated != samples:
        problems.append(f"synth.json: generated is {generated}, but its settings draw {samples} samples")
    counted = isinstance(dropped, dict) and all(isinstance(n, int) for n in dropped.values())
    if isinstance(generated, int) and isinstance(kept, int) and counted:
        gone = sum(dropped.values())  # type: ignore[union-attr]
        if kept + gone != generated:
            problems.append(f"synth.json: {kept} kept and {gone} dropped, but {generated} generated")
    return problems


def synth_pair(line: Any) -> tuple[str, str] | None:
    """(instruction, response) of one line of synth.jsonl: a chat record's user and assistant
    messages, or (before chat records) its `instruction` and `response`."""
    if not isinstance(line, dict):
        return None
    messages = line.get("messages")
    if isinstance(messages, list) and len(messages) == 2 and all(isinstance(m, dict) for m in messages):
        pair = (messages[0].get("content"), messages[1].get("content"))
    else:
        pair = (line.get("instruction"), line.get("response"))
    return pair if all(isinstance(x, str) for x in pair) else None  # type: ignore[return-value]


def _synth_lines(text: str, settings: dict[str, Any]) -> list[str]:
    """Every kept line passed the filters `stack synth` drops by (stack.tune.synth.drop_reason): no
    shorter than min_chars, no less coherent than min_coherence (the monitor's scorer), and none the
    same as an earlier one."""
    problems, seen = [], set()
    least, coherent = settings.get("min_chars"), settings.get("min_coherence")
    for number, line in enumerate((x for x in text.splitlines() if x.strip()), 1):
        try:
            pair = synth_pair(json.loads(line))
        except ValueError:
            pair = None
        if pair is None:
            problems.append(f"synth.jsonl line {number} is not an instruction and a response")
            continue
        if isinstance(least, int) and min(len(pair[0]), len(pair[1])) < least:
            problems.append(f"synth.jsonl line {number} is shorter than min_chars {least}, yet kept")
        elif isinstance(coherent, int | float) and min(map(coherence_score, pair)) < coherent:
            problems.append(f"synth.jsonl line {number} scores below min_coherence {coherent}, yet kept")
        if pair in seen:
            problems.append(f"synth.jsonl line {number} repeats an earlier line, yet kept")
        seen.add(pair)
    return problems


# The spec version from which synth.json keeps every continuation as drawn (GATE-SYNTH-002 rev 3).
SYNTH_CONTINUATIONS_SINCE = "1.33.0"


def _synth_budgets(
    inputs: Inputs, derived: Derivation, report: dict[str, Any], settings: dict[str, Any]
) -> None:
    """GATE-SYNTH-002's check budgets from synth.json: every continuation it keeps, the model's
    context, and the length settings it states (the record's config.settings), judged again by the
    same judge, so a budget read from the wrong setting is a problem here whatever the record says;
    one instruction drawn per sample generated."""
    if "continuations" not in report:
        if inputs.record.run.status is RunStatus.COMPLETED:
            derived.missing.append(("synth.json: continuations", SYNTH_CONTINUATIONS_SINCE))
        return
    measured = {
        "continuations": report["continuations"],
        "ctx": report.get("ctx"),
        "max_instruction_tokens": settings.get("max_instruction_tokens"),
        "max_response_tokens": settings.get("max_response_tokens"),
    }
    if "GATE-SYNTH-002" not in inputs.stale:
        derived.gate("GATE-SYNTH-002", measured)
    derived.problems += [f"synth.json: {p}" for p in judge("GATE-SYNTH-002", measured)]
    parts = [c.get("part") for c in report["continuations"] if isinstance(c, dict)]
    if isinstance(report.get("generated"), int) and parts.count("instruction") != report["generated"]:
        derived.problems.append(
            f"synth.json keeps {parts.count('instruction')} instruction continuation(s), but "
            f"{report['generated']} samples were generated"
        )


# What `stack synth` states as its config: synth.json before the counts were added to it.
SYNTH_CONFIG = ("model", "template", "settings", "clamped")


@derives("synth")
def synth_record(inputs: Inputs) -> Derivation:
    """The counts from synth.json, and the lines GATE-SYNTH-001 counts from synth.jsonl itself; the
    config and the checkpoint the file says the synthesis drew from."""
    derived = Derivation()
    report = report_of(inputs, derived, "synth.json", "1.6.0")
    text = inputs.artifacts.text("synth.jsonl")
    if text is None and inputs.record.run.status is RunStatus.COMPLETED:
        derived.missing.append(("synth.jsonl", "1.6.0"))
    if report is None:
        return derived
    for key in SYNTH_CONFIG:
        if key in report:
            derived.put(("config", key), report[key])
    model = report.get("model") or {}
    cited_checkpoint(
        inputs, derived, "synth.json's model", model.get("checkpoint"), model.get("manifest_sha256")
    )
    counts = {key: report[key] for key in ("generated", "kept", "dropped") if key in report}
    for key, value in counts.items():
        derived.put(("metrics", key), value)
    derived.problems += _synth_counts(report)
    if text is not None:
        derived.problems += _synth_lines(text, report.get("settings") or {})
        lines = sum(1 for line in text.splitlines() if line.strip())
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if report.get("records_sha256") not in (None, digest):
            derived.problems.append("synth.json's records_sha256 is not the sha256 of synth.jsonl")
        judged(inputs, derived, "GATE-SYNTH-001", {**counts, "lines": lines})
    if "generated" in report:
        derived.gate("GATE-SYNTH-002", {"generated": report["generated"]})
    settings = report.get("settings") or {}
    seeded(inputs, derived, "GATE-SYNTH-002", settings.get("seed"))
    _synth_budgets(inputs, derived, report, settings)
    if "GATE-TRAIN-005" not in inputs.stale and "temperature" in settings:
        # the draws are replayed at the temperature the synthesis states (GATE-TRAIN-005 rev 11)
        derived.put(
            ("gates", "GATE-TRAIN-005", "measured", "temperature"), settings["temperature"], optional=True
        )
    return derived


# What an evaluation scores, as eval.json, the record's metrics and GATE-EVAL-003 each state it.
EVAL_SCORES = ("loss", "bits_per_byte", "tokens", "predicted_tokens", "bytes")


@derives("eval")
def eval_record(inputs: Inputs) -> Derivation:
    """The scores and overlap the record repeats from eval.json, and the scores and overlap
    GATE-EVAL-003 judged; the checkpoint is the one its config names."""
    derived = Derivation()
    report = report_of(inputs, derived, "eval.json", "1.4.0")
    if report is not None:
        mirrored(derived, report, (*EVAL_SCORES, "overlap"))
        if "GATE-EVAL-003" not in inputs.stale:
            scores = {key: report[key] for key in EVAL_SCORES if key in report}
            derived.gate("GATE-EVAL-003", scores, optional=True)
            if "overlap" in report:  # the overlap check (rev 5) judged the overlap the report states
                derived.put(
                    ("gates", "GATE-EVAL-003", "measured", "overlap_stated"), report["overlap"], optional=True
                )

        bpb = bpb_identity(report.get("loss"), report.get("predicted_tokens"), report.get("bytes"))
        if bpb is not None and not same(report.get("bits_per_byte"), bpb):
            derived.problems.append(
                f"eval.json: bits_per_byte is {report.get('bits_per_byte')}, but its loss over "
                f"{report.get('predicted_tokens')} predicted tokens and {report.get('bytes')} bytes "
                f"gives {bpb}"
            )
    read = inputs.record.config.get("checkpoint")
    if inputs.record.checkpoint is not None and isinstance(read, str) and basename(read):
        derived.put(("checkpoint", "name"), basename(read))
        if "GATE-CKPT-002" not in inputs.stale:
            derived.put(("gates", "GATE-CKPT-002", "measured", "checkpoint"), basename(read), optional=True)
    derived.problems += scored_text_problems(inputs.record)
    _scored_positions(inputs, derived)
    return derived


def _scored_positions(inputs: Inputs, derived: Derivation) -> None:
    """What GATE-EVAL-003 states that the text's token count and the record's config decide, at any
    revision: the digest of the positions a score of N tokens predicts (contracts.likelihood;
    round-8 ledger audit W81 restated it with its twin), and, where the gate passed, the scored
    positions' digest too (it passes only when the two are one); and (check window, rev 7) the
    context the windows were held to, config.seq_len (audit R80)."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-EVAL-003"), None)
    measured = result.measured if result is not None else None
    if not isinstance(measured, dict):
        return
    tokens = measured.get("tokens")
    if "predicted_positions_sha256" in measured and whole(tokens):
        predicted = predicted_positions_sha256(tokens)
        derived.gate("GATE-EVAL-003", {"predicted_positions_sha256": predicted})
        if result is not None and result.verdict is Verdict.PASS:
            derived.gate("GATE-EVAL-003", {"scored_positions_sha256": predicted})
    if "context" in measured:
        derived.gate("GATE-EVAL-003", {"context": (inputs.record.config or {}).get("seq_len")})


def scored_text_problems(record: EvidenceRecord) -> list[str]:
    """`stack eval` hashes the text it scored once, into `metrics.text_sha256` and GATE-EVAL-003's
    `text_sha256` alike (stack/cli/eval.py, stack.eval.file_check, stack.eval.split_check): two
    digests of one text that differ name two texts (a gate of any revision states it)."""
    scored = next((g.measured for g in record.gates if g.id == "GATE-EVAL-003"), None)
    judged = scored.get("text_sha256") if isinstance(scored, dict) else None
    stated = record.metrics.get("text_sha256")
    if not isinstance(judged, str) or not isinstance(stated, str) or judged == stated:
        return []
    return [
        f"metrics.text_sha256 is {stated!r}, but GATE-EVAL-003 judged the text {judged!r}: the evaluation "
        "hashes the one text it scored into both"
    ]


# What the export gates measured, by the parity report's keys (fp32 for the ONNX graph).
EXPORT_PARITY = {
    "export-hf": ("GATE-EXPORT-001", "model.safetensors", ""),
    "export-onnx": ("GATE-EXPORT-002", "model.onnx", "fp32_"),
}


@derives(*EXPORT_PARITY)
def export_record(inputs: Inputs) -> Derivation:
    """The export's status, sample and parity from export.json; the parity gate's values from its parity."""
    derived = Derivation()
    report = report_of(inputs, derived, "export.json", "1.4.0")
    if report is None:
        return derived
    mirrored(derived, report, ("status", "opset", "sample", "parity"))
    derived.problems += restated_threshold_problems(inputs, "export.json: parity", report.get("parity"))
    gate_id, file, prefix = EXPORT_PARITY[inputs.record.run.kind]
    parity = (report.get("parity") or {}).get(file)
    if isinstance(parity, dict) and "max_abs_diff" in parity:
        values = {f"{prefix}max_abs_diff": parity["max_abs_diff"], f"{prefix}finite": parity.get("finite")}
        derived.gate(gate_id, {**values, "positions": parity.get("positions")})
        derived.gate(gate_id, tensor_values(parity, prefix, "max_abs_diff"), optional=True)
        if "architecture_keys" in report:  # GATE-EXPORT-001 rev 3: the configuration read back
            read_back = {key: report.get(key) for key in ("architecture_keys", "architecture_differing")}
            derived.gate(gate_id, read_back, optional=True)
        if "stored_dtypes" in report:  # rev 4: the dtypes loaded and stored, the weights file's again
            derived.gate(gate_id, {"loaded_dtypes": report.get("loaded_dtypes")}, optional=True)
            derived.problems += _stored_dtype_problems(inputs, derived, gate_id, file, report)
        tokens_read_back(derived, report)
        sample = report.get("sample") or {}
        windows, width = sample.get("windows"), sample.get("tokens_per_window")
        if isinstance(windows, int) and isinstance(width, int) and parity.get("positions") != windows * width:
            derived.problems.append(
                f"export.json: parity over {parity.get('positions')} positions, but its sample is {windows} "
                f"windows of {width} tokens"
            )
    int8 = (report.get("parity") or {}).get("model.int8.onnx")
    if isinstance(int8, dict):  # GATE-EXPORT-002 rev 4 (check int8_tensors): what the int8 parity states
        derived.gate(gate_id, tensor_values(int8, "int8_", "argmax_agreement", "max_abs_diff"), optional=True)
    if "int8_weight_types" in report:  # GATE-EXPORT-002 rev 2: the saved int8 graph's weights, read again
        derived.problems += _int8_weight_type_problems(inputs, derived, gate_id, report)
    if inputs.record.run.kind == "export-onnx":
        derived.problems += _opset_problems(inputs, derived, report)
    if isinstance(report.get("argv"), list):  # the command line the export ran (a waiver asked there)
        derived.put(("run", "argv"), report["argv"])
    export_provenance(inputs, derived, report, file)
    return derived


def tensor_values(parity: dict[str, Any], prefix: str, *keys: str) -> dict[str, Any]:
    """The parity gates' check tensors values one export.json parity entry states: each stated number
    of `keys` and the one contracts.logits_parity computed from the two tensors (its `tensors`,
    from GATE-EXPORT-001 rev 5 / -002 rev 4), as stack.export.parity.LogitsParity.tensor_values
    handed them to the gate; none for an entry without them."""
    tensors = parity.get("tensors")
    if not (isinstance(tensors, dict) and all(key in tensors and key in parity for key in keys)):
        return {}
    return {
        name: value
        for key in keys
        for name, value in ((f"{prefix}{key}", parity[key]), (f"{prefix}{key}_tensors", tensors[key]))
    }


def _opset_problems(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> list[str]:
    """An ONNX export's opset: the one its saved model.onnx declares (contracts.onnx_weights, where the
    record cites the graph; else export.json's `opset`, which the export read from it) is the one
    its config asked for (audit R88: config.opset 20, a graph of opset 18, and nobody compared);
    GATE-EXPORT-002's check opset (rev 3) states those two, and export.json's `opset_asked` the
    asked one."""
    asked = (inputs.record.config or {}).get("opset")
    file = "model.onnx"
    declared = declared_opset(inputs.artifacts.directory / file) if inputs.artifacts.has(file) else None
    problems = []
    if declared is not None and report.get("opset") != declared:
        problems.append(f"export.json: opset is {report.get('opset')!r}, but {file} declares {declared}")
    declared = report.get("opset") if declared is None else declared
    measured = next((g.measured for g in inputs.record.gates if g.id == "GATE-EXPORT-002"), None)
    if isinstance(measured, dict) and "opset" in measured and "GATE-EXPORT-002" not in inputs.stale:
        derived.gate("GATE-EXPORT-002", {"opset": declared, "opset_asked": asked})
    if "opset_asked" in report and report["opset_asked"] != asked:
        problems.append(
            f"export.json: opset_asked is {report['opset_asked']!r}, but config.opset is {asked!r}"
        )
    if isinstance(asked, int) and isinstance(declared, int) and asked != declared:
        problems.append(
            f"config.opset asks for opset {asked}, but the exported graph declares opset {declared}: the "
            "export was written at another opset than the one it records"
        )
    return problems


def _int8_weight_type_problems(
    inputs: Inputs, derived: Derivation, gate_id: str, report: dict[str, Any]
) -> list[str]:
    """GATE-EXPORT-002's check weights (from rev 2): the element types export.json and the gate state
    of the int8 graph's quantised matmul weights are those the saved graph, under the name its parity
    gives it, stores (contracts.onnx_weights); a graph the record does not cite is named."""
    check = (report.get("parity") or {}).get("model.int8.onnx")
    saved = check.get("file") if isinstance(check, dict) else None
    if not (isinstance(saved, str) and inputs.artifacts.has(saved)):
        return [
            f"export.json states int8_weight_types, but the record cites no int8 graph {saved!r} "
            "to read them in"
        ]
    stored = quantised_weight_types(inputs.artifacts.directory / saved)
    derived.put(("gates", gate_id, "measured", "int8_weight_types"), stored, optional=True)
    if same(report["int8_weight_types"], stored):
        return []
    return [
        f"export.json: int8_weight_types is {_short(report['int8_weight_types'])}, "
        f"but {saved} stores {stored}"
    ]


def _stored_dtype_problems(
    inputs: Inputs, derived: Derivation, gate_id: str, file: str, report: dict[str, Any]
) -> list[str]:
    """GATE-EXPORT-001's stored dtypes (check loaded) are those the weights file's header names
    (contracts.hf_export.stored_dtypes), export.json's too; and config.json declares that dtype, the
    one a plain from_pretrained loads the weights in."""
    if not inputs.artifacts.has(file):
        return []
    stored = hf_stored_dtypes(inputs.artifacts.safetensors_header(file))
    derived.put(("gates", gate_id, "measured", "stored_dtypes"), stored, optional=True)
    problems = (
        []
        if report.get("stored_dtypes") == stored
        else [
            f"export.json: stored_dtypes is {_short(report.get('stored_dtypes'))}, but {file} stores {stored}"
        ]
    )
    config = inputs.artifacts.json("config.json")
    declared = [config.get(f) for f in DTYPE_FIELDS if f in config] if isinstance(config, dict) else []
    return problems + [
        f"config.json: declares dtype {value!r}, but {file} stores {stored}: a plain from_pretrained loads "
        "the export in another dtype than its weights'"
        for value in declared
        if [value] != stored
    ]


# GATE-EXPORT-001 rev 4: the special ids held to the model's own, and the tokenizer read back.
TOKENS_READ_BACK = ("special_ids", "eot_id", "special_expected", "tokenizer_keys", "tokenizer_differing")


def tokens_read_back(derived: Derivation, report: dict[str, Any]) -> None:
    """GATE-EXPORT-001's special and tokenizer values as an export.json or import.json keeps them
    (stack.export.tokenizer_check): the record's measured values must be the file's."""
    found = {key: report[key] for key in TOKENS_READ_BACK if key in report}
    if found:
        derived.gate("GATE-EXPORT-001", found, optional=True)


def export_provenance(inputs: Inputs, derived: Derivation, report: dict[str, Any], file: str) -> None:
    """What the record restates of export.json (stack.export.exporters): its config's format and
    --int8 (an int8 graph is checked, or noted unbuilt, only when asked for), the checkpoint read,
    (and GATE-CKPT-002's name of it), its source parent and tokenizer, the weights made (`file`) and
    the spec; export.json is written before the record is settled."""
    if isinstance(report.get("format"), str):
        derived.put(("config", "format"), report["format"])
    if isinstance(report.get("parity"), dict):
        derived.put(("config", "int8"), "model.int8.onnx" in report["parity"])
    source = report.get("source_checkpoint") or {}
    path = source.get("path")
    cited_checkpoint(inputs, derived, "export.json's source_checkpoint", path, source.get("manifest_sha256"))
    if isinstance(path, str) and basename(path) and "GATE-CKPT-002" not in inputs.stale:
        derived.put(("gates", "GATE-CKPT-002", "measured", "checkpoint"), basename(path), optional=True)
    if inputs.record.checkpoint is not None and isinstance(source.get("step"), int):
        derived.put(("checkpoint", "step"), source["step"])
    derived.problems += source_parent_problems(inputs.record)
    tokenizer = (report.get("tokenizer") or {}).get("sha256")
    if inputs.record.data is not None and isinstance(tokenizer, str):
        derived.put(("data", "tokenizer_sha256"), tokenizer)
    made_weights(inputs, derived, report, file)
    written_under(derived, report)
    derived.problems += created_problems(inputs.record, "export.json", report, settled_first=False)


@derives("import-hf")
def import_record(inputs: Inputs) -> Derivation:
    """What `stack import-hf` restates of import.json (stack.export.importer): the metrics, the
    tokenizer, the checkpoint it wrote (cited by its manifest's sha256 among the files), its source
    and the weights it read there, the spec; import.json is written before the record is settled."""
    derived = Derivation()
    report = report_of(inputs, derived, IMPORT_RECORD, PER_ITEM_SINCE)
    if report is None:
        return derived
    mirrored(derived, report, ("family", "weights", "model_vocab", "parity"))
    derived.problems += restated_threshold_problems(inputs, "import.json: parity", report.get("parity"))
    tokens_read_back(derived, report)
    written, files = report.get("checkpoint"), report.get("files") or {}
    manifest = (files.get(f"{written}/{MANIFEST}") or {}).get("sha256")  # a checkpoint's is named so too
    cited_checkpoint(inputs, derived, f"{IMPORT_RECORD}'s files", written, manifest)
    tokenizer = (report.get("tokenizer") or {}).get("sha256")
    if inputs.record.data is not None and isinstance(tokenizer, str):
        derived.put(("data", "tokenizer_sha256"), tokenizer)
    source = report.get("source") or {}
    if isinstance(source.get("path"), str):
        derived.put(("config", "source"), source["path"])
    read = (source.get("files") or {}).get(WEIGHTS_FILE)
    parents = inputs.record.lineage.parents if inputs.record.lineage is not None else []
    derived.problems += [
        f"lineage's source parent names the weights {ref.checkpoint_sha256[:12]}, but {IMPORT_RECORD} "
        f"read {read[:12]} from it"
        for ref in parents
        if ref.role == "source" and isinstance(read, str) and ref.checkpoint_sha256 != read
    ]
    written_under(derived, report)
    derived.problems += created_problems(inputs.record, IMPORT_RECORD, report, settled_first=False)
    return derived


def _peft_config_written(inputs: Inputs, derived: Derivation) -> None:
    """GATE-LORA-007's `config_written` (check config, rev 2) is adapter_config.json's fields as the
    export keeps the file (contracts.peft_config.written_fields), where the record cites it; one it
    cites that is no readable JSON object is a problem."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-LORA-007"), None)
    cited = inputs.artifacts.has(PEFT_CONFIG)  # a record filed into a ledger keeps no adapter files
    if result is None or "GATE-LORA-007" in inputs.stale or result.revision < PEFT_CONFIG_SINCE or not cited:
        return
    try:
        config = inputs.artifacts.json(PEFT_CONFIG)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        derived.problems.append(
            f"{PEFT_CONFIG} is not a JSON object the export keeps: its fields cannot be read"
        )
        return
    derived.put(("gates", "GATE-LORA-007", "measured", "config_written"), peft_config.written_fields(config))
    adapter, base = _stored_keys(inputs, PEFT_WEIGHTS), _stored_keys(inputs, PEFT_BASE_WEIGHTS)
    if adapter is not None:
        adapted = peft_config.modules_of(adapter, peft_config.ADAPTER_PREFIX, peft_config.ADAPTER_SUFFIXES)
        derived.put(("gates", "GATE-LORA-007", "measured", "modules_adapted"), adapted)
    if base is not None:  # the base the export wrote beside the adapter (none with --base)
        modules = peft_config.modules_of(base, "", peft_config.BASE_SUFFIXES)
        targeted = peft_config.targeted(config.get("target_modules"), modules)
        derived.put(("gates", "GATE-LORA-007", "measured", "modules_targeted"), targeted)


def _stored_keys(inputs: Inputs, file: str) -> list[str] | None:
    """The tensor keys of a safetensors file the record cites, read from its header; None when it
    cites no such file."""
    if not inputs.artifacts.has(file):
        return None
    return peft_config.header_keys(inputs.artifacts.safetensors_header(file))


@derives("lora-export")
def lora_export_record(inputs: Inputs) -> Derivation:
    """What `stack lora export` restates of lora_export.json (stack.export.peft_exchange): the
    status, sample, parity and base, the checkpoint read and its source parent, the adapter it
    made (once verified), the spec; the file is written before the record is settled."""
    derived = Derivation()
    report = report_of(inputs, derived, LORA_EXPORT_RECORD, PER_ITEM_SINCE)
    if report is None:
        return derived
    mirrored(derived, report, ("status", "sample", "parity", "base_sha256"))
    derived.problems += restated_threshold_problems(inputs, "lora_export.json: parity", report.get("parity"))
    source = report.get("source_checkpoint") or {}
    cited_checkpoint(
        inputs,
        derived,
        f"{LORA_EXPORT_RECORD}'s source_checkpoint",
        source.get("path"),
        source.get("manifest_sha256"),
    )
    if inputs.record.checkpoint is not None and isinstance(source.get("step"), int):
        derived.put(("checkpoint", "step"), source["step"])
    derived.problems += source_parent_problems(inputs.record)
    _peft_config_written(inputs, derived)
    made_weights(inputs, derived, report, PEFT_WEIGHTS)
    written_under(derived, report)
    derived.problems += created_problems(inputs.record, LORA_EXPORT_RECORD, report, settled_first=False)
    return derived


def _ablation_reported(report: dict[str, Any]) -> dict[str, Any]:
    """GATE-TRACE-003's reported values (check ablation) as trace.json shows them: the mean KL, the
    changed argmaxes, the positions and (from 1.29.0) each layer's output change."""
    reported = {
        "mean_kl_reported": report.get("mean_kl"),
        "argmax_changed_reported": report.get("argmax_changed"),
        "positions_reported": report.get("positions"),
    }
    rows = [r for r in report.get("per_layer") or [] if isinstance(r, dict)]
    if rows:
        reported["output_change_reported"] = {str(r.get("layer")): r.get("output_change") for r in rows}
    return reported


def _sites_of(report: dict[str, Any], trace: str) -> list[dict[str, Any]]:
    """The sites trace.json keeps of one of its traces, in the order the forward reached them."""
    kept = ((report.get("traces") or {}).get(trace) or {}).get("sites")
    return [site for site in kept or [] if isinstance(site, dict)]


def ablation_site_problems(report: dict[str, Any]) -> list[str]:
    """Where an ablation acted, as its own two traces show it: `stack trace --ablate` zeroes each
    site it names as the forward reaches it (stack.trace.tracer), so in the ablated trace that site
    holds only zeros, and every site the forward reached before the first of them is the intact
    trace's, statistic for statistic. An ablation restated as another site than the one it zeroed
    (the round-6 ledger audit's U19) contradicts one or the other. Where the ablated site is not
    kept, the sites of earlier blocks come before it."""
    ablated = [name for name in report.get("ablated") or [] if isinstance(name, str)]
    intact, zeroed = _sites_of(report, "intact"), _sites_of(report, "ablated")
    if not ablated or not intact or [s.get("name") for s in intact] != [s.get("name") for s in zeroed]:
        return []
    problems = []
    names = [site.get("name") for site in zeroed]
    for site in zeroed:
        stats = site.get("stats") if isinstance(site.get("stats"), dict) else {}
        if site.get("name") in ablated and stats.get("zero") != stats.get("count"):
            problems.append(
                f"it says {site['name']} was ablated, but the ablated trace holds "
                f"{stats.get('count')} value(s) there of which {stats.get('zero')} are zero"
            )
    kept = [names.index(name) for name in ablated if name in names]
    layers = [layer for name in ablated if (layer := _layer_of(name)) is not None]
    for position, (before, after) in enumerate(zip(intact, zeroed, strict=True)):
        layer = before.get("layer")
        if kept:
            reached_first = position < min(kept)
        else:
            reached_first = bool(layers) and isinstance(layer, int) and layer < min(layers)
        if reached_first and before.get("stats") != after.get("stats"):
            problems.append(
                f"{before.get('name')} differs between the intact and the ablated trace, but the forward "
                f"reaches it before {', '.join(ablated)}, which it says it ablated: nothing was zeroed "
                "before it"
            )
            break
    return problems


def _ablation_asked(report: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """GATE-TRACE-003's check `ablated` as the record's config (held to argv by tools/argv_record)
    and trace.json show it: the sites asked, zeroed (from 1.33.0 trace.json keeps the sites the
    hooks zeroed) and named, the --sample asked and the continuations shown."""
    return {
        "ablate_asked": config.get("ablate"),
        "ablate_zeroed": report.get("zeroed"),
        "ablate_reported": report.get("ablated"),
        "sample_asked": config.get("sample"),
        "continuations": len(report.get("samples") or {}),
    }


def _patch_recorded(report: dict[str, Any]) -> dict[str, Any]:
    """GATE-PATCH-002's recorded values as trace.json shows them: the scores (check scores) and,
    where trace.json keeps the patched scores (from 1.29.0), the grid's cells and every recovered
    fraction with the scores it came from (checks grid and recovery)."""
    metric = report.get("metric") or {}
    recorded: dict[str, Any] = {
        "clean_recorded": metric.get("clean"),
        "corrupted_recorded": metric.get("corrupted"),
    }
    rows = [r for r in report.get("per_layer") or [] if isinstance(r, dict)]
    if "full_patched" not in report or not all(isinstance(r.get("patched"), list) for r in rows):
        return recorded
    cells = [
        {"site": r.get("site"), "position": p, "patched": s, "recovered": v}
        for r in rows
        for p, v, s in zip(r.get("positions") or [], r.get("recovered") or [], r["patched"], strict=False)
    ]
    return recorded | {
        "grid_cells": [[c["site"], c["position"]] for c in cells],
        "recovery_clean": metric.get("clean"),
        "recovery_corrupted": metric.get("corrupted"),
        "recovery_cells": cells,
        "recovery_full": {"patched": report["full_patched"], "recovered": report.get("full_recovered")},
    }


@derives("trace", "patch", "lens")
def trace_record(inputs: Inputs) -> Derivation:
    """The verdict, first anomaly and per-layer summary the record repeats from trace.json (and a
    lens-train record's, contracts.derive.training.lens_train_record)."""
    derived = Derivation()
    report = report_of(inputs, derived, "trace.json", "1.0.0")
    if report is not None:
        mirrored(derived, report, ("trace_schema_version", "mode", "verdict", "first", "per_layer"))
        for label, described in (report.get("paths") or {}).items():  # config.path_a: paths.A, ...
            derived.put(("config", f"path_{str(label).lower()}"), described)
        if isinstance(report.get("tokens"), list) and report["tokens"]:
            derived.put(("config", "tokens"), len(report["tokens"]))
            derived.problems += spelled_problems(report["tokens"], (inputs.record.config or {}).get("prompt"))
        elif len(traced := traced_tokens(report)) > 1:
            derived.problems.append(f"trace.json: its traces ran on different numbers of tokens, {traced}")
        elif traced:
            derived.put(("config", "tokens"), traced[0])
        results = {g.id: g.measured for g in inputs.record.gates if isinstance(g.measured, dict)}
        wanted = {gate_id for gate_id in results if gate_id not in inputs.stale}
        mode = report.get("mode")
        _options_derived(inputs, derived, report)
        config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
        derived.problems += [f"trace.json: {p}" for p in site_dtype_problems(report, config)]
        if mode == "ablation":
            derived.problems += [f"trace.json: {p}" for p in ablation_site_problems(report)]
        if mode == "ablation" and "GATE-TRACE-003" in wanted:
            derived.gate("GATE-TRACE-003", _ablation_reported(report), optional=True)
            derived.gate("GATE-TRACE-003", _ablation_asked(report, config), optional=True)
        if mode in ("bisect", "compare") and "GATE-TRACE-003" in wanted:
            asked = {"atol_asked": config.get("atol"), "rtol_asked": config.get("rtol")}
            tolerances = {"site_tolerances": judged_tolerances(report)}
            derived.gate("GATE-TRACE-003", asked | tolerances, optional=True)
            if "margins_reported" in results["GATE-TRACE-003"] and "comparisons" in report:
                derived.gate("GATE-TRACE-003", {"margins_reported": reported_margins(report)})
        if mode in ("patch", "patch-sweep") and "GATE-PATCH-002" in wanted:
            recorded = _patch_recorded(report)
            derived.gate("GATE-PATCH-002", recorded, optional=True)
            if "grid_cells" in recorded:  # check asked: the cells trace.json keeps, on its tokens
                tokens = report.get("tokens")
                asked = {"asked_cells": recorded["grid_cells"], "asked_tokens": config.get("tokens")}
                if isinstance(tokens, list) and tokens:
                    asked["asked_tokens"] = len(tokens)
                derived.gate("GATE-PATCH-002", asked, optional=True)
            derived.problems += unwritten_recovery_problems(results["GATE-PATCH-002"])
        sites = (report.get("trace") or {}).get("sites")
        if "GATE-TRACE-002" in wanted:
            config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
            _selection_derived(derived, results["GATE-TRACE-002"], report, config)
        if isinstance(sites, list) and "GATE-TRACE-002" in wanted:
            _statistics_recorded(derived, results["GATE-TRACE-002"], sites)
            _identity_references(derived, results["GATE-TRACE-002"], sites)
        if mode in ("patch", "patch-sweep"):
            _patch_positions(derived, report, (inputs.record.config or {}).get("patch_positions"))
            patched = [r.get("site") for r in report.get("per_layer") or [] if isinstance(r, dict)]
            if patched:  # the sites its grid patched, one per_layer row each (round-11 audit Y24)
                derived.put(("config", "patch_sites"), patched, optional=True)
        if mode == "ablation":
            derived.problems += [
                f"trace.json: {p}" for p in logit_count_problems(report.get("logits"), config)
            ]
        derived.problems += statistics_problems(report)
        if mode == "single" and isinstance(sites, list):
            limits = inputs.spec.gates["GATE-TRACE-003"].threshold_values
            revision = _judged_revision(inputs, "GATE-TRACE-003")
            problems = single_trace_problems(report, sites, limits, revision)
            derived.problems += [f"trace.json: {p}" for p in problems]
            if "GATE-TRACE-003" in wanted:
                _anomalies_measured(derived, report, sites)
        elif mode in ("tuned-lens", "logit-lens"):
            derived.problems += [f"trace.json: {p}" for p in lens_problems(report)]
            derived.problems += [f"trace.json: {p}" for p in lens_mode_problems(mode, config)]
            readings = [r for r in report.get("readings") or [] if isinstance(r, dict)]
            if "GATE-LENS-005" in wanted and len(readings) > 1:
                at = ("gates", "GATE-LENS-005", "measured", "sites")
                derived.put(at, lens_stream_sites(readings), optional=True)
            if "GATE-LENS-006" in wanted:  # the KLs, entropies and top tokens it held are the ones shown
                for key, field in (
                    ("reading_kl", "kl"),
                    ("reading_entropy", "entropy"),
                    ("reading_top", "top"),
                ):
                    at = ("gates", "GATE-LENS-006", "measured", key)
                    derived.put(at, [r.get(field) for r in readings], optional=True)
        elif mode == "lens-train":
            _lens_train_measured(derived, inputs.record.config, results, wanted, report)
        tokens = report.get("tokens")
        if isinstance(tokens, list) and tokens:
            derived.problems += element_problems(results, wanted, len(tokens), report)
    return derived


def _options_derived(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> None:
    """The config values of options whose consumed value trace.json shows: the table's statistic
    (`stat`, from 1.32.0), a lens's read position, a patch's target and foil ids (its metric). A
    record before 1.32.0 has no config.stat or config.position."""
    older = version_key(inputs.record.spec.version) < (1, 32, 0)
    if "stat" in report:
        derived.put(("config", "stat"), report["stat"], optional=older)
    if report.get("mode") in ("tuned-lens", "logit-lens") and "position" in report:
        derived.put(("config", "position"), report["position"], optional=older)
    metric = report.get("metric")
    if report.get("mode") in ("patch", "patch-sweep") and isinstance(metric, dict):
        derived.put(("config", "target"), metric.get("target"))
        derived.put(("config", "foil"), metric.get("foil"))


# The path each kept trace of a report ran on (paths.A, paths.B): a single trace and both sides of
# an ablation are path A's.
TRACE_PATH = {"trace": "A", "A": "A", "B": "B", "intact": "A", "ablated": "A"}
# A described path, `LABEL (backend, dtype)` or, from a dump, `LABEL (backend, dtype, device)`.
PATH_RE = re.compile(r"\((?P<backend>[\w-]+), (?P<dtype>\w+)(?:, [\w:]+)?\)$")


def described_path(described: Any) -> dict[str, str] | None:
    """The backend and dtype a described path names, None where it names none."""
    found = PATH_RE.search(described) if isinstance(described, str) else None
    return None if found is None else found.groupdict()


def reported_margins(report: dict[str, Any]) -> dict[str, Any]:
    """GATE-TRACE-003's check margins held the minimum tolerances trace.json reports of each compared
    site (the shadow bisection's under --shadow: it ran last, and the record keeps the last one's):
    site → its min_atol and min_rtol, as strict JSON keeps them."""
    rows = report.get("shadow") or report.get("comparisons") or []
    return {
        row.get("name"): {"min_atol": row.get("min_atol"), "min_rtol": row.get("min_rtol")}
        for row in rows
        if isinstance(row, dict)
    }


def site_dtype_problems(report: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Every site of a kept trace holds the dtype of the path it ran on (paths.A for a single trace
    or an ablation, paths.B for B's): a path described in another dtype than its forward ran in
    (round-8 R83: --dtype bf16 traced in fp32) contradicts its own sites. A bisection's trace.json
    describes no paths: there the record's config.path_a / path_b, the paths the command line asked
    for, are the ones (round-12 R211: `--dtype-b bf16` run in fp16 went unchecked)."""
    paths = report.get("paths") if isinstance(report.get("paths"), dict) else {}
    problems = []
    for label in _kept_sites(report):
        path_label = TRACE_PATH.get(label, "")
        described = paths.get(path_label, config.get(f"path_{path_label.lower()}"))
        if described is None and report.get("mode") == "bisect":
            problems.append(f"the {label} trace's path is described neither in trace.json nor in the config")
        if described is None:
            continue
        path = described_path(described)
        want = PATH_DTYPES.get(path["dtype"]) if path is not None else None
        if want is None:
            problems.append(f"path {described!r} names no dtype a trace runs in")
            continue
        sites = _kept(report)[label].get("sites") or []
        found = sorted({str(site.get("dtype")) for site in sites if isinstance(site, dict)} - {want})
        if found:
            problems.append(
                f"the {label} trace's sites hold {', '.join(found)}, but its path {described!r} is {want}"
            )
    return problems


# The sites of a trace that hold one row per prompt token: (batch, tokens, ...).
TOKEN_ROW_SITES = ("embed", "logits")


def traced_tokens(report: dict[str, Any]) -> list[int]:
    """The token counts the traced forwards ran on, one per distinct count: the token axis of the
    embedding or the logits in each trace the report keeps (config.tokens restates it, and
    GATE-TRACE-003's site counts are tokens × width). Empty when no such site was kept."""
    traces = [report.get("trace"), *(report.get("traces") or {}).values()]
    return sorted(
        {
            site["shape"][1]
            for trace in traces
            if isinstance(trace, dict)
            for site in trace.get("sites") or []
            if isinstance(site, dict)
            and site.get("name") in TOKEN_ROW_SITES
            and isinstance(site.get("shape"), list)
            and len(site["shape"]) >= 2
        }
    )


def spelled_problems(tokens: list[Any], prompt: Any) -> list[str]:
    """trace.json's tokens are each prompt token decoded on its own: together they spell the prompt
    the record states (where every piece decodes whole: a byte of a character cut across tokens
    decodes to U+FFFD, and then only their count is held)."""
    if not isinstance(prompt, str) or not all(isinstance(t, str) for t in tokens):
        return []
    spelled = "".join(tokens)
    if spelled == prompt or "\ufffd" in spelled:
        return []
    return [f"trace.json: its tokens spell {spelled!r}, but config.prompt is {prompt!r}"]


def _kept(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each trace trace.json keeps, by label (`trace`, or A/B, intact/ablated)."""
    kept = {"trace": report.get("trace"), **(report.get("traces") or {})}
    return {str(label): trace for label, trace in kept.items() if isinstance(trace, dict)}


def _kept_sites(report: dict[str, Any]) -> dict[str, list[Any]]:
    """The site names each trace trace.json keeps shows, by label."""
    return {
        label: [site.get("name") for site in trace.get("sites") or [] if isinstance(site, dict)]
        for label, trace in _kept(report).items()
    }


def _identity_references(derived: Derivation, measured: dict[str, Any], sites: list[Any]) -> None:
    """GATE-TRACE-002's identities are measured against the traced site (round-9 ledger audit X70):
    each identity's `ref_absmax`, the largest magnitude of the site's recomputation, lies within the
    identity's own `max_abs_diff` of the absmax trace.json's stats hold of the traced site, since
    two tensors' largest magnitudes differ by at most their largest difference. On CPU the two are
    bit for bit the same and the bound is equality; on CUDA the recomputation may round another way
    (the H100 reference run's q, k and v differed in their last float32 bit), within that bound.
    An identity checked on a sample of its rows (GATE-TRACE-002 rev 6: `rows_checked` < `rows`) saw
    the recomputation of those rows only, whose largest magnitude is at most the site's: there the
    bound is one-sided, ref_absmax ≤ the site's absmax + max_abs_diff."""
    identities = measured.get("identities")
    absmax = {
        s["name"]: s["stats"]["absmax"]
        for s in sites
        if isinstance(s, dict) and isinstance(s.get("stats"), dict) and "absmax" in s["stats"]
    }
    for name, identity in (identities if isinstance(identities, dict) else {}).items():
        if not (isinstance(identity, dict) and "ref_absmax" in identity and name in absmax):
            continue
        stated, traced, apart = identity["ref_absmax"], absmax[name], identity.get("max_abs_diff")
        sampled = _sampled(identity.get("rows_checked"), identity.get("rows"))
        if all(finite_number(v) for v in (stated, traced, apart)) and (
            0 <= stated <= traced + apart if sampled else abs(stated - traced) <= apart
        ):
            continue
        derived.put(("gates", "GATE-TRACE-002", "measured", "identities", name, "ref_absmax"), traced)


def _patch_positions(derived: Derivation, report: dict[str, Any], stated: Any) -> None:
    """config.patch_positions is what the patch ran at (stack.cli.trace): the positions trace.json's
    layers were patched at, which a sweep (every position) states as "every" (an older stack listed
    them; `stated`, the record's, says which form it wrote) (round-9 ledger audit X49)."""
    layers = [line for line in report.get("per_layer") or [] if isinstance(line, dict)]
    positions = sorted({p for line in layers for p in line.get("positions") or []})
    if report.get("mode") == "patch-sweep" and not isinstance(stated, list):
        derived.put(("config", "patch_positions"), "every", optional=True)
    elif positions:
        derived.put(("config", "patch_positions"), positions, optional=True)


def _selection_derived(
    derived: Derivation, measured: dict[str, Any], report: dict[str, Any], config: dict[str, Any]
) -> None:
    """GATE-TRACE-002's site count is the forward's (every site of the model, `traced` from rev 4),
    never trace.json's, which keeps only what --layers and --sites select; a record without
    `traced` and with no selection keeps every site, so trace.json's count is the model's. Check
    selection's sites shown are trace.json's, and those selected contracts.selection.trace_sites's
    of the traced sites by config.layers and config.sites."""
    at = ("gates", "GATE-TRACE-002", "measured")
    kept = _kept_sites(report)
    traced = measured.get("traced")
    chosen_by = {key: config.get(key) for key in ("layers", "sites")}
    if any(value is not None and not isinstance(value, str) for value in chosen_by.values()):
        derived.problems += [
            f"config.{key} is {value!r}, not the text of its --{key} option: its selection is not derived"
            for key, value in chosen_by.items()
            if value is not None and not isinstance(value, str)
        ]
    elif isinstance(traced, list):
        derived.put((*at, "sites"), len(traced), optional=True)
        derived.put((*at, "shown"), kept, optional=True)
        depths = [t["n_layers"] for t in _kept(report).values() if isinstance(t.get("n_layers"), int)]
        chosen = trace_sites(
            [str(n) for n in traced], config.get("layers"), config.get("sites"), depths[0] if depths else 0
        )
        derived.put((*at, "selected"), chosen, optional=True)
    elif config.get("layers") is None and config.get("sites") is None and kept.get("trace") is not None:
        derived.put((*at, "sites"), len(kept["trace"]), optional=True)


def _sampled(checked: Any, rows: Any) -> bool:
    """Whether a check stated to have read `checked` of `rows` rows read fewer than all."""
    return isinstance(checked, int) and isinstance(rows, int) and checked < rows


def _statistics_recorded(derived: Derivation, measured: dict[str, Any], sites: list[Any]) -> None:
    """GATE-TRACE-002's check statistics judged the statistics trace.json holds of each site it
    sampled (from 1.30.0): its recorded ones are those of the same sites there. A sampled site that
    --layers or --sites left out of the report (the `selected` sites say which) is not there. From
    rev 6 a site checked on a slice of its rows (`stats_rows`: [checked, rows], checked < rows) has
    the slice's statistics recorded, which lie within the site's: min and max within the site's,
    absmax and the counts at most its (`slice_problems`)."""
    sampled = measured.get("stats_recorded")
    if not isinstance(sampled, dict):
        return
    held = {site.get("name"): site.get("stats") for site in sites if isinstance(site, dict)}
    shown = measured.get("selected")
    slices = measured.get("stats_rows") if isinstance(measured.get("stats_rows"), dict) else {}
    for name in (n for n in sampled if not isinstance(shown, list) or n in shown or n in held):
        at = ("gates", "GATE-TRACE-002", "measured", "stats_recorded", name)
        if _sampled(*(slices.get(name) or [None, None])):
            derived.problems += [
                f"gates[GATE-TRACE-002].measured.stats_recorded.{name}: {problem}"
                for problem in slice_problems(sampled[name], held.get(name))
            ]
        else:
            derived.put(at, strict(held.get(name) or {}))


def slice_problems(part: Any, whole: Any) -> list[str]:
    """What the statistics of a slice of a site say against the site's own: its min and max lie
    within the site's, its absmax and its count, NaN, Inf and zero counts are at most the site's."""
    if not (isinstance(part, dict) and isinstance(whole, dict)):
        return ["the slice or its site has no statistics to hold it to"]
    a = {key: statistic_value(part.get(key)) for key in STATISTICS}
    b = {key: statistic_value(whole.get(key)) for key in STATISTICS}
    if None in a.values() or None in b.values():
        return ["its statistics or its site's are not numbers"]
    low = {"min"}  # the one bound from below; a NaN (a site with NaN) bounds nothing
    return [
        f"the slice's {key} {a[key]!r} lies outside its site's ({b[key]!r})"
        for key in ("min", "max", "absmax", "count", "nan", "inf", "zero")
        if not (math.isnan(a[key]) or math.isnan(b[key]))
        and not (a[key] >= b[key] if key in low else a[key] <= b[key])
    ]


def statistics_problems(report: dict[str, Any]) -> list[str]:
    """Every site of every trace trace.json keeps, its statistics against each other (absmax is
    max(−min, max) exactly, min ≤ max, the counts within the count: contracts.site_statistics), as
    GATE-TRACE-002's check statistics holds the sites it sampled."""
    traces = [report.get("trace"), *(report.get("traces") or {}).values()]
    problems = []
    for trace in (t for t in traces if isinstance(t, dict)):
        for site in (s for s in trace.get("sites") or [] if isinstance(s, dict)):
            stats = site.get("stats")
            found = inconsistencies(stats) if isinstance(stats, dict) else ["no statistics"]
            problems += [f"trace.json: site {site.get('name')}: {p}" for p in found]
    return problems


# A patching cell's fields the recovery check keys and reads by: (key, type, what it must be).
CELL_FIELDS = (
    ("site", str, "a site's name"),
    ("position", int, "a position"),
    ("written", list, "a list of the writes made"),
)


def unwritten_recovery_problems(measured: dict[str, Any]) -> list[str]:
    """A patching cell whose forward overwrote no position is the corrupted forward itself: its
    patched score is the corrupted score and it recovers nothing. What GATE-PATCH-002's cells say
    was written, against what its recovery says was scored."""
    cells, scored = measured.get("cells"), measured.get("recovery_cells")
    corrupted = measured.get("recovery_corrupted")
    if not isinstance(cells, list) or not isinstance(scored, list):
        return []
    unread = [
        f"gates[GATE-PATCH-002].measured.{name}[{at}].{key} is {row.get(key)!r}, not {what}"
        for name, rows in (("cells", cells), ("recovery_cells", scored))
        for at, row in enumerate(rows)
        if isinstance(row, dict)
        for key, kind, what in CELL_FIELDS
        if key in row and not isinstance(row[key], kind)
    ]
    if unread:
        return unread
    by_cell = {(row.get("site"), row.get("position")): row for row in scored if isinstance(row, dict)}
    problems = []
    for cell in (c for c in cells if isinstance(c, dict)):
        if any(isinstance(w, dict) and w.get("changed") for w in cell.get("written") or []):
            continue
        where = f"{cell.get('site')} at position {cell.get('position')}"
        row = by_cell.get((cell.get("site"), cell.get("position")))
        if row is not None and (row.get("patched") != corrupted or row.get("recovered") != 0):
            problems.append(
                f"gates[GATE-PATCH-002]: {where} wrote nothing, yet scored {row.get('patched')!r} (the "
                f"corrupted run {corrupted!r}) and recovered {row.get('recovered')!r}"
            )
    return problems


# The lens training's SGD hyper-parameters besides the rate, as its record's config names them
# (stack.lens.train.LensTraining.stated_hyperparameters).
LENS_HYPERPARAMETERS = ("weight_decay", "momentum", "nesterov")


def _lens_train_measured(
    derived: Derivation, config: Any, results: dict[str, Any], wanted: set[str], report: dict[str, Any]
) -> None:
    """What a lens-train record's gates restate of trace.json and of its config: the held-out rows
    (GATE-LENS-003's, and GATE-LENS-006's reported ones) are trace.json's per_layer, and the losses
    GATE-LENS-006's check objective held (first and last step) its losses; GATE-LENS-002's
    scheduled rates are the lens schedule of the config's lr and steps (contracts.schedule), and the
    hyper-parameters its check hyperparameters held every step to the config's weight decay,
    momentum and Nesterov flag, and the clip norm its check clip held every step's gradients to the
    config's clip_norm; GATE-LENS-006's stated held-out windows are the config's heldout_batches ×
    batch_size; and GATE-LENS-001 compared the logits of every lens site
    (GATE-LENS-005's sites, the embedding and each block) on the first batch, sites × batch_size ×
    seq_len × vocabulary elements, the vocabulary being what GATE-LENS-005's one site of a batch of
    that shape holds."""
    for gate_id in ("GATE-LENS-003", "GATE-LENS-006"):
        if gate_id in wanted:
            derived.put(("gates", gate_id, "measured", "layers"), report.get("per_layer"), optional=True)
    config = config if isinstance(config, dict) else {}
    lr, steps, batch, seq_len = (config.get(k) for k in ("lr", "steps", "batch_size", "seq_len"))
    losses = report.get("losses")
    if "GATE-LENS-006" in wanted and isinstance(losses, dict) and whole(steps) and steps > 0:
        first_last = [losses.get("first"), losses.get("last")][: min(steps, 2)]
        derived.put(("gates", "GATE-LENS-006", "measured", "objective_losses"), first_last, optional=True)
    if "GATE-LENS-006" in wanted and whole(steps) and steps > 0:  # the first step and the last (Y86)
        derived.put(("gates", "GATE-LENS-006", "measured", "objective_steps"), sorted({1, steps}), True)
    if "GATE-LENS-002" in wanted and real(lr) and whole(steps) and steps > 0:
        derived.put(("gates", "GATE-LENS-002", "measured", "scheduled_lrs"), linear_decay(lr, steps), True)
    if "GATE-LENS-002" in wanted:  # the hyper-parameters its check held every step to are the config's
        stated = {key: config.get(key) for key in LENS_HYPERPARAMETERS}
        derived.put(("gates", "GATE-LENS-002", "measured", "stated_hyperparameters"), stated, optional=True)
        derived.put(("gates", "GATE-LENS-002", "measured", "stated_clip_norm"), config.get("clip_norm"), True)
    heldout = config.get("heldout_batches")
    if "GATE-LENS-006" in wanted and whole(heldout, batch):  # the count its check windows held the set to
        stated_windows = heldout * batch
        derived.put(("gates", "GATE-LENS-006", "measured", "heldout_windows_stated"), stated_windows, True)
    read = results.get("GATE-LENS-005") or {}
    sites, elements = read.get("sites"), read.get("elements")
    if not ("GATE-LENS-001" in wanted and isinstance(sites, list) and whole(elements, batch, seq_len)):
        return
    if batch * seq_len == 0 or elements % (batch * seq_len):
        derived.problems.append(
            f"gates[GATE-LENS-005].measured.elements is {elements}, not a whole vocabulary for each of "
            f"its batch_size {batch} × seq_len {seq_len} positions"
        )
        return
    derived.put(("gates", "GATE-LENS-001", "measured", "elements"), len(sites) * elements, optional=True)


def _anomalies_measured(derived: Derivation, report: dict[str, Any], sites: list[Any]) -> None:
    """GATE-TRACE-003's check `anomalies` judged what the report holds: the statistics every
    baseline read, the sites judged, and the anomalies named with their baselines' layers."""
    at = ("gates", "GATE-TRACE-003", "measured")
    named = [a for a in report.get("anomalies") or [] if isinstance(a, dict)]
    derived.put((*at, "site_stats"), report.get("site_stats"), optional=True)
    derived.put((*at, "sites_judged"), [s.get("name") for s in sites if isinstance(s, dict)], optional=True)
    derived.put(
        (*at, "anomalies_named"),
        [{"name": a.get("name"), "baseline_layers": a.get("baseline_layers")} for a in named],
        optional=True,
    )


def _stat(site: dict[str, Any], key: str) -> Any:
    return (site.get("stats") or {}).get(key)


def _nonfinite(site: dict[str, Any]) -> bool:
    held = [_stat(site, "nan"), _stat(site, "inf")]
    return any(isinstance(x, int | float) and x > 0 for x in held)


def _layer_of(name: Any) -> int | None:
    parts = str(name).split(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() else None


def _judged_revision(inputs: Inputs, gate_id: str) -> int:
    """The revision of `gate_id` the record was judged under (the spec's own where it judged none):
    a rule that changed is derived again as that revision had it."""
    held = [g.revision for g in inputs.record.gates if g.id == gate_id]
    return held[0] if held else inputs.spec.gates[gate_id].revision


def single_trace_problems(
    report: dict[str, Any], sites: list[Any], limits: Mapping[str, float | int], revision: int
) -> list[str]:
    """A single-path trace's summary from its own sites (stack.trace.modes.single): the sites holding
    NaN/Inf are exactly its non-finite producers and carriers, in forward order; each layer's row
    restates its `layers.i.output` statistics, its non-finite sites and its anomalies; a non-finite
    site of a block is an anomaly (GATE-TRACE-003 names a site that is not finite); its anomalies
    and baselines are those GATE-TRACE-003's rule gives from its sites' statistics under `limits`
    (`anomaly_problems`, by the rule of GATE-TRACE-003 `revision`, the one the record was judged
    under); the verdict is clean only without anomalies, and `first` is the first anomaly (or
    producer)."""
    sites = [site for site in sites if isinstance(site, dict)]
    problems = anomaly_problems(report, sites, limits, revision)
    held = [str(site.get("name")) for site in sites if _nonfinite(site)]
    listed = report.get("nonfinite") or {}
    named = [*(listed.get("producers") or []), *(listed.get("carriers") or [])]
    if sorted(map(str, named)) != sorted(held):
        problems.append(
            f"its sites holding NaN/Inf are {held}, but it names {named} as producers and carriers"
        )
    anomalies = [a for a in report.get("anomalies") or [] if isinstance(a, dict)]
    flagged = {str(a.get("name")) for a in anomalies}
    with_layer = {str(site.get("name")): site for site in sites if _layer_of(site.get("name")) is not None}
    for name in held:
        layer = _layer_of(name)
        kind = name.split(".", 2)[-1]
        elsewhere = [
            other
            for other, site in with_layer.items()
            if _layer_of(other) != layer and other.split(".", 2)[-1] == kind and _stat(site, "count")
        ]
        if layer is not None and elsewhere and _stat(with_layer[name], "count") and name not in flagged:
            problems.append(f"its site {name} holds NaN/Inf, but it is not among its anomalies")
    by_name = {str(site.get("name")): site for site in sites}
    rows = [row for row in report.get("per_layer") or [] if isinstance(row, dict)]
    for row in rows:
        i, output = row.get("layer"), by_name.get(f"layers.{row.get('layer')}.output")
        expected = {
            "nonfinite_sites": sum(1 for n in named if str(n).startswith(f"layers.{i}.")),
            "anomalies": [
                str(a.get("name")).split(".", 2)[-1] for a in anomalies if _layer_of(a.get("name")) == i
            ],
        }
        if output is not None:
            expected |= {"output_std": _stat(output, "std"), "output_absmax": _stat(output, "absmax")}
        for key, value in expected.items():
            if key in row and not same(row[key], value):
                problems.append(
                    f"per_layer[{i}].{key} is {_short(row[key])}, but its sites give {_short(value)}"
                )
    verdict, first = report.get("verdict"), report.get("first")
    if verdict != "nonfinite":
        want = ("anomaly", anomalies[0].get("name")) if anomalies else ("clean", None)
        if (verdict, first) != want:
            problems.append(
                f"its verdict is {verdict!r} (first {first!r}), but its anomalies give {want[0]!r}"
            )
    elif first not in (listed.get("producers") or [None])[:1]:
        problems.append(f"its verdict is nonfinite at {first!r}, but its first producer is another site")
    return problems


def anomaly_problems(
    report: dict[str, Any], sites: list[dict[str, Any]], limits: Mapping[str, float | int], revision: int
) -> list[str]:
    """GATE-TRACE-003's anomalies derived again from the report's own statistics: `site_stats`
    (what every baseline read: each block site of the trace; a report before spec 1.26.0 has none,
    and its sites, then every site, stand in) agree with its sites' statistics; each judged site's
    baseline (`baselines`, where kept) is over the layers the rule takes, never its own; and the
    anomalies it names are the judged sites the rule flags, in order (contracts.trace_anomaly)."""
    own = {str(site.get("name")): site.get("stats") for site in sites if isinstance(site.get("stats"), dict)}
    kept = report.get("site_stats")
    stats = kept if isinstance(kept, dict) else {n: v for n, v in own.items() if block_site(n)}
    if not all(isinstance(held, dict) for held in stats.values()):
        return ["its site_stats hold an entry that is no object of statistics"]
    problems = [
        f"site_stats[{name}] is {_short(stats[name])}, but its site's statistics say otherwise"
        for name in sorted(own.keys() & stats.keys())
        if any(not same(stats[name].get(key), own[name].get(key)) for key in ("count", "std", "nan", "inf"))
    ]
    if problems:
        return problems
    judged = site_baselines(stats, [str(site.get("name")) for site in sites], revision)
    listed = report.get("baselines")
    if isinstance(listed, list):
        given = [(str(b.get("name")), b.get("baseline_layers")) for b in listed if isinstance(b, dict)]
        wanted = [(b.name, list(b.baseline_layers)) for b in judged]
        if given != wanted:
            problems.append(
                f"its baselines are over layers {given}, but its sites' statistics give {wanted} "
                "(the same site in every other layer that saw something finite, never its own)"
            )
    flagged = [b.name for b in judged if judge("GATE-TRACE-003", b.measured(), limits)]
    named = [str(a.get("name")) for a in report.get("anomalies") or [] if isinstance(a, dict)]
    if named != flagged:
        problems.append(
            f"it names anomalies {named}, but GATE-TRACE-003's rule on its sites' statistics flags "
            f"{flagged} (each site's std against the median of the same site in the other layers)"
        )
    return problems


def lens_mode_problems(mode: Any, config: dict[str, Any]) -> list[str]:
    """`stack lens` reads with the tuned lens its --lens names and with the logit lens otherwise, and
    says which in its mode (stack/cli/lens.py): a mode the config's lens (held to the command line by
    tools/argv_record) contradicts is a reading restated as another (round-11 ledger audit Y11)."""
    if "lens" not in config:
        return []
    wanted = "logit-lens" if config["lens"] is None else "tuned-lens"
    if mode == wanted:
        return []
    return [f"its mode is {mode!r}, but config.lens is {config['lens']!r}: that reading is the {wanted}"]


def lens_stream_sites(readings: list[dict[str, Any]]) -> list[Any]:
    """GATE-LENS-005's sites, the residual stream a lens reading read: the site of every reading but
    the last (the input of each block) and, in place of the last (the logits), the stream leaving the
    last block, `layers.{n - 1}.output` of n blocks (stack.lens.residual.stream_sites; round-11 audit
    Y100: a site dropped from the sites stated)."""
    return [*(r.get("site") for r in readings[:-1]), f"layers.{len(readings) - 2}.output"]


def logit_count_problems(logits: Any, config: dict[str, Any]) -> list[str]:
    """The logits an ablation compared are its tokens × the vocabulary: trace.json's logits.elements is
    the product of the shape it states, whose positions are the record's tokens (round-11 audit Y64:
    the elements restated)."""
    if not isinstance(logits, dict):
        return []
    shape, elements, tokens = logits.get("shape_a"), logits.get("elements"), config.get("tokens")
    if not (isinstance(shape, list) and len(shape) >= 2 and all(whole(n) for n in shape)):
        return [f"logits.shape_a is {shape!r}, no shape of (…, tokens, vocabulary) to count its elements by"]
    problems = []
    if logits.get("shape_b") not in (None, shape):
        problems.append(f"logits.shape_b is {logits.get('shape_b')!r}, but shape_a {shape!r}")
    if whole(tokens) and shape[-2] != tokens:
        problems.append(f"logits.shape_a is {shape!r}, but config.tokens is {tokens}")
    if elements != math.prod(shape):
        problems.append(
            f"logits.elements is {elements!r}, but its shape {shape!r} holds {math.prod(shape)} "
            f"({shape[-2]} tokens × vocabulary {shape[-1]})"
        )
    return problems


def lens_problems(report: dict[str, Any]) -> list[str]:
    """A lens trace's per-layer summary restates its readings but the last (the final layer, what
    every other is compared with; stack.lens.report.lens_result): each layer's site, KL and entropy
    per position, and the probability of its top token (the first of each position's top list)."""
    rows = [row for row in report.get("per_layer") or [] if isinstance(row, dict)]
    readings = [r for r in report.get("readings") or [] if isinstance(r, dict)][:-1]
    if not readings:
        return []
    if len(rows) != len(readings):
        return [f"per_layer has {len(rows)} layers, but its readings {len(readings)} before the final one"]
    problems = []
    for row, reading in zip(rows, readings, strict=True):
        expected = {key: reading.get(key) for key in ("layer", "site", "kl", "entropy")}
        top = reading.get("top")
        if isinstance(top, list) and all(isinstance(t, list) and t and isinstance(t[0], list) for t in top):
            expected["top1_prob"] = [t[0][1] for t in top]
        for key, value in expected.items():
            if key in row and not same(row[key], value):
                problems.append(
                    f"per_layer[{row.get('layer')}].{key} is {_short(row[key])}, but its reading gives "
                    f"{_short(value)}"
                )
    return problems


# The gates that compare the model's logits over a trace's tokens element by element.
LOGIT_ELEMENT_GATES = ("GATE-LENS-005", "GATE-PATCH-001", "GATE-PATCH-002")


def element_problems(
    results: dict[str, Any], wanted: set[str], tokens: int, report: dict[str, Any]
) -> list[str]:
    """The logits compared over a trace's tokens are tokens × vocabulary elements: each gate's
    `elements` a whole multiple of the tokens, the same vocabulary for every such gate, and more
    entries than any token id its readings name."""
    vocab: dict[str, Any] = {}
    for gate_id in LOGIT_ELEMENT_GATES:
        elements = (results.get(gate_id) or {}).get("elements") if gate_id in wanted else None
        if isinstance(elements, int) and not isinstance(elements, bool):
            vocab[gate_id] = elements / tokens
    problems = [
        f"gates[{g}].measured.elements is {int(v * tokens)}, not a whole multiple of its {tokens} tokens"
        for g, v in vocab.items()
        if v != int(v)
    ]
    if len(set(vocab.values())) > 1:
        problems.append(f"its logit-comparing gates count different vocabularies: {vocab}")
    ids = [
        entry[0]
        for reading in report.get("readings") or []
        if isinstance(reading, dict)
        for position in reading.get("top") or []
        if isinstance(position, list)
        for entry in position
        if isinstance(entry, list) and entry and isinstance(entry[0], int)
    ]
    if ids and any(v <= max(ids) for v in vocab.values()):
        problems.append(
            f"its elements count a vocabulary {sorted(vocab.values())} no larger than token id {max(ids)}"
        )
    return problems


MANIFEST = "manifest.json"
# What GATE-DATA-013 and GATE-DATA-015 measure of each source's filter report; the prepare that judges
# them and the derivation from its manifest both shape the values here.
COVERAGE_KEYS = ("filters", "pre_clean", "waiver", "documents_in", "canaries")
SHARE_KEYS = ("documents_in", "dropped", "examples", "filters", "scripts")


def per_source(reports: dict[str, Any], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each source's report cut to `keys` (a key a report lacks is None)."""
    return {name: {key: row.get(key) for key in keys} for name, row in reports.items()}


# Since this spec version a prepare's manifest keeps each source's byte account (GATE-DATA-014's
# check bytes), and its record holds the round trip (GATE-DATA-007) and the stored keys' counts
# (GATE-DATA-005's check stored) the manifest's counts give again.
ACCOUNTS_SINCE = "1.30.0"


def _prepare_since_1_30(inputs: Inputs, derived: Derivation, manifest: dict[str, Any]) -> None:
    """What a prepare's manifest and config give again of the checks of spec 1.30.0: each source's
    byte account (GATE-DATA-014 bytes), the settings the filter rules were judged by (GATE-DATA-013
    rules), the data's tokenizer and held-out documents (GATE-DATA-007 round_trip), and the
    documents of both splits and of the held-out one (GATE-DATA-005 stored)."""
    results = {g.id: g.measured for g in inputs.record.gates if g.id not in inputs.stale}

    def judged(gate_id: str, key: str) -> bool:
        measured = results.get(gate_id)
        return isinstance(measured, dict) and key in measured

    if judged("GATE-DATA-014", "accounts"):
        derived.put(
            ("gates", "GATE-DATA-014", "measured", "accounts"),
            manifest.get("accounting"),
            since=ACCOUNTS_SINCE,
        )
    settings = (inputs.record.config or {}).get("filter_settings") or {}
    if judged("GATE-DATA-013", "rules") and isinstance(settings, dict):
        rules = results["GATE-DATA-013"]["rules"]
        stated = rules.get("settings") if isinstance(rules, dict) else None
        for section, values in (stated or {}).items():
            for key in values if isinstance(values, dict) else ():
                where = ("gates", "GATE-DATA-013", "measured", "rules", "settings", section, key)
                derived.put(where, (settings.get(section) or {}).get(key), since=ACCOUNTS_SINCE)
    share = share_measured(manifest)
    if judged("GATE-DATA-007", "round_trip_documents"):
        where = ("gates", "GATE-DATA-007", "measured")
        derived.put(
            (*where, "tokenizer"), (manifest.get("tokenizer") or {}).get("name"), since=ACCOUNTS_SINCE
        )
        if share is not None:
            derived.put((*where, "heldout_documents"), share["heldout_documents"], since=ACCOUNTS_SINCE)
    if judged("GATE-DATA-005", "stored_documents") and share is not None:
        where = ("gates", "GATE-DATA-005", "measured")
        derived.put((*where, "stored_documents"), share["split_documents"], since=ACCOUNTS_SINCE)
        derived.put((*where, "stored_heldout"), share["heldout_documents"], since=ACCOUNTS_SINCE)


def leak_sources(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """GATE-DATA-012's `sources` (checked after reading): each source's filters, its documents in and
    its leak canaries planted and dropped, from its filter report."""
    return {
        name: {
            "filters": report.get("filters"),
            "documents_in": report.get("documents_in"),
            "leak": (report.get("canaries") or {}).get("leak"),
        }
        for name, report in reports.items()
    }


def canary_problems(canaries: Any, leak_settings: Any) -> list[str]:
    """GATE-DATA-012's canaries against the cases the config's `filter_settings.leak` plants
    (contracts.leak_canaries, what stack's FilterRunner.canary_results judges): each transcript
    case in every turn format the settings list and as a chat example, each plain document once,
    each with the must_drop its case has. Rows left out (a case, or a format taken out) are missing,
    not passed; a row of no case or format the settings plant, or with another must_drop, is
    restated. Settings the cases cannot be rebuilt from are a problem too: the check fails closed."""
    if not isinstance(canaries, list):
        return []
    try:
        wanted = canary_rows(leak_settings)
    except (KeyError, TypeError, ValueError, AttributeError):
        return [
            "config.filter_settings.leak is not leak settings: GATE-DATA-012's canaries cannot be rebuilt"
        ]
    where = "gates[GATE-DATA-012].measured.canaries"
    unnamed = [
        f"{where}[{at}].name is {row.get('name')!r}, not a row's name: its canaries are not held"
        for at, row in enumerate(canaries)
        if isinstance(row, dict) and not isinstance(row.get("name"), str)
    ]
    if unnamed:
        return unnamed
    rows = {row.get("name"): row.get("must_drop") for row in canaries if isinstance(row, dict)}
    missing = sorted(set(wanted) - set(rows))
    unplanted = sorted(str(name) for name in set(rows) - set(wanted))
    restated = sorted(name for name in set(wanted) & set(rows) if rows[name] is not wanted[name])
    problems = []
    for found, what in (
        (missing, "lack {n} of the rows config.filter_settings.leak plants"),
        (unplanted, "judge {n} row(s) config.filter_settings.leak plants no case or format for"),
        (restated, "restate must_drop of {n} row(s) against their case"),
    ):
        if found:
            listed = ", ".join(found[:4]) + (", …" if len(found) > 4 else "")
            problems.append(f"{where} {what.format(n=len(found))} ({listed})")
    return problems


# Since this spec version a prepare's config states the seed and val_fraction it handed the split
# (every prepare path); the manifest it wrote keeps the ones the split was drawn with.
SPLIT_DRAW, SPLIT_DRAW_SINCE = ("seed", "val_fraction"), "1.32.0"


@derives("prepare")
def prepare_record(inputs: Inputs) -> Derivation:
    """The per-source filter reports and totals from the DATA_DIR's manifest (cited since 1.7.0),
    GATE-DATA-013/014/015's per-source values from those reports, GATE-DATA-005's share of
    documents held out (where the record judged it) from its counts per split and val_fraction,
    the values of spec 1.30.0's checks the manifest and config give (`_prepare_since_1_30`), and
    (since 1.32.0) config.seed and config.val_fraction as the manifest's, the draw the split was
    made with: tools/argv_record holds the config to the command line, so a prepare that split
    with another seed or share than the one asked for contradicts one of the two (audit R91, R99);
    and (since 1.33.0) every other stated option the manifest decides (`prepare_options`)."""
    derived = Derivation()
    if not inputs.artifacts.has(MANIFEST):
        if inputs.record.run.status is RunStatus.COMPLETED:
            derived.missing.append((MANIFEST, PER_ITEM_SINCE))
        filters = inputs.record.metrics.get("filters")
    else:
        manifest = report_of(inputs, derived, MANIFEST, PER_ITEM_SINCE) or {}
        digest = next(a.sha256 for a in inputs.record.artifacts if a.path == MANIFEST)
        derived.put(("data", "manifest_sha256"), digest)
        filters = manifest.get("filters", {})
        derived.put(("metrics", "filters"), filters)
        derived.put(("metrics", "totals"), manifest.get("totals"))
        derived.problems += [f"{MANIFEST}: {p}" for p in manifest_problems(manifest)]
        tokenizer = (manifest.get("tokenizer") or {}).get("sha256")
        if inputs.record.data is not None and isinstance(tokenizer, str):
            derived.put(("data", "tokenizer_sha256"), tokenizer)
        results = {g.id: g.measured for g in inputs.record.gates if g.id not in inputs.stale}
        derived.problems += sft_gate_problems(results, manifest, MANIFEST)
        share, split = share_measured(manifest), results.get("GATE-DATA-005")
        if share is not None and isinstance(split, dict) and all(key in split for key in share):
            derived.gate("GATE-DATA-005", share)
        duplicates = manifest.get("duplicate_documents")
        if share is not None and isinstance(split, dict) and "split_contents" in split:
            # The index holds one row per document written; its copies are the manifest's duplicates.
            contents = share["split_documents"] - duplicates if isinstance(duplicates, int) else None
            derived.gate("GATE-DATA-005", {"split_contents": contents})
        _prepare_since_1_30(inputs, derived, manifest)
        for key in SPLIT_DRAW:  # the split's draw as the prepare made it (contracts.split.held_out)
            derived.put(("config", key), manifest.get(key), since=SPLIT_DRAW_SINCE)
        if version_key(inputs.record.spec.version) >= version_key(OPTIONS_SINCE):
            prepare_options(inputs, derived, manifest)
        if share is not None and isinstance(split, dict) and "assigned_documents" in split:
            # Every document written was assigned a split as it was written (stack.data.split.Assigned).
            derived.gate("GATE-DATA-005", {"assigned_documents": share["split_documents"]})
    if not isinstance(filters, dict):
        return derived
    current = {g for g in ("GATE-DATA-013", "GATE-DATA-014", "GATE-DATA-015") if g not in inputs.stale}
    leaks = next((g.measured for g in inputs.record.gates if g.id == "GATE-DATA-012"), None)
    if "GATE-DATA-012" not in inputs.stale and isinstance(leaks, dict) and "sources" in leaks:
        derived.put(("gates", "GATE-DATA-012", "measured", "sources"), leak_sources(filters))
    if "GATE-DATA-012" not in inputs.stale and isinstance(leaks, dict):
        settings = ((inputs.record.config or {}).get("filter_settings") or {}).get("leak")
        derived.problems += canary_problems(leaks.get("canaries"), settings)
    if "GATE-DATA-013" in current:
        derived.put(("gates", "GATE-DATA-013", "measured", "sources"), per_source(filters, COVERAGE_KEYS))
        settings = ((inputs.record.config or {}).get("filter_settings") or {}).get("dedup")
        dedup = (next((g.measured for g in inputs.record.gates if g.id == "GATE-DATA-013"), None) or {}).get(
            "dedup"
        )
        if isinstance(settings, dict) and isinstance(dedup, dict):  # the settings its rechecks judged by
            for key in ("shingle_bytes", "permutations", "min_jaccard"):
                derived.put(("gates", "GATE-DATA-013", "measured", "dedup", key), settings.get(key))
    if "GATE-DATA-015" in current:
        derived.put(("gates", "GATE-DATA-015", "measured", "sources"), per_source(filters, SHARE_KEYS))
    if "GATE-DATA-014" in current:
        counts = per_source(filters, ("documents_in", "documents_out", "dropped"))
        for name, values in counts.items():
            for key, value in values.items():
                derived.put(("gates", "GATE-DATA-014", "measured", "sources", name, key), value)
        if inputs.artifacts.has(MANIFEST):
            manifest = inputs.artifacts.json(MANIFEST) or {}
            written = shard_documents(manifest)
            empty_log = (manifest.get("drop_log") or {}).get("bytes") == 0
            for name in counts:
                where = ("gates", "GATE-DATA-014", "measured", "sources", name)
                if written is not None:
                    derived.put((*where, "written"), written.get(name, 0))
                if empty_log:
                    derived.put((*where, "logged"), {})
    return derived


def shard_documents(manifest: dict[str, Any]) -> dict[str, int] | None:
    """Documents written per source: the sum over its shards, both splits (None without shards).

    Fine-tuning data (a manifest with an `sft` block: chat, prompt-completion, prefs) packs its
    examples into one stream a shard, so a shard's `documents` counts streams; what the filters
    handed on there is the source's examples, `sources.NAME.documents`, which `stack prepare`
    judged GATE-DATA-014 with."""
    if isinstance(manifest.get("sft"), dict):
        sources = manifest.get("sources")
        if not isinstance(sources, dict):
            return None
        return {
            str(name): stats["documents"]
            for name, stats in sources.items()
            if isinstance(stats, dict) and isinstance(stats.get("documents"), int)
        }
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        return None
    written: Counter[str] = Counter()
    for shard in shards:
        if isinstance(shard, dict) and isinstance(shard.get("documents"), int):
            written[str(shard.get("source"))] += shard["documents"]
    return dict(written)


def shard_size_problems(shards: list[dict[str, Any]], dtype: Any) -> list[str]:
    """Each shard's bytes are a header and its tokens at the manifest's dtype (contracts.shard_layout)."""
    try:
        itemsize = np.dtype(dtype).itemsize if isinstance(dtype, str) else None
    except TypeError:
        return [f"dtype {dtype!r} is not a dtype of token ids"]
    return [
        f"shards {shard.get('path')}: {shard['tokens']} tokens of {itemsize} bytes take "
        f"{shard_bytes(shard['tokens'], itemsize)} bytes with the header, but it lists {shard['bytes']}"
        for shard in shards
        if itemsize is not None
        and isinstance(shard.get("tokens"), int)
        and isinstance(shard.get("bytes"), int)
        and shard["bytes"] != shard_bytes(shard["tokens"], itemsize)
    ]


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """A manifest against itself: each shard's bytes hold its tokens, each split's totals are the
    sums of its shards (stack.data.prepare adds them up so), each source's filters keep
    documents_in − Σ dropped, and an empty drop log (0 bytes) logged no drop."""
    problems = []
    shards = [s for s in manifest.get("shards") or [] if isinstance(s, dict)]
    problems += shard_size_problems(shards, manifest.get("dtype"))
    totals = manifest.get("totals")
    if shards and isinstance(totals, dict):
        for split, row in totals.items():
            mine = [s for s in shards if s.get("split") == split]
            summed = {key: sum(int(s.get(key) or 0) for s in mine) for key in ("tokens", "documents")}
            for key, value in summed.items():
                if isinstance(row, dict) and key in row and row[key] != value:
                    problems.append(
                        f"totals.{split}.{key} is {row[key]}, but its {split} shards hold {value}"
                    )
    empty_log = (manifest.get("drop_log") or {}).get("bytes") == 0
    for name, row in (manifest.get("filters") or {}).items():
        if not isinstance(row, dict) or not isinstance(row.get("dropped"), dict):
            continue
        dropped = sum(n for n in row["dropped"].values() if isinstance(n, int))
        counted = isinstance(row.get("documents_in"), int) and isinstance(row.get("documents_out"), int)
        if counted and row["documents_in"] - dropped != row["documents_out"]:
            problems.append(
                f"filters.{name}: {row['documents_in']} documents in less {dropped} dropped is not the "
                f"{row['documents_out']} it keeps"
            )
        if empty_log and dropped:
            problems.append(
                f"filters.{name} drops {dropped} document(s), but the drop log is empty (0 bytes)"
            )
    return problems


def sft_gate_problems(results: dict[str, Any], manifest: dict[str, Any], where: str) -> list[str]:
    """What GATE-SFT-001/002 measured of fine-tuning data (`results`: gate id → measured values),
    against the manifest of that data (`where`): `stack prepare` judges them as it writes it, and
    every run that reads it judges them again (stack.data.sft_reader). Only data prepared as
    examples (an `sft` block) has them; GATE-SFT-002 counts the assistant turns and missing markers
    the manifest keeps, and GATE-SFT-001 the examples of one shard, so no more than a split holds."""
    judged = {g: results[g] for g in ("GATE-SFT-001", "GATE-SFT-002") if isinstance(results.get(g), dict)}
    if not judged:
        return []
    sft = manifest.get("sft")
    if not isinstance(sft, dict):
        return [f"{' and '.join(judged)} judged fine-tuning examples, but {where} holds pretraining text"]
    problems = [
        f"gates[GATE-SFT-002].measured.{key} is {value}, but {where} counts {sft[key]}"
        for key, value in judged.get("GATE-SFT-002", {}).items()
        if key in ("assistant_turns", "markers_missing") and key in sft and value != sft[key]
    ]
    examples, splits = judged.get("GATE-SFT-001", {}).get("examples"), sft.get("examples")
    counts = [n for n in splits.values() if isinstance(n, int)] if isinstance(splits, dict) else []
    if isinstance(examples, int) and counts and examples > max(counts):
        problems.append(
            f"gates[GATE-SFT-001].measured.examples is {examples}, more than a split of {where} "
            f"holds ({splits})"
        )
    return problems


# What GATE-DATA-001's coverage check measures (stack.data.reader.coverage_outcome).
COVERAGE = ("covered_shards", "uncovered_fewest", "uncovered_most")


def split_coverage(manifest: dict[str, Any], window: int) -> list[dict[str, int]]:
    """GATE-DATA-001's coverage values for each split of a manifest's data read in windows of
    `window` targets: a shard of n tokens longer than a window leaves (n − 1) mod `window` targets
    past its last whole window, and the reader counts each such shard once per table a batch is
    read from (the tokens; fine-tuning data adds their labels)."""
    tables = 2 if isinstance(manifest.get("sft"), dict) else 1
    shards = [
        s for s in manifest.get("shards") or [] if isinstance(s, dict) and isinstance(s.get("tokens"), int)
    ]
    found = []
    for split in sorted({str(s.get("split")) for s in shards}):
        left = [
            (s["tokens"] - 1) % window
            for s in shards
            if str(s.get("split")) == split and s["tokens"] > window
        ]
        found.append(
            {
                "covered_shards": tables * len(left),
                "uncovered_fewest": min(left, default=0),
                "uncovered_most": max(left, default=0),
            }
        )
    return found


def heldout_windows_problems(
    results: dict[str, Any], manifest: dict[str, Any], exclude: list[str], where: str
) -> list[str]:
    """GATE-DATA-005's split_windows, the windows of the held-out split of the sources a run did not
    exclude, at its window (GATE-DATA-001's window_targets): a held-out shard of n tokens holds
    (n − 1) // window of them (stack.data.windows). Pretraining data only: a fine-tuning set's
    windows are its packed examples'."""
    held, read = results.get("GATE-DATA-005"), results.get("GATE-DATA-001")
    if not (isinstance(held, dict) and isinstance(read, dict)) or isinstance(manifest.get("sft"), dict):
        return []
    window, stated = read.get("window_targets"), held.get("split_windows")
    if (
        held.get("split") != "heldout"
        or not isinstance(window, int)
        or window < 1
        or not isinstance(stated, int)
    ):
        return []
    shards = [
        s for s in manifest.get("shards") or [] if isinstance(s, dict) and isinstance(s.get("tokens"), int)
    ]
    windows = sum(
        max(0, (s["tokens"] - 1) // window)
        for s in shards
        if s.get("split") == "heldout" and s.get("source") not in exclude
    )
    if stated == windows:
        return []
    return [
        f"gates[GATE-DATA-005].measured.split_windows is {stated}, but the held-out shards of {where} "
        f"hold {windows} windows of {window} targets"
    ]


def coverage_problems(measured: Any, manifest: dict[str, Any], where: str) -> list[str]:
    """GATE-DATA-001's coverage values (`measured`) are those of a split of the data `where` holds,
    at the record's window (`window_targets`)."""
    if not isinstance(measured, dict) or not all(
        isinstance(measured.get(k), int) for k in (*COVERAGE, "window_targets")
    ):
        return []
    window = measured["window_targets"]
    stated = {key: measured[key] for key in COVERAGE}
    splits = split_coverage(manifest, window) if window > 0 else []
    if not splits or stated in splits:
        return []
    return [
        f"gates[GATE-DATA-001].measured's coverage is {stated}, but the shards of {where} at "
        f"{window} targets a window give {splits}"
    ]
