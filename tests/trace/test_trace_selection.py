"""`stack trace`: the sites a report keeps held to --layers and --sites
(GATE-TRACE-002 rev 4, check selection), and the checker's derivations of a selected trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.evidence import read_evidence
from stack.cli import main
from stack.cli import trace as trace_cli
from tests.support.ledger_support import findings
from tests.support.trace_support import save_run, tiny_model

PROMPT = "the gate fired at layer one"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-layer run to trace."""
    root = tmp_path_factory.mktemp("runs")
    save_run(root / "good", tiny_model())
    return root / "good"


def _traced(out: Path, run: Path, *options: str) -> int:
    return main(
        [
            "trace",
            str(run),
            "--prompt",
            PROMPT,
            *options,
            "--json",
            str(out / "t.json"),
            "--out",
            str(out / "rec"),
        ]
    )


def _verdict(out: Path) -> tuple[str, str]:
    record = read_evidence(out / "rec" / "metadata.json")
    (result,) = [g for g in record.gates if g.id == "GATE-TRACE-002"]
    return result.verdict.value, result.message or ""


@pytest.mark.gate("GATE-TRACE-002")
def test_a_trace_that_ignores_layers_stops_with_a_halted_record(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: the layer selection dropped (every layer's sites written under --layers 1-1)."""
    real = trace_cli._names
    monkeypatch.setattr(trace_cli, "_names", lambda args, n, layout: real(_without_layers(args), n, layout))
    assert _traced(tmp_path, run, "--layers", "1-1") == 3
    assert "gate fired: GATE-TRACE-002" in capsys.readouterr().err
    verdict, message = _verdict(tmp_path)
    assert verdict == "FAIL" and "select" in message


def _without_layers(args):  # type: ignore[no-untyped-def]
    """A copy of the parsed options with --layers left out, as the mutant read them."""
    import argparse

    return argparse.Namespace(**{**vars(args), "layers": None})


@pytest.mark.holds("GATE-TRACE-002")
@pytest.mark.parametrize(
    "options",
    [
        ("--layers", "1-1"),
        ("--sites", "ffn_*"),
        ("--layers", "2", "--sites", "q"),
        ("--layers", "1", "--ablate", "layers.1.attn_out"),
        ("--layers", "0-1", "--dtype-b", "fp64"),
    ],
)
def test_a_selected_trace_passes_and_its_record_derives_again(
    run: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    """The honest `--layers 1-1` run, which the checker flagged (its site count taken from trace.json's
    selection), passes: the count is the forward's, the shown sites trace.json's."""
    assert _traced(tmp_path, run, *options) == 0
    assert _verdict(tmp_path)[0] == "PASS"
    assert findings(tmp_path / "rec") == []


# -- options the record states, held by the checker to what ran ---------


def _checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, run: Path, command: str, *options: str
) -> list[str]:
    """The checker's findings on the record of `stack COMMAND RUN --prompt ... OPTIONS`."""
    assert main([command, str(run), "--prompt", PROMPT, *options, "--out", str(tmp_path / "rec")]) == 0
    monkeypatch.undo()
    return findings(tmp_path / "rec")


def test_a_trace_run_in_another_dtype_than_asked_is_caught(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: `--dtype bf16` traced (and described) in fp32; the command line's --dtype holds
    config.path_a's dtype."""
    from stack.trace import calibrate

    real = calibrate.TracePath
    monkeypatch.setattr(calibrate, "TracePath", lambda w, b, _dtype, label: real(w, b, "fp32", label))
    found = _checked(monkeypatch, tmp_path, run, "trace", "--dtype", "bf16")
    assert any("config.path_a is" in f and "--dtype bf16" in f for f in found), found


def test_a_trace_in_bf16_as_asked_passes(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The honest `--dtype bf16` trace: its path and every site bf16."""
    assert _checked(monkeypatch, tmp_path, run, "trace", "--dtype", "bf16") == []


def test_a_table_of_another_statistic_than_asked_is_caught(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: `--stat absmax` shown as std; trace.json names the table's statistic, config.stat
    the asked."""
    from stack.trace import modes

    real = modes.single
    monkeypatch.setattr(
        modes, "single", lambda path, idx, names, _stat, *rest: real(path, idx, names, "std", *rest)
    )
    found = _checked(monkeypatch, tmp_path, run, "trace", "--stat", "absmax")
    assert any("config.stat is" in f and "absmax" in f and "derive" in f for f in found), found


def test_a_lens_read_at_another_position_than_asked_is_caught(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: `--position 4` read at the last position; config.position is the command line's, and
    trace.json's position is held to it."""
    from stack.lens import report

    real = report.lens_result
    monkeypatch.setattr(
        report,
        "lens_result",
        lambda readings, ids, decode, _pos, *rest: real(readings, ids, decode, len(ids) - 1, *rest),
    )
    found = _checked(monkeypatch, tmp_path, run, "lens", "--position", "4")
    assert any("config.position is 4" in f for f in found), found


def test_a_lens_read_at_the_asked_position_passes(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _checked(monkeypatch, tmp_path, run, "lens", "--position", "4") == []
