"""rawdev models / info / --version: the shipped registry and honest provider reports."""

import json
import shutil

import pytest
from conftest import random_mosaic, write_test_dng
from typer.testing import CliRunner

from rawdev import model as model_mod
from rawdev.cli import app
from rawdev.model import ContractError, ModelContract, file_sha256, read_contract, registry, resolve_model

runner = CliRunner()


def test_version_is_fast_and_plain():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip().startswith("rawdev ")


def test_shipped_default_model_is_registered_with_a_matching_sha256():
    models = registry()
    assert "csanet-res-c32" in models
    entry = models["csanet-res-c32"]
    assert entry.verify(), "the shipped ONNX file does not match the sha256 in registry.json"
    contract = read_contract(entry.path)
    assert (contract.output_space, contract.packing, contract.variant, contract.width) == ("linear", "RGGB",
                                                                                           "residual", 32)
    assert contract.steps > 0


def test_models_commands():
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "csanet-res-c32" in listed.output
    verified = runner.invoke(app, ["models", "verify"])
    assert verified.exit_code == 0 and "csanet-res-c32: ok" in verified.output
    path = runner.invoke(app, ["models", "path", "csanet-res-c32"])
    assert path.exit_code == 0 and path.output.strip().endswith("csanet-res-c32.onnx")
    unknown = runner.invoke(app, ["models", "path", "no-such-model"])
    assert unknown.exit_code == 2 and "unknown model" in unknown.output


def test_models_verify_reports_a_tampered_file(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    src = registry()["csanet-res-c32"].path
    shutil.copy(src, weights / src.name)
    (weights / "registry.json").write_text(json.dumps([{"name": "m", "file": src.name, "sha256": "0" * 64}]))
    monkeypatch.setattr(model_mod, "WEIGHTS_DIR", weights)
    res = runner.invoke(app, ["models", "verify"])
    assert res.exit_code == 1 and "MISMATCH" in res.output
    good = file_sha256(weights / src.name)
    (weights / "registry.json").write_text(json.dumps([{"name": "m", "file": src.name, "sha256": good}]))
    assert runner.invoke(app, ["models", "verify"]).exit_code == 0


@pytest.fixture
def own_registry(tmp_path, monkeypatch, bilinear_model):
    """A registry of one model, "m" (the bilinear test model), in place of the shipped one."""
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(bilinear_model, weights / "m.onnx")
    (weights / "registry.json").write_text(json.dumps([{"name": "m", "file": "m.onnx",
                                                        "sha256": file_sha256(weights / "m.onnx")}]))
    monkeypatch.setattr(model_mod, "WEIGHTS_DIR", weights)
    return weights


def test_a_shipped_model_is_checked_once_a_run(own_registry, tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    for name in ("a", "b"):
        write_test_dng(tmp_path / "in" / f"{name}.dng", random_mosaic(32, 48), "RGGB")
    hashed = []
    monkeypatch.setattr(model_mod, "file_sha256", lambda path: hashed.append(path) or file_sha256(path))
    res = runner.invoke(app, ["develop", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "m"])
    assert res.exit_code == 0, res.output
    assert hashed == [own_registry / "m.onnx"]  # not once per file


def test_develop_refuses_a_shipped_model_that_differs_from_its_registry(own_registry, tmp_path, mean_model):
    dng = write_test_dng(tmp_path / "a.dng", random_mosaic(32, 48), "RGGB")
    shutil.copy(mean_model, own_registry / "m.onnx")  # another valid model: it would develop, silently
    out = tmp_path / "out"
    res = runner.invoke(app, ["develop", str(dng), "-o", str(out), "--model", "m"])
    assert res.exit_code == 2
    (line,) = res.output.strip().splitlines()
    assert "model m:" in line and "does not match the sha256 in the registry" in line and "reinstall" in line
    assert not out.exists()
    assert runner.invoke(app, ["models", "path", "m"]).exit_code == 0  # still says where the file is
    # A path is the user's own file: not checked against the registry.
    res = runner.invoke(app, ["develop", str(dng), "-o", str(out), "--model", str(own_registry / "m.onnx")])
    assert res.exit_code == 0, res.output


def test_a_missing_shipped_model_file_is_a_usage_error(own_registry, tmp_path):
    (own_registry / "m.onnx").unlink()
    res = runner.invoke(app, ["develop", str(tmp_path / "a.dng"), "-o", str(tmp_path / "out"), "--model", "m"])
    assert res.exit_code == 2 and "model m: its file" in res.output and "is missing" in res.output
    assert not (tmp_path / "out").exists()


def test_info_names_the_applied_provider():
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0
    assert "CPUExecutionProvider" in res.output and "LibRaw" in res.output


def test_an_onnx_file_without_a_contract_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "bare.onnx"))
    with pytest.raises(ContractError, match="no rawdev model contract"):
        read_contract(tmp_path / "bare.onnx")
    assert resolve_model(str(tmp_path / "bare.onnx")) == tmp_path / "bare.onnx"
    # develop reads the contract from onnxruntime's copy of the metadata: the same refusal
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07 not a protobuf message" * 10)
    dng = write_test_dng(tmp_path / "a.dng", random_mosaic(32, 48), "RGGB")
    for model, message in (("bare.onnx", "no rawdev model contract"), ("junk.onnx", "not a readable ONNX file")):
        res = runner.invoke(app, ["develop", str(dng), "-o", str(tmp_path / "out"), "--model", str(tmp_path / model)])
        assert res.exit_code == 2 and message in res.output, res.output


def test_contract_round_trips_through_metadata_and_rejects_nonsense():
    c = ModelContract(packing="MAI", normalization="mai", white_balance="none", output_space="srgb", steps=7)
    assert ModelContract.from_metadata(c.to_metadata()) == c
    with pytest.raises(ContractError):
        ModelContract(output_space="xyz")
