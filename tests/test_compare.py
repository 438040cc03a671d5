"""Tests for `rawdev compare`: EXIF orientation, geometry (size, crop, alignment), pairing of
folders, the report and exit codes, and a RAW file developed and scored end to end."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from typer.testing import CliRunner

from rawdev import compare, metrics
from rawdev.cli import app
from rawdev.output import apply_orientation, write_image

runner = CliRunner()


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A colour test scene in [0, 1] (H, W, 3): smooth blobs and hard-edged rectangles."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for _ in range(25):
        cy, cx, s = rng.random(), rng.random(), rng.uniform(0.03, 0.2)
        img += rng.uniform(-1, 1, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))[..., None]
    for _ in range(8):
        y0, x0 = rng.random(2) * 0.8
        hh, ww = rng.random(2) * 0.3
        img += 0.4 * rng.uniform(-1, 1, 3) * ((yy > y0) & (yy < y0 + hh) & (xx > x0) & (xx < x0 + ww))[..., None]
    lo, hi = img.min(axis=(0, 1)), img.max(axis=(0, 1))
    return 0.05 + 0.9 * (img - lo) / (hi - lo)


def u16(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)


def u8(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))


def exif_app1(orientation: int, order: str = "<") -> bytes:
    """An APP1 Exif segment whose IFD0 holds Make (out of line) and then Orientation."""
    e = order
    make = b"Test\0\0"
    entries = 2
    ifd_size = 2 + 12 * entries + 4
    tiff = (b"II" if e == "<" else b"MM") + struct.pack(e + "HI", 42, 8)
    tiff += struct.pack(e + "H", entries)
    tiff += struct.pack(e + "HHII", 271, 2, len(make), 8 + ifd_size)
    tiff += struct.pack(e + "HHI", 274, 3, 1) + struct.pack(e + "H", orientation) + b"\0\0"
    tiff += struct.pack(e + "I", 0) + make
    payload = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def write_jpeg(path: Path, image: np.ndarray, orientation: int | None = None, order: str = "<") -> None:
    data = imagecodecs.jpeg_encode(u8(image), level=95)
    if orientation is not None:
        data = data[:2] + exif_app1(orientation, order) + data[2:]
    path.write_bytes(data)


def run_json(*args: str):
    result = runner.invoke(app, ["compare", *map(str, args), "--json"])
    report = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, report


# --------------------------------------------------------------------------------------------- EXIF


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientation_parser(orientation, order):
    data = imagecodecs.jpeg_encode(np.zeros((8, 8, 3), np.uint8))
    assert compare.jpeg_orientation(data) is None
    tagged = data[:2] + exif_app1(orientation, order) + data[2:]
    assert compare.jpeg_orientation(tagged) == orientation
    # After a JFIF APP0 segment too, as cameras and editors write it.
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    assert compare.jpeg_orientation(data[:2] + app0 + exif_app1(orientation, order) + data[2:]) == orientation


def test_orientation_parser_is_robust():
    assert compare.jpeg_orientation(b"") is None
    assert compare.jpeg_orientation(b"\xff\xd8" + exif_app1(6)[:20]) is None  # truncated
    assert compare.tiff_orientation(b"XX*\0\0\0\0\0") is None
    assert compare.tiff_orientation(exif_app1(9)[10:]) is None  # out of range


def test_orientation_of_files(tmp_path):
    img = scene(24, 32)
    write_jpeg(tmp_path / "a.jpg", img, 8, ">")
    write_image(tmp_path / "a.png", u16(img))  # rawdev writes upright pixels: Orientation 1
    write_image(tmp_path / "a.tif", u16(img))
    assert compare.image_orientation(tmp_path / "a.jpg") == 8
    assert compare.image_orientation(tmp_path / "a.png") == 1
    assert compare.image_orientation(tmp_path / "a.tif") == 1


# --------------------------------------------------------------------------------------------- pairs


def test_identical_images(tmp_path):
    img = scene(64, 96, 1)
    write_image(tmp_path / "a.tif", u16(img))
    write_image(tmp_path / "b.png", u16(img))
    result, report = run_json(tmp_path / "a.tif", tmp_path / "b.png")
    assert result.exit_code == 0, result.output
    pair = report["pairs"][0]
    assert pair["status"] == "ok" and pair["identical"] is True
    assert pair["psnr_db"] is None  # infinite: not representable in JSON
    assert pair["ssim"]["mean"] == pytest.approx(1.0) and pair["ssim"]["luma"] == pytest.approx(1.0)
    assert pair["delta_e00"] == {"mean": 0.0, "p95": 0.0}
    assert pair["geometry"]["shift_px"] == pytest.approx({"dx": 0.0, "dy": 0.0}, abs=0.02)
    assert pair["geometry"]["compared"] == {"width": 96, "height": 64}


def test_scores_equal_the_metrics_on_same_size_images(tmp_path):
    ref = scene(64, 96, 2)
    img = np.clip(ref + np.random.default_rng(0).normal(0, 0.03, ref.shape), 0, 1)
    write_image(tmp_path / "a.tif", u16(img))
    write_image(tmp_path / "a.png", u16(ref))
    result, report = run_json(tmp_path / "a.tif", tmp_path / "a.png", "--no-align")
    assert result.exit_code == 0, result.output
    pair = report["pairs"][0]
    a, b = u16(img) / 65535.0, u16(ref) / 65535.0
    assert pair["psnr_db"] == pytest.approx(metrics.psnr(a, b), abs=1e-4)
    assert pair["ssim"]["mean"] == pytest.approx(metrics.ssim(a, b), abs=1e-5)
    assert pair["ssim"]["r"] == pytest.approx(metrics.ssim(a[..., 0], b[..., 0]), abs=1e-5)
    de = metrics.ciede2000(metrics.srgb_to_lab(a), metrics.srgb_to_lab(b))
    assert pair["delta_e00"]["mean"] == pytest.approx(de.mean(), rel=1e-4)
    assert pair["delta_e00"]["p95"] == pytest.approx(np.percentile(de, 95), rel=1e-4)
    assert pair["geometry"]["shift_px"] is None and pair["geometry"]["steps"] == []


def test_camera_jpeg_geometry_orientation_scale_and_shift(tmp_path):
    """The reference is twice the size, stored rotated with EXIF orientation 6, and framed
    3 and -5 of its pixels away: 1.5 and 2.5 pixels at the candidate's scale."""
    hr = scene(340, 500, 3)
    sy, sx = 3, -5
    cand = metrics.area_downscale(hr[8 + sy : 8 + sy + 320, 8 + sx : 8 + sx + 480], 2)
    ref_upright = hr[8:328, 8:488]
    stored = np.rot90(ref_upright, 1)
    assert np.array_equal(apply_orientation(stored, 6), ref_upright)
    write_image(tmp_path / "c.tif", u16(cand))
    write_jpeg(tmp_path / "c.jpg", stored, orientation=6)
    result, report = run_json(tmp_path / "c.tif", tmp_path / "c.jpg")
    assert result.exit_code == 0, result.output
    pair = report["pairs"][0]
    steps = " | ".join(pair["geometry"]["steps"])
    assert "reference: its tag's orientation 6 applied" in steps
    assert "reference 480x320 area-averaged 1/2 -> 240x160" in steps
    shift = pair["geometry"]["shift_px"]
    assert shift["dy"] == pytest.approx(-sy / 2, abs=0.1)
    assert shift["dx"] == pytest.approx(-sx / 2, abs=0.1)
    assert pair["psnr_db"] > 35 and pair["ssim"]["mean"] > 0.97 and pair["delta_e00"]["mean"] < 1.5
    assert pair["geometry"]["luma_correlation"] > 0.99
    # The same pair without alignment scores far worse; --border trims the edges.
    _, unaligned = run_json(tmp_path / "c.tif", tmp_path / "c.jpg", "--no-align", "--border", "4")
    p = unaligned["pairs"][0]
    assert p["psnr_db"] < pair["psnr_db"] - 5
    assert p["geometry"]["compared"] == {"width": 232, "height": 152}
    assert any("border: 4 px" in s for s in p["geometry"]["steps"])
    assert "orientation 6" in result.stderr and "area-averaged" in result.stderr


def test_non_integer_scale_is_resized_and_cropped(tmp_path):
    cand = scene(120, 180, 4)
    ref = np.clip(metrics.resize(cand, 180, 272), 0, 1)  # x1.5 and 2 columns wider
    write_image(tmp_path / "a.tif", u16(cand))
    write_image(tmp_path / "a.png", u16(ref))
    result, report = run_json(tmp_path / "a.tif", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    pair = report["pairs"][0]
    steps = " | ".join(pair["geometry"]["steps"])
    assert "reference 272x180 resized x0.6667" in steps and "Lanczos-3" in steps
    assert "cropped to 180x120 (centre)" in steps
    assert pair["psnr_db"] > 30 and pair["ssim"]["mean"] > 0.95


def test_a_raw_border_is_cropped_not_resized(tmp_path):
    big = scene(124, 184, 6)
    write_image(tmp_path / "a.tif", u16(big[3:123, 1:181]))  # 120x180, one pixel off centre
    write_image(tmp_path / "a.png", u16(big))
    result, report = run_json(tmp_path / "a.tif", tmp_path / "a.png")
    assert result.exit_code == 0, result.output
    pair = report["pairs"][0]
    assert pair["geometry"]["steps"][0] == "reference 184x124 cropped to 180x120 (centre)"
    assert pair["geometry"]["shift_px"] == pytest.approx({"dx": 1.0, "dy": -1.0}, abs=0.05)
    assert pair["identical"] is True  # the integer shift is undone exactly, by cropping


def test_different_aspect_ratios_are_refused(tmp_path):
    write_image(tmp_path / "a.tif", u16(scene(60, 90, 5)))
    write_image(tmp_path / "square.png", u16(scene(80, 80, 5)))
    write_image(tmp_path / "portrait.png", u16(scene(90, 60, 5)))
    result, report = run_json(tmp_path / "a.tif", tmp_path / "square.png")
    assert result.exit_code == 1
    assert report["pairs"][0]["status"] == "failed"
    line = result.stderr.strip().splitlines()[-1]
    assert "a.tif" in line and "square.png" in line and "aspect ratios differ" in line
    result = runner.invoke(app, ["compare", str(tmp_path / "a.tif"), str(tmp_path / "portrait.png")])
    assert result.exit_code == 1
    assert "rotated by 90 degrees" in result.stderr


def test_unreadable_file_fails_with_one_line(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"not an image at all")
    write_image(tmp_path / "a.png", u16(scene(40, 60)))
    result = runner.invoke(app, ["compare", str(tmp_path / "a.tif"), str(tmp_path / "a.png")])
    assert result.exit_code == 1
    failed = [ln for ln in result.stderr.splitlines() if "failed" in ln]
    assert len(failed) == 1 and str(tmp_path / "a.tif") in failed[0]


# --------------------------------------------------------------------------------------------- folders


def _folders(tmp_path: Path, broken: bool = False) -> tuple[Path, Path]:
    raws, refs = tmp_path / "raws", tmp_path / "refs"
    raws.mkdir()
    refs.mkdir()
    rng = np.random.default_rng(1)
    for i, name in enumerate(["a", "b", "c"]):
        ref = scene(48, 72, 10 + i)
        img = np.clip(ref + rng.normal(0, 0.02 * (i + 1), ref.shape), 0, 1)
        write_image(raws / f"{name}.tif", u16(img))
        if name != "c":
            write_image(refs / f"{name}.png", u16(ref))
    write_image(refs / "d.png", u16(scene(48, 72, 20)))
    (raws / "notes.txt").write_text("not an image")
    if broken:
        (raws / "b.tif").write_bytes(b"II*\0garbage")
    return raws, refs


def test_folders_pair_by_stem_and_end_with_means(tmp_path):
    raws, refs = _folders(tmp_path)
    result, report = run_json(raws, refs)
    assert result.exit_code == 0, result.output
    assert [p["name"] for p in report["pairs"]] == ["a", "b"]
    assert report["unpaired"] == {"candidates": [str(raws / "c.tif")], "references": [str(refs / "d.png")]}
    psnrs = [p["psnr_db"] for p in report["pairs"]]
    assert report["mean"]["psnr_db"] == pytest.approx(np.mean(psnrs))
    p95s = [p["delta_e00"]["p95"] for p in report["pairs"]]
    assert report["mean"]["delta_e00"]["p95"] == pytest.approx(np.mean(p95s))
    assert "unpaired, no reference: c.tif" in result.stderr
    assert "unpaired, no candidate: d.png" in result.stderr
    table = runner.invoke(app, ["compare", str(raws), str(refs)])
    assert table.exit_code == 0
    assert "mean (2)" in table.stdout and "PSNR" in table.stdout and "ΔE00" in table.stdout


def test_a_failed_pair_does_not_stop_the_others(tmp_path):
    raws, refs = _folders(tmp_path, broken=True)
    result, report = run_json(raws, refs)
    assert result.exit_code == 1
    status = {p["name"]: p["status"] for p in report["pairs"]}
    assert status == {"a": "ok", "b": "failed"}
    assert str(raws / "b.tif") in report["pairs"][1]["error"]
    assert report["mean"]["psnr_db"] == pytest.approx(report["pairs"][0]["psnr_db"])


def test_file_against_a_folder_finds_its_namesake(tmp_path):
    raws, refs = _folders(tmp_path)
    result, report = run_json(raws / "b.tif", refs)
    assert result.exit_code == 0, result.output
    assert report["pairs"][0]["reference"] == str(refs / "b.png")


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.tif", "refs"], "does not exist"),
        (["raws", "refs/a.png"], "is a folder but"),
        (["raws/c.tif", "refs"], "holds no TIFF, PNG or JPEG named c"),
        (["raws/a.tif", "refs/a.png", "--border", "-1"], "--border"),
        (["raws/a.tif", "refs/a.png", "--look", "vivid"], "--look"),
        (["raws/a.tif", "refs/a.png", "--threads", "-2"], "--threads -2"),
        (["raws/a.tif", "refs/a.png", "--overlap", "200"], "--overlap 200: at most half the tile"),
        (["raws/a.tif", "refs/a.png", "--exposure", "inf"], "--exposure 'inf'"),
        (["raws/a.tif", "refs/a.png", "--black", "nan"], "--black nan"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    _folders(tmp_path)
    paths = [str(tmp_path / a) for a in args[:2]]
    result = runner.invoke(app, ["compare", *paths, *args[2:]])
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_folders_without_common_names_are_a_usage_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    write_image(tmp_path / "x" / "a.tif", u16(scene(20, 30)))
    write_image(tmp_path / "y" / "b.tif", u16(scene(20, 30)))
    result = runner.invoke(app, ["compare", str(tmp_path / "x"), str(tmp_path / "y")])
    assert result.exit_code == 2
    assert "namesake" in result.stderr


# --------------------------------------------------------------------------------------------- RAW


def test_raw_file_is_developed_and_scored(tmp_path, bilinear_model):
    from rawdev.cfa import parse_cfa
    from rawdev.dng import write_dng
    from rawdev.train.synth import Unprocessor

    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w] / 64.0
    srgb = np.stack(
        [0.5 + 0.3 * np.sin(xx * 2.0 + 0.3), 0.5 + 0.3 * np.cos(yy * 1.7), 0.45 + 0.25 * np.sin((xx + yy) * 1.3)], -1
    )
    rggb = parse_cfa("RGGB")
    cap = Unprocessor(3).capture(srgb, rggb, shot=1e-4)
    shoot = tmp_path / "card"
    shoot.mkdir()
    write_dng(shoot / "s.dng", cap.raw, rggb, black=cap.black, white=int(cap.white),
              xyz_to_cam=cap.xyz_to_cam, wb_gains=cap.wb_gains)
    write_image(shoot / "s.png", u16(srgb))  # the "camera JPEG", beside its RAW file
    opts = ["--model", str(bilinear_model), "--look", "neutral", "--exposure", "0", "--device", "cpu", "--threads", "1"]
    result, report = run_json(shoot / "s.dng", shoot / "s.png", *opts)
    assert result.exit_code == 0, result.output
    pair = report["pairs"][0]
    assert pair["psnr_db"] > 25 and pair["ssim"]["mean"] > 0.9
    assert pair["developed"]["model"] == "bilinear.onnx" and pair["developed"]["exposure_ev"] == 0.0
    assert "model bilinear.onnx" in result.stderr
    # A camera folder against itself: RAW files are the candidates, the images their references.
    result, report = run_json(shoot, shoot, *opts)
    assert result.exit_code == 0, result.output
    assert [(Path(p["candidate"]).name, Path(p["reference"]).name) for p in report["pairs"]] == [("s.dng", "s.png")]
    # A RAW file cannot be the reference.
    result, _ = run_json(shoot / "s.png", shoot / "s.dng", *opts)
    assert result.exit_code == 1 and "cannot be the reference" in result.stderr


def test_the_pipeline_module_does_not_know_the_command_line():
    """Layers point one way: rawdev.cli holds the compare command and imports rawdev.compare
    when it runs; rawdev.compare imports neither the CLI nor typer."""
    import subprocess
    import sys

    code = ("import sys, rawdev.compare; bad = [m for m in ('rawdev.cli', 'typer') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
