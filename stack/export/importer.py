"""`stack import-hf`: a local Hugging Face Llama, Qwen2 or Mistral directory → a stack checkpoint, checked.

The output is laid out like a run directory (`OUT/config.toml`, `OUT/checkpoints/step-0000000/`,
`OUT/tokenizer.json`, plus `OUT/import.json`, the import's own account, and `OUT/metadata.json`,
its evidence record of run kind import-hf), so every command that takes RUN_DIR|CKPT
(`stack inspect`, `stack sample`, `stack eval`, `stack trace`, `stack export`, `stack train
--init-from`) takes it. The checkpoint holds the weights in fp32 (bf16 and fp16 weights are
upcast, which is exact; import.json records what they were), a fresh AdamW state (no step
taken), and the configuration built from config.json; its reader and monitor states are empty,
because no data has been read yet.

The tokenizer is the stack's own when `stack export` wrote the directory, else the model's own
tokenizer.json (`hf_tokenizer.read_tokenizer`). The model's vocabulary is config.json's
vocab_size, which may exceed the tokenizer's (an embedding padded for speed, as Qwen2's 151936
rows over a 151646-id tokenizer): every id the tokenizer makes must have a row, never the reverse.
A chat template the model ships (chat_template.jinja, or tokenizer_config.json's `chat_template`)
is kept in the checkpoint's state as it came (stack.data.chat_jinja), so chat data prepared with
the import's tokenizer is rendered by it, runs started from the import keep it, and `stack export`
writes it back. So are the files that name the model's special tokens (stack.data.hf_specials),
with the tokenizer, held at import to what transformers reads from the directory
(GATE-EXPORT-001's checks special and tokenizer).

Before anything is written the stack model is compared with transformers' own reading of the
same directory (GATE-EXPORT-001's logits_atol), so a model the stack would compute differently
is refused, not imported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput, GateViolation
from contracts.evidence import EVIDENCE_FILE, DataRef, RunStatus, canonical_sha256, sha256_file
from contracts.gates import violation
from contracts.spec import load_spec
from stack.artifacts import IMPORT_RECORD, weight_files
from stack.data import chat_jinja
from stack.data.tokenizer import Tokenizer
from stack.data.tokenizer_record import tokenizer_state, tokenizer_summary
from stack.eval.evidence import CommandEvidence
from stack.export import deps, hf, hf_tokenizer, parity, runtimes, tokenizer_check
from stack.export.sample import resolve_sample
from stack.model.gpt import GPT
from stack.outputs import ownership, rundir
from stack.train import checkpoint as ckpt
from stack.train import rng
from stack.train.config import RunConfig, resolve, save_config
from stack.train.lineage import lineage
from stack.train.loop import build_optimizer

RECORD = IMPORT_RECORD
KIND = "import-hf"
# OUT is a run-like directory built aside; --force replaces an earlier import import.json vouches for.
WRITER = rundir.Writer("stack import-hf", earlier=ownership.by_record(RECORD))
# A placeholder [train] section: a run config needs one; whoever fine-tunes sets their own.
TRAIN_PLACEHOLDER = {"steps": 1}


@dataclass
class ImportResult:
    """Where the checkpoint went and what the import measured."""

    out: Path
    checkpoint: Path
    record: dict[str, Any]


def read_hf_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """Every tensor of the weight files; a file safetensors cannot read is refused by name."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            tensors |= load_file(str(path))
        except (SafetensorError, OSError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise BadInput(
                f"{path} is not a readable safetensors file ({detail}); download it again"
            ) from None
    return tensors


def _model_section(hf_dir: Path) -> dict[str, Any]:
    """config.json's model as the stack's [model] section. Read first: a model the stack computes
    otherwise (another architecture, an option it lacks) is refused before a user is sent to fetch
    its weights or tokenizer files."""
    from transformers import AutoConfig

    with runtimes.quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, TypeError) as exc:
            detail = " ".join(str(exc).split())[:300]
            raise BadInput(f"cannot read {hf_dir / 'config.json'}: {detail}") from None
    return hf.model_config_from_hf(config)


def _run_config(hf_dir: Path, model: dict[str, Any], tokenizer: Tokenizer) -> RunConfig:
    """The run configuration of config.json's `model`, refused when `tokenizer` has ids it lacks."""
    if tokenizer.vocab_size > model["vocab"]:
        raise BadInput(
            f"{hf_dir}: its tokenizer has {tokenizer.vocab_size} ids but config.json's vocab_size is "
            f"{model['vocab']}, so ids from {model['vocab']} up have no embedding row; the tokenizer "
            "files are not this model's: copy the model's own"
        )
    return resolve(
        None, None, [], vocab=tokenizer.vocab_size, base={"model": model, "train": TRAIN_PLACEHOLDER}
    )


def source_dtypes(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The dtypes the weights were stored in (e.g. ["bfloat16"]), before the upcast to fp32."""
    return sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})


def fresh_state(
    config: RunConfig,
    tokenizer_record: dict[str, Any],
    source: dict[str, Any],
    chat_template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """state.json of a checkpoint at step 0: nothing trained or read, every key GATE-CKPT-001 asks for;
    the model's chat template (stack.data.chat_jinja) when it has one."""
    return {
        **({chat_jinja.STATE_KEY: chat_template} if chat_template is not None else {}),
        "epoch": 0,
        "scheduler": {"kind": "warmup_cosine", "step": 0},
        "scaler": None,
        "rng": rng.capture(),
        "reader": None,
        "monitors": None,
        "config": config.as_dict(),
        "spec_version": load_spec().version,
        "heldout_loss": None,
        "tokenizer": tokenizer_record,
        "imported_from": source,
    }


def imported_template(jinja: str) -> dict[str, Any]:
    """The checkpoint's record of a model's own Jinja chat template, kept as it came."""
    sha = hashlib.sha256(jinja.encode("utf-8")).hexdigest()
    return {"name": chat_jinja.IMPORTED, "sha256": sha, "jinja": jinja}


def import_hf(
    hf_dir: Path,
    out: Path,
    force: bool = False,
    sample_text: Path | None = None,
    argv: list[str] | None = None,
    evidence_dir: Path | None = None,
) -> ImportResult:
    """Import `hf_dir` into a new stack checkpoint under `out` (see the module docstring), with an
    evidence record (OUT/metadata.json, run kind import-hf; filed into `evidence_dir` if given)
    whose lineage names the directory's weights and, for a `stack export`, its record."""
    hf_dir = Path(hf_dir)
    evidence = CommandEvidence(KIND, argv or ["stack", "import-hf", str(hf_dir)], "cpu", evidence_dir)
    text = None if sample_text is None else str(sample_text)
    evidence.record.config = {"source": str(hf_dir.resolve()), "sample_text": text}
    evidence.record.config_sha256 = canonical_sha256(evidence.record.config)
    try:
        with evidence.judging():
            checked = _checked(hf_dir, out, force, sample_text)
            with rundir.opened(out, WRITER, force=force) as opened:
                result = _write(opened, checked, evidence)
    except GateViolation:
        evidence.file()
        raise
    evidence.file((result.out / RECORD,))
    return result


@dataclass
class _Checked:
    """What the import read and checked, before anything is written."""

    model: GPT
    config: RunConfig
    tokenizer: Tokenizer
    record: dict[str, Any]


def _checked(hf_dir: Path, out: Path, force: bool, sample_text: Path | None) -> _Checked:
    """Read the model, its config and tokenizer, and check its logits against transformers'."""
    if not (hf_dir / "config.json").is_file():
        raise BadInput(f"{hf_dir} is not a Hugging Face model directory (no config.json)")
    rundir.check(out, WRITER, force=force)
    deps.require("hf")
    model_section = _model_section(hf_dir)
    files = weight_files(hf_dir)
    tokenizer = hf_tokenizer.read_tokenizer(hf_dir)
    config = _run_config(hf_dir, model_section, tokenizer)
    model = GPT(config.model)
    tensors = read_hf_weights(files)
    dtypes = source_dtypes(tensors)
    state = hf.from_hf_tensors(tensors, config.model)
    del tensors  # a bf16 source's originals; the fp32 state is all that is used from here
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise BadInput(f"the weights of {hf_dir} do not fit its config.json: {detail}") from None
    model.eval()
    sample = resolve_sample(tokenizer, config.model.ctx, sample_text)
    hf_model = runtimes.load_hf_model(hf_dir)
    logits = runtimes.stack_logits(model, sample.windows)
    check = parity.measure_logits(
        str(hf_dir),
        runtimes.logits_of(hf_model, sample.windows),
        logits,
        runtimes.stack_rounding(model, sample.windows, logits),
    )
    jinja = hf_tokenizer.read_chat_template(hf_dir)
    special = None  # the stack's own tokenizer, restored from its record, ends and starts at its end of text
    if tokenizer.settings is not None:  # kept as the model's
        found = runtimes.hf_special_ids(hf_dir, hf_model)
        special = parity.SpecialIds(found, tokenizer.eot_id, hf_tokenizer.expected_special_ids(tokenizer))
    del hf_model
    # What the checkpoint keeps of the tokenizer is what transformers reads from the model.
    reading = tokenizer_check.hf_reading(hf_dir)
    if tokenizer_check.UNREADABLE in reading:
        raise BadInput(
            f"transformers cannot read the tokenizer of {hf_dir} ({reading[tokenizer_check.UNREADABLE]}), "
            "so neither could the users of the model: fix its tokenizer_config.json (a special token is a "
            'string, or {"__type": "AddedToken", "content": ...})'
        )
    expected = tokenizer_check.expected_reading(tokenizer, jinja, hf.family(config.model))
    read_back = tokenizer_check.read_back(expected, reading)
    outcome = parity.hf_outcome(check, special, tokenizer=read_back)
    parity.certify_hf(check, special, tokenizer=read_back)  # nothing is written for a model the stack
    if not outcome.ok:  # computes or reads differently, not even with the contracts switched off
        raise violation(parity.HF_GATE, outcome)
    source = {
        "path": str(hf_dir.resolve()),
        "files": {p.name: sha256_file(p) for p in sorted(hf_dir.iterdir()) if p.is_file()},
    }
    record = {
        "source": source,
        "chat_template": None if jinja is None else imported_template(jinja),
        "family": hf.family(config.model),
        "weights": {
            "files": [p.name for p in files],
            "source_dtypes": dtypes,
            "imported_as": "float32",
        },
        "tokenizer": tokenizer_summary(tokenizer),
        "model_vocab": config.model.vocab,
        "sample": sample.describe(),
        "parity": {
            **check.as_dict(),
            "gate": parity.HF_GATE,
            "ok": outcome.ok,
            "threshold": outcome.threshold,
        },
        **({} if special is None else special.as_dict()),
        **read_back,
        "spec_version": load_spec().version,
        "versions": deps.versions(),
    }
    return _Checked(model, config, tokenizer, record)


def _write(opened: rundir.RunDir, checked: _Checked, evidence: CommandEvidence) -> ImportResult:
    """The checkpoint, config.toml, import.json and the evidence record, built in `tmp`, then published."""
    tmp, config, record = opened.where, checked.config, checked.record
    optimizer = build_optimizer(checked.model, config, torch.device("cpu"))
    state = fresh_state(config, tokenizer_state(checked.tokenizer), record["source"], record["chat_template"])
    written = ckpt.save_checkpoint(tmp, 0, checked.model, optimizer, state)
    save_config(config, tmp / "config.toml")
    record["checkpoint"] = written.relative_to(tmp).as_posix()
    ownership.write_record(tmp, RECORD, record)
    evidence.note_checkpoint(written)  # what the import made: the record vouches for these weights
    evidence.record.data = DataRef(tokenizer_sha256=checked.tokenizer.sha256)
    evidence.record.metrics = {key: record[key] for key in ("family", "weights", "model_vocab", "parity")}
    evidence.record.lineage = lineage({"source": Path(record["source"]["path"])})
    evidence.settle(RunStatus.COMPLETED)
    evidence.write(tmp, sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != EVIDENCE_FILE))
    out = opened.commit()
    return ImportResult(out, out / record["checkpoint"], record)
