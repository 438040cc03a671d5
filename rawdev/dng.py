"""Write CFA (mosaic) DNG files that LibRaw/rawpy reads back, and read a DNG's own CFA tags.

The writer makes the simplest DNG LibRaw accepts: one IFD holding the raw mosaic
(NewSubfileType 0, PhotometricInterpretation CFA), 16 bits per sample, uncompressed in one strip,
or one lossless-JPEG strip with ``compress=True``. Colour is described by ColorMatrix1 (XYZ D65 ->
camera) with CalibrationIlluminant1 = D65 and AsShotNeutral = 1 / white-balance gains; capture
data (time, exposure, f-number, ISO, focal length, lens) go into the same IFD, which the DNG
specification allows, and into an EXIF IFD, where LibRaw looks for the ISO.

:func:`read_dng_cfa_tags` exists because LibRaw folds a 4x4 Quad-Bayer CFAPattern into a 2x2
one (it only keeps an 8x2 ``filters`` word), so rawdev reads the pattern from the file itself.
What rawpy 0.28 (LibRaw 0.22) reports for a quad-RGGB DNG written here: ``raw_pattern``
[[0, 0], [1, 1]] with ``color_desc`` b'RGBG', i.e. rows of all-R alternating with rows of all-G
(``raw_colors_visible`` never shows B); it is not even a Bayer pattern.

LibRaw also leaves ``rgb_xyz_matrix`` all zeros for DNG files (ColorMatrix goes straight into
``color_matrix``, which equals :func:`rawdev.color.cam_to_srgb_matrix` of it), hence
:func:`read_dng_color_matrices`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from rawdev.cfa import CFA

# TIFF / DNG tag codes.
NEW_SUBFILE_TYPE = 254
ORIENTATION = 274
MAKE = 271
MODEL = 272
EXIF_IFD = 34665
EXIF_IFD_PLACEHOLDER = EXIF_IFD - 1  # an unassigned code
EXIF_VERSION = 36864
DATETIME_ORIGINAL = 36867
DATETIME = 306
CFA_REPEAT_PATTERN_DIM = 33421
CFA_PATTERN = 33422
EXPOSURE_TIME = 33434
F_NUMBER = 33437
ISO_SPEED_RATINGS = 34855
FOCAL_LENGTH = 37386
LENS_MODEL = 42036
DNG_VERSION = 50706
DNG_BACKWARD_VERSION = 50707
UNIQUE_CAMERA_MODEL = 50708
CFA_PLANE_COLOR = 50710
CFA_LAYOUT = 50711
BLACK_LEVEL_REPEAT_DIM = 50713
BLACK_LEVEL = 50714
WHITE_LEVEL = 50717
COLOR_MATRIX_1 = 50721
COLOR_MATRIX_2 = 50722
AS_SHOT_NEUTRAL = 50728
CALIBRATION_ILLUMINANT_1 = 50778
CALIBRATION_ILLUMINANT_2 = 50779
FORWARD_MATRIX_1 = 50964
FORWARD_MATRIX_2 = 50965
PHOTOMETRIC_CFA = 32803
D65 = 21

# TIFF field types.
BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL, DOUBLE = 1, 2, 3, 4, 5, 7, 10, 12
NOISE_PROFILE = 51041
WORD_TYPES = {SHORT, LONG, 8, 9, 13, 16, 17, 18}  # (S)SHORT, (S)LONG, IFD, (S)LONG8, IFD8
INTEGER_TYPES = WORD_TYPES | {BYTE, 6, UNDEFINED}  # and (S)BYTE, UNDEFINED: what CFAPattern may be
TYPE_NAMES = {BYTE: "BYTE", ASCII: "ASCII", SHORT: "SHORT", LONG: "LONG", RATIONAL: "RATIONAL",
              UNDEFINED: "UNDEFINED", SRATIONAL: "SRATIONAL", 11: "FLOAT", DOUBLE: "DOUBLE"}
TAG_NAMES = {NEW_SUBFILE_TYPE: "NewSubfileType", 262: "PhotometricInterpretation",
             CFA_REPEAT_PATTERN_DIM: "CFARepeatPatternDim", CFA_PATTERN: "CFAPattern",
             CFA_PLANE_COLOR: "CFAPlaneColor", CALIBRATION_ILLUMINANT_1: "CalibrationIlluminant1",
             CALIBRATION_ILLUMINANT_2: "CalibrationIlluminant2"}


class DamagedTagError(ValueError):
    """A tag rawdev reads whose value has a type or count no DNG writer gives it."""


def tag_integers(tags, code: int, count: int | None = None, types: set[int] = WORD_TYPES) -> list[int] | None:
    """The values of integer tag ``code`` (None when absent); DamagedTagError ("damaged DNG tag N
    (Name): ...") when its type is not one of ``types`` (SHORT, LONG and the like unless told: a
    SHORT read as BYTE is cut short) or it holds not ``count`` values. tifffile gives a number, a
    tuple, or bytes for BYTE / UNDEFINED, whatever type and count the file claims."""
    tag = tags.get(code)
    if tag is None:
        return None
    value, dtype = tag.value, int(tag.dtype)
    if isinstance(value, np.ndarray):  # tifffile's form for a long tag (a damaged count, say)
        value = tuple(value.ravel().tolist())
    items = tuple(value) if isinstance(value, (bytes, tuple)) else (value,)
    name = f"damaged DNG tag {code} ({TAG_NAMES.get(code, 'unknown')})"
    if dtype not in types or not all(isinstance(v, (int, np.integer)) for v in items):
        kind = TYPE_NAMES.get(dtype, f"type {dtype}")
        raise DamagedTagError(f"{name}: holds {kind} data where integers belong; copy the file again from the card")
    if count is not None and len(items) != count:
        n = len(items)
        raise DamagedTagError(f"{name}: holds {n} value{'s' * (n != 1)}, not {count}; "
                              "copy the file again from the card")
    return [int(v) for v in items]


def _rationals(values, signed: bool = False, denominator: int = 1_000_000) -> tuple[int, ...]:
    """Flatten numbers into (numerator, denominator) pairs; exact for simple fractions."""
    out: list[int] = []
    limit = 2**31 - 1 if signed else 2**32 - 1
    for v in np.ravel(np.asarray(values, np.float64)):
        if not math.isfinite(v) or (not signed and v < 0):
            raise ValueError(f"cannot store {v} as a {'signed ' if signed else ''}TIFF rational")
        f = Fraction(float(v)).limit_denominator(denominator)
        while abs(f.numerator) > limit or f.denominator > limit:
            denominator //= 10
            f = Fraction(float(v)).limit_denominator(max(denominator, 1))
        out += [f.numerator, f.denominator]
    return tuple(out)


def _black_levels(black, cfa: CFA) -> tuple[tuple[int, int], np.ndarray]:
    """BlackLevelRepeatDim and BlackLevel values from a scalar, per-colour (R, G, B) levels,
    or per-position levels of a 2x2 or period x period repeat (row-major)."""
    b = np.atleast_1d(np.asarray(black, np.float64)).ravel()
    n = cfa.period
    if b.size == 1:
        return (1, 1), b
    if b.size == 3:  # per colour, laid out through the CFA
        return (n, n), b[cfa.array].ravel()
    if b.size == 4:
        return (2, 2), b
    if b.size == n * n:
        return (n, n), b
    raise ValueError(f"black level needs 1, 3 (R, G, B), 4 (2x2) or {n * n} values, got {b.size}")


def write_dng(
    path,
    raw: np.ndarray,
    cfa: CFA,
    *,
    black: float | Sequence[float],
    white: int,
    xyz_to_cam,
    wb_gains,
    make: str = "rawdev",
    model: str = "Synthetic",
    orientation: int = 1,
    datetime: str | None = None,
    exposure_time: float | None = None,
    f_number: float | None = None,
    iso: int | None = None,
    focal_length: float | None = None,
    lens: str | None = None,
    bits_per_sample: int = 16,
    compress: bool = False,
    noise_profile: tuple[float, float] | None = None,
) -> None:
    """Write a CFA mosaic as a DNG.

    ``raw`` is the (H, W) mosaic whose pixel (y, x) has colour ``cfa.pattern[y % n][x % n]``
    (0=R, 1=G, 2=B); any H, W (LibRaw refuses images under 22 pixels on a side). ``black`` is
    one level, three per-colour levels (R, G, B), four levels of a 2x2 repeat, or period**2
    levels of the CFA repeat (LibRaw reports only the smallest of a 4x4 repeat's levels).
    ``xyz_to_cam`` is the XYZ (D65) -> camera matrix (rows camera R, G, B), written as
    ColorMatrix1 for D65. ``wb_gains`` are the R, G, B multipliers that neutralize white;
    AsShotNeutral is their reciprocal normalized to G = 1. ``datetime`` is "YYYY:MM:DD HH:MM:SS".
    ``compress=True`` stores one lossless-JPEG strip (Compression 7) instead of uncompressed
    data. Only 16-bit storage is written (the levels say how many bits are used).
    ``noise_profile`` (S, O) is written as NoiseProfile: variance = S x + O, x in [0, 1].
    """
    import tifffile

    raw = np.asarray(raw)
    if raw.ndim != 2 or raw.shape[0] < 1 or raw.shape[1] < 1:
        raise ValueError(f"raw must be a 2-D mosaic, got shape {raw.shape}")
    if bits_per_sample != 16:
        raise ValueError("only 16 bits per sample are written")
    if raw.dtype != np.uint16:
        if raw.dtype.kind not in "ui" or raw.min() < 0 or raw.max() > 65535:
            raise ValueError(f"raw must hold integers in 0..65535, got {raw.dtype}")
        raw = raw.astype(np.uint16)
    raw = np.ascontiguousarray(raw)
    if not 1 <= int(orientation) <= 8:
        raise ValueError(f"orientation must be 1..8 (TIFF Orientation), got {orientation}")
    n = cfa.period
    pattern = cfa.array
    m = np.asarray(xyz_to_cam, np.float64)
    if m.shape != (3, 3):
        raise ValueError(f"xyz_to_cam must be 3x3, got {m.shape}")
    gains = np.asarray(wb_gains, np.float64).ravel()
    if gains.shape != (3,) or (gains <= 0).any():
        raise ValueError(f"wb_gains must be three positive R, G, B multipliers, got {wb_gains}")
    neutral = (1.0 / gains) / (1.0 / gains[1])
    black_dim, black_values = _black_levels(black, cfa)
    if not 0 < int(white) <= 65535:
        raise ValueError(f"white level {white} does not fit 16 bits")

    tags: list[tuple] = [
        (CFA_REPEAT_PATTERN_DIM, SHORT, 2, (n, n), True),
        (CFA_PATTERN, BYTE, n * n, bytes(int(v) for v in pattern.ravel()), True),
        (CFA_PLANE_COLOR, BYTE, 3, b"\x00\x01\x02", True),
        (CFA_LAYOUT, SHORT, 1, 1, True),
        (MAKE, ASCII, None, make, True),
        (MODEL, ASCII, None, model, True),
        (ORIENTATION, SHORT, 1, int(orientation), True),
        (DNG_VERSION, BYTE, 4, b"\x01\x04\x00\x00", True),
        (DNG_BACKWARD_VERSION, BYTE, 4, b"\x01\x01\x00\x00", True),
        (UNIQUE_CAMERA_MODEL, ASCII, None, f"{make} {model}", True),
        (BLACK_LEVEL_REPEAT_DIM, SHORT, 2, black_dim, True),
        (BLACK_LEVEL, RATIONAL, black_values.size, _rationals(black_values, denominator=1000), True),
        (WHITE_LEVEL, LONG, 1, int(white), True),
        (COLOR_MATRIX_1, SRATIONAL, 9, _rationals(m, signed=True, denominator=10000), True),
        (CALIBRATION_ILLUMINANT_1, SHORT, 1, D65, True),
        (AS_SHOT_NEUTRAL, RATIONAL, 3, _rationals(neutral), True),
    ]
    if noise_profile is not None:
        tags.append((NOISE_PROFILE, DOUBLE, 2, tuple(float(v) for v in noise_profile), True))
    capture = _capture_tags(datetime, exposure_time, f_number, iso, focal_length, lens)
    # The capture tags go into IFD0 (the DNG specification allows EXIF tags there) and, because
    # LibRaw reads ISOSpeedRatings only from an EXIF IFD, into an EXIF IFD as well.
    tags += [
        (code, dtype, count, value, True)
        for code, dtype, count, value in capture
        if code != DATETIME_ORIGINAL
    ]
    if capture:
        # tifffile refuses to write ExifIFD itself: write a placeholder tag that sorts just
        # before it, then turn it into ExifIFD pointing at an appended EXIF IFD.
        tags.append((EXIF_IFD_PLACEHOLDER, LONG, 1, 0, True))

    with tifffile.TiffWriter(path, bigtiff=False, byteorder="<") as tif:
        common = dict(
            photometric=PHOTOMETRIC_CFA,
            subfiletype=0,
            software="rawdev",
            metadata=None,
            extratags=tags,
        )
        if compress:
            # One lossless-JPEG strip (ITU T.81 process 14) of one component: LibRaw's DNG
            # decoder takes it for any size, where tiles past the image edge confuse it.
            import imagecodecs

            data = imagecodecs.ljpeg_encode(raw)
            tif.write(
                iter([data]),
                shape=raw.shape,
                dtype=np.uint16,
                rowsperstrip=raw.shape[0],
                compression=7,
                bitspersample=16,
                **common,
            )
        else:
            tif.write(raw, rowsperstrip=raw.shape[0], compression=None, **common)
    if capture:
        _append_exif_ifd(path, [t for t in capture if t[0] != DATETIME])


def _capture_tags(datetime, exposure_time, f_number, iso, focal_length, lens) -> list[tuple]:
    """(code, type, count, value) of the capture tags that were given."""
    out: list[tuple] = []
    if exposure_time is not None:
        out.append((EXPOSURE_TIME, RATIONAL, 1, _rationals([exposure_time])))
    if f_number is not None:
        out.append((F_NUMBER, RATIONAL, 1, _rationals([f_number], denominator=100)))
    if iso is not None:
        out.append((ISO_SPEED_RATINGS, SHORT, 1, (max(0, min(int(round(iso)), 65535)),)))
    if datetime is not None:
        out.append((DATETIME, ASCII, None, datetime))
        out.append((DATETIME_ORIGINAL, ASCII, None, datetime))
    if focal_length is not None:
        out.append((FOCAL_LENGTH, RATIONAL, 1, _rationals([focal_length], denominator=100)))
    if lens is not None:
        out.append((LENS_MODEL, ASCII, None, lens))
    return out


def _append_exif_ifd(path, entries: list[tuple]) -> None:
    """Append an EXIF IFD holding ``entries`` to a little-endian TIFF written by tifffile and
    turn IFD0's placeholder tag into an ExifIFD tag pointing at it."""
    fields = [(EXIF_VERSION, UNDEFINED, 4, b"0230")]
    for code, dtype, _count, value in entries:
        if dtype == ASCII:
            data = value.encode("ascii") + b"\x00"
            fields.append((code, ASCII, len(data), data))
        elif dtype == SHORT:
            fields.append((code, SHORT, len(value), struct.pack(f"<{len(value)}H", *value)))
        else:  # RATIONAL
            fields.append((code, dtype, len(value) // 2, struct.pack(f"<{len(value)}I", *value)))
    fields.sort(key=lambda f: f[0])

    def pack(start: int) -> bytes:
        data_at = start + 2 + 12 * len(fields) + 4
        head = [struct.pack("<H", len(fields))]
        blob = b""
        for code, dtype, count, payload in fields:
            if len(payload) <= 4:
                head.append(struct.pack("<HHI", code, dtype, count) + payload.ljust(4, b"\x00"))
            else:
                head.append(struct.pack("<HHII", code, dtype, count, data_at + len(blob)))
                blob += payload + b"\x00" * (len(payload) % 2)
        head.append(struct.pack("<I", 0))
        return b"".join(head) + blob

    with open(path, "r+b") as fh:
        link_exif_ifd(fh, path, pack)


def link_exif_ifd(fh, path, pack: Callable[[int], bytes]) -> None:
    """Append an EXIF IFD to the little-endian TIFF open for writing as ``fh`` (named ``path``,
    flushed) and turn IFD0's :data:`EXIF_IFD_PLACEHOLDER` tag into an ExifIFD tag pointing at it.
    ``pack(start)`` returns the IFD's bytes for file offset ``start``. tifffile refuses to write
    ExifIFD itself, hence the placeholder."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        placeholder = tif.pages[0].tags[EXIF_IFD_PLACEHOLDER]
        entry_offset, valueoffset = placeholder.offset, placeholder.valueoffset
    fh.seek(0, 2)
    start = fh.tell() + (fh.tell() % 2)
    fh.seek(start)
    fh.write(pack(start))
    fh.seek(entry_offset)
    fh.write(struct.pack("<H", EXIF_IFD))
    fh.seek(valueoffset)
    fh.write(struct.pack("<I", start))


def open_tiff(path):
    """tifffile's TiffFile for ``path``, or None where tifffile cannot parse it: not TIFF-based,
    or damaged beyond its own checks (its parser raises TypeError, KeyError and the like on some
    damaged tags: a SamplesPerPixel of two values, say). The tag readers below then give None,
    and LibRaw's view of the file stands."""
    import tifffile

    try:
        return tifffile.TiffFile(Path(path))
    except Exception:  # noqa: BLE001 - any parse failure means "no TIFF structure to read"
        return None


def read_dng_cfa_tags(path) -> tuple[tuple[int, int], np.ndarray] | None:
    """The raw IFD's CFARepeatPatternDim and CFAPattern (colours 0=R, 1=G, 2=B), or None.

    Looks at every IFD and its SubIFDs for NewSubfileType 0 with PhotometricInterpretation CFA.
    Returns None for files that are not TIFF-based or carry no such IFD/tags. CFAPattern entries
    are mapped through CFAPlaneColor when the file has one.
    """
    tif = open_tiff(path)
    if tif is None:
        return None
    with tif:
        for page in _raw_cfa_pages(tif):
            tags = page.tags
            if CFA_REPEAT_PATTERN_DIM not in tags or CFA_PATTERN not in tags:
                continue
            rows, cols = tag_integers(tags, CFA_REPEAT_PATTERN_DIM, count=2)
            values = np.asarray(tag_integers(tags, CFA_PATTERN, types=INTEGER_TYPES), np.int64)
            if rows < 1 or cols < 1 or values.size < rows * cols:
                continue
            pattern = values[: rows * cols].reshape(rows, cols)
            plane = tag_integers(tags, CFA_PLANE_COLOR, types=INTEGER_TYPES)
            if plane is not None and pattern.max() < len(plane):
                pattern = np.asarray(plane, np.int64)[pattern]
            return (rows, cols), pattern
    return None


def dng_data_problem(path) -> str | None:
    """Why a DNG's CFA image cannot hold the pixels its size tags promise, or None.

    LibRaw trusts ImageWidth/ImageLength and fills what the data do not cover with zeros, so a
    damaged size tag becomes a huge, mostly black mosaic. The raw IFD must have one strip or tile
    per segment of the image and, uncompressed, enough bytes for every pixel. Files that are not
    DNGs, or that tifffile cannot parse, are left to LibRaw (None).
    """
    import logging

    import tifffile

    log = logging.getLogger("tifffile")
    level, log.level = log.level, logging.CRITICAL  # its warnings on bad counts: we say it in one line
    try:
        with tifffile.TiffFile(Path(path)) as tif:
            if DNG_VERSION not in tif.pages[0].tags:
                return None
            for page in _raw_cfa_pages(tif):
                return _segment_problem(page.tags, Path(path).stat().st_size)
    except DamagedTagError as exc:  # a tag that says where the mosaic is, damaged
        return str(exc)
    except Exception:  # not TIFF-based, or damaged beyond tifffile: LibRaw decides
        return None
    finally:
        log.level = level
    return None


def _segment_problem(tags, file_size: int) -> str | None:
    """The checks of :func:`dng_data_problem` on one CFA IFD. Byte counts are not trusted (LibRaw
    does not need them): only where the pixels must lie is compared with the file's length."""

    def values(code: int) -> list[int]:
        tag = tags.get(code)
        return [int(v) for v in np.ravel(tag.value)] if tag is not None else []

    width, height = (values(256) or [0])[0], (values(257) or [0])[0]
    size = f"its size tags say {width} x {height} pixels"
    if width < 1 or height < 1:
        return f"damaged RAW data: the image has no size ({size})"
    bits = (values(258) or [16])[0] * (values(277) or [1])[0]
    if 322 in tags and 323 in tags:  # TileWidth, TileLength
        tile_w, tile_h = values(322)[0], values(323)[0]
        if tile_w < 1 or tile_h < 1:
            return f"damaged RAW data: the image's tiles have no size ({tile_w} x {tile_h})"
        segments = -(-width // tile_w) * -(-height // tile_h)
        offsets, unit, kind = values(324), f"{tile_w} x {tile_h} tiles", "tiles"
        segment_bytes = [-(-tile_w * bits // 8) * tile_h] * segments
    else:
        rows = (values(278) or [height])[0] or height
        segments = -(-height // rows)
        offsets, unit, kind = values(273), f"strips of {rows} rows", "strips"
        segment_bytes = [-(-width * bits // 8) * min(rows, height - i * rows) for i in range(segments)]
    if len(offsets) != segments:
        return (f"damaged RAW data: {size}, which takes {segments} {unit}, but the file has "
                f"{len(offsets)}; copy the file again from the card")
    uncompressed = (values(259) or [1])[0] == 1
    ends = [o + (n if uncompressed else 1) for o, n in zip(offsets, segment_bytes)]
    missing = sum(end > file_size for end in ends)
    if missing:
        return (f"damaged or truncated RAW data ({missing} of {segments} {kind} of the image "
                "lie past the end of the file); copy the file again from the card")
    return None


def _raw_cfa_pages(tif):
    """The IFDs that hold the raw mosaic: full resolution (NewSubfileType 0 or absent) and
    PhotometricInterpretation CFA."""
    for page in _all_pages(tif):
        sub = tag_integers(page.tags, NEW_SUBFILE_TYPE, count=1)
        photometric = tag_integers(page.tags, 262, count=1)
        if (sub is None or sub == [0]) and photometric == [PHOTOMETRIC_CFA]:
            yield page


def _all_pages(tif):
    """Every IFD of the file, each followed by its SubIFDs (recursively)."""

    def walk(pages):
        for page in pages:
            yield page
            try:
                subs = page.pages
            except Exception:  # a broken SubIFD chain: skip it
                subs = None
            if subs:
                yield from walk(subs)

    yield from walk(tif.pages)


@dataclass(frozen=True)
class ColourProfile:
    """A camera's colour as DNG describes it: per calibration illuminant (EXIF LightSource code)
    the ColorMatrix (XYZ -> camera) and, where the source had them, the ForwardMatrix."""

    illuminants: tuple[int, ...]
    color_matrices: tuple[np.ndarray, ...]
    forward_matrices: tuple[np.ndarray, ...] = ()  # none, or one per illuminant
    camera: str | None = None  # the source DNG's UniqueCameraModel, which editors key profiles on


def _matrix(tag) -> np.ndarray | None:
    """A 3x3 matrix tag's values (RATIONAL pairs divided out), or None when it is not 3x3."""
    values = np.asarray(tag.value, np.float64).ravel()
    if values.size == 18:  # (numerator, denominator) pairs
        values = values[0::2] / np.where(values[1::2] == 0, 1, values[1::2])
    return values.reshape(3, 3) if values.size == 9 else None


def read_dng_colour_profile(path) -> ColourProfile | None:
    """ColorMatrix1/2 with their CalibrationIlluminant1/2 (0 when absent) and ForwardMatrix1/2 of
    a DNG, or None for files that are not TIFF-based or carry no 3-colour ColorMatrix."""
    tif = open_tiff(path)
    if tif is None:
        return None
    with tif:
        for page in _all_pages(tif):
            tags = page.tags
            illuminants, matrices, forwards = [], [], []
            for matrix_code, illuminant_code, forward_code in (
                (COLOR_MATRIX_1, CALIBRATION_ILLUMINANT_1, FORWARD_MATRIX_1),
                (COLOR_MATRIX_2, CALIBRATION_ILLUMINANT_2, FORWARD_MATRIX_2),
            ):
                tag = tags.get(matrix_code)
                matrix = _matrix(tag) if tag is not None else None
                if matrix is None:
                    continue
                ill, fwd = tag_integers(tags, illuminant_code, count=1), tags.get(forward_code)
                illuminants.append(ill[0] if ill is not None else 0)
                matrices.append(matrix)
                forwards.append(_matrix(fwd) if fwd is not None else None)
            if matrices:
                complete = all(f is not None for f in forwards)
                unique = tif.pages[0].tags.get(UNIQUE_CAMERA_MODEL)
                camera = str(unique.value).strip() or None if unique is not None else None
                return ColourProfile(tuple(illuminants), tuple(matrices), tuple(forwards) if complete else (), camera)
    return None


def read_dng_color_matrices(path) -> list[tuple[int, np.ndarray]]:
    """[(CalibrationIlluminant, 3x3 XYZ -> camera ColorMatrix), ...] of a DNG (ColorMatrix1, 2);
    empty for files that are not TIFF-based or carry none. Only 3-colour matrices are returned."""
    profile = read_dng_colour_profile(path)
    return [] if profile is None else list(zip(profile.illuminants, profile.color_matrices))


def read_dng_noise_profile(path) -> tuple[float, float] | None:
    """(S, O) of a DNG's NoiseProfile (variance = S x + O; the mean over the CFA planes when it
    gives one pair per plane), or None: no such tag, not TIFF-based, or values that are not a
    noise model (negative or not finite)."""
    tif = open_tiff(path)
    if tif is None:
        return None
    with tif:
        for page in _all_pages(tif):
            tag = page.tags.get(NOISE_PROFILE)
            if tag is None:
                continue
            try:
                values = np.asarray(tag.value, np.float64).ravel()
            except (TypeError, ValueError):
                return None
            if values.size < 2 or values.size % 2 or not np.all(np.isfinite(values)) or np.any(values < 0):
                return None
            pairs = values.reshape(-1, 2)
            return float(pairs[:, 0].mean()), float(pairs[:, 1].mean())
    return None
