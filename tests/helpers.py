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


def tiny_attention_onnx(path: Path, channels: int = 8, seed: int = 0) -> Path:
    """A tiny network of CSANet's shape for the quantizer (noise-aware contract: 8 input planes,
    NHWC in and out, scale 2): a head convolution on the input, a trunk convolution making
    features f, a channel-attention gate (GlobalAveragePool, 1x1 convolution, Sigmoid) that
    scales f, a last convolution to 12 sub-pixel channels added to a fixed base convolution of
    the input (the residual on a bilinear-like base), DepthToSpace to RGB."""
    rng = np.random.default_rng(seed)
    c = channels

    def w(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    base = np.zeros((12, 8, 1, 1), np.float32)
    for k in range(12):  # each sub-pixel output copies one packed plane (a crude demosaic)
        base[k, [0, 1, 1, 3][k // 3], 0, 0] = 1.0
    inits = [
        w("w_head", (c, 8, 3, 3), 0.2), w("b_head", (c,), 0.05),
        w("w_f", (c, c, 3, 3), 0.15), w("b_f", (c,), 0.05),
        w("w_gate", (c, c, 1, 1), 0.5), w("b_gate", (c,), 0.1),
        w("w_out", (12, c, 3, 3), 0.02), w("b_out", (12,), 0.01),
        numpy_helper.from_array(base, "w_base"),
    ]
    nodes = [
        helper.make_node("Transpose", ["packed"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w_head", "b_head"], ["head"], name="head_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["head"], ["head_relu"], name="head_relu"),
        helper.make_node("Conv", ["head_relu", "w_f", "b_f"], ["f"], name="f_conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["f"], ["pooled"], name="ca_pool"),
        helper.make_node("Conv", ["pooled", "w_gate", "b_gate"], ["logits"], name="ca_conv"),
        helper.make_node("Sigmoid", ["logits"], ["gate"], name="ca_sigmoid"),
        helper.make_node("Mul", ["f", "gate"], ["gated"], name="ca_mul"),
        helper.make_node("Add", ["gated", "head_relu"], ["trunk"], name="trunk_add"),
        helper.make_node("Conv", ["trunk", "w_out", "b_out"], ["correction"], name="out_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["nchw", "w_base"], ["base"], name="base_conv"),
        helper.make_node("Add", ["base", "correction"], ["sub"], name="residual_add"),
        helper.make_node("DepthToSpace", ["sub"], ["rgb_nchw"], name="d2s", blocksize=2, mode="DCR"),
        helper.make_node("Transpose", ["rgb_nchw"], ["rgb"], name="to_nhwc", perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_attention",
        [helper.make_tensor_value_info("packed", TensorProto.FLOAT, ["n", "h", "w", 8])],
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["n", "h2", "w2", 3])],
        inits,
    )
    return _save(graph, path, ModelContract(variant="tiny-attention", width=c, **NOISE_CONTRACT))


def small_photographs(folder: Path, count: int = 3) -> Path:
    """``count`` small smooth 8-bit 'photographs' (PNG) to calibrate a quantizer on."""
    import imagecodecs

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        y, x = np.mgrid[0:80, 0:96] / 80.0
        img = 0.5 + 0.4 * np.sin(3 * x[..., None] * (k + 1) + y[..., None] * np.arange(1, 4))
        img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
        imagecodecs.imwrite(str(folder / f"p{k}.png"), (img * 255).astype(np.uint8))
    return folder
