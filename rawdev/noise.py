"""The sensor's noise: its model, the noise sigma planes a noise-aware network takes, and where
the model comes from (the DNG NoiseProfile tag, else an estimate from the mosaic itself).

Units throughout: the signal x in [0, 1] of the sensor's range (black to white, before white
balance), variance = shot * x + read: the DNG specification's NoiseProfile (S, O).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# 3x3 high-pass (the outer product of [1, -2, 1] with itself; Immerkaer 1996): blind to any
# signal that varies along one axis only, linear or quadratic; white noise of variance v gives 36 v.
_HIGH_PASS_GAIN = 36.0
ESTIMATE_BINS = 12
ESTIMATE_MAX_SIGNAL = 0.9  # above: clipping at white biases the variance
ESTIMATE_ROWS = 768  # rows of each plane used (in bands of 64), enough for a stable estimate
BLOCK = 6
BLOCK_QUANTILE = 0.03
MIN_BLOCKS = 30


@dataclass(frozen=True)
class NoiseModel:
    """Sensor noise as variance = shot * x + read (see the module docstring)."""

    shot: float
    read: float
    source: str = "given"  # "NoiseProfile", "estimated" or "given"

    def scaled(self, factor: float) -> NoiseModel:
        """The model of an average of ``1 / factor`` independent samples (binning: 0.25)."""
        return NoiseModel(self.shot * factor, self.read * factor, self.source)

    def sigma(self, x: float) -> float:
        return float(np.sqrt(max(self.shot * x + self.read, 0.0)))


def noise_sigma(planes: np.ndarray, gains: np.ndarray, noise: NoiseModel, strength: float = 1.0,
                ceiling: NoiseModel | None = None) -> np.ndarray:
    """Noise standard deviation of each packed sample, in the units of the white-balanced input:
    ``gain * sqrt(shot * max(x / gain, 0) + read)``, times the denoising strength, and at most
    the ``ceiling`` model's (the noisiest a model was trained on).

    Both sigmas grow with the signal, so the smaller is taken of the variances and one square
    root serves both: this runs on every tile."""
    g = np.asarray(gains, np.float32)
    signal = np.maximum(planes, np.float32(0.0))

    def variance(model: NoiseModel, factor: float = 1.0) -> np.ndarray:
        var = signal * (np.float32(model.shot * factor) * g)
        var += np.float32(model.read * factor) * g * g
        return var

    var = variance(noise, strength * strength)
    if ceiling is not None:
        np.minimum(var, variance(ceiling), out=var)
    return np.sqrt(var)


def read_level(shot: float | np.ndarray) -> np.ndarray:
    """Read-noise variance tied to the shot level: log b = 2.18 log a + 1.20 (Brooks et al.)."""
    return np.exp(2.18 * np.log(shot) + 1.20)


def trained_ceiling(max_shot: float) -> NoiseModel:
    """The noisiest model of the training data: shot ``max_shot`` with the read level tied to it
    (:func:`read_level`, as the training data draws it), doubled for its spread."""
    return NoiseModel(max_shot, 2.0 * float(read_level(max_shot)), "trained")


def _bands(plane: np.ndarray, rows: int = ESTIMATE_ROWS, band: int = 64) -> list[np.ndarray]:
    """Evenly spaced horizontal bands of ``plane`` holding about ``rows`` rows in all."""
    h = plane.shape[0]
    if h <= rows:
        return [plane]
    count = max(rows // band, 1)
    starts = np.linspace(0, h - band, count).astype(int)
    return [plane[s : s + band] for s in starts]


def _residuals(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the samples each residual is centred on, high-pass residual / 6) of every interior
    sample of one same-colour plane; the residual's variance is the noise variance where the
    signal is smooth."""
    p = plane.astype(np.float32)
    rows = p[:-2] - 2 * p[1:-1] + p[2:]  # second difference down the columns
    hp = rows[:, :-2] - 2 * rows[:, 1:-1] + rows[:, 2:]
    hp *= np.float32(1 / np.sqrt(_HIGH_PASS_GAIN))
    return p[1:-1, 1:-1], hp


def _block_stats(signal: np.ndarray, res: np.ndarray, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(signal level, residual variance) of each ``block`` x ``block`` block."""
    h, w = (signal.shape[0] // block) * block, (signal.shape[1] // block) * block
    if h == 0 or w == 0:
        return np.empty(0, np.float32), np.empty(0, np.float32)

    def block_mean(a):
        # The rows of each block added first, then the columns: 0.22x the time of one mean over both
        # axes, which numpy reduces sample by sample across the array's strides.
        blocks = a[:h, :w].reshape(h // block, block, w // block, block)
        return (blocks.sum(axis=1, dtype=np.float32).sum(axis=2) * np.float32(1 / block**2)).ravel()

    return block_mean(signal), block_mean(np.square(res))


# The BLOCK_QUANTILE quantile of BLOCK x BLOCK block variances of unit white noise through
# _residuals: the residuals are correlated, so it comes from a simulation
# (quantile_ratio_of_white_noise), which tests/test_noise.py checks this value against.
QUANTILE_RATIO = 0.40011


def quantile_ratio_of_white_noise(q: float = BLOCK_QUANTILE, block: int = BLOCK, count: int = 4096) -> float:
    """Simulate :data:`QUANTILE_RATIO`: 4096 blocks of pure unit white noise."""
    rng = np.random.default_rng(0)
    side = int(np.sqrt(count)) * block + 2
    _, res = _residuals(rng.standard_normal((side, side)).astype(np.float32))
    return float(np.quantile(_block_stats(np.zeros_like(res), res, block)[1], q))


def estimate_noise(data: np.ndarray, period: int, black: np.ndarray, white: float) -> NoiseModel:
    """Estimate (shot, read) from a mosaic.

    In every same-colour plane a high-pass residual, blind to smooth signal, is averaged in
    BLOCK x BLOCK blocks. Blocks are binned by signal level; in each bin the BLOCK_QUANTILE
    quantile of block variances comes from the smoothest blocks, where texture adds least, and is
    turned into the noise variance by the same quantile of pure noise. A line variance =
    shot * x + read through the bins gives the model, both terms non-negative; a second pass
    divides each block by the first line before taking the quantile, so the noise's growth within
    a bin does not bias it."""
    xs_all, vs_all = [], []
    black = np.asarray(black, np.float64)
    for dy in range(period):
        for dx in range(period):
            level = float(black[dy % black.shape[0], dx % black.shape[1]])
            scale = np.float32(1.0 / max(white - level, 1.0))
            plane = data[dy::period, dx::period]
            for band in _bands(plane):
                if min(band.shape) < BLOCK + 2:
                    continue
                mean, res = _residuals((band.astype(np.float32) - np.float32(level)) * scale)
                x, v = _block_stats(mean, res)
                xs_all.append(x)
                vs_all.append(v)
    if not xs_all:
        return NoiseModel(0.0, 0.0, "estimated")
    x, v = np.concatenate(xs_all), np.concatenate(vs_all)
    keep = (x < ESTIMATE_MAX_SIGNAL) & (x > -0.01) & (v > 0)  # v = 0: clipped at white
    x, v = x[keep], v[keep]
    if x.size < 4 * MIN_BLOCKS:
        return NoiseModel(0.0, 0.0, "estimated")
    ratio = QUANTILE_RATIO
    edges = np.unique(np.quantile(x, np.linspace(0, 1, ESTIMATE_BINS + 1)))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    model = NoiseModel(0.0, 1.0)  # the first pass treats every bin's noise as flat
    for _ in range(2):
        # Within a bin the noise still grows with the signal: the decile is taken of variances
        # divided by the previous pass's model, then scaled back at the bin's mean signal.
        expected = np.maximum(model.shot * np.maximum(x, 0.0) + model.read, 1e-20)
        xs, vs, ns = [], [], []
        for b in range(len(edges) - 1):
            sel = which == b
            n = int(np.count_nonzero(sel))
            if n < MIN_BLOCKS:
                continue
            level = float(np.mean(np.maximum(x[sel], 0.0)))
            xs.append(level)
            vs.append(float(np.quantile(v[sel] / expected[sel], BLOCK_QUANTILE)) / ratio
                      * max(model.shot * level + model.read, 1e-20))
            ns.append(n)
        model = _fit_line(np.array(xs), np.array(vs), np.array(ns, np.float64))
        if model.shot <= 0 and model.read <= 0:
            break
    return model


def _fit_line(x: np.ndarray, v: np.ndarray, n: np.ndarray) -> NoiseModel:
    """variance = shot * x + read by least squares with relative errors (weights n / v^2), both
    terms kept non-negative."""
    if x.size == 0:
        return NoiseModel(0.0, 0.0, "estimated")
    w = n / np.maximum(v, 1e-20) ** 2
    if x.size >= 2 and np.ptp(x) > 0:
        a = np.stack([x, np.ones_like(x)], axis=1) * np.sqrt(w)[:, None]
        shot, read = np.linalg.lstsq(a, v * np.sqrt(w), rcond=None)[0]
        if shot >= 0 and read >= 0:
            return NoiseModel(float(shot), float(read), "estimated")
        if shot < 0:  # signal-independent noise
            return NoiseModel(0.0, float(max(np.sum(w * v) / np.sum(w), 0.0)), "estimated")
    through_zero = float(np.sum(w * x * v) / max(np.sum(w * x * x), 1e-30))
    return NoiseModel(max(through_zero, 0.0), 0.0, "estimated")
