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


def ssim_mean(image: np.ndarray, reference: np.ndarray, data_range: float = 1.0, band: int = 512) -> float:
    """``ssim_map(image, reference).mean()`` of two single-channel images, computed in bands of
    rows (with the window's 10-row overlap) so that memory does not grow with the image."""
    h = image.shape[0]
    if image.shape != reference.shape or image.ndim != 2:
        raise ValueError(f"need two equal 2-D images, got {image.shape} and {reference.shape}")
    if h < 11 or image.shape[1] < 11:
        raise ValueError(f"image {image.shape} is smaller than the 11x11 SSIM window")
    step = max(int(band), 1)
    total, count = 0.0, 0
    for top in range(0, h - 10, step):
        rows = slice(top, min(top + step + 10, h))
        m = ssim_map(image[rows], reference[rows], data_range)
        total += float(m.sum(dtype=np.float64))
        count += m.size
    return total / count


def ssim_channels(image: np.ndarray, reference: np.ndarray, data_range: float = 1.0) -> list[float]:
    """Mean SSIM of each channel of two (H, W, C) images (Gaussian window 11, sigma 1.5)."""
    if image.shape != reference.shape or image.ndim != 3:
        raise ValueError(f"need two equal (H, W, C) images, got {image.shape} and {reference.shape}")
    return [ssim_mean(image[..., c], reference[..., c], data_range) for c in range(image.shape[2])]


def mse(image: np.ndarray, reference: np.ndarray, band: int = 512) -> float:
    """Mean squared error over all samples, accumulated in float64 over bands of rows."""
    if image.shape != reference.shape:
        raise ValueError(f"images differ in shape: {image.shape} vs {reference.shape}")
    total = 0.0
    for top in range(0, image.shape[0], band):
        rows = slice(top, top + band)
        d = np.asarray(image[rows], np.float64) - np.asarray(reference[rows], np.float64)
        total += float(np.sum(d * d))
    return total / image.size


def psnr_from_mse(err: float, data_range: float = 1.0) -> float:
    return float("inf") if err == 0 else float(10 * np.log10(data_range**2 / err))


def psnr_after_gain(image: np.ndarray, reference: np.ndarray, border: int = 4) -> float:
    """PSNR of two encoded 16-bit sRGB images after one global gain on ``image`` in linear light
    (least squares), ``border`` pixels left out: how two developers agree up to exposure."""
    from rawdev.color import srgb_decode, srgb_encode

    crop = (slice(border, -border), slice(border, -border)) if border else (slice(None), slice(None))
    a = srgb_decode(np.asarray(image)[crop] / 65535.0).astype(np.float64)
    b = srgb_decode(np.asarray(reference)[crop] / 65535.0).astype(np.float64)
    gain = float((a * b).sum() / max((a * a).sum(), 1e-12))
    return psnr(srgb_encode(np.clip(a * gain, 0, 1)), srgb_encode(b))


# ---------------------------------------------------------------------------------------------
# Colour: luma, sRGB -> CIE Lab (D65), CIEDE2000

# Luma weights of the sRGB / BT.709 primaries, applied to the encoded values (Y').
LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])


def luma(image: np.ndarray) -> np.ndarray:
    """Y' = 0.2126 R' + 0.7152 G' + 0.0722 B' of an encoded (H, W, 3) image (float64)."""
    return np.asarray(image, np.float64) @ LUMA_WEIGHTS


def _srgb_matrix() -> np.ndarray:
    from rawdev.color import SRGB_TO_XYZ

    return SRGB_TO_XYZ


def srgb_to_xyz(image: np.ndarray) -> np.ndarray:
    """Encoded sRGB in [0, 1] (..., 3) -> CIE XYZ (D65, Y of white = 1), float64."""
    v = np.asarray(image, np.float64)
    lin = np.where(v <= 0.04045, v / 12.92, ((np.maximum(v, 0.04045) + 0.055) / 1.055) ** 2.4)
    return lin @ _srgb_matrix().T


def xyz_to_lab(xyz: np.ndarray, white: np.ndarray | None = None) -> np.ndarray:
    """CIE XYZ -> CIE L*a*b* (CIE 15:2004) relative to ``white`` (default: sRGB's D65 white)."""
    white = _srgb_matrix().sum(axis=1) if white is None else np.asarray(white, np.float64)
    t = np.asarray(xyz, np.float64) / white
    eps, kappa = (6 / 29) ** 3, (29 / 6) ** 2 / 3
    f = np.where(t > eps, np.cbrt(t), kappa * t + 4 / 29)
    lab = np.empty_like(f)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def srgb_to_lab(image: np.ndarray) -> np.ndarray:
    """Encoded sRGB in [0, 1] (..., 3) -> CIE L*a*b* with the D65 white of sRGB."""
    return xyz_to_lab(srgb_to_xyz(image))


def ciede2000(
    lab1: np.ndarray, lab2: np.ndarray, kl: float = 1.0, kc: float = 1.0, kh: float = 1.0
) -> np.ndarray:
    """CIEDE2000 colour difference of L*a*b* arrays (..., 3), element-wise.

    Follows Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula: implementation
    notes, supplementary test data, and mathematical observations", equations (1)-(22),
    including their conventions for zero chroma and for hue differences of exactly 180 degrees.
    """
    lab1 = np.asarray(lab1, np.float64)
    lab2 = np.asarray(lab2, np.float64)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    c7 = c_mean**7
    g = 0.5 * (1 - np.sqrt(c7 / (c7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    h1p = np.where((a1p == 0) & (b1 == 0), 0.0, h1p)
    h2p = np.where((a2p == 0) & (b2 == 0), 0.0, h2p)

    dl = l2 - l1
    dc = c2p - c1p
    chroma_product = c1p * c2p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma_product == 0, 0.0, dh)
    d_hue = 2 * np.sqrt(chroma_product) * np.sin(np.radians(dh / 2))

    l_mean = (l1 + l2) / 2
    cp_mean = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(
        np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2)
    )
    h_mean = np.where(chroma_product == 0, h_sum, h_mean)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_mean - 30))
        + 0.24 * np.cos(np.radians(2 * h_mean))
        + 0.32 * np.cos(np.radians(3 * h_mean + 6))
        - 0.20 * np.cos(np.radians(4 * h_mean - 63))
    )
    d_theta = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    cp7 = cp_mean**7
    r_c = 2 * np.sqrt(cp7 / (cp7 + 25.0**7))
    l50 = (l_mean - 50) ** 2
    s_l = 1 + 0.015 * l50 / np.sqrt(20 + l50)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    tl, tc, th = dl / (kl * s_l), dc / (kc * s_c), d_hue / (kh * s_h)
    return np.sqrt(np.maximum(tl * tl + tc * tc + th * th + r_t * tc * th, 0.0))


def delta_e_srgb(image: np.ndarray, reference: np.ndarray, band: int = 256) -> np.ndarray:
    """Per-pixel CIEDE2000 between two encoded sRGB (H, W, 3) images in [0, 1], as float32 (H, W)."""
    if image.shape != reference.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need two equal (H, W, 3) images, got {image.shape} and {reference.shape}")
    out = np.empty(image.shape[:2], np.float32)
    for top in range(0, image.shape[0], band):
        rows = slice(top, top + band)
        out[rows] = ciede2000(srgb_to_lab(image[rows]), srgb_to_lab(reference[rows]))
    return out


# ---------------------------------------------------------------------------------------------
# Resampling: area average, Lanczos-3 (antialiased) resize, sub-pixel shift


def area_downscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block; trailing rows/columns that do not fill a block
    are dropped (crop first to choose which). Float32 for float input, float64 otherwise."""
    k = int(factor)
    if k < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    if k == 1:
        return image
    h, w = image.shape[0] // k, image.shape[1] // k
    if h == 0 or w == 0:
        raise ValueError(f"image {image.shape[:2]} is smaller than the factor {k}")
    dtype = image.dtype if image.dtype.kind == "f" else np.float64
    blocks = np.asarray(image[: h * k, : w * k], dtype).reshape(h, k, w, k, *image.shape[2:])
    return blocks.mean(axis=(1, 3), dtype=np.float64).astype(dtype)


def lanczos(x: np.ndarray, a: int = 3) -> np.ndarray:
    """The Lanczos kernel sinc(x) sinc(x / a) on |x| < a, zero outside."""
    x = np.asarray(x, np.float64)
    return np.where(np.abs(x) < a, np.sinc(x) * np.sinc(x / a), 0.0)


def _resample_taps(coords: np.ndarray, size: int, scale: float, a: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (len(coords), taps), of a Lanczos-``a`` filter widened by 1/scale
    when scale < 1 (antialiasing); indices past the edge are clamped (edge replicated)."""
    stretch = 1.0 / min(scale, 1.0)
    support = a * stretch
    first = np.floor(coords - support).astype(np.int64) + 1
    taps = int(np.ceil(2 * support)) + 1
    idx = first[:, None] + np.arange(taps)[None, :]
    w = lanczos((idx - coords[:, None]) / stretch, a)
    w /= w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, size - 1), w


def resample_axis(
    image: np.ndarray, axis: int, coords: np.ndarray, scale: float = 1.0, a: int = 3
) -> np.ndarray:
    """Sample ``image`` along ``axis`` at the (fractional) input positions ``coords`` with a
    Lanczos-``a`` filter; ``scale`` < 1 widens the filter for downscaling. Float32 output."""
    coords = np.asarray(coords, np.float64)
    src = np.moveaxis(np.asarray(image, np.float32), axis, 0)
    idx, w = _resample_taps(coords, src.shape[0], scale, a)
    w = w.astype(np.float32).reshape(w.shape + (1,) * (src.ndim - 1))
    out = np.zeros((len(coords),) + src.shape[1:], np.float32)
    for t in range(idx.shape[1]):
        out += w[:, t] * src[idx[:, t]]
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def resize(image: np.ndarray, height: int, width: int, a: int = 3) -> np.ndarray:
    """Resize (H, W[, C]) to (height, width) with an antialiased Lanczos-``a`` filter, pixel
    centres aligned (as PIL and OpenCV's area-preserving convention). Float32 output."""
    out = np.asarray(image, np.float32)
    for axis, n in ((0, int(height)), (1, int(width))):
        size = out.shape[axis]
        if n == size:
            continue
        if n < 1:
            raise ValueError(f"cannot resize to {height}x{width}")
        scale = n / size
        coords = (np.arange(n) + 0.5) / scale - 0.5
        out = resample_axis(out, axis, coords, scale, a)
    return out


# ---------------------------------------------------------------------------------------------
# Alignment: phase correlation with sub-pixel refinement


def _upsampled_correlation(
    cross: np.ndarray, fy: np.ndarray, fx: np.ndarray, centre: tuple[float, float], offsets: np.ndarray
) -> np.ndarray:
    """The inverse DFT of the spectrum ``cross`` (at frequencies ``fy`` x ``fx``, cycles per
    pixel) evaluated on the grid ``centre + offsets`` (a matrix DFT, as in Guizar-Sicairos et al.
    2008, "Efficient subpixel image registration algorithms"); real part."""
    ey = np.exp(2j * np.pi * np.outer(centre[0] + offsets, fy))
    ex = np.exp(2j * np.pi * np.outer(fx, centre[1] + offsets))
    return (ey @ cross @ ex).real


def phase_correlation(
    image: np.ndarray,
    reference: np.ndarray,
    max_shift: float | None = None,
    upsample: int = 100,
    cutoff: float = 0.25,
    window: bool = True,
) -> tuple[float, float, float]:
    """Global translation between two equal-size single-channel images by phase correlation.

    Returns ``(dy, dx, peak)``: ``image(y, x)`` matches ``reference(y - dy, x - dx)`` (the image
    is the reference moved down by dy and right by dx), to 1/``upsample`` pixel. ``peak`` is the
    height of the normalized correlation peak: 1 for a pure shift, near 0 for unrelated images.

    Both images are Hann-windowed (``window``) to tame their borders; the normalized cross-power
    spectrum keeps only frequencies below ``cutoff`` cycles per pixel on each axis, where
    resampling and demosaicking leave the phase intact (aliased high frequencies bias a
    sub-pixel peak by 0.1 px and more otherwise, cf. Stone et al. 2001); the peak is found on the
    integer grid (within ``max_shift`` pixels) and refined by an upsampled matrix DFT.
    """
    a = np.asarray(image, np.float64)
    b = np.asarray(reference, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two equal 2-D images, got {a.shape} and {b.shape}")
    ny, nx = a.shape
    a = a - a.mean()
    b = b - b.mean()
    if window:
        win = np.outer(np.hanning(ny), np.hanning(nx))
        a, b = a * win, b * win
    fy, fx = np.fft.fftfreq(ny), np.fft.fftfreq(nx)
    keep_y, keep_x = np.abs(fy) < cutoff, np.abs(fx) < cutoff
    cross = np.fft.fft2(a)[keep_y][:, keep_x] * np.conj(np.fft.fft2(b)[keep_y][:, keep_x])
    mag = np.abs(cross)
    cross /= np.maximum(mag, 1e-12 * max(float(mag.max()), 1e-300))
    cross /= cross.size  # a perfect match peaks at 1
    full = np.zeros((ny, nx), complex)
    full[np.ix_(keep_y, keep_x)] = cross
    corr = np.fft.ifft2(full).real * (ny * nx)
    sy, sx = fy * ny, fx * nx  # signed shift of each index
    if max_shift is not None:
        inside = (np.abs(sy)[:, None] <= max_shift) & (np.abs(sx)[None, :] <= max_shift)
        corr = np.where(inside, corr, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(corr)), corr.shape)
    dy, dx = float(sy[iy]), float(sx[ix])
    step = 1.0 / max(int(upsample), 1)
    offsets = np.arange(-1.0, 1.0 + step / 2, step)
    fine = _upsampled_correlation(cross, fy[keep_y], fx[keep_x], (dy, dx), offsets)
    py, px = np.unravel_index(int(np.argmax(fine)), fine.shape)
    return dy + float(offsets[py]), dx + float(offsets[px]), float(fine[py, px])


def refine_shift(
    image: np.ndarray, reference: np.ndarray, dy: float, dx: float, iterations: int = 10, reach: float = 2.0
) -> tuple[float, float] | None:
    """Refine a shift estimate (convention of :func:`phase_correlation`) by Gauss-Newton least
    squares (Lucas-Kanade) on the overlap: ``image`` sampled at ``(y + dy, x + dx)`` (Lanczos-3)
    should equal ``gain * reference + offset``. Unlike the whitened phase correlation, this
    weighs every pixel by its gradient, so noise in flat areas does not bias the result.
    None when it wanders more than ``reach`` pixels from the start (no nearby optimum)."""
    start = (dy, dx)
    a = np.asarray(image, np.float64)
    b = np.asarray(reference, np.float64)
    h, w = a.shape
    for _ in range(iterations):
        my, mx = int(np.ceil(abs(dy))) + 4, int(np.ceil(abs(dx))) + 4
        if h - 2 * my < 8 or w - 2 * mx < 8:
            break
        moved = resample_axis(a, 0, np.arange(my, h - my) + dy)
        moved = resample_axis(moved, 1, np.arange(mx, w - mx) + dx).astype(np.float64)
        ref = b[my : h - my, mx : w - mx]
        gy, gx = np.gradient((moved + ref) / 2)
        inner = (slice(1, -1), slice(1, -1))
        basis = np.stack([gy[inner].ravel(), gx[inner].ravel(), ref[inner].ravel(), np.ones(gy[inner].size)], 1)
        residual = (moved - ref)[inner].ravel()
        try:
            sol = np.linalg.lstsq(basis, residual, rcond=None)[0]
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(sol[:2])):
            break
        dy, dx = dy - float(sol[0]), dx - float(sol[1])
        if np.hypot(dy - start[0], dx - start[1]) > reach:
            return None
        if abs(sol[0]) < 1e-4 and abs(sol[1]) < 1e-4:
            break
    return dy, dx


def shift_residual(image: np.ndarray, reference: np.ndarray, dy: float, dx: float, margin: int) -> float:
    """Mean squared difference between ``image`` sampled at ``(y + dy, x + dx)`` and the best
    gain/offset fit of ``reference`` on it, over the reference inset by ``margin`` pixels."""
    a = np.asarray(image, np.float64)
    h, w = a.shape
    moved = resample_axis(a, 0, np.arange(margin, h - margin) + dy)
    moved = resample_axis(moved, 1, np.arange(margin, w - margin) + dx).astype(np.float64).ravel()
    ref = np.asarray(reference, np.float64)[margin : h - margin, margin : w - margin].ravel()
    basis = np.stack([ref, np.ones_like(ref)], 1)
    fit = np.linalg.lstsq(basis, moved, rcond=None)[0]
    return float(np.mean((moved - basis @ fit) ** 2))


def estimate_shift(
    image: np.ndarray, reference: np.ndarray, max_shift: float | None = None
) -> tuple[float, float, float]:
    """Global translation ``(dy, dx, peak)`` of ``image`` against ``reference`` (2-D, equal
    size; convention and ``peak`` of :func:`phase_correlation`).

    Phase correlation finds the shift (robust to large shifts and to tone differences); least
    squares (:func:`refine_shift`) refines it to a few hundredths of a pixel. Started from the
    correlation peak and, when that is not near zero, from no shift too; where the two disagree,
    the one that leaves the smaller residual wins, so that a spurious peak (images with little
    texture, heavy noise) cannot move a well-aligned pair.
    """
    dy, dx, peak = phase_correlation(image, reference, max_shift=max_shift)
    starts = [(dy, dx), (0.0, 0.0)] if np.hypot(dy, dx) > 0.5 else [(dy, dx)]
    refined = [r for r in (refine_shift(image, reference, *s) for s in starts) if r is not None]
    if max_shift is not None:
        refined = [r for r in refined if max(abs(r[0]), abs(r[1])) <= max_shift]
    if not refined:
        return dy, dx, peak
    if len(refined) == 1 or np.hypot(refined[0][0] - refined[1][0], refined[0][1] - refined[1][1]) < 0.1:
        return refined[0][0], refined[0][1], peak
    h, w = np.shape(image)
    margin = int(np.ceil(max(max(abs(r[0]), abs(r[1])) for r in refined))) + 4
    if min(h, w) - 2 * margin < 8:
        return refined[0][0], refined[0][1], peak
    errors = [shift_residual(image, reference, ry, rx, margin) for ry, rx in refined]
    best = refined[int(np.argmin(errors))]
    return best[0], best[1], peak
