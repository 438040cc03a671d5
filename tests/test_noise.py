"""The noise model a noise-aware network is told: from the DNG NoiseProfile or estimated from the
mosaic, turned into sigma planes, scaled by --denoise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import write_test_dng
from helpers import noise_probe_onnx
from typer.testing import CliRunner

from rawdev.cfa import parse_cfa
from rawdev.cli import app
from rawdev.develop import DevelopOptions, sensor_noise
from rawdev.model import NOISE_CONTRACT, ModelContract
from rawdev.noise import NoiseModel, estimate_noise, noise_sigma
from rawdev.normalize import NormalizeError, prepare
from rawdev.raw import Mosaic, read_mosaic
from rawdev.train.synth import NOISE_LEVELS, RGGB, Unprocessor

NOISE_AWARE = ModelContract(variant="noise", **NOISE_CONTRACT)
KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bench" / "kodak24"


def smooth_scene(h: int = 512, w: int = 512, seed: int = 0) -> np.ndarray:
    """Colour gradients with a dozen flat squares: smooth almost everywhere, some edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y, 0.7 - 0.5 * x * y], -1)
    for _ in range(12):
        y0, x0 = rng.integers(0, h - 64), rng.integers(0, w - 64)
        img[y0 : y0 + 64, x0 : x0 + 64] = rng.uniform(0.05, 0.95, 3)
    return img.astype(np.float32)


@pytest.mark.parametrize("level", list(NOISE_LEVELS))
@pytest.mark.parametrize("seed", [0, 1])
def test_estimate_recovers_the_known_noise_of_synthetic_captures(level, seed):
    shot = NOISE_LEVELS[level]
    cap = Unprocessor(seed).capture(smooth_scene(seed=seed), RGGB, shot=shot)
    est = estimate_noise(cap.raw, 2, np.full((2, 2), cap.black), cap.white)
    truth = NoiseModel(cap.shot, cap.read)
    assert est.source == "estimated"
    for x in (0.05, 0.2, 0.5):
        assert est.sigma(x) == pytest.approx(truth.sigma(x), rel=0.12), x
    assert est.shot == pytest.approx(shot, rel=0.15)


def test_a_large_capture_is_estimated_from_evenly_spaced_bands_within_the_same_bounds():
    """Planes taller than ESTIMATE_ROWS are sampled in evenly spaced bands (the estimate's cost
    stays that of about 768 rows whatever the image's size); the bands still see every level."""
    from rawdev.noise import ESTIMATE_ROWS

    cap = Unprocessor(3).capture(smooth_scene(2 * ESTIMATE_ROWS + 400, 1200, seed=3), RGGB,
                                 shot=NOISE_LEVELS["medium"])
    est = estimate_noise(cap.raw, 2, np.full((2, 2), cap.black), cap.white)
    truth = NoiseModel(cap.shot, cap.read)
    for x in (0.05, 0.2, 0.5):
        assert est.sigma(x) == pytest.approx(truth.sigma(x), rel=0.12), x


def test_the_quantile_ratio_is_the_simulated_one():
    from rawdev.noise import QUANTILE_RATIO, quantile_ratio_of_white_noise

    assert quantile_ratio_of_white_noise() == pytest.approx(QUANTILE_RATIO, abs=5e-5)


def test_estimate_on_photographs_stays_within_texture_bias():
    """kodak24's textured photographs raise the estimate (texture looks like noise), never lower it
    much; the bias shrinks as the noise grows. Measured: sigma at 0.2 is 1.1-2.1x at low noise,
    1.07-1.25x at high."""
    if not KODAK.is_dir():
        pytest.skip(f"kodak24 not available ({KODAK} is absent)")
    import imagecodecs

    paths = sorted(KODAK.glob("*.png"))[:4]
    for level, limit in (("medium", 1.6), ("high", 1.35)):
        for i, path in enumerate(paths):
            img = imagecodecs.imread(str(path))[..., :3].astype(np.float32) / 255
            cap = Unprocessor(i).capture(img, RGGB, shot=NOISE_LEVELS[level])
            est = estimate_noise(cap.raw, 2, np.full((2, 2), cap.black), cap.white)
            ratio = est.sigma(0.2) / NoiseModel(cap.shot, cap.read).sigma(0.2)
            assert 0.9 < ratio < limit, (level, path.name, ratio)


def test_estimate_of_a_noise_free_mosaic_is_about_zero():
    cap = Unprocessor(0).capture(smooth_scene(256, 256), RGGB, shot=1e-12, read=0.0, bits=16)
    est = estimate_noise(cap.raw, 2, np.full((2, 2), cap.black), cap.white)
    assert est.sigma(0.5) < 1e-4  # 16-bit quantization alone: 4.4e-6


def test_noise_profile_is_written_read_back_and_preferred_to_the_estimate(tmp_path):
    cap = Unprocessor(2).capture(smooth_scene(128, 128), RGGB, shot=2e-3)
    path = write_test_dng(tmp_path / "n.dng", cap.raw, "RGGB", black=cap.black, white=int(cap.white),
                          noise_profile=(3e-3, 5e-6))
    mosaic = read_mosaic(path)
    assert mosaic.noise_profile == NoiseModel(3e-3, 5e-6, "NoiseProfile")
    assert sensor_noise(mosaic) is mosaic.noise_profile
    plain = read_mosaic(write_test_dng(tmp_path / "p.dng", cap.raw, "RGGB", black=cap.black,
                                       white=int(cap.white)))
    assert plain.noise_profile is None
    est = sensor_noise(plain)
    assert est.source == "estimated"
    assert est.shot == pytest.approx(2e-3, rel=0.25)


def _mosaic(raw: np.ndarray, cfa: str = "RGGB", black: float = 256, white: float = 4095) -> Mosaic:
    c = parse_cfa(cfa)
    return Mosaic(data=raw, cfa=c, black=np.full((c.period,) * 2, black), white=white,
                  wb_camera=np.array([2.0, 1.0, 1.5]))


def test_prepare_appends_sigma_planes_that_follow_the_noise_model_and_the_strength():
    rng = np.random.default_rng(0)
    raw = rng.integers(200, 4000, (32, 48)).astype(np.uint16)
    noise = NoiseModel(2e-3, 1e-5)
    planes = prepare(_mosaic(raw), NOISE_AWARE, noise=noise).source[:, :]
    assert planes.shape == (16, 24, 8)
    gains = np.array([2.0, 1.0, 1.0, 1.5], np.float32)
    step = 1 / (4095 - 256)
    expected = gains * np.sqrt(noise.shot * np.maximum(planes[..., :4], 0) / gains + noise.read + step**2 / 12)
    np.testing.assert_allclose(planes[..., 4:], expected, rtol=1e-5)
    doubled = prepare(_mosaic(raw), NOISE_AWARE, noise=noise, strength=2.0).source[:, :]
    np.testing.assert_allclose(doubled[..., 4:], 2 * planes[..., 4:], rtol=1e-6)
    np.testing.assert_array_equal(doubled[..., :4], planes[..., :4])
    assert not prepare(_mosaic(raw), NOISE_AWARE, noise=noise, strength=0.0).source[:, :][..., 4:].any()


@pytest.mark.parametrize("contract", [NOISE_AWARE, ModelContract()], ids=["noise-aware", "plain"])
@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_integer_raw_goes_through_lookup_tables_with_the_same_values_as_the_arithmetic(contract, dtype):
    rng = np.random.default_rng(1)
    top = np.iinfo(dtype).max
    raw = rng.integers(0, top + 1, (40, 64)).astype(dtype)
    raw[:2, :2] = (0, top)  # both ends of the code range, clipped below black and at white
    mosaic = _mosaic(raw, black=min(256, top // 8), white=min(4095, top))
    as_float = dataclasses.replace(mosaic, data=raw.astype(np.float32))
    noise = NoiseModel(2e-3, 1e-5)
    source = prepare(mosaic, contract, noise=noise).source
    reference = prepare(as_float, contract, noise=noise).source
    assert source.tables is not None and reference.tables is None
    for key in [(slice(None), slice(None)), (slice(3, 17), slice(5, 30)), (slice(0, 20, 2), slice(1, 9))]:
        np.testing.assert_array_equal(source[key], reference[key])


def test_noise_aware_input_keeps_values_below_black_and_older_models_get_them_clipped():
    raw = np.full((8, 8), 250, np.uint16)  # 6 below the black level of 256
    kept = prepare(_mosaic(raw), NOISE_AWARE, noise=NoiseModel(1e-3, 0.0)).source[:, :]
    assert (kept[..., :4] < 0).all()
    assert (prepare(_mosaic(raw), ModelContract()).source[:, :] == 0).all()


def test_binning_quad_bayer_quarters_the_noise_variance():
    raw = np.full((16, 16), 2000, np.uint16)
    noise = NoiseModel(4e-3, 4e-5)
    quad = prepare(_mosaic(raw, "quad-RGGB"), NOISE_AWARE, "camera", "bin", noise=noise).source[:, :]
    bayer = prepare(_mosaic(raw[::2, ::2]), NOISE_AWARE, noise=noise.scaled(0.25)).source[:, :]
    np.testing.assert_allclose(quad[..., 4:], bayer[..., 4:], rtol=1e-5)


def test_a_noise_aware_model_without_a_noise_model_is_refused():
    with pytest.raises(NormalizeError, match="noise level"):
        prepare(_mosaic(np.zeros((8, 8), np.uint16)), NOISE_AWARE)


def test_noise_sigma_is_zero_for_a_noise_free_model():
    assert not noise_sigma(np.ones((2, 2, 4), np.float32), np.ones(4), NoiseModel(0.0, 0.0)).any()


@pytest.mark.parametrize("value", ["nan", "-1", "5", "inf", "strong"])
def test_denoise_values_outside_zero_to_four_are_usage_errors(value):
    with pytest.raises(ValueError, match="--denoise"):
        DevelopOptions(denoise=value)
    assert DevelopOptions(denoise="auto").denoise_strength == 1.0
    assert DevelopOptions(denoise="0").denoise_strength == 0.0


runner = CliRunner()


@pytest.fixture(scope="module")
def noisy_dng(tmp_path_factory) -> Path:
    cap = Unprocessor(5).capture(smooth_scene(96, 128), RGGB, shot=NOISE_LEVELS["high"])
    return write_test_dng(tmp_path_factory.mktemp("in") / "noisy.dng", cap.raw, "RGGB", black=cap.black,
                          white=int(cap.white), noise_profile=(cap.shot, cap.read))


def test_denoise_is_refused_for_a_model_that_takes_no_noise_level(noisy_dng, bilinear_model, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["develop", str(noisy_dng), "-o", str(out), "--model", str(bilinear_model),
                                 "--denoise", "0.5"])
    assert result.exit_code == 2
    assert "--denoise is not available for bilinear.onnx" in result.output
    assert not list(out.glob("*")) if out.exists() else True
    plain = runner.invoke(app, ["develop", str(noisy_dng), "-o", str(out), "--model", str(bilinear_model)])
    assert plain.exit_code == 0, plain.output


def test_denoise_strength_reaches_the_model_and_scales_what_it_is_told(noisy_dng, tmp_path):
    """The probe model adds its sigma planes to the image: its output grows with --denoise, in
    equal steps, and at 0 equals a model that is told nothing."""
    import tifffile

    probe = noise_probe_onnx(tmp_path / "probe.onnx", gain=4.0)
    means = []
    for s in ("0", "0.5", "1", "2"):
        out = tmp_path / f"s{s}"
        result = runner.invoke(app, ["develop", str(noisy_dng), "-o", str(out), "--model", str(probe),
                                     "--denoise", s, "--look", "neutral", "--exposure", "0"])
        assert result.exit_code == 0, result.output
        assert "told the noise level" in result.output
        means.append(float(tifffile.imread(out / "noisy.tif").astype(np.float64).mean()))
    assert means[0] < means[1] < means[2] < means[3]
    auto = runner.invoke(app, ["develop", str(noisy_dng), "-o", str(tmp_path / "auto"), "--model", str(probe),
                               "--look", "neutral", "--exposure", "0"])
    assert auto.exit_code == 0, auto.output
    assert float(tifffile.imread(tmp_path / "auto" / "noisy.tif").astype(np.float64).mean()) == means[2]


def test_the_noise_told_is_capped_at_the_noisiest_the_model_was_trained_on():
    from rawdev.noise import trained_ceiling

    raw = np.random.default_rng(1).integers(300, 4000, (16, 16)).astype(np.uint16)
    capped = ModelContract(variant="noise", noise_max_shot="0.01", **NOISE_CONTRACT)
    noise = NoiseModel(5e-3, 1e-5)
    told = prepare(_mosaic(raw), capped, noise=noise, strength=4.0).source[:, :]
    free = prepare(_mosaic(raw), NOISE_AWARE, noise=noise, strength=4.0).source[:, :]
    ceiling = noise_sigma(told[..., :4], np.array([2.0, 1.0, 1.0, 1.5]), trained_ceiling(0.01))
    np.testing.assert_allclose(told[..., 4:], np.minimum(free[..., 4:], ceiling), rtol=1e-5)
    assert (told[..., 4:] < free[..., 4:]).any()
    weak = prepare(_mosaic(raw), capped, noise=noise, strength=0.5).source[:, :]
    np.testing.assert_allclose(weak[..., 4:], 0.5 * prepare(_mosaic(raw), capped, noise=noise).source[:, :][..., 4:],
                               rtol=1e-5)


@pytest.mark.parametrize("level", list(NOISE_LEVELS))
def test_shipped_model_output_changes_smoothly_and_monotonically_with_the_strength(level):
    """The shipped noise-aware model on a noisy capture: the grain left (the image's pixel-to-pixel
    variation) falls as --denoise grows from 0 to 2, and no step of 0.25 in S changes the image much
    more than the steps beside it (no jump; at high noise most of the change comes below S = 1,
    where the grain goes, so the steps shrink smoothly towards S = 2)."""
    from rawdev import DEFAULT_MODEL
    from rawdev.develop import develop_mosaic
    from rawdev.model import resolve_model
    from rawdev.session import open_session

    session = open_session(resolve_model(DEFAULT_MODEL), "cpu")
    assert session.contract.noise_input == "sigma-planes"
    cap = Unprocessor(3).capture(smooth_scene(192, 192, seed=3), RGGB, shot=NOISE_LEVELS[level])
    mosaic = Mosaic(data=cap.raw, cfa=RGGB, black=np.full((2, 2), cap.black), white=cap.white,
                    wb_camera=cap.wb_gains / cap.wb_gains[1], noise_profile=NoiseModel(cap.shot, cap.read))
    strengths = np.arange(0.0, 2.01, 0.25)
    images = [develop_mosaic(mosaic, session, DevelopOptions(look="neutral", exposure="0", denoise=str(s))).image
              .astype(np.float64) / 65535 for s in strengths]
    grain = np.array([np.abs(np.diff(im, axis=1)).mean() for im in images])
    assert np.all(np.diff(grain[strengths <= 1]) < 0), grain.round(5)  # less grain at every step up to 1
    assert np.all(np.diff(grain) <= 0.03 * grain[:-1]), grain.round(5)  # and never more above it
    steps = np.array([np.abs(b - a).mean() for a, b in zip(images, images[1:])])
    beside = np.minimum(np.r_[steps[1:], np.inf], np.r_[np.inf, steps[:-1]])  # the smaller neighbouring step
    assert np.all(steps <= 2.5 * beside), steps.round(5)
