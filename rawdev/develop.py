"""One image through the pipeline: mosaic -> packed tiles -> model -> blended, rendered image."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rawdev.color import LOOKS, Rendering, lift_negatives, render_to_int
from rawdev.noise import NoiseModel, estimate_noise
from rawdev.normalize import QUAD_MODES, Prepared, parse_wb, prepare
from rawdev.overlap import InOrder
from rawdev.raw import Mosaic
from rawdev.session import ModelSession
from rawdev.tiling import Block, blend_tiles, plan_tiles

DEFAULT_TILE = 256  # packed samples (512 output pixels): as fast as 512 whole-file, 38 % less memory (RESULTS.md)
DEFAULT_OVERLAP = 16
AUTO_EXPOSURE_PERCENTILE = 99.0  # LibRaw's auto-bright: 1% of pixels may clip
AUTO_EXPOSURE_MAX_EV = 6.0
MAX_EXPOSURE_EV = 16.0  # a 16-bit image holds 16 stops: beyond this every pixel is black or white
MAX_DENOISE = 4.0


@dataclass(frozen=True)
class DevelopOptions:
    """How to develop: the options `rawdev develop` and `rawdev compare` share."""

    wb: str = "camera"
    quad_bayer: str = "bin"
    exposure: str = "auto"  # "auto" or EV as text
    look: str = "default"
    bits: int = 16
    tile: int | None = None  # packed samples; None = auto
    overlap: int = DEFAULT_OVERLAP
    denoise: str = "auto"  # "auto" (the sensor's noise) or a strength S: 0 keeps the grain, 2 is stronger

    def __post_init__(self):
        if self.look not in LOOKS:
            raise ValueError(f"--look {self.look!r}: choose one of {', '.join(LOOKS)}")
        if self.bits not in (8, 16):
            raise ValueError("--bits must be 8 or 16")
        parse_wb(self.wb)  # a usage error before any file is read, not one failure per file
        if self.quad_bayer not in QUAD_MODES:
            raise ValueError(f"--quad-bayer {self.quad_bayer!r}: choose {' or '.join(QUAD_MODES)}")
        if self.tile is not None and self.tile < 2:
            raise ValueError(f"--tile {self.tile}: give auto or a size of at least 2 packed samples")
        if self.overlap < 0:
            raise ValueError(f"--overlap {self.overlap}: must be 0 or more")
        tile = self.tile or DEFAULT_TILE
        if 2 * self.overlap > tile:  # else the tiler steps by a few samples: many times the tiles, minutes
            size = f"{tile} packed samples" + ("" if self.tile else " with --tile auto")
            raise ValueError(f"--overlap {self.overlap}: at most half the tile ({size}); "
                             "give a smaller --overlap or a larger --tile")
        if self.exposure != "auto":
            try:
                ev = float(self.exposure)
            except ValueError:
                ev = math.nan
            if not abs(ev) <= MAX_EXPOSURE_EV:  # also refuses nan and inf
                raise ValueError(f"--exposure {self.exposure!r}: give auto or a number of EV "
                                 f"from -{MAX_EXPOSURE_EV:g} to {MAX_EXPOSURE_EV:g}")
        self.denoise_strength  # noqa: B018 (a usage error before any file is read)

    @property
    def peak(self) -> int:
        """The output's white code: 65535 for 16 bits, 255 for 8."""
        return 65535 if self.bits == 16 else 255

    @property
    def denoise_strength(self) -> float:
        """The factor on the sensor's noise level told to a noise-aware model (auto: 1)."""
        if self.denoise == "auto":
            return 1.0
        try:
            strength = float(self.denoise)
        except ValueError:
            strength = float("nan")
        if not 0.0 <= strength <= MAX_DENOISE:  # also refuses nan
            raise ValueError(f"--denoise {self.denoise!r}: give auto or a strength from 0 (keep the grain) "
                             f"through 1 (the sensor's noise) to {MAX_DENOISE:g}")
        return strength


@dataclass
class Developed:
    """A developed image (orientation not yet applied) and what was done to make it."""

    image: np.ndarray  # (H, W, 3) uint16 or uint8 sRGB; with camera_rgb, uint16 camera RGB (see develop_mosaic)
    exposure_ev: float
    wb_gains: np.ndarray
    tiles: int
    tile_shape: tuple[int, int]
    noise: NoiseModel | None = None  # the noise level told to a noise-aware model
    rendering: Rendering | None = None  # how white-balanced camera RGB becomes sRGB (linear models)


def auto_exposure_ev(prepared: Prepared, cam_to_srgb: np.ndarray, stride: int = 4) -> float:
    """LibRaw-style auto brightness from a subsample of the mosaic: the 99th percentile of the
    brightest channel maps to white; never darkens."""
    src = prepared.source
    planes = src[::stride, ::stride] if stride > 1 else src[:, :]
    sub = planes
    sites = src.sites
    colour = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}
    rgb = np.zeros(sub.shape[:2] + (3,), np.float32)
    counts = np.zeros(3, np.float32)
    for i, site in enumerate(sites):
        rgb[..., colour[site]] += sub[..., i]
        counts[colour[site]] += 1
    rgb /= counts
    lin = np.clip(rgb.reshape(-1, 3) @ np.asarray(cam_to_srgb, np.float32).T, 0, None)
    level = float(max(np.percentile(lin[:, c], AUTO_EXPOSURE_PERCENTILE) for c in range(3)))
    if level <= 0:
        return 0.0
    return float(np.clip(-np.log2(level), 0.0, AUTO_EXPOSURE_MAX_EV))


def develop_mosaic(
    mosaic: Mosaic,
    model: ModelSession,
    options: DevelopOptions = DevelopOptions(),
    on_tile: Callable[[int, int], None] | None = None,
    camera_rgb: bool = False,
    on_rows: Callable[[np.ndarray, int], None] | None = None,
    overlap: bool = True,
) -> Developed:
    """Develop one mosaic into an (H, W, 3) integer sRGB image at the mosaic's resolution
    (half of it per axis for binned Quad-Bayer).

    ``camera_rgb`` (a linear model only; for DNG output): the image is instead the network's
    linear camera RGB with the white balance undone, uint16, 0 = black and 65535 = the sensor's
    white; ``Developed.rendering`` still says how rawdev would render it.

    Finished blocks are rendered in a background thread while the network runs on the next
    tiles (``overlap=False``: in this thread, between tiles, or while the next tiles run where the
    session runs several at once, ``ModelSession.concurrency``; the pixels are the same).
    ``on_rows(image, n)`` is called, from that thread, each time rows ``[0, n)`` of the image are
    final, so that they can be encoded before the last tile has run (:class:`rawdev.output.TiffStrips`)."""
    contract = model.contract
    noise = sensor_noise(mosaic) if contract.noise_input == "sigma-planes" else None
    linear = contract.output_space == "linear"
    if camera_rgb and not linear:
        raise ValueError("camera RGB output needs a model with linear output")
    prepared = prepare(mosaic, contract, options.wb, options.quad_bayer, noise, options.denoise_strength,
                       headroom=True)
    cam_to_srgb = mosaic.cam_to_srgb if mosaic.cam_to_srgb is not None else np.eye(3)
    # The input was divided by prepared.headroom: this matrix undoes it on the network's output.
    out_to_srgb = np.asarray(cam_to_srgb, np.float64) * prepared.headroom
    if not linear:
        ev = 0.0
    elif options.exposure == "auto":
        ev = auto_exposure_ev(prepared, out_to_srgb) if options.look == "default" else 0.0
    else:
        ev = float(options.exposure)
    rendering = Rendering(cam_to_srgb, exposure_ev=ev, look=options.look)
    rendering_out = Rendering(out_to_srgb, exposure_ev=ev, look=options.look)

    h, w = prepared.source.shape[:2]
    tile = options.tile or DEFAULT_TILE
    plan = plan_tiles(h, w, tile=tile, overlap=options.overlap, align=2, scale=contract.scale)
    canon = prepared.canonical
    out_h, out_w = canon.height, canon.width
    peak = options.peak
    image = np.empty((out_h, out_w, 3), np.uint16 if options.bits == 16 or camera_rgb else np.uint8)
    # Network output -> camera RGB in 0..65535: undo the headroom scale and the white balance.
    to_camera = (65535.0 * prepared.headroom / np.asarray(prepared.gains, np.float64)).astype(np.float32)

    def infer(tile_in: np.ndarray) -> np.ndarray:
        return model(tile_in)

    def finish(block: Block) -> None:
        # Map the block (canonical, padded coordinates) onto the unpadded output.
        h, w = block.pixels.shape[:2]
        top, bottom = max(block.y0, canon.top), min(block.y0 + h, canon.top + out_h)
        left, right = max(block.x0, canon.left), min(block.x0 + w, canon.left + out_w)
        if bottom > top and right > left:
            pixels = block.pixels[top - block.y0 : bottom - block.y0, left - block.x0 : right - block.x0]
            target = image[top - canon.top : bottom - canon.top, left - canon.left : right - canon.left]
            if camera_rgb:
                camera = pixels * to_camera
                lift_negatives(camera, white=65535.0)  # a raw editor reads dark means as they were, not lifted
                target[...] = np.clip(np.round(camera), 0.0, 65535.0)
            elif linear:
                render_to_int(pixels, rendering_out, peak, out=target, keep_dark_means=True)
            else:
                target[...] = np.round(np.clip(pixels, 0.0, 1.0) * np.float32(peak))
        if on_rows is not None and block.x0 + w >= canon.left + out_w:  # a tile row's last block
            on_rows(image, min(max(block.y0 + h - canon.top, 0), out_h))

    with InOrder(threaded=overlap) as finisher:
        for block in blend_tiles(prepared.source, infer, plan, on_tile, concurrency=model.concurrency):
            finisher.submit(finish, block)
    if on_rows is not None:
        on_rows(image, out_h)
    return Developed(image, ev, prepared.gains, plan.count, plan.tile_shape, noise, rendering if linear else None)


def sensor_noise(mosaic: Mosaic) -> NoiseModel:
    """The file's NoiseProfile, else an estimate from the mosaic itself."""
    if mosaic.noise_profile is not None:
        return mosaic.noise_profile
    return estimate_noise(mosaic.data, mosaic.cfa.period, mosaic.black, mosaic.white)
