"""The element types an int8 ONNX graph stores its quantised matrix weights in, read from the file.

`stack export --int8` states an int8 graph: ONNX Runtime's dynamic quantiser asked for signed 8-bit
weights (QuantType.QInt8), each MatMul's weight stored as an INT8 initialiser beside its INT8
zero-point, fed to a MatMulInteger. Asked for QUInt8 instead, the same graph stores UINT8 weights;
it still runs and still keeps the next-token argmax, so parity alone does not tell them apart
(an export that quantised to QUInt8 would pass every parity gate). GATE-EXPORT-002's check weights holds the
types read here from the saved file, by the stack at export time and by the checker from the
record's model.int8.onnx, to INT8. The opset a graph declares is read here too (`declared_opset`).
The onnx package is imported when a graph is read, so the
judges load without it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

# The quantised-matmul ops of ONNX (and ONNX Runtime's contrib domain), by the inputs that hold the
# weight and its zero-point.
WEIGHT_INPUTS = {"MatMulInteger": (1, 3), "DynamicQuantizeMatMul": (1, 3)}

# What a weight that is no initialiser of the graph (computed at run time) is counted as.
NOT_STORED = "not stored"


def quantised_weight_types(path: Path) -> dict[str, int]:
    """For every quantised-matmul node of the graph at `path`, its weight's and weight zero-point's
    element type (onnx.TensorProto's name, e.g. "INT8"), counted: {type: inputs of that type}."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    stored = {tensor.name: tensor.data_type for tensor in graph.initializer}
    found: Counter[str] = Counter()
    for node in graph.node:
        for index in WEIGHT_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index]:
                kind = stored.get(node.input[index])
                found[NOT_STORED if kind is None else onnx.TensorProto.DataType.Name(kind)] += 1
    return dict(sorted(found.items()))


def declared_opset(path: Path) -> int | None:
    """The default-domain (ai.onnx) opset the graph at `path` declares in its opset_import (None:
    it declares none), read from the saved file: GATE-EXPORT-002's check opset holds it to the
    opset the export was asked for."""
    import onnx

    imports = onnx.load(str(path), load_external_data=False).opset_import
    return next((entry.version for entry in imports if entry.domain in ("", "ai.onnx")), None)
