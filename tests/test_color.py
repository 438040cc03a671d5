"""Colour and tone: transfer functions, matrices and the quantizing fast path."""

import numpy as np
import pytest

from rawdev.color import (
    SRGB_TO_XYZ,
    Rendering,
    cam_to_srgb_matrix,
    inverse_smoothstep_tone,
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
