"""Tiny ONNX models built with onnx.helper, so the suite needs no download or training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rawdev.model import NOISE_CONTRACT, ModelContract, write_contract
from rawdev.train.network import bilinear_kernels


def _save(graph, path: Path, contract: ModelContract | None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if contract is not None:
        write_contract(model, contract)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _bilinear_nodes(source: str, target: str, prefix: str = "") -> tuple[list, list]:
    """Nodes and initializers of a bilinear demosaic from NHWC packed RGGB ``source`` (4 planes)
    to NHWC RGB ``target``, with reflect padding at the border."""
    scatter, interp = bilinear_kernels()
    p = prefix
    inits = [
        numpy_helper.from_array(scatter.transpose(3, 2, 0, 1).copy(), f"{p}w_scatter"),  # (12, 4, 1, 1)
        numpy_helper.from_array(interp.transpose(2, 3, 0, 1).copy(), f"{p}w_interp"),  # (3, 1, 3, 3)
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), f"{p}pads"),
        numpy_helper.from_array(np.array([2, 2], np.int64), f"{p}starts"),
        numpy_helper.from_array(np.array([-2, -2], np.int64), f"{p}ends"),
        numpy_helper.from_array(np.array([2, 3], np.int64), f"{p}axes"),
    ]
    nodes = [
        helper.make_node("Transpose", [source], [f"{p}nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Pad", [f"{p}nchw", f"{p}pads"], [f"{p}padded"], mode="reflect"),
        helper.make_node("Conv", [f"{p}padded", f"{p}w_scatter"], [f"{p}sparse12"]),
        helper.make_node("DepthToSpace", [f"{p}sparse12"], [f"{p}sparse"], blocksize=2, mode="DCR"),
        helper.make_node("Conv", [f"{p}sparse", f"{p}w_interp"], [f"{p}dense"], group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Slice", [f"{p}dense", f"{p}starts", f"{p}ends", f"{p}axes"], [f"{p}cropped"]),
        helper.make_node("Transpose", [f"{p}cropped"], [target], perm=[0, 2, 3, 1]),
    ]
    return nodes, inits


def bilinear_onnx(path: Path, contract: ModelContract | None = ModelContract(variant="bilinear", width=0)) -> Path:
    """A real demosaicking model: packed RGGB (N, h, w, 4) -> bilinear RGB (N, 2h, 2w, 3), NHWC,
    with reflect padding at the border (the same fixed layers as the network's bilinear base)."""
    nodes, inits = _bilinear_nodes("packed", "rgb")
    graph = helper.make_graph(
        nodes, "bilinear",
        [helper.make_tensor_value_info("packed", TensorProto.FLOAT, ["n", "h", "w", 4])],
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["n", "h2", "w2", 3])],
        inits,
    )
    return _save(graph, path, contract)


def noise_probe_onnx(path: Path, gain: float = 1.0) -> Path:
    """A noise-aware model's interface: packed planes and their sigma planes (N, h, w, 8) ->
    bilinear(planes) + gain * bilinear(sigma), so what the pipeline tells it shows in its output."""
    planes, inits_p = _bilinear_nodes("planes", "rgb_planes", "p_")
    sigma, inits_s = _bilinear_nodes("sigma", "rgb_sigma", "s_")
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              (("c0", [0]), ("c4", [4]), ("c8", [8]), ("c3", [3]))]
    consts.append(numpy_helper.from_array(np.array(gain, np.float32), "gain"))
    nodes = [
        helper.make_node("Slice", ["packed", "c0", "c4", "c3"], ["planes"]),
        helper.make_node("Slice", ["packed", "c4", "c8", "c3"], ["sigma"]),
        *planes, *sigma,
        helper.make_node("Mul", ["rgb_sigma", "gain"], ["rgb_sigma_scaled"]),
        helper.make_node("Add", ["rgb_planes", "rgb_sigma_scaled"], ["rgb"]),
    ]
    graph = helper.make_graph(
        nodes, "noise_probe",
        [helper.make_tensor_value_info("packed", TensorProto.FLOAT, ["n", "h", "w", 8])],
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["n", "h2", "w2", 3])],
        inits_p + inits_s + consts,
    )
    contract = ModelContract(variant="noise-probe", width=0, **NOISE_CONTRACT)
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
