"""LinearRaw DNG output (``rawdev develop --format dng``): the network's demosaicked, denoised
linear camera RGB, white balance undone, for a photographer's own raw editor (Lightroom,
darktable, RawTherapee), which then applies its own white balance, colour and tone.

Layout, as Adobe's DNG Converter writes linear DNGs:

- IFD 0: a small sRGB preview (NewSubfileType 1, 8-bit RGB, at most :data:`PREVIEW_SIZE` pixels
  on its long side, rendered as rawdev's TIFF would be) with the DNG tags: DNGVersion 1.4,
  DNGBackwardVersion 1.1, UniqueCameraModel (a DNG source's own, so that an editor finds the
  camera's profiles: the data are in the camera's colour space), Make, Model, Orientation (the pixels are stored as
  the sensor saw them), ColorMatrix1/2 and CalibrationIlluminant1/2 (and ForwardMatrix1/2) copied
  from a DNG source or LibRaw's matrix for D65, AsShotNeutral = 1 / the white-balance gains,
  BaselineExposure = rawdev's exposure (the auto exposure or ``--exposure``), an EXIF IFD with
  the capture data.
- Its SubIFD: the image (NewSubfileType 0, PhotometricInterpretation LinearRaw, 3 x 16 bits),
  BlackLevel 0, WhiteLevel 65535 (= the sensor's white), DefaultCropOrigin/Size = the whole image.

The image is stored uncompressed: rawpy 0.28 (LibRaw 0.22, built with its deflate codec) refuses
Adobe Deflate (Compression 8) on integer data ("Corrupted data or unexpected EOF"), and
darktable 4.2 cannot open it either (both measured on this project's machine, 2026-12).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rawdev import dng
from rawdev.color import Rendering, render_to_int
from rawdev.dng import ColourProfile
from rawdev.output import STRIP_BYTES, CaptureInfo, _atomic_write, _capture_entries, _pack_ifd, _software

PREVIEW_SIZE = 256  # long side of IFD 0's preview, as Adobe's converter writes its thumbnail
PHOTOMETRIC_LINEAR_RAW = 34892
PREVIEW_COLOR_SPACE = 50970
PREVIEW_SRGB = 2
BASELINE_EXPOSURE = 50730
SUB_IFDS = 330
DEFAULT_CROP_ORIGIN = 50719
DEFAULT_CROP_SIZE = 50720
WHITE = 65535
NO_PROFILE = ("no colour matrix in the file (a camera LibRaw does not know, or a mosaic PNG): "
              "a DNG without one opens in false colours; develop it with --format tiff")


class DngOutputError(ValueError):
    """A developed image that cannot become a faithful DNG (the message says why)."""


@dataclass
class LinearImage:
    """What a LinearRaw DNG holds: camera RGB and how to interpret and render it."""

    pixels: np.ndarray  # (H, W, 3) uint16 camera RGB, white balance undone; 0 = black, 65535 = white
    gains: np.ndarray  # the R, G, B white-balance gains the pipeline applied (G = 1)
    exposure_ev: float
    rendering: Rendering  # white-balanced camera RGB -> sRGB, as rawdev renders it (for the preview)
    profile: ColourProfile


def dng_problem(profile: ColourProfile | None) -> str | None:
    """Why a mosaic with this colour profile cannot become a DNG, or None."""
    return NO_PROFILE if profile is None or not profile.color_matrices else None


def preview(image: LinearImage, size: int = PREVIEW_SIZE) -> np.ndarray:
    """A uint8 sRGB thumbnail of at most ``size`` pixels on the long side, area-averaged in linear
    light and rendered with rawdev's white balance, matrix, exposure and look."""
    h, w = image.pixels.shape[:2]
    k = min(max(1, -(-max(h, w) // size)), h, w)
    rows, cols = h // k * k, w // k * k
    small = np.zeros((rows // k, cols // k, 3), np.float32)
    for dy in range(k):  # k * k strided sums: no full-size float copy of the image
        for dx in range(k):
            small += image.pixels[dy:rows:k, dx:cols:k]
    small *= (np.asarray(image.gains, np.float64) / (WHITE * k * k)).astype(np.float32)
    return render_to_int(np.ascontiguousarray(small), image.rendering, 255)


def _srationals(values) -> tuple[int, ...]:
    return dng._rationals(values, signed=True, denominator=10000)


def _ifd0_tags(image: LinearImage, info: CaptureInfo) -> list[tuple]:
    """tifffile extratags of IFD 0: capture, DNG and colour tags, and the EXIF IFD placeholder."""
    entries, _ = _capture_entries(info)
    tags = [(code, typ, 1, value, True) for code, typ, value in entries if code not in (dng.ORIENTATION, 305)]
    make, model = (info.make or "").strip(), (info.model or "").strip()
    named = model if make and model.lower().startswith(make.lower()) else " ".join(v for v in (make, model) if v)
    unique = image.profile.camera or named or "rawdev"
    gains = np.asarray(image.gains, np.float64)
    neutral = (1.0 / gains) / (1.0 / gains[1])
    tags += [
        (dng.ORIENTATION, dng.SHORT, 1, int(info.orientation or 1), True),
        (dng.DNG_VERSION, dng.BYTE, 4, b"\x01\x04\x00\x00", True),
        (dng.DNG_BACKWARD_VERSION, dng.BYTE, 4, b"\x01\x01\x00\x00", True),
        (dng.UNIQUE_CAMERA_MODEL, dng.ASCII, None, unique, True),
        (dng.AS_SHOT_NEUTRAL, dng.RATIONAL, 3, dng._rationals(neutral), True),
        (BASELINE_EXPOSURE, dng.SRATIONAL, 1, _srationals([image.exposure_ev]), True),
        (PREVIEW_COLOR_SPACE, dng.LONG, 1, PREVIEW_SRGB, True),
        (dng.EXIF_IFD_PLACEHOLDER, dng.LONG, 1, 0, True),
    ]
    profile = image.profile
    matrix_codes = (dng.COLOR_MATRIX_1, dng.COLOR_MATRIX_2)
    illuminant_codes = (dng.CALIBRATION_ILLUMINANT_1, dng.CALIBRATION_ILLUMINANT_2)
    forward_codes = (dng.FORWARD_MATRIX_1, dng.FORWARD_MATRIX_2)
    for i, (illuminant, matrix) in enumerate(zip(profile.illuminants[:2], profile.color_matrices[:2])):
        tags.append((matrix_codes[i], dng.SRATIONAL, 9, _srationals(matrix), True))
        tags.append((illuminant_codes[i], dng.SHORT, 1, int(illuminant), True))
        if profile.forward_matrices:
            tags.append((forward_codes[i], dng.SRATIONAL, 9, _srationals(profile.forward_matrices[i]), True))
    return tags


def _raw_tags(width: int, height: int) -> list[tuple]:
    """tifffile extratags of the LinearRaw SubIFD."""
    return [
        (dng.BLACK_LEVEL, dng.SHORT, 3, (0, 0, 0), True),
        (dng.WHITE_LEVEL, dng.LONG, 3, (WHITE,) * 3, True),
        (DEFAULT_CROP_ORIGIN, dng.LONG, 2, (0, 0), True),
        (DEFAULT_CROP_SIZE, dng.LONG, 2, (width, height), True),
    ]


def _write(fh: BinaryIO, image: LinearImage, info: CaptureInfo) -> None:
    import tifffile

    pixels = np.ascontiguousarray(image.pixels)
    height, width = pixels.shape[:2]
    if pixels.nbytes > 2**32 - 2**26:
        raise DngOutputError(f"{width} x {height} pixels do not fit a classic TIFF/DNG (4 GB)")
    with tifffile.TiffWriter(fh, byteorder="<", bigtiff=False) as tif:
        tif.write(preview(image), photometric="rgb", planarconfig="contig", subfiletype=1, subifds=1,
                  software=_software(), metadata=None, extratags=_ifd0_tags(image, info))
        tif.write(pixels, photometric=PHOTOMETRIC_LINEAR_RAW, planarconfig="contig", subfiletype=0,
                  compression=None, rowsperstrip=max(1, min(height, STRIP_BYTES // (width * 6))),
                  software=False, metadata=None, extratags=_raw_tags(width, height))
    fh.flush()
    _subifds_as_long(fh)
    _, exif = _capture_entries(info)
    exif = [*exif, (36864, 7, b"0232")]  # ExifVersion, mandatory in the EXIF IFD
    dng.link_exif_ifd(fh, fh.name, lambda start: _pack_ifd(exif, start))


def _subifds_as_long(fh: BinaryIO) -> None:
    """Retype IFD 0's SubIFDs entry from IFD (13, what tifffile writes) to LONG, the type the DNG
    specification gives (exiftool -validate warns about the other)."""
    import tifffile

    with tifffile.TiffFile(fh.name) as tif:
        entry = tif.pages[0].tags[SUB_IFDS].offset
    fh.seek(entry + 2)
    fh.write(struct.pack("<H", dng.LONG))
    fh.flush()


def write_linear_dng(path: Path, image: LinearImage, info: CaptureInfo | None = None) -> None:
    """Write ``image`` as a LinearRaw DNG at ``path``, atomically (see rawdev.output)."""
    pixels = np.asarray(image.pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint16 or 0 in pixels.shape:
        raise DngOutputError(f"expected (H, W, 3) uint16 camera RGB, got {pixels.shape} {pixels.dtype}")
    if (problem := dng_problem(image.profile)) is not None:
        raise DngOutputError(problem)
    _atomic_write(Path(path), lambda fh: _write(fh, image, info or CaptureInfo()))
