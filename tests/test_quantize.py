"""rawdev quantize: a tiny network of CSANet's shape, calibrated on a handful of synthetic tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import small_photographs, tiny_attention_onnx
from typer.testing import CliRunner

from rawdev.cli import app
from rawdev.model import file_sha256, read_contract
from rawdev.quantize import QuantizeError, node_roles, quantize_model, quantized_nodes

pytest.importorskip("onnxruntime.quantization")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Small smooth 'photographs' to calibrate on (the training folders are not needed)."""
    return small_photographs(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_attention_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def _quantize(tiny, photos, out, **kw):
    kw.setdefault("samples", 4)
    kw.setdefault("tile", 16)
    return quantize_model(tiny, out, data=[photos], **kw)


def test_roles_are_found_from_the_graph(tiny):
    roles = node_roles(onnx.load(str(tiny)))
    assert roles["to_nchw"] == roles["head_conv"] == roles["base_conv"] == "input"
    assert roles["residual_add"] == roles["out_conv"] == roles["d2s"] == roles["to_nhwc"] == "output"
    assert roles["ca_pool"] == roles["ca_conv"] == roles["ca_sigmoid"] == "attention"
    assert roles["f_conv"] == roles["ca_mul"] == roles["trunk_add"] == "trunk"


def test_the_int8_model_keeps_the_contract_and_names_its_fp32_parent(tiny, photos, tmp_path):
    report = _quantize(tiny, photos, tmp_path / "tiny-int8.onnx", seed=3)
    c, parent = read_contract(report.output), read_contract(tiny)
    assert c.precision == "int8" and parent.precision == "fp32"
    assert (c.fp32_model, c.fp32_sha256) == ("tiny", file_sha256(tiny))
    # everything else of the contract is the fp32 model's
    assert {k: v for k, v in vars(c).items() if not k.startswith(("precision", "fp32"))} == \
           {k: v for k, v in vars(parent).items() if not k.startswith(("precision", "fp32"))}
    assert report.sha256 == file_sha256(report.output)
    # only the attention gate is quantized by default; the rest stays fp32
    assert set(report.quantized) == {"ca_pool", "ca_conv", "ca_sigmoid"}
    assert set(report.kept_fp32) == {"input", "output", "trunk"}
    proto = onnx.load(str(report.output))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    assert set(quantized_nodes(proto)) == {"ca_pool", "ca_conv", "ca_sigmoid"}
    # the fp32 product reads the features as they are, not their 8-bit copy made for the pool
    dq = {o for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    mul = next(n for n in proto.graph.node if n.name == "ca_mul")
    assert "f" in mul.input and not dq & {mul.input[0]}


def test_the_quantizer_is_deterministic_for_a_seed(tiny, photos, tmp_path):
    a = _quantize(tiny, photos, tmp_path / "a.onnx", seed=5, check=False)
    b = _quantize(tiny, photos, tmp_path / "b.onnx", seed=5, check=False)
    c = _quantize(tiny, photos, tmp_path / "c.onnx", seed=6, check=False)
    assert a.sha256 == b.sha256
    assert c.sha256 != a.sha256  # other calibration tiles, other ranges


def test_the_pipeline_runs_the_int8_model_close_to_fp32(tiny, photos, tmp_path):
    from conftest import random_mosaic, write_test_dng

    from rawdev.develop import DevelopOptions, develop_mosaic
    from rawdev.metrics import psnr
    from rawdev.raw import read_mosaic
    from rawdev.session import open_session

    report = _quantize(tiny, photos, tmp_path / "tiny-int8.onnx", roles=("attention", "trunk"))
    assert {"f_conv", "ca_mul", "trunk_add"} <= set(report.quantized)
    dng = write_test_dng(tmp_path / "x.dng", random_mosaic(64, 96, seed=2), "RGGB", noise_profile=(1e-3, 1e-5))
    mosaic = read_mosaic(dng)
    images = {}
    for name, path in (("fp32", tiny), ("int8", report.output)):
        session = open_session(path, "cpu", threads=1)
        assert session.contract.precision == name
        images[name] = develop_mosaic(mosaic, session, DevelopOptions(look="neutral", exposure="0")).image
    a, b = (images[k].astype(np.float32) / 65535 for k in ("fp32", "int8"))
    assert a.shape == b.shape and psnr(b, a) > 30  # measured 40-45 dB on this random network


def test_what_cannot_be_quantized_is_refused(tiny, photos, tmp_path):
    with pytest.raises(QuantizeError, match="unknown role"):
        _quantize(tiny, photos, tmp_path / "x.onnx", roles=("everything",))
    made = _quantize(tiny, photos, tmp_path / "int8.onnx", check=False)
    with pytest.raises(QuantizeError, match="already int8"):
        _quantize(made.output, photos, tmp_path / "again.onnx")
    with pytest.raises(QuantizeError, match="the fp32 model itself"):
        _quantize(tiny, photos, tiny)
    with pytest.raises(QuantizeError, match="no photographs"):
        quantize_model(tiny, tmp_path / "y.onnx", data=[tmp_path / "empty"], samples=2, tile=16)


def test_quantize_command(tiny, photos, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli-int8.onnx"
    res = runner.invoke(app, ["quantize", str(tiny), "-o", str(out), "--samples", "4", "--tile", "16",
                              "--data", str(photos)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "int8 of tiny" in res.output and "against fp32" in res.output
    bad = runner.invoke(app, ["quantize", str(tiny), "-o", str(tmp_path / "z.onnx"), "--roles", "head"])
    assert bad.exit_code == 2 and "unknown role" in bad.output
    assert not (tmp_path / "z.onnx").exists()


def test_the_command_defaults_are_the_modules():
    """cli.py spells the defaults out (it does not import rawdev.quantize to read them)."""
    import inspect

    from rawdev import cli, quantize
    from rawdev.develop import DEFAULT_TILE

    params = inspect.signature(cli.quantize).parameters
    assert params["samples"].default.default == quantize.DEFAULT_SAMPLES
    assert params["seed"].default.default == quantize.DEFAULT_SEED
    assert params["tile"].default.default == DEFAULT_TILE
    assert params["roles"].default.default == ",".join(quantize.DEFAULT_ROLES)
    assert params["activation"].default.default == quantize.DEFAULT_ACTIVATION
    assert params["method"].default.default == quantize.DEFAULT_METHOD
    assert [Path(p) for p in params["data"].default.default] == [quantize.DEFAULT_DATA]
