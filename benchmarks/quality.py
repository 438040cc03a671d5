"""Image-quality benchmark: rawdev's learned ISP against classical demosaicking, on held-out photographs.

Every photograph of kodak24 (never trained on) is unprocessed into a 12-bit RGGB Bayer capture at
each noise level with rawdev's own synthesis (``rawdev.train.synth.Unprocessor.capture``; no
inverse tone curve, brightness 1, so that a neutral development is the exact inverse) and written
as a DNG. Every method develops that same DNG into 16-bit sRGB, which is scored against the
original photograph (PSNR and SSIM from ``rawdev.metrics`` on floats in [0, 1], after cropping the
same border from both, for every method alike).

Methods:
- ``rawdev ...``: one row per ``--model``: the real pipeline in-process, ``rawdev.raw.read_mosaic``
  + ``rawdev.session.open_session`` + ``rawdev.develop.develop_mosaic`` with look neutral,
  exposure 0 EV and the camera white balance (what ``rawdev develop --look neutral --exposure 0``
  does, without writing a file).
- ``bilinear``, ``malvar2004``, ``menon2007``: colour-demosaicing fed the same mosaic normalized as
  the pipeline does it ((raw - black) / (white - black) * white-balance gain of each CFA site,
  clipped to [0, 1]) and rendered to 16 bits by the same ``rawdev.color`` code as the pipeline
  (the file's colour matrix, no exposure change, sRGB transfer, neutral look).
- ``libraw-ahd`` (+ ``libraw-ahd+median3``, ``libraw-ahd+fbdd``): LibRaw through rawpy on the same
  DNG, with parameters that make its output the same linear-matrix + sRGB-transfer rendering (see
  LIBRAW_PARAMS and benchmarks/README.md for how that was checked).

Usage (from the repository root):
    python benchmarks/quality.py --model weights/csanet-c32.onnx --model weights/csanet-res-c32.onnx
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
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")

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
    """One row of the table: a name and a function from a DNG file to 16-bit sRGB (H, W, 3)."""

    name: str
    kind: str
    description: str
    run: Callable[[Path], np.ndarray]
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- methods


def pipeline_inputs(dng: Path):
    """The DNG read as rawdev reads it: the mosaic, normalized and white-balanced like the pipeline
    does it for its network, plus the rendering (colour matrix, no exposure change, neutral look)."""
    from rawdev import cfa as cfa_mod
    from rawdev.color import Rendering
    from rawdev.normalize import white_balance_gains
    from rawdev.raw import read_mosaic

    mosaic = read_mosaic(dng)
    if mosaic.cfa.kind != "bayer":
        raise ValueError(f"{dng.name}: classical baselines take Bayer mosaics, not {mosaic.cfa}")
    h, w = mosaic.data.shape
    colour = cfa_mod.colour_index_map(mosaic.cfa, h, w)
    n = mosaic.cfa.period
    black = np.tile(np.asarray(mosaic.black, np.float32), (-(-h // n), -(-w // n)))[:h, :w]
    gains = np.asarray(white_balance_gains(mosaic, "camera"), np.float32)
    norm = (mosaic.data.astype(np.float32) - black) / (np.float32(mosaic.white) - black) * gains[colour]
    np.clip(norm, 0.0, 1.0, out=norm)
    cam_to_srgb = mosaic.cam_to_srgb if mosaic.cam_to_srgb is not None else np.eye(3)
    return mosaic, norm, Rendering(cam_to_srgb, exposure_ev=0.0, look="neutral")


def render_16bit(camera_rgb: np.ndarray, rendering) -> np.ndarray:
    """Linear camera RGB -> 16-bit sRGB exactly as develop_mosaic writes it."""
    from rawdev.color import render_to_int

    return render_to_int(camera_rgb, rendering, 65535)


def colour_demosaicing_method(name: str) -> Method:
    import colour_demosaicing as cd

    functions = {
        "bilinear": (cd.demosaicing_CFA_Bayer_bilinear, "bilinear interpolation"),
        "malvar2004": (cd.demosaicing_CFA_Bayer_Malvar2004, "Malvar, He and Cutler 2004 (gradient-corrected)"),
        "menon2007": (cd.demosaicing_CFA_Bayer_Menon2007, "Menon, Andriani and Calvagno 2007 (DDFAPD, refined)"),
    }
    function, what = functions[name]

    def run(dng: Path) -> np.ndarray:
        mosaic, norm, rendering = pipeline_inputs(dng)
        rgb = function(norm, mosaic.cfa.name)
        return render_16bit(np.asarray(rgb, np.float32), rendering)

    return Method(
        name, "colour-demosaicing",
        f"colour-demosaicing {what} of the pipeline's normalized, white-balanced mosaic, "
        "rendered as the pipeline renders (rawdev.color; file's colour matrix, 0 EV, sRGB, look neutral)",
        run,
    )


def libraw_method(name: str) -> Method:
    import rawpy

    extra: dict = {}
    what = "AHD"
    if name == "libraw-ahd+median3":
        extra = {"median_filter_passes": 3}
        what = "AHD, then 3 passes of its 3x3 median filter on R-G and B-G"
    elif name == "libraw-ahd+fbdd":
        extra = {"fbdd_noise_reduction": rawpy.FBDDNoiseReductionMode.Full}
        what = "FBDD noise reduction (full), then AHD"
    params = dict(
        LIBRAW_COMMON,
        demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD,
        output_color=rawpy.ColorSpace.sRGB,
        highlight_mode=rawpy.HighlightMode.Clip,
        **extra,
    )

    def run(dng: Path) -> np.ndarray:
        with rawpy.imread(str(dng)) as raw:
            mul = np.asarray(raw.camera_whitebalance[:3], np.float64)
            if mul.min() < mul[1]:
                # LibRaw scales the smallest multiplier to 1 where rawdev scales G to 1.
                raise ValueError(f"{dng.name}: white balance {mul} has a gain below green's; "
                                 "LibRaw's output would not be comparable")
            return np.asarray(raw.postprocess(**params))

    shown = {k: (v.name if hasattr(v, "name") else v) for k, v in params.items()}
    return Method(name, "libraw", f"LibRaw {what} through rawpy postprocess({shown})", run,
                  {"postprocess": shown})


def rawdev_methods(models: list[str], device: str, threads: int) -> list[Method]:
    """One row per model, named by its contract's variant and training steps."""
    from rawdev.develop import DevelopOptions, develop_mosaic
    from rawdev.model import file_sha256, resolve_model
    from rawdev.raw import read_mosaic
    from rawdev.session import open_session

    options = DevelopOptions(look="neutral", exposure="0", wb="camera")
    out: list[Method] = []
    for ref in models:
        path = resolve_model(ref)
        session = open_session(path, device=device, threads=threads)
        contract = session.contract
        name = f"rawdev {contract.variant} ({contract.steps} steps)"

        def run(dng: Path, session=session) -> np.ndarray:
            mosaic = read_mosaic(dng)
            return develop_mosaic(mosaic, session, options).image

        out.append(Method(
            name, "rawdev",
            f"rawdev pipeline in-process (read_mosaic, develop_mosaic; look neutral, exposure 0, "
            f"wb camera) with {path}",
            run,
            {"path": str(path), "sha256": file_sha256(path), "contract": asdict(contract),
             "providers": list(session.providers), "device": device},
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


def load_photograph(path: Path, crop: int | None) -> np.ndarray:
    """An sRGB photograph as float32 (H, W, 3) in [0, 1], centre-cropped to ``crop`` pixels if
    given, trimmed to even height and width (whole Bayer periods)."""
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
    img = img[: h - h % 2, : w - w % 2]
    return np.ascontiguousarray(img, np.float32) / np.float32(scale)


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


def write_capture(srgb: np.ndarray, seed: int, level: str, path: Path):
    """Unprocess ``srgb`` at ``level`` and write it as a DNG; returns the capture."""
    from rawdev.cfa import parse_cfa
    from rawdev.dng import write_dng
    from rawdev.train.synth import Unprocessor

    shot, read = noise_of(level)
    rggb = parse_cfa("RGGB")
    cap = Unprocessor(seed).capture(
        srgb, rggb, shot=shot, read=read, bits=BITS, black_fraction=BLACK_FRACTION,
        inverse_tone=False, brightness=1.0,
    )
    write_dng(path, cap.raw, rggb, black=cap.black, white=int(cap.white), xyz_to_cam=cap.xyz_to_cam,
              wb_gains=cap.wb_gains, make="rawdev", model="quality benchmark")
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
        }
    return summary


def markdown(report: dict) -> str:
    s = report["settings"]
    levels, methods = s["levels"], report["method_order"]
    lines = [
        "# Quality benchmark: unprocessed kodak24, developed by each method",
        "",
        f"`{report['command']}`",
        "",
        f"Run {report['finished']} (commit {report['code']['commit'] or '?'}"
        f"{', with uncommitted changes' if report['code']['dirty'] else ''}).",
        "",
        f"- images: {s['images_count']} from `{s['images']}`"
        + (f", centre crops of {s['crop']} px" if s["crop"] else ", full size")
        + f"; each unprocessed to a {s['bits']}-bit RGGB DNG (black level {s['black_fraction']:.4g} of "
        "white; camera matrix and white balance drawn per image from a fixed seed, the same at every "
        "level; no inverse tone curve, brightness 1)",
        "- noise levels (shot a, read b; variance = a x + b): "
        + "; ".join(f"{lv}: a={a:.3g}, b={b:.3g}" for lv, (a, b) in s["noise"].items()),
        f"- score: sRGB PSNR (dB) / SSIM against the original photograph, {s['border']} px border "
        "cropped from both for every method; the mean over images",
        "- time: seconds per image per method, DNG file to 16-bit sRGB in memory (reading included, "
        "scoring excluded), mean over all images and levels",
    ]
    lines += [f"- {line}" for line in describe_machine(report["machine"], report["versions"])]
    lines += ["", "| method | " + " | ".join(levels) + " | s / image |",
              "|---|" + "---|" * len(levels) + "---:|"]
    for m in methods:
        entry = report["summary"][m]
        cells = []
        for lv in levels:
            v = entry["levels"].get(lv)
            cells.append(f"{v['psnr']:.2f} / {v['ssim']:.4f}" if v else "-")
        t = entry["seconds_per_image_mean"]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {t:.3f} |")
    lines += ["", "## Methods", ""]
    lines += [f"- **{m}**: {report['methods'][m]['description']}" for m in methods]
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
    p.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                   help="classical methods to include (none with an empty list)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the unprocessing")
    p.add_argument("--border", type=int, default=BORDER, help="pixels cropped from each side before scoring")
    p.add_argument("--device", default="cpu", help="onnxruntime device for the models (auto, cpu, cuda)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = default)")
    p.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    p.add_argument("--markdown", type=Path, default=RESULTS / "quality.md")
    p.add_argument("--keep-dngs", type=Path, default=None, metavar="FOLDER",
                   help="keep the synthetic DNG files in FOLDER (default: a temporary folder)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if args.crop is not None and args.crop < 32:
        p.error("--crop must be at least 32 pixels (LibRaw refuses tiny images)")
    if args.border < 0:
        p.error("--border must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

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

    machine, versions = machine_info(), library_versions()
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
    try:
        methods = rawdev_methods(models, args.device, args.threads)
    except Exception as exc:  # ContractError, DeviceUnavailable, onnxruntime errors
        print(f"error: cannot load model: {exc}", file=sys.stderr)
        return 2
    for m in methods:
        say(f"{m.name}: {m.info['path']} on {', '.join(m.info['providers'])}")
    methods += [colour_demosaicing_method(b) if not b.startswith("libraw") else libraw_method(b)
                for b in BASELINES if b in args.baselines]
    if not methods:
        print("error: nothing to run (no --model and no baselines)", file=sys.stderr)
        return 2
    order = [m.name for m in methods]
    levels = [lv for lv in LEVELS if lv in args.levels]
    say(f"{len(paths)} images x {len(levels)} levels x {len(methods)} methods from {images_dir}")

    rows: list[dict] = []
    images: list[dict] = []
    started = now()
    with tempfile.TemporaryDirectory(prefix="rawdev-quality-") as tmp:
        dng_dir = args.keep_dngs or Path(tmp)
        dng_dir.mkdir(parents=True, exist_ok=True)
        warm = False
        for path in paths:
            reference = load_photograph(path, args.crop)
            seed = image_seed(path.stem, args.seed)
            entry = {"name": path.stem, "file": path.name, "seed": seed,
                     "height": reference.shape[0], "width": reference.shape[1]}
            for level in levels:
                dng = dng_dir / f"{path.stem}_{level}.dng"
                cap = write_capture(reference, seed, level, dng)
                entry.setdefault("wb_gains", [round(float(g), 5) for g in cap.wb_gains])
                entry.setdefault("xyz_to_cam", np.round(cap.xyz_to_cam, 5).tolist())
                if not warm:  # first call of each method untimed (session warm-up, imports)
                    for m in methods:
                        m.run(dng)
                    warm = True
                scores = []
                for m in methods:
                    t0 = time.perf_counter()
                    out = m.run(dng)
                    seconds = time.perf_counter() - t0
                    p_db, s_val = score(out, reference, args.border)
                    rows.append({"image": path.stem, "level": level, "method": m.name,
                                 "psnr": round(p_db, 4), "ssim": round(s_val, 5),
                                 "seconds": round(seconds, 5),
                                 "megapixels": reference.shape[0] * reference.shape[1] / 1e6})
                    scores.append(f"{m.name} {p_db:.2f}/{s_val:.3f}")
                say(f"{path.stem} {level}: " + ", ".join(scores))
            images.append(entry)

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
            "cfa": "RGGB",
            "inverse_tone": False,
            "brightness": 1.0,
            "seed": args.seed,
            "border": args.border,
            "develop": {"look": "neutral", "exposure": "0", "wb": "camera", "path": "in-process"},
            "metrics": "rawdev.metrics.psnr / ssim on float sRGB in [0, 1], mean over images",
        },
        "methods": {m.name: {"kind": m.kind, "description": m.description, **m.info} for m in methods},
        "method_order": order,
        "summary": summarize(rows, order, levels),
        "images": images,
        "per_image": rows,
    }
    write_text(args.out, json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    write_text(args.markdown, text)
    if not args.quiet:
        table = text.split("\n\n| method")[1].split("\n\n")[0]
        say("\n| method" + table)
    say(f"wrote {args.out} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
