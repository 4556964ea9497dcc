"""Tamperings of the eighth ledger and mutant audits (2026-11-26) that the checker now derives from a
record's own artifacts, its command line or its committed model: each is planted in a copy of a
committed record, finished by a perfect forger where the field is derived (every field the
artifacts derive re-derived, every artifact re-hashed), and the integrity check must name it.

- trace: a site's shape and count restated (W36: layers.0.k 128 wide, a model without grouped-query
  attention; the checkpoint's [model] table decides every site's width, contracts.selection.site_widths);
  a path's dtype restated against --dtype (R83), every traced site against its path's dtype; the
  table's statistic restated against trace.json's (R103);
- patch: config.foil restated with no --foil given (W66: trace.json's metric keeps the foil it scored);
- lens: the read position restated against trace.json's (R93).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ledger_support import LEDGER, Change, findings, planted, rederive
from test_integrity_derived import LENS_RUN, PATCH_RUN, TRACE_RUN


def _finished(plant: Change) -> Change:
    """`plant`, then a perfect forger's finish (ledger_support.rederive)."""

    def change(data: dict[str, Any], run_dir: Path) -> None:
        plant(data, run_dir)
        rederive(data, run_dir, rounds=4)

    return change


def _report_edited(edit: Any) -> Change:
    """trace.json changed by `edit`, and the record re-derived from it by a perfect forger."""

    def plant(data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "trace.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        edit(report, data)
        path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    return _finished(plant)


def _assert_found(found: list[str], *fragments: str) -> None:
    assert any(all(f in line for f in fragments) for line in found), "\n".join(found) or "(nothing found)"


def _site(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(site for site in report["trace"]["sites"] if site["name"] == name)


def test_trace_site_widened_against_the_checkpoints_shapes_is_caught(tmp_path: Path) -> None:
    """W36: layers.0.k restated as wide as q (shape and count), as a model without grouped-query
    attention would trace it; the checkpoint's [model] table makes k n_kv_heads × head_dim wide."""

    def widen(report: dict[str, Any], _data: dict[str, Any]) -> None:
        k, q = _site(report, "layers.0.k"), _site(report, "layers.0.q")
        assert k["shape"] != q["shape"]
        k["shape"], k["stats"]["count"] = q["shape"], q["stats"]["count"]

    found = findings(planted(tmp_path, TRACE_RUN, _report_edited(widen)))
    _assert_found(found, "site layers.0.k is", "but its checkpoint's model makes it")


def test_trace_path_dtype_restated_against_its_sites_and_command_line_is_caught(tmp_path: Path) -> None:
    """R83 seen from the ledger: a path described in bf16 whose sites hold float32 (the forward ran
    in fp32), and a command line's --dtype bf16 against a path described in fp32."""

    def as_bf16(report: dict[str, Any], _data: dict[str, Any]) -> None:
        report["paths"]["A"] = report["paths"]["A"].replace("fp32)", "bf16)")

    found = findings(planted(tmp_path / "sites", TRACE_RUN, _report_edited(as_bf16)))
    _assert_found(found, "trace.json: the trace trace's sites hold float32", "is bfloat16")

    def asked_bf16(data: dict[str, Any], _dir: Path) -> None:
        data["run"]["argv"] += ["--dtype", "bf16"]

    found = findings(planted(tmp_path / "argv", TRACE_RUN, _finished(asked_bf16)))
    _assert_found(found, "config.path_a is", "but its command line gives --dtype bf16")


def test_trace_statistic_restated_against_trace_json_is_caught(tmp_path: Path) -> None:
    """R103 seen from the ledger: trace.json names the table's statistic (from 1.32.0); config.stat
    restates it, and a record that says absmax where the table showed std is caught."""

    def shown(report: dict[str, Any], _data: dict[str, Any]) -> None:
        report["stat"] = "std"

    def claimed(data: dict[str, Any], _dir: Path) -> None:
        data["config"]["stat"] = "absmax"

    found = findings(planted(tmp_path, TRACE_RUN, _then(_report_edited(shown), claimed)))
    _assert_found(found, "config.stat is", "absmax", "derive", "std")


def _then(first: Change, second: Change) -> Change:
    def change(data: dict[str, Any], run_dir: Path) -> None:
        first(data, run_dir)
        second(data, run_dir)

    return change


def test_patch_foil_restated_without_a_foil_option_is_caught(tmp_path: Path) -> None:
    """W66: config.foil set to a token id where the command line gives no --foil and trace.json's
    metric scored log p of the target (foil null)."""
    record = json.loads((LEDGER / PATCH_RUN / "metadata.json").read_text(encoding="utf-8"))
    assert record["config"]["foil"] is None and "--foil" not in record["run"]["argv"]
    found = findings(planted(tmp_path, PATCH_RUN, lambda data, _dir: data["config"].update(foil=101)))
    _assert_found(found, "config.foil is 101", "its command line gives no --foil")
    _assert_found(found, "config.foil")


def test_lens_position_restated_against_trace_json_is_caught(tmp_path: Path) -> None:
    """R93 seen from the ledger: a lens reading's config.position (from 1.32.0) is the position its
    readings were taken at, trace.json's."""
    position = json.loads((LEDGER / LENS_RUN / "trace.json").read_text(encoding="utf-8"))["position"]
    found = findings(
        planted(tmp_path, LENS_RUN, lambda data, _dir: data["config"].update(position=position - 1))
    )
    _assert_found(found, f"config.position is {position - 1}", str(position))
