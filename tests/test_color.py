"""Colour and tone: transfer functions, matrices and the quantizing fast path."""

import numpy as np
import pytest

from rawdev.color import (
    SRGB_TO_XYZ,
    Rendering,
    cam_to_srgb_matrix,
    inverse_smoothstep_tone,
    lift_negatives,
    render,
    render_to_int,
    smoothstep_tone,
    srgb_decode,
    srgb_encode,
)


def test_srgb_transfer_round_trip_and_known_points():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(srgb_decode(srgb_encode(x)), x, atol=1e-6)
    assert srgb_encode(np.float32(0.0031308)) == pytest.approx(0.04045, abs=1e-5)
    assert srgb_encode(np.float32(0.18)) == pytest.approx(0.4614, abs=1e-3)  # mid grey


def test_tone_curve_inverse():
    y = np.linspace(0, 1, 101)
    np.testing.assert_allclose(smoothstep_tone(inverse_smoothstep_tone(y)), y, atol=1e-9)


def test_white_balanced_white_stays_white_through_any_camera_matrix():
    xyz_to_cam = np.array([[0.6722, -0.0635, -0.0963], [-0.4287, 1.2460, 0.2028], [-0.0908, 0.2162, 0.5668]])
    m = cam_to_srgb_matrix(xyz_to_cam)
    np.testing.assert_allclose(m @ np.ones(3), np.ones(3), atol=1e-9)
    # with the sRGB primaries as "camera" the matrix is the identity
    np.testing.assert_allclose(cam_to_srgb_matrix(np.linalg.inv(SRGB_TO_XYZ)), np.eye(3), atol=1e-9)


@pytest.mark.parametrize("look", ["neutral", "default"])
@pytest.mark.parametrize("peak", [255, 65535])
def test_lookup_table_render_matches_exact_render_to_one_code(look, peak):
    rng = np.random.default_rng(0)
    rgb = np.concatenate([rng.random((64, 64, 3)), rng.random((64, 64, 3)) * 0.01]).astype(np.float32)
    r = Rendering(np.eye(3) * 0.9 + 0.05, exposure_ev=0.5, look=look)
    exact = np.round(render(rgb, r).astype(np.float64) * peak)
    fast = render_to_int(rgb, r, peak).astype(np.float64)
    assert np.abs(fast - exact).max() <= 1
    assert fast.dtype == np.float64 and render_to_int(rgb, r, peak).dtype == (np.uint8 if peak == 255 else np.uint16)


def test_render_into_a_view_of_the_output_writes_only_that_view():
    """develop renders each block into its place in the output image (a strided view)."""
    rng = np.random.default_rng(1)
    rgb = rng.random((20, 30, 3)).astype(np.float32)
    r = Rendering(np.eye(3), exposure_ev=0.0, look="default")
    image = np.full((40, 50, 3), 7, np.uint16)
    returned = render_to_int(rgb, r, 65535, out=image[5:25, 10:40])
    assert np.shares_memory(returned, image)
    np.testing.assert_array_equal(image[5:25, 10:40], render_to_int(rgb, r, 65535))
    outside = np.ones(image.shape[:2], bool)
    outside[5:25, 10:40] = False
    assert (image[outside] == 7).all()


def _noisy_plane(mean: float, sigma: float, shape=(256, 256), seed: int = 0) -> np.ndarray:
    return (mean + sigma * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_lifting_negatives_keeps_the_local_mean_where_a_clip_raises_it():
    """Noise round a dark level: a clip at 0 lifts the mean by about 0.4 sigma (a cast); lifting
    takes that back from the small values around, so the mean stays within a few percent of sigma."""
    sigma = 1.0
    for level in (0.1, 0.5, 1.0):
        image = np.stack([_noisy_plane(level, sigma, seed=s) for s in range(3)], axis=-1)
        clipped = np.maximum(image, 0).mean()
        lifted = image.copy()
        lift_negatives(lifted, white=100.0)  # noise of 1 % of white round black
        assert lifted.min() >= 0
        assert clipped - level > 0.08 * sigma  # the bias being removed
        assert abs(lifted.mean() - level) < 0.03 * sigma, (level, lifted.mean())


def test_lifting_leaves_images_without_negatives_and_bright_values_alone():
    image = np.random.default_rng(1).random((64, 80, 3), dtype=np.float32) + np.float32(0.01)
    before = image.copy()
    lift_negatives(image)
    np.testing.assert_array_equal(image, before)
    # A dark noisy half beside a bright half: bright values (signal, far above the noise) and every
    # pixel beyond the reach of a negative value keep their exact values.
    dark = _noisy_plane(0.0, 0.01, (64, 128), seed=2)
    bright = np.full((64, 128), 0.5, np.float32) + _noisy_plane(0.0, 0.01, (64, 128), seed=3)
    plane = np.concatenate([dark, bright], axis=1)
    image = np.repeat(plane[..., None], 3, axis=-1)
    before = image.copy()
    lift_negatives(image)
    np.testing.assert_array_equal(image[:, 128:], before[:, 128:])
    changed = np.flatnonzero((image != before).any(axis=(0, 2)))
    assert changed.max() < 128


def test_lifting_takes_nothing_from_a_neighbouring_colour():
    """A channel near 0 beside an area where that channel is bright (cyan beside red): its clip
    bias is paid by its own small values, not by the bright area, so its mean stays near its level."""
    near_zero = _noisy_plane(0.2, 1.0, (128, 64), seed=4)
    bright = _noisy_plane(50.0, 1.0, (128, 64), seed=5)
    image = np.repeat(np.concatenate([near_zero, bright], axis=1)[..., None], 3, axis=-1)
    before = image.copy()
    lift_negatives(image, white=100.0)
    np.testing.assert_array_equal(image[:, 64:], before[:, 64:])
    assert abs(image[:, :64].mean() - before[:, :64].mean()) < 0.03
    assert np.maximum(before[:, :64], 0).mean() - before[:, :64].mean() > 0.25  # what a clip adds


def test_rendering_keeps_dark_means_only_when_asked():
    rgb = np.repeat(_noisy_plane(0.002, 0.004, (128, 128), seed=6)[..., None], 3, axis=-1)
    r = Rendering(np.eye(3), look="neutral")
    plain, kept = (srgb_decode(render_to_int(rgb, r, 65535, keep_dark_means=k) / np.float32(65535)).mean()
                   for k in (False, True))
    assert plain > 0.002 + 0.0006  # the clip's lift (0.2 sigma at 0.5 sigma)
    assert abs(kept - 0.002) < 0.0003


def test_lifting_ignores_values_that_are_not_numbers():
    image = np.full((16, 16, 3), 0.5, np.float32)
    image[3, 4, 1] = np.nan
    image[8:, :, 0] = -0.1
    lift_negatives(image)
    assert np.isnan(image[3, 4, 1]) and (image[..., 0] >= 0).all()


def test_lifting_leaves_an_edge_overshoot_and_the_highlight_beside_it():
    """A large negative value is ringing at an edge, not noise: it is clipped as before, and the
    bright values beside it (a highlight) are not taxed to pay for it."""
    image = np.full((32, 32, 3), 0.8, np.float32)
    image[:, 20, 0] = -0.3  # overshoot beside the highlight
    image[:, 21:, 0] = 0.02  # a dark area past it
    before = image.copy()
    lift_negatives(image)
    np.testing.assert_array_equal(image[:, :20], before[:, :20])
    np.testing.assert_array_equal(image[:, 21:], before[:, 21:])
    assert (image[:, 20, 0] == 0).all()
