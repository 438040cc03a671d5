"""Tests for rawdev.output: ICC profile, TIFF/PNG writers, atomic writes, orientation, reading."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile

from rawdev import output
from rawdev.output import CaptureInfo, apply_orientation, read_image, srgb_icc_profile, write_image

INFO = CaptureInfo(
    make="Canon",
    model="EOS R5",
    datetime="2024:05:06 07:08:09",
    exposure_time=1 / 250,
    f_number=2.8,
    iso=100,
    focal_length=50.0,
    lens="RF50mm F1.8 STM",
    orientation=6,
)


def _image(dtype, shape=(37, 53, 3), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Independent PNG chunk parser: [(type, payload)], CRCs verified."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(kind + payload), kind
        chunks.append((kind, payload))
        pos += 12 + n
    assert pos == len(data)
    return chunks


# --------------------------------------------------------------------------------------------- ICC


def _s15f16(b: bytes) -> float:
    return struct.unpack(">i", b)[0] / 65536


def _parse_icc(p: bytes) -> dict[bytes, bytes]:
    (size,) = struct.unpack(">I", p[:4])
    assert size == len(p)
    (count,) = struct.unpack(">I", p[128:132])
    tags = {}
    for i in range(count):
        sig, off, n = struct.unpack(">4sII", p[132 + 12 * i : 144 + 12 * i])
        assert off % 4 == 0, sig
        assert 132 + 12 * count <= off and off + n <= len(p), sig
        tags[sig] = p[off : off + n]
    return tags


def test_icc_header():
    p = srgb_icc_profile()
    assert p is srgb_icc_profile()  # cached
    assert len(p) % 4 == 0
    assert p[8] == 2  # major version 2
    assert p[12:16] == b"mntr" and p[16:20] == b"RGB " and p[20:24] == b"XYZ "
    assert p[36:40] == b"acsp"
    assert [round(_s15f16(p[68 + 4 * i : 72 + 4 * i]), 4) for i in range(3)] == [0.9642, 1.0, 0.8249]
    assert p[84:100] == bytes(16)  # no profile ID in v2


def test_icc_tags():
    tags = _parse_icc(srgb_icc_profile())
    assert set(tags) == {b"desc", b"cprt", b"wtpt", b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC"}
    assert tags[b"desc"][:4] == b"desc" and b"sRGB IEC61966-2.1\0" in tags[b"desc"]
    assert tags[b"cprt"][:4] == b"text"

    def xyz(sig):
        t = tags[sig]
        assert t[:4] == b"XYZ " and len(t) == 20
        return np.array([_s15f16(t[8 + 4 * i : 12 + 4 * i]) for i in range(3)])

    np.testing.assert_allclose(xyz(b"wtpt"), [0.9642, 1.0, 0.8249], atol=1e-4)
    # the Bradford-adapted primaries of the common sRGB profiles (HP: bZ 0.7141, lcms: 0.7139)
    np.testing.assert_allclose(xyz(b"rXYZ"), [0.4361, 0.2225, 0.0139], atol=3e-4)
    np.testing.assert_allclose(xyz(b"gXYZ"), [0.3851, 0.7169, 0.0971], atol=3e-4)
    np.testing.assert_allclose(xyz(b"bXYZ"), [0.1431, 0.0606, 0.7141], atol=3e-4)
    total = xyz(b"rXYZ") + xyz(b"gXYZ") + xyz(b"bXYZ")
    np.testing.assert_allclose(total, [0.9642, 1.0, 0.8249], atol=1e-4)  # white maps to PCS white

    for sig in (b"rTRC", b"gTRC", b"bTRC"):
        t = tags[sig]
        assert t[:4] == b"curv"
        (n,) = struct.unpack(">I", t[8:12])
        assert n >= 256 and len(t) == 12 + 2 * n
        curve = np.frombuffer(t[12:], ">u2").astype(np.float64) / 65535
        assert curve[0] == 0 and curve[-1] == 1 and np.all(np.diff(curve) >= 0)
        x = np.linspace(0, 1, n)
        expect = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
        np.testing.assert_allclose(curve, expect, atol=1 / 65535)


def test_icc_with_pillow_lcms():
    ImageCms = pytest.importorskip("PIL.ImageCms")
    from PIL import Image

    ours = ImageCms.ImageCmsProfile(io.BytesIO(srgb_icc_profile()))
    assert ImageCms.getProfileDescription(ours).strip() == "sRGB IEC61966-2.1"
    reference = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    colours = np.array(
        [[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128],
          [200, 100, 30], [12, 34, 56], [250, 5, 200], [64, 192, 96]]],
        np.uint8,
    )  # fmt: skip
    for intent in (ImageCms.Intent.PERCEPTUAL, ImageCms.Intent.RELATIVE_COLORIMETRIC):
        t = ImageCms.buildTransform(ours, reference, "RGB", "RGB", renderingIntent=intent)
        out = np.asarray(ImageCms.applyTransform(Image.fromarray(colours), t))
        assert np.abs(out.astype(int) - colours).max() <= 1


# -------------------------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_tiff_round_trip_and_tags(tmp_path, dtype):
    image = _image(dtype, (300, 400, 3))  # several strips
    path = tmp_path / "out.tif"
    write_image(path, image, INFO, compression="deflate")
    assert os.listdir(tmp_path) == ["out.tif"]
    assert np.array_equal(tifffile.imread(path), image)
    back = read_image(path)
    assert back.dtype == dtype and np.array_equal(back, image)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        tags = {t.code: t.value for t in page.tags}
        assert len(tif.pages) == 1
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.predictor == tifffile.PREDICTOR.HORIZONTAL
        assert page.bitspersample == 8 * np.dtype(dtype).itemsize
        assert len(page.dataoffsets) > 1
    assert tags[34675] == srgb_icc_profile()
    assert tags[271] == "Canon" and tags[272] == "EOS R5"
    assert tags[306] == "2024:05:06 07:08:09" and tags[36867] == "2024:05:06 07:08:09"
    assert tags[274] == 1  # the pixels are written upright
    assert tags[305].startswith("rawdev")
    assert tags[33434] == (1, 250)
    assert tags[33437] == (14, 5)
    assert tags[34855] == 100
    assert tags[37386] == (50, 1)
    assert tags[42036] == "RF50mm F1.8 STM"
    assert 270 not in tags  # no tifffile JSON description


@pytest.mark.parametrize("compression", ["zstd", "lzw", "none", "deflate"])
def test_tiff_other_compressions(tmp_path, compression):
    image = _image(np.uint16)
    path = tmp_path / "x.tiff"
    write_image(path, image, None, compression=compression)
    assert np.array_equal(tifffile.imread(path), image)


def test_tiff_without_info_and_with_the_default_compression(tmp_path):
    path = tmp_path / "x.tif"
    write_image(path, _image(np.uint16), None)
    with tifffile.TiffFile(path) as tif:
        tags = {t.code: t.value for t in tif.pages[0].tags}
        assert tif.pages[0].compression == tifffile.COMPRESSION.NONE  # as `rawdev develop` writes it
    assert tags[34675] == srgb_icc_profile() and tags[274] == 1
    assert not {271, 272, 306, 33434, 33437, 34855, 37386, 42036} & set(tags)


def test_tiff_odd_metadata(tmp_path):
    info = CaptureInfo(make=" Canon\0 ", model="", datetime="May 6 2024", exposure_time=0.0,
                       f_number=float("nan"), iso=102400, lens="Ünïcode lens")  # fmt: skip
    path = tmp_path / "x.tif"
    write_image(path, _image(np.uint8), info)
    with tifffile.TiffFile(path) as tif:
        tags = {t.code: t.value for t in tif.pages[0].tags}
    assert tags[271] == "Canon" and 272 not in tags
    assert 306 not in tags and 33434 not in tags and 33437 not in tags
    assert tags[34855] == 65535 and tags[34867] == 102400 and tags[34864] == 3
    assert tags[42036] == "?n?code lens"


# --------------------------------------------------------------------------------------------- PNG


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
def test_png_round_trip_and_chunks(tmp_path, dtype):
    image = _image(dtype)
    path = tmp_path / "out.png"
    write_image(path, image, INFO)
    assert os.listdir(tmp_path) == ["out.png"]
    data = path.read_bytes()
    decoded = imagecodecs.png_decode(data)
    assert decoded.dtype == dtype and np.array_equal(decoded, image)
    assert np.array_equal(read_image(path), image)

    chunks = _png_chunks(data)
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    first_idat = kinds.index(b"IDAT")
    assert kinds.index(b"iCCP") < first_idat and kinds.index(b"eXIf") < first_idat
    assert b"sRGB" not in kinds and kinds.count(b"iCCP") == 1
    iccp = dict(chunks)[b"iCCP"]
    name, rest = iccp.split(b"\0", 1)
    assert name == b"sRGB" and rest[0] == 0
    assert zlib.decompress(rest[1:]) == srgb_icc_profile()
    exif = dict(chunks)[b"eXIf"]
    assert exif[:4] == b"II*\0"
    assert b"Canon\0" in exif and b"EOS R5\0" in exif and b"2024:05:06 07:08:09\0" in exif
    texts = [p for k, p in chunks if k == b"tEXt"]
    assert any(t.startswith(b"Software\0rawdev") for t in texts)


def test_png_metadata_read_by_pillow(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    path = tmp_path / "out.png"
    write_image(path, _image(np.uint8), INFO)
    with Image.open(path) as im:
        assert im.info["icc_profile"] == srgb_icc_profile()
        exif = im.getexif()
        assert exif[271] == "Canon" and exif[272] == "EOS R5"
        assert exif[306] == "2024:05:06 07:08:09" and exif[274] == 1
        sub = exif.get_ifd(0x8769)
        assert sub[33434] == pytest.approx(1 / 250) and sub[33437] == pytest.approx(2.8)
        assert sub[34855] == 100 and sub[37386] == 50 and sub[42036] == "RF50mm F1.8 STM"
        assert sub[36867] == "2024:05:06 07:08:09"
        assert np.array_equal(np.asarray(im.convert("RGB")), read_image(path))


def test_png_without_info_and_uncompressed(tmp_path):
    image = _image(np.uint16)
    path = tmp_path / "x.png"
    write_image(path, image, None, compression="none")
    assert np.array_equal(imagecodecs.png_decode(path.read_bytes()), image)
    assert path.stat().st_size > image.nbytes
    with pytest.raises(ValueError):
        write_image(tmp_path / "y.png", image, None, compression="zstd")


def test_format_argument_and_errors(tmp_path):
    image = _image(np.uint8)
    write_image(tmp_path / "noext", image, fmt="png")
    assert (tmp_path / "noext").read_bytes()[:4] == b"\x89PNG"
    write_image(tmp_path / "x.dat", image, fmt="tif")
    assert np.array_equal(read_image(tmp_path / "x.dat"), image)
    for bad in (
        lambda: write_image(tmp_path / "a.jpg", image),
        lambda: write_image(tmp_path / "a.tif", image.astype(np.float32)),
        lambda: write_image(tmp_path / "a.tif", image[..., :2]),
        lambda: write_image(tmp_path / "a.tif", image[..., 0]),
        lambda: write_image(tmp_path / "a.tif", image, compression="jpeg"),
        lambda: write_image(tmp_path / "a.tif", image, fmt="bmp"),
    ):
        with pytest.raises(ValueError):
            bad()
    assert sorted(os.listdir(tmp_path)) == ["noext", "x.dat"]


# ------------------------------------------------------------------------------------------ atomic


def _partial_imwrite(real, seen):
    def imwrite(fh, data, **kwargs):
        buf = io.BytesIO()
        real(buf, data, **kwargs)
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        fh.flush()
        seen.extend(os.listdir(Path(fh.name).parent))
        raise OSError("disk full")

    return imwrite


def test_failed_tiff_write_leaves_nothing(tmp_path, monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(tifffile, "imwrite", _partial_imwrite(tifffile.imwrite, seen))
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "out.tif", _image(np.uint16), INFO)
    assert len(seen) == 1 and seen[0].startswith(".out.tif.rawdev-tmp-")  # the partial file was there
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError("encoder failed"), KeyboardInterrupt()])
def test_failed_png_encode_leaves_nothing(tmp_path, monkeypatch, exc):
    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(imagecodecs, "png_encode", boom)
    with pytest.raises(type(exc)):
        write_image(tmp_path / "out.png", _image(np.uint8), INFO)
    assert os.listdir(tmp_path) == []


def test_interrupt_during_file_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(fh):
        fh.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        output._atomic_write(tmp_path / "out.png", interrupted)
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_existing_file_replaced_only_on_success(tmp_path, monkeypatch):
    path = tmp_path / "out.tif"
    old = _image(np.uint16, seed=1)
    write_image(path, old, INFO)
    before = path.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(tifffile, "imwrite", _partial_imwrite(tifffile.imwrite, []))
        with pytest.raises(OSError):
            write_image(path, _image(np.uint16, seed=2), INFO)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.tif"]
    new = _image(np.uint16, seed=3)
    write_image(path, new, INFO)
    assert np.array_equal(tifffile.imread(path), new)
    assert os.listdir(tmp_path) == ["out.tif"]


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_image(tmp_path / "nope" / "x.png", _image(np.uint8))
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_written_file_has_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "x.png"
    write_image(path, _image(np.uint8))
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# ------------------------------------------------------------------------------------- orientation

A = np.array([[1, 2, 3], [4, 5, 6]])
EXPECTED = {
    1: [[1, 2, 3], [4, 5, 6]],
    2: [[3, 2, 1], [6, 5, 4]],  # mirror left-right
    3: [[6, 5, 4], [3, 2, 1]],  # rotate 180
    4: [[4, 5, 6], [1, 2, 3]],  # mirror top-bottom
    5: [[1, 4], [2, 5], [3, 6]],  # transpose
    6: [[4, 1], [5, 2], [6, 3]],  # rotate 90 clockwise
    7: [[6, 3], [5, 2], [4, 1]],  # transverse
    8: [[3, 6], [2, 5], [1, 4]],  # rotate 90 counter-clockwise
}
# EXIF: where the stored row 0 and column 0 end up on display
ROW0_COL0 = {
    1: ("top", "left"), 2: ("top", "right"), 3: ("bottom", "right"), 4: ("bottom", "left"),
    5: ("left", "top"), 6: ("right", "top"), 7: ("right", "bottom"), 8: ("left", "bottom"),
}  # fmt: skip


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_cases(orientation):
    out = apply_orientation(A, orientation)
    assert np.array_equal(out, EXPECTED[orientation])
    assert np.shares_memory(out, A)  # a view
    # the stored first row (1 2 3) and first column (1 4) land on the sides EXIF names
    row0, col0 = ROW0_COL0[orientation]
    sides = {"top": out[0, :], "bottom": out[-1, :], "left": out[:, 0], "right": out[:, -1]}
    assert sorted(sides[row0]) == [1, 2, 3]
    assert sorted(sides[col0]) == [1, 4]
    # the stored corner (0, 0) sits where those two sides meet
    corner = (0 if "top" in (row0, col0) else -1, 0 if "left" in (row0, col0) else -1)
    assert out[corner] == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_on_rgb_matches_pillow(orientation):
    Image = pytest.importorskip("PIL.Image")
    ImageOps = pytest.importorskip("PIL.ImageOps")
    image = _image(np.uint8, (5, 7, 3))
    im = Image.fromarray(image)
    exif = im.getexif()
    exif[274] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif.tobytes())
    buf.seek(0)
    with Image.open(buf) as im2:
        expect = np.asarray(ImageOps.exif_transpose(im2).convert("RGB"))
    assert np.array_equal(apply_orientation(image, orientation), expect)


def test_orientation_invalid():
    assert apply_orientation(A, None) is A
    for bad in (0, 9, -1):
        with pytest.raises(ValueError):
            apply_orientation(A, bad)


def test_write_accepts_oriented_views(tmp_path):
    image = _image(np.uint16, (20, 30, 3))
    for orientation in (6, 7):
        upright = apply_orientation(image, orientation)
        write_image(tmp_path / f"{orientation}.tif", upright, INFO)
        write_image(tmp_path / f"{orientation}.png", upright, INFO)
        assert np.array_equal(read_image(tmp_path / f"{orientation}.tif"), upright)
        assert np.array_equal(read_image(tmp_path / f"{orientation}.png"), upright)


# ----------------------------------------------------------------------------------------- reading


def test_read_jpeg_grey_planar_and_garbage(tmp_path):
    y, x = np.mgrid[0:16, 0:24]
    smooth = np.stack([x * 10, y * 15, 255 - x * 5], axis=-1).astype(np.uint8)
    (tmp_path / "a.jpg").write_bytes(imagecodecs.jpeg8_encode(smooth, level=95))
    back = read_image(tmp_path / "a.jpg")
    assert back.shape == smooth.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - smooth).mean() < 4  # lossy, but the same picture

    rgb = _image(np.uint8, (16, 24, 3))

    grey = _image(np.uint16, (8, 9))
    tifffile.imwrite(tmp_path / "g.tif", grey)
    assert np.array_equal(read_image(tmp_path / "g.tif"), np.stack([grey] * 3, axis=-1))

    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_image(tmp_path / "p.tif"), rgb)

    rgba = _image(np.uint8, (8, 9, 4))
    (tmp_path / "a.png").write_bytes(imagecodecs.png_encode(rgba))
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])

    (tmp_path / "x.bin").write_bytes(b"hello world")
    with pytest.raises(ValueError):
        read_image(tmp_path / "x.bin")


@pytest.mark.parametrize("compression", ["deflate", "zstd", "lzw", "none"])
def test_strips_encoded_as_rows_finish_make_the_same_file(tmp_path, compression):
    """TiffStrips fed rows in uneven steps (as tile rows finish) writes the bytes tifffile writes
    from the whole image; strips that do not cover the image are refused."""
    rng = np.random.default_rng(0)
    image = (rng.random((700, 333, 3)) * 65535).astype(np.uint16)
    image[:, :100] = 4321
    whole, streamed = tmp_path / "whole.tif", tmp_path / "streamed.tif"
    write_image(whole, image, compression=compression)
    strips = output.TiffStrips(compression)
    for rows in (0, 37, 37, 300, 301, 699, 700):
        strips.rows_ready(image, rows)
    assert len(strips.strips) > 3
    write_image(streamed, image, compression=compression, strips=strips)
    assert streamed.read_bytes() == whole.read_bytes()

    partial = output.TiffStrips(compression)
    partial.rows_ready(image, 350)
    with pytest.raises(ValueError, match="not the whole image"):
        write_image(tmp_path / "partial.tif", image, compression=compression, strips=partial)
    assert not (tmp_path / "partial.tif").exists()
