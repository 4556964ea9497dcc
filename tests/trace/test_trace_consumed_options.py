"""`stack trace` consumes its options as the command line asks; planted, --patch-position, --ablate and
--atol consumed otherwise than the command line asked, each recorded honestly. Each mutant is planted here
by monkeypatching the stack in this process; the run halts at its gate (GATE-PATCH-002 rev 4 check asked,
GATE-TRACE-003 rev 5 checks ablated and tolerance), and with the gate forced off the checker still names
the record from its argv, config and trace.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.evidence import read_evidence
from contracts.judges import forced_off
from contracts.trace_tolerance import asked_bounds
from stack.cli import main
from stack.trace import compare, modes, patch
from tests.support.ledger_support import assert_found, edited, findings, gate
from tests.support.trace_support import save_run, tiny_model

PROMPT = "the gate fired at layer one"
CLEAN, CORRUPTED = "gate evidence model", "gate manifest model"
ABLATE = ("--ablate", "layers.0.attn_out", "--ablate", "layers.1.ffn_out", "--sample", "4")
PATCH = ("--patch", CORRUPTED, "--target", " ", "--foil", "e", "--patch-site", "layers.0.attn_out")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-layer run to trace."""
    root = tmp_path_factory.mktemp("runs")
    save_run(root / "good", tiny_model())
    return root / "good"


def _trace(out: Path, run: Path, prompt: str, *options: str) -> int:
    argv = ["trace", str(run), "--prompt", prompt, *options]
    return main([*argv, "--json", str(out / "t.json"), "--out", str(out / "rec")])


def _result(out: Path, gate_id: str) -> tuple[str, str]:
    record = read_evidence(out / "rec" / "metadata.json")
    (result,) = [g for g in record.gates if g.id == gate_id]
    return result.verdict.value, result.message or ""


# -- planted: only the first --ablate site zeroed--------------------------------------------------


def _first_site_only(monkeypatch: pytest.MonkeyPatch) -> None:
    real = modes.ablation
    monkeypatch.setattr(modes, "ablation", lambda path, idx, sites, *rest: real(path, idx, sites[:1], *rest))


@pytest.mark.gate("GATE-TRACE-003")
def test_an_ablation_of_fewer_sites_than_asked_halts(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _first_site_only(monkeypatch)
    assert _trace(tmp_path, run, PROMPT, *ABLATE) == 3
    assert "gate fired: GATE-TRACE-003" in capsys.readouterr().err
    verdict, message = _result(tmp_path, "GATE-TRACE-003")
    assert verdict == "FAIL" and "hooks zeroed ['layers.0.attn_out']" in message, message


def test_an_ablation_of_fewer_sites_than_asked_is_caught_by_the_checker(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _first_site_only(monkeypatch)
    with forced_off("GATE-TRACE-003"):
        assert _trace(tmp_path, run, PROMPT, *ABLATE) == 0
    monkeypatch.undo()
    assert json.loads((tmp_path / "t.json").read_text())["zeroed"] == ["layers.0.attn_out"]
    assert_found(findings(tmp_path / "rec"), "GATE-TRACE-003", "hooks zeroed ['layers.0.attn_out']")


@pytest.mark.holds("GATE-TRACE-003")
def test_an_ablation_of_every_site_asked_passes(run: Path, tmp_path: Path) -> None:
    assert _trace(tmp_path, run, PROMPT, *ABLATE) == 0
    assert _result(tmp_path, "GATE-TRACE-003")[0] == "PASS"
    assert json.loads((tmp_path / "t.json").read_text())["zeroed"] == [
        "layers.0.attn_out",
        "layers.1.ffn_out",
    ]
    assert findings(tmp_path / "rec") == []


# -- planted: the patch at the last position, not --patch-position---------------------------------


def _at_the_last_position(monkeypatch: pytest.MonkeyPatch) -> None:
    real = patch.patch_runs

    def last(model, clean, corrupted, metric, sites, positions):  # type: ignore[no-untyped-def]
        return real(
            model, clean, corrupted, metric, sites, None if positions is None else [clean.shape[1] - 1]
        )

    monkeypatch.setattr(patch, "patch_runs", last)


@pytest.mark.gate("GATE-PATCH-002")
def test_a_patch_at_another_position_than_asked_halts(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _at_the_last_position(monkeypatch)
    assert _trace(tmp_path, run, CLEAN, *PATCH, "--patch-position", "1") == 3
    assert "gate fired: GATE-PATCH-002" in capsys.readouterr().err
    verdict, message = _result(tmp_path, "GATE-PATCH-002")
    assert verdict == "FAIL" and "--patch-position 1" in message, message


def test_a_patch_at_another_position_than_asked_is_caught_by_the_checker(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record states the position it patched; the checker holds it to --patch-position."""
    _at_the_last_position(monkeypatch)
    with forced_off("GATE-PATCH-002"):
        assert _trace(tmp_path, run, CLEAN, *PATCH, "--patch-position", "1") == 0
    monkeypatch.undo()
    assert_found(findings(tmp_path / "rec"), "GATE-PATCH-002", "the grid patched 1")

    def as_the_mutant_stated(data: dict, _run_dir: Path) -> None:  # type: ignore[type-arg]
        """The record of a patch planted at the last position: config and the check's request say the
        position the run patched."""
        data["config"]["patch_positions"] = [data["config"]["tokens"] - 1]
        gate(data, "GATE-PATCH-002")["measured"]["asked_patch"]["position"] = None

    found = findings(edited(tmp_path / "rec", as_the_mutant_stated))
    assert_found(found, "config.patch_positions", "--patch-position 1")
    assert_found(found, "measured.asked_patch", "--patch-position")


def test_an_ablation_request_restated_is_caught(run: Path, tmp_path: Path) -> None:
    """A record whose check took another --ablate than its command line gives."""
    assert _trace(tmp_path, run, PROMPT, *ABLATE) == 0

    def fewer(data: dict, _run_dir: Path) -> None:  # type: ignore[type-arg]
        gate(data, "GATE-TRACE-003")["measured"]["ablate_asked"] = ["layers.0.attn_out"]

    assert_found(findings(edited(tmp_path / "rec", fewer)), "measured.ablate_asked", "--ablate")


@pytest.mark.holds("GATE-PATCH-002")
@pytest.mark.parametrize(
    "options",
    [("--patch-position", "1"), (), ("--patch-position", "0")],
    ids=["position-1", "default-last", "position-0"],
)
def test_a_patch_where_asked_passes(run: Path, tmp_path: Path, options: tuple[str, ...]) -> None:
    assert _trace(tmp_path, run, CLEAN, *PATCH, *options) == 0
    assert _result(tmp_path, "GATE-PATCH-002")[0] == "PASS"
    assert findings(tmp_path / "rec") == []


@pytest.mark.holds("GATE-PATCH-002")
def test_a_sweep_passes(run: Path, tmp_path: Path) -> None:
    sweep = ("--patch", CORRUPTED, "--target", " ", "--patch-sweep", "output")
    assert _trace(tmp_path, run, CLEAN, *sweep) == 0
    assert _result(tmp_path, "GATE-PATCH-002")[0] == "PASS"
    assert findings(tmp_path / "rec") == []


# -- planted: --atol ignored, every site at its calibrated tolerance-------------------------------

BISECT = ("--dtype-b", "fp64", "--atol", "0.05")


def _rules_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    real = compare.parse_rules
    monkeypatch.setattr(compare, "parse_rules", lambda atol, rtol: real([], rtol))


@pytest.mark.gate("GATE-TRACE-003")
def test_a_bisection_that_ignores_atol_halts(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _rules_dropped(monkeypatch)
    assert _trace(tmp_path, run, PROMPT, *BISECT) == 3
    assert "gate fired: GATE-TRACE-003" in capsys.readouterr().err
    verdict, message = _result(tmp_path, "GATE-TRACE-003")
    assert verdict == "FAIL" and "asked: atol 0.05 (--atol)" in message, message


def test_a_bisection_that_ignores_atol_is_caught_by_the_checker(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rules_dropped(monkeypatch)
    with forced_off("GATE-TRACE-003"):
        assert _trace(tmp_path, run, PROMPT, *BISECT) == 0
    monkeypatch.undo()
    assert_found(findings(tmp_path / "rec"), "GATE-TRACE-003", "not judged at the tolerance")


@pytest.mark.holds("GATE-TRACE-003")
@pytest.mark.parametrize(
    "options",
    [
        BISECT,
        ("--dtype-b", "fp64"),
        ("--dtype-b", "fp64", "--atol", "ffn_*=0.05", "--rtol", "1e-3", "--shadow"),
    ],
    ids=["atol", "calibrated", "glob-and-rtol-shadow"],
)
def test_a_bisection_at_the_asked_tolerance_passes(
    run: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    assert _trace(tmp_path, run, PROMPT, *options) == 0
    assert _result(tmp_path, "GATE-TRACE-003")[0] == "PASS"
    assert findings(tmp_path / "rec") == []


def test_the_last_matching_rule_wins_on_full_names_and_kinds() -> None:
    """The statute: a bare value is every site's, a glob matches the full name or the kind."""
    words = ["0.1", "ffn_*=0.2", "layers.1.*=0.3"]
    assert asked_bounds("logits", words, []) == (0.1, None)
    assert asked_bounds("layers.0.ffn_out", words, ["1e-3"]) == (0.2, 1e-3)
    assert asked_bounds("layers.1.ffn_out", words, []) == (0.3, None)
    assert asked_bounds("layers.0.q", [], []) == (None, None)
