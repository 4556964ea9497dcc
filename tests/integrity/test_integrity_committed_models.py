"""Tamperings whose records state facts of a committed model,
or of what a command made from it, that were compared only with each other: each is planted in a
copy of a committed record of the current spec and finished as a perfect forger would
(`ledger_support.rederive`: every derived field copied in, every verdict judged again, every
artifact re-hashed), and the integrity check must name it from the model or the record it read.

- a memorization's base row, a distillation's frozen teacher said to be another model's weights:
  stack.tune.frozen.weights_sha256 of the committed model (tools/committed_models.py);
- a sample's text not what its ids decode to, its prompt restated, its prompt's token count
  changed, a lens reading's top-1 label not its token's: the committed
  checkpoint's tokenizer (tools/trace_tokens.py);
- an ablation restated as another site: its own intact and ablated traces
  (contracts.derive.trace.ablation_site_problems);
- a lens reading's lens digest restated, a distillation's teacher restated as a model the
  stack refuses: the records of the lens and of the teacher (tools/cross_reads.py);
- an export's count of settings read back restated: the config.json its committed model makes.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from contracts.evidence import EVIDENCE_FILE
from tests.support.ledger_support import (
    ABLATION_RUN,
    CURRENT_RUN,
    DISTILL_RUN,
    DPO_RUN,
    EXPORT_RUN,
    LENS_RUN,
    LENS_TRAIN_RUN,
    MEMORIZATION_RUN,
    PATCH_RUN,
    RECORDS,
    SAMPLE_RUN,
    Change,
    assert_found,
    findings,
    gate,
    planted,
    rederive,
)

ANOTHER_DIGEST = hashlib.sha256(b"another model").hexdigest()


def _ledger(run: str) -> dict[str, Any]:
    return json.loads((RECORDS / run / EVIDENCE_FILE).read_text(encoding="utf-8"))


def _result(run_dir: Path, name: str, change: Any) -> None:
    """A result file of the run directory edited in place by `change`."""
    path = run_dir / name
    report = json.loads(path.read_text(encoding="utf-8"))
    change(report)
    path.write_text(json.dumps(report), encoding="utf-8")


def forged(change: Change) -> Change:
    """`change`, finished by a perfect forger (ledger_support.rederive)."""

    def finished(data: dict[str, Any], run_dir: Path) -> None:
        change(data, run_dir)
        rederive(data, run_dir, rounds=4)

    return finished


def _tuned_base(data: dict[str, Any], _run_dir: Path) -> None:
    """GATE-FT-003's base row given and measured as the fine-tuned model's weights."""
    measured = gate(data, "GATE-FT-003")["measured"]
    measured["models_given"]["base"] = measured["models_measured"]["base"] = measured["models_given"][
        "fine-tuned"
    ]


def _another_teacher_digest(data: dict[str, Any], _run_dir: Path) -> None:
    """GATE-KD-002's frozen teacher hashed as the memorization's fine-tuned model, before and after."""
    tuned = gate(_ledger(MEMORIZATION_RUN), "GATE-FT-003")["measured"]["models_given"]["fine-tuned"]
    measured = gate(data, "GATE-KD-002")["measured"]
    measured["sha256_before"] = measured["sha256_after"] = tuned


def _nicer_text(data: dict[str, Any], run_dir: Path) -> None:
    """Sample.json's text replaced by another continuation of the prompt; its drawn ids left."""
    prompt = data["config"]["prompt"]
    _result(run_dir, "sample.json", lambda s: s.update(text=prompt + '\n    print("all tests pass")\n'))


def _another_prompt(data: dict[str, Any], _run_dir: Path) -> None:
    """The prompt restated as another of as many characters, on the command line and in the config."""
    prompt = data["config"]["prompt"]
    other = prompt[::-1] if prompt[::-1] != prompt else prompt.swapcase()
    data["run"]["argv"] = [other if word == prompt else word for word in data["run"]["argv"]]
    data["config"]["prompt"] = other


def _fewer_prompt_tokens(data: dict[str, Any], run_dir: Path) -> None:
    """Sample.json's prompt_tokens one fewer (GATE-TRAIN-005's follows by re-derivation)."""
    _result(run_dir, "sample.json", lambda s: s.update(prompt_tokens=s["prompt_tokens"] - 1))


def _later_site(site: str) -> str:
    """The same site of the next block: layers.1.ffn_up → layers.2.ffn_up."""
    return re.sub(r"^layers\.(\d+)\.", lambda m: f"layers.{int(m.group(1)) + 1}.", site)


def _ablated_elsewhere(data: dict[str, Any], run_dir: Path) -> None:
    """The ablation restated as the same site a block later (command line, config, trace.json)."""
    true = data["config"]["ablate"]
    later = [_later_site(site) for site in true]
    data["run"]["argv"] = [later[true.index(w)] if w in true else w for w in data["run"]["argv"]]
    data["config"]["ablate"] = later
    _result(run_dir, "trace.json", lambda t: t.update(ablated=later))


def _another_label(data: dict[str, Any], run_dir: Path) -> None:
    """The first layer's top-1 label of the first position replaced by another character."""

    def change(trace: dict[str, Any]) -> None:
        labels = trace["per_layer"][0]["top1"]
        labels[0] = "x" if labels[0] != "x" else "y"

    _result(run_dir, "trace.json", change)


def _another_lens(data: dict[str, Any], _run_dir: Path) -> None:
    """The lens reading's lens digest restated."""
    data["config"]["lens_sha256"] = hashlib.sha256(b"another lens").hexdigest()


def _more_keys_read_back(data: dict[str, Any], run_dir: Path) -> None:
    """Export.json's architecture_keys raised (GATE-EXPORT-001 follows by re-derivation)."""
    _result(run_dir, "export.json", lambda e: e.update(architecture_keys=e["architecture_keys"] + 8))


def _teacher_of_a_short_context(data: dict[str, Any], _run_dir: Path) -> None:
    """The teacher restated as CURRENT_RUN's model (command line, places, config, lineage parent
    with that record's id and weights, GATE-KD-002's digests)."""
    teacher = _ledger(CURRENT_RUN)
    old = data["config"]["distill"]["teacher"]
    word = next(w for w, place in data["run"]["places"].items() if old in (w, place))
    argv = teacher["run"]["argv"]
    new = teacher["run"]["places"][argv[argv.index("--out") + 1]]
    data["run"]["argv"] = [new if w == word else w for w in data["run"]["argv"]]
    data["run"]["places"] = {
        (new if k == word else k): (new if k == word else v) for k, v in data["run"]["places"].items()
    }
    data["config"]["distill"]["teacher"] = new
    weights = teacher["checkpoint"]["files"]["model.safetensors"]["sha256"]
    data["lineage"]["parents"] = [
        {"role": "teacher", "run": teacher["run"]["id"], "checkpoint_sha256": weights, "path": new}
    ]
    measured = gate(data, "GATE-KD-002")["measured"]
    measured["sha256_before"] = measured["sha256_after"] = ANOTHER_DIGEST


# (what is restated, run, tampering, the record checked with it, what the check says)
PLANTS = [
    (
        "memorization-base",
        MEMORIZATION_RUN,
        _tuned_base,
        None,
        "gates[GATE-FT-003].measured.models_given.base is",
    ),
    (
        "teacher-digest",
        DISTILL_RUN,
        _another_teacher_digest,
        None,
        "gates[GATE-KD-002].measured.sha256_before is",
    ),
    ("sample-text", SAMPLE_RUN, _nicer_text, None, "sample.json: its text is"),
    ("sample-prompt", SAMPLE_RUN, _another_prompt, None, "but config.prompt and the ids it drew make"),
    ("prompt-tokens", SAMPLE_RUN, _fewer_prompt_tokens, None, "sample.json: prompt_tokens is"),
    (
        "ablated-site",
        ABLATION_RUN,
        _ablated_elsewhere,
        None,
        "differs between the intact and the ablated trace",
    ),
    ("lens-top1-label", LENS_RUN, _another_label, None, "trace.json: per_layer[0].top1[0] is"),
    (
        "lens-digest",
        LENS_RUN,
        _another_lens,
        LENS_TRAIN_RUN,
        f"but lens-train record '{LENS_TRAIN_RUN}' saved the lens",
    ),
    ("architecture-keys", EXPORT_RUN, _more_keys_read_back, None, "export.json: architecture_keys is"),
    (
        "refused-teacher",
        DISTILL_RUN,
        _teacher_of_a_short_context,
        CURRENT_RUN,
        "is one the stack refuses for this student",
    ),
]


@pytest.mark.gate("GATE-INTEG-001")
def test_a_sampler_restated_otherwise_than_its_command_line_is_caught(tmp_path: Path) -> None:
    """GATE-TRAIN-005 states the sampler its draws were replayed with, which for `stack sample` is
    the one its command line set (the config): a temperature restated there alone is named."""

    def hotter(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, "GATE-TRAIN-005")["measured"]["temperature"] = 1.0

    said = "gates[GATE-TRAIN-005].measured.temperature is 1.0, but its artifacts derive 0.8"
    assert_found(findings(planted(tmp_path, SAMPLE_RUN, hotter)), said)


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "change", "beside", "says"), [p[1:] for p in PLANTS], ids=[p[0] for p in PLANTS]
)
def test_a_fact_of_the_model_or_record_it_read_restated_is_caught(
    tmp_path: Path, run: str, change: Change, beside: str | None, says: str
) -> None:
    checked = [RECORDS / beside] if beside is not None else []
    assert_found(findings(planted(tmp_path, run, forged(change)), *checked), says)


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize(("run", "beside"), sorted({(p[1], p[3]) for p in PLANTS}, key=str))
def test_the_records_as_filed_pass(tmp_path: Path, run: str, beside: str | None) -> None:
    checked = [RECORDS / beside] if beside is not None else []
    assert findings(planted(tmp_path, run, lambda _data, _dir: None), *checked) == []


def test_the_teacher_planted_has_a_context_below_the_students_windows() -> None:
    """The planted teacher is one the stack refuses: its context is below the student's (no seq_len)."""
    teacher, student = _ledger(CURRENT_RUN)["config"]["model"], _ledger(DISTILL_RUN)["config"]
    assert student["distill"].get("seq_len") is None
    assert teacher["ctx"] < student["model"]["ctx"]


# -- every other fact a record states of a committed model it read --------------------------------


def _measured(gate_id: str, key: str, value: Any) -> Change:
    def change(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, gate_id)["measured"][key] = value

    return change


def _field(path: tuple[str, ...], value: Any) -> Change:
    def change(data: dict[str, Any], _run_dir: Path) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _lens_tokens(data: dict[str, Any], run_dir: Path) -> None:
    _result(run_dir, "trace.json", lambda t: t.update(tokens=[*t["tokens"][:-1], "?"]))


def _patch_target(data: dict[str, Any], run_dir: Path) -> None:
    data["config"]["target"] += 1
    _result(run_dir, "trace.json", lambda t: t["metric"].update(target=t["metric"]["target"] + 1))


def _config_json(data: dict[str, Any], run_dir: Path) -> None:
    _result(run_dir, "export.json", lambda e: e["files"]["config.json"].update(sha256=ANOTHER_DIGEST))


def _lens_model(data: dict[str, Any], _run_dir: Path) -> None:
    gate(data, "GATE-LENS-004")["measured"]["lens_model_sha256"] = ANOTHER_DIGEST


FACTS = [
    (
        "reference",
        DPO_RUN,
        _measured("GATE-DPO-002", "sha256_after", ANOTHER_DIGEST),
        None,
        "sha256_after is",
    ),
    # GATE-DATA-007's model_vocab its artifacts already derive (a forger restores it); its tokenizer name not
    (
        "data-tokenizer",
        DPO_RUN,
        _measured("GATE-DATA-007", "model_tokenizer", "bpe"),
        None,
        "model_tokenizer is 'bpe', but the committed model",
    ),
    (
        "teacher-tokenizer",
        DISTILL_RUN,
        _measured("GATE-KD-001", "tokenizer_ids", 300),
        None,
        "tokenizer_ids is",
    ),
    (
        "teacher-vocab",
        DISTILL_RUN,
        _measured("GATE-KD-001", "teacher_vocab", 300),
        None,
        "teacher_vocab is 300",
    ),
    (
        "lens-model",
        LENS_RUN,
        _measured("GATE-LENS-004", "model_sha256", ANOTHER_DIGEST),
        None,
        "model_sha256 is",
    ),
    ("lens-trained-on", LENS_RUN, _lens_model, LENS_TRAIN_RUN, "lens_model_sha256 is"),
    (
        "tokenizer",
        SAMPLE_RUN,
        _field(("data", "tokenizer_sha256"), ANOTHER_DIGEST),
        None,
        "data.tokenizer_sha256",
    ),
    ("step", SAMPLE_RUN, _field(("checkpoint", "step"), 1), None, "checkpoint.step is 1, but the committed"),
    ("lens-tokens", LENS_RUN, _lens_tokens, None, "trace.json: its tokens are"),
    ("patch-target", PATCH_RUN, _patch_target, None, "config.target is"),
    ("config-json", EXPORT_RUN, _config_json, None, "export.json: config.json's sha256 is"),
]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "change", "beside", "says"), [f[1:] for f in FACTS], ids=[f[0] for f in FACTS]
)
def test_each_fact_a_record_states_of_the_committed_model_it_read_is_derived_from_it(
    tmp_path: Path, run: str, change: Change, beside: str | None, says: str
) -> None:
    checked = [RECORDS / beside] if beside is not None else []
    assert_found(findings(planted(tmp_path, run, forged(change)), *checked), says)
