"""benchmarks/editors.py on a tiny DNG with the bilinear model: main() runs without the editors
(reported as not installed), writes its JSON, markdown and RESULTS.md section; the comparison
helpers give zero for identical exports and bring cropped or half-size exports to one frame."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from conftest import random_mosaic, write_test_dng

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

editors = importlib.import_module("benchmarks.editors")


def test_main_without_the_editors(tmp_path, bilinear_model, monkeypatch):
    src = write_test_dng(tmp_path / "tiny.dng", random_mosaic(48, 64), "RGGB")
    which = shutil.which
    monkeypatch.setattr(editors.shutil, "which", lambda name: None if name.endswith("-cli") else which(name))
    out, md, results = tmp_path / "editors.json", tmp_path / "editors.md", tmp_path / "RESULTS.md"
    code = editors.main([str(src), "--model", str(bilinear_model), "--out", str(out), "--markdown", str(md),
                         "--results-md", str(results), "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    [entry] = report["files"]
    assert report["editors"] == [] and entry["file"] == "tiny.dng" and entry["dng_bytes"] > 48 * 64 * 6
    assert entry["headroom_psnr_db"] > 20
    if which("exiftool"):
        assert "Validate" in entry["exiftool"] and "Warning" not in entry["exiftool"]
    assert "<!-- BEGIN editors -->" in results.read_text() and "tiny.dng" in md.read_text()


def test_comparison_helpers():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 65535, (40, 60, 3)).astype(np.uint16)
    same = editors.compare(image, image, 1, chart=False)
    assert same["pixel_mean"] == same["pixel_p95"] == 0.0 and same["frame"] == [40, 60]
    a, b = editors.common_frame(image, image[4:-4, 4:-4], 1)  # an editor's 4-px border crop
    assert a.shape == b.shape == (32, 52, 3) and np.array_equal(a, b)
    flat = np.full((40, 60, 3), 30000, np.uint16)
    a, b = editors.common_frame(flat, flat[:20, :30], 2)  # a binned Quad-Bayer DNG is half size
    assert a.shape == b.shape == (20, 30, 3) and np.allclose(a, b, atol=1e-4)
