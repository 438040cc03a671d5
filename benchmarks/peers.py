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
  raw step); the generalized Anscombe transform makes it unit-variance Gaussian, BM3D denoises
  with sigma 1 and the closed-form approximation of the exact unbiased inverse (Makitalo and
  Foi 2011/2013) brings it back. Why: BM3D assumes one Gaussian sigma, and the noise here is
  signal-dependent; a single sigma on the sRGB output over-smooths highlights or under-smooths
  the shadows (the sRGB curve multiplies read noise by 12.92 in the darkest tones).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterable
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
BM3D_PROFILE = "lc"  # bm3d.BM3DProfileLC: the package's low-complexity profile, ~3x faster than 'np'


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


def bm3d_linear(rgb: np.ndarray, gains: np.ndarray, shot: float, read: float) -> np.ndarray:
    """BM3D of white-balanced linear camera RGB (H, W, 3) whose channel c has the sensor noise
    ``shot * x + read`` (x = value / gains[c]); ``read`` includes quantization. Variance-stabilized
    per channel (:func:`gat`), denoised with sigma 1 (the low-complexity profile), inverted; with
    no shot noise the channels are denoised directly with their read-noise sigma."""
    import bm3d

    profile = bm3d.BM3DProfileLC()
    g = np.asarray(gains, np.float64)
    alpha, beta = shot * g, read * g * g
    if shot <= 0:
        sigmas = np.sqrt(beta)
        return np.asarray(bm3d.bm3d_rgb(rgb, list(sigmas), profile=profile), np.float32)
    z = np.stack([gat(rgb[..., c], alpha[c], beta[c]) for c in range(3)], axis=-1)
    dz = bm3d.bm3d_rgb(z, [1.0, 1.0, 1.0], profile=profile)
    return np.stack([inverse_gat(dz[..., c], alpha[c], beta[c]) for c in range(3)], axis=-1).astype(np.float32)
