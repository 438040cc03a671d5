"""benchmarks/graph_variants.py on a tiny model with the converter's interface and every pattern
the rewrites meet (a stride-2 ConvTranspose, a Concat before a 1x1 Conv, DepthToSpace before the
output Transpose): it runs, checks the variants, writes its JSON and its RESULTS.md section.
Nothing is paused (no --pause-training)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

graph_variants = importlib.import_module("benchmarks.graph_variants")


def tiny_upsampling_onnx(path: Path) -> Path:
    """packed (N, H, W, 4) -> Conv stride 2 -> ConvTranspose stride 2 (3x3, TF "same" pads) ->
    Concat with a Conv of the input -> 1x1 Conv -> DepthToSpace -> rgb (N, 2H, 2W, 3)."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Transpose", ["packed"], ["x"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["x", "w_down", "b_down"], ["down"], strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Relu", ["down"], ["down_r"]),
        helper.make_node("ConvTranspose", ["down_r", "w_up", "b_up"], ["up"], strides=[2, 2], pads=[0, 0, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["up"], ["up_r"]),
        helper.make_node("Conv", ["x", "w_skip"], ["skip"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["up_r", "skip"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w_fuse", "b_fuse"], ["fused"]),
        helper.make_node("DepthToSpace", ["fused"], ["full"], blocksize=2, mode="DCR"),
        helper.make_node("Transpose", ["full"], ["rgb"], perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("packed", TensorProto.FLOAT, ["batch", "height", "width", 4])],
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["batch", "height2", "width2", 3])],
        [w("w_down", 8, 4, 3, 3), w("b_down", 8), w("w_up", 8, 8, 3, 3), w("b_up", 8), w("w_skip", 8, 4, 3, 3),
         w("w_fuse", 12, 16, 1, 1), w("b_fuse", 12)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_graph_variants_runs_on_a_tiny_model(tmp_path):
    model = tiny_upsampling_onnx(tmp_path / "tiny.onnx")
    out, md = tmp_path / "gv.json", tmp_path / "R.md"
    rc = graph_variants.main(["--model", str(model), "--tile", "16", "--repeats", "2", "--warmup", "1",
                              "--threads", "1", "--keep", str(tmp_path / "variants"),
                              "--out", str(out), "--results-md", str(md), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    variants = {v["name"]: v for v in report["variants"]}
    assert set(graph_variants.VARIANTS) <= set(variants)
    from rawdev.convert import GRAPH_PASSES

    assert graph_variants.VARIANTS["rawdev"][0] == GRAPH_PASSES  # the graph convert-weights writes
    for v in variants.values():
        assert v["max_abs_diff"] <= 1e-5, v
        assert v["timing"]["seconds"]["n"] == 2 and v["timing"]["vs_best"] > 0
    assert "ConvTranspose" in variants["converted"]["ops"]
    assert "ConvTranspose" not in variants["rawdev"]["ops"] and "DepthToSpace" not in variants["rawdev"]["ops"]
    assert "Concat" not in variants["split-concat"]["ops"]
    # the network's MACs (no zero taps) against what the sub-pixel graph executes
    macs = 8 * 8 * (8 * 4 * 9) + 8 * 8 * (8 * 8 * 9) + 16 * 16 * (8 * 4 * 9 + 12 * 16)
    assert report["network_macs"] == macs
    assert variants["rawdev"]["executed_macs"] > macs == variants["converted"]["executed_macs"]
    t = variants["converted"]["timing"]
    assert t["network_macs_per_s"] == pytest.approx(macs / t["seconds"]["median"], rel=1e-3)
    assert report["best"] in variants and report["best"] != graph_variants.REFERENCE
    assert variants[report["best"]]["timing"]["vs_best"] == 1.0
    # the reference really has the NCHW interface
    ref = onnx.load(str(tmp_path / "variants" / f"{graph_variants.REFERENCE}.onnx"))
    assert [d.dim_value for d in ref.graph.input[0].type.tensor_type.shape.dim][1] == 4
    assert all(n.op_type != "Transpose" for n in ref.graph.node)
    text = md.read_text()
    assert "<!-- BEGIN graph_variants -->" in text and ("| rawdev |" in text or "| **rawdev** |" in text)
    assert "python benchmarks/graph_variants.py --model" in text and "NOT paused" in text


def test_variants_that_differ_are_refused(tmp_path, monkeypatch):
    """A variant that is not equivalent stops the script before any timing (exit 1)."""
    model = tiny_upsampling_onnx(tmp_path / "tiny.onnx")
    real = graph_variants.nchw_interface

    def broken(proto):  # the reference, with its output scaled: no longer the same function
        real(proto)
        for t in proto.graph.initializer:
            if t.name == "b_fuse":
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) + 1, "b_fuse"))
        return proto

    monkeypatch.setattr(graph_variants, "nchw_interface", broken)
    rc = graph_variants.main(["--model", str(model), "--tile", "16", "--repeats", "1", "--no-profile",
                              "--out", str(tmp_path / "gv.json"), "--results-md", str(tmp_path / "R.md"), "--quiet"])
    assert rc == 1 and not (tmp_path / "gv.json").exists()
