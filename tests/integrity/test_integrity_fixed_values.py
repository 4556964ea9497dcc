"""Tamperings the checker decides, each planted in a copy of a committed record:

- values the code fixes without an option (caught after a perfect forger's finish, `forger_finished`):
  a lens reading's mode against config.lens, its position against the prompt's last where the
  line gives no --position, a trace's path_a dtype against the parser's default, a
  lens-train's nesterov against LensTraining's default no option reaches;
- structural counts the record's other values fix: GATE-DATA-005's max_gap against the span of its
  ids, an ablation's logits.elements against the shape of its tokens × vocabulary; and,
  derived again (a bare plant is named, the forger's finish can only put the truth back): a patch's
  config.patch_sites, GATE-LENS-005's sites, GATE-LENS-006's objective_steps and a
  memorization's greedy GATE-TRAIN-005 sampler;
- an export's tokenizer files, tokenizer_keys and config.json special ids against what the committed
  model makes again.

The records as filed pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.ledger_support import (
    ABLATION_RUN,
    EXPORT_RUN,
    LENS_RUN,
    LENS_TRAIN_RUN,
    MEMORIZATION_RUN,
    PATCH_RUN,
    RECORDS,
    Change,
    assert_found,
    findings,
    forger_finished,
    gate,
    planted,
)

FORGED = "f" * 64


def _record(run: str) -> dict[str, Any]:
    return json.loads((RECORDS / run / "metadata.json").read_text(encoding="utf-8"))


def _json_edited(run_dir: Path, name: str, edit: Any) -> None:
    path = run_dir / name
    report = json.loads(path.read_text(encoding="utf-8"))
    edit(report)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _logit_lens(data: dict[str, Any], run_dir: Path) -> None:
    _json_edited(run_dir, "trace.json", lambda r: r.update(mode="logit-lens"))
    data["metrics"]["mode"] = "logit-lens"


def _earlier_position(_data: dict[str, Any], run_dir: Path) -> None:
    _json_edited(run_dir, "trace.json", lambda r: r.update(position=r["position"] - 1))


def _other_dtype(data: dict[str, Any], _dir: Path) -> None:
    assert data["config"]["path_a"].endswith(", fp32)")
    data["config"]["path_a"] = data["config"]["path_a"].replace(", fp32)", ", bf16)")


def _no_nesterov(data: dict[str, Any], _dir: Path) -> None:
    data["config"]["nesterov"] = False
    measured = gate(data, "GATE-LENS-002")["measured"]
    for applied in measured["applied_hyperparameters"]:
        applied["nesterov"] = False
    measured["stated_hyperparameters"]["nesterov"] = False


def _even_spread(data: dict[str, Any], _dir: Path) -> None:
    measured = gate(data, "GATE-DATA-005")["measured"]
    measured["max_gap"] = (measured["last_id"] - measured["first_id"]) // measured["heldout_windows"]


def _more_logits(_data: dict[str, Any], run_dir: Path) -> None:
    _json_edited(run_dir, "trace.json", lambda r: r["logits"].update(elements=r["logits"]["elements"] + 1))


def _export_edit(edit: Any) -> Change:
    return lambda _data, run_dir: _json_edited(run_dir, "export.json", edit)


def _file_bytes(name: str) -> Change:
    return _export_edit(lambda r: r["files"][name].update(bytes=r["files"][name]["bytes"] + 30))


# (what is restated, run, plant, a fragment of the finding): plants caught after the forger's finish.
FINISHED: list[tuple[str, str, Change, str]] = [
    ("lens-mode", LENS_RUN, _logit_lens, "but config.lens is"),
    ("lens-position", LENS_RUN, _earlier_position, "gives no --position"),
    ("patch-dtype", PATCH_RUN, _other_dtype, "leaves --dtype to the default"),
    ("lens-nesterov", LENS_TRAIN_RUN, _no_nesterov, "no option sets LensTraining.nesterov"),
    ("max-gap", LENS_TRAIN_RUN, _even_spread, "gates[GATE-DATA-005].measured.max_gap is"),
    ("logits-elements", ABLATION_RUN, _more_logits, "logits.elements is"),
    (
        "tokenizer-keys",
        EXPORT_RUN,
        _export_edit(lambda r: r.update(tokenizer_keys=r["tokenizer_keys"] + 2)),
        "tokenizer_keys",
    ),
    (
        "config-pad-token-id",
        EXPORT_RUN,
        _export_edit(lambda r: r["special_ids"].update({"config.json pad_token_id": 0})),
        "special_ids['config.json pad_token_id'] is 0",
    ),
    (
        "special-tokens-map-bytes",
        EXPORT_RUN,
        _file_bytes("special_tokens_map.json"),
        "special_tokens_map.json is",
    ),
    ("tokenizer-config-bytes", EXPORT_RUN, _file_bytes("tokenizer_config.json"), "tokenizer_config.json is"),
    (
        "gatestack-tokenizer-digest",
        EXPORT_RUN,
        _export_edit(lambda r: r["files"]["gatestack_tokenizer.json"].update(sha256=FORGED)),
        "gatestack_tokenizer.json is",
    ),
]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(("restated", "run", "plant", "fragment"), FINISHED, ids=[c[0] for c in FINISHED])
def test_a_fixed_value_restated_is_caught_after_the_forgers_finish(
    tmp_path: Path, restated: str, run: str, plant: Change, fragment: str
) -> None:
    assert_found(findings(planted(tmp_path, run, forger_finished(plant))), fragment)


def _patch_sites(data: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    trace = json.loads((RECORDS / PATCH_RUN / "trace.json").read_text(encoding="utf-8"))
    return {("config", "patch_sites"): [row["site"] for row in trace["per_layer"]]}


def _lens_sites(data: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    return {("gates", "GATE-LENS-005", "sites"): gate(data, "GATE-LENS-005")["measured"]["sites"]}


def _objective_steps(data: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    return {("gates", "GATE-LENS-006", "objective_steps"): [1, data["config"]["steps"]]}


def _greedy(data: dict[str, Any]) -> dict[tuple[str, ...], Any]:
    measured = gate(data, "GATE-TRAIN-005")["measured"]
    assert (measured["temperature"], measured["repetition_penalty"]) == (0.0, 1.0)
    return {("gates", "GATE-TRAIN-005", k): measured[k] for k in ("temperature", "repetition_penalty")}


def _at(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    return data["config"][path[1]] if path[0] == "config" else gate(data, path[1])["measured"][path[2]]


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    (data["config"] if path[0] == "config" else gate(data, path[1])["measured"])[path[-1]] = value


def _changed(value: Any) -> Any:
    if isinstance(value, list):
        return value[1:] if len(value) > 2 else [value[0], value[-1] // 2]
    return value + 0.8 if value == 0.0 else value + 0.2


# (what is restated, run, the derived values the plant changes) for plants of a derived field.
DERIVED = [
    ("patch-sites", PATCH_RUN, _patch_sites),
    ("lens-sites", LENS_RUN, _lens_sites),
    ("objective-steps", LENS_TRAIN_RUN, _objective_steps),
    ("greedy-sampler", MEMORIZATION_RUN, _greedy),
]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(("restated", "run", "rule"), DERIVED, ids=[c[0] for c in DERIVED])
def test_a_fixed_value_restated_is_derived_again(tmp_path: Path, restated: str, run: str, rule: Any) -> None:
    """The value the record's artifacts (or the code, for a sampler no option reaches) fix is what the
    record states; planted, the checker names it, and the forger's finish can only put it back."""
    due = rule(_record(run))
    assert all(_at(_record(run), path) == value for path, value in due.items())

    def plant(data: dict[str, Any], _dir: Path) -> None:
        for path, value in due.items():
            _set(data, path, _changed(value))

    found = findings(planted(tmp_path / "bare", run, plant))
    for path in due:
        where = f"config.{path[1]}" if path[0] == "config" else f"gates[{path[1]}].measured.{path[2]}"
        assert_found(found, where, "but its artifacts derive")
    restored = json.loads(
        (planted(tmp_path / "forged", run, forger_finished(plant)) / "metadata.json").read_text()
    )
    assert all(_at(restored, path) == value for path, value in due.items())


@pytest.mark.parametrize(
    "run", sorted({LENS_RUN, PATCH_RUN, LENS_TRAIN_RUN, ABLATION_RUN, EXPORT_RUN, MEMORIZATION_RUN})
)
def test_the_records_as_filed_pass(tmp_path: Path, run: str) -> None:
    assert findings(planted(tmp_path, run, lambda _d, _r: None)) == []
