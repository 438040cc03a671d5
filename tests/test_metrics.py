"""Tests for rawdev.metrics: PSNR and SSIM against scikit-image, CIEDE2000 against Sharma et al.'s
published test data, sRGB -> Lab, resampling and shift estimation."""

from __future__ import annotations

import numpy as np
import pytest

from rawdev import metrics

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_color = pytest.importorskip("skimage.color")

# Sharma, Wu & Dalal, "The CIEDE2000 color-difference formula: implementation notes,
# supplementary test data, and mathematical observations", Color Res. Appl. 30(1), 2005, Table 1:
# (L1, a1, b1, L2, a2, b2, dE00), all 34 pairs, published to four decimals.
SHARMA = [
    (50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425),
    (50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615),
    (50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412),
    (50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000),
    (50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669),
    (50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195),
    (50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045),
    (50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461),
    (50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065),
    (50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492),
    (50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977),
    (50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030),
    (50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000),
    (50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630),
    (61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731),
    (35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645),
    (22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373),
    (36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146),
    (90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441),
    (90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381),
    (6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A non-periodic test scene in [0, 1]: smooth blobs plus hard-edged rectangles."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w))
    for _ in range(30):
        cy, cx, s, a = rng.random(), rng.random(), rng.uniform(0.03, 0.2), rng.uniform(-1, 1)
        img += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    for _ in range(8):
        y0, x0 = rng.random(2) * 0.8
        hh, ww = rng.random(2) * 0.3
        img += 0.4 * rng.uniform(-1, 1) * ((yy > y0) & (yy < y0 + hh) & (xx > x0) & (xx < x0 + ww))
    return (img - img.min()) / (img.max() - img.min())


def noisy_pair(shape=(61, 83, 3), seed=0, sigma=0.08):
    rng = np.random.default_rng(seed)
    ref = np.stack([scene(*shape[:2], seed + c) for c in range(shape[2])], -1)
    img = np.clip(ref + sigma * rng.standard_normal(shape), 0, 1)
    return img, ref


# --------------------------------------------------------------------------------------------- PSNR, SSIM


def test_psnr_matches_scikit_image():
    img, ref = noisy_pair()
    expected = skimage_metrics.peak_signal_noise_ratio(ref, img, data_range=1.0)
    assert metrics.psnr(img, ref) == pytest.approx(expected, abs=1e-4)
    assert metrics.psnr_from_mse(metrics.mse(img, ref, band=7)) == pytest.approx(expected, abs=1e-4)
    assert metrics.psnr_from_mse(metrics.mse(ref, ref)) == float("inf")


def test_psnr_data_range_255_matches_scikit_image():
    img, ref = noisy_pair(seed=3)
    a, b = np.round(img * 255), np.round(ref * 255)
    expected = skimage_metrics.peak_signal_noise_ratio(b, a, data_range=255)
    assert metrics.psnr(a, b, data_range=255) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("sigma", [0.02, 0.15])
def test_ssim_matches_scikit_image(sigma):
    img, ref = noisy_pair(seed=1, sigma=sigma)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=True, data_range=1.0)
    expected = skimage_metrics.structural_similarity(img, ref, channel_axis=-1, **kw)
    assert metrics.ssim(img, ref) == pytest.approx(expected, abs=1e-4)
    per_channel = metrics.ssim_channels(img, ref)
    for c in range(3):
        want = skimage_metrics.structural_similarity(img[..., c], ref[..., c], **kw)
        assert per_channel[c] == pytest.approx(want, abs=1e-4)
    want_y = skimage_metrics.structural_similarity(metrics.luma(img), metrics.luma(ref), **kw)
    assert metrics.ssim_mean(metrics.luma(img), metrics.luma(ref)) == pytest.approx(want_y, abs=1e-4)


def test_banded_ssim_equals_whole_image_ssim():
    img, ref = noisy_pair(shape=(57, 40, 1), seed=2)
    whole = metrics.ssim_map(img[..., 0], ref[..., 0]).mean()
    for band in (1, 5, 13, 46, 47, 100):
        assert metrics.ssim_mean(img[..., 0], ref[..., 0], band=band) == pytest.approx(whole, abs=1e-12)
    with pytest.raises(ValueError):
        metrics.ssim_mean(img[:10, :, 0], ref[:10, :, 0])


def test_luma_weights():
    assert metrics.luma(np.ones((2, 2, 3))) == pytest.approx(np.ones((2, 2)))
    assert metrics.luma(np.array([[[0.0, 1.0, 0.0]]]))[0, 0] == pytest.approx(0.7152)


# --------------------------------------------------------------------------------------------- colour


def test_ciede2000_sharma_test_data():
    data = np.array(SHARMA)
    assert len(data) == 34
    forward = metrics.ciede2000(data[:, :3], data[:, 3:6])
    backward = metrics.ciede2000(data[:, 3:6], data[:, :3])
    np.testing.assert_allclose(forward, data[:, 6], atol=1e-4, rtol=0)
    np.testing.assert_allclose(backward, data[:, 6], atol=1e-4, rtol=0)


def test_ciede2000_agrees_with_scikit_image_and_is_zero_on_equal_colours():
    rng = np.random.default_rng(4)
    lab1 = np.stack([rng.uniform(0, 100, 500), rng.uniform(-100, 100, 500), rng.uniform(-100, 100, 500)], -1)
    lab2 = lab1 + rng.normal(0, 5, lab1.shape)
    np.testing.assert_allclose(metrics.ciede2000(lab1, lab2), skimage_color.deltaE_ciede2000(lab1, lab2), atol=1e-8)
    assert np.all(metrics.ciede2000(lab1, lab1) == 0)


def test_srgb_to_lab_reference_values():
    lab = metrics.srgb_to_lab(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5]]))
    np.testing.assert_allclose(lab[0], [100, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lab[1], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(lab[2], [53.2408, 80.0925, 67.2032], atol=2e-3)  # sRGB red, D65
    np.testing.assert_allclose(lab[3], [53.3890, 0, 0], atol=2e-3)  # mid grey stays neutral
    rng = np.random.default_rng(5)
    rgb = rng.random((20, 20, 3))
    # scikit-image rounds the sRGB matrix differently: agreement to a hundredth of a unit.
    np.testing.assert_allclose(metrics.srgb_to_lab(rgb), skimage_color.rgb2lab(rgb), atol=0.01)


def test_delta_e_srgb_bands_and_zero():
    img, ref = noisy_pair(shape=(33, 20, 3), seed=6)
    de = metrics.delta_e_srgb(img, ref, band=4)
    want = skimage_color.deltaE_ciede2000(metrics.srgb_to_lab(img), metrics.srgb_to_lab(ref))
    np.testing.assert_allclose(de, want, rtol=1e-5, atol=1e-5)
    assert np.all(metrics.delta_e_srgb(ref, ref) == 0)


# --------------------------------------------------------------------------------------------- resampling


def test_area_downscale():
    img = np.arange(4 * 6, dtype=np.float64).reshape(4, 6)
    out = metrics.area_downscale(img, 2)
    np.testing.assert_allclose(out, [[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]])
    assert metrics.area_downscale(img[:, :5], 2).shape == (2, 2)  # the odd column is dropped


def test_resize_keeps_constants_and_ramps():
    flat = np.full((30, 40, 3), 0.25, np.float32)
    np.testing.assert_allclose(metrics.resize(flat, 20, 27), 0.25, atol=1e-6)
    ramp = np.tile(np.arange(100, dtype=np.float64), (4, 1))
    out = metrics.resize(ramp, 4, 50)  # output pixel j covers input pixels 2j and 2j+1
    np.testing.assert_allclose(out[:, 5:-5], np.tile(np.arange(50) * 2 + 0.5, (4, 1))[:, 5:-5], atol=2e-3)
    up = metrics.resize(ramp, 4, 150)  # Lanczos-3 reproduces a ramp to about 0.02
    want = np.tile((np.arange(150) + 0.5) / 1.5 - 0.5, (4, 1))
    np.testing.assert_allclose(up[:, 10:-10], want[:, 10:-10], atol=0.025)


def test_resize_down_by_two_is_close_to_area_average():
    img = scene(96, 128, 2)
    smooth = metrics.area_downscale(img, 2)
    assert metrics.psnr(metrics.resize(img, 48, 64)[4:-4, 4:-4], smooth[4:-4, 4:-4]) > 30


def test_resample_axis_shifts_a_sinusoid():
    x = np.arange(200)
    signal = np.sin(2 * np.pi * x / 23.0)[None, :].repeat(3, 0)
    out = metrics.resample_axis(signal, 1, x[10:-10] + 0.3)
    np.testing.assert_allclose(out, np.sin(2 * np.pi * (x[10:-10] + 0.3) / 23.0)[None, :].repeat(3, 0), atol=5e-3)


# --------------------------------------------------------------------------------------------- shifts


def fourier_shift(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``img`` moved by (dy, dx), circularly and exactly (band-limited interpolation)."""
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (fy * dy + fx * dx))).real


@pytest.mark.parametrize("dy, dx", [(0, 0), (3, -5), (-7, 2), (12, 11)])
def test_phase_correlation_integer_shifts_exactly(dy, dx):
    ref = scene(96, 128, 3)
    moved = np.roll(ref, (dy, dx), axis=(0, 1))
    y, x, peak = metrics.phase_correlation(moved, ref)
    assert (y, x) == pytest.approx((dy, dx), abs=0.05)  # the wrapped edge biases the peak a little
    assert peak > 0.5
    y, x, _ = metrics.estimate_shift(moved, ref)
    assert (y, x) == pytest.approx((dy, dx), abs=0.02)


@pytest.mark.parametrize("dy, dx", [(0.37, -1.62), (-2.25, 4.5), (0.05, 0.0), (0.5, 0.5)])
def test_subpixel_circular_shifts(dy, dx):
    ref = scene(96, 128, 4)
    y, x, _ = metrics.estimate_shift(fourier_shift(ref, dy, dx), ref)
    assert abs(y - dy) < 0.05 and abs(x - dx) < 0.05


@pytest.mark.parametrize("sy, sx", [(3, -5), (-6, 7), (1, 0), (-5, -3), (10, 2)])
def test_subpixel_shifts_of_cropped_copies(sy, sx):
    """Real pairs are not periodic: crop two windows of a large scene, sy, sx pixels apart, and
    area-average them by 4 (a shift of sy/4, sx/4 pixels), with a tone and noise difference."""
    big = scene(592, 720, 5)
    k = 4
    a = metrics.area_downscale(big[16 + sy : 16 + sy + 512, 16 + sx : 16 + sx + 640], k)
    b = metrics.area_downscale(big[16 : 16 + 512, 16 : 16 + 640], k)
    rng = np.random.default_rng(abs(sy * 100 + sx))
    a = 0.8 * a + 0.1 + 0.01 * rng.standard_normal(a.shape)
    y, x, peak = metrics.estimate_shift(a, b)
    assert abs(y - (-sy / k)) < 0.1 and abs(x - (-sx / k)) < 0.1
    assert peak > 0.2


def test_max_shift_limits_the_search():
    ref = scene(96, 128, 6)
    moved = np.roll(ref, (20, 0), axis=(0, 1))
    assert metrics.phase_correlation(moved, ref)[0] == pytest.approx(20, abs=0.2)
    assert abs(metrics.phase_correlation(moved, ref, max_shift=8)[0]) <= 8


def test_unrelated_images_give_a_low_peak():
    rng = np.random.default_rng(7)
    _, _, peak = metrics.phase_correlation(rng.random((64, 64)), rng.random((64, 64)))
    assert peak < 0.2
