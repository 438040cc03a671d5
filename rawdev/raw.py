"""Read a RAW file into a Mosaic: data, CFA, levels, white balance, colour matrix, metadata."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rawdev import cfa as cfa_mod
from rawdev.color import cam_to_srgb_matrix
from rawdev.dng import ColourProfile
from rawdev.errors import RawReadError
from rawdev.inputs import MOSAIC_PNG_SUFFIXES
from rawdev.noise import NoiseModel
from rawdev.output import CaptureInfo

MAI_WHITE = 4 * 255

# Leading bytes of containers that hold RAW data, to tell damage from a non-RAW file.
RAW_MAGIC = (b"II*\x00", b"MM\x00*", b"IIRO", b"IIRS", b"IIU\x00", b"FUJIFILM", b"\x00MRM", b"FOVb", b"ARRI")
# LibRaw's flip code -> EXIF orientation.
FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}


@dataclass
class Mosaic:
    """A CFA mosaic as the sensor recorded it, with what is needed to develop it."""

    data: np.ndarray  # (H, W) visible area, uint16 (or float32 after binning)
    cfa: cfa_mod.CFA
    black: np.ndarray  # (period, period) black level of each CFA site
    white: float
    wb_camera: np.ndarray | None = None  # (3,) R, G, B multipliers with G = 1
    wb_daylight: np.ndarray | None = None
    cam_to_srgb: np.ndarray | None = None  # white-balanced camera RGB -> linear sRGB
    colour_profile: ColourProfile | None = None  # the DNG colour tags (or LibRaw's matrix) for DNG output
    info: CaptureInfo = field(default_factory=CaptureInfo)
    source: Path | None = None
    normalization: str = "black-white"  # or "mai": no black level, divide by 4*255
    noise_profile: NoiseModel | None = None  # the file's own noise model (DNG NoiseProfile)

    @property
    def megapixels(self) -> float:
        return self.data.shape[0] * self.data.shape[1] / 1e6


def read_mosaic(
    path: Path,
    cfa_override: cfa_mod.CFA | None = None,
    black: float | None = None,
    white: float | None = None,
) -> Mosaic:
    """Read ``path`` (any RAW format LibRaw knows, or a 16-bit PNG mosaic) without modifying it."""
    path = Path(path)
    if not path.exists():
        raise RawReadError("file does not exist")
    if path.is_dir():
        raise RawReadError("is a folder, not a RAW file")
    size = path.stat().st_size
    if size == 0:
        raise RawReadError("empty file (0 bytes): not a RAW file")
    if path.suffix.lower() in MOSAIC_PNG_SUFFIXES:
        return read_png_mosaic(path, cfa_override, black, white)
    return read_libraw(path, cfa_override, black, white)


def _libraw_error(path: Path, exc: Exception) -> RawReadError:
    with open(path, "rb") as f:
        head = f.read(16)
    name = type(exc).__name__
    detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    if name == "LibRawFileUnsupportedError":
        return RawReadError(f"not a RAW format LibRaw knows ({detail}); check the file type")
    quoted = f"{name}: {detail}"
    if not any(head.startswith(m) for m in RAW_MAGIC) and b"ftypcrx" not in head:
        return RawReadError(f"not a RAW file: LibRaw cannot read it ({quoted})", quoted)
    return RawReadError(f"damaged or truncated RAW data ({quoted}); copy the file again from the card", quoted)


def read_libraw(
    path: Path, cfa_override: cfa_mod.CFA | None, black: float | None, white: float | None
) -> Mosaic:
    import rawpy

    from rawdev.dng import DamagedTagError, dng_data_problem

    problem = dng_data_problem(path)  # before LibRaw allocates what a damaged size tag claims
    if problem is not None:
        raise RawReadError(problem)
    try:
        with rawpy.imread(str(path)) as raw:
            mosaic = _mosaic_from_libraw(path, raw, cfa_override)
    except rawpy.LibRawError as exc:
        raise _libraw_error(path, exc) from exc
    except DamagedTagError as exc:  # a DNG tag rawdev reads (CFA, colour, noise) is damaged
        raise RawReadError(str(exc)) from None
    if black is not None:
        mosaic.black = np.full_like(mosaic.black, float(black))
    if white is not None:
        mosaic.white = float(white)
    if mosaic.white <= float(mosaic.black.max()):
        raise RawReadError(f"white level {mosaic.white:g} is not above the black level {mosaic.black.max():g}")
    return mosaic


def _mosaic_from_libraw(path: Path, raw, cfa_override: cfa_mod.CFA | None) -> Mosaic:
    import rawpy

    if raw.raw_type != rawpy.RawType.Flat or raw.raw_pattern is None:
        raise RawReadError(_not_a_mosaic_reason(path, raw))
    data = raw.raw_image_visible.copy()
    if raw.num_colors == 1:
        raise RawReadError("monochrome sensor: there is no colour filter array to develop")
    cfa = cfa_override or _file_cfa(path, raw)
    black = _black_sites(path, raw, cfa)
    _check_not_zero_filled(data, float(black.min()))
    return Mosaic(
        data=data,
        cfa=cfa,
        black=black,
        white=float(raw.white_level),
        wb_camera=_wb(raw.camera_whitebalance),
        wb_daylight=_wb(raw.daylight_whitebalance),
        cam_to_srgb=_colour_matrix(raw),
        colour_profile=_colour_profile(path, raw),
        info=_capture_info(path, raw),
        source=path,
        noise_profile=_noise_profile(path),
    )


def _noise_profile(path: Path) -> NoiseModel | None:
    from rawdev.dng import read_dng_noise_profile

    if path.suffix.lower() != ".dng":
        return None
    profile = read_dng_noise_profile(path)
    return NoiseModel(*profile, source="NoiseProfile") if profile is not None else None


ZERO_FILLED_FRACTION = 0.01  # real sensors: dead pixels, well under 0.1 %
ZERO_FILL_MIN_BLACK = 32  # below this, zeros can be real shadows


def _check_not_zero_filled(data: np.ndarray, black: float) -> None:
    """Refuse a mosaic with many samples at exactly 0 far below a black level: where LibRaw cannot
    decode damaged compressed data it may leave zeros and say nothing."""
    if black < ZERO_FILL_MIN_BLACK or data.size == 0:
        return
    zeros = np.count_nonzero(data == 0) / data.size
    if zeros > ZERO_FILLED_FRACTION:
        raise RawReadError(f"damaged RAW data: {100 * zeros:.1f} % of the pixels are 0, far below the black level "
                           f"{black:g} (parts the decoder could not read); copy the file again from the card")


def _black_sites(path: Path, raw, cfa: cfa_mod.CFA) -> np.ndarray:
    """Black level of each site of ``cfa``'s repeat (period x period).

    LibRaw's per-channel levels follow its own 2x2 ``raw_pattern``. For a Quad-Bayer DNG that
    pattern is a collapsed, non-Bayer one and the levels are wrong (a 2x2 BlackLevel repeat
    of 100, 200, 300, 400 comes back as 300, 300, 0, 400), so the DNG's own BlackLevel tags
    are used for 4x4 patterns. When ``--cfa`` gives a pattern of another period than the
    file's, the levels are mapped by colour, not by position.
    """
    if cfa.period == 4:
        tagged = _dng_black_levels(path, cfa.period)
        if tagged is not None:
            return tagged
    pattern = np.asarray(raw.raw_pattern)
    blacks = np.asarray(raw.black_level_per_channel, np.float64)
    black_site = blacks[pattern % len(blacks)]
    if cfa.period == black_site.shape[0]:
        return black_site
    desc = raw.color_desc.decode() if isinstance(raw.color_desc, bytes) else str(raw.color_desc)
    letters = np.array([desc[i] if i < len(desc) else "?" for i in pattern.ravel()])
    flat = black_site.ravel()
    per_colour = np.array([flat[letters == c].mean() if (letters == c).any() else flat.mean() for c in "RGB"])
    return per_colour[cfa.array]


def _dng_black_levels(path: Path, period: int) -> np.ndarray | None:
    """BlackLevel of a DNG's CFA IFD tiled to period x period, or None (no such tags, not a DNG,
    a repeat that does not divide the period)."""
    import tifffile

    from rawdev.dng import BLACK_LEVEL, BLACK_LEVEL_REPEAT_DIM, PHOTOMETRIC_CFA, _all_pages

    try:
        with tifffile.TiffFile(path) as tif:
            for page in _all_pages(tif):
                tags = page.tags
                photometric = tags.get(262)
                level = tags.get(BLACK_LEVEL)
                if photometric is None or int(photometric.value) != PHOTOMETRIC_CFA or level is None:
                    continue
                dim = tags.get(BLACK_LEVEL_REPEAT_DIM)
                rows, cols = (int(v) for v in np.ravel(dim.value)[:2]) if dim is not None else (1, 1)
                values = np.ravel(np.asarray(level.value, np.float64))
                if int(level.dtype) in (5, 10):  # RATIONAL / SRATIONAL: (numerator, denominator) pairs
                    values = values[0::2] / np.where(values[1::2] == 0, 1, values[1::2])
                if rows < 1 or cols < 1 or values.size < rows * cols or period % rows or period % cols:
                    return None
                return np.tile(values[: rows * cols].reshape(rows, cols), (period // rows, period // cols))
    except Exception:  # not TIFF-based or damaged: LibRaw's levels stand
        return None
    return None


def _file_cfa(path: Path, raw) -> cfa_mod.CFA:
    """The file's CFA. A DNG's own CFA tags win over LibRaw, which collapses a 4x4 Quad-Bayer
    pattern into a 2x2 one that is not even Bayer."""
    from rawdev.dng import read_dng_cfa_tags

    tags = read_dng_cfa_tags(path)  # a damaged tag: DamagedTagError, one line (read_libraw)
    try:
        if tags is not None:
            (rows, cols), pattern = tags
            if (rows, cols) == (6, 6):
                raise RawReadError("X-Trans sensor (6x6 CFA): a Bayer network cannot take it")
            return cfa_mod.validate_cfa(np.asarray(pattern).reshape(rows, cols))
        return cfa_mod.cfa_from_libraw(raw.raw_pattern, raw.color_desc)
    except cfa_mod.CFAError as exc:
        raise RawReadError(f"{exc} (use --cfa to override if the file is wrong)") from exc


def _not_a_mosaic_reason(path: Path, raw) -> str:
    if path.suffix.lower() == ".dng":
        return ("linear DNG: the image is already demosaiced (3 colours per pixel, no CFA); "
                "rawdev develops CFA mosaics — open this file in a regular editor instead")
    if raw.raw_pattern is not None and np.asarray(raw.raw_pattern).shape == (6, 6):
        return "X-Trans sensor (6x6 CFA): a Bayer network cannot take it"
    return ("3-colour pixels, not a colour filter mosaic (an RGB scan, a Foveon sensor or demosaiced "
            "data); rawdev develops Bayer and Quad-Bayer mosaics only")


def _wb(values) -> np.ndarray | None:
    v = np.asarray(values, np.float64)[:3]
    if v.size < 3 or not np.all(np.isfinite(v)) or v[1] <= 0 or v[0] <= 0 or v[2] <= 0:
        return None
    return v / v[1]


def _colour_matrix(raw) -> np.ndarray | None:
    xyz_to_cam = np.asarray(raw.rgb_xyz_matrix, np.float64)[:3]
    if np.any(xyz_to_cam) and np.all(xyz_to_cam.sum(axis=1) > 0):
        return cam_to_srgb_matrix(xyz_to_cam)
    rgb_cam = np.asarray(raw.color_matrix, np.float64)[:3, :3]
    if np.any(rgb_cam) and not np.allclose(rgb_cam, np.eye(3)):
        return rgb_cam
    return None


def _colour_profile(path: Path, raw) -> ColourProfile | None:
    """A DNG's own ColorMatrix/ForwardMatrix tags; for other formats LibRaw's XYZ (D65) -> camera
    matrix (``rgb_xyz_matrix``, which LibRaw leaves zero for DNGs); None when neither exists."""
    from rawdev.dng import D65, read_dng_colour_profile

    profile = read_dng_colour_profile(path)
    if profile is not None:
        return profile
    xyz_to_cam = np.asarray(raw.rgb_xyz_matrix, np.float64)[:3]
    if np.any(xyz_to_cam) and np.all(xyz_to_cam.sum(axis=1) > 0):
        return ColourProfile((D65,), (xyz_to_cam,))
    return None


def _capture_info(path: Path, raw) -> CaptureInfo:
    other, lens = raw.other, raw.lens
    ts = other.timestamp
    when = None
    if isinstance(ts, _dt.datetime) and ts.year > 1970:
        when = ts.strftime("%Y:%m:%d %H:%M:%S")
    make, model = _tiff_make_model(path)
    return CaptureInfo(
        make=make,
        model=model,
        datetime=when,
        exposure_time=other.shutter_speed or None,
        f_number=other.aperture or None,
        iso=int(other.iso_speed) if other.iso_speed else None,
        focal_length=other.focal_length or None,
        lens=(lens.model or None) if lens is not None else None,
        orientation=FLIP_TO_EXIF.get(int(raw.sizes.flip), 1),
    )


def _tiff_make_model(path: Path) -> tuple[str | None, str | None]:
    """Make and model from the TIFF structure (DNG, NEF, CR2, ARW, ...), when there is one."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            make = tags.get("Make")
            model = tags.get("Model") or tags.get("UniqueCameraModel")
            return (str(make.value).strip() if make else None, str(model.value).strip() if model else None)
    except Exception:  # not TIFF-based (CR3, RAF, ...) or damaged: metadata is optional
        return None, None


def read_png_mosaic(
    path: Path, cfa_override: cfa_mod.CFA | None, black: float | None, white: float | None
) -> Mosaic:
    """A 16-bit single-channel PNG mosaic (MAI 2021 layout: no black level, divide by 4*255)."""
    import imagecodecs

    try:
        data = imagecodecs.imread(str(path))
    except Exception as exc:
        raise RawReadError(f"not a readable PNG ({type(exc).__name__})") from exc
    if data.ndim != 2:
        raise RawReadError(
            f"PNG has {data.shape[2] if data.ndim == 3 else '?'} channels: a mosaic PNG must be single-channel"
        )
    if data.dtype != np.uint16:
        raise RawReadError(f"PNG is {data.dtype}: a mosaic PNG must be 16-bit")
    cfa = cfa_override or cfa_mod.parse_cfa("RGGB")
    n = cfa.period
    normalization = "mai" if black is None and white is None else "black-white"
    return Mosaic(
        data=data,
        cfa=cfa,
        black=np.full((n, n), float(black or 0.0)),
        white=float(white if white is not None else MAI_WHITE),
        source=path,
        normalization=normalization,
    )
