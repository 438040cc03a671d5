"""benchmarks/quality.py on tiny images: it runs, writes its outputs, and its rows are consistent."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import bilinear_onnx

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "bench" / "kodak24"

pytest.importorskip("colour_demosaicing")


def _load_quality():
    spec = importlib.util.spec_from_file_location("rawdev_benchmarks_quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


quality = _load_quality()


def _tiny_images(folder: Path, size: int = 64) -> Path:
    """Two size x size photographs: crops of kodak images when the shared folder is here,
    otherwise synthetic ones with smooth gradients and a few edges."""
    import imagecodecs

    folder.mkdir()
    sources = sorted(KODAK.glob("*.png"))[:2] if KODAK.is_dir() else []
    for i in range(2):
        if len(sources) == 2:
            img = imagecodecs.imread(str(sources[i]))[200 : 200 + size, 300 : 300 + size, :3]
        else:
            y, x = np.mgrid[0:size, 0:size] / (size - 1)
            rgb = np.stack([0.2 + 0.6 * x, 0.25 + 0.5 * y, 0.5 + 0.3 * np.sin(6 * x + 3 * y + i)], -1)
            rgb[size // 3 : size // 2, :, i] *= 0.4  # a band with edges
            img = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        imagecodecs.imwrite(str(folder / f"img{i}.png"), np.ascontiguousarray(img))
    return folder


def test_quality_benchmark_runs_and_its_bilinear_rows_agree(tmp_path):
    images = _tiny_images(tmp_path / "images")
    model = bilinear_onnx(tmp_path / "bilinear.onnx")
    out, md = tmp_path / "q.json", tmp_path / "q.md"
    rc = quality.main(["--model", str(model), "--images", str(images), "--levels", "low", "medium",
                       "--border", "8", "--out", str(out), "--markdown", str(md), "--quiet",
                       "--baselines", *quality.BASELINES])  # the peers: tests/test_quality_peers.py
    assert rc == 0
    report = json.loads(out.read_text())
    rawdev_row = "rawdev bilinear (0 steps)"
    assert report["method_order"] == [rawdev_row, *quality.BASELINES]
    assert len(report["per_image"]) == 2 * 2 * len(report["method_order"])
    for key in ("platform", "cpu_model", "logical_cores"):
        assert report["machine"][key]
    assert report["versions"]["rawpy"] and report["versions"]["LibRaw"]
    assert report["methods"][rawdev_row]["contract"]["variant"] == "bilinear"
    summary = report["summary"]
    for level in ("low", "medium"):
        ours, theirs = summary[rawdev_row]["levels"][level], summary["bilinear"]["levels"][level]
        # Both are bilinear demosaicking of the same normalized mosaic with the same rendering.
        assert abs(ours["psnr"] - theirs["psnr"]) < 0.5, (level, ours, theirs)
        assert abs(ours["ssim"] - theirs["ssim"]) < 0.01
        assert 15 < ours["psnr"] < 60
    for method in report["method_order"]:  # more noise, lower scores, for every method
        levels = summary[method]["levels"]
        assert levels["low"]["psnr"] > levels["medium"]["psnr"], method
        assert summary[method]["seconds_per_image_mean"] > 0
    text = md.read_text()
    assert text.startswith(f"# Quality benchmark: {images.name} unprocessed")  # the set that was scored
    assert "| method | low | medium | GMAC / MP | s / image | s / MP |" in text
    assert f"| {rawdev_row} | " in text
    assert "machine: " in text and "LibRaw 0." in text


def test_libraw_ahd_is_rendered_like_the_pipeline(tmp_path):
    """A noise-free capture peaking between 75 % and 100 % of white (where LibRaw's default
    adjust_maximum_thr would rescale it) comes back from AHD without brightness or colour offset."""
    size = 96
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    srgb = np.stack([0.15 + 0.7 * x, 0.2 + 0.78 * y, 0.3 + 0.5 * (1 - x) * y], -1).astype(np.float32)
    dng = tmp_path / "smooth.dng"
    cap = quality.write_capture(srgb, seed=3, level="none", path=dng)
    peak = (cap.raw.max() - cap.black) / (cap.white - cap.black)
    assert 0.75 < peak < 1.0, peak
    out = quality.libraw_method("libraw-ahd").run(dng)
    assert out.shape == srgb.shape and out.dtype == np.uint16
    got = out[8:-8, 8:-8].astype(np.float64) / 65535
    ref = srgb[8:-8, 8:-8].astype(np.float64)
    ratio = got.mean(axis=(0, 1)) / ref.mean(axis=(0, 1))
    assert np.all(np.abs(ratio - 1) < 0.005), ratio
    psnr, _ = quality.score(out, srgb, border=8)
    assert psnr > 40, psnr
    # And the classical path agrees with it on this easy image.
    menon = quality.colour_demosaicing_method("menon2007").run(dng)
    assert quality.score(menon, srgb, border=8)[0] > 40


def test_missing_shared_folder_is_said_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(quality, "SHARED", tmp_path / "shared")
    monkeypatch.setattr(quality, "DEFAULT_IMAGES", tmp_path / "shared" / "data" / "bench" / "kodak24")
    assert quality.main(["--quiet", "--out", str(tmp_path / "q.json"), "--markdown", str(tmp_path / "q.md")]) == 2
    err = capsys.readouterr().err
    assert "shared data folder" in err and "absent" in err and "--images" in err
    assert not (tmp_path / "q.json").exists()
