"""examples/make_examples.py: the example scene and DNGs, made small and read back by rawpy."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

rawpy = pytest.importorskip("rawpy")

from rawdev.cfa import parse_cfa  # noqa: E402
from rawdev.dng import read_dng_cfa_tags  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def me():
    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "examples" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_colorchecker_values(me):
    assert len(me.COLORCHECKER_SRGB8) == 24
    assert me.COLORCHECKER_SRGB8[0] == ("dark skin", (115, 82, 68))
    assert me.COLORCHECKER_SRGB8[18][1] == (243, 243, 242)
    assert me.COLORCHECKER_SRGB8[23][1] == (52, 52, 52)


def test_layout_full_size(me):
    lay = me.scene_layout(me.HEIGHT, me.WIDTH)
    rects = [p["rect"] for p in lay["patches"]]
    for x0, y0, x1, y1 in rects:
        assert 0 <= x0 < x1 <= me.WIDTH and 0 <= y0 < y1 <= me.HEIGHT
        assert x1 - x0 >= 100 and y1 - y0 >= 100
    # no two patches overlap
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


@pytest.mark.parametrize("size", [(96, 144), (97, 145)])
def test_make_examples_small(me, tmp_path, size):
    h, w = size
    paths = me.make_examples(tmp_path, height=h, width=w)
    scene = me.render_scene(h, w)
    assert scene.shape == (h, w, 3) and scene.dtype == np.float32
    assert 0.0 <= scene.min() and scene.max() <= 1.0

    for key, cfa_name, seed, period in (("bayer", "RGGB", me.SEED, 2), ("quad", "quad-RGGB", me.SEED + 1, 4)):
        expected = me.capture(scene, cfa_name, seed).raw
        with rawpy.imread(str(paths[key])) as r:
            assert r.raw_image_visible.shape == (h, w)
            np.testing.assert_array_equal(r.raw_image_visible, expected)
            assert list(r.black_level_per_channel) == [256] * 4
            assert r.white_level == 4095
        (rows, cols), pattern = read_dng_cfa_tags(paths[key])
        assert (rows, cols) == (period, period)
        np.testing.assert_array_equal(pattern, parse_cfa(cfa_name).array)

    import imagecodecs

    ref = imagecodecs.imread(str(paths["reference"]))
    assert ref.shape == (h, w, 3) and ref.dtype == np.uint8
    np.testing.assert_array_equal(ref, me.to_srgb8(scene))
    meta = json.loads(paths["patches"].read_text())
    assert (meta["width"], meta["height"]) == (w, h)
    assert len(meta["patches"]) == 24
    for p in meta["patches"]:
        x0, y0, x1, y1 = p["sample_rect"]
        assert x1 > x0 and y1 > y0
        assert (ref[y0:y1, x0:x1] == np.array(p["srgb8"], np.uint8)).all(), p["name"]
        X0, Y0, X1, Y1 = p["rect"]
        assert X0 <= x0 and Y0 <= y0 and x1 <= X1 and y1 <= Y1


def test_bundled_examples_read_back():
    """The committed example files, when present, are what rawpy reads as described."""
    folder = ROOT / "examples"
    bayer, quad = folder / "chart_bayer.dng", folder / "scene_quad.dng"
    if not (bayer.exists() and quad.exists()):
        pytest.skip("example DNGs not generated")
    for path, period in ((bayer, 2), (quad, 4)):
        with rawpy.imread(str(path)) as r:
            assert r.raw_image_visible.shape == (1024, 1536)
            assert r.white_level == 4095
        assert read_dng_cfa_tags(path)[0] == (period, period)
        assert path.stat().st_size < 4_000_000
