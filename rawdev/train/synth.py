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

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

# Noise levels of the benchmark: shot-noise level a; read level b from Brooks et al.'s fit.
NOISE_LEVELS = {"low": 2e-4, "medium": 2e-3, "high": 1e-2}
SHOT_RANGE = (1e-4, 1.2e-2)


def read_level(shot: float | np.ndarray) -> np.ndarray:
    """Read-noise variance tied to the shot level: log b = 2.18 log a + 1.20 (Brooks et al.)."""
    return np.exp(2.18 * np.log(shot) + 1.20)


def camera_bank() -> list[dict]:
    """Real cameras' XYZ->camera matrices (see camera_matrices.json for sources)."""
    text = resources.files("rawdev.train").joinpath("camera_matrices.json").read_text()
    return json.loads(text)["cameras"]


def load_photographs(folders: list[Path], downscale_jpeg_q75: tuple[str, ...] = ("sun_hays80",)) -> list[np.ndarray]:
    """Read every photograph under ``folders`` as uint8 (H, W, 3)."""
    import imagecodecs

    images = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = imagecodecs.imread(str(path))
            if img.ndim != 3 or img.shape[2] < 3:
                continue
            img = img[..., :3]
            if img.dtype != np.uint8:
                img = (img.astype(np.float32) / np.iinfo(img.dtype).max * 255 + 0.5).astype(np.uint8)
            if any(part in downscale_jpeg_q75 for part in path.parts):
                h, w = (img.shape[0] // 2) * 2, (img.shape[1] // 2) * 2
                f = img[:h, :w].astype(np.float32)
                img = ((f[0::2, 0::2] + f[0::2, 1::2] + f[1::2, 0::2] + f[1::2, 1::2]) / 4 + 0.5).astype(np.uint8)
            images.append(np.ascontiguousarray(img))
    return images


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


class Unprocessor:
    """Random unprocessing with its own generator (reproducible with a seed)."""

    def __init__(self, seed: int = 0, cameras: list[dict] | None = None, low_noise_bias: float = 1.5):
        self.rng = np.random.default_rng(seed)
        self.xyz_to_cams = np.array([c["xyz_to_cam"] for c in (cameras or camera_bank())], np.float64)
        self.low_noise_bias = low_noise_bias

    def random_xyz_to_cam(self) -> np.ndarray:
        weights = self.rng.uniform(1e-8, 1.0, len(self.xyz_to_cams))
        weights /= weights.sum()
        return np.tensordot(weights, self.xyz_to_cams, axes=1)

    def random_shot(self) -> float:
        lo, hi = np.log(SHOT_RANGE[0]), np.log(SHOT_RANGE[1])
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
        noisy = mosaic + self.rng.standard_normal(mosaic.shape) * np.sqrt(np.maximum(shot * mosaic + read, 0))
        white = float(2**bits - 1)
        black = float(round(white * black_fraction))
        raw = np.clip(np.round(noisy * (white - black) + black), 0, white).astype(np.uint16)
        return RawSample(raw, black, white, wb, xyz_to_cam, np.clip(cam, 0.0, None).astype(np.float32))


def network_input(raw: np.ndarray, black: float, white: float, wb_gains: np.ndarray,
                  cfa: cfa_mod.CFA | None = None) -> np.ndarray:
    """What rawdev's own pipeline feeds the network for this capture (normalize.prepare: levels,
    white balance, clip, Quad-Bayer binning, canonical packing), so training sees exactly the
    input that development will give it."""
    from rawdev.model import ModelContract
    from rawdev.normalize import prepare
    from rawdev.raw import Mosaic

    cfa = cfa or RGGB
    gains = np.asarray(wb_gains, np.float64)
    mosaic = Mosaic(data=raw, cfa=cfa, black=np.full((cfa.period,) * 2, float(black)), white=float(white),
                    wb_camera=gains / gains[1])
    return prepare(mosaic, ModelContract(), wb="camera", quad="bin").source[:, :]


RGGB = cfa_mod.parse_cfa("RGGB")
QUAD_RGGB = cfa_mod.parse_cfa("quad-RGGB")


class TrainingData:
    """Random crops of photographs turned into (packed, target) batches."""

    def __init__(self, images: list[np.ndarray], patch: int = 128, seed: int = 0, quad_fraction: float = 0.1):
        if patch % 4:
            raise ValueError("patch must be a multiple of 4")
        self.images = [im for im in images if min(im.shape[:2]) >= 2 * patch]
        self.patch = patch
        self.quad_fraction = quad_fraction
        self.unprocessor = Unprocessor(seed)
        self.rng = self.unprocessor.rng

    def crop(self, size: int | None = None) -> np.ndarray:
        img = self.images[self.rng.integers(len(self.images))]
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
        cap = u.capture(
            self.crop(2 * self.patch if quad else None),
            cfa,
            shot=shot,
            read=float(read_level(shot) * np.exp(self.rng.normal(0, 0.26))),
            bits=int(self.rng.choice([10, 12, 14])),
            black_fraction=float(self.rng.choice([0.0, 1 / 64, 1 / 16])),
            inverse_tone=bool(self.rng.uniform() < 0.5),
            brightness=float(np.clip(self.rng.normal(1.0, 0.25), 0.3, 1.6)),
        )
        packed = network_input(cap.raw, cap.black, cap.white, cap.wb_gains, cfa)
        target = np.clip(cap.linear_cam, 0.0, 1.0)
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
