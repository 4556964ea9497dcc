"""`stack export`'s two formats, from checkpoint to a checked directory with its export.json.

Both follow one order: load the checkpoint, compute the stack's logits on the sample, write the
artefacts into a staging directory, load each back in its runtime and compare, give each file
its verified name only if its check passed, write export.json (the export's evidence: format,
opset, parity numbers, sha256 of every file, source checkpoint), move the directory into place,
and only then let the gates speak. So a failed check still leaves the evidence of why, beside
a file whose name says it is unverified, and the command exits 3.

Beside export.json the directory gets an evidence record, metadata.json, of run kind export-hf
or export-onnx (`keep_evidence`): the gates' verdicts, the exported files as artifacts, and the
source checkpoint by its hashes, so the integrity check can audit an export like any run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, DataRef, canonical_sha256, sha256_file
from contracts.gates import Outcome
from contracts.onnx_weights import quantised_weight_types
from contracts.spec import load_spec
from stack.artifacts import EXPORT_RECORD, ONNX_MODEL, WEIGHTS_FILE
from stack.data.chat_jinja import chat_template_of
from stack.data.tokenizer_record import tokenizer_summary
from stack.export import deps, hf, hf_tokenizer, onnx_export, parity, runtimes, tokenizer_check
from stack.export.sample import Sample, check_sample_hf, check_sample_onnx, resolve_sample
from stack.model.lora import has_lora
from stack.outputs import ownership, rundir
from stack.train import checkpoint as ckpt
from stack.train.lineage import lineage
from stack.train.trained import Trained, load_measured

if TYPE_CHECKING:
    import torch

    from stack.eval.evidence import CommandEvidence

RECORD = EXPORT_RECORD
FORMATS = ("hf", "onnx")
# DIR is one artifact, built aside; --force replaces an earlier export that export.json vouches for.
WRITER = rundir.Writer("stack export", earlier=ownership.by_record(RECORD))
Checks = list[tuple[parity.LogitsParity, Outcome]]


@dataclass
class ExportRequest:
    """What the command line asked for."""

    checkpoint: Path
    fmt: str
    out: Path
    int8: bool = False
    sample_text: Path | None = None
    opset: int = onnx_export.DEFAULT_OPSET
    force: bool = False
    argv: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    """Where the export went, its evidence record, and each artefact's measurement and verdict."""

    out: Path
    record: dict[str, Any]
    checks: Checks

    @property
    def ok(self) -> bool:
        return all(outcome.ok for _, outcome in self.checks)


# The model file of each format, by its verified name: what the export's lineage says it made.
MODEL_FILES = {"hf": WEIGHTS_FILE, "onnx": ONNX_MODEL}


def run_kind(fmt: str) -> str:
    """The run kind of an export's evidence record (spec/run_kinds.yaml)."""
    return f"export-{fmt}"


def _validate(request: ExportRequest) -> None:
    if request.fmt not in FORMATS:
        raise BadInput(f"unknown --format {request.fmt!r}; use one of: {', '.join(FORMATS)}")
    if request.int8 and request.fmt != "onnx":
        raise BadInput("--int8 quantises an ONNX graph; use it with --format onnx")
    rundir.check(request.out, WRITER, force=request.force)
    deps.require(request.fmt)


def _record(request: ExportRequest, trained: Trained, sample: Sample) -> dict[str, Any]:
    path = trained.checkpoint.path
    return {
        "format": request.fmt,
        "opset": None,
        "source_checkpoint": {
            "path": str(path.resolve()),
            "step": trained.checkpoint.step,
            "manifest_sha256": sha256_file(path / ckpt.MANIFEST),
            "config_sha256": trained.config.sha256,
        },
        "tokenizer": tokenizer_summary(trained.tokenizer),
        "sample": sample.describe(),
        "spec_version": load_spec().version,
        "versions": deps.versions(),
        "argv": request.argv,
        "parity": {},
    }


def _settle(
    written: Path, check: parity.LogitsParity, outcome: Outcome, record: dict[str, Any], gate: str
) -> None:
    """Name `written` by its verdict (`model.onnx` or `model.unverified.onnx`) and record the check."""
    final = written.with_name(written.name.replace(parity.UNVERIFIED, ""))
    target = final if outcome.ok else parity.unverified(final)
    if written != target:
        os.replace(written, target)
    record["parity"][final.name] = {
        **check.as_dict(),
        "gate": gate,
        "ok": outcome.ok,
        "threshold": outcome.threshold,
        "message": outcome.message,
        "file": target.name,
    }


def write_hf_files(directory: Path, trained: Trained) -> Path:
    """config.json, model.safetensors and the tokenizer files (with the model's chat template, when it
    has one) of `trained.model` as it computes now; returns the weights' path."""
    from stack.outputs.tensor_files import save_tensors

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(hf.config_json(trained.config.model, trained.tokenizer))
    hf_tokenizer.write_generation_config(directory, trained.tokenizer)
    weights = directory / MODEL_FILES["hf"]  # the name transformers looks for
    save_tensors(hf.to_hf_tensors(trained.model), weights, metadata={"format": "pt"})
    hf_tokenizer.write_tokenizer_files(
        directory, trained.tokenizer, trained.config.model.ctx, chat_template_of(trained.checkpoint.state)
    )
    return weights


def _write_hf(
    tmp: Path, trained: Trained, sample: Sample, reference: torch.Tensor, record: dict[str, Any]
) -> Checks:
    """config.json, model.safetensors and the tokenizer files, checked in transformers as a user loads
    them (from_pretrained's defaults): its logits, the special ids it reads from them, every field of
    config.json against the model's, the dtype it loads in against the weights' stored dtype, and the
    tokenizer it reads back (kept in the record for `certify`)."""
    weights = write_hf_files(tmp, trained)  # renamed below if unchecked
    hf_model = runtimes.load_as_user(tmp)  # as a user loads it: no dtype asked for
    rounding = runtimes.stack_rounding(trained.model, sample.windows, reference)
    check = parity.measure_logits(
        weights.name, reference, runtimes.logits_of(hf_model, sample.windows), rounding
    )
    tokenizer = trained.tokenizer
    found = runtimes.hf_special_ids(tmp, hf_model)
    special = parity.SpecialIds(found, tokenizer.eot_id, hf_tokenizer.expected_special_ids(tokenizer))
    record.update(special.as_dict())
    written = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    dtype = str(next(trained.model.parameters()).dtype).removeprefix("torch.")
    architecture = parity.architecture_read_back(trained.config.model, hf_model.config, written, dtype)
    architecture |= parity.dtypes_read_back(hf_model, runtimes.stored_dtypes(weights))
    record.update(architecture)
    template = chat_template_of(trained.checkpoint.state)
    expected = tokenizer_check.expected_reading(tokenizer, template, hf.family(trained.config.model))
    read_back = tokenizer_check.read_back(expected, tokenizer_check.hf_reading(tmp))
    record.update(read_back)
    outcome = parity.hf_outcome(check, special, architecture, read_back)
    _settle(weights, check, outcome, record, parity.HF_GATE)
    return [(check, outcome)]


def _write_onnx(
    tmp: Path,
    trained: Trained,
    sample: Sample,
    reference: torch.Tensor,
    record: dict[str, Any],
    request: ExportRequest,
) -> Checks:
    """model.onnx (and with --int8 model.int8.onnx) plus the tokenizer files, checked in ONNX Runtime."""
    template = chat_template_of(trained.checkpoint.state)
    hf_tokenizer.write_tokenizer_files(tmp, trained.tokenizer, trained.config.model.ctx, template)
    fp32 = parity.unverified(tmp / MODEL_FILES["onnx"])
    onnx_export.export_graph(trained.model, fp32, request.opset)
    record["opset"] = onnx_export.graph_opset(fp32)  # as the saved graph declares it
    record["opset_asked"] = request.opset
    check = parity.measure_logits("model.onnx", reference, runtimes.onnx_logits(fp32, sample.windows))
    outcome = parity.fp32_outcome(check, opset_pair(record))
    _settle(fp32, check, outcome, record, parity.ONNX_GATE)
    checks = [(check, outcome)]
    if not request.int8:
        return checks
    if not outcome.ok:
        record["parity"]["model.int8.onnx"] = {"ok": False, "message": "not built: the fp32 graph failed"}
        return checks
    int8 = parity.unverified(tmp / "model.int8.onnx")
    onnx_export.quantize_int8(tmp / "model.onnx", int8)
    record["int8_opset"] = onnx_export.graph_opset(int8)
    record["int8_weight_types"] = quantised_weight_types(int8)  # as the saved file stores them
    check = parity.measure_logits("model.int8.onnx", reference, runtimes.onnx_logits(int8, sample.windows))
    outcome = parity.int8_outcome(check, record["int8_weight_types"])
    _settle(int8, check, outcome, record, parity.ONNX_GATE)
    return [*checks, (check, outcome)]


def opset_pair(record: dict[str, Any]) -> dict[str, int]:
    """GATE-EXPORT-002's check opset of an ONNX export.json: the opset its saved graph declares and
    the one asked for (--opset, or the default the command put in its place)."""
    return {"opset": record["opset"], "opset_asked": record["opset_asked"]}


def export(request: ExportRequest) -> ExportResult:
    """Export a checkpoint, check it, and leave DIR with export.json; gates are left to `certify`."""
    _validate(request)
    # The exportable path, whatever trained; its forward held to the written-out architecture
    # (GATE-MODEL-003): every parity below compares the files with this model's own forward.
    trained = load_measured(request.checkpoint, attention="sdpa")
    if request.fmt == "hf" and has_lora(trained.model):
        raise BadInput(
            f"{trained.checkpoint.path} holds unmerged LoRA adapters, which a Hugging Face checkpoint "
            "(Llama, Qwen) has no place for; merge them first (stack lora merge RUN_DIR --out MERGED, then "
            "export MERGED), or export the adapter for peft with its base: stack lora export RUN_DIR "
            "--out DIR"
        )
    model_config = trained.config.model
    sample = resolve_sample(trained.tokenizer, model_config.ctx, request.sample_text, trained.checkpoint.path)
    check_sample = check_sample_hf if request.fmt == "hf" else check_sample_onnx
    check_sample(sample, trained.tokenizer, model_config.ctx)  # the windows every parity below compares on
    reference = runtimes.stack_logits(trained.model, sample.windows)
    record = _record(request, trained, sample)
    with rundir.opened(request.out, WRITER, force=request.force) as opened:
        tmp = opened.where
        if request.fmt == "hf":
            checks = _write_hf(tmp, trained, sample, reference, record)
        else:
            checks = _write_onnx(tmp, trained, sample, reference, record, request)
        record["status"] = "verified" if all(o.ok for _, o in checks) else "failed"
        ownership.write_record(tmp, RECORD, record)
        opened.commit()
    return ExportResult(request.out, record, checks)


def certify(result: ExportResult) -> None:
    """Let each check's gate speak (GATE-EXPORT-001 for HF, GATE-EXPORT-002 for ONNX): exit 3 on a failure."""
    for check, _ in result.checks:
        if result.record["format"] == "hf":
            record = result.record
            special = parity.SpecialIds(record["special_ids"], record["eot_id"], record["special_expected"])
            architecture = {key: record[key] for key in parity.ARCHITECTURE_KEYS}
            read_back = {key: record[key] for key in parity.TOKENIZER_KEYS}
            parity.certify_hf(check, special, architecture, read_back)
        elif check.artefact == "model.onnx":
            parity.certify_onnx_fp32(check, opset_pair(result.record))
        else:
            parity.certify_onnx_int8(check, result.record["int8_weight_types"])


def keep_evidence(
    evidence: CommandEvidence, request: ExportRequest, result: ExportResult | None
) -> Path | None:
    """Describe the export in its record, write it into DIR, and file it; returns the filed path.

    With no result (the checkpoint was refused before anything was written), DIR is not this
    export's, so the record goes only to the ledger, if one was given.
    """
    record = evidence.record
    record.config = {
        "format": request.fmt,
        "checkpoint": str(Path(request.checkpoint).resolve()),
        "int8": request.int8,
        "opset": request.opset if request.fmt == "onnx" else None,
        "sample_text": None if request.sample_text is None else str(request.sample_text),
    }
    record.config_sha256 = canonical_sha256(record.config)
    if result is None:
        return evidence.file()
    evidence.note_checkpoint(Path(result.record["source_checkpoint"]["path"]))
    record.lineage = lineage({"source": request.checkpoint}, result.out / MODEL_FILES[request.fmt])
    record.data = DataRef(tokenizer_sha256=result.record["tokenizer"]["sha256"])
    record.metrics = {key: result.record[key] for key in ("status", "opset", "sample", "parity")}
    files = sorted(p for p in result.out.rglob("*") if p.is_file() and p.name != EVIDENCE_FILE)
    evidence.write(result.out, files)
    return evidence.file((result.out / RECORD,))
