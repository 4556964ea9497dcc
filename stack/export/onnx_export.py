"""The model as an ONNX graph (fp32), and its dynamically quantised int8 twin.

The graph takes `input_ids` (batch, seq) int64 and returns `logits` (batch, seq, vocab) fp32;
batch and seq are dynamic, seq at most the model's ctx. It is traced by torch's dynamo-based
exporter (`torch.onnx.export(..., dynamo=True)`, written in onnxscript), with the attention
on the `sdpa` path. The int8 graph comes from ONNX Runtime's dynamic quantiser: MatMul weights
stored as int8 with per-tensor scales, activations quantised on the fly; it runs anywhere ONNX
Runtime's CPU provider does.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from stack.model.gpt import GPT

DEFAULT_OPSET = 18
# The graph's input and output names (INPUT is also the forward argument that dynamic_shapes keys on).
INPUT, OUTPUT = "input_ids", "logits"


class LogitsOnly(nn.Module):
    """GPT's forward minus the loss: the one output an inference graph needs."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(input_ids)
        return logits


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the exporter's chatter (torchvision ops it skips, opset conversion notes, deprecations)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)  # what matters surfaces as the parity check's verdict
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_graph(model: GPT, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Trace `model` (eval mode, fp32) into an ONNX graph at `path`."""
    from torch.export import Dim

    example = torch.zeros((1, min(8, model.config.ctx)), dtype=torch.long)
    dynamic = {INPUT: {0: Dim("batch", min=1, max=4096), 1: Dim("seq", min=1, max=model.config.ctx)}}
    with _quiet():
        program = torch.onnx.export(
            LogitsOnly(model).eval(),
            (example,),
            dynamo=True,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=dynamic,
            opset_version=opset,
            verbose=False,
        )
        program.save(str(path))


def quantize_int8(fp32_graph: Path, path: Path) -> None:
    """Dynamically quantise `fp32_graph` to int8 weights at `path` (ORT's pre-processing first)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="stack-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Symbolic shape inference trips over the exporter's dynamic shapes; ONNX's own suffices here.
        quant_pre_process(str(fp32_graph), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8)


def graph_opset(path: Path) -> int:
    """The default-domain (ai.onnx) opset a saved graph declares."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in graph.opset_import if entry.domain in ("", "ai.onnx"))
