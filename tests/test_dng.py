"""rawdev.dng: DNGs written here read back through rawpy (LibRaw) exactly."""

from __future__ import annotations

import numpy as np
import pytest

rawpy = pytest.importorskip("rawpy")

from rawdev.cfa import cfa_from_libraw, parse_cfa  # noqa: E402
from rawdev.color import cam_to_srgb_matrix  # noqa: E402
from rawdev.dng import read_dng_cfa_tags, read_dng_color_matrices, write_dng  # noqa: E402

# Canon EOS 5D Mark II, XYZ (D65) -> camera (first entry of rawdev/train/camera_matrices.json).
XYZ_TO_CAM = np.array([[0.4716, 0.0603, -0.083], [-0.7798, 1.5474, 0.248], [-0.1496, 0.1937, 0.6651]])
WB = np.array([2.1, 1.0, 1.7])
SIZES = [(48, 64), (47, 63)]
LETTER = {0: "R", 1: "G", 2: "B"}
# TIFF Orientation -> LibRaw sizes.flip
FLIP = {1: 0, 2: 1, 3: 3, 4: 2, 5: 4, 6: 6, 7: 7, 8: 5}


def _mosaic(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, (h, w)).astype(np.uint16)


def _write(path, raw, cfa_name, **kw):
    args = dict(black=256, white=4095, xyz_to_cam=XYZ_TO_CAM, wb_gains=WB)
    args.update(kw)
    write_dng(path, raw, parse_cfa(cfa_name), **args)


def _colour_pattern(r) -> np.ndarray:
    """rawpy's 2x2 pattern as colours 0=R, 1=G, 2=B."""
    desc = r.color_desc.decode()
    return np.array([["RGB".index(desc[i]) for i in row] for row in r.raw_pattern])


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "ljpeg"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("name", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_bayer_roundtrip(tmp_path, name, size, compress):
    raw = _mosaic(*size)
    path = tmp_path / f"{name}.dng"
    _write(path, raw, name, orientation=6, compress=compress)
    with rawpy.imread(str(path)) as r:
        vis = r.raw_image_visible
        assert vis.shape == raw.shape
        np.testing.assert_array_equal(vis, raw)
        expected = parse_cfa(name).array
        np.testing.assert_array_equal(_colour_pattern(r), expected)
        assert cfa_from_libraw(r.raw_pattern, r.color_desc) == parse_cfa(name)
        assert list(r.black_level_per_channel) == [256, 256, 256, 256]
        assert r.white_level == 4095
        wb = np.asarray(r.camera_whitebalance[:3], np.float64)
        assert wb[0] / wb[1] == pytest.approx(WB[0] / WB[1], rel=0.01)
        assert wb[2] / wb[1] == pytest.approx(WB[2] / WB[1], rel=0.01)
        # LibRaw 0.22 leaves rgb_xyz_matrix zero for DNGs and puts the ColorMatrix, turned into
        # camera -> sRGB, in color_matrix; accept a filled rgb_xyz_matrix from a newer LibRaw.
        cam_xyz = np.asarray(r.rgb_xyz_matrix[:3])
        if np.any(cam_xyz):
            np.testing.assert_allclose(cam_xyz, XYZ_TO_CAM, atol=1e-3)
        np.testing.assert_allclose(r.color_matrix[:3, :3], cam_to_srgb_matrix(XYZ_TO_CAM), atol=1e-3)
        assert r.sizes.flip == FLIP[6]
    (rows, cols), pattern = read_dng_cfa_tags(path)
    assert (rows, cols) == (2, 2)
    np.testing.assert_array_equal(pattern, parse_cfa(name).array)
    [(illuminant, matrix)] = read_dng_color_matrices(path)
    assert illuminant == 21
    np.testing.assert_allclose(matrix, XYZ_TO_CAM, atol=1e-4)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_quad_roundtrip(tmp_path, size):
    raw = _mosaic(*size, seed=1)
    path = tmp_path / "quad.dng"
    _write(path, raw, "quad-RGGB")
    with rawpy.imread(str(path)) as r:
        np.testing.assert_array_equal(r.raw_image_visible, raw)
        # What LibRaw 0.22 (rawpy 0.28) makes of the 4x4 CFAPattern RRGG/RRGG/GGBB/GGBB:
        # raw_pattern [[0, 0], [1, 1]] with color_desc b'RGBG', i.e. "RR/GG" -- rows of R and
        # rows of G, no B at all: the pattern cannot be taken from LibRaw for Quad-Bayer DNGs.
        assert r.raw_pattern.shape == (2, 2)
        assert _colour_pattern(r).tolist() == [[0, 0], [1, 1]]
        assert list(r.black_level_per_channel) == [256, 256, 256, 256]
        assert r.white_level == 4095
        wb = np.asarray(r.camera_whitebalance[:3], np.float64)
        assert wb[0] / wb[1] == pytest.approx(WB[0] / WB[1], rel=0.01)
        assert wb[2] / wb[1] == pytest.approx(WB[2] / WB[1], rel=0.01)
        np.testing.assert_allclose(r.color_matrix[:3, :3], cam_to_srgb_matrix(XYZ_TO_CAM), atol=1e-3)
        assert r.sizes.flip == 0
    (rows, cols), pattern = read_dng_cfa_tags(path)
    assert (rows, cols) == (4, 4)
    np.testing.assert_array_equal(pattern, parse_cfa("quad-RGGB").array)
    assert pattern.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 2, 2], [1, 1, 2, 2]]


def test_orientations(tmp_path):
    raw = _mosaic(24, 32)
    for orientation, flip in FLIP.items():
        path = tmp_path / f"o{orientation}.dng"
        _write(path, raw, "RGGB", orientation=orientation)
        with rawpy.imread(str(path)) as r:
            assert r.sizes.flip == flip, orientation


def test_per_channel_black(tmp_path):
    raw = _mosaic(32, 32)
    path = tmp_path / "black.dng"
    _write(path, raw, "GBRG", black=[100, 200, 300])  # per colour R, G, B
    with rawpy.imread(str(path)) as r:
        assert list(r.black_level_per_channel) == [100, 200, 300, 200]  # R, G, B, G2
    _write(path, raw, "RGGB", black=[100, 110, 120, 130])  # per 2x2 position, row-major
    with rawpy.imread(str(path)) as r:
        assert list(r.black_level_per_channel) == [100, 110, 130, 120]


def test_capture_metadata(tmp_path):
    path = tmp_path / "meta.dng"
    _write(
        path,
        _mosaic(32, 32),
        "RGGB",
        make="Acme",
        model="Cam 1",
        datetime="2024:05:06 07:08:09",
        exposure_time=1 / 125,
        f_number=2.8,
        iso=400,
        focal_length=35.0,
        lens="Acme 35mm F2.8",
    )
    with rawpy.imread(str(path)) as r:
        assert r.other.iso_speed == 400
        assert r.other.shutter_speed == pytest.approx(1 / 125)
        assert r.other.aperture == pytest.approx(2.8)
        assert r.other.focal_length == pytest.approx(35.0)
        assert r.other.timestamp.isoformat() == "2024-05-06T07:08:09"
        assert r.lens.model == "Acme 35mm F2.8"
    import tifffile

    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        assert tags["Make"].value == "Acme"
        assert tags["Model"].value == "Cam 1"
        assert tags["UniqueCameraModel"].value == "Acme Cam 1"
        assert tags["ISOSpeedRatings"].value == 400
        assert tags["ExifTag"].value["ISOSpeedRatings"] == 400
        assert tags["DNGVersion"].value == b"\x01\x04\x00\x00"
        assert tags["AsShotNeutral"].value[:2] == (10, 21)


def test_read_cfa_tags_not_dng(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    assert read_dng_cfa_tags(png) is None
    assert read_dng_color_matrices(png) == []
    import tifffile

    tif = tmp_path / "rgb.tif"
    tifffile.imwrite(tif, np.zeros((4, 4, 3), np.uint8))
    assert read_dng_cfa_tags(tif) is None


def test_read_cfa_tags_in_subifd(tmp_path):
    """A DNG laid out as IFD0 thumbnail + raw SubIFD (what cameras write)."""
    import tifffile

    path = tmp_path / "sub.dng"
    raw = _mosaic(8, 8)
    quad = bytes(int(v) for v in parse_cfa("quad-GRBG").array.ravel())
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((4, 4, 3), np.uint8), subfiletype=1, subifds=1, metadata=None)
        tif.write(
            raw,
            photometric=32803,
            subfiletype=0,
            metadata=None,
            extratags=[(33421, 3, 2, (4, 4), True), (33422, 1, 16, quad, True)],
        )
    (rows, cols), pattern = read_dng_cfa_tags(path)
    assert (rows, cols) == (4, 4)
    np.testing.assert_array_equal(pattern, parse_cfa("quad-GRBG").array)


def test_libraw_minimum_size(tmp_path):
    """LibRaw refuses images under 22 pixels on a side; the writer itself does not."""
    path = tmp_path / "tiny.dng"
    _write(path, _mosaic(8, 10), "RGGB")
    assert read_dng_cfa_tags(path)[0] == (2, 2)
    with pytest.raises(rawpy.LibRawFileUnsupportedError):
        rawpy.imread(str(path))


def test_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        _write(tmp_path / "a.dng", np.zeros((4, 4, 3), np.uint16), "RGGB")
    with pytest.raises(ValueError):
        _write(tmp_path / "b.dng", _mosaic(4, 4), "RGGB", black=[1, 2])
    with pytest.raises(ValueError):
        _write(tmp_path / "c.dng", _mosaic(4, 4), "RGGB", wb_gains=(0, 1, 1))
