"""Shared fixtures: tiny real ONNX models, a DNG writer with sensible defaults, damaged copies of
its files, the real samples."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import bilinear_onnx, mean_attention_onnx

# ../shared/samples beside the checkout (see its README); absent on a user's machine.
SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "samples"
RAW_SAMPLES = SAMPLES / "raw"

# Canon EOS 5D Mark II, XYZ (D65) -> camera (as in test_dng).
XYZ_TO_CAM = np.array([[0.4716, 0.0603, -0.083], [-0.7798, 1.5474, 0.248], [-0.1496, 0.1937, 0.6651]])
WB = np.array([2.1, 1.0, 1.7])


@pytest.fixture(scope="session")
def bilinear_model(tmp_path_factory) -> Path:
    """A real bilinear demosaic ONNX file (contract: RGGB packing, output_space linear)."""
    return bilinear_onnx(tmp_path_factory.mktemp("models") / "bilinear.onnx")


@pytest.fixture(scope="session")
def mean_model(tmp_path_factory) -> Path:
    """Bilinear scaled by (0.5 + the tile's mean): its output depends on the whole tile."""
    return mean_attention_onnx(tmp_path_factory.mktemp("models") / "mean_attention.onnx")


@pytest.fixture(scope="session")
def bilinear_session(bilinear_model):
    from rawdev.session import open_session

    return open_session(bilinear_model, "cpu", threads=1)


@pytest.fixture(scope="session")
def mean_session(mean_model):
    from rawdev.session import open_session

    return open_session(mean_model, "cpu", threads=1)


def random_mosaic(h: int, w: int, seed: int = 0, low: int = 300, high: int = 4000) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (h, w)).astype(np.uint16)


def write_test_dng(path: Path, raw: np.ndarray, cfa: str, **kw) -> Path:
    """rawdev.dng.write_dng with test defaults (black 256, white 4095, the 5D II matrix, WB)."""
    from rawdev.cfa import parse_cfa
    from rawdev.dng import write_dng

    args = dict(black=256, white=4095, xyz_to_cam=XYZ_TO_CAM, wb_gains=WB)
    args.update(kw)
    write_dng(path, raw, parse_cfa(cfa), **args)
    return path


@pytest.fixture
def raw_samples() -> Path:
    """The real sample RAW files; the test is skipped where the shared folder is absent."""
    if not RAW_SAMPLES.is_dir():
        pytest.skip(f"real RAW samples not available ({RAW_SAMPLES} is absent)")
    return RAW_SAMPLES


def raw_ifd_entry(source: Path, tag: int):
    """The tifffile entry of ``tag`` in the CFA IFD of a DNG (its offsets say where to damage it)."""
    import tifffile

    from rawdev.dng import _all_pages

    with tifffile.TiffFile(source) as tif:
        page = next(p for p in _all_pages(tif) if p.tags.get(262) and int(p.tags[262].value) == 32803)
        return page.tags[tag]


def retype_raw_ifd(source: Path, target: Path, tag: int, dtype: int | None = None, count: int | None = None) -> None:
    """Copy ``source`` with the type or the count of one entry of its CFA IFD changed, as one
    flipped bit does (SHORT 3 -> UNDEFINED 7, a count of 1 -> 2)."""
    data = bytearray(source.read_bytes())
    entry = raw_ifd_entry(source, tag)
    if dtype is not None:
        struct.pack_into("<H", data, entry.offset + 2, dtype)
    if count is not None:
        struct.pack_into("<I", data, entry.offset + 4, count)
    target.write_bytes(data)
