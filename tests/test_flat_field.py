"""Flat-field colour: the shipped model gives every flat ColorChecker patch back as its own colour,
on several cameras, at -6 to 0 EV and every noise level (benchmarks/flat_field.py), and so does
the bundled chart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import bilinear_onnx, mean_attention_onnx

from benchmarks import colour_chart
from benchmarks import flat_field as ff
from rawdev import DEFAULT_MODEL
from rawdev.model import resolve_model
from rawdev.session import open_session

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def default_session():
    return open_session(resolve_model(DEFAULT_MODEL), "cpu")


def test_the_floor_row_is_close_to_the_truth_at_low_noise(tmp_path):
    """At low noise the mean of a 96 x 96 sample is the truth to about a tenth of a unit: the
    measurement itself adds little where the targets are checked."""
    cases = [ff.Case("Nikon D850", ev, "low") for ev in (-2, 0)]
    rows = ff.evaluate({}, cases, tmp_path, libraw=False, say=lambda *_: None)
    assert rows[ff.FLOOR]["truth"]["mean"] < 0.1
    assert rows[ff.FLOOR]["truth"]["max"] < 0.5


def test_a_model_that_shifts_colour_is_caught(tmp_path):
    """Bilinear demosaicking is exact on flat fields (what is left: its other weighting of the same
    noise, and the output's clip of noise below 0 in sRGB near the gamut's edge, as for cyan);
    a model whose output depends on the tile's mean drifts by several units."""
    exact = open_session(bilinear_onnx(tmp_path / "b.onnx"), "cpu", threads=1)
    shifted = open_session(mean_attention_onnx(tmp_path / "m.onnx"), "cpu", threads=1)
    rows = ff.evaluate({"bilinear": exact, "shifted": shifted}, [ff.Case("Sony ILCE-7M3", 0, "low")], tmp_path,
                       libraw=False, say=lambda *_: None)
    assert rows["bilinear"]["drift"]["max"] < 0.4
    assert rows["shifted"]["drift"]["mean"] > 3


TEST_DRAWS = 4  # noise draws per case (the benchmark takes 16): with one, the sample's own noise
# alone moves the darkest, noisiest patches' means by up to 2 units


@pytest.fixture(scope="module")
def drift_rows(tmp_path_factory, default_session):
    """Flat-field rows of the default model and of its predecessor csanet-res-c32, every case."""
    previous = open_session(resolve_model("csanet-res-c32"), "cpu")
    return ff.evaluate({"rawdev": default_session, "previous": previous}, ff.all_cases(),
                       tmp_path_factory.mktemp("flat"), libraw=False, say=lambda *_: None, draws=TEST_DRAWS)


def test_shipped_model_keeps_the_mean_flat_colour_on_every_camera_exposure_and_noise_level(drift_rows):
    """The mean drift target, and against the truth never further than the sample's own noise
    allows plus that drift."""
    rows = drift_rows
    drift = rows["rawdev"]["drift"]
    assert drift["mean"] <= ff.TARGET_MEAN, drift
    truth, floor = rows["rawdev"]["truth"], rows[ff.FLOOR]["truth"]
    assert truth["mean"] <= floor["mean"] + ff.TARGET_MEAN


def test_shipped_model_keeps_every_flat_colour_within_the_largest_drift_target(drift_rows):
    """Down to -6 EV at high noise, where the output's clip at black once drifted by 3.3 units
    (rawdev.color.lift_negatives now keeps the local means)."""
    assert drift_rows["rawdev"]["drift"]["max"] <= ff.TARGET_MAX, drift_rows["rawdev"]["drift"]


def test_a_plain_clip_at_black_drifts_in_the_dark_where_lifting_does_not(tmp_path, default_session, monkeypatch):
    """The cause of the largest drift, kept in view: the same model rendered with a plain clip at
    0 drifts about twice as far at -6 EV and high noise."""
    import rawdev.develop

    cases = [ff.Case("Canon EOS 5D Mark II", -6, "high")]
    lifted = ff.evaluate({"m": default_session}, cases, tmp_path, libraw=False, say=lambda *_: None, draws=2)
    real = rawdev.develop.render_to_int
    monkeypatch.setattr(rawdev.develop, "render_to_int",
                        lambda *a, keep_dark_means=False, **k: real(*a, keep_dark_means=False, **k))
    clipped = ff.evaluate({"m": default_session}, cases, tmp_path, libraw=False, say=lambda *_: None, draws=2)
    assert clipped["m"]["drift"]["mean"] > 1.3 * lifted["m"]["drift"]["mean"], (clipped["m"]["drift"],
                                                                                lifted["m"]["drift"])


def test_default_model_drifts_less_than_its_predecessor_everywhere(drift_rows):
    """What the noise-aware model's training (no clip below black, low-pass colour loss, flat and
    dark fields) bought: less drift overall, at every noise level and every exposure."""
    new, old = drift_rows["rawdev"]["drift"], drift_rows["previous"]["drift"]
    assert new["mean"] < 0.75 * old["mean"], (new["mean"], old["mean"])
    assert new["max"] < old["max"]
    for group in ("by_level", "by_ev"):
        for key, cell in new[group].items():
            assert cell["mean"] < old[group][key]["mean"], (group, key)


def test_shipped_model_on_the_bundled_chart_is_within_0_3_mean(tmp_path):
    out = tmp_path / "colour.json"
    rc = colour_chart.main(["--examples", str(EXAMPLES), "--files", "chart_bayer.dng", "--baselines",
                            "--out", str(out), "--markdown", str(tmp_path / "c.md"), "--png-dir", str(tmp_path),
                            "--results-md", str(tmp_path / "R.md"), "--quiet"])
    assert rc == 0
    method = json.loads(out.read_text())["files"][0]["methods"][0]
    assert method["mean"] <= 0.3, method["mean"]
    assert np.isfinite(method["max"])


def test_flat_field_script_writes_its_report(tmp_path):
    model = bilinear_onnx(tmp_path / "bilinear.onnx")
    out, md, results = tmp_path / "ff.json", tmp_path / "ff.md", tmp_path / "R.md"
    rc = ff.main(["--model", str(model), "--cameras", "Nikon D850", "--evs", "-6", "0", "--levels", "low", "high",
                  "--out", str(out), "--markdown", str(md), "--results-md", str(results), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report["rows"]) == {"rawdev bilinear (0 steps)", "libraw-ahd", ff.FLOOR}
    assert len(report["rows"]["libraw-ahd"]["cases"]) == 4
    text = results.read_text()
    assert "<!-- BEGIN flat-field -->" in text and "**Drift**" in text and "| white 9.5 (.05 D) |" in text
