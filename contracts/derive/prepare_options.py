"""A prepare record's stated options held to the manifest its prepare wrote (spec 1.33.0).

From 1.33.0 a prepare's config states every option that selects or shapes what enters its
DATA_DIR (tools/argv_record.STATED_OPTIONS holds each to the command line); here each is held
to the manifest, where the manifest decides it, so an option that never reached the prepare
contradicts one of the two (--glob '*.py' with a .rst file read; --join
chat-turns with the examples joined as TRL joins them):

- a corpus's read settings (--format, --glob, --doc-sep, --doc-bytes, --text-field, --source-field,
  --shard-tokens, --bpe-sample) are the manifest's `reading`, and none of a fine-tuning set's;
- a fine-tuning set's --format, --join and --pack-len are its `sft` block's (a prefs window
  holds contracts.packing.PAIR_ROWS rows of --pack-len), and a --template renders its examples
  (the stack's renderer, never the model's own);
- a --dtype other than auto is the manifest's dtype; --tokenizer byte, bpe or hf:DIR names the
  manifest's tokenizer, and a bpe's vocabulary is at most --vocab-size;
- GATE-DATA-014's check `inputs` judged the files read by the manifest's glob, and
  counted the files its sources list; its check `separated` measured the documents against
  the manifest's doc_sep, and was made wherever the manifest states one; its check `cut`
  measured the pieces of text read without a separator against the manifest's doc_bytes;
- GATE-DATA-007's check `sample` measured the sample the manifest states (its tokenizer's
  `sample_sha256`) under the manifest's seed and `reading.bpe_sample`, and a bpe trained by a
  prepare of rev 4 or later made it (a sample drawn without the seed). The
  units offered are in no artifact, so the rule's digest the check compared with is not drawn again
  here; the check itself re-draws it in the run.
"""

from __future__ import annotations

from typing import Any

from contracts.derive.base import Derivation, Inputs
from contracts.packing import PAIR_ROWS

OPTIONS_SINCE = "1.33.0"
# The read settings a corpus manifest's `reading` keeps under the config key of the same name.
READ_KEYS = ("glob", "doc_sep", "doc_bytes", "source_field", "shard_tokens", "bpe_sample")
# The tokenizer a --tokenizer word makes, where the word alone decides it (a RUN_DIR's is its model's).
TOKENIZER_NAMES = {"byte": "byte", "bpe": "bpe"}
HF_PREFIX = "hf:"
# The revision of GATE-DATA-014 from which a prepare with --doc-sep makes its check `separated`.
SEPARATED_SINCE_REVISION = 5
# The revision of GATE-DATA-007 from which a prepare that trains a bpe makes its check `sample`.
SAMPLE_SINCE_REVISION = 4


def _table(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def prepare_options(inputs: Inputs, derived: Derivation, manifest: dict[str, Any]) -> None:
    """Derive the stated options the manifest decides (module docstring), from 1.33.0."""
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    sft, reading = _table(manifest.get("sft")), _table(manifest.get("reading"))
    for key in READ_KEYS:
        derived.put(("config", key), (reading or {}).get(key), since=OPTIONS_SINCE)
    shaped = sft.get("format") if sft is not None else (reading or {}).get("format")
    derived.put(("config", "format"), shaped, since=OPTIONS_SINCE)
    derived.put(("config", "join"), (sft or {}).get("join"), since=OPTIONS_SINCE)
    derived.put(("config", "pack_len"), _asked_pack_len(sft), since=OPTIONS_SINCE)
    _gate_inputs(inputs, derived, manifest, reading)
    _gate_sample(inputs, derived, manifest, reading)
    if "format" not in config:
        return  # a record of an older spec states none of them (tools/argv_record names their absence)
    derived.problems += _option_problems(config, manifest, sft, reading)


def _asked_pack_len(sft: dict[str, Any] | None) -> Any:
    """The --pack-len a fine-tuning manifest's windows were packed at (None for a corpus)."""
    if sft is None:
        return None
    length = sft.get("pack_len")
    if sft.get("format") == "prefs" and isinstance(length, int):
        return length // PAIR_ROWS
    return length


def _gate_inputs(
    inputs: Inputs, derived: Derivation, manifest: dict[str, Any], reading: dict[str, Any] | None
) -> None:
    """GATE-DATA-014's check `inputs`: the glob it judged by is the manifest's, and the files it
    saw read are the ones the manifest's sources count; its check `separated`: the separator
    it measured the documents against is the manifest's doc_sep, and a record of rev 5 or later
    whose manifest states a doc_sep made the check (a separator stated but never measured); its
    check `cut`: the --doc-bytes it measured the pieces against is the manifest's doc_bytes."""
    if "GATE-DATA-014" in inputs.stale:
        return
    gate = next((g for g in inputs.record.gates if g.id == "GATE-DATA-014"), None)
    measured = None if gate is None else gate.measured
    if not isinstance(measured, dict) or "files_read" not in measured:
        return
    doc_sep = (reading or {}).get("doc_sep")
    if "separated_documents" in measured:
        derived.gate("GATE-DATA-014", {"doc_sep": doc_sep})
    elif doc_sep is not None and gate is not None and gate.revision >= SEPARATED_SINCE_REVISION:
        derived.problems.append(
            f"manifest.json read text with doc_sep {doc_sep!r}, but GATE-DATA-014 (rev {gate.revision}) "
            "holds no check separated: no document was measured against the separator"
        )
    if "cut_documents" in measured:
        derived.gate("GATE-DATA-014", {"doc_bytes": (reading or {}).get("doc_bytes")})
    sources = _table(manifest.get("sources")) or {}
    files = [stats.get("files") for stats in sources.values() if isinstance(stats, dict)]
    derived.gate("GATE-DATA-014", {"glob": (reading or {}).get("glob")})
    if all(isinstance(n, int) for n in files):
        derived.gate("GATE-DATA-014", {"files_read": sum(files)})


def _gate_sample(
    inputs: Inputs, derived: Derivation, manifest: dict[str, Any], reading: dict[str, Any] | None
) -> None:
    """GATE-DATA-007's check `sample`: the sample it measured is the one the manifest states, drawn
    under the manifest's seed and budget; a bpe this prepare trained at rev 4 or later made it."""
    if "GATE-DATA-007" in inputs.stale:
        return
    gate = next((g for g in inputs.record.gates if g.id == "GATE-DATA-007"), None)
    if gate is None or not isinstance(gate.measured, dict):
        return
    tokenizer = _table(manifest.get("tokenizer")) or {}
    if "sample_sha256" in gate.measured:
        stated = {"sample_sha256": tokenizer.get("sample_sha256"), "sample_seed": manifest.get("seed")}
        derived.gate("GATE-DATA-007", {**stated, "sample_budget": (reading or {}).get("bpe_sample")})
        return
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    if config.get("tokenizer") == "bpe" and gate.revision >= SAMPLE_SINCE_REVISION:
        derived.problems.append(
            f"manifest.json's bpe was trained by this prepare, but GATE-DATA-007 (rev {gate.revision}) holds "
            "no check sample: the units it was trained on were never held to the seed's draw"
        )


def _option_problems(
    config: dict[str, Any],
    manifest: dict[str, Any],
    sft: dict[str, Any] | None,
    reading: dict[str, Any] | None,
) -> list[str]:
    """What the stated options say that the manifest contradicts, beyond the derived fields."""
    problems = []
    if sft is None and reading is None:
        problems.append(
            "manifest.json keeps neither a corpus's `reading` nor a fine-tuning set's `sft`: nothing shows "
            "how the data was read, so the stated options cannot be held to it"
        )
    fields = (reading or {}).get("text_field") or []
    if sorted(map(str, config.get("text_field") or [])) != sorted(map(str, fields)):
        problems.append(
            f"config.text_field is {config.get('text_field')!r}, but manifest.json read the records' text "
            f"from {fields!r}"
        )
    asked, written = config.get("dtype"), manifest.get("dtype")
    if asked not in (None, "auto") and asked != written:
        problems.append(f"config.dtype is {asked!r}, but manifest.json's shards are {written!r}")
    tokenizer = _table(manifest.get("tokenizer")) or {}
    word = config.get("tokenizer")
    named = TOKENIZER_NAMES.get(word) if isinstance(word, str) else None
    named = "hf" if isinstance(word, str) and word.startswith(HF_PREFIX) else named
    if named is not None and tokenizer.get("name") != named:
        problems.append(
            f"config.tokenizer is {word!r}, but manifest.json's tokenizer is {tokenizer.get('name')!r}"
        )
    vocab, size = config.get("vocab_size"), tokenizer.get("vocab_size")
    if tokenizer.get("name") == "bpe" and isinstance(vocab, int) and isinstance(size, int) and size > vocab:
        problems.append(f"config.vocab_size is {vocab}, but manifest.json's bpe tokenizer has {size} ids")
    if sft is not None and config.get("template") is not None and sft.get("renderer") != "stack":
        problems.append(
            f"config.template is {config['template']!r}, but manifest.json's examples were rendered by "
            f"{sft.get('renderer')!r}'s template, not the one given"
        )
    return problems
