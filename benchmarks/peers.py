"""The installable peers of benchmarks/quality.py: demosaicnet (Gharbi et al. 2016) and BM3D
(Dabov et al. 2007, the ``bm3d`` package) on LibRaw's AHD, with what they cost in MACs.

Neither is a dependency of rawdev: ``pip install torch==2.13.0`` (the CPU build; a looser pin
pulls a multi-GB CUDA build) and then ``pip install '.[peers]'`` (benchmarks/README.md). Every
import of torch, demosaicnet or bm3d is inside a function, so this module and quality.py import
without them; :func:`unavailable` says why a row cannot run.

- demosaicnet: its pretrained Bayer model (``BayerDemosaick``, shipped inside the package) takes
  a (1, 3, H, W) mosaic of the GRBG phase (``demosaicnet.mosaic.bayer``: G R / B G) with the
  unsampled colours at 0, and shrinks it by 31 pixels on every side (15 unpadded 3x3
  convolutions at half resolution, one at full resolution). :func:`demosaicnet_rgb` reflects the
  canonical RGGB mosaic outwards (reflection keeps the CFA phase), one column more on the left
  so that the first sample is G on an R row, and runs it in bands of rows to bound memory.
- BM3D: AHD's output is denoised in linear, white-balanced camera RGB, before the colour matrix
  (which mixes and amplifies the noise). The capture's noise model (variance = shot * x + read
  in sensor units, x before white balance) becomes, in the white-balanced channel c with gain
  g_c, variance = alpha_c v + beta_c (alpha_c = shot g_c, beta_c = (read + q^2 / 12) g_c^2, q the
  raw step); the generalized Anscombe transform makes the sensor's noise unit-variance Gaussian,
  and the closed-form approximation of the exact unbiased inverse (Makitalo and Foi 2011/2013)
  brings it back. AHD's interpolation leaves that noise spatially correlated (its standard
  deviation drops to 0.85-0.96 of the sensor's, but it is no longer white), so BM3D gets the noise's power
  spectrum, not a sigma (the bm3d package is made for correlated noise: Makinen, Azzari and Foi
  2020): the autocovariance (11 x 11 lags) of the same noise on a flat grey field developed by
  the same AHD and stabilized the same way (:func:`flat_field_noise`, :func:`noise_psd`). On
  kodim03 and kodim19 that gave +0.2-0.4 dB at the low level, +0.9-1.4 dB at medium and
  +1.4-1.9 dB at high over sigma 1 (0.2-0.5 dB short of a sigma x 1.4 hand-tuned on them at medium and high).
  Why this domain: BM3D assumes stationary Gaussian noise, and the noise here is
  signal-dependent; one sigma on the sRGB output over-smooths highlights or under-smooths the
  shadows (the sRGB curve multiplies read noise by 12.92 in the darkest tones).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

# Rows this module provides, the modules each needs, and what to install when they are missing.
PEERS = ("demosaicnet", "demosaicnet-srgb", "libraw-ahd+bm3d")
NEEDS = {
    "demosaicnet": ("torch", "demosaicnet"),
    "demosaicnet-srgb": ("torch", "demosaicnet"),
    "libraw-ahd+bm3d": ("bm3d",),
}
INSTALL = "pip install torch==2.13.0 && pip install '.[peers]' (benchmarks/README.md)"

DEMOSAICNET_CROP = 31  # pixels the unpadded network loses on every side
DEMOSAICNET_BAND = 512  # output rows per forward pass (memory: ~64 x (W + 62) x 4 bytes per row)
# Its input is G R / B G: the canonical RGGB mosaic shifted by one column.
DEMOSAICNET_PAD = ((32, 32), (33, 31))  # (top, bottom), (left, right): even rows, odd left
MAC_COUNT_SIZE = 4096  # output pixels per side of the (shape-only) pass that counts MACs
FLAT_FIELD = 256  # pixels per side of the flat grey field BM3D's noise spectrum is measured on
PSD_LAGS = 5  # autocovariance lags (each way) that make the spectrum
FLAT_GREY = 0.18  # its linear, white-balanced level
FLAT_SEED = 12345


def versions() -> dict[str, str | None]:
    """Installed versions of the peers' packages (None where absent)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("torch", "demosaicnet", "bm3d", "bm4d"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def unavailable(name: str) -> str | None:
    """Why row ``name`` cannot run here (a missing or broken import), or None when it can."""
    for module in NEEDS[name]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or demosaicnet's pkg_resources on setuptools >= 81
            return f"{name}: cannot import {module} ({type(exc).__name__}: {exc}); install with {INSTALL}"
    return None


# --------------------------------------------------------------------------- MACs


@dataclass(frozen=True)
class ConvRecord:
    """One convolution as it ran: its kind, the weight's shape and the pixels in and out."""

    op: str  # "Conv" or "ConvTranspose"
    weight_shape: tuple[int, ...]
    in_pixels: int  # batch x H x W of its input
    out_pixels: int  # batch x H x W of its output


def conv_macs(records: Iterable[ConvRecord]) -> int:
    """Multiply-adds of the convolutions, counted as benchmarks/roofline.py counts an ONNX graph:
    Conv: output pixels x the weight's size (kH kW Cin/group Cout); ConvTranspose: input pixels x
    the weight's size (Cin Cout/group kH kW). Elementwise work (ReLU, products, concat) is not counted."""
    total = 0
    for r in records:
        if r.op not in ("Conv", "ConvTranspose"):
            raise ValueError(f"unknown op {r.op!r}")
        pixels = r.out_pixels if r.op == "Conv" else r.in_pixels
        total += pixels * int(np.prod(r.weight_shape))
    return total


def demosaicnet_records(net, size: int = MAC_COUNT_SIZE) -> tuple[list[ConvRecord], int]:
    """The convolutions of ``net`` on a (1, 3, size + 62, size + 62) input, from a pass on
    torch's shape-only "meta" device (no arithmetic), and the output pixels (size^2)."""
    import torch

    meta = copy.deepcopy(net).to("meta")
    records: list[ConvRecord] = []

    def hook(module, inputs, output) -> None:
        op = "ConvTranspose" if isinstance(module, torch.nn.ConvTranspose2d) else "Conv"
        x = inputs[0]
        records.append(ConvRecord(op, tuple(module.weight.shape), x.shape[0] * x.shape[2] * x.shape[3],
                                  output.shape[0] * output.shape[2] * output.shape[3]))

    handles = [m.register_forward_hook(hook) for m in meta.modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    try:
        with torch.no_grad():
            out = meta(torch.empty(1, 3, size + 2 * DEMOSAICNET_CROP, size + 2 * DEMOSAICNET_CROP, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return records, int(out.shape[2] * out.shape[3])


def macs_per_output_mp(records: Iterable[ConvRecord], out_pixels: int) -> float:
    return conv_macs(records) / (out_pixels / 1e6)


# --------------------------------------------------------------------------- demosaicnet


def load_demosaicnet():
    """The pretrained Bayer model shipped in the demosaicnet package, in inference mode."""
    import demosaicnet

    return demosaicnet.BayerDemosaick(pretrained=True).eval()


def demosaicnet_rgb(net, mosaic: np.ndarray, band: int = DEMOSAICNET_BAND) -> np.ndarray:
    """Demosaick a canonical RGGB mosaic (H, W), H and W even, into float32 (H, W, 3) with the
    demosaicnet model ``net``; bands of ``band`` output rows (even) per forward pass."""
    import torch
    from demosaicnet.mosaic import bayer

    h, w = mosaic.shape
    if h % 2 or w % 2 or band % 2:
        raise ValueError(f"mosaic {mosaic.shape} and band {band} must be even")
    (top, _), (left, _) = DEMOSAICNET_PAD
    padded = np.pad(np.asarray(mosaic, np.float32), DEMOSAICNET_PAD, mode="reflect")
    # padded[y, x] = mosaic[y - top, x - left]; output row j is padded row j + CROP.
    dy, dx = top - DEMOSAICNET_CROP, left - DEMOSAICNET_CROP
    out = np.empty((h, w, 3), np.float32)
    with torch.inference_mode():
        for y0 in range(0, h, band):
            y1 = min(y0 + band, h)
            slab = padded[y0 : y1 + top + DEMOSAICNET_PAD[0][1]]
            planes = bayer(np.broadcast_to(slab, (3, *slab.shape)).copy())
            rgb = net(torch.from_numpy(planes)[None])[0].numpy()
            out[y0:y1] = np.moveaxis(rgb[:, dy : dy + y1 - y0, dx : dx + w], 0, -1)
    return out


# --------------------------------------------------------------------------- BM3D


def gat(v: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Generalized Anscombe transform of data with variance alpha v + beta: unit variance."""
    return (2.0 / alpha) * np.sqrt(np.maximum(alpha * v + 0.375 * alpha * alpha + beta, 0.0))


def inverse_gat(z: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`gat` (Makitalo and Foi:
    the Anscombe inverse's series with the Gaussian part beta / alpha^2 subtracted), floored at 0.
    ``z`` is floored at 0.8, where the series stops being monotonic."""
    d = np.maximum(z, 0.8)
    r = np.sqrt(1.5)
    inv = 0.25 * d * d + 0.25 * r / d - 1.375 / (d * d) + 0.625 * r / d**3 - 0.125 - beta / (alpha * alpha)
    return alpha * np.maximum(inv, 0.0)


def stabilize(rgb: np.ndarray, gains: np.ndarray, shot: float, read: float) -> np.ndarray:
    """Each channel of white-balanced linear camera RGB through :func:`gat` with its noise
    (variance shot g v + read g^2); with no shot noise, divided by its read sigma instead."""
    g = np.asarray(gains, np.float64)
    if shot <= 0:
        return np.asarray(rgb, np.float64) / np.sqrt(read * g * g)
    return np.stack([gat(rgb[..., c], shot * g[c], read * g[c] ** 2) for c in range(3)], axis=-1)


def unstabilize(z: np.ndarray, gains: np.ndarray, shot: float, read: float) -> np.ndarray:
    """The inverse of :func:`stabilize` (the unbiased one for the Anscombe part)."""
    g = np.asarray(gains, np.float64)
    if shot <= 0:
        return (np.asarray(z, np.float64) * np.sqrt(read * g * g)).astype(np.float32)
    return np.stack([inverse_gat(z[..., c], shot * g[c], read * g[c] ** 2) for c in range(3)],
                    axis=-1).astype(np.float32)


def flat_field_noise(develop: Callable[[np.ndarray], np.ndarray], cfa, black: float, white: float,
                     gains: np.ndarray, shot: float, read: float) -> np.ndarray:
    """The noise (H, W, 3), mean removed, that :func:`stabilize` leaves in ``develop``'s output
    (linear, white-balanced camera RGB in [0, 1]) of a flat grey raw mosaic (linear FLAT_GREY after
    white balance) with the sensor noise shot * x + read (``read`` with the quantization): unit
    variance and white where the development passes the noise through; the outer 8 pixels are left out."""
    from rawdev import cfa as cfa_mod

    g = np.asarray(gains, np.float64)
    sensor = np.broadcast_to(FLAT_GREY / g, (FLAT_FIELD, FLAT_FIELD, 3))
    mosaic = cfa_mod.mosaic(sensor, cfa)
    rng = np.random.default_rng(FLAT_SEED)
    quantization = 1.0 / (12 * (white - black) ** 2)
    noisy = mosaic + rng.standard_normal(mosaic.shape) * np.sqrt(shot * mosaic + max(read - quantization, 0.0))
    raw = np.clip(np.round(noisy * (white - black) + black), 0, white).astype(np.uint16)
    z = stabilize(develop(raw)[8:-8, 8:-8], g, shot, read)
    return z - z.mean(axis=(0, 1))


def noise_psd(noise: np.ndarray, shape: tuple[int, int], lags: int = PSD_LAGS) -> np.ndarray:
    """The power spectrum (H, W, 3) of stationary noise like ``noise`` (H', W', 3), on an image of
    ``shape``, in bm3d's convention (white noise of sigma s: H W s^2 everywhere): the FFT of its
    autocovariance over +-``lags`` pixels each way, floored just above 0."""
    h, w = shape
    n_y, n_x = noise.shape[0] - 2 * lags, noise.shape[1] - 2 * lags
    centre = noise[lags : lags + n_y, lags : lags + n_x]
    out = np.empty((h, w, 3))
    for c in range(3):
        acov = np.zeros((h, w))
        for dy in range(-lags, lags + 1):
            for dx in range(-lags, lags + 1):
                shifted = noise[lags + dy : lags + dy + n_y, lags + dx : lags + dx + n_x, c]
                acov[dy % h, dx % w] = np.mean(centre[..., c] * shifted)
        out[..., c] = np.maximum(np.real(np.fft.fft2(acov)), 1e-6) * (h * w)
    return out


def bm3d_linear(rgb: np.ndarray, gains: np.ndarray, shot: float, read: float,
                noise: np.ndarray | None = None) -> np.ndarray:
    """BM3D of white-balanced linear camera RGB (H, W, 3) whose channel c has the sensor noise
    ``shot * x + read`` (x = value / gains[c]; ``read`` includes quantization): variance-stabilized
    (:func:`stabilize`), denoised with the spectrum of ``noise`` (a :func:`flat_field_noise`; None:
    white noise of sigma 1, the sensor's noise untouched by demosaicking) with the package's
    low-complexity profile (BM3DProfileLC), inverted."""
    import bm3d

    if not hasattr(np, "trapz"):  # bm4d 4.2.5 calls np.trapz for a PSD; NumPy 2.4 removed it
        np.trapz = np.trapezoid
    z = stabilize(rgb, gains, shot, read)
    spectrum = [1.0, 1.0, 1.0] if noise is None else noise_psd(noise, z.shape[:2])
    dz = bm3d.bm3d_rgb(z, spectrum, profile=bm3d.BM3DProfileLC())
    return unstabilize(dz, gains, shot, read)
