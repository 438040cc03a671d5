"""Colour filter arrays: patterns, mosaicking, phase normalization, packing, Quad-Bayer.

Colours are indices 0=R, 1=G, 2=B. The canonical layout for networks is RGGB: any Bayer phase is
brought to it by reflect-padding one row and/or column at the top/left (reflection keeps the CFA
phase), and the padding is cropped off again on output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS = "RGB"
BAYER_NAMES = ("RGGB", "BGGR", "GRBG", "GBRG")


class CFAError(ValueError):
    """A colour filter array that rawdev cannot use, with the reason."""


@dataclass(frozen=True)
class CFA:
    """A repeating colour filter pattern: ``pattern[y % n, x % n]`` is the colour at (y, x)."""

    pattern: tuple[tuple[int, ...], ...]

    @property
    def array(self) -> np.ndarray:
        return np.array(self.pattern, dtype=np.int64)

    @property
    def period(self) -> int:
        return len(self.pattern)

    @property
    def kind(self) -> str:
        return "bayer" if self.period == 2 else "quad"

    @property
    def name(self) -> str:
        return "".join(COLOURS[c] for row in self.pattern for c in row)

    def __str__(self) -> str:
        return self.name if self.kind == "bayer" else f"quad {self.name}"


def _as_cfa(array: np.ndarray) -> CFA:
    return CFA(tuple(tuple(int(v) for v in row) for row in np.asarray(array)))


def parse_cfa(text: str) -> CFA:
    """Parse ``RGGB`` (2x2, row-major) or a 16-letter 4x4 pattern such as ``RRGGRRGGGGBBGGBB``.

    ``quad-RGGB`` is shorthand for the Quad-Bayer layout whose 2x2 blocks follow RGGB.
    """
    t = text.strip().upper().replace(" ", "").replace(",", "")
    if t.startswith("QUAD-") or t.startswith("QUAD"):
        bayer = parse_cfa(t.split("QUAD", 1)[1].lstrip("-"))
        return validate_cfa(np.kron(bayer.array, np.ones((2, 2), np.int64)))
    if len(t) not in (4, 16) or set(t) - set(COLOURS):
        raise CFAError(
            f"CFA pattern {text!r} is not understood: give 4 letters (RGGB, BGGR, GRBG, GBRG), "
            "16 letters for a 4x4 pattern, or quad-RGGB"
        )
    n = 2 if len(t) == 4 else 4
    return validate_cfa(np.array([COLOURS.index(c) for c in t]).reshape(n, n))


def validate_cfa(pattern: np.ndarray) -> CFA:
    """Check that a pattern is a Bayer (2x2) or Quad-Bayer (4x4 of 2x2 blocks) layout."""
    p = np.asarray(pattern)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] not in (2, 4):
        raise CFAError(f"CFA of shape {p.shape} is not Bayer (2x2) or Quad-Bayer (4x4)")
    if p.shape[0] == 4:
        blocks = p[::2, ::2]
        if not all((p[i::2, j::2] == blocks).all() for i in range(2) for j in range(2)):
            raise CFAError(f"4x4 CFA {_as_cfa(p).name} is not made of 2x2 same-colour blocks")
        validate_cfa(blocks)
        return _as_cfa(p)
    counts = np.bincount(p.ravel(), minlength=3)
    green_diagonal = (p[0, 0] == p[1, 1] == 1) or (p[0, 1] == p[1, 0] == 1)
    if p.max() > 2 or p.min() < 0 or tuple(counts) != (1, 2, 1) or not green_diagonal:
        raise CFAError(f"2x2 CFA {p.tolist()} is not a Bayer pattern (one R, one B, two G diagonal)")
    return _as_cfa(p)


def cfa_from_libraw(raw_pattern: np.ndarray | None, color_desc: bytes | str) -> CFA:
    """Build a CFA from rawpy's ``raw_pattern`` and ``color_desc`` (e.g. b'RGBG')."""
    if raw_pattern is None:
        raise CFAError("no colour filter array (linear or demosaiced data)")
    desc = color_desc.decode() if isinstance(color_desc, bytes) else color_desc
    pattern = np.asarray(raw_pattern)
    if pattern.shape == (6, 6):
        raise CFAError("X-Trans sensor (6x6 CFA): a Bayer network cannot take it")
    mapping = []
    for letter in desc:
        if letter not in COLOURS:
            raise CFAError(f"CFA colours {desc!r} are not RGB (e.g. CMYG sensors)")
        mapping.append(COLOURS.index(letter))
    return validate_cfa(np.array(mapping)[pattern])


def mosaic(rgb: np.ndarray, cfa: CFA) -> np.ndarray:
    """Sample an (H, W, 3) image through ``cfa`` into an (H, W) mosaic: the exact inverse used
    to make fixtures and training data."""
    h, w = rgb.shape[:2]
    n = cfa.period
    reps = (-(-h // n), -(-w // n))
    colour = np.tile(cfa.array, reps)[:h, :w]
    return np.take_along_axis(rgb, colour[..., None], axis=2)[..., 0]


def colour_index_map(cfa: CFA, height: int, width: int) -> np.ndarray:
    n = cfa.period
    return np.tile(cfa.array, (-(-height // n), -(-width // n)))[:height, :width]


@dataclass(frozen=True)
class Canonical:
    """How a Bayer mosaic was padded to even size in the canonical RGGB phase."""

    top: int
    left: int
    height: int
    width: int

    def crop(self, image: np.ndarray, scale: int = 1) -> np.ndarray:
        """Undo the padding on an image at ``scale`` times the mosaic's resolution."""
        t, lft = self.top * scale, self.left * scale
        return image[t : t + self.height * scale, lft : lft + self.width * scale]


def rggb_offset(cfa: CFA) -> tuple[int, int]:
    """Rows and columns to add at the top/left so that the pattern starts with R at (0, 0)."""
    if cfa.kind != "bayer":
        raise CFAError(f"{cfa} is not a Bayer pattern; bin or remosaic it first")
    (ry,), (rx,) = np.nonzero(cfa.array == 0)
    return int(ry), int(rx)


def to_canonical(raw: np.ndarray, cfa: CFA) -> tuple[np.ndarray, Canonical]:
    """Reflect-pad a Bayer mosaic to RGGB phase and even size."""
    top, left = rggb_offset(cfa)
    h, w = raw.shape
    bottom = (h + top) % 2
    right = (w + left) % 2
    if h + top < 2 or w + left < 2:
        raise CFAError(f"mosaic of {w}x{h} pixels is too small")
    padded = np.pad(raw, ((top, bottom), (left, right)), mode="reflect") if (top or left or bottom or right) else raw
    return padded, Canonical(top, left, h, w)


def pack_rggb(raw: np.ndarray) -> np.ndarray:
    """RGGB mosaic (H, W) -> planes (H/2, W/2, 4) ordered R, G(R row), G(B row), B."""
    return np.stack([raw[0::2, 0::2], raw[0::2, 1::2], raw[1::2, 0::2], raw[1::2, 1::2]], axis=-1)


def unpack_rggb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rggb`."""
    h, w = packed.shape[:2]
    raw = np.empty((2 * h, 2 * w), packed.dtype)
    raw[0::2, 0::2], raw[0::2, 1::2] = packed[..., 0], packed[..., 1]
    raw[1::2, 0::2], raw[1::2, 1::2] = packed[..., 2], packed[..., 3]
    return raw


def bin_quad(raw: np.ndarray, cfa: CFA) -> tuple[np.ndarray, CFA]:
    """Average each 2x2 same-colour block of a Quad-Bayer mosaic: a half-size Bayer mosaic."""
    if cfa.kind != "quad":
        raise CFAError(f"{cfa} is not a Quad-Bayer pattern")
    h, w = (raw.shape[0] // 2) * 2, (raw.shape[1] // 2) * 2
    # Accumulate quarter-size planes: no full-size float32 copy of the mosaic.
    binned = raw[0:h:2, 0:w:2].astype(np.float32)
    binned += raw[0:h:2, 1:w:2]
    binned += raw[1:h:2, 0:w:2]
    binned += raw[1:h:2, 1:w:2]
    binned *= np.float32(0.25)
    return binned, _as_cfa(cfa.array[::2, ::2])


def remosaic_quad(raw: np.ndarray, cfa: CFA) -> tuple[np.ndarray, CFA]:
    """Full-resolution Bayer from a Quad-Bayer mosaic.

    Each site whose Quad colour already matches the Bayer target keeps its value; the others
    take a normalized-convolution estimate (Gaussian weights) from the nearest samples of the
    target colour. Returns the mosaic and its Bayer pattern (the Quad's block layout).
    """
    if cfa.kind != "quad":
        raise CFAError(f"{cfa} is not a Quad-Bayer pattern")
    bayer = _as_cfa(cfa.array[::2, ::2])
    h, w = raw.shape
    src = colour_index_map(cfa, h, w)
    dst = colour_index_map(bayer, h, w)
    values = raw.astype(np.float32)
    out = values.copy()
    kernel = _gaussian_kernel(5, 1.0)
    for c in range(3):
        need = (dst == c) & (src != c)
        if not need.any():
            continue
        mask = (src == c).astype(np.float32)
        num = _convolve_same(values * mask, kernel)
        den = _convolve_same(mask, kernel)
        out[need] = num[need] / np.maximum(den[need], 1e-6)
    return out, bayer


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    ax = np.arange(size, dtype=np.float32) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    return np.outer(g, g).astype(np.float32)


def _convolve_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Small 2-D correlation with reflect padding (kernels here are symmetric)."""
    k = kernel.shape[0] // 2
    padded = np.pad(image, k, mode="reflect")
    out = np.zeros_like(image)
    h, w = image.shape
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            out += kernel[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return out
