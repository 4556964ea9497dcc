"""The records of the exports and imports (`stack export-hf`, `export-onnx`, `import-hf`,
`lora-export`) from the `export.json` and files they cite: the parity the export gates judge, the
weights written and the checkpoint they came from.
"""

from __future__ import annotations

from typing import Any

from contracts import peft_config
from contracts.derive.base import Derivation, Deriver, Inputs, registrar, same
from contracts.derive.reports import (
    MANIFEST,
    PER_ITEM_SINCE,
    WEIGHTS_FILE,
    cited_checkpoint,
    created_problems,
    made_weights,
    mirrored,
    report_of,
    short,
    source_parent_problems,
    thresholds_in_force,
    verified_checkpoint,
    written_under,
)
from contracts.hf_export import DTYPE_FIELDS
from contracts.hf_export import stored_dtypes as hf_stored_dtypes
from contracts.onnx_weights import declared_opset, quantised_weight_types

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


# The revision of GATE-LORA-007 that brought its check config; the file it reads back.
PEFT_CONFIG_SINCE, PEFT_CONFIG, PEFT_BASE_WEIGHTS = 2, "adapter_config.json", "base/model.safetensors"


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


# The result files of `stack import-hf` and `stack lora export`, and the adapter the latter makes.
IMPORT_RECORD, LORA_EXPORT_RECORD, PEFT_WEIGHTS = (
    "import.json",
    "lora_export.json",
    "adapter_model.safetensors",
)


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
        if "architecture_keys" in report:  # GATE-EXPORT-001: the configuration read back
            read_back = {key: report.get(key) for key in ("architecture_keys", "architecture_differing")}
            derived.gate(gate_id, read_back, optional=True)
        if "stored_dtypes" in report:  # the dtypes loaded and stored, the weights file's again
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
    if isinstance(int8, dict):  # GATE-EXPORT-002 (check int8_tensors): what the int8 parity states
        derived.gate(gate_id, tensor_values(int8, "int8_", "argmax_agreement", "max_abs_diff"), optional=True)
    if "int8_weight_types" in report:  # GATE-EXPORT-002: the saved int8 graph's weights, read again
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
    its config asked for (config.opset 20, a graph of opset 18, and nobody compared);
    GATE-EXPORT-002's check opset states those two, and export.json's `opset_asked` the
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
    """GATE-EXPORT-002's check weights: the element types export.json and the gate state
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
        f"export.json: int8_weight_types is {short(report['int8_weight_types'])}, but {saved} stores {stored}"
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
            f"export.json: stored_dtypes is {short(report.get('stored_dtypes'))}, but {file} stores {stored}"
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


# GATE-EXPORT-001: the special ids held to the model's own, and the tokenizer read back.
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
    verified_checkpoint(inputs, derived, path)
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
    """GATE-LORA-007's `config_written` (check config) is adapter_config.json's fields as the
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
