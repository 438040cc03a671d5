"""Tiny ONNX models built with onnx.helper, so the suite needs no download or training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rawdev.model import ModelContract, write_contract
from rawdev.train.network import bilinear_kernels


def _save(graph, path: Path, contract: ModelContract | None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if contract is not None:
        write_contract(model, contract)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def bilinear_onnx(path: Path, contract: ModelContract | None = ModelContract(variant="bilinear", width=0)) -> Path:
    """A real demosaicking model: packed RGGB (N, h, w, 4) -> bilinear RGB (N, 2h, 2w, 3), NHWC,
    with reflect padding at the border (the same fixed layers as the network's bilinear base)."""
    scatter, interp = bilinear_kernels()
    w_scatter = numpy_helper.from_array(scatter.transpose(3, 2, 0, 1).copy(), "w_scatter")  # (12, 4, 1, 1)
    w_interp = numpy_helper.from_array(interp.transpose(2, 3, 0, 1).copy(), "w_interp")  # (3, 1, 3, 3)
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    starts = numpy_helper.from_array(np.array([2, 2], np.int64), "starts")
    ends = numpy_helper.from_array(np.array([-2, -2], np.int64), "ends")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("Transpose", ["packed"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Pad", ["nchw", "pads"], ["padded"], mode="reflect"),
        helper.make_node("Conv", ["padded", "w_scatter"], ["sparse12"]),
        helper.make_node("DepthToSpace", ["sparse12"], ["sparse"], blocksize=2, mode="DCR"),
        helper.make_node("Conv", ["sparse", "w_interp"], ["dense"], group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Slice", ["dense", "starts", "ends", "axes"], ["cropped"]),
        helper.make_node("Transpose", ["cropped"], ["rgb"], perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(
        nodes, "bilinear",
        [helper.make_tensor_value_info("packed", TensorProto.FLOAT, ["n", "h", "w", 4])],
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["n", "h2", "w2", 3])],
        [w_scatter, w_interp, pads, starts, ends, axes],
    )
    return _save(graph, path, contract)


def mean_attention_onnx(path: Path) -> Path:
    """Bilinear output scaled by (0.5 + global mean of the tile): a model whose output depends on
    the whole tile's statistics, like CSANet's channel attention."""
    bilinear_onnx(path, None)
    model = onnx.load(str(path))
    g = model.graph
    g.output[0].name = "rgb_base"
    for node in g.node:
        if "rgb" in node.output:
            node.output[0] = "rgb_base"
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    g.initializer.append(half)
    g.node.extend([
        helper.make_node("ReduceMean", ["packed"], ["mean"], keepdims=1),
        helper.make_node("Add", ["mean", "half"], ["gain"]),
        helper.make_node("Mul", ["rgb_base", "gain"], ["rgb"]),
    ])
    g.output[0].name = "rgb"
    write_contract(model, ModelContract(variant="mean-attention", width=0))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
