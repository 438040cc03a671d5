"""rawdev models / info / --version: the shipped registry and honest provider reports."""

import json
import shutil

import pytest
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


def test_contract_round_trips_through_metadata_and_rejects_nonsense():
    c = ModelContract(packing="MAI", normalization="mai", white_balance="none", output_space="srgb", steps=7)
    assert ModelContract.from_metadata(c.to_metadata()) == c
    with pytest.raises(ContractError):
        ModelContract(output_space="xyz")
