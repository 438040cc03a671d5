"""Image-quality benchmark: rawdev's learned ISP against classical demosaicking, on held-out photographs.

Every photograph of kodak24 (never trained on) is unprocessed into a 12-bit capture at each noise
level with rawdev's own synthesis (``rawdev.train.synth.Unprocessor.capture``; no inverse tone
curve, brightness 1, so that a neutral development is the exact inverse) and written as a DNG:
an RGGB Bayer mosaic, or with ``--cfa quad`` a Quad-Bayer one (4x4 CFA RRGG/RRGG/GGBB/GGBB,
written with CFARepeatPatternDim/CFAPattern as examples/scene_quad.dng is). Every method develops
that same DNG into 16-bit sRGB, which is scored against the original photograph (PSNR and SSIM from
``rawdev.metrics`` on floats in [0, 1], after cropping the same border from both, for every method
alike).

Methods:
- ``rawdev ...``: one row per ``--model``: the real pipeline in-process, ``rawdev.raw.read_mosaic``
  + ``rawdev.session.open_session`` + ``rawdev.develop.develop_mosaic`` with look neutral,
  exposure 0 EV and the camera white balance (what ``rawdev develop --look neutral --exposure 0``
  does, without writing a file).
- ``bilinear``, ``malvar2004``, ``menon2007``: colour-demosaicing fed the mosaic the pipeline's
  own ``rawdev.normalize.prepare`` makes for a network ((raw - black) / (white - black) *
  white-balance gain of each CFA site, clipped to [0, 1]; Quad-Bayer binned or remosaicked) and
  rendered to 16 bits by the same ``rawdev.color`` code as the pipeline (the file's colour matrix,
  no exposure change, sRGB transfer, neutral look).
- ``libraw-ahd`` (+ ``libraw-ahd+median3``, ``libraw-ahd+fbdd``): LibRaw through rawpy on the same
  DNG, with parameters that make its output the same linear-matrix + sRGB-transfer rendering (see
  LIBRAW_PARAMS and benchmarks/README.md for how that was checked). LibRaw cannot read a 4x4 CFA,
  so for Quad-Bayer it gets the pipeline's binned or remosaicked mosaic written as a Bayer DNG.
- Peers (benchmarks/peers.py; optional packages, rows skipped with the reason when absent):
  ``demosaicnet`` (Gharbi et al. 2016, its pretrained Bayer model) on the same normalized mosaic
  as the colour-demosaicing rows, ``demosaicnet-srgb`` the same with the mosaic sRGB-encoded
  before and decoded after (the domain it was trained in: 8-bit sRGB photographs), and
  ``libraw-ahd+bm3d``: AHD's linear output denoised by BM3D from the capture's known noise model.

Every row also reports its cost: GMAC per output megapixel (rawdev: the ONNX graph's non-zero
weight taps, ``benchmarks.roofline.count_macs``; demosaicnet: its convolutions as they run,
``benchmarks.peers.demosaicnet_records``; classical rows: not counted) and seconds per megapixel.
``--reuse FILE`` takes the rows of methods already in a report of the same captures instead of
running them (the expensive peers, when only a model changed).

Quad-Bayer rows come in two kinds: ``[bin]`` (the default of ``rawdev develop``: 2x2 binning,
half-resolution output), scored against the photograph box-averaged 2x2 in linear light and
re-encoded to sRGB (what binning ideally gives: the light of each 2x2 block of photosites), and
``[remosaic]`` (``--quad-bayer remosaic``: full resolution), scored against the photograph.

Usage (from the repository root):
    python benchmarks/quality.py --model weights/csanet-c32.onnx --model weights/csanet-res-c32.onnx
    python benchmarks/quality.py --cfa quad
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import peers  # noqa: E402
from benchmarks._measure import RESULTS_MD, sayer, update_results_md  # noqa: E402
from benchmarks.common import (  # noqa: E402
    RESULTS,
    SHARED,
    code_version,
    describe_machine,
    library_versions,
    machine_info,
    now,
)

DEFAULT_IMAGES = SHARED / "data" / "bench" / "kodak24"
LEVELS = ("none", "low", "medium", "high")  # "none": noise-free capture (shot = read = 0)
DEFAULT_LEVELS = ("low", "medium", "high")
BORDER = 8
BITS = 12
BLACK_FRACTION = 1 / 16
BASELINES = ("bilinear", "malvar2004", "menon2007", "libraw-ahd", "libraw-ahd+median3", "libraw-ahd+fbdd")
ROWS = (*BASELINES, *peers.PEERS)  # what --baselines chooses from (and its default)
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
CFAS = {"bayer": "RGGB", "quad": "quad-RGGB"}  # --cfa -> the capture's pattern
QUAD_MODES = ("bin", "remosaic")  # Quad-Bayer rows: rawdev develop --quad-bayer bin|remosaic
QUAD_WORDS = {"bin": "2x2-binned", "remosaic": "remosaicked"}
# LibRaw reads the binned / remosaicked mosaic as integers: values, black and white times 4 (exact
# for binning, whose mean of 4 sites is a multiple of 1/4; 1/8 LSB rounding for remosaic).
QUAD_DNG_SCALE = 4
RESULTS_KEY = "quality"  # kodak24's section; another --images set gets its own (results_key)
SIMD_FLAGS = ("sse4", "avx", "fma", "amx", "asimd", "sve")  # the CPU flags the markdown lists
MAC_COUNT_TILE = 256  # packed samples per side of the tile the rawdev rows' MACs are counted on
# Settings two reports must share for one's rows to stand in the other (--reuse).
REUSE_KEYS = ("images", "images_count", "crop", "bits", "black_fraction", "cfa", "inverse_tone", "brightness",
              "seed", "border")

# LibRaw's rendering made equal to rawdev's neutral one (checked on noise-free captures: flat
# fields come back within 1e-4 of the expected linear values, and the sRGB output equals the
# linear camera-RGB output rendered by rawdev.color to about 92 dB):
# - use_camera_wb: AsShotNeutral; LibRaw scales the smallest multiplier to 1 (G here, as rawdev);
# - output_color sRGB: LibRaw's rgb_cam from ColorMatrix1 = rawdev.color.cam_to_srgb_matrix;
# - gamma (2.4, 12.92): the sRGB transfer (rawpy's default is BT.709's (2.222, 4.5));
# - no_auto_bright, bright 1: white maps to 65535, no histogram stretch;
# - adjust_maximum_thr 0: by default (0.75) LibRaw replaces the white level by the image's own
#   maximum when that is above 75 % of it, which brightened a capture peaking at 85 % of white by
#   7.5 % (-8.7 dB); 0 turns that off;
# - user_black / user_sat are left unset: LibRaw reads the DNG's levels right, and user_sat is
#   taken after black subtraction (setting it to the file's white level darkens by 6 %);
# - highlight_mode Clip (as rawdev clips after white balance), user_flip 0, 16 bits.
LIBRAW_COMMON = {
    "use_camera_wb": True,
    "output_bps": 16,
    "gamma": (2.4, 12.92),
    "no_auto_bright": True,
    "bright": 1.0,
    "adjust_maximum_thr": 0.0,
    "user_flip": 0,
}


@dataclass
class Method:
    """One row of the table: a name and a function from a DNG file to 16-bit sRGB (H, W, 3).

    ``quad`` is the Quad-Bayer mode the row takes (None for Bayer captures); ``prepare`` (untimed)
    turns the capture's DNG into the file ``run`` reads, in a work folder. ``noise``: ``run``
    takes the capture's noise model as a second argument, (shot, read) in sensor units with the
    quantization in ``read``. ``macs_per_mp``: multiply-adds per output megapixel (None: not counted)."""

    name: str
    kind: str
    description: str
    run: Callable[..., np.ndarray]
    info: dict = field(default_factory=dict)
    quad: str | None = None
    prepare: Callable[[Path, Path], Path] | None = None
    noise: bool = False
    macs_per_mp: float | None = None

    def develop(self, dng: Path, noise: tuple[float, float]) -> np.ndarray:
        """``run`` on a capture, given its noise model when the row takes one."""
        return self.run(dng, noise) if self.noise else self.run(dng)

    @property
    def scale(self) -> int:
        """How many capture pixels one output pixel spans per axis (2 for binned Quad-Bayer)."""
        return 2 if self.quad == "bin" else 1


def row_name(name: str, quad: str | None) -> str:
    return f"{name} [{quad}]" if quad else name


# --------------------------------------------------------------------------- methods


def pipeline_inputs(dng: Path, quad: str | None = None):
    """The DNG read and normalized by the pipeline's own code (``rawdev.normalize.prepare`` for a
    network with the default contract: levels, camera white balance, clipped to [0, 1]; Quad-Bayer
    binned or remosaicked), unpacked to its canonical RGGB mosaic; with the Canonical that crops
    the output back and the rendering (the file's colour matrix, no exposure change, neutral look)."""
    from rawdev.cfa import unpack_rggb
    from rawdev.color import Rendering
    from rawdev.model import ModelContract
    from rawdev.normalize import prepare
    from rawdev.raw import read_mosaic

    mosaic = read_mosaic(dng)
    expected = "quad" if quad else "bayer"
    if mosaic.cfa.kind != expected:
        raise ValueError(f"{dng.name}: a {mosaic.cfa} mosaic where this row takes a {expected} one")
    prepared = prepare(mosaic, ModelContract(), wb="camera", quad=quad or "bin")
    norm = unpack_rggb(prepared.source[:, :])
    cam_to_srgb = mosaic.cam_to_srgb if mosaic.cam_to_srgb is not None else np.eye(3)
    return prepared.canonical, norm, Rendering(cam_to_srgb, exposure_ev=0.0, look="neutral")


def render_16bit(camera_rgb: np.ndarray, rendering) -> np.ndarray:
    """Linear camera RGB -> 16-bit sRGB exactly as develop_mosaic writes it."""
    from rawdev.color import render_to_int

    return render_to_int(camera_rgb, rendering, 65535)


def colour_demosaicing_method(name: str, quad: str | None = None) -> Method:
    import colour_demosaicing as cd

    functions = {
        "bilinear": (cd.demosaicing_CFA_Bayer_bilinear, "bilinear interpolation"),
        "malvar2004": (cd.demosaicing_CFA_Bayer_Malvar2004, "Malvar, He and Cutler 2004 (gradient-corrected)"),
        "menon2007": (cd.demosaicing_CFA_Bayer_Menon2007, "Menon, Andriani and Calvagno 2007 (DDFAPD, refined)"),
    }
    function, what = functions[name]

    def run(dng: Path) -> np.ndarray:
        canonical, norm, rendering = pipeline_inputs(dng, quad)
        rgb = canonical.crop(np.asarray(function(norm, "RGGB"), np.float32))
        return render_16bit(np.ascontiguousarray(rgb), rendering)

    mosaic = f"{QUAD_WORDS[quad]} mosaic" if quad else "mosaic"
    return Method(
        row_name(name, quad), "colour-demosaicing",
        f"colour-demosaicing {what} of the pipeline's normalized, white-balanced {mosaic} "
        "(rawdev.normalize.prepare), rendered as the pipeline renders (rawdev.color; file's colour "
        "matrix, 0 EV, sRGB, look neutral)",
        run, quad=quad,
    )


def libraw_method(name: str, quad: str | None = None) -> Method:
    import rawpy

    extra: dict = {}
    what = "AHD"
    if name == "libraw-ahd+median3":
        extra = {"median_filter_passes": 3}
        what = "AHD, then 3 passes of its 3x3 median filter on R-G and B-G"
    elif name == "libraw-ahd+fbdd":
        extra = {"fbdd_noise_reduction": rawpy.FBDDNoiseReductionMode.Full}
        what = "FBDD noise reduction (full), then AHD"
    elif name == "libraw-ahd+bm3d":  # linear camera RGB out; denoised and rendered by run
        extra = {"output_color": rawpy.ColorSpace.raw, "gamma": (1.0, 1.0)}
        what = "AHD"
    params = dict(
        LIBRAW_COMMON,
        demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD,
        output_color=rawpy.ColorSpace.sRGB,
        highlight_mode=rawpy.HighlightMode.Clip,
    )
    params.update(extra)

    def postprocess(dng: Path) -> np.ndarray:
        with rawpy.imread(str(dng)) as raw:
            mul = np.asarray(raw.camera_whitebalance[:3], np.float64)
            if mul.min() < mul[1]:
                # LibRaw scales the smallest multiplier to 1 where rawdev scales G to 1.
                raise ValueError(f"{dng.name}: white balance {mul} has a gain below green's; "
                                 "LibRaw's output would not be comparable")
            return np.asarray(raw.postprocess(**params))

    run: Callable[..., np.ndarray] = postprocess
    if name == "libraw-ahd+bm3d":
        def run(dng: Path, noise: tuple[float, float]) -> np.ndarray:
            return bm3d_on_ahd(postprocess, dng, noise, quad)

    shown = {k: (v.name if hasattr(v, "name") else v) for k, v in params.items()}
    description = f"LibRaw {what} through rawpy postprocess({shown})"
    if name == "libraw-ahd+bm3d":
        description += (
            ": linear white-balanced camera RGB, denoised by BM3D (bm3d package, its low-complexity profile "
            "BM3DProfileLC, colour mode 'opp') after a generalized Anscombe transform per channel from the "
            "capture's noise model (variance = shot x + read, x before white balance, read with the raw step's "
            "quantization; in channel c: shot g_c v + read g_c^2), with the noise power spectrum this "
            "transform leaves on a flat grey field of that noise developed by the same AHD "
            f"({peers.FLAT_FIELD} px, linear {peers.FLAT_GREY} after white balance; autocovariance over "
            f"+-{peers.PSD_LAGS} px: AHD leaves the noise correlated), the closed-form unbiased inverse, then "
            "rendered by rawdev.color (file's colour matrix, 0 EV, sRGB, look neutral); the flat field is part "
            "of the time"
            + ("; the binned mosaic's noise is a quarter of the photosites'" if quad == "bin" else ""))
    prepare = None
    if quad:
        description += (f" of the pipeline's {QUAD_WORDS[quad]} mosaic (rawdev.cfa) written as a Bayer DNG "
                        f"(values, black and white x {QUAD_DNG_SCALE}; LibRaw cannot read a 4x4 CFA); "
                        "the time excludes that step")

        def prepare(dng: Path, work: Path) -> Path:
            return quad_as_bayer_dng(dng, quad, work / f"{dng.stem}_{quad}_bayer.dng")

    kind = "peer" if name == "libraw-ahd+bm3d" else "libraw"
    return Method(row_name(name, quad), kind, description, run, {"postprocess": shown}, quad, prepare,
                  noise=name == "libraw-ahd+bm3d")


def bm3d_on_ahd(postprocess: Callable[[Path], np.ndarray], dng: Path, noise: tuple[float, float],
                quad: str | None) -> np.ndarray:
    """LibRaw's linear camera-RGB output (``postprocess``) of ``dng`` denoised by
    ``peers.bm3d_linear`` and rendered to 16-bit sRGB as the pipeline renders; ``noise`` is the
    capture's (shot, read). BM3D's noise spectrum is measured on a flat field of that noise developed
    by the same ``postprocess`` (``peers.flat_field_noise``)."""
    from rawdev.color import Rendering
    from rawdev.dng import read_dng_color_matrices, write_dng
    from rawdev.raw import read_mosaic

    mosaic = read_mosaic(dng)
    matrices = read_dng_color_matrices(dng)
    if mosaic.wb_camera is None or mosaic.cam_to_srgb is None or not matrices:
        raise ValueError(f"{dng.name}: no camera white balance or colour matrix")
    shot, read = noise
    if quad == "bin":  # the mean of 4 photosites
        shot, read = shot / 4, read / 4
    gains = mosaic.wb_camera

    def develop_flat(raw: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="rawdev-flat-") as tmp:
            flat = Path(tmp) / "flat.dng"
            write_dng(flat, raw, mosaic.cfa, black=mosaic.black.ravel().tolist(), white=int(mosaic.white),
                      xyz_to_cam=matrices[0][1], wb_gains=gains)
            return postprocess(flat).astype(np.float32) / np.float32(65535)

    flat = peers.flat_field_noise(develop_flat, mosaic.cfa, float(np.mean(mosaic.black)), mosaic.white,
                                  gains, shot, read)
    rgb = peers.bm3d_linear(postprocess(dng).astype(np.float32) / np.float32(65535), gains, shot, read, flat)
    return render_16bit(rgb, Rendering(mosaic.cam_to_srgb, exposure_ev=0.0, look="neutral"))


def demosaicnet_method(name: str, quad: str | None = None) -> Method:
    """demosaicnet's pretrained Bayer model on the pipeline's normalized mosaic (``demosaicnet``)
    or on that mosaic sRGB-encoded (``demosaicnet-srgb``), rendered as the pipeline renders."""
    from rawdev.color import srgb_decode, srgb_encode

    net = peers.load_demosaicnet()
    encoded = name == "demosaicnet-srgb"

    def run(dng: Path) -> np.ndarray:
        canonical, norm, rendering = pipeline_inputs(dng, quad)
        rgb = peers.demosaicnet_rgb(net, srgb_encode(norm) if encoded else norm)
        if encoded:
            rgb = srgb_decode(np.clip(rgb, 0.0, 1.0))
        return render_16bit(np.ascontiguousarray(canonical.crop(rgb)), rendering)

    records, out_pixels = peers.demosaicnet_records(net)
    mosaic = f"{QUAD_WORDS[quad]} mosaic" if quad else "mosaic"
    domain = (" sRGB-encoded (the domain it was trained in) and its output decoded back to linear"
              if encoded else "")
    from importlib.metadata import version

    import torch

    return Method(
        row_name(name, quad), "peer",
        f"demosaicnet {version('demosaicnet')} (Gharbi et al. 2016), its pretrained BayerDemosaick (trained "
        "without noise) in torch "
        f"{torch.__version__} on the CPU ({torch.get_num_threads()} threads), on the pipeline's normalized, "
        f"white-balanced {mosaic} (rawdev.normalize.prepare){domain}, reflected outwards by 32/33 pixels for its "
        "GRBG phase and unpadded convolutions, in bands of "
        f"{peers.DEMOSAICNET_BAND} rows; rendered as the pipeline renders (rawdev.color)",
        run, {"macs_counted_on": f"{peers.MAC_COUNT_SIZE} x {peers.MAC_COUNT_SIZE} output pixels"}, quad,
        macs_per_mp=peers.macs_per_output_mp(records, out_pixels),
    )


def baseline_method(name: str, quad: str | None = None) -> Method:
    """One of ROWS (classical or peer), for Bayer captures or for a Quad-Bayer mode."""
    if name not in ROWS:
        raise ValueError(f"unknown baseline {name!r}: choose from {', '.join(ROWS)}")
    if name.startswith("demosaicnet"):
        return demosaicnet_method(name, quad)
    return libraw_method(name, quad) if name.startswith("libraw") else colour_demosaicing_method(name, quad)


def quad_as_bayer_dng(dng: Path, mode: str, out: Path) -> Path:
    """The pipeline's binned or remosaicked Bayer mosaic of a Quad-Bayer DNG (``rawdev.cfa``),
    written as a Bayer DNG that LibRaw can read: values, black and white level times
    QUAD_DNG_SCALE, rounded; the file's colour matrix and camera white balance."""
    from rawdev import cfa as cfa_mod
    from rawdev.dng import read_dng_color_matrices, write_dng
    from rawdev.raw import read_mosaic

    mosaic = read_mosaic(dng)
    if mosaic.cfa.kind != "quad":
        raise ValueError(f"{dng.name}: {mosaic.cfa} is not a Quad-Bayer mosaic")
    convert = cfa_mod.bin_quad if mode == "bin" else cfa_mod.remosaic_quad
    data, bayer = convert(mosaic.data, mosaic.cfa)
    # Black of each 2x2 same-colour block, as rawdev.normalize.prepare takes it.
    black = np.asarray(mosaic.black, np.float64).reshape(2, 2, 2, 2).mean(axis=(1, 3))
    matrices = read_dng_color_matrices(dng)
    if not matrices or mosaic.wb_camera is None:
        raise ValueError(f"{dng.name}: no ColorMatrix or no AsShotNeutral to carry over")
    k = QUAD_DNG_SCALE
    raw = np.clip(np.round(np.asarray(data, np.float64) * k), 0, 65535).astype(np.uint16)
    write_dng(out, raw, bayer, black=(black * k).ravel().tolist(), white=int(round(mosaic.white * k)),
              xyz_to_cam=matrices[0][1], wb_gains=mosaic.wb_camera, model=f"quality benchmark ({mode})")
    return out


def rawdev_methods(models: list[str], device: str, threads: int,
                   quads: tuple[str | None, ...] = (None,)) -> list[Method]:
    """One row per model (and per Quad-Bayer mode), named by the model (its registry name or file stem)
    and its training steps: two checkpoints of one variant and step count are two rows, not one."""
    from benchmarks.roofline import count_macs
    from rawdev.develop import DevelopOptions, develop_mosaic
    from rawdev.model import file_sha256, resolve_model
    from rawdev.raw import read_mosaic
    from rawdev.session import open_session

    out: list[Method] = []
    for ref in models:
        path = resolve_model(ref)
        session = open_session(path, device=device, threads=threads)
        contract = session.contract
        macs = count_macs(path, MAC_COUNT_TILE)["macs_per_output_mp"]  # non-zero weight taps
        name = f"rawdev {path.stem} ({contract.steps} steps)"
        for quad in quads:
            options = DevelopOptions(look="neutral", exposure="0", wb="camera", quad_bayer=quad or "bin")

            def run(dng: Path, session=session, options=options) -> np.ndarray:
                mosaic = read_mosaic(dng)
                return develop_mosaic(mosaic, session, options).image

            out.append(Method(
                row_name(name, quad), "rawdev",
                f"rawdev pipeline in-process (read_mosaic, develop_mosaic; look neutral, exposure 0, "
                f"wb camera{f', quad_bayer {quad}' if quad else ''}) with {path}",
                run,
                {"path": str(path), "sha256": file_sha256(path), "contract": asdict(contract),
                 "providers": list(session.providers), "device": device,
                 "macs_counted_on": f"one {MAC_COUNT_TILE} x {MAC_COUNT_TILE} packed tile (benchmarks/roofline.py)"},
                quad, macs_per_mp=macs,
            ))
    names = [m.name for m in out]
    for m in out:
        if names.count(m.name) > 1:  # same variant and steps: tell them apart by file name
            m.name = f"{m.name} [{Path(m.info['path']).stem}]"
    return out


# --------------------------------------------------------------------------- data


def find_images(folder: Path, limit: int | None) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return paths[:limit] if limit else paths


def load_photograph(path: Path, crop: int | None, period: int = 2) -> np.ndarray:
    """An sRGB photograph as float32 (H, W, 3) in [0, 1], centre-cropped to ``crop`` pixels if
    given, trimmed to whole CFA periods (``period``: 2 for Bayer, 4 for Quad-Bayer)."""
    import imagecodecs

    img = imagecodecs.imread(str(path))
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"{path.name}: not an RGB photograph (shape {img.shape})")
    img = img[..., :3]
    scale = 255.0 if img.dtype == np.uint8 else float(np.iinfo(img.dtype).max)
    h, w = img.shape[:2]
    if crop:
        ch, cw = min(crop, h), min(crop, w)
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        img = img[y0 : y0 + ch, x0 : x0 + cw]
        h, w = ch, cw
    img = img[: h - h % period, : w - w % period]
    return np.ascontiguousarray(img, np.float32) / np.float32(scale)


def binned_reference(srgb: np.ndarray) -> np.ndarray:
    """What ideal 2x2 binning records of a photograph: each 2x2 block averaged in linear light,
    re-encoded to sRGB. The binned mosaic of a Quad-Bayer capture is exactly the Bayer mosaic of
    this image (before noise), as the original is for a Bayer capture."""
    from rawdev.color import srgb_decode, srgb_encode
    from rawdev.metrics import area_downscale

    return srgb_encode(area_downscale(srgb_decode(srgb), 2))


def image_seed(stem: str, base: int) -> int:
    """A deterministic seed per photograph, the same at every noise level (so the camera matrix,
    white balance and noise pattern are shared and only the noise amplitude changes)."""
    return (zlib.crc32(stem.encode()) + 1_000_003 * base) % 2**32


def noise_of(level: str) -> tuple[float, float]:
    from rawdev.train.synth import NOISE_LEVELS, read_level

    if level == "none":
        return 0.0, 0.0
    shot = NOISE_LEVELS[level]
    return shot, float(read_level(shot))


def write_capture(srgb: np.ndarray, seed: int, level: str, path: Path, cfa: str = "RGGB",
                  noise_profile: bool = True, brightness: float = 1.0):
    """Unprocess ``srgb`` at ``level`` through ``cfa`` (RGGB or quad-RGGB) and write it as a DNG;
    returns the capture. The camera, white balance and noise pattern depend on the seed only.
    ``brightness`` below 1 makes an underexposed capture (benchmarks/precision.py's darks)."""
    from rawdev.cfa import parse_cfa
    from rawdev.dng import write_dng
    from rawdev.train.synth import Unprocessor

    shot, read = noise_of(level)
    pattern = parse_cfa(cfa)
    cap = Unprocessor(seed).capture(
        srgb, pattern, shot=shot, read=read, bits=BITS, black_fraction=BLACK_FRACTION,
        inverse_tone=False, brightness=brightness,
    )
    # As real DNGs carry it, the DNG says its noise model (NoiseProfile); a noise-aware model
    # reads it, and estimates the noise from the mosaic where it is absent (--no-noise-profile).
    write_dng(path, cap.raw, pattern, black=cap.black, white=int(cap.white), xyz_to_cam=cap.xyz_to_cam,
              wb_gains=cap.wb_gains, make="rawdev", model="quality benchmark",
              noise_profile=(cap.shot, cap.read) if noise_profile else None)
    return cap


def score(image16: np.ndarray, reference: np.ndarray, border: int) -> tuple[float, float]:
    from rawdev.metrics import psnr, ssim

    if image16.shape != reference.shape:
        raise ValueError(f"output shape {image16.shape} differs from the photograph's {reference.shape}")
    out = image16.astype(np.float32) / np.float32(65535.0)
    b = border
    if b:
        out, reference = out[b:-b, b:-b], reference[b:-b, b:-b]
    return psnr(out, reference), ssim(out, reference)


# --------------------------------------------------------------------------- summary and outputs


def summarize(rows: list[dict], methods: list[str], levels: list[str]) -> dict:
    summary: dict = {}
    for m in methods:
        per_level = {}
        for lv in levels:
            sel = [r for r in rows if r["method"] == m and r["level"] == lv]
            if not sel:
                continue
            per_level[lv] = {
                "psnr": round(float(np.mean([r["psnr"] for r in sel])), 3),
                "ssim": round(float(np.mean([r["ssim"] for r in sel])), 4),
                "images": len(sel),
                "seconds_per_image": round(float(np.mean([r["seconds"] for r in sel])), 4),
            }
        sel = [r for r in rows if r["method"] == m]
        seconds = [r["seconds"] for r in sel]
        mpix = [r["megapixels"] for r in sel]
        summary[m] = {
            "levels": per_level,
            "seconds_per_image_mean": round(float(np.mean(seconds)), 4) if sel else None,
            "seconds_per_image_median": round(float(np.median(seconds)), 4) if sel else None,
            "megapixels_per_second": round(float(np.sum(mpix) / np.sum(seconds)), 3) if sel else None,
            "seconds_per_megapixel": round(float(np.sum(seconds) / np.sum(mpix)), 4) if sel else None,
        }
    return summary


def capture_words(settings: dict) -> str:
    """How the captures were made, in words (older reports have no ``cfa`` setting: RGGB)."""
    if settings.get("cfa", "RGGB") == "RGGB":
        return "RGGB Bayer"
    return "Quad-Bayer (4x4 CFA RRGG/RRGG/GGBB/GGBB, quad-RGGB)"


def summary_table(report: dict) -> list[str]:
    """Markdown rows: mean PSNR / SSIM per method and level, GMAC per output megapixel (``-``: not
    counted), and the time per image and per megapixel (older reports: computed from MP/s)."""
    levels, methods = report["settings"]["levels"], report["method_order"]
    lines = ["| method | " + " | ".join(levels) + " | GMAC / MP | s / image | s / MP |",
             "|---|" + "---|" * len(levels) + "---:|---:|---:|"]
    for m in methods:
        entry = report["summary"][m]
        cells = []
        for lv in levels:
            v = entry["levels"].get(lv)
            cells.append(f"{v['psnr']:.2f} / {v['ssim']:.4f}" if v else "-")
        macs = report["methods"][m].get("macs_per_mp")
        gmac = f"{macs / 1e9:.1f}" if macs else "-"
        per_mp = entry.get("seconds_per_megapixel") or 1 / entry["megapixels_per_second"]
        times = f"{entry['seconds_per_image_mean']:.3f} | {per_mp:.3f}"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {gmac} | {times} |")
    return lines


def margins(report: dict) -> list[str]:
    """Each rawdev row against the best classical row and the best peer row of the same kind
    (Bayer, or the same Quad-Bayer mode), in PSNR at every level."""
    methods, summary = report["methods"], report["summary"]
    lines = []
    for m in report["method_order"]:
        if methods[m]["kind"] != "rawdev":
            continue
        quad = methods[m].get("quad")
        for group, words in (("classical", "classical row"), ("peer", "peer row")):
            rivals = [r for r in report["method_order"] if methods[r].get("quad") == quad
                      and (methods[r]["kind"] == "peer") == (group == "peer") and methods[r]["kind"] != "rawdev"]
            cells = []
            for lv in report["settings"]["levels"]:
                scored = [(summary[r]["levels"][lv]["psnr"], r) for r in rivals if lv in summary[r]["levels"]]
                if scored and lv in summary[m]["levels"]:
                    best, who = max(scored)
                    cells.append(f"{lv} {summary[m]['levels'][lv]['psnr'] - best:+.2f} dB ({who})")
            if cells:
                lines.append(f"{m} against the best {words}: " + ", ".join(cells))
    return lines


def conditions(report: dict) -> list[str]:
    """The run's images, captures, noise, scoring and machine, as markdown list items."""
    s = report["settings"]
    quad = s.get("cfa", "RGGB") != "RGGB"
    lines = [
        f"images: {s['images_count']} from `{s['images']}`"
        + (f", centre crops of {s['crop']} px" if s["crop"] else ", full size")
        + f"; each unprocessed to a {s['bits']}-bit {capture_words(s)} DNG (black level "
        f"{s['black_fraction']:.4g} of white; camera matrix and white balance drawn per image from a fixed "
        "seed, the same at every level; no inverse tone curve, brightness 1; "
        + ("NoiseProfile tag with the true noise model, as real DNGs carry it" if s.get("noise_profile")
           else "no NoiseProfile: noise-aware models estimate the noise from the mosaic") + ")",
        "noise levels (shot a, read b; variance = a x + b): "
        + "; ".join(f"{lv}: a={a:.3g}, b={b:.3g}" for lv, (a, b) in s["noise"].items()),
        f"score: sRGB PSNR (dB) / SSIM against the original photograph, {s['border']} px border "
        "cropped from both for every method; the mean over images",
    ]
    if quad:
        lines.append("[bin] rows (half-resolution output) are scored against the photograph averaged over each "
                     "2x2 block in linear light and re-encoded to sRGB (the binned mosaic is exactly the Bayer "
                     f"mosaic of that image before noise); [remosaic] rows against the photograph; the "
                     f"{s['border']} px border is counted in output pixels. The noise per photosite is that of "
                     "the Bayer captures, so binning (the mean of 4 photosites) halves its standard deviation")
    lines.append("time: seconds per image per method, DNG file to 16-bit sRGB in memory (reading included, "
                 "scoring excluded), mean over all images and levels; the training job was not paused, so "
                 "times are indicative only"
                 + ("; binning / remosaicking is included except for the LibRaw rows, which read the "
                    "pipeline's mosaic rewritten as a Bayer DNG beforehand" if quad else ""))
    code = report["code"]
    lines.append(f"run {report['finished']}, commit {str(code['commit'] or '?')[:12]}"
                 + (" (working tree modified)" if code["dirty"] else ""))
    simd = [f for f in report["machine"].get("cpu_flags", []) if f.startswith(SIMD_FLAGS)]
    return lines + describe_machine(report["machine"], report["versions"]) + (
        [f"CPU vector flags: {' '.join(simd)}"] if simd else [])


def markdown(report: dict) -> str:
    levels, methods = report["settings"]["levels"], report["method_order"]
    lines = [
        f"# Quality benchmark: {Path(report['settings']['images']).name} unprocessed to "
        f"{capture_words(report['settings'])} DNGs, "
        "developed by each method",
        "",
        f"`{report['command']}`",
        "",
    ]
    lines += [f"- {line}" for line in conditions(report)]
    lines += ["", *summary_table(report), ""]
    lines += [f"- {line}" for line in margins(report)]
    lines += ["", "## Methods", ""]
    lines += [f"- **{m}**: {report['methods'][m]['description']}"
              + (f" (rows reused from `{report['methods'][m]['reused_from']}`)" if "reused_from" in report["methods"][m]
                 else "") for m in methods]
    lines += ["", "## Per image (PSNR / SSIM)", ""]
    names = [im["name"] for im in report["images"]]
    for lv in levels:
        lines += [f"### {lv}", "", "| image | " + " | ".join(methods) + " |",
                  "|---|" + "---|" * len(methods)]
        table = {(r["image"], r["method"]): r for r in report["per_image"] if r["level"] == lv}
        for name in names:
            cells = [f"{table[name, m]['psnr']:.2f} / {table[name, m]['ssim']:.4f}"
                     if (name, m) in table else "-" for m in methods]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def json_paths(out: Path, cfa: str) -> dict[str, Path | None]:
    """Where each CFA's JSON lies, from this run's ``--out`` (quality.json <-> quality_quad.json)."""
    if cfa == "bayer":
        return {"bayer": out, "quad": out.with_name(out.stem + "_quad.json")}
    bayer = out.with_name(out.name[: -len("_quad.json")] + ".json") if out.name.endswith("_quad.json") else None
    return {"bayer": bayer, "quad": out}


def image_set(report: dict) -> str:
    return Path(report["settings"]["images"]).name


def results_key(report: dict) -> str:
    """The RESULTS.md section a report belongs to: kodak24's tables, where the targets are judged,
    are never overwritten by a run on another set of photographs."""
    name = image_set(report)
    return RESULTS_KEY if name == DEFAULT_IMAGES.name else f"{RESULTS_KEY}-{name}"


def results_section(reports: dict[str, dict | None], markdown_names: dict[str, str]) -> str:
    """The RESULTS.md section: the Bayer and the Quad-Bayer table, their commands and conditions."""
    report = next(r for r in reports.values() if r is not None)
    name, images = image_set(report), report["settings"]["images"]
    rewrite = ("Either command with `--results-md benchmarks/RESULTS.md` rewrites this section (with the other "
               "table taken from its JSON); `--from-json` rewrites the markdown and this section from the JSON "
               "files without running anything.")
    if name == DEFAULT_IMAGES.name:
        lines = [
            "## Quality: kodak24 against classical demosaicking (benchmarks/quality.py)",
            "",
            "sRGB PSNR (dB) / SSIM of a neutral development (`--look neutral --exposure 0`, camera white "
            "balance) against the original photographs, mean over kodak24 (never trained on); every method "
            "develops the same synthetic DNG. How the captures are made and how LibRaw is made comparable: "
            "benchmarks/README.md. Per-image values: the markdown and JSON files named below. " + rewrite,
        ]
    else:
        held_out = (" They are a validation set (`data/val`): held out from the weights, not from the choice "
                    "between candidates." if Path(images).parent.name == "val" else "")
        lines = [
            f"## Quality on another set of photographs: {name} (benchmarks/quality.py --images)",
            "",
            f"The captures, pipeline and columns of the kodak24 table, on the photographs of `{images}`."
            f"{held_out} The targets are judged on kodak24. " + rewrite,
        ]
    titles = {"bayer": "Bayer (RGGB)", "quad": "Quad-Bayer (4x4 quad-RGGB)"}
    for cfa, report in reports.items():
        lines += ["", f"**{titles[cfa]}**", ""]
        if report is None:
            where = "" if name == DEFAULT_IMAGES.name else f" --images {images}"
            lines.append(f"Not run yet: `python benchmarks/quality.py{where}{' --cfa quad' if cfa == 'quad' else ''}`.")
            continue
        lines += [f"Command: `{report['command']}` (per image: `{markdown_names[cfa]}`)", ""]
        lines += [f"- {line}" for line in conditions(report)]
        lines += ["", *summary_table(report), ""]
        lines += [f"- {line}" for line in margins(report)]
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/quality.py",
        description="sRGB PSNR/SSIM of rawdev models and classical demosaicking on unprocessed kodak24.",
    )
    p.add_argument("--model", "--models", dest="model", action="extend", nargs="+", default=[],
                   metavar="PATH_OR_NAME", help="ONNX file or registry name; repeat for several rows")
    p.add_argument("--no-model", action="store_true",
                   help="classical baselines only (without --model the shipped default model runs)")
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES,
                   help=f"folder of sRGB photographs (default: {DEFAULT_IMAGES})")
    p.add_argument("--levels", nargs="+", choices=LEVELS, default=list(DEFAULT_LEVELS),
                   help="noise levels ('none' = noise-free capture)")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--crop", type=int, default=None, help="centre crop of N x N pixels (quick runs)")
    p.add_argument("--baselines", nargs="*", choices=ROWS, default=list(ROWS),
                   help="classical and peer rows to include (none with an empty list); peers whose packages "
                        "are not installed are skipped with the reason")
    p.add_argument("--reuse", type=Path, default=None, metavar="JSON",
                   help="take the rows of the chosen methods found in this earlier report (same images, crop, "
                        "seed, border and capture settings) instead of running them")
    p.add_argument("--seed", type=int, default=0, help="base seed of the unprocessing")
    p.add_argument("--border", type=int, default=BORDER, help="pixels cropped from each side before scoring")
    p.add_argument("--device", default="cpu", help="onnxruntime device for the models (auto, cpu, cuda)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = default)")
    p.add_argument("--cfa", choices=tuple(CFAS), default="bayer",
                   help="captures through an RGGB Bayer CFA, or a Quad-Bayer one (rows [bin] and [remosaic])")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON results (default: benchmarks/results/quality.json, quality_quad.json for --cfa quad; "
                        "quality_NAME.json for another --images folder NAME)")
    p.add_argument("--markdown", type=Path, default=None,
                   help="markdown tables (default: beside --out, named alike)")
    p.add_argument("--results-md", type=Path, default=None, metavar="PATH",
                   help=f"also rewrite the image set's quality section of PATH (e.g. {RESULTS_MD.name} beside this "
                        "script; kodak24's is 'quality', another set NAME's 'quality-NAME') with this run's table "
                        "and the other CFA's from its JSON beside --out")
    p.add_argument("--from-json", action="store_true",
                   help="run nothing: rewrite --markdown (and the --results-md section) from the JSON at --out")
    p.add_argument("--keep-dngs", type=Path, default=None, metavar="FOLDER",
                   help="keep the synthetic DNG files in FOLDER (default: a temporary folder)")
    p.add_argument("--no-noise-profile", action="store_true",
                   help="write the DNGs without their NoiseProfile (noise-aware models then estimate the noise)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if args.crop is not None and args.crop < 32:
        p.error("--crop must be at least 32 pixels (LibRaw refuses tiny images)")
    if args.border < 0:
        p.error("--border must be >= 0")
    stem = "quality" if Path(args.images).name == DEFAULT_IMAGES.name else f"quality_{Path(args.images).name}"
    suffix = "_quad" if args.cfa == "quad" else ""
    args.out = args.out or RESULTS / f"{stem}{suffix}.json"
    args.markdown = args.markdown or RESULTS / f"{stem}{suffix}.md"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = sayer(args.quiet)
    if args.from_json:
        if not args.out.is_file():
            print(f"error: {args.out} does not exist; run the benchmark first", file=sys.stderr)
            return 2
        return write_outputs(args, json.loads(args.out.read_text()), say, write_json=False)

    images_dir: Path = args.images
    if not images_dir.is_dir():
        if images_dir == DEFAULT_IMAGES and not SHARED.is_dir():
            print(f"error: the shared data folder {SHARED} is absent, so the kodak24 photographs are "
                  "not here; give --images FOLDER with sRGB photographs", file=sys.stderr)
        else:
            print(f"error: image folder {images_dir} does not exist", file=sys.stderr)
        return 2
    paths = find_images(images_dir, args.limit)
    if not paths:
        print(f"error: no photographs ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}", file=sys.stderr)
        return 2

    machine, versions = machine_info(), {**library_versions(), **peers.versions()}
    for line in describe_machine(machine, versions):
        say(line)

    models = args.model
    if not models and not args.no_model:
        from rawdev.model import DEFAULT_MODEL, registry

        if DEFAULT_MODEL in registry():
            models = [DEFAULT_MODEL]
            say(f"note: no --model given: the shipped default model {DEFAULT_MODEL}")
        else:
            say("note: no --model given and no shipped default model: classical baselines only")
    quads: tuple[str | None, ...] = QUAD_MODES if args.cfa == "quad" else (None,)
    try:
        learned = rawdev_methods(models, args.device, args.threads, quads)
    except Exception as exc:  # ContractError, DeviceUnavailable, onnxruntime errors
        print(f"error: cannot load model: {exc}", file=sys.stderr)
        return 2
    for m in learned:
        say(f"{m.name}: {m.info['path']} on {', '.join(m.info['providers'])}")
    skipped = {}
    for b in peers.PEERS:
        reason = peers.unavailable(b) if b in args.baselines else None
        if reason:
            skipped[b] = reason
            say(f"skipped: {reason}")
    chosen = [b for b in ROWS if b in args.baselines and b not in skipped]
    # Row order: per Quad-Bayer mode (one pass for Bayer), the models, then the baselines and peers.
    methods = [m for quad in quads
               for m in [*(r for r in learned if r.quad == quad), *(baseline_method(b, quad) for b in chosen)]]
    if not methods:
        print("error: nothing to run (no --model and no baselines)", file=sys.stderr)
        return 2
    order = [m.name for m in methods]
    levels = [lv for lv in LEVELS if lv in args.levels]
    reused: dict = {}
    if args.reuse:
        try:
            sha256s = {m.name: m.info["sha256"] for m in methods if "sha256" in m.info}
            reused = reusable_rows(json.loads(args.reuse.read_text()), order, levels, args, [p.stem for p in paths],
                                   sha256s)
        except (OSError, ValueError) as exc:
            print(f"error: --reuse {args.reuse}: {exc}", file=sys.stderr)
            return 2
        say(f"reused from {args.reuse}: {', '.join(reused) or 'nothing'}")
    to_run = [m for m in methods if m.name not in reused]
    say(f"{len(paths)} images x {len(levels)} levels x {len(to_run)} methods from {images_dir}"
        + (f" (+ {len(reused)} reused)" if reused else ""))

    rows: list[dict] = []
    images: list[dict] = []
    started = now()
    with tempfile.TemporaryDirectory(prefix="rawdev-quality-") as tmp:
        dng_dir = args.keep_dngs or Path(tmp)
        dng_dir.mkdir(parents=True, exist_ok=True)
        warm = False
        for path in paths:
            reference = load_photograph(path, args.crop, period=4 if args.cfa == "quad" else 2)
            # The reference of each output resolution (scale 2: binned Quad-Bayer).
            references = {s: reference if s == 1 else binned_reference(reference) for s in {m.scale for m in methods}}
            seed = image_seed(path.stem, args.seed)
            entry = {"name": path.stem, "file": path.name, "seed": seed,
                     "height": reference.shape[0], "width": reference.shape[1]}
            for level in levels:
                dng = dng_dir / f"{path.stem}_{level}.dng"
                cap = write_capture(reference, seed, level, dng, CFAS[args.cfa], not args.no_noise_profile)
                entry.setdefault("wb_gains", [round(float(g), 5) for g in cap.wb_gains])
                entry.setdefault("xyz_to_cam", np.round(cap.xyz_to_cam, 5).tolist())
                inputs = {m.name: m.prepare(dng, dng_dir) if m.prepare else dng for m in to_run}  # untimed
                # The noise model the capture was made with; quantization adds a raw step^2 / 12.
                step = 1.0 / (cap.white - cap.black)
                noise = (cap.shot, cap.read + step * step / 12)
                if not warm:  # first call of each method untimed (session warm-up, imports)
                    for m in to_run:
                        m.develop(inputs[m.name], noise)
                    warm = True
                scores = []
                for m in to_run:
                    t0 = time.perf_counter()
                    out = m.develop(inputs[m.name], noise)
                    seconds = time.perf_counter() - t0
                    ref = references[m.scale]
                    p_db, s_val = score(out, ref, args.border)
                    rows.append({"image": path.stem, "level": level, "method": m.name,
                                 "psnr": round(p_db, 4), "ssim": round(s_val, 5),
                                 "seconds": round(seconds, 5),
                                 "megapixels": ref.shape[0] * ref.shape[1] / 1e6})
                    scores.append(f"{m.name} {p_db:.2f}/{s_val:.3f}")
                say(f"{path.stem} {level}: " + ", ".join(scores))
            images.append(entry)
    rows += [r for name in reused for r in reused[name]["rows"]]

    report = {
        "benchmark": "quality",
        "command": "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": started,
        "finished": now(),
        "code": code_version(),
        "machine": machine,
        "versions": versions,
        "settings": {
            "images": str(images_dir),
            "images_count": len(paths),
            "crop": args.crop,
            "levels": levels,
            "noise": {lv: noise_of(lv) for lv in levels},
            "bits": BITS,
            "black_fraction": BLACK_FRACTION,
            "cfa": CFAS[args.cfa],
            "inverse_tone": False,
            "brightness": 1.0,
            "seed": args.seed,
            "border": args.border,
            "noise_profile": not args.no_noise_profile,
            "develop": {"look": "neutral", "exposure": "0", "wb": "camera", "path": "in-process"},
            "metrics": "rawdev.metrics.psnr / ssim on float sRGB in [0, 1], mean over images",
            "references": {"1": "the photograph",
                           "2": "the photograph averaged over 2x2 blocks in linear light, re-encoded to sRGB"},
        },
        "methods": {m.name: reused[m.name]["method"] if m.name in reused else
                    {"kind": m.kind, "description": m.description, **m.info, "quad": m.quad, "scale": m.scale,
                     "macs_per_mp": m.macs_per_mp} for m in methods},
        "method_order": order,
        "skipped": skipped,
        "summary": summarize(rows, order, levels),
        "images": images,
        "per_image": rows,
    }
    return write_outputs(args, report, say)


def reusable_rows(old: dict, names: list[str], levels: list[str], args: argparse.Namespace,
                  images: list[str], sha256s: dict[str, str] | None = None) -> dict[str, dict]:
    """The per-image rows and method entries of ``old`` for those of ``names`` it ran on the same
    captures (every image at every level) with the same model file (``sha256s``: a model row's file
    hash; a row whose model changed is run again); a ValueError when its captures differ from this run's."""
    sha256s = sha256s or {}
    settings = old.get("settings", {})
    here = {"images": str(args.images), "images_count": len(images), "crop": args.crop, "bits": BITS,
            "black_fraction": BLACK_FRACTION, "cfa": CFAS[args.cfa], "inverse_tone": False, "brightness": 1.0,
            "seed": args.seed, "border": args.border}
    differ = [k for k in REUSE_KEYS if settings.get(k) != here[k]]
    if [im["name"] for im in old.get("images", [])] != images:
        differ.append("image list")
    if differ:
        raise ValueError(f"its captures differ from this run's ({', '.join(differ)})")
    out = {}
    for name in names:
        rows = [r for r in old.get("per_image", []) if r["method"] == name and r["level"] in levels]
        if name in old.get("methods", {}) and len(rows) == len(images) * len(levels) \
                and old["methods"][name].get("sha256", sha256s.get(name)) == sha256s.get(name):
            method = dict(old["methods"][name], reused_from=f"{old.get('command', '?')} ({old.get('finished', '?')})")
            out[name] = {"rows": rows, "method": method}
    return out


def write_outputs(args: argparse.Namespace, report: dict, say, write_json: bool = True) -> int:
    """The JSON (unless it is where the report came from), the markdown and the RESULTS.md section."""
    written = [args.out, args.markdown] if write_json else [args.markdown]
    if write_json:
        write_text(args.out, json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    write_text(args.markdown, text)
    if not args.quiet:
        table = text.split("\n\n| method")[1].split("\n\n")[0]
        say("\n| method" + table)
    say(f"wrote {' and '.join(map(str, written))}")
    if args.results_md:
        write_results_section(args.results_md, args.cfa, report, json_paths(args.out, args.cfa))
        say(f"rewrote the {results_key(report)} section of {args.results_md}")
    return 0


def write_results_section(results_md: Path, cfa: str, report: dict, paths: dict[str, Path | None]) -> None:
    """Rewrite this image set's quality section of ``results_md`` with this run's report and the
    other CFA's from its JSON (when there is one, of the same set)."""
    reports: dict[str, dict | None] = {}
    for kind, path in paths.items():
        if kind == cfa:
            reports[kind] = report
        else:
            other = json.loads(path.read_text()) if path is not None and path.is_file() else None
            reports[kind] = other if other is not None and image_set(other) == image_set(report) else None
    names = {kind: f"results/{path.with_suffix('.md').name}" if path else "?" for kind, path in paths.items()}
    update_results_md(results_md, results_key(report), results_section(reports, names))


if __name__ == "__main__":
    sys.exit(main())
