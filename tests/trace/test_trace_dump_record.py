"""`stack trace`: a correct `--dump` record passes the checker, and the trace's dtype is held to
the one asked for.

* The dump's calibration forwards (fp64, then the naive reference path) run before the traced one,
  so the record's GATE-TRACE-002 statistics and identities are those trace.json shows, not the
  naive path's; an unmutated dump trace of a small model passes the checker.
* Planted: `trace --dtype-b bf16` running in fp16. GATE-TRACE-002 rev 5 check dtype holds every
  path's sites to the dtype its name asks for (contracts.trace_paths) and halts; where trace.json
  (a bisection's) names no paths, the checker reads them from the record's config.
* Planted: a bisection's min_atol taken over the elements beyond atol (0.0 at every site) and
  judged on: GATE-TRACE-003 rev 6 check margins recomputes each site's margins from its values
  (contracts.trace_tolerance.tolerance_margins) and halts.
* A --dump that kept a large site's first elements instead of its evenly spaced ones:
  GATE-TRACE-002 rev 5 check dump reads the dump back and holds each site to the traced tensor at
  the format's positions (contracts.dump_sample), and halts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.evidence import read_evidence
from contracts.judges import forced_off
from stack.cli import main
from stack.trace import bisect, calibrate, dump
from tests.support.ledger_support import assert_found, edited, findings
from tests.support.trace_support import save_run, tiny_model

PROMPT = "the gate fired at layer one"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-layer run to trace."""
    root = tmp_path_factory.mktemp("runs")
    save_run(root / "good", tiny_model())
    return root / "good"


def _trace(out: Path, run: Path, *options: str) -> int:
    argv = ["trace", str(run), "--prompt", PROMPT, *options]
    return main([*argv, "--json", str(out / "t.json"), "--out", str(out / "rec")])


def test_a_dump_trace_passes_the_checker(run: Path, tmp_path: Path) -> None:
    assert _trace(tmp_path, run, "--dump", str(tmp_path / "d.json")) == 0
    record = read_evidence(tmp_path / "rec" / "metadata.json")
    (traced,) = [g.measured for g in record.gates if g.id == "GATE-TRACE-002"]
    shown = {s["name"]: s["stats"] for s in json.loads((tmp_path / "t.json").read_text())["trace"]["sites"]}
    # the record's statistics are those of the forward trace.json shows, not a calibration's
    assert {n: shown[n]["mean"] for n in traced["stats_recorded"]} == {
        n: s["mean"] for n, s in traced["stats_recorded"].items()
    }
    assert findings(tmp_path / "rec") == []


def _bf16_as_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the bf16 path runs in fp16."""
    monkeypatch.setitem(calibrate.DTYPES, "bf16", torch.float16)


@pytest.mark.gate("GATE-TRACE-002")
@pytest.mark.parametrize("option", ["--dtype-b", "--dtype"])
def test_a_bf16_path_run_in_fp16_halts(
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    option: str,
) -> None:
    _bf16_as_fp16(monkeypatch)
    assert _trace(tmp_path, run, option, "bf16") == 3
    err = capsys.readouterr().err
    assert "GATE-TRACE-002" in err and "asked for bf16 (bfloat16)" in err and "float16" in err


def test_a_bf16_path_run_in_fp16_is_named_by_the_checker(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bf16_as_fp16(monkeypatch)
    with forced_off("GATE-TRACE-002"):
        _trace(tmp_path, run, "--dtype-b", "bf16")
    found = findings(tmp_path / "rec")
    assert_found(found, "B trace's sites hold float16", "bf16")
    assert_found(found, "GATE-TRACE-002", "asked for bf16")


@pytest.mark.holds("GATE-TRACE-002")
def test_a_bf16_path_run_in_bf16_holds(run: Path, tmp_path: Path) -> None:
    assert _trace(tmp_path, run, "--dtype-b", "bf16") == 0
    record = read_evidence(tmp_path / "rec" / "metadata.json")
    (traced,) = [g.measured for g in record.gates if g.id == "GATE-TRACE-002"]
    assert traced["dtype_asked"] == {"A": "fp32", "B": "bf16"}
    assert traced["dtype_seen"] == {"A": ["float32"], "B": ["bfloat16"]}
    assert findings(tmp_path / "rec") == []


def _margins_over_atol(monkeypatch: pytest.MonkeyPatch, scale: float) -> None:
    """Planted: each site's min_atol off what its values give: 0 (the mutant's, over the elements
    beyond atol: none at a calibrated atol) or short of it by a few ulp; 1.0 reports it unchanged."""
    real = bisect.compare_site

    def planted(*args: Any, **kwargs: Any) -> Any:
        c = real(*args, **kwargs)
        return dataclasses.replace(c, min_atol=c.min_atol * scale)

    monkeypatch.setattr(bisect, "compare_site", planted)


@pytest.mark.gate("GATE-TRACE-003")
@pytest.mark.parametrize("scale", [0.0, 1 - 2**-40], ids=["the-mutant-0", "one-ulp-short"])
def test_a_min_atol_other_than_its_values_give_halts(
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scale: float,
) -> None:
    _margins_over_atol(monkeypatch, scale)
    assert _trace(tmp_path, run, "--dtype-b", "bf16") == 3
    err = capsys.readouterr().err
    assert "GATE-TRACE-003" in err and "tolerance_margins" in err


@pytest.mark.holds("GATE-TRACE-003")
def test_the_margins_of_a_bisection_hold(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _margins_over_atol(monkeypatch, 1.0)
    assert _trace(tmp_path, run, "--dtype-b", "bf16") == 0
    record = read_evidence(tmp_path / "rec" / "metadata.json")
    (result,) = [g for g in record.gates if g.id == "GATE-TRACE-003"]
    assert result.measured["margins_reported"] == result.measured["margins_recomputed"]
    assert any(m["min_atol"] > 0 for m in result.measured["margins_recomputed"].values())


def test_margins_restated_in_the_record_are_named_by_the_checker(run: Path, tmp_path: Path) -> None:
    """A record whose margins (reported and recomputed alike) say 0 while trace.json keeps the
    comparison's numbers: the checker derives the reported ones from trace.json."""
    assert _trace(tmp_path, run, "--dtype-b", "bf16") == 0

    def zeroed(data: dict[str, Any], _: Path) -> None:
        (gate,) = [g for g in data["gates"] if g["id"] == "GATE-TRACE-003"]
        for key in ("margins_reported", "margins_recomputed"):
            gate["measured"][key] = {n: {"min_atol": 0.0, "min_rtol": 0.0} for n in gate["measured"][key]}

    assert_found(findings(edited(tmp_path / "rec", zeroed)), "GATE-TRACE-003", "margins_reported")


def _first_elements(monkeypatch: pytest.MonkeyPatch, shift: int) -> None:
    """Planted: a large site's dump keeps the elements `shift` places after the format's positions
    (the mutant's: its first SAMPLE_LIMIT elements); shift 0 keeps the right ones."""
    real = dump.sample_indices

    def planted(numel: int, limit: int) -> torch.Tensor:
        positions = real(numel, limit)
        if numel <= limit:
            return positions
        return torch.arange(limit) if shift is None else (positions + shift).clamp(max=numel - 1)

    monkeypatch.setattr(dump, "sample_indices", planted)


@pytest.mark.gate("GATE-TRACE-002")
@pytest.mark.parametrize("shift", [None, 1], ids=["the-mutant-first-elements", "one-position-on"])
def test_a_dump_holding_other_elements_than_the_site_halts(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], shift: Any
) -> None:
    _first_elements(monkeypatch, shift)
    long_prompt = "--prompt=" + PROMPT  # 27 tokens: the logits (27 × 257) exceed the sample limit
    code = main(
        ["trace", str(run), long_prompt, "--dump", str(tmp_path / "d.json"), "--out", str(tmp_path / "r")]
    )
    assert code == 3
    err = capsys.readouterr().err
    assert "GATE-TRACE-002" in err and "logits" in err and "contracts.dump_sample" in err


@pytest.mark.holds("GATE-TRACE-002")
def test_a_dump_read_back_holds_and_its_sha256_is_stated(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _first_elements(monkeypatch, 0)
    long_prompt = "--prompt=" + PROMPT
    out = tmp_path / "d.json"
    assert main(["trace", str(run), long_prompt, "--dump", str(out), "--out", str(tmp_path / "r")]) == 0
    record = read_evidence(tmp_path / "r" / "metadata.json")
    (traced,) = [g.measured for g in record.gates if g.id == "GATE-TRACE-002"]
    assert traced["dump_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert traced["dump_unlike"] == [] and traced["dump_sites"] == traced["dump_traced"]
