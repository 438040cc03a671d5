"""rawdev compare: score a developed RAW file (or an image) against a reference image.

The candidate is a RAW file, developed here with the options of ``rawdev develop``, or an
already developed image (TIFF 8/16-bit, PNG, JPEG); the reference is an image, typically the
camera's own JPEG. Geometry is matched before scoring, and every step is reported:

1. orientation: the RAW file's orientation, or the image's EXIF/TIFF orientation tag;
2. refusal of pairs whose aspect ratios differ by more than 5% (not the same scene);
3. common size: the larger image is area-averaged by an integer factor k when the sizes differ by
   one (within 2% + 8 pixels a side), resized with an antialiased Lanczos-3 filter otherwise;
   both are then centre-cropped to the common size;
4. alignment: a global shift found by phase correlation (refined to a few hundredths of a pixel)
   is undone on the candidate (integer part by cropping, fraction by Lanczos-3 interpolation);
5. ``--border N`` leaves N more pixels out on each side.

Scores (all on encoded sRGB in [0, 1]): PSNR over all channels; SSIM (Wang et al. 2004,
Gaussian window 11, sigma 1.5) of each channel, their mean and of luma Y'; mean and
95th-percentile CIEDE2000 (sRGB -> XYZ -> L*a*b*, D65 white).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rawdev import metrics

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jpe"}
ASPECT_TOLERANCE = 0.05  # relative difference of width/height beyond which a pair is refused
SCALE_TOLERANCE = 0.02  # how close to an integer a size ratio must be for area averaging ...
SCALE_SLACK = 8  # ... give or take this many pixels (a RAW file's extra border, an odd crop)
ALIGN_CROP = 512  # the shift is measured on a central crop of at most this size
MIN_MAX_SHIFT = 16  # pixels; the search also allows 5% of the smaller side
MAX_SHIFT_FRACTION = 0.05
LOW_CORRELATION = 0.5  # luma correlation below which a pair is flagged as not matching
MIN_SIZE = 11  # the SSIM window
SUBPIXEL_MIN = 0.05  # pixels; smaller fractions of a shift are not interpolated


class PairError(Exception):
    """A pair that cannot be scored; the message is one line naming the file(s)."""


class UsageError(Exception):
    """Arguments that name nothing to compare (exit code 2)."""


# ---------------------------------------------------------------------------------------------
# Orientation tags


def tiff_orientation(block: bytes) -> int | None:
    """The Orientation (274) of IFD0 of a TIFF-structured block (an EXIF payload), or None."""
    if len(block) < 8 or block[:2] not in (b"II", b"MM"):
        return None
    e = "<" if block[:2] == b"II" else ">"
    if struct.unpack(e + "H", block[2:4])[0] != 42:
        return None
    (ifd,) = struct.unpack(e + "I", block[4:8])
    if ifd + 2 > len(block):
        return None
    (count,) = struct.unpack(e + "H", block[ifd : ifd + 2])
    for i in range(count):
        at = ifd + 2 + 12 * i
        if at + 12 > len(block):
            return None
        tag, typ = struct.unpack(e + "HH", block[at : at + 4])
        if tag != 274:
            continue
        if typ == 3:  # SHORT
            (value,) = struct.unpack(e + "H", block[at + 8 : at + 10])
        elif typ == 4:  # LONG
            (value,) = struct.unpack(e + "I", block[at + 8 : at + 12])
        elif typ == 1:  # BYTE
            value = block[at + 8]
        else:
            return None
        return int(value) if 1 <= value <= 8 else None
    return None


def jpeg_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG stream, from its APP1 "Exif" segment, or None."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no metadata past here
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return None
        payload = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
            return tiff_orientation(payload[6:])
        pos += 2 + length
    return None


def png_orientation(data: bytes) -> int | None:
    """The orientation in a PNG's eXIf chunk (before the image data), or None."""
    pos = 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            return tiff_orientation(data[pos + 8 : pos + 8 + n])
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + n
    return None


def image_orientation(path: Path) -> int | None:
    """The orientation recorded in an image file (JPEG EXIF, PNG eXIf, TIFF tag), or None."""
    with open(path, "rb") as fh:
        head = fh.read(256 * 1024)
    if head[:3] == b"\xff\xd8\xff":
        return jpeg_orientation(head)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return png_orientation(head)
    if head[:4] in (b"II*\0", b"MM\0*"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(274)
            value = int(tag.value) if tag is not None else None
        return value if value is not None and 1 <= value <= 8 else None
    return None


# ---------------------------------------------------------------------------------------------
# Loading


def is_raw(path: Path) -> bool:
    from rawdev.inputs import RAW_SUFFIXES, is_mosaic_png

    suffix = path.suffix.lower()
    return suffix in RAW_SUFFIXES or (suffix == ".png" and is_mosaic_png(path))


@dataclass
class Loaded:
    """An image ready for geometry: float32 (H, W, 3) encoded sRGB in [0, 1], upright."""

    image: np.ndarray
    path: Path
    stored_size: tuple[int, int]  # (width, height) as stored in the file, before orientation
    orientation: int | None = None
    developed: dict | None = None


def _reason(path: Path, exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    return text if text.startswith(str(path)) else f"{path}: {text}"


def load_image(path: Path) -> Loaded:
    """Read a TIFF, PNG or JPEG file and apply its orientation tag."""
    from rawdev.output import apply_orientation, read_image

    try:
        stored = read_image(path)
        orientation = image_orientation(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's failure
        raise PairError(_reason(path, exc)) from None
    peak = 65535.0 if stored.dtype == np.uint16 else 255.0
    upright = apply_orientation(stored, orientation)
    image = np.ascontiguousarray(upright, np.float32) / np.float32(peak)
    return Loaded(image, path, (stored.shape[1], stored.shape[0]), orientation)


@dataclass
class Developer:
    """Develops RAW candidates with the options of ``rawdev develop``; one session for all."""

    model: str = "csanet-res-c32"
    device: str = "auto"
    threads: int = 0
    options: object = None  # DevelopOptions
    cfa_override: object = None
    black: float | None = None
    white: float | None = None
    session: object = None

    def open(self) -> None:
        from rawdev.model import resolve_model
        from rawdev.session import open_session

        if self.session is None:
            self.session = open_session(resolve_model(self.model), self.device, self.threads)

    def develop(self, path: Path) -> Loaded:
        from rawdev.develop import DevelopOptions, develop_mosaic
        from rawdev.output import apply_orientation
        from rawdev.raw import RawReadError, read_mosaic

        self.open()
        options = self.options or DevelopOptions()
        try:
            mosaic = read_mosaic(path, self.cfa_override, self.black, self.white)  # type: ignore[arg-type]
        except RawReadError as exc:
            raise PairError(f"{path}: {exc}") from None
        try:
            developed = develop_mosaic(mosaic, self.session, options)  # type: ignore[arg-type]
        except MemoryError:
            raise PairError(f"{path}: out of memory while developing; try a smaller --tile") from None
        except Exception as exc:  # noqa: BLE001
            raise PairError(f"{path}: {type(exc).__name__}: {exc}") from None
        stored = developed.image
        peak = 65535.0 if stored.dtype == np.uint16 else 255.0
        orientation = mosaic.info.orientation
        image = np.ascontiguousarray(apply_orientation(stored, orientation), np.float32) / np.float32(peak)
        info = {
            "model": Path(self.session.path).name,  # type: ignore[attr-defined]
            "providers": list(self.session.providers),  # type: ignore[attr-defined]
            "exposure_ev": round(float(developed.exposure_ev), 3),
            "wb_gains": [round(float(g), 4) for g in developed.wb_gains],
            "look": getattr(options, "look", None),
        }
        return Loaded(image, path, (stored.shape[1], stored.shape[0]), orientation, info)


def load_candidate(path: Path, developer: Developer) -> Loaded:
    if not path.is_file():
        raise PairError(f"{path}: file does not exist")
    return developer.develop(path) if is_raw(path) else load_image(path)


def load_reference(path: Path) -> Loaded:
    if not path.is_file():
        raise PairError(f"{path}: file does not exist")
    if is_raw(path):
        raise PairError(f"{path}: a RAW file cannot be the reference; give a developed TIFF, PNG or JPEG")
    return load_image(path)


# ---------------------------------------------------------------------------------------------
# Geometry


@dataclass
class Geometry:
    """What was done to bring a pair to the same pixels."""

    steps: list[str] = field(default_factory=list)
    shift: tuple[float, float] | None = None  # (dy, dx) of the candidate against the reference
    peak: float | None = None
    correlation: float | None = None  # Pearson correlation of the two lumas, as compared
    size: tuple[int, int] = (0, 0)  # (width, height) compared


def _wh(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def centre_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    top = (image.shape[0] - height) // 2
    left = (image.shape[1] - width) // 2
    return image[top : top + height, left : left + width]


def check_aspect(cand: np.ndarray, ref: np.ndarray, names: tuple[str, str]) -> None:
    """Refuse a pair whose aspect ratios differ by more than ASPECT_TOLERANCE."""
    a = cand.shape[1] / cand.shape[0]
    b = ref.shape[1] / ref.shape[0]
    if abs(a / b - 1) <= ASPECT_TOLERANCE:
        return
    hint = ""
    if abs(a * b - 1) <= ASPECT_TOLERANCE:
        hint = "; one looks rotated by 90 degrees (a missing or wrong orientation tag?)"
    raise PairError(
        f"{names[0]} vs {names[1]}: aspect ratios differ by {abs(a / b - 1):.1%} "
        f"({_wh(cand)} vs {_wh(ref)}), more than {ASPECT_TOLERANCE:.0%}: not the same scene{hint}"
    )


def common_size(cand: np.ndarray, ref: np.ndarray, geo: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Downscale the larger image to the smaller one's scale, then centre-crop both to one size."""
    swap = cand.shape[0] * cand.shape[1] < ref.shape[0] * ref.shape[1]
    large, small = (ref, cand) if swap else (cand, ref)
    label = "reference" if swap else "candidate"
    factor = math.sqrt(large.shape[0] * large.shape[1] / (small.shape[0] * small.shape[1]))
    k = max(round(factor), 1)
    if all(abs(large.shape[i] / k - small.shape[i]) <= SCALE_TOLERANCE * small.shape[i] + SCALE_SLACK for i in (0, 1)):
        if k > 1:
            before = _wh(large)
            h, w = (large.shape[0] // k) * k, (large.shape[1] // k) * k
            large = metrics.area_downscale(centre_crop(large, h, w), k)
            geo.steps.append(f"{label} {before} area-averaged 1/{k} -> {_wh(large)}")
    else:
        scale = max(small.shape[0] / large.shape[0], small.shape[1] / large.shape[1])
        h = max(round(large.shape[0] * scale), small.shape[0])
        w = max(round(large.shape[1] * scale), small.shape[1])
        before = _wh(large)
        large = np.clip(metrics.resize(large, h, w), 0.0, 1.0)
        geo.steps.append(f"{label} {before} resized x{scale:.4f} -> {_wh(large)} (Lanczos-3, antialiased)")
    h = min(large.shape[0], small.shape[0])
    w = min(large.shape[1], small.shape[1])
    for image, name in ((large, label), (small, "candidate" if swap else "reference")):
        if image.shape[:2] != (h, w):
            geo.steps.append(f"{name} {_wh(image)} cropped to {w}x{h} (centre)")
    large, small = centre_crop(large, h, w), centre_crop(small, h, w)
    return (small, large) if swap else (large, small)


def _luma32(image: np.ndarray) -> np.ndarray:
    return image @ metrics.LUMA_WEIGHTS.astype(np.float32)


def measure_shift(cand: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(dy, dx, peak) of the candidate against the reference, on a central crop of luma."""
    h, w = cand.shape[:2]
    ch, cw = min(h, ALIGN_CROP), min(w, ALIGN_CROP)
    a = _luma32(centre_crop(cand, ch, cw))
    b = _luma32(centre_crop(ref, ch, cw))
    max_shift = min(max(MIN_MAX_SHIFT, MAX_SHIFT_FRACTION * min(h, w)), min(ch, cw) / 4)
    return metrics.estimate_shift(a, b, max_shift=max_shift)


def undo_shift(cand: np.ndarray, ref: np.ndarray, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """The candidate sampled at (y + dy, x + dx) and the reference, both on their overlap.

    The integer part of the shift is a crop; a fraction of SUBPIXEL_MIN px or more is
    interpolated with Lanczos-3, whose 3-pixel reach is cropped away too; a smaller one is
    within the measurement's accuracy and left alone (interpolation would only blur).
    """
    for axis, d in ((0, dy), (1, dx)):
        n = ref.shape[axis]
        whole = round(d)
        frac = d - whole
        reach = 3 if abs(frac) >= SUBPIXEL_MIN else 0
        lo = max(0, -whole) + reach
        hi = min(n, n - whole) - reach
        if hi - lo < MIN_SIZE:
            raise ValueError("no overlap left after the shift")
        index = [slice(None)] * 3
        index[axis] = slice(lo, hi)
        ref = ref[tuple(index)]
        if reach:
            cand = metrics.resample_axis(cand, axis, np.arange(lo, hi) + d)
            cand = np.clip(cand, 0.0, 1.0)
        else:
            index[axis] = slice(lo + whole, hi + whole)
            cand = cand[tuple(index)]
    return cand, ref


def match_geometry(
    cand: Loaded, ref: Loaded, align: bool = True, border: int = 0
) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Bring a candidate and a reference to the same pixels; every step goes into Geometry."""
    geo = Geometry()
    names = (str(cand.path), str(ref.path))
    for item, label in ((cand, "candidate"), (ref, "reference")):
        if item.orientation not in (None, 1):
            source = "the RAW file's" if item.developed is not None else "its tag's"
            geo.steps.append(f"{label}: {source} orientation {item.orientation} applied")
    a, b = cand.image, ref.image
    check_aspect(a, b, names)
    if a.shape[:2] != b.shape[:2]:
        a, b = common_size(a, b, geo)
    if align:
        dy, dx, peak = measure_shift(a, b)
        geo.shift, geo.peak = (dy, dx), peak
        cand_shape = a.shape[:2]
        try:
            a, b = undo_shift(a, b, dy, dx)
        except ValueError:
            raise PairError(f"{names[0]} vs {names[1]}: shift dx={dx:+.2f} dy={dy:+.2f} px leaves no overlap") from None
        found = f"candidate offset dx={dx:+.2f} dy={dy:+.2f} px (phase correlation peak {peak:.2f})"
        if a.shape[:2] == b.shape[:2] == cand_shape:
            geo.steps.append(f"aligned: {found}, under {SUBPIXEL_MIN} px: nothing to undo")
        else:
            geo.steps.append(f"aligned: {found} undone, overlap {_wh(a)}")
    if border:
        if min(a.shape[:2]) - 2 * border < MIN_SIZE:
            raise PairError(f"{names[0]} vs {names[1]}: --border {border} leaves nothing of {_wh(a)}")
        a = a[border:-border, border:-border]
        b = b[border:-border, border:-border]
        geo.steps.append(f"border: {border} px left out on each side")
    if min(a.shape[:2]) < MIN_SIZE:
        raise PairError(f"{names[0]} vs {names[1]}: {_wh(a)} is too small to score (SSIM needs 11x11)")
    geo.size = (a.shape[1], a.shape[0])
    geo.correlation = luma_correlation(a, b)
    if geo.correlation < LOW_CORRELATION:
        geo.steps.append(
            f"warning: luma correlation only {geo.correlation:.2f}; the images may not show the same scene"
        )
    return a, b, geo


def luma_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the lumas (every pixel up to 1 MP, a regular subsample beyond)."""
    step = max(1, int(math.sqrt(a.shape[0] * a.shape[1] / 1e6)))
    x = _luma32(a[::step, ::step]).astype(np.float64).ravel()
    y = _luma32(b[::step, ::step]).astype(np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denom) if denom > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Scores


def score(cand: np.ndarray, ref: np.ndarray) -> dict:
    """PSNR, SSIM (R, G, B, mean, luma) and CIEDE2000 (mean, p95) of two aligned images in [0, 1]."""
    psnr = metrics.psnr_from_mse(metrics.mse(cand, ref))
    r, g, b = metrics.ssim_channels(cand, ref)
    ssim_y = metrics.ssim_mean(_luma32(cand), _luma32(ref))
    de = metrics.delta_e_srgb(cand, ref)
    return {
        "psnr_db": psnr,
        "ssim": {"r": r, "g": g, "b": b, "mean": (r + g + b) / 3, "luma": ssim_y},
        "delta_e00": {"mean": float(de.mean(dtype=np.float64)), "p95": float(np.percentile(de, 95))},
    }


@dataclass
class PairResult:
    name: str
    candidate: Path
    reference: Path | None
    scores: dict | None = None
    geometry: Geometry | None = None
    developed: dict | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.scores is not None


def compare_pair(
    candidate: Path, reference: Path, developer: Developer, align: bool = True, border: int = 0
) -> PairResult:
    result = PairResult(candidate.stem, candidate, reference)
    try:
        cand = load_candidate(candidate, developer)
        ref = load_reference(reference)
        a, b, geo = match_geometry(cand, ref, align, border)
        result.geometry, result.developed = geo, cand.developed
        result.scores = score(a, b)
    except PairError as exc:
        result.error = str(exc)
    except MemoryError:
        result.error = f"{candidate} vs {reference}: out of memory"
    return result


def mean_scores(results: list[PairResult]) -> dict | None:
    """Mean of every score over the scored pairs (PSNR: mean of the dB values)."""
    scored = [r.scores for r in results if r.scores is not None]
    if not scored:
        return None
    return {
        "psnr_db": float(np.mean([s["psnr_db"] for s in scored])),
        "ssim": {k: float(np.mean([s["ssim"][k] for s in scored])) for k in scored[0]["ssim"]},
        "delta_e00": {k: float(np.mean([s["delta_e00"][k] for s in scored])) for k in scored[0]["delta_e00"]},
    }


# ---------------------------------------------------------------------------------------------
# Pairing


@dataclass
class Plan:
    pairs: list[tuple[Path, Path | None, str | None]]  # (candidate, reference, error)
    unpaired_candidates: list[Path] = field(default_factory=list)
    unpaired_references: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # images beside a RAW of the same stem


def _files(folder: Path, suffixes: set[str]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def _by_stem(files: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(f.stem.casefold(), []).append(f)
    return groups


def _candidates(folder: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """Candidates of a folder by stem: RAW files, or images where no RAW has the stem."""
    from rawdev.inputs import RAW_SUFFIXES

    groups = _by_stem(_files(folder, RAW_SUFFIXES | IMAGE_SUFFIXES))
    chosen, ignored = {}, []
    for stem, files in groups.items():
        raws = [f for f in files if is_raw(f)]
        if raws:
            ignored += [f for f in files if f not in raws]
            chosen[stem] = raws
        else:
            chosen[stem] = files
    return chosen, ignored


def _references(folder: Path, exclude: set[Path]) -> dict[str, list[Path]]:
    files = [f for f in _files(folder, IMAGE_SUFFIXES) if f.resolve() not in exclude and not is_raw(f)]
    return _by_stem(files)


def _one(stem_files: list[Path], kind: str) -> tuple[Path, str | None]:
    if len(stem_files) == 1:
        return stem_files[0], None
    names = ", ".join(f.name for f in stem_files)
    return stem_files[0], f"{stem_files[0].parent}: several {kind}s named {stem_files[0].stem}.* ({names}); keep one"


def plan_pairs(candidate: Path, reference: Path) -> Plan:
    """Pair a file with a file, a file with its namesake in a folder, or two folders by stem."""
    for p in (candidate, reference):
        if not p.exists():
            raise UsageError(f"{p} does not exist")
    if candidate.is_dir() and not reference.is_dir():
        raise UsageError(f"{candidate} is a folder but {reference} is a file; give two folders or two files")
    if not candidate.is_dir():
        if not reference.is_dir():
            return Plan([(candidate, reference, None)])
        refs = _references(reference, {candidate.resolve()})
        found = refs.get(candidate.stem.casefold())
        if not found:
            raise UsageError(f"{reference} holds no TIFF, PNG or JPEG named {candidate.stem}.*")
        ref, error = _one(found, "reference")
        return Plan([(candidate, ref, error)])
    cands, ignored = _candidates(candidate)
    refs = _references(reference, {f.resolve() for files in cands.values() for f in files})
    plan = Plan([], ignored=ignored)
    for stem in sorted(cands, key=lambda s: cands[s][0].name):
        if stem not in refs:
            plan.unpaired_candidates += cands[stem]
            continue
        cand, error = _one(cands[stem], "candidate")
        ref, ref_error = _one(refs[stem], "reference")
        plan.pairs.append((cand, ref, error or ref_error))
    plan.unpaired_references = sorted(f for stem, files in refs.items() if stem not in cands for f in files)
    if not plan.pairs:
        raise UsageError(
            f"no file of {candidate} has a namesake in {reference} "
            f"({sum(map(len, cands.values()))} candidate(s), {sum(map(len, refs.values()))} reference(s))"
        )
    return plan


# ---------------------------------------------------------------------------------------------
# Report


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def _clean(obj):
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(results: list[PairResult], plan: Plan) -> dict:
    pairs = []
    for r in results:
        entry: dict = {"name": r.name, "candidate": str(r.candidate), "reference": str(r.reference)}
        if r.ok:
            geo = r.geometry
            entry["status"] = "ok"
            entry.update(r.scores or {})
            entry["identical"] = r.scores is not None and r.scores["psnr_db"] == float("inf")
            entry["geometry"] = {
                "steps": geo.steps if geo else [],
                "shift_px": None if geo is None or geo.shift is None else {"dx": geo.shift[1], "dy": geo.shift[0]},
                "correlation_peak": None if geo is None else geo.peak,
                "luma_correlation": None if geo is None else geo.correlation,
                "compared": None if geo is None else {"width": geo.size[0], "height": geo.size[1]},
            }
            if r.developed is not None:
                entry["developed"] = r.developed
        else:
            entry["status"] = "failed"
            entry["error"] = r.error
        pairs.append(entry)
    return _clean({
        "pairs": pairs,
        "mean": mean_scores(results),
        "scored": sum(r.ok for r in results),
        "failed": sum(not r.ok for r in results),
        "unpaired": {
            "candidates": [str(p) for p in plan.unpaired_candidates],
            "references": [str(p) for p in plan.unpaired_references],
        },
    })


def _fmt(x: float, digits: int) -> str:
    return "inf" if x == float("inf") else f"{x:.{digits}f}"


def _row(name: str, s: dict, shift: str) -> list[str]:
    from rich.markup import escape

    ssim = s["ssim"]
    return [
        escape(name), _fmt(s["psnr_db"], 2), _fmt(ssim["mean"], 4),
        *(f"{ssim[c]:.3f}" for c in ("r", "g", "b")), f"{ssim['luma']:.4f}",
        _fmt(s["delta_e00"]["mean"], 2), _fmt(s["delta_e00"]["p95"], 2), shift,
    ]


def render_table(results: list[PairResult]):
    """The scores as a rich table: one row per pair, the means last."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        "pair", "PSNR dB", "SSIM", "R", "G", "B", "Y'", "ΔE00", "p95", "dx dy",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption="SSIM: mean of R, G, B (window 11, sigma 1.5); Y': SSIM of luma; "
        "ΔE00: CIEDE2000 mean and 95th percentile; dx dy: shift undone (px)",
    )
    names = [r.name for r in results] + ["mean (000)"]
    table.columns[0].min_width = min(max(map(len, names)), 16)
    for column in table.columns[1:]:
        column.justify = "right"
        column.no_wrap = True
    for r in results:
        if r.ok:
            geo = r.geometry
            shift = "off" if geo is None or geo.shift is None else f"{geo.shift[1]:+.2f} {geo.shift[0]:+.2f}"
            table.add_row(*_row(r.name, r.scores or {}, shift))
        else:
            table.add_row(escape(r.name), "failed", *[""] * 8)
    mean = mean_scores(results)
    if mean is not None and len(results) > 1:
        table.add_section()
        table.add_row(*_row(f"mean ({sum(r.ok for r in results)})", mean, ""))
    return table

