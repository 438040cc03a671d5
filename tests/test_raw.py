"""rawdev.raw: RAW files in, Mosaics out (or one clear RawReadError)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

rawpy = pytest.importorskip("rawpy")

from conftest import WB, XYZ_TO_CAM, random_mosaic, raw_ifd_entry, retype_raw_ifd, write_test_dng  # noqa: E402

from rawdev.cfa import CFA, parse_cfa  # noqa: E402
from rawdev.color import cam_to_srgb_matrix  # noqa: E402
from rawdev.dng import write_dng  # noqa: E402
from rawdev.raw import MAI_WHITE, RawReadError, read_mosaic  # noqa: E402

X_TRANS = ((1, 1, 0, 1, 1, 2), (1, 1, 2, 1, 1, 0), (2, 0, 1, 0, 2, 1),
           (1, 1, 2, 1, 1, 0), (1, 1, 0, 1, 1, 2), (0, 2, 1, 2, 0, 1))
CAPTURE = dict(make="Acme", model="Pixel X", iso=400, exposure_time=1 / 125, f_number=2.8, orientation=6,
               datetime="2024:05:06 07:08:09", lens="Acme 50mm", focal_length=50.0)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("size", [(48, 64), (47, 63)], ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("name", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_bayer_dng_reads_back_with_its_cfa_levels_colour_and_capture_info(tmp_path, name, size):
    raw = random_mosaic(*size)
    path = write_test_dng(tmp_path / f"{name}.dng", raw, name, black=[256, 260, 264], **CAPTURE)
    before = sha(path)
    m = read_mosaic(path)
    assert m.cfa == parse_cfa(name)
    np.testing.assert_array_equal(m.data, raw)
    # per-site black levels follow the pattern: R 256, G 260, B 264
    np.testing.assert_array_equal(m.black, np.array([256.0, 260.0, 264.0])[parse_cfa(name).array])
    assert m.white == 4095
    np.testing.assert_allclose(m.wb_camera, WB / WB[1], rtol=1e-3)
    assert m.wb_camera[1] == 1.0
    np.testing.assert_allclose(m.cam_to_srgb, cam_to_srgb_matrix(XYZ_TO_CAM), atol=1e-3)
    info = m.info
    assert (info.make, info.model, info.iso, info.orientation) == ("Acme", "Pixel X", 400, 6)
    assert info.exposure_time == pytest.approx(1 / 125)
    assert info.f_number == pytest.approx(2.8)
    assert info.datetime == "2024:05:06 07:08:09"
    assert info.lens == "Acme 50mm"
    assert m.source == path and m.normalization == "black-white"
    assert sha(path) == before  # reading never modifies the file


@pytest.mark.parametrize("orientation", [1, 3, 8])
def test_orientation_is_read_as_exif(tmp_path, orientation):
    path = write_test_dng(tmp_path / "o.dng", random_mosaic(32, 40), "RGGB", orientation=orientation)
    assert read_mosaic(path).info.orientation == orientation


@pytest.mark.parametrize("name", ["quad-RGGB", "quad-GBRG"])
@pytest.mark.parametrize("size", [(48, 64), (45, 59)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_quad_dng_cfa_comes_from_the_dng_tags(tmp_path, name, size):
    raw = random_mosaic(*size, seed=4)
    path = write_test_dng(tmp_path / "quad.dng", raw, name, black=[256, 260, 264])
    with rawpy.imread(str(path)) as r:  # LibRaw collapses the 4x4 pattern into a non-Bayer 2x2
        assert np.asarray(r.raw_pattern).shape == (2, 2)
    m = read_mosaic(path)
    assert m.cfa == parse_cfa(name) and m.cfa.kind == "quad"
    np.testing.assert_array_equal(m.data, raw)
    # LibRaw reports only the smallest level of the 4x4 repeat; the DNG's tags give them all
    np.testing.assert_array_equal(m.black, np.array([256.0, 260.0, 264.0])[parse_cfa(name).array])


def test_quad_dng_with_a_2x2_black_repeat_keeps_it_by_position(tmp_path):
    path = write_test_dng(tmp_path / "quad.dng", random_mosaic(40, 40), "quad-RGGB", black=[100, 200, 300, 400])
    m = read_mosaic(path)
    np.testing.assert_array_equal(m.black, np.tile([[100.0, 200.0], [300.0, 400.0]], (2, 2)))


def test_cfa_override_wins_over_the_file(tmp_path):
    # A phone that declares 2x2 RGGB for a 4x4 Quad-Bayer sensor: --cfa quad-RGGB fixes it.
    path = write_test_dng(tmp_path / "phone.dng", random_mosaic(48, 64), "RGGB", black=[256, 260, 264])
    m = read_mosaic(path, cfa_override=parse_cfa("quad-RGGB"))
    assert m.cfa == parse_cfa("quad-RGGB")
    assert m.black.shape == (4, 4)
    m = read_mosaic(path, cfa_override=parse_cfa("BGGR"))
    assert m.cfa == parse_cfa("BGGR")
    m = read_mosaic(path, black=100, white=4000)
    assert (m.black == 100).all() and m.white == 4000


def test_levels_that_leave_no_signal_are_refused(tmp_path):
    path = write_test_dng(tmp_path / "a.dng", random_mosaic(32, 32), "RGGB")
    with pytest.raises(RawReadError, match="white level 200 is not above the black level 256"):
        read_mosaic(path, white=200)


def test_png_mosaic_uses_the_mai_convention(tmp_path):
    import imagecodecs

    data = np.random.default_rng(5).integers(0, MAI_WHITE + 1, (30, 42)).astype(np.uint16)
    path = tmp_path / "mai.png"
    imagecodecs.imwrite(str(path), data)
    m = read_mosaic(path)
    np.testing.assert_array_equal(m.data, data)
    assert m.cfa == parse_cfa("RGGB")
    assert (m.black == 0).all() and m.white == 1020 and m.normalization == "mai"
    assert m.wb_camera is None and m.cam_to_srgb is None
    m = read_mosaic(path, cfa_override=parse_cfa("GBRG"), black=64, white=1023)
    assert m.cfa == parse_cfa("GBRG") and (m.black == 64).all() and m.white == 1023
    assert m.normalization == "black-white"


@pytest.mark.parametrize("kind,message", [("rgb16", "3 channels"), ("grey8", "16-bit")])
def test_png_that_is_not_a_mosaic_is_refused(tmp_path, kind, message):
    import imagecodecs

    data = np.zeros((8, 8, 3), np.uint16) if kind == "rgb16" else np.zeros((8, 8), np.uint8)
    path = tmp_path / f"{kind}.png"
    imagecodecs.imwrite(str(path), data)
    with pytest.raises(RawReadError, match=message):
        read_mosaic(path)


def test_missing_empty_and_folder_inputs(tmp_path):
    with pytest.raises(RawReadError, match="does not exist"):
        read_mosaic(tmp_path / "nope.dng")
    (tmp_path / "empty.dng").write_bytes(b"")
    with pytest.raises(RawReadError, match=r"empty file \(0 bytes\)"):
        read_mosaic(tmp_path / "empty.dng")
    with pytest.raises(RawReadError, match="folder"):
        read_mosaic(tmp_path)


def test_x_trans_is_refused_by_name(tmp_path):
    path = tmp_path / "xtrans.dng"
    write_dng(path, random_mosaic(48, 48), CFA(X_TRANS), black=256, white=4095, xyz_to_cam=XYZ_TO_CAM,
              wb_gains=WB)
    with rawpy.imread(str(path)) as r:  # LibRaw itself reads it as an X-Trans sensor
        assert np.asarray(r.raw_pattern).shape == (6, 6)
    with pytest.raises(RawReadError, match=r"^X-Trans sensor \(6x6 CFA\): a Bayer network cannot take it$"):
        read_mosaic(path)


def test_monochrome_dng_is_refused(tmp_path):
    import tifffile

    path = tmp_path / "mono.dng"
    tags = [(50706, 1, 4, b"\x01\x04\x00\x00", True), (50708, 2, None, "Mono", True),
            (50717, 4, 1, 4095, True), (50714, 4, 1, 256, True)]
    with tifffile.TiffWriter(path) as tif:
        tif.write(random_mosaic(32, 32), photometric=1, subfiletype=0, extratags=tags, metadata=None)
    # A monochrome DNG is LinearRaw with one sample, which tifffile will not write: patch the tag.
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].tags[262].valueoffset
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack("<H", 34892))
    with rawpy.imread(str(path)) as r:
        assert r.num_colors == 1
    with pytest.raises(RawReadError, match="monochrome sensor"):
        read_mosaic(path)


def test_real_bayer_sample_reads(raw_samples):
    m = read_mosaic(raw_samples / "imageio_Blackmagic.dng")
    assert m.cfa == parse_cfa("RGGB")
    assert m.data.shape == (2176, 4128)
    assert (m.black == 512).all() and m.white == 65535
    np.testing.assert_allclose(m.wb_camera, [2.206, 1.0, 1.887], atol=1e-3)
    assert m.info.model == "Blackmagic Pocket Cinema Camera 4K"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("corrupt/text_renamed.dng", r"^not a RAW file: LibRaw cannot read it"),
        ("corrupt/truncated_bmpcc4k.dng", r"^damaged or truncated RAW data .*copy the file again"),
        ("corrupt/exiv2_Canon-R6-pruned.CR3", r"^damaged or truncated RAW data"),
        ("photoprism_canon_eos_6d.dng", r"^linear DNG: the image is already demosaiced"),
        ("imageio_Nikon_uncompressed.nef", r"^3-colour pixels, not a colour filter mosaic \(an RGB scan"),
    ],
)
def test_real_bad_samples_fail_with_one_clear_line(raw_samples, name, expected):
    path = raw_samples / name
    with pytest.raises(RawReadError, match=expected) as info:
        read_mosaic(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 250
    assert "Traceback" not in message


def inflate_raw_ifd(source: Path, target: Path, tag: int, factor: int) -> None:
    """Copy ``source`` with one size tag of its CFA IFD multiplied (what a damaged file can say)."""
    data = bytearray(source.read_bytes())
    entry = raw_ifd_entry(source, tag)
    fmt = "<H" if entry.dtype == 3 else "<I"
    (old,) = struct.unpack_from(fmt, data, entry.valueoffset)
    struct.pack_into(fmt, data, entry.valueoffset, old * factor)
    target.write_bytes(data)


# What the fuzz run (benchmarks/fuzz.py -n 600 --seed 77) found as bare Python exceptions, e.g.
# "TypeError: int() argument must be ... not 'tuple'" and "ValueError: invalid literal for int()
# with base 10: b'#'" (PhotometricInterpretation 32803 = 0x8023 read as one UNDEFINED byte: '#').
@pytest.mark.parametrize("tag,change,expected", [
    (262, dict(dtype=7), "damaged DNG tag 262 (PhotometricInterpretation): holds UNDEFINED data where integers belong"),
    (262, dict(dtype=1), "damaged DNG tag 262 (PhotometricInterpretation): holds BYTE data"),
    (262, dict(count=2), "damaged DNG tag 262 (PhotometricInterpretation): holds 2 values, not 1"),
    (33421, dict(dtype=7), "damaged DNG tag 33421 (CFARepeatPatternDim): holds UNDEFINED data"),
    (33421, dict(count=1), "damaged DNG tag 33421 (CFARepeatPatternDim): holds 1 value, not 2"),
    (33422, dict(dtype=2), "damaged DNG tag 33422 (CFAPattern): holds ASCII data"),
    # benchmarks/fuzz.py -n 300 --seed 2026: a colour tag, read after LibRaw, and a count so large
    # that tifffile gives a numpy array ("DamagedTagError: ... holds SHORT data where integers belong")
    (50778, dict(count=2), "damaged DNG tag 50778 (CalibrationIlluminant1): holds 2 values, not 1"),
    (50778, dict(count=3000), "damaged DNG tag 50778 (CalibrationIlluminant1): holds 3000 values, not 1"),
], ids=["photometric undefined", "photometric byte", "photometric count 2", "pattern dim undefined",
        "pattern dim count 1", "pattern ascii", "illuminant count 2", "illuminant count 3000"])
def test_a_damaged_tag_type_or_count_is_named_in_one_line(tmp_path, tag, change, expected):
    good = write_test_dng(tmp_path / "good.dng", random_mosaic(48, 64), "RGGB")
    bad = tmp_path / "bad.dng"
    retype_raw_ifd(good, bad, tag, **change)
    with pytest.raises(RawReadError) as info:
        read_mosaic(bad)
    message = str(info.value)
    assert message.startswith(expected) and message.endswith("copy the file again from the card"), message
    assert "\n" not in message


def test_a_dng_whose_tags_tifffile_cannot_parse_is_left_to_libraw(tmp_path):
    """SamplesPerPixel with two values makes tifffile's own parser raise TypeError (fuzz seed 2026:
    "TypeError: '>' not supported between instances of 'tuple' and 'int'"); LibRaw reads the
    mosaic, so the file develops from what LibRaw says."""
    import tifffile

    good = write_test_dng(tmp_path / "good.dng", random_mosaic(48, 64), "RGGB")
    bad = tmp_path / "bad.dng"
    retype_raw_ifd(good, bad, 277, count=2)
    with pytest.raises(TypeError):
        tifffile.TiffFile(bad)
    mosaic = read_mosaic(bad)
    assert mosaic.cfa.name == "RGGB" and mosaic.data.shape == (48, 64)


@pytest.mark.parametrize("tag,factor,expected", [
    (256, 2, r"^damaged or truncated RAW data \(1 of 1 strips of the image lie past the end of the file\)"),
    (257, 3, r"^damaged RAW data: its size tags say 64 x 144 pixels, which takes 3 strips of 48 rows"),
    (257, 1000, r"^damaged RAW data: its size tags say 64 x 48000 pixels, which takes 1000 strips"),
], ids=["width x2", "length x3", "length x1000"])
def test_size_tags_larger_than_the_data_are_refused_before_decoding(tmp_path, tag, factor, expected):
    good = write_test_dng(tmp_path / "good.dng", random_mosaic(48, 64), "RGGB")
    bad = tmp_path / "bad.dng"
    inflate_raw_ifd(good, bad, tag, factor)
    before = sha(bad)
    with pytest.raises(RawReadError, match=expected) as info:
        read_mosaic(bad)
    assert "\n" not in str(info.value)
    assert sha(bad) == before
    assert read_mosaic(good).data.shape == (48, 64)


def test_inflated_width_of_a_real_tiled_dng_is_refused(raw_samples, tmp_path):
    # LibRaw itself reads this one: an 8256-wide mosaic whose right half is zeros.
    bad = tmp_path / "wide.dng"
    inflate_raw_ifd(raw_samples / "imageio_Blackmagic.dng", bad, 256, 2)
    with rawpy.imread(str(bad)) as raw:
        assert raw.raw_image_visible.shape == (2176, 8256)
    with pytest.raises(RawReadError, match=r"takes 8 1032 x 2176 tiles, but the file has 4"):
        read_mosaic(bad)


def test_zeros_far_below_the_black_level_are_damage(tmp_path):
    # What LibRaw leaves, without an error, where it cannot decode a damaged lossless-JPEG stream.
    raw = random_mosaic(48, 64, low=300, high=4000)
    raw[10:20] = 0  # 21 % of the pixels
    bad = write_test_dng(tmp_path / "holes.dng", raw, "RGGB", black=256)
    with pytest.raises(RawReadError, match=r"^damaged RAW data: 20.8 % of the pixels are 0, far below the black"):
        read_mosaic(bad)
    raw[10:20] = 300
    raw[0, :5] = 0  # a few dead pixels are normal
    assert read_mosaic(write_test_dng(tmp_path / "dead.dng", raw, "RGGB", black=256)).data.shape == (48, 64)


def test_zeros_are_normal_without_a_black_offset(tmp_path):
    raw = random_mosaic(48, 64, low=0, high=4000)
    raw[10:20] = 0  # deep shadows of a camera that subtracts black itself
    assert read_mosaic(write_test_dng(tmp_path / "dark.dng", raw, "RGGB", black=0)).data.shape == (48, 64)


def test_a_damaged_byte_count_alone_is_not_refused(tmp_path):
    # LibRaw reads uncompressed pixels by the image's size: an inflated StripByteCounts is harmless.
    good = write_test_dng(tmp_path / "good.dng", random_mosaic(48, 64), "RGGB")
    odd = tmp_path / "odd.dng"
    inflate_raw_ifd(good, odd, 279, 1000)
    assert np.array_equal(read_mosaic(odd).data, read_mosaic(good).data)
