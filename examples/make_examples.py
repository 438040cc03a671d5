"""Make rawdev's bundled example DNGs from a procedural scene whose ground truth is known.

    python examples/make_examples.py [--out examples/]

writes

- ``chart_bayer.dng``: the scene captured through a Bayer RGGB sensor (1536x1024, 12-bit);
- ``scene_quad.dng``: the same scene through a Quad-Bayer sensor (4x4 CFA, quad RGGB);
- ``chart_reference.png``: the scene itself in 8-bit sRGB, the ground truth of both;
- ``chart_patches.json``: each ColorChecker patch's rectangle and reference sRGB value.

The scene (:func:`render_scene`) is a 6x4 ColorChecker-style chart with the published sRGB values
of the 24 patches, a grey ramp and hue strips under it, a resolution wedge of converging
black/white lines and a smooth two-dimensional colour gradient. It is turned into RAW data by
the unprocessing of ``rawdev.train.synth`` (Brooks et al. 2019) with a fixed seed, low noise
(shot 2e-4), the first camera matrix of ``camera_matrices.json`` (Canon EOS 5D Mark II),
white-balance gains (2.1, 1, 1.7), 12 bits and black level 256, so every run writes the same
bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

try:
    import rawdev  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rawdev.cfa import parse_cfa
from rawdev.dng import write_dng
from rawdev.train.synth import NOISE_LEVELS, Unprocessor, camera_bank

HEIGHT, WIDTH = 1024, 1536
SEED = 20240501
SHOT = NOISE_LEVELS["low"]  # 2e-4
WB_GAINS = (2.1, 1.0, 1.7)
BITS = 12
BLACK_FRACTION = 1 / 16  # black = round(4095 / 16) = 256
CAPTURE = dict(
    make="rawdev",
    datetime="2024:05:01 12:00:00",
    exposure_time=1 / 100,
    f_number=5.6,
    iso=100,
    focal_length=50.0,
    lens="rawdev synthetic 50mm",
)

# The 24 ColorChecker patches in reading order (rows of 6, top left first): name and 8-bit sRGB
# (D65). Source: D. Pascale, "RGB coordinates of the Macbeth ColorChecker", The BabelColor
# Company, complete update June 1st 2006, table of sRGB 8-bit values, computed from
# GretagMacbeth's 2005 reference L*a*b* data (D50, adapted to D65 with the Bradford transform).
# The same 24 triplets are what X-Rite publishes for the ColorChecker Classic and what the
# Wikipedia "ColorChecker" article lists; they agree with colour-science's BabelColor average
# spectra rendered under D65 (dark skin -> 115, 82, 68).
COLORCHECKER_SRGB8: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("dark skin", (115, 82, 68)),
    ("light skin", (194, 150, 130)),
    ("blue sky", (98, 122, 157)),
    ("foliage", (87, 108, 67)),
    ("blue flower", (133, 128, 177)),
    ("bluish green", (103, 189, 170)),
    ("orange", (214, 126, 44)),
    ("purplish blue", (80, 91, 166)),
    ("moderate red", (193, 90, 99)),
    ("purple", (94, 60, 108)),
    ("yellow green", (157, 188, 64)),
    ("orange yellow", (224, 163, 46)),
    ("blue", (56, 61, 150)),
    ("green", (70, 148, 73)),
    ("red", (175, 54, 60)),
    ("yellow", (231, 199, 31)),
    ("magenta", (187, 86, 149)),
    ("cyan", (8, 133, 161)),
    ("white 9.5 (.05 D)", (243, 243, 242)),
    ("neutral 8 (.23 D)", (200, 200, 200)),
    ("neutral 6.5 (.44 D)", (160, 160, 160)),
    ("neutral 5 (.70 D)", (122, 122, 121)),
    ("neutral 3.5 (1.05 D)", (85, 85, 85)),
    ("black 2 (1.5 D)", (52, 52, 52)),
)
SOURCE = (
    "D. Pascale, 'RGB coordinates of the Macbeth ColorChecker', The BabelColor Company, "
    "June 1st 2006: sRGB (D65) 8-bit values of the 24 patches"
)

BACKGROUND = 0.30  # encoded sRGB grey around everything
CHART_FRAME = 0.08  # the chart's black card
WEDGE_DARK, WEDGE_LIGHT = 0.06, 0.94


def _box(x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    return int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))


def scene_layout(height: int, width: int) -> dict:
    """Rectangles (x0, y0, x1, y1; x1, y1 exclusive) of every element of the scene."""
    m = max(2.0, 0.025 * min(height, width))
    chart_w_max = 0.60 * width - 2 * m
    pitch = min(chart_w_max / 6, 0.70 * height / 4 - m / 2)
    frame = _box(m, m, m + 6 * pitch, m + 4 * pitch)
    gap = 0.09 * pitch
    patches = []
    for i, (name, rgb) in enumerate(COLORCHECKER_SRGB8):
        r, c = divmod(i, 6)
        x0 = frame[0] + c * pitch + gap
        y0 = frame[1] + r * pitch + gap
        rect = _box(x0, y0, x0 + pitch - 2 * gap, y0 + pitch - 2 * gap)
        pw, ph = rect[2] - rect[0], rect[3] - rect[1]
        inset = max(1, int(round(0.2 * min(pw, ph))))
        sample = (rect[0] + inset, rect[1] + inset, rect[2] - inset, rect[3] - inset)
        patches.append({"index": i + 1, "name": name, "rect": rect, "sample_rect": sample, "srgb8": rgb})
    below = frame[3] + m
    strip_h = max(2.0, (height - m - below - m) / 2)
    grey_ramp = _box(frame[0], below, frame[2], below + strip_h)
    hue_strip = _box(frame[0], below + strip_h + m / 2, frame[2], height - m)
    right = frame[2] + 2 * m
    wedge = _box(right, m, width - m, m + 0.55 * (height - 2 * m))
    gradient = _box(right, wedge[3] + m, width - m, height - m)
    return {
        "frame": frame,
        "patches": patches,
        "grey_ramp": grey_ramp,
        "hue_strip": hue_strip,
        "wedge": wedge,
        "gradient": gradient,
    }


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorized HSV (h in [0, 1)) -> RGB, all in [0, 1]."""
    h6 = (h % 1.0) * 6.0
    k = lambda n: (n + h6) % 6.0  # noqa: E731
    f = lambda n: v - v * s * np.clip(np.minimum(k(n), 4.0 - k(n)), 0.0, 1.0)  # noqa: E731
    return np.stack([f(5.0), f(3.0), f(1.0)], axis=-1)


def _wedge(h: int, w: int, supersample: int = 4) -> np.ndarray:
    """Converging black/white lines: a fixed number of line pairs whose spacing shrinks from
    left to right by 12x, area-sampled (supersample x supersample) so the truth is the mean
    of the optical pattern over each pixel."""
    s = supersample
    ys = (np.arange(h * s) + 0.5) / (h * s)  # 0..1
    xs = (np.arange(w * s) + 0.5) / (w * s)
    spread = 1.0 - (11.0 / 12.0) * xs  # relative height the lines span at each column
    pairs = max(2, h // 8)  # period ~8 px at the wide end, ~0.7 px at the narrow end
    phase = (ys[:, None] - 0.5) / spread[None, :] * pairs
    inside = np.abs(ys[:, None] - 0.5) <= 0.5 * spread[None, :]
    lines = (np.floor(phase * 2.0) % 2 == 0) & inside
    val = np.where(lines, WEDGE_LIGHT, WEDGE_DARK)
    return val.reshape(h, s, w, s).mean(axis=(1, 3))


def render_scene(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """The example scene as encoded sRGB, float32 (height, width, 3) in [0, 1]."""
    if height < 24 or width < 24:
        raise ValueError("the scene needs at least 24x24 pixels")
    lay = scene_layout(height, width)
    img = np.full((height, width, 3), BACKGROUND, np.float32)

    x0, y0, x1, y1 = lay["frame"]
    img[y0:y1, x0:x1] = CHART_FRAME
    for p in lay["patches"]:
        x0, y0, x1, y1 = p["rect"]
        img[y0:y1, x0:x1] = np.array(p["srgb8"], np.float32) / 255.0

    # Grey ramp: linear in encoded sRGB from 0.02 to 0.98.
    x0, y0, x1, y1 = lay["grey_ramp"]
    img[y0:y1, x0:x1] = np.linspace(0.02, 0.98, x1 - x0, dtype=np.float32)[None, :, None]

    # Hue strip: full hue circle at moderate saturation, brightness falling from top to bottom.
    x0, y0, x1, y1 = lay["hue_strip"]
    hue = np.linspace(0.0, 1.0, x1 - x0, endpoint=False)[None, :]
    val = np.linspace(0.9, 0.5, y1 - y0)[:, None]
    img[y0:y1, x0:x1] = _hsv_to_rgb(hue, np.full_like(hue, 0.65), val)

    x0, y0, x1, y1 = lay["wedge"]
    img[y0:y1, x0:x1] = _wedge(y1 - y0, x1 - x0)[..., None]

    # Two-dimensional gradient: hue along x, saturation falling along y, a gentle vignette in
    # brightness so no two rows are alike.
    x0, y0, x1, y1 = lay["gradient"]
    gh, gw = y1 - y0, x1 - x0
    u = np.linspace(0.0, 1.0, gw)[None, :]
    v = np.linspace(0.0, 1.0, gh)[:, None]
    hue = (0.95 * u + 0.08 * v) % 1.0
    sat = 0.85 - 0.75 * v
    bright = 0.88 - 0.25 * (u - 0.5) ** 2 - 0.15 * v
    img[y0:y1, x0:x1] = _hsv_to_rgb(hue, sat, bright)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def to_srgb8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def capture(scene: np.ndarray, cfa_name: str, seed: int = SEED):
    """Unprocess the scene into a RawSample through ``cfa_name`` (fixed camera, gains, noise)."""
    xyz_to_cam = np.array(camera_bank()[0]["xyz_to_cam"], np.float64)
    return Unprocessor(seed).capture(
        scene,
        parse_cfa(cfa_name),
        shot=SHOT,
        xyz_to_cam=xyz_to_cam,
        wb_gains=np.array(WB_GAINS),
        bits=BITS,
        black_fraction=BLACK_FRACTION,
    )


def write_example_dng(path: Path, scene: np.ndarray, cfa_name: str, model: str, seed: int = SEED) -> None:
    sample = capture(scene, cfa_name, seed)
    write_dng(
        path,
        sample.raw,
        parse_cfa(cfa_name),
        black=sample.black,
        white=int(sample.white),
        xyz_to_cam=sample.xyz_to_cam,
        wb_gains=sample.wb_gains,
        model=model,
        **CAPTURE,
    )


def patches_json(height: int, width: int) -> dict:
    lay = scene_layout(height, width)
    return {
        "image": "chart_reference.png",
        "width": width,
        "height": height,
        "rect_convention": "x0, y0, x1, y1 in pixels; x1 and y1 exclusive",
        "sample_rect": "rect inset by 20% of the patch size on each side, away from the edges",
        "srgb_convention": "8-bit sRGB (IEC 61966-2-1, D65), encoded; srgb = srgb8 / 255",
        "source": SOURCE,
        "files": ["chart_bayer.dng", "scene_quad.dng"],
        "patches": [
            {
                "index": p["index"],
                "name": p["name"],
                "rect": list(p["rect"]),
                "sample_rect": list(p["sample_rect"]),
                "srgb8": list(p["srgb8"]),
                "srgb": [round(c / 255.0, 6) for c in p["srgb8"]],
            }
            for p in lay["patches"]
        ],
    }


def make_examples(out: Path, height: int = HEIGHT, width: int = WIDTH, seed: int = SEED) -> dict[str, Path]:
    """Write the four example files into ``out``; returns their paths by short name."""
    import imagecodecs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene = render_scene(height, width)
    paths = {
        "bayer": out / "chart_bayer.dng",
        "quad": out / "scene_quad.dng",
        "reference": out / "chart_reference.png",
        "patches": out / "chart_patches.json",
    }
    write_example_dng(paths["bayer"], scene, "RGGB", "Synthetic Bayer", seed)
    write_example_dng(paths["quad"], scene, "quad-RGGB", "Synthetic Quad", seed + 1)
    paths["reference"].write_bytes(imagecodecs.png_encode(to_srgb8(scene)))
    paths["patches"].write_text(json.dumps(patches_json(height, width), indent=1) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="output folder")
    parser.add_argument("--height", type=int, default=HEIGHT)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    for path in make_examples(args.out, args.height, args.width, args.seed).values():
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
