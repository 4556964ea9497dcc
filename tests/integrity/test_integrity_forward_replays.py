"""Tamperings that only the forwards of a
committed model decide, replayed by the checker (tools/forward_replays.py): each is planted in
a copy of a committed record of the current spec and finished by a perfect forger
(`forger_finished`: every field the artifacts derive copied in, every artifact re-hashed), and the
integrity check must still name the lie; the copy as filed, and one restated within the replay's
tolerance, pass:

- a quantisation's GATE-HQQ-002 `max_kl_nats` restated in the record and surgery.json: the
  committed source quantised again by `stack.cli.quantize.operate`, two CPU forwards over its sample;
- an ablation's trace.json `logits.failing` and `logits.cosine` restated: the committed
  checkpoint's intact and ablated forwards again (`stack.trace.modes.ablation`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts.evidence import EvidenceRecord
from contracts.spec import load_spec
from tests.support.ledger_support import (
    ABLATION_RUN,
    QUANTIZE_RUN,
    RECORDS,
    Change,
    assert_found,
    findings,
    forger_finished,
    planted,
)
from tools.integrity.models.forward_replays import hqq_replay_findings, replay_tolerances

SPEC = load_spec()
# GATE-INTEG-001's replay_rtol and replay_ratio_rtol, as the checker reads them.
TOLERANCES_READ = replay_tolerances(SPEC)

# An ablation of spec 1.29.0 whose forwards ran on one thread: its ratios to an intact logit are
# 1.6e-4 of themselves from a replay on two, which replay_ratio_rtol holds.
OTHER_THREADS_RUN = "trace-20261125T174947"
REPLAYED = "but the replay gives"
# Just beyond and just inside the replay's relative tolerance, as factors of the filed value.
BEYOND, INSIDE = 1 + 2 * TOLERANCES_READ.value, 1 + TOLERANCES_READ.value / 2


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _hqq_max(restate: Callable[[float], float]) -> Change:
    """GATE-HQQ-002's max_kl_nats in surgery.json (its gate block and measured.agreement)
    made `restate` of itself; the forger's finish carries it into the record."""

    def plant(_data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "surgery.json"
        report = _json(path)
        blocks = (report["gates"]["GATE-HQQ-002"], report["measured"]["agreement"])
        stated = blocks[0]["max_kl_nats"]
        for block in blocks:
            block["max_kl_nats"] = restate(stated)
        path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    return forger_finished(plant)


def _logits(key: str, restate: Callable[[Any], Any]) -> Change:
    """Trace.json's logits.`key` made `restate` of itself."""

    def plant(_data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "trace.json"
        report = _json(path)
        report["logits"][key] = restate(report["logits"][key])
        path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    return forger_finished(plant)


def _replayed(found: list[str]) -> list[str]:
    return [line for line in found if REPLAYED in line]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    "restate",
    [lambda _v: 0.01, lambda v: v * BEYOND, lambda v: v / BEYOND],
    ids=["as-0.01", "above", "below"],
)
def test_a_quantisations_max_kl_restated_is_caught_by_its_replay(
    tmp_path: Path, restate: Callable[[float], float]
) -> None:
    copy = planted(tmp_path, QUANTIZE_RUN, _hqq_max(restate))
    said = _json(copy / "metadata.json")["gates"]
    stated = next(g for g in said if g["id"] == "GATE-HQQ-002")["measured"]["max_kl_nats"]
    found = findings(copy)
    assert_found(found, f"gates[GATE-HQQ-002].measured.max_kl_nats is {stated!r}", REPLAYED, "stack quantize")
    assert_found(found, f"metrics.agreement.max_kl_nats is {stated!r}", REPLAYED)


@pytest.mark.holds("GATE-INTEG-001")
def test_a_quantisations_max_kl_within_the_tolerance_holds(tmp_path: Path) -> None:
    assert _replayed(findings(planted(tmp_path, QUANTIZE_RUN, _hqq_max(lambda v: v * INSIDE)))) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_an_ablations_failing_count_restated_is_caught_by_its_replay(tmp_path: Path) -> None:
    """2827 failing as 1000, and one element fewer: a count has no tolerance."""
    failing = _json(RECORDS / ABLATION_RUN / "trace.json")["logits"]["failing"]
    for stated in (1000, failing - 1):
        copy = planted(tmp_path / str(stated), ABLATION_RUN, _logits("failing", lambda _v, s=stated: s))
        assert_found(findings(copy), f"trace.json: logits.failing is {stated}", f"{REPLAYED} {failing}")


# A float of the logits block with the tolerance it is held to: the cosine to replay_rtol, the
# largest ratio to an intact logit to replay_ratio_rtol.
TOLERANCES = [("cosine", TOLERANCES_READ.value), ("min_rtol", TOLERANCES_READ.ratio)]


@pytest.mark.gate("GATE-INTEG-001")
def test_an_ablations_cosine_restated_as_a_milder_ablation_is_caught(tmp_path: Path) -> None:
    """The cosine 0.9907 restated as 0.9990, a milder ablation."""
    copy = planted(tmp_path, ABLATION_RUN, _logits("cosine", lambda _v: 0.999))
    assert_found(findings(copy), "trace.json: logits.cosine is 0.999", REPLAYED, "modes.ablation")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(("key", "rtol"), TOLERANCES, ids=[k for k, _ in TOLERANCES])
def test_an_ablations_float_beyond_its_tolerance_is_caught(tmp_path: Path, key: str, rtol: float) -> None:
    copy = planted(tmp_path, ABLATION_RUN, _logits(key, lambda v: v / (1 + 2 * rtol)))
    stated = _json(copy / "trace.json")["logits"][key]
    assert_found(findings(copy), f"trace.json: logits.{key} is {stated!r}", REPLAYED, "modes.ablation")


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize(("key", "rtol"), TOLERANCES, ids=[k for k, _ in TOLERANCES])
def test_an_ablations_float_within_its_tolerance_holds(tmp_path: Path, key: str, rtol: float) -> None:
    copy = planted(tmp_path, ABLATION_RUN, _logits(key, lambda v: v / (1 + rtol / 2)))
    assert _replayed(findings(copy)) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_an_ablation_without_its_logits_block_is_named(tmp_path: Path) -> None:
    """A record the replay covers and cannot hold (trace.json's logits dropped) is a named problem."""

    def plant(_data: dict[str, Any], run_dir: Path) -> None:
        report = _json(run_dir / "trace.json")
        del report["logits"]
        (run_dir / "trace.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    assert_found(findings(planted(tmp_path, ABLATION_RUN, plant)), "trace.json: logits is missing", REPLAYED)


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize("run", [QUANTIZE_RUN, ABLATION_RUN, OTHER_THREADS_RUN])
def test_the_records_as_filed_pass_their_replays(tmp_path: Path, run: str) -> None:
    """The current quantisation and ablation, and an ablation whose forwards summed in another order
    (another thread count), pass as filed."""
    assert findings(planted(tmp_path, run, lambda _data, _dir: None)) == []


def test_a_quantisation_of_a_source_outside_the_repository_is_named_not_passed() -> None:
    data = _json(RECORDS / QUANTIZE_RUN / "metadata.json")
    data["config"]["source"] = "/elsewhere/model"
    wrong, unheld = hqq_replay_findings(EvidenceRecord.model_validate(data), SPEC)
    assert wrong == []
    assert_found(unheld, "GATE-HQQ-002's KL is not replayed", "'/elsewhere/model' is no committed model")
