"""Synthetic RAW training pairs made by unprocessing photographs (Brooks et al., CVPR 2019).

sRGB crop -> (inverse tone curve) -> inverse sRGB transfer -> inverse camera matrix (sampled from
real cameras) -> inverse white balance -> mosaic -> heteroscedastic noise -> black level and
quantization. The network input is then what rawdev's pipeline makes of such a file: black/white
normalization, white balance, clip, canonical packing. Targets are the clean linear camera RGB
after white balance (the ``linear`` contract).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from rawdev import cfa as cfa_mod
from rawdev.color import SRGB_TO_XYZ, cam_to_srgb_matrix, inverse_smoothstep_tone, srgb_decode
from rawdev.noise import read_level  # noqa: F401 (the training data's read level; re-exported)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

# Noise levels of the benchmark: shot-noise level a; read level b from Brooks et al.'s fit.
NOISE_LEVELS = {"low": 2e-4, "medium": 2e-3, "high": 1e-2}
SHOT_RANGE = (1e-4, 1.2e-2)



def camera_bank() -> list[dict]:
    """Real cameras' XYZ->camera matrices (see camera_matrices.json for sources)."""
    text = resources.files("rawdev.train").joinpath("camera_matrices.json").read_text()
    return json.loads(text)["cameras"]


def photograph_paths(folders: list[Path]) -> list[Path]:
    """The photographs under ``folders`` (recursively, by suffix), sorted within each folder."""
    return [path for folder in folders for path in sorted(Path(folder).rglob("*"))
            if path.suffix.lower() in IMAGE_SUFFIXES]


def read_photograph(path: Path, downscale_jpeg_q75: tuple[str, ...] = ("sun_hays80",)) -> np.ndarray | None:
    """One photograph as uint8 (H, W, 3); None when it is not an RGB image. Photographs in a
    folder named in ``downscale_jpeg_q75`` are halved (2x2 means) to hide their JPEG blocks."""
    import imagecodecs

    img = imagecodecs.imread(str(path))
    if img.ndim != 3 or img.shape[2] < 3:
        return None
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (img.astype(np.float32) / np.iinfo(img.dtype).max * 255 + 0.5).astype(np.uint8)
    if any(part in downscale_jpeg_q75 for part in Path(path).parts):
        h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
        f = img[:h, :w].astype(np.float32)
        img = ((f[0::2, 0::2] + f[0::2, 1::2] + f[1::2, 0::2] + f[1::2, 1::2]) / 4 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(img)


def load_photographs(folders: list[Path], downscale_jpeg_q75: tuple[str, ...] = ("sun_hays80",)) -> list[np.ndarray]:
    """Read every photograph under ``folders`` as uint8 (H, W, 3)."""
    images = (read_photograph(path, downscale_jpeg_q75) for path in photograph_paths(folders))
    return [img for img in images if img is not None]


@dataclass
class SynthBatch:
    """A batch of training pairs with the parameters that made them."""

    packed: np.ndarray  # (N, H/2, W/2, 4) network input, float32
    target: np.ndarray  # (N, H, W, 3) clean linear camera RGB after white balance
    cam_to_srgb: np.ndarray  # (N, 3, 3)
    shot: np.ndarray  # (N,)


@dataclass
class RawSample:
    """One synthetic RAW capture, as a camera would store it."""

    raw: np.ndarray  # (H, W) uint16 quantized mosaic
    black: float
    white: float
    wb_gains: np.ndarray  # (3,) R, G, B multipliers that neutralize the scene's white
    xyz_to_cam: np.ndarray
    linear_cam: np.ndarray  # clean linear camera RGB before white balance
    noise: np.ndarray | None = None  # (H, W) the noise added to the mosaic, sensor units
    shot: float = 0.0
    read: float = 0.0


class Unprocessor:
    """Random unprocessing with its own generator (reproducible with a seed)."""

    def __init__(self, seed: int = 0, cameras: list[dict] | None = None, low_noise_bias: float = 1.5,
                 max_shot: float = SHOT_RANGE[1]):
        self.rng = np.random.default_rng(seed)
        self.max_shot = max_shot
        self.xyz_to_cams = np.array([c["xyz_to_cam"] for c in (cameras or camera_bank())], np.float64)
        self.low_noise_bias = low_noise_bias

    def random_xyz_to_cam(self) -> np.ndarray:
        weights = self.rng.uniform(1e-8, 1.0, len(self.xyz_to_cams))
        weights /= weights.sum()
        return np.tensordot(weights, self.xyz_to_cams, axes=1)

    def random_shot(self) -> float:
        lo, hi = np.log(SHOT_RANGE[0]), np.log(self.max_shot)
        return float(np.exp(lo + (hi - lo) * self.rng.uniform() ** self.low_noise_bias))

    def random_wb(self) -> np.ndarray:
        return np.array([self.rng.uniform(1.9, 2.4), 1.0, self.rng.uniform(1.5, 1.9)])

    def capture(
        self,
        srgb: np.ndarray,
        cfa: cfa_mod.CFA,
        shot: float,
        read: float | None = None,
        xyz_to_cam: np.ndarray | None = None,
        wb_gains: np.ndarray | None = None,
        bits: int = 12,
        black_fraction: float = 1 / 16,
        inverse_tone: bool = False,
        brightness: float = 1.0,
    ) -> RawSample:
        """Unprocess an encoded sRGB float image (H, W, 3) in [0, 1] into a RAW capture."""
        xyz_to_cam = self.random_xyz_to_cam() if xyz_to_cam is None else np.asarray(xyz_to_cam)
        wb = self.random_wb() if wb_gains is None else np.asarray(wb_gains, np.float64)
        read = float(read_level(shot)) if read is None else read
        img = inverse_smoothstep_tone(srgb) if inverse_tone else srgb
        lin = srgb_decode(img).astype(np.float64) * brightness
        srgb_to_cam = xyz_to_cam @ SRGB_TO_XYZ
        srgb_to_cam /= srgb_to_cam.sum(axis=1, keepdims=True)
        cam = lin @ srgb_to_cam.T
        sensor = np.clip(cam / wb, 0.0, 1.0)
        mosaic = cfa_mod.mosaic(sensor, cfa)
        noise = self.rng.standard_normal(mosaic.shape) * np.sqrt(np.maximum(shot * mosaic + read, 0))
        white = float(2**bits - 1)
        black = float(round(white * black_fraction))
        raw = np.clip(np.round((mosaic + noise) * (white - black) + black), 0, white).astype(np.uint16)
        return RawSample(raw, black, white, wb, xyz_to_cam, np.clip(cam, 0.0, None).astype(np.float32),
                         noise.astype(np.float32), float(shot), float(read))


def network_input(raw: np.ndarray, black: float, white: float, wb_gains: np.ndarray,
                  cfa: cfa_mod.CFA | None = None, noise: tuple[float, float] | None = None,
                  strength: float = 1.0) -> np.ndarray:
    """What rawdev's own pipeline feeds the network for this capture (normalize.prepare: levels,
    white balance, clip, Quad-Bayer binning, canonical packing), so training sees exactly the
    input that development will give it. ``noise`` (shot, read) asks for the noise-aware
    contract: sigma planes scaled by ``strength`` and no clip below black."""
    from rawdev.model import NOISE_CONTRACT, ModelContract
    from rawdev.noise import NoiseModel
    from rawdev.normalize import prepare
    from rawdev.raw import Mosaic

    cfa = cfa or RGGB
    gains = np.asarray(wb_gains, np.float64)
    mosaic = Mosaic(data=raw, cfa=cfa, black=np.full((cfa.period,) * 2, float(black)), white=float(white),
                    wb_camera=gains / gains[1])
    if noise is None:
        return prepare(mosaic, ModelContract(), wb="camera", quad="bin").source[:, :]
    return prepare(mosaic, ModelContract(variant="noise", **NOISE_CONTRACT), wb="camera", quad="bin",
                   noise=NoiseModel(*noise), strength=strength).source[:, :]


def bilinear_demosaic(mosaic: np.ndarray) -> np.ndarray:
    """Bilinear demosaic of an RGGB mosaic (H, W even) in numpy, edges reflected: what grain
    looks like through the simplest demosaicker (the target of a zero denoising strength)."""
    h, w = mosaic.shape
    sparse = np.zeros((h, w, 3), np.float32)
    sparse[0::2, 0::2, 0] = mosaic[0::2, 0::2]
    sparse[0::2, 1::2, 1] = mosaic[0::2, 1::2]
    sparse[1::2, 0::2, 1] = mosaic[1::2, 0::2]
    sparse[1::2, 1::2, 2] = mosaic[1::2, 1::2]
    from rawdev.train.network import bilinear_kernels

    p = np.pad(sparse, ((2, 2), (2, 2), (0, 0)), mode="reflect")
    interp = bilinear_kernels()[1][..., 0]  # (3, 3, 3): the network's fixed interpolation, per colour
    out = np.zeros((h + 2, w + 2, 3), np.float32)
    for dy in range(3):
        for dx in range(3):
            out += p[dy : dy + h + 2, dx : dx + w + 2] * interp[dy, dx]
    return out[1:-1, 1:-1]


STRONGER_BLUR = 1.0  # pixels of Gaussian blur per unit of denoising strength above 1


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (H, W, C) with reflected edges (identity for sigma ~ 0)."""
    if sigma < 0.05:
        return image
    r = max(int(np.ceil(3 * sigma)), 1)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    out = np.pad(image, ((r, r), (0, 0), (0, 0)), mode="reflect")
    out = sum(k[i] * out[i : i + image.shape[0]] for i in range(2 * r + 1))
    out = np.pad(out, ((0, 0), (r, r), (0, 0)), mode="reflect")
    return sum(k[i] * out[:, i : i + image.shape[1]] for i in range(2 * r + 1)).astype(np.float32)


def demosaic_difficulty(srgb: np.ndarray, window: int = 64) -> float:
    """How badly bilinear demosaicking fails on the central ``window`` pixels of a crop (mean
    absolute error): a cheap measure of moire, fine texture and saturated edges for hard-patch
    mining."""
    h, w = min(srgb.shape[0], window) // 2 * 2, min(srgb.shape[1], window) // 2 * 2
    y0, x0 = (srgb.shape[0] - h) // 4 * 2, (srgb.shape[1] - w) // 4 * 2
    img = srgb[y0 : y0 + h, x0 : x0 + w]
    return float(np.mean(np.abs(bilinear_demosaic(cfa_mod.mosaic(img, RGGB)) - img)))


def mosaic_gains(wb_gains: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The white-balance gain of each site of an RGGB mosaic."""
    g = np.asarray(wb_gains, np.float32)
    return np.tile(np.array([[g[0], g[1]], [g[1], g[2]]], np.float32), (shape[0] // 2, shape[1] // 2))


RGGB = cfa_mod.parse_cfa("RGGB")
QUAD_RGGB = cfa_mod.parse_cfa("quad-RGGB")


class TrainingData:
    """Random crops of photographs turned into (packed, target) batches.

    With ``noise_input`` the samples follow the noise-aware contract: the sigma planes come
    with the input; ``strength_fraction`` of them are told a random strength s in [0, 2] times
    their true noise: below 1 they must keep the rest of the grain (target: clean + (1 - s) x
    the grain as bilinear demosaicking shows it), above 1 they must smooth more (target: the
    clean image through a Gaussian of (s - 1) * ``STRONGER_BLUR`` pixels), which is what
    ``--denoise S`` asks for;
    ``clean_fraction`` are noise-free. ``hard_fraction`` of the crops are the hardest to
    demosaic of ``hard_candidates`` random ones (demosaicnet's hard-patch mining).
    """

    def __init__(self, images: list[np.ndarray], patch: int = 128, seed: int = 0, quad_fraction: float = 0.1,
                 noise_input: bool = False, strength_fraction: float = 0.15, clean_fraction: float = 0.05,
                 hard_fraction: float = 0.0, hard_candidates: int = 4, weights: list[float] | None = None,
                 flat_fraction: float = 0.0, dark_fraction: float = 0.0, max_shot: float | None = None):
        if patch % 4:
            raise ValueError("patch must be a multiple of 4")
        keep = [i for i, im in enumerate(images) if min(im.shape[:2]) >= 2 * patch]
        self.images = [images[i] for i in keep]
        w = np.array([weights[i] for i in keep] if weights else [1.0] * len(keep), np.float64)
        self.weights = w / w.sum() if len(w) else w
        self.patch = patch
        self.quad_fraction = quad_fraction
        self.noise_input = noise_input
        self.strength_fraction = strength_fraction
        self.clean_fraction = clean_fraction
        self.hard_fraction = hard_fraction
        self.hard_candidates = hard_candidates
        self.flat_fraction = flat_fraction
        self.dark_fraction = dark_fraction
        self.unprocessor = Unprocessor(seed, max_shot=max_shot or SHOT_RANGE[1])
        self.rng = self.unprocessor.rng

    def flat_field(self, size: int | None = None) -> np.ndarray:
        """A flat colour patch, half the time with a gentle gradient or a straight edge to a
        second colour: where a network's mean colour must come back exactly."""
        p = size or self.patch
        img = np.broadcast_to(self._random_colour(), (p, p, 3)).astype(np.float32).copy()
        kind = self.rng.integers(3)
        if kind == 1:
            y, x = np.mgrid[0:p, 0:p] / p
            slope = self.rng.uniform(-0.15, 0.15, (2, 3))
            img += (y[..., None] * slope[0] + x[..., None] * slope[1]).astype(np.float32)
        elif kind == 2:
            cut = self.rng.integers(p // 4, 3 * p // 4)
            img[:, cut:] = self._random_colour()
        return np.clip(img, 0.0, 1.0)

    def _random_colour(self) -> np.ndarray:
        """An encoded sRGB colour, pushed towards dark or light by a random power."""
        return self.rng.uniform(0.0, 1.0, 3) ** self.rng.uniform(0.5, 2.0)

    def brightness(self) -> float:
        """Scene brightness: around 1, or with probability ``dark_fraction`` 0 to 6 stops under."""
        if self.rng.uniform() < self.dark_fraction:
            return float(2.0 ** -self.rng.uniform(0.0, 6.0))
        return float(np.clip(self.rng.normal(1.0, 0.25), 0.3, 1.6))

    def hard_crop(self, size: int | None = None) -> np.ndarray:
        """A crop, or with probability ``hard_fraction`` the hardest to demosaic of several (or,
        with probability ``flat_fraction``, a flat field)."""
        if self.flat_fraction and self.rng.uniform() < self.flat_fraction:
            return self.flat_field(size)
        if self.rng.uniform() >= self.hard_fraction:
            return self.crop(size)
        crops = [self.crop(size) for _ in range(self.hard_candidates)]
        return max(crops, key=demosaic_difficulty)

    def crop(self, size: int | None = None) -> np.ndarray:
        img = self.images[self.rng.choice(len(self.images), p=self.weights)]
        p = size or self.patch
        y = self.rng.integers(img.shape[0] - p + 1)
        x = self.rng.integers(img.shape[1] - p + 1)
        c = img[y : y + p, x : x + p]
        if self.rng.uniform() < 0.5:
            c = c[:, ::-1]
        if self.rng.uniform() < 0.5:
            c = c[::-1]
        if self.rng.uniform() < 0.5:
            c = c.transpose(1, 0, 2)
        return c.astype(np.float32) / 255.0

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        u = self.unprocessor
        shot = u.random_shot()
        # Some samples go through the Quad-Bayer path: a crop twice the size, a 4x4 CFA, and the
        # pipeline's own 2x2 binning; the target is the same scene averaged to the binned size.
        quad = self.rng.uniform() < self.quad_fraction
        cfa = QUAD_RGGB if quad else RGGB
        read = float(read_level(shot) * np.exp(self.rng.normal(0, 0.26)))
        if self.noise_input and self.rng.uniform() < self.clean_fraction:
            shot, read = 0.0, 0.0
        cap = u.capture(
            self.hard_crop(2 * self.patch if quad else None),
            cfa,
            shot=shot,
            read=read,
            bits=int(self.rng.choice([10, 12, 14])),
            black_fraction=float(self.rng.choice([0.0, 1 / 64, 1 / 16])),
            inverse_tone=bool(self.rng.uniform() < 0.5),
            brightness=self.brightness(),
        )
        target = np.clip(cap.linear_cam, 0.0, 1.0)
        strength = 1.0
        if self.noise_input and not quad and self.rng.uniform() < self.strength_fraction:
            strength = float(self.rng.uniform(0.0, 2.0))
            if strength < 1.0:
                grain = bilinear_demosaic(cap.noise * mosaic_gains(cap.wb_gains, cap.noise.shape))
                target = target + (1.0 - strength) * grain
            else:
                target = gaussian_blur(target, (strength - 1.0) * STRONGER_BLUR)
        noise = (cap.shot, cap.read) if self.noise_input else None
        packed = network_input(cap.raw, cap.black, cap.white, cap.wb_gains, cfa, noise, strength)
        if quad:
            target = target.reshape(self.patch, 2, self.patch, 2, 3).mean(axis=(1, 3))
        return packed, target, cam_to_srgb_matrix(cap.xyz_to_cam).astype(np.float32), shot

    def batch(self, size: int) -> SynthBatch:
        items = [self.sample() for _ in range(size)]
        return SynthBatch(
            np.stack([i[0] for i in items]),
            np.stack([i[1] for i in items]),
            np.stack([i[2] for i in items]),
            np.array([i[3] for i in items], np.float32),
        )
