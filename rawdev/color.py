"""Colour and tone: white balance, camera matrices, exposure, tone curves, sRGB transfer."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache

import numpy as np

# sRGB (linear, D65) to CIE XYZ, IEC 61966-2-1.
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=np.float64,
)
XYZ_TO_SRGB = np.linalg.inv(SRGB_TO_XYZ)

LOOKS = ("neutral", "default")


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """The sRGB transfer function (linear -> encoded); defined for any float input."""
    x = np.asarray(linear, dtype=np.float32)
    low = x * np.float32(12.92)
    high = np.float32(1.055) * np.power(np.maximum(x, np.float32(0.0031308)), np.float32(1 / 2.4)) - np.float32(0.055)
    return np.where(x <= 0.0031308, low, high)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer (encoded -> linear)."""
    y = np.asarray(encoded, dtype=np.float32)
    low = y / np.float32(12.92)
    high = np.power((np.maximum(y, np.float32(0.04045)) + np.float32(0.055)) / np.float32(1.055), np.float32(2.4))
    return np.where(y <= 0.04045, low, high)


def cam_to_srgb_matrix(xyz_to_cam: np.ndarray) -> np.ndarray:
    """Camera RGB (white-balanced) -> linear sRGB, from an XYZ(D65)->camera matrix.

    As in dcraw: sRGB->camera is normalized so that each row sums to one (white stays white
    after white balance), then inverted.
    """
    srgb_to_cam = np.asarray(xyz_to_cam, np.float64) @ SRGB_TO_XYZ
    srgb_to_cam = srgb_to_cam / srgb_to_cam.sum(axis=1, keepdims=True)
    return np.linalg.inv(srgb_to_cam)


def smoothstep_tone(x: np.ndarray) -> np.ndarray:
    """A gentle S-shaped curve (3x^2 - 2x^3) on encoded values; Brooks et al. invert it."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def inverse_smoothstep_tone(y: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`smoothstep_tone` on [0, 1]."""
    y = np.clip(y, 0.0, 1.0)
    return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)


@dataclass(frozen=True)
class Rendering:
    """How linear, white-balanced camera RGB becomes display sRGB."""

    cam_to_srgb: np.ndarray
    exposure_ev: float = 0.0
    look: str = "default"


def _matrix(rendering: Rendering, scale: float = 1.0) -> np.ndarray:
    """The (3, 3) float32 matrix that takes camera RGB rows to linear sRGB times ``scale``, with
    the exposure folded in, transposed for ``rgb @ matrix``."""
    m = np.asarray(rendering.cam_to_srgb, np.float64) * (2.0**rendering.exposure_ev * scale)
    return np.ascontiguousarray(m.T, np.float32)


def _linear_srgb(camera_rgb: np.ndarray, rendering: Rendering) -> np.ndarray:
    """Camera RGB -> linear sRGB with exposure, clipped to [0, 1], float32."""
    out = np.matmul(np.asarray(camera_rgb, np.float32), _matrix(rendering))
    np.clip(out, 0.0, 1.0, out=out)
    return out


LUT_BITS = 20  # linear input steps: fine enough that 16-bit output never skips a code in the shadows


_LUT_LOCK = threading.Lock()


def encode_table(look: str, peak: int) -> np.ndarray:
    """The lookup table from linear sRGB (in 2**LUT_BITS steps) to encoded 0..peak for ``look``:
    built once (0.1 s), under a lock, so that a caller can build it in a thread ahead of the
    first render (rawdev.batch does while the first file decodes) without building it twice."""
    with _LUT_LOCK:
        return _encode_lut(look, peak)


@cache
def _encode_lut(look: str, peak: int) -> np.ndarray:
    x = np.linspace(0.0, 1.0, (1 << LUT_BITS) + 1, dtype=np.float64)
    y = srgb_encode(x).astype(np.float64)
    if look == "default":
        y = smoothstep_tone(y)
    return np.round(y * peak).astype(np.uint16 if peak > 255 else np.uint8)


# lift_negatives: values below zero are evened out within cells of CELL x CELL pixels, over
# windows of (2 REACH + 1)^2 cells, against the positive values up to BAND x the negatives' RMS;
# only values within NEAR_BLACK of white from 0 (either side) count as noise round black.
CELL, REACH, BAND, NEAR_BLACK = 8, 2, 3.0, 0.03


def lift_negatives(linear: np.ndarray, white: float = 1.0) -> None:
    """Raise the values below 0 of an (h, w, 3) linear image to 0, in place, keeping local means.

    A plain clip at 0 adds the negative half of the noise back as signal: in a dark, noisy or
    saturated area (a channel near 0 after the colour matrix) the mean rises by about 0.4 of the
    residual noise, a colour cast (flat fields at -6 EV and high noise drifted by up to 2 CIEDE2000
    units from it; benchmarks/flat_field.py). Here what the clip adds is taken back from the small
    positive values around it, those within BAND x the RMS of the negative values around them
    (noise, not signal): they are scaled by one factor per CELL x CELL cell, from the sums over the
    (2 REACH + 1)^2 cells around it. Brighter values, and every area without negative values
    within REACH cells, are left exactly as they are; where the local mean itself is below 0 the
    area goes to 0 (the nearest an image can hold). Only the noise round black is evened out:
    values further than NEAR_BLACK x ``white`` below 0 (an edge's overshoot) are not paid for, and
    where the negatives around a cell are that large, its values are not taxed (a plain clip)."""
    if linear.min() >= 0:  # a NaN minimum goes on to the channels' own check
        return
    h, w, channels = linear.shape
    for ch in range(channels):
        plane = linear[..., ch]
        below = plane < 0
        rows = np.flatnonzero(below.any(axis=1))
        if not rows.size:
            continue
        # Only the cells within REACH of a negative value can change: work on their bounding box,
        # zero-padded to whole cells and seen as (cell rows, CELL, cell columns, CELL).
        (y0, y1), (x0, x1) = _reach(rows, h), _reach(np.flatnonzero(below.any(axis=0)), w)
        hc, wc = -(-(y1 - y0) // CELL), -(-(x1 - x0) // CELL)
        x = np.zeros((hc * CELL, wc * CELL), np.float32)
        x[: y1 - y0, : x1 - x0] = plane[y0:y1, x0:x1]
        cells = x.reshape(hc, CELL, wc, CELL)
        low = cells < 0
        limit = np.float32(NEAR_BLACK * white)
        noise = low & (cells > -limit)
        neg = np.where(noise, cells, np.float32(0))
        with np.errstate(divide="ignore", invalid="ignore"):
            rms = np.sqrt(_cell_window_sums(neg * neg) / _cell_window_sums(noise))
        # Where the negatives are too large for noise round black (an edge's ringing), nothing is
        # evened out: the cell keeps the plain clip.
        top = np.nan_to_num(BAND * rms)
        top = np.where(top <= limit, top, 0).astype(np.float32)[:, None, :, None]
        band = (cells > 0) & (cells < top)
        deficit = _cell_window_sums(neg)  # <= 0
        mass = _cell_window_sums(np.where(band, cells, np.float32(0)))
        with np.errstate(divide="ignore", invalid="ignore"):
            keep = np.where(mass > 0, np.clip(1 + deficit / mass, 0, 1), 0).astype(np.float32)
        np.multiply(cells, keep[:, None, :, None], out=cells, where=band)
        cells[low] = 0
        plane[y0:y1, x0:x1] = x[: y1 - y0, : x1 - x0]


def _reach(hits: np.ndarray, n: int) -> tuple[int, int]:
    """The [start, stop) of whole cells from REACH cells before the first hit to REACH after the last."""
    first, last = hits[0] // CELL - REACH, hits[-1] // CELL + REACH + 1
    return max(first, 0) * CELL, min(last * CELL, n)


def _cell_window_sums(values: np.ndarray) -> np.ndarray:
    """(cell rows, cell columns) float64 of a (cell rows, CELL, cell columns, CELL) array: each
    cell's sum over the cells within REACH of it."""
    cells = values.sum(axis=3, dtype=np.float32).sum(axis=1, dtype=np.float64)
    for axis in (0, 1):
        n = cells.shape[axis]
        total = np.cumsum(cells, axis=axis)
        total = np.concatenate([np.zeros_like(total.take([0], axis=axis)), total], axis=axis)
        top = np.minimum(np.arange(n) + REACH + 1, n)
        bottom = np.maximum(np.arange(n) - REACH, 0)
        cells = total.take(top, axis=axis) - total.take(bottom, axis=axis)
    return cells


def render_to_int(camera_rgb: np.ndarray, rendering: Rendering, peak: int = 65535,
                  out: np.ndarray | None = None, keep_dark_means: bool = False) -> np.ndarray:
    """Like :func:`render`, quantized to 0..peak through a lookup table (the fast path for output).

    The matrix already scales to LUT steps, and the clip is to [0.5, steps + 0.5], so that the
    integer conversion rounds: four passes over the pixels besides the lookup (a matmul on the
    (h, w, 3) view is twice as fast as channel-by-channel products, np.take 1.8x fancy indexing).
    ``out``: an integer array of the image's shape (a view into the output image) to write into.
    ``keep_dark_means``: values below black are lifted by :func:`lift_negatives` (what rawdev's
    develop does) instead of clipped."""
    steps = float(1 << LUT_BITS)
    index = np.matmul(np.asarray(camera_rgb, np.float32), _matrix(rendering, steps))
    if keep_dark_means:
        lift_negatives(index, white=steps * 2.0**rendering.exposure_ev)
    index += np.float32(0.5)
    np.clip(index, np.float32(0.5), np.float32(steps + 0.5), out=index)
    values = lookup(encode_table(rendering.look, peak), index)
    if out is None:
        return values
    out[...] = values
    return out


def lookup(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``table[index]`` for an index already within the table, into a new contiguous array (the
    render's tone table here, rawdev.normalize's raw-code tables).

    0.59x the time of ``np.take(..., out=a strided view)`` with int32 indices on a 9 MP render: numpy
    converts any index type but intp first (pass intp to convert once for several tables), and
    writes a strided ``out`` element by element."""
    return np.take(table, index.astype(np.intp, copy=False), mode="wrap")  # in range: "wrap" only checks


def render(camera_rgb: np.ndarray, rendering: Rendering) -> np.ndarray:
    """Linear white-balanced camera RGB (H, W, 3) -> encoded sRGB in [0, 1], float32."""
    encoded = srgb_encode(_linear_srgb(camera_rgb, rendering))
    if rendering.look == "default":
        encoded = smoothstep_tone(encoded).astype(np.float32)
    return encoded
