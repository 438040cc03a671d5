"""From a Mosaic to what the model's contract asks for: levels, white balance, CFA phase, packing.

Normalization happens tile by tile (``PackedSource``), so no full-size float copy of the image is
ever made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rawdev import cfa as cfa_mod
from rawdev.color import lookup
from rawdev.model import ModelContract
from rawdev.noise import NoiseModel, noise_sigma, trained_ceiling
from rawdev.raw import Mosaic

QUAD_MODES = ("bin", "remosaic")
DAYLIGHT_FALLBACK = np.array([2.0, 1.0, 1.5])


class NormalizeError(ValueError):
    """The mosaic cannot be brought to what the model expects."""


def parse_wb(wb: str) -> str | np.ndarray:
    """``--wb`` as ``camera``, ``daylight``, ``none`` or R, G, B gains normalized to G = 1; a
    NormalizeError (a ValueError) names what is accepted."""
    choice = wb.strip().lower()
    if choice in ("camera", "daylight", "none"):
        return choice
    try:
        gains = np.array([float(v) for v in choice.split(",")])
    except ValueError:
        gains = np.array([])
    if gains.shape != (3,) or not np.all(np.isfinite(gains)) or np.any(gains <= 0):
        raise NormalizeError(f"--wb {wb!r}: give camera, daylight, none or three positive numbers R,G,B")
    return gains / gains[1]


def white_balance_gains(mosaic: Mosaic, wb: str) -> np.ndarray:
    """R, G, B multipliers for ``--wb camera|daylight|none|R,G,B``."""
    choice = parse_wb(wb)
    if not isinstance(choice, str):
        return choice
    if choice == "none":
        return np.ones(3)
    if choice == "camera":
        if mosaic.wb_camera is not None:
            return mosaic.wb_camera
        if mosaic.wb_daylight is not None:
            return mosaic.wb_daylight
        return DAYLIGHT_FALLBACK
    # daylight
    if mosaic.wb_daylight is None:
        raise NormalizeError("the file records no daylight white balance; use --wb camera or R,G,B")
    return mosaic.wb_daylight


class PackedSource:
    """Lazily normalized, white-balanced, packed planes of a canonical RGGB mosaic.

    Implements the tiler's TileSource: ``source[y0:y1, x0:x1]`` returns float32 (h, w, 4), or
    (h, w, 8) with the noise sigma planes after the samples when a noise model is given.
    """

    def __init__(self, raw: np.ndarray, black: np.ndarray, white: float, gains: np.ndarray,
                 sites: tuple[tuple[int, int], ...], clip: bool, clip_low: bool = True,
                 noise: NoiseModel | None = None, strength: float = 1.0, ceiling: NoiseModel | None = None):
        self.raw = raw
        self.sites = sites
        # Per-plane offset and scale: value = (raw - black) * scale, clipped.
        self.black = np.array([black[dy, dx] for dy, dx in sites], np.float32)
        colour = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}
        self.plane_gains = np.array([gains[colour[s]] for s in sites], np.float32)
        self.scale = np.array([gains[colour[s]] / (white - black[s]) for s in sites], np.float32)
        self.clip = clip
        self.clip_low = clip_low
        self.noise = noise
        self.strength = strength
        self.ceiling = ceiling
        n = len(sites)
        self.shape = (raw.shape[0] // 2, raw.shape[1] // 2, 2 * n if noise is not None else n)
        # For 8- and 16-bit raw data, each plane's output as a lookup table over the raw codes: the
        # same arithmetic done once per code instead of once per sample (with the noise planes,
        # about a third of a tile's preparation; a few ms to build). None for other data types.
        self.tables = self._build_tables() if raw.dtype in (np.uint8, np.uint16) else None

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        ys, xs = key
        y0, y1 = (ys.start or 0) * 2, (self.shape[0] if ys.stop is None else ys.stop) * 2
        x0, x1 = (xs.start or 0) * 2, (self.shape[1] if xs.stop is None else xs.stop) * 2
        step = (ys.step or 1) * 2
        block = self.raw[y0:y1, x0:x1]
        sites = [block[dy::step, dx::step] for dy, dx in self.sites]
        if self.tables is not None:
            out = np.empty(sites[0].shape + (self.shape[2],), np.float32)
            for i, samples in enumerate(sites):
                codes = samples.astype(np.intp)  # once for both tables (0.65x the time a tile)
                for j, table in enumerate(self.tables[i]):
                    out[..., i + j * len(sites)] = lookup(table, codes)
            return out
        return self._normalize(np.stack(sites, axis=-1).astype(np.float32))

    def _normalize(self, planes: np.ndarray) -> np.ndarray:
        """Raw samples (..., n) as float32 -> the normalized planes [and their noise sigma planes]."""
        planes -= self.black
        planes *= self.scale
        if self.clip:
            np.clip(planes, 0.0 if self.clip_low else None, 1.0, out=planes)
        if self.noise is None:
            return planes
        sigma = noise_sigma(planes, self.plane_gains, self.noise, self.strength, self.ceiling)
        return np.concatenate([planes, sigma], axis=-1)

    def _build_tables(self) -> list[tuple[np.ndarray, ...]]:
        """[plane][0: value, 1: sigma (with a noise model)] over every raw code."""
        n = len(self.sites)
        codes = np.arange(np.iinfo(self.raw.dtype).max + 1, dtype=np.float32)
        values = self._normalize(np.repeat(codes[:, None], n, axis=1))
        return [tuple(np.ascontiguousarray(values[:, i + j * n]) for j in range(values.shape[1] // n))
                for i in range(n)]


def brightest_white_balanced(raw: np.ndarray, black: np.ndarray, white: float, gains: np.ndarray,
                             sites: tuple[tuple[int, int], ...]) -> float:
    """The largest white-balanced, normalized sample of a canonical mosaic ((raw - black) /
    (white - black) x gain of its site): above 1 where the gains would clip it (prepare's headroom)."""
    colour = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}
    peaks = [(float(np.max(raw[dy::2, dx::2])) - black[dy, dx]) / (white - black[dy, dx]) * gains[colour[(dy, dx)]]
             for dy, dx in sites if raw[dy::2, dx::2].size]
    return max(peaks, default=0.0)


@dataclass
class Prepared:
    """A mosaic ready for tiling: the packed source and how to undo the CFA padding."""

    source: PackedSource
    canonical: cfa_mod.Canonical
    gains: np.ndarray
    # The white-balanced input was divided by this (see prepare's ``headroom``): the network's
    # linear output times it is the white-balanced camera RGB (1 = the green channel's white).
    headroom: float = 1.0


def prepare(mosaic: Mosaic, contract: ModelContract, wb: str = "camera", quad: str = "bin",
            noise: NoiseModel | None = None, strength: float = 1.0, headroom: bool = False) -> Prepared:
    """Bring a mosaic to the model's contract: Bayer, canonical phase, levels, white balance, and
    the noise sigma planes for a model that takes them (``noise``: the sensor's noise model,
    ``strength``: the denoising strength that scales it).

    ``headroom``: for a model with linear output, divide the white-balanced input by its brightest
    sample when that is above 1 (at most by the largest gain; ``Prepared.headroom``), so that a
    channel below the sensor's white is not clipped at 1 after its gain (a red at 60 % with gain
    2.2 would be cut to 45 %); the caller multiplies the output back. An image with nothing to clip
    is fed as before (the network sees darker input only where it must). Off by default: training
    data (rawdev.train.synth) is made without it."""
    if quad not in QUAD_MODES:
        raise NormalizeError(f"--quad-bayer {quad!r}: choose bin or remosaic")
    data, cfa, black = mosaic.data, mosaic.cfa, mosaic.black
    if cfa.kind == "quad":
        # Black level of each 2x2 same-colour block: the mean of its four sites (exact for
        # binning, which averages them; the per-colour level for remosaic).
        if quad == "bin":
            data, cfa = cfa_mod.bin_quad(data, cfa)
        else:
            data, cfa = cfa_mod.remosaic_quad(data, cfa)
        black = np.asarray(black, np.float64).reshape(2, 2, 2, 2).mean(axis=(1, 3))
    gains = white_balance_gains(mosaic, wb) if contract.white_balance == "before" else np.ones(3)
    canonical_data, canonical = cfa_mod.to_canonical(data, cfa)
    # The black pattern follows the phase shift of the padding.
    black = np.roll(np.asarray(black, np.float64)[:2, :2], (canonical.top, canonical.left), axis=(0, 1))
    white = mosaic.white
    if contract.normalization == "mai" and mosaic.normalization != "mai":
        # MAI-trained models saw 10-bit data with the black level left in, divided by 4*255.
        black, white = np.zeros_like(black), mosaic.white * (4 * 255) / 1023
    clip = contract.normalization != "mai"
    if contract.noise_input == "sigma-planes":
        if noise is None:
            raise NormalizeError("the model takes a noise level and none was given")
        if mosaic.cfa.kind == "quad" and quad == "bin":
            noise = noise.scaled(0.25)
        # Quantization adds a uniform error of one raw step.
        step = 1.0 / max(white - float(np.mean(black)), 1.0)
        noise = NoiseModel(noise.shot, noise.read + step * step / 12, noise.source)
        ceiling = trained_ceiling(float(contract.noise_max_shot)) if contract.noise_max_shot else None
    else:
        noise = ceiling = None
    scale = 1.0
    if headroom and clip and contract.output_space == "linear":
        scale = brightest_white_balanced(canonical_data, black, white, gains, contract.sites)
        scale = min(max(scale, 1.0), max(float(np.max(gains)), 1.0))
    source = PackedSource(canonical_data, black, white, gains / scale, contract.sites, clip,
                          clip_low=contract.clip_below_black == "yes", noise=noise, strength=strength,
                          ceiling=ceiling)
    return Prepared(source, canonical, gains, scale)
