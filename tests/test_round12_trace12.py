"""Round-12 mutant audit, `stack trace`: a correct `--dump` record the checker refused, and the
trace's dtype held to the one asked for.

* An unmutated `trace --dump` got 22 GATE-INTEG-001 lines: the dump's calibration forwards (fp64,
  then the naive reference path) ran after the traced one, so the record's GATE-TRACE-002
  statistics and identities were the naive path's, not those trace.json shows. The calibration now
  runs first; a dump trace of a small model passes the checker.
* R211: `trace --dtype-b bf16` ran in fp16 and every check passed: the checker skipped its
  dtype check where trace.json (a bisection's) names no paths. It now reads the paths from the
  record's config there, and names the mutant's record.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ledger_support import assert_found, findings
from trace_support import save_run, tiny_model

from contracts.evidence import read_evidence
from stack.cli import main
from stack.trace import calibrate

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
    """R211: the bf16 path runs in fp16."""
    monkeypatch.setitem(calibrate.DTYPES, "bf16", torch.float16)


def test_a_bf16_path_run_in_fp16_is_named_by_the_checker(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bf16_as_fp16(monkeypatch)
    _trace(tmp_path, run, "--dtype-b", "bf16")
    assert_found(findings(tmp_path / "rec"), "B trace's sites hold float16", "bf16")


def test_a_bf16_path_run_in_bf16_holds(run: Path, tmp_path: Path) -> None:
    _trace(tmp_path, run, "--dtype-b", "bf16")
    assert findings(tmp_path / "rec") == []
