"""benchmarks/colour_chart.py on small example charts: the patch measurement is exact on the scene itself,
the script runs on a Bayer and a Quad-Bayer chart, and a model that gets colour wrong is caught."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import bilinear_onnx, mean_attention_onnx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest.importorskip("PIL")
colour = importlib.import_module("benchmarks.colour_chart")
H, W = 192, 288  # the example scene at a small size: patches of about 26 px, samples of 16 px


def _make_examples():
    spec = importlib.util.spec_from_file_location("rawdev_make_examples", ROOT / "examples" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_examples = _make_examples()


@pytest.fixture(scope="module")
def charts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("examples")
    make_examples.make_examples(folder, height=H, width=W)
    return folder


def test_measurement_of_the_scene_itself_is_exact(charts):
    """The rendered scene, at full and at half resolution (2x2 mean in linear light), measures
    as its reference values: the sample rectangles sit inside the patches."""
    from rawdev.color import srgb_decode, srgb_encode
    from rawdev.metrics import area_downscale

    doc = json.loads((charts / colour.PATCHES_JSON).read_text())
    scene = make_examples.render_scene(H, W)
    ref_lab = colour.reference_lab(doc["patches"])
    for scale, image in ((1, scene), (2, srgb_encode(area_downscale(srgb_decode(scene), 2)))):
        image16 = np.round(np.asarray(image, np.float64) * 65535).astype(np.uint16)
        result = colour.measure(image16, doc["patches"], scale, ref_lab)
        assert result["max"] < 0.01, (scale, result["max"])
        assert [p["srgb8"] for p in result["patches"]] == [p["srgb8"] for p in doc["patches"]]
    # A uniform offset is seen: every patch 10 codes (8-bit) brighter.
    brighter = np.round(np.clip(scene + 10 / 255, 0, 1) * 65535).astype(np.uint16)
    result = colour.measure(brighter, doc["patches"], 1, ref_lab)
    assert result["mean"] > 2 and result["mean_delta_l"] > 2


def test_colour_benchmark_runs_on_bayer_and_quad(tmp_path, charts):
    model = bilinear_onnx(tmp_path / "bilinear.onnx")
    out, md, results_md = tmp_path / "colour.json", tmp_path / "colour.md", tmp_path / "R.md"
    rc = colour.main(["--examples", str(charts), "--model", str(model), "--out", str(out), "--markdown", str(md),
                      "--png-dir", str(tmp_path / "png"), "--results-md", str(results_md), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    bayer, quad = report["files"]
    name = "rawdev bilinear (0 steps)"
    assert [m["method"] for m in bayer["methods"]] == [name, "libraw-ahd"]
    assert [m["method"] for m in quad["methods"]] == [
        f"{name} [bin]", "libraw-ahd [bin]", f"{name} [remosaic]", "libraw-ahd [remosaic]"]
    assert [m["scale"] for m in quad["methods"]] == [2, 2, 1, 1]
    for entry in (bayer, quad):
        for m in entry["methods"]:
            assert len(m["patches"]) == 24
            # Flat patches, low noise, an exact colour pipeline: well under one CIEDE2000 unit.
            assert m["mean"] < 1.0 and m["max"] < 2.5, (entry["file"], m["method"], m["mean"], m["max"])
            assert m["mean"] == pytest.approx(np.mean([p["delta_e00"] for p in m["patches"]]), abs=1e-3)
    for stem in ("chart_bayer", "scene_quad"):
        assert (tmp_path / "png" / f"colour_{stem}.png").stat().st_size > 1000
    text = results_md.read_text()
    assert "## Colour: CIEDE2000 per chart patch (benchmarks/colour_chart.py)" in text
    assert "<!-- BEGIN colour -->" in text and "| 24 | black 2 (1.5 D) |" in text
    assert "chart_bayer: rawdev" in text and "scene_quad: libraw-ahd [remosaic]" in text
    assert "machine: " in md.read_text()


def test_a_model_with_wrong_colour_is_caught(tmp_path, charts):
    """Bilinear scaled by (0.5 + the tile's mean): darker than the truth, far above 1 unit."""
    model = mean_attention_onnx(tmp_path / "mean.onnx")
    out = tmp_path / "colour.json"
    rc = colour.main(["--examples", str(charts), "--files", "chart_bayer.dng", "--model", str(model),
                      "--baselines", "--out", str(out), "--markdown", str(tmp_path / "c.md"),
                      "--png-dir", str(tmp_path), "--results-md", str(tmp_path / "R.md"), "--quiet"])
    assert rc == 0
    (entry,) = json.loads(out.read_text())["files"]
    (row,) = entry["methods"]
    assert row["mean"] > 3 and row["mean_delta_l"] < -3


def test_missing_examples_are_said_clearly(tmp_path, capsys):
    assert colour.main(["--examples", str(tmp_path), "--out", str(tmp_path / "c.json"), "--quiet"]) == 2
    assert "make_examples.py" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
