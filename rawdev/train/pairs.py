"""Real aligned RAW/RGB pairs in the MAI 2021 challenge layout, for training an ``srgb`` model.

RAW_DIR holds 16-bit single-channel PNG mosaics (RGGB phase, values as the sensor gives them),
RGB_DIR 8-bit RGB PNGs of the same size with the same file names. As in the challenge's loader the
mosaic is divided by 4*255 with no black level subtracted, and no white balance is applied: the
network learns the whole ISP of that one camera.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rawdev.cfa import pack_rggb
from rawdev.raw import MAI_WHITE
from rawdev.train.synth import SynthBatch


def split_names(raw_dir: Path, split: str) -> list[str]:
    """Every tenth pair (by sorted name) is held out for validation when there are ten or more."""
    names = sorted(p.name for p in Path(raw_dir).glob("*.png"))
    if len(names) < 10:
        return names
    held = set(names[5::10])
    return [n for n in names if (n in held) == (split == "val")]


def validation_pairs(raw_dir: Path, rgb_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Held-out pairs as (label, packed, identity matrix, target) items for training's evaluate()."""
    import imagecodecs

    items = []
    for name in split_names(raw_dir, "val"):
        if not (Path(rgb_dir) / name).exists():
            continue
        raw = imagecodecs.imread(str(Path(raw_dir) / name))
        rgb = imagecodecs.imread(str(Path(rgb_dir) / name))[..., :3]
        h, w = (raw.shape[0] // 4) * 4, (raw.shape[1] // 4) * 4
        packed = pack_rggb(raw[:h, :w].astype(np.float32) / np.float32(MAI_WHITE))
        items.append(("pairs", packed, np.eye(3, dtype=np.float32), rgb[:h, :w].astype(np.float32) / 255))
    return items


class PairedData:
    """Random aligned crops of (mosaic, RGB) pairs, flipped together."""

    def __init__(self, raw_dir: Path, rgb_dir: Path, patch: int = 128, seed: int = 0, split: str = "train"):
        import imagecodecs

        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for name in split_names(raw_dir, split):
            rgb_path = Path(rgb_dir) / name
            if not rgb_path.exists():
                continue
            raw = imagecodecs.imread(str(Path(raw_dir) / name))
            rgb = imagecodecs.imread(str(rgb_path))[..., :3]
            if raw.ndim != 2 or raw.dtype != np.uint16:
                raise ValueError(f"{raw_dir}/{name}: a RAW pair must be a 16-bit single-channel PNG")
            if rgb.shape[:2] != raw.shape:
                raise ValueError(f"{name}: RAW {raw.shape} and RGB {rgb.shape[:2]} differ in size")
            self.pairs.append((raw, rgb))
        if not self.pairs:
            raise FileNotFoundError(f"no pairs with matching names in {raw_dir} and {rgb_dir}")
        smallest = min(min(raw.shape) for raw, _ in self.pairs)
        self.patch = min(patch, (smallest // 4) * 4)
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        raw, rgb = self.pairs[self.rng.integers(len(self.pairs))]
        p = self.patch
        y = 2 * self.rng.integers((raw.shape[0] - p) // 2 + 1)
        x = 2 * self.rng.integers((raw.shape[1] - p) // 2 + 1)
        packed = pack_rggb(raw[y : y + p, x : x + p].astype(np.float32) / np.float32(MAI_WHITE))
        target = rgb[y : y + p, x : x + p].astype(np.float32) / 255.0
        if self.rng.uniform() < 0.5:  # the paper's random horizontal flip, on planes and RGB together
            packed, target = packed[:, ::-1], target[:, ::-1]
        return np.ascontiguousarray(packed), np.ascontiguousarray(target)

    def batch(self, size: int) -> SynthBatch:
        items = [self.sample() for _ in range(size)]
        return SynthBatch(
            np.stack([i[0] for i in items]),
            np.stack([i[1] for i in items]),
            np.tile(np.eye(3, dtype=np.float32), (size, 1, 1)),
            np.zeros(size, np.float32),
        )
