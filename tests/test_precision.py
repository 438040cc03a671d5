"""--precision auto|fp32|int8: which file runs, the usage errors, auto's choice from the CPU's flags,
and the shipped int8 sibling against its fp32 model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import random_mosaic, write_test_dng
from helpers import small_photographs, tiny_attention_onnx
from typer.testing import CliRunner

from rawdev import model as model_mod
from rawdev.cli import app
from rawdev.model import ContractError, ModelContract, file_sha256, read_contract, registry
from rawdev.precision import ModelChoice, auto_precision, choose, cpu_flags, fast_int8

runner = CliRunner()
VNNI = {"sse4_2", "avx2", "avx512f", "avx512_vnni"}


# --- auto's choice: a pure function of the provider, the CPU's flags and the sibling ---------------


@pytest.mark.parametrize("provider,flags,pays,expected", [
    ("CPUExecutionProvider", VNNI, True, "int8"),
    ("CPUExecutionProvider", {"avx2", "avx_vnni"}, True, "int8"),  # AVX-VNNI (Alder Lake, Zen 5)
    ("CPUExecutionProvider", {"avx512f", "amx_int8", "amx_tile"}, True, "int8"),  # AMX
    ("CPUExecutionProvider", {"sse4_2", "avx2", "fma"}, True, "fp32"),  # no VNNI: int8 does not pay
    ("CPUExecutionProvider", set(), True, "fp32"),
    ("CUDAExecutionProvider", VNNI, True, "fp32"),  # other providers: fp32
    ("NnapiExecutionProvider", VNNI, True, "fp32"),
    ("CPUExecutionProvider", VNNI, False, "fp32"),  # a sibling not measured faster within the bar
])
def test_auto_picks_int8_only_on_the_cpu_provider_with_vnni_and_a_sibling_that_pays(provider, flags, pays, expected):
    assert auto_precision(provider, flags, pays) == expected


def test_cpu_flags_are_read_from_cpuinfo():
    text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx2 avx512_vnni\n\nprocessor\t: 1\n"
    assert cpu_flags(text) == {"fpu", "sse4_2", "avx2", "avx512_vnni"}
    assert fast_int8(cpu_flags(text)) and not fast_int8(cpu_flags("flags : sse4_2 avx2 fma"))
    assert cpu_flags("Features\t: fp asimd asimddp") == {"fp", "asimd", "asimddp"}  # ARM: no x86 VNNI flag
    assert cpu_flags("no flags here") == set()
    assert isinstance(cpu_flags(), set)  # this machine's


def test_a_choice_falls_back_to_fp32_without_a_sibling_or_without_vnni():
    pays = ModelChoice("auto", "m", "m-int8", sibling_pays=True)
    assert pays.needs_provider
    assert pays.pick("CPUExecutionProvider", VNNI) == "m-int8"
    assert pays.pick("CPUExecutionProvider", {"avx2"}) == "m"
    assert pays.pick("CUDAExecutionProvider", VNNI) == "m"
    lonely = ModelChoice("auto", "m", None)
    assert not lonely.needs_provider and lonely.pick("CPUExecutionProvider", VNNI) == "m"
    slower = ModelChoice("auto", "m", "m-int8", sibling_pays=False)
    assert not slower.needs_provider and slower.pick("CPUExecutionProvider", VNNI) == "m"


# --- the registry: an fp32 model "t" with an int8 sibling "t-int8", and "b" without one ---------------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    from rawdev.quantize import quantize_model

    folder = tmp_path_factory.mktemp("pair")
    fp32 = tiny_attention_onnx(folder / "t.onnx")
    int8 = quantize_model(fp32, folder / "t-int8.onnx", data=[small_photographs(folder / "photos")], samples=4,
                          tile=16, check=False).output
    return fp32, int8


def _registry(tmp_path, monkeypatch, tiny_pair, bilinear_model, pays=False) -> Path:
    weights = tmp_path / "weights"
    weights.mkdir(parents=True)
    for src, name in ((tiny_pair[0], "t.onnx"), (tiny_pair[1], "t-int8.onnx"), (bilinear_model, "b.onnx")):
        shutil.copy(src, weights / name)
    entries = [{"name": "t", "file": "t.onnx"}, {"name": "b", "file": "b.onnx"},
               {"name": "t-int8", "file": "t-int8.onnx", "int8_of": "t", "faster_within_bar": pays}]
    for e in entries:
        e["sha256"] = file_sha256(weights / e["file"])
    (weights / "registry.json").write_text(json.dumps(entries))
    monkeypatch.setattr(model_mod, "WEIGHTS_DIR", weights)
    return weights


@pytest.fixture
def own_registry(tmp_path, monkeypatch, tiny_pair, bilinear_model) -> Path:
    return _registry(tmp_path, monkeypatch, tiny_pair, bilinear_model)


def test_choose_reads_the_registry(own_registry, tmp_path, monkeypatch, tiny_pair, bilinear_model):
    assert choose("t", "int8").pick() == "t-int8"
    assert choose("t", "fp32").pick() == "t"
    auto = choose("t", "auto")  # the sibling is not marked as paying: fp32, whatever the CPU
    assert not auto.needs_provider and auto.pick("CPUExecutionProvider", VNNI) == "t"
    assert choose("b", "auto").pick() == "b"  # no sibling
    assert choose("t-int8", "auto").pick() == choose("t-int8", "int8").pick() == "t-int8"
    with pytest.raises(ValueError, match="--precision int8: model b has no int8 sibling"):
        choose("b", "int8")
    with pytest.raises(ValueError, match="--precision fp32: t-int8 is an int8 model; for fp32 choose --model t"):
        choose("t-int8", "fp32")
    with pytest.raises(ValueError, match="--precision 'half': choose auto, fp32 or int8"):
        choose("t", "half")
    with pytest.raises(ContractError, match="unknown model"):
        choose("nope", "auto")
    path = choose(str(own_registry / "t-int8.onnx"), "auto")  # a path: its own file, checked when opened
    assert path.path and path.pick() == str(own_registry / "t-int8.onnx")


def test_auto_uses_a_sibling_measured_to_pay_only_on_a_vnni_cpu(tmp_path, monkeypatch, tiny_pair, bilinear_model):
    _registry(tmp_path, monkeypatch, tiny_pair, bilinear_model, pays=True)
    auto = choose("t", "auto")
    assert auto.needs_provider
    assert auto.pick("CPUExecutionProvider", VNNI) == "t-int8"
    assert auto.pick("CPUExecutionProvider", {"avx2", "fma"}) == "t"
    assert auto.pick("CUDAExecutionProvider", VNNI) == "t"


def _develop(tmp_path, *args):
    dng = tmp_path / "in.dng"
    if not dng.exists():
        write_test_dng(dng, random_mosaic(32, 48), "RGGB", noise_profile=(1e-3, 1e-5))
    out = tmp_path / "out"
    res = runner.invoke(app, ["develop", str(dng), "-o", str(out), "--overwrite", *map(str, args)])
    return res, out


def test_develop_prints_the_precision_beside_the_providers(own_registry, tmp_path):
    res, out = _develop(tmp_path, "--model", "t", "--precision", "int8")
    assert res.exit_code == 0, res.output
    assert "model t-int8.onnx" in res.output and "on CPUExecutionProvider, int8" in res.output
    res, _ = _develop(tmp_path, "--model", "t")
    assert res.exit_code == 0 and "model t.onnx" in res.output and "on CPUExecutionProvider, fp32" in res.output
    res, _ = _develop(tmp_path, "--model", own_registry / "t-int8.onnx")  # a path: what it is
    assert res.exit_code == 0 and "on CPUExecutionProvider, int8" in res.output


@pytest.mark.parametrize("model,precision,message", [
    ("b", "int8", "--precision int8: model b has no int8 sibling"),
    ("t-int8", "fp32", "--precision fp32: t-int8 is an int8 model"),
    ("@t-int8.onnx", "fp32", "--precision fp32: t-int8.onnx is an int8 model (made from t)"),
    ("@t.onnx", "int8", "--precision int8: t.onnx is an fp32 model"),
    ("t", "fast", "--precision 'fast': choose auto, fp32 or int8"),
])
def test_precision_usage_errors_exit_2_in_one_line_before_any_file_is_written(own_registry, tmp_path, model,
                                                                             precision, message):
    model = str(own_registry / model[1:]) if model.startswith("@") else model
    res, out = _develop(tmp_path, "--model", model, "--precision", precision)
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert line.startswith("error:") and message in line
    assert not out.exists() or list(out.iterdir()) == []
    # compare shares the option and its checks
    cmp = runner.invoke(app, ["compare", str(tmp_path / "in.dng"), str(tmp_path / "in.dng"), "--model", model,
                              "--precision", precision])
    assert cmp.exit_code == 2 and message in cmp.output


def test_a_sibling_made_from_other_weights_is_not_used(tmp_path, monkeypatch, tiny_pair, bilinear_model):
    """A retrained fp32 model under the same name leaves its old int8 sibling stale."""
    index = _registry(tmp_path, monkeypatch, tiny_pair, bilinear_model, pays=True) / "registry.json"
    entries = json.loads(index.read_text())
    for e in entries:
        if e["name"] == "t-int8":
            e["fp32_sha256"] = "0" * 64
    index.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="was made from another version of t"):
        choose("t", "int8")
    auto = choose("t", "auto")
    assert not auto.needs_provider and auto.pick("CPUExecutionProvider", VNNI) == "t"


def test_the_sha256_check_covers_the_int8_file(own_registry, tmp_path, tiny_pair):
    data = bytearray((own_registry / "t-int8.onnx").read_bytes())
    data[-1] ^= 1
    (own_registry / "t-int8.onnx").write_bytes(bytes(data))
    res, out = _develop(tmp_path, "--model", "t", "--precision", "int8")
    assert res.exit_code == 2 and "model t-int8:" in res.output and "does not match the sha256" in res.output
    assert not out.exists()
    assert runner.invoke(app, ["models", "verify"]).exit_code == 1


def test_contract_precision_keys_round_trip_and_are_checked():
    c = ModelContract(precision="int8", fp32_model="m", fp32_sha256="ab" * 32)
    assert ModelContract.from_metadata(c.to_metadata()) == c
    assert ModelContract.from_metadata({"rawdev.packing": "RGGB", "rawdev.normalization": "black-white",
                                        "rawdev.output_space": "linear"}).precision == "fp32"  # older models
    with pytest.raises(ContractError, match="precision 'int4'"):
        ModelContract(precision="int4")
    with pytest.raises(ContractError, match="must name the fp32 model"):
        ModelContract(precision="int8")


# --- the shipped int8 sibling ----------------------------------------------------------------------


def test_the_shipped_int8_model_is_registered_with_its_fp32_parent():
    models = registry()
    int8 = next(m for m in models.values() if m.int8_of)
    parent = models[int8.int8_of]
    assert int8.name == f"{parent.name}-int8" and int8.path.name == f"{parent.name}-int8.onnx"
    assert int8.verify() and parent.verify()
    c, p = read_contract(int8.path), read_contract(parent.path)
    assert (c.precision, p.precision) == ("int8", "fp32")
    assert c.fp32_model == parent.name and c.fp32_sha256 == parent.sha256 == file_sha256(parent.path)
    assert int8.fp32_sha256 == parent.sha256  # the registry says so too (a retrained parent makes it stale)
    assert (c.variant, c.width, c.steps, c.noise_input, c.weights_sha256) == \
           (p.variant, p.width, p.steps, p.noise_input, p.weights_sha256)
    # --precision auto runs it only where it was measured faster within the quality bar, and the
    # registry agrees with the benchmark's verdict on this very file
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "precision.json"
    if results.is_file():
        report = json.loads(results.read_text())
        if report["models"]["int8"]["sha256"] == int8.sha256:
            assert int8.faster_within_bar == report["verdict"]["faster_within_bar"]


def test_an_int8_development_of_a_real_sample_is_close_to_fp32(raw_samples):
    """A 1024 x 768 centre crop of the Blackmagic DNG (with the whole file's noise model), default
    options: 58.7 dB sRGB PSNR between the two when measured; the test asks for 50."""
    import dataclasses

    from rawdev.develop import DevelopOptions, develop_mosaic, sensor_noise
    from rawdev.metrics import psnr
    from rawdev.model import int8_sibling, resolve_model
    from rawdev.raw import read_mosaic
    from rawdev.session import open_session

    path = raw_samples / "imageio_Blackmagic.dng"
    if not path.is_file():
        pytest.skip(f"{path.name} is not among the samples")
    from rawdev import DEFAULT_MODEL

    sibling = int8_sibling(DEFAULT_MODEL)
    assert sibling is not None
    m = read_mosaic(path)
    h, w = m.data.shape
    y0, x0 = (h // 2 - 384) // 4 * 4, (w // 2 - 512) // 4 * 4
    crop = dataclasses.replace(m, data=np.ascontiguousarray(m.data[y0:y0 + 768, x0:x0 + 1024]),
                               noise_profile=sensor_noise(m))
    images = [develop_mosaic(crop, open_session(resolve_model(name), "cpu"), DevelopOptions()).image
              for name in (DEFAULT_MODEL, sibling)]
    a, b = (im.astype(np.float32) / 65535 for im in images)
    assert psnr(b, a) > 50
