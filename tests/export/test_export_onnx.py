"""GATE-EXPORT-002: the ONNX graphs pass parity, and an int8 graph that fails it never ships.

The falsifiers plant a broken fp32 graph (a wrong RMSNorm eps traced into it) and a corrupted
int8 graph (its quantised weights scrambled), and show each one failing: exit 3, the graph kept
under its `.unverified` name, every other file left alone, export.json saying why.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from contracts.errors import GateViolation
from contracts.evidence import new_record, sha256_file, write_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.export import onnx_export, parity, runtimes
from stack.export.sample import BUILTIN_TEXT, MAX_WINDOWS
from stack.model.gpt import GPT
from stack.model.layers import RMSNorm
from stack.train.trained import load_trained
from tests.support.export_support import make_checkpoint
from tests.support.train_support import prepared

GATE = "GATE-EXPORT-002"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with confident next-token predictions, shared by the tests of this module."""
    return make_checkpoint(tmp_path_factory.mktemp("onnx"), fitted=True, n_kv_heads=1, ffn_hidden=72)


def export_onnx(checkpoint: Path, out: Path, *extra: str) -> int:
    return main(["export", str(checkpoint), "--format", "onnx", "--out", str(out), *extra])


@pytest.mark.holds(GATE)
def test_fp32_and_int8_graphs_pass_and_run_with_other_shapes(fitted: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    assert export_onnx(fitted, out, "--int8") == 0
    record = json.loads((out / "export.json").read_text())
    assert record["status"] == "verified" and record["opset"] == onnx_export.DEFAULT_OPSET
    spec = load_spec()
    assert record["parity"]["model.onnx"]["max_abs_diff"] <= spec.threshold(GATE, "fp32_logits_atol")
    assert record["parity"]["model.int8.onnx"]["argmax_agreement"] >= spec.threshold(
        GATE, "int8_argmax_agreement"
    )
    for name, entry in record["files"].items():
        assert sha256_file(out / name) == entry["sha256"]
    assert record["source_checkpoint"]["step"] == 0 and record["sample"]["source"] == "builtin"
    # Batch and sequence length are dynamic: a shape the export never saw still matches PyTorch.
    windows = torch.randint(0, 257, (3, 5), generator=torch.Generator().manual_seed(0))
    reference = runtimes.stack_logits(load_trained(fitted).model, windows)
    fp32 = parity.compare_logits("model.onnx", reference, runtimes.onnx_logits(out / "model.onnx", windows))
    assert parity.fp32_outcome(fp32, {"opset": record["opset"], "opset_asked": record["opset_asked"]}).ok


def scramble_int8_weights(path: Path) -> None:
    """Planted: every int8 initialiser (the quantised weights) replaced by noise."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for index, tensor in enumerate(graph.graph.initializer):
        if tensor.data_type == onnx.TensorProto.INT8:
            noise = rng.integers(-127, 128, size=tuple(tensor.dims), dtype=np.int8)
            graph.graph.initializer[index].CopyFrom(numpy_helper.from_array(noise, tensor.name))
    onnx.save(graph, str(path))


@pytest.fixture
def corrupted_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    real = onnx_export.quantize_int8

    def planted(fp32_graph: Path, path: Path) -> None:
        real(fp32_graph, path)
        scramble_int8_weights(path)

    monkeypatch.setattr(onnx_export, "quantize_int8", planted)


@pytest.mark.gate(GATE)
@pytest.mark.parametrize("contracts", ["full", "off"])
def test_corrupted_int8_graph_never_ships(
    contracts: str,
    corrupted_int8: None,
    fitted: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GATESTACK_CONTRACTS", contracts)
    out = tmp_path / "onnx"
    assert export_onnx(fitted, out, "--int8") == 3  # with the law off too: the file still says unverified
    err = capsys.readouterr().err
    assert ("gate fired: GATE-EXPORT-002" in err) == (contracts == "full")
    assert not (out / "model.int8.onnx").exists()
    assert (out / "model.int8.unverified.onnx").is_file()
    assert (out / "model.onnx").is_file()  # a failed int8 check removes nothing
    record = json.loads((out / "export.json").read_text())
    check = record["parity"]["model.int8.onnx"]
    assert record["status"] == "failed" and not check["ok"] and check["file"] == "model.int8.unverified.onnx"
    assert check["argmax_agreement"] < load_spec().threshold(GATE, "int8_argmax_agreement")


@pytest.mark.gate(GATE)
def test_broken_fp32_graph_is_caught_and_not_quantised(
    fitted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_export.export_graph

    def planted(model: GPT, path: Path, opset: int) -> None:
        broken = copy.deepcopy(model)
        for module in broken.modules():
            if isinstance(module, RMSNorm):
                module.eps = 1e-1
        real(broken, path, opset)

    monkeypatch.setattr(onnx_export, "export_graph", planted)
    out = tmp_path / "onnx"
    assert export_onnx(fitted, out, "--int8") == 3
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.unverified.onnx"]
    record = json.loads((out / "export.json").read_text())
    assert record["parity"]["model.int8.onnx"] == {"ok": False, "message": "not built: the fp32 graph failed"}


# An opset above the exporter's default that torch writes (`stack export --opset`).
ASKED_OPSET = onnx_export.DEFAULT_OPSET + 2


@pytest.mark.gate(GATE)
def test_a_graph_written_at_another_opset_than_asked_halts(
    fitted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--opset 20 handed on as the default opset 18. The graph is sound (parity holds), so
    only check opset (rev 3), the saved graph's opset_import against the asked opset, sees it."""
    real = onnx_export.export_graph

    def planted(model: GPT, path: Path, opset: int) -> None:
        real(model, path, onnx_export.DEFAULT_OPSET)

    monkeypatch.setattr(onnx_export, "export_graph", planted)
    out, ledger = tmp_path / "onnx", tmp_path / "ledger"
    assert export_onnx(fitted, out, "--opset", str(ASKED_OPSET), "--evidence-dir", str(ledger)) == 3
    assert "gate fired: GATE-EXPORT-002" in capsys.readouterr().err
    (filed,) = ledger.glob("*/metadata.json")
    measured = next(g for g in json.loads(filed.read_text())["gates"] if g["id"] == GATE)["measured"]
    assert (measured["opset"], measured["opset_asked"]) == (onnx_export.DEFAULT_OPSET, ASKED_OPSET)


@pytest.mark.holds(GATE)
def test_a_graph_written_at_the_asked_opset_holds(fitted: Path, tmp_path: Path) -> None:
    out, ledger = tmp_path / "onnx", tmp_path / "ledger"
    assert export_onnx(fitted, out, "--opset", str(ASKED_OPSET), "--evidence-dir", str(ledger)) == 0
    assert onnx_export.graph_opset(out / "model.onnx") == ASKED_OPSET
    (filed,) = ledger.glob("*/metadata.json")
    record = json.loads(filed.read_text())
    measured = next(g for g in record["gates"] if g["id"] == GATE)["measured"]
    assert measured["opset"] == measured["opset_asked"] == record["config"]["opset"] == ASKED_OPSET


@pytest.mark.gate(GATE)
def test_non_finite_or_disagreeing_int8_logits_fail_the_gate() -> None:
    reference = torch.randn(2, 8, 11, generator=torch.Generator().manual_seed(0))
    nan = reference.clone()
    nan[0, 0, 0] = float("nan")
    shuffled = reference[:, :, torch.randperm(11, generator=torch.Generator().manual_seed(1))]
    stored = {"INT8": 10}  # the int8 graph's weights as a clean export stores them
    assert parity.int8_outcome(parity.compare_logits("int8", reference, reference), stored).ok
    for candidate in (nan, shuffled):
        check = parity.compare_logits("int8", reference, candidate)
        assert not parity.int8_outcome(check, stored).ok
        with pytest.raises(GateViolation, match=GATE):
            parity.certify_onnx_int8(check, stored)
    assert json.dumps(parity.compare_logits("int8", reference, nan).as_dict())  # nan is JSON-safe


def test_sample_comes_from_file_then_training_data_then_builtin(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path)
    run_dir = checkpoint.parent.parent
    data = prepared(tmp_path)
    record = new_record("train", "run", ["stack", "train"], "cpu")
    record.metrics["data_dir"] = str(data.resolve())
    write_evidence(run_dir, record)
    text = tmp_path / "sample.txt"
    text.write_text(BUILTIN_TEXT[::-1])
    sources = {}
    for name, extra in (("file", ["--sample-text", str(text)]), ("data", [])):
        out = tmp_path / f"from-{name}"
        assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out), *extra]) == 0
        sources[name] = json.loads((out / "export.json").read_text())["sample"]
    assert sources["file"]["source"] == f"file:{text}"
    assert sources["data"]["source"].startswith(f"data:{data.resolve()}")
    assert sources["data"]["windows"] == MAX_WINDOWS
    data.rename(tmp_path / "moved-away")  # the run's DATA_DIR is gone: the built-in text stands in
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(tmp_path / "from-builtin")]) == 0
    assert (
        json.loads((tmp_path / "from-builtin" / "export.json").read_text())["sample"]["source"] == "builtin"
    )


def test_out_dir_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = make_checkpoint(tmp_path)
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out)]) == 0
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out), "--force"]) == 0
    assert main(["export", str(checkpoint), "--format", "hf", "--int8", "--out", str(tmp_path / "x")]) == 2
    assert main(["export", str(tmp_path), "--format", "hf", "--out", str(tmp_path / "x")]) == 2
    assert (
        main(["export", str(checkpoint), "--format", "hf", "--opset", "18", "--out", str(tmp_path / "x")])
        == 2
    )
    assert (
        main(["export", str(checkpoint), "--format", "onnx", "--opset", "12", "--out", str(tmp_path / "x")])
        == 2
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    assert (
        main(
            [
                "export",
                str(checkpoint),
                "--format",
                "hf",
                "--out",
                str(tmp_path / "x"),
                "--sample-text",
                str(empty),
            ]
        )
        == 2
    )
    assert not (tmp_path / "x").exists()
    assert not list(tmp_path.glob(".*tmp-*"))  # no staging directory left behind


# -- GATE-EXPORT-002 check weights: the int8 graph, as saved, stores int8 weights -----


@pytest.mark.gate(GATE)
def test_an_int8_graph_whose_weights_are_stored_unsigned_never_ships(
    fitted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: the dynamic quantiser asked for QUInt8 weights. The graph still keeps the
    argmax; its matmul weights, read from the saved file, are UINT8: exit 3, the graph kept under
    its `.unverified` name."""
    import onnxruntime.quantization as ort_quantization

    real = ort_quantization.quantize_dynamic

    def unsigned(model_input: str, model_output: str, **options: object) -> None:
        real(model_input, model_output, **{**options, "weight_type": ort_quantization.QuantType.QUInt8})

    monkeypatch.setattr(ort_quantization, "quantize_dynamic", unsigned)
    out = tmp_path / "onnx"
    assert export_onnx(fitted, out, "--int8") == 3
    assert "gate fired: GATE-EXPORT-002" in capsys.readouterr().err
    assert (out / "model.int8.unverified.onnx").is_file() and not (out / "model.int8.onnx").exists()
    record = json.loads((out / "export.json").read_text())
    assert set(record["int8_weight_types"]) == {"UINT8"}
    assert record["parity"]["model.int8.onnx"]["argmax_agreement"] >= load_spec().threshold(
        GATE, "int8_argmax_agreement"
    )  # parity alone passes it


@pytest.mark.holds(GATE)
@pytest.mark.gate("GATE-INTEG-001")
def test_an_int8_graph_stores_int8_weights_and_the_checker_reads_them_again(
    fitted: Path, tmp_path: Path
) -> None:
    """A clean --int8 export's matmul weights and zero-points are all INT8, as the record states and
    the checker reads again; one UINT8 among them fires; a record whose types are edited (export.json
    and the gate alike) is named against the saved graph."""
    from tests.support.ledger_support import assert_caught, edited, gate

    out = tmp_path / "onnx"
    assert main(["export", str(fitted), "--format", "onnx", "--out", str(out), "--int8"]) == 0
    record = json.loads((out / "export.json").read_text())
    types = record["int8_weight_types"]
    assert set(types) == {"INT8"} and types["INT8"] > 0
    measured = next(g for g in json.loads((out / "metadata.json").read_text())["gates"] if g["id"] == GATE)
    assert measured["measured"]["int8_weight_types"] == types
    assert parity.int8_outcome(parity.LogitsParity("g", 0.0, True, 1.0, 4), types).ok
    one_off = {"INT8": types["INT8"] - 1, "UINT8": 1}
    assert not parity.int8_outcome(parity.LogitsParity("g", 0.0, True, 1.0, 4), one_off).ok

    def forged(data: dict, run_dir: Path) -> None:  # the record and export.json alike: the judge passes
        gate(data, GATE)["measured"]["int8_weight_types"] = {"INT8": types["INT8"] + 1}
        path = run_dir / "export.json"
        report = json.loads(path.read_text())
        report["int8_weight_types"] = {"INT8": types["INT8"] + 1}
        path.write_text(json.dumps(report))

    assert_caught(edited(out, forged), "int8_weight_types is", "but model.int8.onnx stores")
