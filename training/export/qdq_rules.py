"""Does a QDQ INT8 model meet TensorRT's explicit-quantisation rules? :func:`tensorrt_qdq_violations` says which
QuantizeLinear/DequantizeLinear nodes break them, without TensorRT (an export machine rarely has a GPU).

TensorRT builds a QDQ graph as an explicitly quantised network (onnx-tensorrt ``docs/operators.md`` and the
TensorRT guide "Working with Quantized Types"):

- quantisation is symmetric: every ``y_zero_point`` / ``x_zero_point`` is INT8 and 0 (INT8 is the quantised
  type; UINT8 only as a network input or output, never between two layers);
- DequantizeLinear reads INT8 only: an INT32 Conv bias dequantised in the graph does not parse (keep biases in
  float: ONNX Runtime's ``QuantizeBias=False``);
- scales and zero points are constants, scales positive and finite, zero point and scale of the same shape;
- a per-channel scale runs along a valid axis of its tensor with one value per channel, and a Conv weight is
  quantised per output channel (axis 0; ConvTranspose weights, laid out (C_in, C_out/group, k, k): axis 1).

ONNX Runtime's default QDQ recipe (QUInt8 activations with a zero point, INT32 biases) breaks the first two.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["QDQ_OPS", "WEIGHT_AXIS", "qdq_summary", "tensorrt_qdq_violations"]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Input index of the weight and the axis TensorRT quantises it along (its output channels).
WEIGHT_AXIS = {"Conv": (1, 0), "ConvTranspose": (1, 1)}


def _constants(model) -> dict[str, np.ndarray]:
    """Initializers and Constant-node outputs of the main graph, by tensor name."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                out[node.output[0]] = numpy_helper.to_array(value)
    return out


def _elem_types(model) -> tuple[dict[str, int], dict[str, int]]:
    """(element type, rank) of every tensor that shape inference (or the graph) declares."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a graph shape inference cannot handle is still checked, with fewer facts
        inferred = model
    types, ranks = {}, {}
    g = inferred.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        tt = vi.type.tensor_type
        if tt.elem_type:
            types[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            ranks[vi.name] = len(tt.shape.dim)
    for t in g.initializer:
        types[t.name], ranks[t.name] = t.data_type, len(t.dims)
    return types, ranks


def tensorrt_qdq_violations(model: Any) -> list[str]:
    """Every way the QuantizeLinear/DequantizeLinear nodes of ``model`` (onnx.ModelProto) break TensorRT's
    explicit-quantisation rules (module docstring), one line each naming the node; [] when TensorRT can build
    it as INT8. Pure: ``model`` is not changed."""
    import onnx

    tp = onnx.TensorProto
    name_of = tp.DataType.Name
    consts = _constants(model)
    types, ranks = _elem_types(model)
    graph_io = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in model.graph.node:
        for k, t in enumerate(node.input):
            consumers.setdefault(t, []).append((node, k))
    producers = {o: n for n in model.graph.node for o in n.output}

    out: list[str] = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        where = f"{node.op_type} {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            out.append(f"{where}: domain {node.domain!r}; TensorRT parses the standard ONNX op only")
            continue
        x, scale_name = node.input[0], node.input[1]
        zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        quantized = node.output[0] if node.op_type == "QuantizeLinear" else x  # the INT8 side of the node
        at_io = quantized in graph_io

        # The quantised type: the zero point's, else (DequantizeLinear) x's, else UINT8 (QuantizeLinear's default).
        if zp_name is not None:
            qtype = types.get(zp_name) or _np_to_onnx(consts.get(zp_name))
        elif node.op_type == "DequantizeLinear":
            qtype = types.get(x) or _np_to_onnx(consts.get(x))
        else:
            qtype = tp.UINT8
        if qtype == tp.UINT8 and not at_io:
            out.append(f"{where}: UINT8 quantisation inside the graph; TensorRT takes UINT8 only as network I/O "
                       "(use symmetric QInt8)")
        elif qtype not in (tp.INT8, tp.UINT8):
            why = " (a quantised bias: keep biases in float, QuantizeBias=False)" if qtype == tp.INT32 else ""
            out.append(f"{where}: quantised type {name_of(qtype) if qtype else 'unknown'}, TensorRT needs INT8{why}")

        scale = consts.get(scale_name)
        if scale is None:
            out.append(f"{where}: scale {scale_name!r} is not a constant")
        elif not np.issubdtype(scale.dtype, np.floating):
            out.append(f"{where}: scale {scale_name!r} is {scale.dtype}, not float")
        elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            out.append(f"{where}: scale {scale_name!r} has values that are not positive and finite "
                       f"(min {float(np.min(scale)):g})")

        if zp_name is not None:
            zp = consts.get(zp_name)
            if zp is None:
                out.append(f"{where}: zero point {zp_name!r} is not a constant")
            else:
                if np.any(zp != 0):
                    out.append(f"{where}: zero point {zp_name!r} is not 0 (asymmetric); TensorRT quantises "
                               "symmetrically")
                if scale is not None and zp.size != scale.size:  # () against (1,) is one value either way
                    out.append(f"{where}: {zp.size} zero points for {scale.size} scales")

        if scale is not None and scale.size > 1:  # per-channel
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            # the tensor the axis indexes: x, or for QuantizeLinear on a weight its (float) input
            rank = len(consts[x].shape) if x in consts else ranks.get(x)
            if rank is None and x in producers and producers[x].op_type == "QuantizeLinear":
                src = producers[x].input[0]
                rank = len(consts[src].shape) if src in consts else ranks.get(src)
            if rank is not None:
                if not -rank <= axis < rank:
                    out.append(f"{where}: per-channel axis {axis} is outside a rank-{rank} tensor")
                    continue
                axis %= rank
                shape = consts[x].shape if x in consts else None
                if shape is not None and shape[axis] != scale.size:
                    out.append(f"{where}: {scale.size} per-channel scales for {shape[axis]} channels on axis {axis}")
            if node.op_type == "DequantizeLinear":
                for user, k in consumers.get(node.output[0], []):
                    want = WEIGHT_AXIS.get(user.op_type)
                    if want is not None and k == want[0] and axis != want[1]:
                        out.append(f"{where}: {user.op_type} {user.name!r} weight quantised along axis {axis}; "
                                   f"TensorRT needs its output channels (axis {want[1]})")
    return out


def _np_to_onnx(arr: np.ndarray | None) -> int:
    """ONNX element type of a numpy array (0 when there is none)."""
    if arr is None:
        return 0
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(arr.dtype)


def qdq_summary(violations: list[str]) -> str:
    """One line for a report: ``met`` or the count and the first violation."""
    if not violations:
        return "met"
    more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
    return f"{len(violations)} violation{'s' if len(violations) > 1 else ''}: {violations[0]}{more}"

