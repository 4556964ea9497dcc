"""`stack lora export|import`: a LoRA adapter across the peft boundary, checked by peft itself.

Export, `stack lora export RUN --out DIR [--base HF_DIR]`: a run trained with `[lora]` (its
checkpoint holds base and adapters) becomes

    DIR/adapter_config.json, DIR/adapter_model.safetensors   the adapter in peft's format
                                                              (stack.export.peft_format)
    DIR/base/                                                 the HF export of its base (config.json,
                                                              model.safetensors, tokenizer files with
                                                              the chat template), unless --base names
                                                              one that holds the same weights
    DIR/lora_export.json, DIR/metadata.json                   the parity numbers; the evidence record

then peft loads the adapter onto the HF base (`PeftModel.from_pretrained`, as its users do) and
its logits on the sample text are compared with the stack's adapted model's (GATE-LORA-007). A
failed check leaves the weights named `adapter_model.unverified.safetensors`, which peft does not
load, beside the evidence, and exits 3.

Import, `stack lora import DIR --base RUN --out ADAPTER_DIR`: a peft adapter directory is read
into the stack's terms, put onto RUN's model strictly (GATE-LORA-005), held to the same
comparison with peft on an HF export of RUN made aside (GATE-LORA-007), and written as the
stack's adapter directory (adapter.json, adapter.safetensors; stack.model.adapters), which
`stack lora merge ADAPTER_DIR --base RUN` and `stack evalmatrix --adapter` read. ADAPTER_DIR
follows every output's rules (stack.outputs): new or empty, or with --force an earlier adapter
and nothing else.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from contracts import peft_config
from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, canonical_sha256, sha256_file
from contracts.spec import load_spec
from stack.artifacts import weight_files
from stack.eval.evidence import CommandEvidence
from stack.export import deps, hf, parity, peft_format, runtimes
from stack.export.exporters import write_hf_files
from stack.export.importer import read_hf_weights
from stack.export.sample import resolve_sample
from stack.model import lora
from stack.model.adapters import WEIGHTS as ADAPTER_WEIGHTS
from stack.model.adapters import check_load, earlier_adapter, load_measured, save_adapter
from stack.outputs import ownership, rundir
from stack.train import checkpoint as ckpt
from stack.train.lineage import lineage
from stack.train.trained import Trained, load_trained

RECORD = "lora_export.json"
BASE_DIR = "base"
EXPORT_KIND = "lora-export"
IMPORT_KIND = "lora-import"
# Each output is one artifact built aside; --force replaces an earlier one its own record vouches
# for: lora_export.json for an export, adapter.json for an imported adapter.
EXPORT_WRITER = rundir.Writer("stack lora export", earlier=ownership.by_record(RECORD))
IMPORT_WRITER = rundir.Writer("stack lora import", earlier=earlier_adapter)


@dataclass
class Exchanged:
    """What an export or import wrote and measured."""

    out: Path
    record: dict[str, Any]
    check: parity.LogitsParity
    not_loaded: list[str]
    adapters: int
    config: dict[str, Any] | None = None  # an export's adapter_config.json as measured (`written_config`)

    @property
    def ok(self) -> bool:
        return parity.peft_outcome(self.check, self.adapters, self.not_loaded, self.config).ok


def _modules(files: list[Path], prefix: str, suffixes: tuple[str, ...]) -> list[str]:
    """The modules named by the tensors of safetensors `files`: each key less `prefix` and the first of
    `suffixes` it ends with (keys ending with none are left out)."""
    found = set()
    for path in files:
        with safe_open(str(path), framework="pt") as opened:
            for key in opened.keys():  # noqa: SIM118 (a safetensors handle is no dict)
                end = next((x for x in suffixes if key.endswith(x)), None)
                if end is not None and key.startswith(prefix):
                    found.add(key.removeprefix(prefix).removesuffix(end))
    return sorted(found)


def written_config(directory: Path, base_dir: Path, lora_section: dict[str, Any]) -> dict[str, Any]:
    """GATE-LORA-007's check config, measured on the files as written: adapter_config.json read back
    from `directory`, the fields the run's recorded [lora] section (`lora_section`, the checkpoint's
    config, never the model's adapters) gives it (contracts.peft_config), the modules of the HF base
    its target_modules select by peft's rule, and the modules adapter_model.safetensors holds tensors for."""
    written = json.loads((directory / peft_format.CONFIG).read_text(encoding="utf-8"))
    base = _modules(weight_files(Path(base_dir)), "", (".weight",))
    adapted = _modules(
        [directory / peft_format.WEIGHTS], peft_format.PREFIX, (".lora_A.weight", ".lora_B.weight")
    )
    return {
        "config_written": peft_config.written_fields(written),
        "config_recorded": peft_config.expected_fields(lora_section),
        "modules_targeted": peft_config.targeted(written.get("target_modules"), base),
        "modules_adapted": adapted,
    }


def _adapted(path: Path) -> Trained:
    """A run with unmerged adapters, on the path every export takes (sdpa), in a family HF has."""
    trained = load_trained(path, attention="sdpa")
    if not lora.has_lora(trained.model):
        raise BadInput(
            f"{trained.checkpoint.path} has no LoRA adapters (its run has no [lora] section); export a plain "
            "model with `stack export --format hf`"
        )
    # An architecture a Llama or Qwen2 cannot hold is refused here, with what this command's user
    # can do instead: merge, then export the merged model to ONNX (lora export has no --format).
    hf.family(
        trained.config.model,
        f"merge the adapters into the model with `stack lora merge {path} --out MERGED`, then export "
        "it with `stack export MERGED --format onnx`",
    )
    return trained


def _same_base(base_hf: Path, trained: Trained) -> None:
    """Refuse an HF directory whose weights are not, tensor for tensor, the run's base."""
    try:
        tensors = hf.from_hf_tensors(read_hf_weights(weight_files(base_hf)), trained.config.model)
    except BadInput as exc:
        raise BadInput(f"--base {base_hf} is not the Hugging Face export of this run's base: {exc}") from None
    base = lora.base_state(trained.model)
    differing = sorted(k for k, t in tensors.items() if k not in base or not torch.equal(t, base[k].float()))
    if differing:
        raise BadInput(
            f"--base {base_hf} does not hold this run's base weights ({len(differing)} tensor(s) differ, "
            f"e.g. {differing[0]}); leave --base out to write the base beside the adapter"
        )


def _compare(trained: Trained, base_dir: Path, adapter_dir: Path, sample_text: Path | None) -> Exchanged:
    """peft's logits of the adapter on `base_dir` against the stack's adapted model's."""
    sample = resolve_sample(trained.tokenizer, trained.config.model.ctx, sample_text, trained.checkpoint.path)
    reference = runtimes.stack_logits(trained.model, sample.windows)
    logits, not_loaded = runtimes.peft_logits(base_dir, adapter_dir, sample.windows)
    check = parity.measure_logits(peft_format.WEIGHTS, reference, logits)
    record = {"sample": sample.describe()}
    return Exchanged(adapter_dir, record, check, not_loaded, len(lora.adapters(trained.model)))


def _parity_record(result: Exchanged) -> dict[str, Any]:
    outcome = parity.peft_outcome(result.check, result.adapters, result.not_loaded, result.config)
    return {
        **result.check.as_dict(),
        "adapters": result.adapters,
        "not_loaded": result.not_loaded,
        "gate": parity.PEFT_GATE,
        "ok": outcome.ok,
        "threshold": outcome.threshold,
        "message": outcome.message,
    }


def export_adapter(
    run: Path,
    out: Path,
    base_hf: Path | None,
    force: bool,
    sample_text: Path | None,
    evidence: CommandEvidence,
) -> Exchanged:
    """Write RUN's adapter in peft's format (and its HF base) into OUT and compare it in peft; the
    gate is left to the caller (`parity.certify_peft`), after OUT holds the evidence of the check."""
    rundir.check(out, EXPORT_WRITER, force=force)
    deps.require("peft")
    trained = _adapted(run)
    evidence.note_checkpoint(trained.checkpoint.path)
    evidence.record.config = {
        "run": str(Path(run).resolve()),
        "base": None if base_hf is None else str(Path(base_hf).resolve()),
        "sample_text": None if sample_text is None else str(sample_text),
    }
    evidence.record.config_sha256 = canonical_sha256(evidence.record.config)
    if base_hf is not None:
        _same_base(base_hf, trained)
    with rundir.opened(out, EXPORT_WRITER, force=force) as opened:
        tmp = opened.where
        if base_hf is None:
            with lora.without_adapters(trained.model):
                write_hf_files(tmp / BASE_DIR, trained)
        base_name = str((base_hf if base_hf is not None else Path(out) / BASE_DIR).resolve())
        peft_format.write_peft(tmp, trained.model, base_name)
        base_dir = base_hf if base_hf is not None else tmp / BASE_DIR
        result = _compare(trained, base_dir, tmp, sample_text)
        result.config = written_config(tmp, base_dir, trained.config.lora.model_dump())  # GATE-LORA-007
        record = {
            **result.record,
            "source_checkpoint": {
                "path": str(trained.checkpoint.path.resolve()),
                "step": trained.checkpoint.step,
                "manifest_sha256": sha256_file(trained.checkpoint.path / ckpt.MANIFEST),
            },
            "base": base_name,
            "base_sha256": lora.base_sha256(trained.model),
            "parity": _parity_record(result),
            "spec_version": load_spec().version,
            "versions": deps.versions(),
        }
        weights = tmp / peft_format.WEIGHTS
        if not result.ok:  # peft must not load what did not pass; the name says so
            os.replace(weights, parity.unverified(weights))
        record["status"] = "verified" if result.ok else "failed"
        ownership.write_record(tmp, RECORD, record)
        opened.commit()
    result.out, result.record = Path(out), record
    return result


def keep_export(evidence: CommandEvidence, run: Path, result: Exchanged | None) -> Path | None:
    """OUT/metadata.json (the verdicts, the files written, the run they came from), filed into the
    ledger when one was given; with no result only the ledger gets the record. Returns the filed path."""
    if result is None:
        return evidence.file()
    record = evidence.record
    record.metrics = {key: result.record[key] for key in ("status", "sample", "parity", "base_sha256")}
    weights = result.out / peft_format.WEIGHTS
    record.lineage = lineage({"source": run}, weights if weights.is_file() else None)
    files = sorted(p for p in result.out.rglob("*") if p.is_file() and p.name != EVIDENCE_FILE)
    evidence.write(result.out, files)
    return evidence.file((result.out / RECORD,))


def import_adapter(
    peft_dir: Path,
    base: Path,
    out: Path,
    sample_text: Path | None,
    evidence: CommandEvidence,
    force: bool = False,
) -> Exchanged:
    """Read a peft adapter onto BASE (strictly), check it against peft, and write the stack's adapter
    as OUT (with `force`, in place of an earlier adapter and nothing else)."""
    rundir.check(out, IMPORT_WRITER, force=force)
    deps.require("peft")
    evidence.record.config = {"peft_dir": str(Path(peft_dir).resolve()), "base": str(Path(base).resolve())}
    evidence.record.config_sha256 = canonical_sha256(evidence.record.config)
    adapter = peft_format.read_peft(peft_dir)
    trained = load_trained(base, attention="sdpa")
    evidence.note_checkpoint(trained.checkpoint.path)
    if lora.has_lora(trained.model):
        raise BadInput(
            f"--base {base} carries LoRA adapters of its own; give the model they adapt, or merge them "
            f"first (stack lora merge {base} --out MERGED)"
        )
    hf.family(
        trained.config.model,
        "a peft adapter is made on a Hugging Face model, so none adapts it; give a --base without the "
        "option (a run, or a model `stack import-hf` read)",
    )
    model, base_sha256 = trained.model, lora.base_sha256(trained.model)
    targets = adapter.targets(model.config.n_layers)
    lora.apply_lora(model, targets, adapter.r, adapter.alpha, adapter.dropout, adapter.rslora)
    model.eval()
    # peft's file names no base, so the base is the one the user named: the load is judged strictly.
    stated = {"r": adapter.r, "alpha": adapter.alpha, "rslora": adapter.rslora}
    check_load(load_measured(model, adapter.tensors, base_sha256, base_sha256, stated))  # GATE-LORA-005
    with torch.no_grad():
        for key, target in lora.adapter_state(model).items():
            target.copy_(adapter.tensors[key])
    with tempfile.TemporaryDirectory(prefix="stack-lora-import-") as scratch:
        with lora.without_adapters(model):
            write_hf_files(Path(scratch), trained)
        result = _compare(trained, Path(scratch), peft_dir, sample_text)
    parity.certify_peft(result.check, result.adapters, result.not_loaded)  # GATE-LORA-007
    if not result.ok:  # with the contracts off: still nothing written for a conversion that fails
        message = _parity_record(result)["message"]
        raise BadInput(f"peft's logits of {peft_dir} differ from the stack's: {message}")
    save_adapter(model, out, base_sha256, targets, IMPORT_WRITER.command, replace=force)
    result.out = Path(out)
    result.record |= {"parity": _parity_record(result), "base_sha256": base_sha256}
    evidence.record.metrics = {key: result.record[key] for key in ("sample", "parity", "base_sha256")}
    evidence.record.lineage = lineage({"base": base}, Path(out) / ADAPTER_WEIGHTS)
    return result
