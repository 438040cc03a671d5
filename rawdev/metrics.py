"""Image quality metrics: PSNR and SSIM (Wang et al. 2004, Gaussian window 11, sigma 1.5)."""

from __future__ import annotations

import numpy as np

SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(image: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels."""
    err = np.mean((np.asarray(image, np.float64) - np.asarray(reference, np.float64)) ** 2)
    if err == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / err))


def _gaussian_1d(sigma: float = 1.5, size: int = 11) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 2-D filtering of (H, W) keeping only fully covered positions."""
    k = len(kernel)
    h, w = image.shape
    rows = sum(kernel[i] * image[i : h - k + 1 + i, :] for i in range(k))
    return sum(kernel[i] * rows[:, i : w - k + 1 + i] for i in range(k))


def ssim_map(image: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """SSIM of two single-channel images at every fully covered window position."""
    x = np.asarray(image, np.float64)
    y = np.asarray(reference, np.float64)
    g = _gaussian_1d()
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    # Sample covariance (N / (N - 1)), as in Wang et al.'s code and scikit-image's default.
    n = 11 * 11
    cov_norm = n / (n - 1)
    sxx = cov_norm * (_filter_valid(x * x, g) - mu_x * mu_x)
    syy = cov_norm * (_filter_valid(y * y, g) - mu_y * mu_y)
    sxy = cov_norm * (_filter_valid(x * y, g) - mu_x * mu_y)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def ssim(image: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM; for colour images the mean over channels."""
    a, b = np.asarray(image), np.asarray(reference)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        return float(ssim_map(a, b, data_range).mean())
    return float(np.mean([ssim_map(a[..., c], b[..., c], data_range).mean() for c in range(a.shape[-1])]))
