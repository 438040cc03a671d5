"""The peer rows of benchmarks/quality.py (benchmarks/peers.py): skipped with the reason where
their packages are absent, MACs counted without torch, the variance stabilization and noise
spectrum in numpy, --reuse; and, where torch / demosaicnet / bm3d are installed (not in CI: they
are the optional extra ``.[peers]``), the rows themselves on tiny images."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import bilinear_onnx, tiny_attention_onnx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

quality = importlib.import_module("benchmarks.quality")
peers = importlib.import_module("benchmarks.peers")
roofline = importlib.import_module("benchmarks.roofline")


def _images(folder: Path, size: int = 96, count: int = 1) -> Path:
    """``count`` size x size photographs: gradients, fine stripes and a band with edges (PNG)."""
    import imagecodecs

    folder.mkdir()
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    for i in range(count):
        rgb = np.stack([0.2 + 0.6 * x, 0.25 + 0.5 * y, 0.5 + 0.3 * np.sin(40 * x + 4 * y + i)], -1)
        rgb[size // 3 : size // 2, :, i % 3] *= 0.4
        imagecodecs.imwrite(str(folder / f"img{i}.png"), np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    return folder


def _run(tmp_path: Path, images: Path, *args: str, name: str = "q") -> tuple[int, dict | None]:
    out = tmp_path / f"{name}.json"
    rc = quality.main(["--images", str(images), "--out", str(out), "--markdown", str(tmp_path / f"{name}.md"),
                       "--quiet", *args])
    return rc, json.loads(out.read_text()) if out.is_file() else None


# --------------------------------------------------------------------------- without the packages


def test_conv_macs_counts_like_roofline():
    records = [peers.ConvRecord("Conv", (64, 4, 3, 3), in_pixels=120, out_pixels=100),
               peers.ConvRecord("ConvTranspose", (12, 1, 2, 2), in_pixels=25, out_pixels=100)]
    assert peers.conv_macs(records) == 100 * 64 * 4 * 9 + 25 * 12 * 4
    assert peers.macs_per_output_mp(records, 100) == pytest.approx(peers.conv_macs(records) / 1e-4)
    with pytest.raises(ValueError):
        peers.conv_macs([peers.ConvRecord("MatMul", (2, 2), 1, 1)])


def test_unavailable_peer_is_skipped_with_the_reason(tmp_path, monkeypatch, capsys):
    real = importlib.import_module

    def refuse_bm3d(name, *args):
        if name == "bm3d":
            raise ImportError("No module named 'bm3d'")
        return real(name, *args)

    monkeypatch.setattr(peers.importlib, "import_module", refuse_bm3d)
    reason = peers.unavailable("libraw-ahd+bm3d")
    assert reason and "bm3d" in reason and "pip install torch==2.13.0" in reason
    images = _images(tmp_path / "images", 64)
    out = tmp_path / "q.json"
    rc = quality.main(["--no-model", "--images", str(images), "--levels", "low", "--baselines", "bilinear",
                       "libraw-ahd+bm3d", "--out", str(out), "--markdown", str(tmp_path / "q.md")])
    assert rc == 0
    assert "skipped: libraw-ahd+bm3d: cannot import bm3d" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["method_order"] == ["bilinear"] and "libraw-ahd+bm3d" in report["skipped"]
    # Left out by --baselines: neither run nor reported as skipped.
    rc, report = _run(tmp_path, images, "--no-model", "--levels", "low", "--baselines", "malvar2004", name="r")
    assert rc == 0 and report["method_order"] == ["malvar2004"] and report["skipped"] == {}


def test_gmac_column_counts_the_onnx_graph_and_leaves_classical_rows_out(tmp_path):
    model = bilinear_onnx(tmp_path / "bilinear.onnx")
    images = _images(tmp_path / "images", 64)
    rc, report = _run(tmp_path, images, "--model", str(model), "--levels", "low", "--baselines", "bilinear")
    assert rc == 0
    row = "rawdev bilinear (0 steps)"
    expected = roofline.count_macs(model, quality.MAC_COUNT_TILE)["macs_per_output_mp"]
    assert expected > 0 and report["methods"][row]["macs_per_mp"] == pytest.approx(expected)
    assert report["methods"]["bilinear"]["macs_per_mp"] is None
    text = (tmp_path / "q.md").read_text()
    assert "| method | low | GMAC / MP | s / image | s / MP |" in text
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in text.splitlines() if line.startswith("| ") and " / " in line}
    assert cells[row][1] == f"{expected / 1e9:.1f}" and cells["bilinear"][1] == "-"
    s = report["summary"]["bilinear"]
    assert s["seconds_per_megapixel"] == pytest.approx(1 / s["megapixels_per_second"], rel=0.01)


def test_reuse_takes_rows_of_the_same_captures_and_refuses_others(tmp_path):
    images = _images(tmp_path / "images", 64)
    common = ["--no-model", "--levels", "low", "medium"]
    rc, first = _run(tmp_path, images, *common, "--baselines", "bilinear", "malvar2004", name="first")
    assert rc == 0
    rc, second = _run(tmp_path, images, *common, "--baselines", "bilinear", "malvar2004", "menon2007",
                      "--reuse", str(tmp_path / "first.json"), name="second")
    assert rc == 0
    assert second["method_order"] == ["bilinear", "malvar2004", "menon2007"]
    def rows(report: dict, method: str) -> list[dict]:
        return [r for r in report["per_image"] if r["method"] == method]

    for m in ("bilinear", "malvar2004"):
        assert rows(second, m) == rows(first, m)
        assert "reused_from" in second["methods"][m]
    assert "reused_from" not in second["methods"]["menon2007"]
    assert "(rows reused from `python benchmarks/quality.py" in (tmp_path / "second.md").read_text()
    assert len(second["per_image"]) == 3 * 2
    rc, _ = _run(tmp_path, images, *common, "--seed", "1", "--baselines", "bilinear",
                 "--reuse", str(tmp_path / "first.json"), name="third")
    assert rc == 2


def test_variance_stabilization_round_trip_and_white_noise_spectrum():
    rng = np.random.default_rng(0)
    gains, shot, read = np.array([2.0, 1.0, 1.6]), 2e-3, 4e-6
    clean = np.broadcast_to(np.array([0.3, 0.2, 0.5]), (200, 200, 3))
    sensor = clean / gains
    noisy = (sensor + rng.standard_normal(clean.shape) * np.sqrt(shot * sensor + read)) * gains
    z = peers.stabilize(noisy, gains, shot, read)
    assert np.allclose(z.reshape(-1, 3).std(axis=0), 1.0, atol=0.03)  # unit variance
    # The unbiased inverse of the clean transform's value gives the signal back.
    back = peers.unstabilize(peers.stabilize(clean, gains, shot, read), gains, shot, read)
    assert np.allclose(back, clean, rtol=0.02)
    white = rng.standard_normal((128, 128, 3)) * 1.5
    psd = peers.noise_psd(white, (40, 50))
    assert psd.shape == (40, 50, 3)
    assert np.allclose(psd.mean(axis=(0, 1)), 40 * 50 * 1.5**2, rtol=0.05)  # bm3d's scale for white noise


# --------------------------------------------------------------------------- with the packages


def test_demosaicnet_rows_beat_bilinear_and_count_their_macs(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("demosaicnet")
    if reason := peers.unavailable("demosaicnet"):
        pytest.skip(reason)
    net = peers.load_demosaicnet()
    records, pixels = peers.demosaicnet_records(net)
    # 15 3x3 convolutions of 64 channels at quarter resolution dominate: ~143 GMAC per megapixel.
    assert 140e9 < peers.macs_per_output_mp(records, pixels) < 147e9
    # Bands of rows give the same image as one pass (phase and offsets right).
    mosaic = np.random.default_rng(1).uniform(0.1, 0.9, (68, 40)).astype(np.float32)
    assert np.allclose(peers.demosaicnet_rgb(net, mosaic, band=20), peers.demosaicnet_rgb(net, mosaic), atol=1e-5)
    images = _images(tmp_path / "images", 96)
    rc, report = _run(tmp_path, images, "--no-model", "--levels", "none", "--baselines", "bilinear",
                      "demosaicnet", "demosaicnet-srgb")
    assert rc == 0 and report["method_order"] == ["bilinear", "demosaicnet", "demosaicnet-srgb"]
    levels = {m: report["summary"][m]["levels"]["none"]["psnr"] for m in report["method_order"]}
    assert levels["demosaicnet"] > levels["bilinear"] + 1, levels
    assert levels["demosaicnet-srgb"] > levels["bilinear"] + 1, levels
    assert report["methods"]["demosaicnet"]["macs_per_mp"] == pytest.approx(peers.macs_per_output_mp(records, pixels))


def test_bm3d_row_denoises_ahd(tmp_path):
    pytest.importorskip("bm3d")
    if reason := peers.unavailable("libraw-ahd+bm3d"):
        pytest.skip(reason)
    images = _images(tmp_path / "images", 96)
    rc, report = _run(tmp_path, images, "--no-model", "--levels", "none", "high", "--baselines", "libraw-ahd",
                      "libraw-ahd+bm3d")
    assert rc == 0
    s = report["summary"]
    assert s["libraw-ahd+bm3d"]["levels"]["high"]["psnr"] > s["libraw-ahd"]["levels"]["high"]["psnr"] + 2
    # Noise-free: only the quantization is there to remove, so nothing is lost.
    assert s["libraw-ahd+bm3d"]["levels"]["none"]["psnr"] > s["libraw-ahd"]["levels"]["none"]["psnr"] - 0.3


def test_reuse_runs_a_model_again_when_its_file_changed(tmp_path):
    """Rows are named by the model file's stem and steps; a row is only reused for the very file
    (sha256) that made it, so a retrained checkpoint under the same name is scored afresh."""
    images = _images(tmp_path / "images", 64)
    model = bilinear_onnx(tmp_path / "m.onnx")
    common = ["--model", str(model), "--levels", "low", "--baselines", "bilinear"]
    rc, first = _run(tmp_path, images, *common, name="first")
    assert rc == 0 and first["method_order"] == ["rawdev m (0 steps)", "bilinear"]
    rc, same = _run(tmp_path, images, *common, "--reuse", str(tmp_path / "first.json"), name="same")
    assert rc == 0 and "reused_from" in same["methods"]["rawdev m (0 steps)"]
    tiny_attention_onnx(model)  # another network, same file name
    rc, changed = _run(tmp_path, images, *common, "--reuse", str(tmp_path / "first.json"), name="changed")
    assert rc == 0 and "reused_from" not in changed["methods"]["rawdev m (0 steps)"]
    assert "reused_from" in changed["methods"]["bilinear"]
