"""rawdev.convert.rewrite_graph: each pass gives the graph it was given, to float rounding, on
small onnx.helper graphs (no TensorFlow needed), and leaves alone what it cannot rewrite."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from rawdev import DEFAULT_MODEL
from rawdev.convert import (
    GRAPH_PASSES,
    broadcast_lowpass_subtract,
    convtranspose_to_subpixel,
    depth_to_space_after_activation,
    depth_to_space_nhwc,
    rewrite_graph,
    separable_lowpass_normalizer,
    split_concat_conv,
    subpixel_weights,
    symbolic_shape_hints,
)
from rawdev.model import WEIGHTS_DIR

TOLERANCE = 1e-5


def _model(nodes, inits: dict[str, np.ndarray], channels: int, output_rank: int = 4,
           int_inits: dict[str, list[int]] | None = None):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * output_rank)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
        + [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (int_inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _same_function(before, after, channels: int, shapes=((1, 7, 9), (2, 5, 4))) -> None:
    """``after`` gives ``before``'s output on random inputs at two spatial shapes."""
    onnx.checker.check_model(after)
    rng = np.random.default_rng(0)
    for n, h, w in shapes:
        x = rng.standard_normal((n, channels, h, w)).astype(np.float32)
        expected, got = _run(before, x), _run(after, x)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _convtranspose(kernel: int, stride: int, pads, output_padding=(0, 0), bias=True, cin=3, cout=5, seed=0,
                   then: str | None = None):
    rng = np.random.default_rng(seed)
    inits = {"w": rng.standard_normal((cin, cout, kernel, kernel))}
    inputs = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(cout)
        inputs.append("b")
    out = "t" if then else "y"
    nodes = [helper.make_node("ConvTranspose", inputs, [out], strides=[stride, stride], pads=list(pads),
                              kernel_shape=[kernel, kernel], output_padding=list(output_padding))]
    if then:
        nodes.append(helper.make_node(then, ["t"], ["y"]))
    return _model(nodes, inits, cin)


def _tf_cases():
    """(kernel, stride, pads, output_padding) that tf2onnx writes for Keras Conv2DTranspose with an
    output of stride x the input: padding="same" (k >= s: pads k - s, the odd one at the end), and
    k < s ("same" or "valid": no pads, output_padding s - k); plus the odd pad at the start."""
    cases = []
    for stride in (1, 2, 3):
        for kernel in (1, 2, 3, 4, 5):
            if kernel >= stride:
                total = kernel - stride
                cases.append((kernel, stride, (total // 2, total // 2, total - total // 2, total - total // 2), (0, 0)))
                if total % 2:
                    first = total - total // 2
                    cases.append((kernel, stride, (first, first, total - first, total - first), (0, 0)))
            else:
                cases.append((kernel, stride, (0, 0, 0, 0), (stride - kernel, stride - kernel)))
    return cases


@pytest.mark.parametrize("kernel,stride,pads,output_padding", _tf_cases())
def test_convtranspose_becomes_a_subpixel_conv(kernel, stride, pads, output_padding):
    before = _convtranspose(kernel, stride, pads, output_padding, bias=kernel % 2 == 1, seed=kernel + 7 * stride)
    after = _copy(before)
    assert convtranspose_to_subpixel(after) == 1
    assert "ConvTranspose" not in _ops(after)
    assert _ops(after) == (["Conv", "DepthToSpace"] if stride > 1 else ["Conv"])
    _same_function(before, after, 3)


def test_stride2_kernel3_has_the_expected_taps():
    """The converter's case (Keras 3x3, stride 2, "same"): a 2x2 Conv, 4x the channels, 9 of 16
    taps per (Cin, Cout) pair non-zero, padded one sample at the top and left."""
    w = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) + 1
    conv, bias, pads = subpixel_weights(w, np.ones(3, np.float32), 2, (0, 0, 1, 1))
    assert conv.shape == (12, 2, 2, 2) and pads == [1, 1, 0, 0] and bias.shape == (12,)
    assert np.count_nonzero(conv) == 9 * 2 * 3
    # phase (0, 0) at offset 0 (the Conv's tap (1, 1)) is the kernel's tap (0, 0)
    np.testing.assert_array_equal(conv[0:3, :, 1, 1], w[:, :, 0, 0].T)


@pytest.mark.parametrize("kernel,stride,pads,output_padding,group", [
    (3, 2, (0, 0, 0, 0), (0, 0), 1),  # "valid" with kernel > stride: output 2L + 1, not 2L
    (3, 2, (1, 1, 1, 1), (0, 0), 1),  # PyTorch-style padding 1: output 2L - 1
    (4, 2, (1, 1, 1, 1), (0, 0), 2),  # grouped
])
def test_convtranspose_that_is_not_a_clean_upsampling_is_left_alone(kernel, stride, pads, output_padding, group):
    rng = np.random.default_rng(1)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[stride, stride], pads=list(pads),
                            kernel_shape=[kernel, kernel], output_padding=list(output_padding), group=group)
    before = _model([node], {"w": rng.standard_normal((4, 3, kernel, kernel))}, 4)
    after = _copy(before)
    assert rewrite_graph(after)["subpixel"] == 0
    assert _ops(after) == ["ConvTranspose"]
    _same_function(before, after, 4)


def test_activation_moves_before_depth_to_space():
    before = _convtranspose(3, 2, (0, 0, 1, 1), then="Relu")
    after = _copy(before)
    convtranspose_to_subpixel(after)
    assert depth_to_space_after_activation(after) == 1
    assert _ops(after) == ["Conv", "Relu", "DepthToSpace"]
    _same_function(before, after, 3)


def test_concat_before_1x1_conv_becomes_a_sum_of_convs():
    rng = np.random.default_rng(2)
    inits = {"wa": rng.standard_normal((8, 3, 3, 3)), "wb": rng.standard_normal((16, 3, 1, 1)),
             "wf": rng.standard_normal((6, 24, 1, 1)), "bf": rng.standard_normal(6)}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "wb"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
             helper.make_node("Conv", ["ab", "wf", "bf"], ["f"]),
             helper.make_node("Relu", ["f"], ["y"])]
    before = _model(nodes, inits, 3)
    after = _copy(before)
    assert split_concat_conv(after) == 1
    assert "Concat" not in _ops(after) and _ops(after).count("Conv") == 4
    _same_function(before, after, 3)


@pytest.mark.parametrize("block", [2, 3])
@pytest.mark.parametrize("to_nhwc", [False, True])
def test_depth_to_space_through_channels_last_transposes(block, to_nhwc):
    rng = np.random.default_rng(3)
    c = 2 * block * block
    nodes = [helper.make_node("Conv", ["x", "w"], ["p"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["p"], ["d" if to_nhwc else "y"], blocksize=block, mode="DCR")]
    if to_nhwc:  # the converted model's output: NCHW -> NHWC; the Transpose is absorbed
        nodes.append(helper.make_node("Transpose", ["d"], ["y"], perm=[0, 2, 3, 1]))
    before = _model(nodes, {"w": rng.standard_normal((c, 3, 3, 3))}, 3)
    after = _copy(before)
    assert depth_to_space_nhwc(after) == 1
    assert "DepthToSpace" not in _ops(after)
    assert _ops(after).count("Transpose") == (2 if to_nhwc else 3)
    _same_function(before, after, 3)


def test_crd_depth_to_space_is_left_alone():
    nodes = [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD")]
    before = _model(nodes, {}, 8)
    after = _copy(before)
    assert depth_to_space_nhwc(after) == 0
    _same_function(before, after, 8)


def _normalized_blur(channels: int = 3, radius: int = 4, ones_from_x: bool = True):
    """What tf2onnx writes for network._normalized_blur, NCHW: x and ones like x concatenated,
    a K x 1 and a 1 x K depthwise blur, then the data half divided by the ones half."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / (radius / 3)) ** 2)
    taps /= taps.sum()
    k, c2 = len(taps), 2 * channels
    one = numpy_helper.from_array(np.ones(1, np.float32))
    nodes = [
        helper.make_node("Shape", ["x" if ones_from_x else "x2"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["ones"], value=one),
        helper.make_node("Concat", ["x", "ones"], ["xo"], axis=1),
        helper.make_node("Conv", ["xo", "wr"], ["b1"], group=c2, pads=[radius, 0, radius, 0]),
        helper.make_node("Conv", ["b1", "wc"], ["b2"], group=c2, pads=[0, radius, 0, radius]),
        helper.make_node("Slice", ["b2", "zero", "c", "axis"], ["num"]),
        helper.make_node("Slice", ["b2", "c", "big", "axis"], ["den"]),
        helper.make_node("Div", ["num", "den"], ["y"]),
    ]
    if not ones_from_x:
        nodes.insert(0, helper.make_node("Concat", ["x", "x"], ["x2"], axis=1))
    inits = {"wr": np.tile(taps.reshape(1, 1, k, 1), (c2, 1, 1, 1)),
             "wc": np.tile(taps.reshape(1, 1, 1, k), (c2, 1, 1, 1))}
    return _model(nodes, inits, channels, int_inits={"zero": [0], "c": [channels], "big": [2**31 - 1], "axis": [1]})


def test_normalized_blur_divides_by_a_product_of_two_1d_blurs():
    before = _normalized_blur()
    after = _copy(before)
    assert separable_lowpass_normalizer(after) == 1
    ops = _ops(after)
    assert ops.count("ConstantOfShape") == 2 and "Slice" not in ops
    # the data blur runs on C channels, the normaliser on one
    groups = sorted(int(helper.get_attribute_value(a)) for n in after.graph.node if n.op_type == "Conv"
                    for a in n.attribute if a.name == "group")
    assert groups == [3, 3]
    _same_function(before, after, 3, shapes=((1, 7, 9), (2, 12, 5), (1, 2, 2)))


def test_a_blur_whose_second_half_is_not_ones_like_the_input_is_left_alone():
    model = _normalized_blur(ones_from_x=False)  # the ones are shaped like another tensor: not provably x's
    assert separable_lowpass_normalizer(model) == 0


def _spread_and_subtract(copy: bool = True):
    """a (12 channels) minus the 1x1 spread of its 3-channel mean to each of the 4 sub-pixel blocks."""
    gather = np.tile(np.eye(3), (4, 1))
    spread = gather if copy else gather * np.arange(1, 13)[:, None]
    nodes = [helper.make_node("Conv", ["x", "wm"], ["m"]), helper.make_node("Conv", ["m", "ws"], ["s"]),
             helper.make_node("Sub", ["x", "s"], ["y"])]
    return _model(nodes, {"wm": (gather.T / 4)[:, :, None, None], "ws": spread[:, :, None, None]}, 12)


def test_spread_and_subtract_becomes_a_broadcast():
    before = _spread_and_subtract()
    after = _copy(before)
    assert broadcast_lowpass_subtract(after) == 1
    assert _ops(after).count("Conv") == 1
    _same_function(before, after, 12)


def test_a_spread_that_is_not_a_copy_is_left_alone():
    assert broadcast_lowpass_subtract(_spread_and_subtract(copy=False)) == 0


def test_unknown_pass_is_refused():
    with pytest.raises(ValueError, match="unknown graph pass"):
        rewrite_graph(_convtranspose(3, 2, (0, 0, 1, 1)), ("fold",))


def _attention(dilation: int = 2, channels: int = 16):
    """A DAM's spatial attention: features x sigmoid(dilated depthwise 5x5 Conv of them), into a Conv
    (16 channels: a whole NCHWc block with AVX2's 8 and AVX-512's 16)."""
    rng = np.random.default_rng(3)
    inits = {"w0": rng.standard_normal((channels, channels, 3, 3)), "wd": rng.standard_normal((channels, 1, 5, 5)),
             "w1": rng.standard_normal((channels, channels, 3, 3))}
    pad = 2 * dilation
    nodes = [helper.make_node("Conv", ["x", "w0"], ["f"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["f", "wd"], ["d"], pads=[pad] * 4, dilations=[dilation] * 2, group=channels),
             helper.make_node("Sigmoid", ["d"], ["s"]),
             helper.make_node("Mul", ["f", "s"], ["m"]),
             helper.make_node("Conv", ["m", "w1"], ["y"], pads=[1, 1, 1, 1])]
    return _model(nodes, inits, channels)


def _optimized_ops(model, tmp_path) -> list[str]:
    """The node types of the graph onnxruntime's CPU provider runs, after its own optimizations."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return _ops(onnx.load(options.optimized_model_filepath))


def test_shape_hints_keep_the_attention_multiply_in_the_blocked_layout(tmp_path):
    before = _attention()
    after = _copy(before)
    assert symbolic_shape_hints(after) > 0
    assert symbolic_shape_hints(_copy(after)) == 0  # already described
    _same_function(before, after, 16, shapes=((1, 12, 10), (2, 9, 13)))
    plain, hinted = _optimized_ops(before, tmp_path), _optimized_ops(after, tmp_path)
    if "ReorderOutput" not in plain:  # a CPU without the blocked layout: nothing to keep
        pytest.skip("onnxruntime did not use its NCHWc layout on this CPU")
    # Without the shapes the Mul runs in plain layout: both inputs reordered out, the product back in.
    assert plain.count("ReorderOutput") == 3 and plain.count("ReorderInput") == 2
    assert hinted.count("ReorderOutput") == 1 and hinted.count("ReorderInput") == 1


@pytest.mark.parametrize("name, passes", [
    ("csanet-res-c32", tuple(p for p in GRAPH_PASSES if p != "shape_hints")),  # shipped before shape_hints
    (DEFAULT_MODEL, GRAPH_PASSES),
])
def test_shipped_model_is_already_rewritten(name, passes):
    """The shipped models went through every pass of their time: running them again changes nothing."""
    model = onnx.load(str(WEIGHTS_DIR / f"{name}.onnx"))
    ops = _ops(model)
    assert not {"ConvTranspose", "DepthToSpace"} & set(ops)
    again = _copy(model)
    assert not any(rewrite_graph(again, passes).values())
    assert again.SerializeToString() == model.SerializeToString()
