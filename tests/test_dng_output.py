"""`rawdev develop --format dng` (rawdev/dng_output.py): LinearRaw DNGs read back with rawpy
(LibRaw) and tifffile. What is checked: the layout (IFD 0 preview, SubIFD raw) and tag values;
LibRaw's neutral development of the DNG against rawdev's neutral TIFF of the same input;
orientations 1-8 and odd sizes as LibRaw shows the original; a source without a colour matrix
refused; highlights above 1 after white balance kept (the headroom); the file policy of TIFF.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile
from conftest import WB, XYZ_TO_CAM, random_mosaic, write_test_dng
from typer.testing import CliRunner

from rawdev.batch import Job, RunOptions, run_batch
from rawdev.cli import app
from rawdev.color import srgb_decode
from rawdev.develop import DevelopOptions, develop_mosaic
from rawdev.inputs import collect_inputs
from rawdev.metrics import psnr_after_gain
from rawdev.raw import Mosaic, read_mosaic

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NEUTRAL = DevelopOptions(look="neutral", exposure="0")


def develop_dng(src: Path, out: Path, session, options: DevelopOptions = NEUTRAL, **run) -> str:
    """Develop ``src`` into the DNG ``out`` in this process; the outcome's status and message."""
    summary = run_batch([Job(src, out)], session, options, RunOptions(fmt="dng", decode_in_process=True, **run))
    [outcome] = summary.outcomes
    return f"{outcome.status} {outcome.message}".strip()


def smooth_scene(h: int, w: int, cfa: str = "RGGB", seed: int = 0) -> np.ndarray:
    """A smooth, unsaturated CFA mosaic (black 256, white 4095) that a bilinear demosaic
    reproduces well: gentle colour gradients and soft blobs, nothing clipped."""
    from rawdev.cfa import parse_cfa

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([0.2 + 0.06 * np.sin(3 * x + 1), 0.2 + 0.05 * np.cos(2 * y), 0.2 + 0.06 * np.sin(2 * (x + y))], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1, 3)
        rgb *= 1 + 0.5 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.02 + 0.05 * r))[..., None]
    cam = np.clip(rgb / WB, 0, 1)  # camera RGB before white balance
    site = parse_cfa(cfa).array[np.arange(h)[:, None] % 2, np.arange(w)[None, :] % 2]
    values = np.take_along_axis(cam, site[..., None], axis=2)[..., 0]
    return np.round(256 + values * (4095 - 256)).astype(np.uint16)


def libraw_neutral(path: Path) -> np.ndarray:
    """LibRaw's neutral development: camera WB, no auto brightening, sRGB, sRGB-like gamma, 16 bit."""
    with rawpy.imread(str(path)) as raw:
        return raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_color=rawpy.ColorSpace.sRGB,
                               gamma=(2.4, 12.92), output_bps=16)


# --- layout and tags -----------------------------------------------------------------------------


def test_layout_preview_in_ifd0_raw_in_subifd_and_the_tag_values(tmp_path, bilinear_session):
    src = write_test_dng(tmp_path / "shot.dng", smooth_scene(300, 451), "RGGB", orientation=6, make="Canon",
                         model="EOS 5D Mark II", datetime="2024:05:01 12:30:00", exposure_time=1 / 250,
                         f_number=4.0, iso=800, focal_length=35.0, lens="EF35mm f/2")
    out = tmp_path / "shot.rawdev.dng"
    assert develop_dng(src, out, bilinear_session, DevelopOptions(exposure="1.5")) == "ok"
    with tifffile.TiffFile(out) as tif:
        ifd0 = tif.pages[0]
        tags = {t.code: t.value for t in ifd0.tags}
        assert tags[254] == 1 and ifd0.photometric == 2 and ifd0.dtype == np.uint8
        assert ifd0.shape == (150, 225, 3)  # 2 x 2 means: at most 256 on the long side, stored unrotated
        assert bytes(tags[50706]) == b"\x01\x04\x00\x00" and bytes(tags[50707]) == b"\x01\x01\x00\x00"
        assert tags[50708] == "Canon EOS 5D Mark II" and tags[271] == "Canon" and tags[272] == "EOS 5D Mark II"
        assert tags[274] == 6 and tags[306] == "2024:05:01 12:30:00"
        cm = np.array(tags[50721], np.float64).reshape(9, 2)
        np.testing.assert_allclose((cm[:, 0] / cm[:, 1]).reshape(3, 3), XYZ_TO_CAM, atol=1e-4)
        assert tags[50778] == 21
        neutral = np.array(tags[50728], np.float64).reshape(3, 2)
        np.testing.assert_allclose(neutral[:, 0] / neutral[:, 1], 1 / WB, rtol=1e-5)
        num, den = tags[50730]
        assert num / den == pytest.approx(1.5)
        assert ifd0.tags[330].dtype == 4  # SubIFDs as LONG
        exif = tags[34665]
        assert exif["ISOSpeedRatings"] == 800 and exif["LensModel"] == "EF35mm f/2"
        assert exif["ExposureTime"] == (1, 250) and exif["FNumber"] == (4, 1)
        assert exif["DateTimeOriginal"] == "2024:05:01 12:30:00"
        [raw] = ifd0.pages
        raw_tags = {t.code: t.value for t in raw.tags}
        assert raw_tags[254] == 0 and raw_tags[262] == 34892 and raw_tags[259] == 1
        assert raw.shape == (300, 451, 3) and raw.dtype == np.uint16 and raw_tags[277] == 3
        assert tuple(raw_tags[50714]) == (0, 0, 0) and tuple(raw_tags[50717]) == (65535,) * 3
        assert tuple(raw_tags[50719]) == (0, 0) and tuple(raw_tags[50720]) == (451, 300)
        pixels = raw.asarray()
    # The raw is camera RGB with the white balance undone: back in the source's own levels.
    source = read_mosaic(src)
    mean_cam = (source.data[1::2, 1::2].astype(float).mean() - 256) / (4095 - 256)  # blue sites
    assert pixels[..., 2].mean() / 65535 == pytest.approx(mean_cam, rel=0.01)


def test_rawpy_reads_it_and_libraw_neutral_matches_rawdevs_neutral_tiff(tmp_path, bilinear_session):
    for name, src in (("scene", write_test_dng(tmp_path / "scene.dng", smooth_scene(256, 384, "GRBG", seed=3), "GRBG")),
                      ("chart", EXAMPLES / "chart_bayer.dng")):
        out = tmp_path / f"{name}.rawdev.dng"
        assert develop_dng(src, out, bilinear_session) == "ok"
        with rawpy.imread(str(out)) as raw:
            assert raw.raw_type == rawpy.RawType.Stack and raw.raw_pattern is None
            np.testing.assert_allclose(raw.camera_whitebalance[:3], read_mosaic(src).wb_camera, rtol=1e-4)
        tiff = tmp_path / f"{name}.tif"
        summary = run_batch([Job(src, tiff)], bilinear_session, NEUTRAL, RunOptions(decode_in_process=True))
        assert summary.exit_code == 0
        score = psnr_after_gain(libraw_neutral(out), tifffile.imread(tiff))
        assert score >= 30.0, (name, score)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_and_odd_size_come_back_as_libraw_shows_the_original(tmp_path, bilinear_session,
                                                                         orientation):
    raw = np.full((37, 53), 1500, np.uint16)
    raw[2:10, 3:14] = 3800  # a bright block near one corner
    src = write_test_dng(tmp_path / "o.dng", raw, "BGGR", orientation=orientation)
    out = tmp_path / "o.rawdev.dng"
    assert develop_dng(src, out, bilinear_session) == "ok"
    original, ours = libraw_neutral(src), libraw_neutral(out)
    assert ours.shape == original.shape == ((37, 53, 3) if orientation < 5 else (53, 37, 3))
    bright_a = original.mean(-1) > original.mean()
    bright_b = ours.mean(-1) > ours.mean()
    assert (bright_a & bright_b).sum() / (bright_a | bright_b).sum() > 0.7  # the block lands where it was


# --- what is refused -----------------------------------------------------------------------------


def test_a_source_without_colour_matrix_is_refused_and_the_batch_goes_on(tmp_path, bilinear_session):
    good = write_test_dng(tmp_path / "good.dng", random_mosaic(32, 48), "RGGB")
    phone = tmp_path / "phone.dng"
    phone.write_bytes(good.read_bytes())

    def decode(job: Job, run: RunOptions) -> Mosaic:
        mosaic = read_mosaic(job.source)
        if job.source.name == "phone.dng":  # as LibRaw reads a camera it has no matrix for
            mosaic.colour_profile, mosaic.cam_to_srgb = None, None
        return mosaic

    jobs = [Job(phone, tmp_path / "phone.rawdev.dng"), Job(good, tmp_path / "good.rawdev.dng")]
    summary = run_batch(jobs, bilinear_session, NEUTRAL, RunOptions(fmt="dng"), decode=decode)
    assert [(o.status, o.job.source.name) for o in summary.outcomes] == [("failed", "phone.dng"), ("ok", "good.dng")]
    assert summary.outcomes[0].message.startswith("no colour matrix in the file")
    assert "\n" not in summary.outcomes[0].message and summary.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.dng", "good.rawdev.dng", "phone.dng"]


def test_a_mosaic_png_has_no_colour_matrix_and_is_refused(tmp_path, bilinear_model):
    import imagecodecs

    png = tmp_path / "mai.png"
    imagecodecs.imwrite(str(png), np.random.default_rng(0).integers(0, 1021, (32, 32)).astype(np.uint16))
    result = CliRunner().invoke(app, ["develop", str(png), "--format", "dng", "--model", str(bilinear_model)])
    assert result.exit_code == 1
    assert "failed" in result.output and "no colour matrix in the file" in result.output
    assert not (tmp_path / "mai.rawdev.dng").exists()


def test_usage_errors(tmp_path, bilinear_model):
    from helpers import bilinear_onnx

    from rawdev.model import ModelContract

    src = write_test_dng(tmp_path / "a.dng", random_mosaic(32, 32), "RGGB")
    srgb = bilinear_onnx(tmp_path / "srgb.onnx", ModelContract(variant="bilinear", width=0, output_space="srgb"))
    for extra, says in ((["--compression", "deflate"], "for DNG choose none"), (["--bits", "8"], "16-bit"),
                        (["--model", str(srgb)], "needs a model with linear output")):
        args = ["develop", str(src), "--format", "dng", "--model", str(bilinear_model), *extra]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and says in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dng", "srgb.onnx"]


# --- headroom ------------------------------------------------------------------------------------


def warm_patch_mosaic(red: float = 0.6, gain: float = 2.2) -> Mosaic:
    """A flat warm patch: red at ``red`` of the sensor's range (white balance gain ``gain``), so
    that after white balance it is above 1; green and blue at 30 %."""
    from rawdev.cfa import parse_cfa
    from rawdev.dng import D65, ColourProfile

    h, w = 64, 64
    level = np.array([[red, 0.3], [0.3, 0.3]])
    data = np.round(256 + np.tile(level, (h // 2, w // 2)) * (4095 - 256)).astype(np.uint16)
    return Mosaic(data=data, cfa=parse_cfa("RGGB"), black=np.full((2, 2), 256.0), white=4095.0,
                  wb_camera=np.array([gain, 1.0, 1.5]), cam_to_srgb=np.eye(3),
                  colour_profile=ColourProfile((D65,), (XYZ_TO_CAM,)))


def test_a_bright_warm_patch_keeps_its_value_in_the_dng(tmp_path, bilinear_session):
    mosaic = warm_patch_mosaic()
    developed = develop_mosaic(mosaic, bilinear_session, NEUTRAL, camera_rgb=True)
    centre = developed.image[16:48, 16:48].reshape(-1, 3).astype(float) / 65535
    np.testing.assert_allclose(centre.mean(0), [0.6, 0.3, 0.3], atol=2e-3)  # not 1 / 2.2 = 0.45


def test_a_bright_warm_patch_keeps_its_value_in_the_tiffs_linear_data(bilinear_session):
    # 2.2 * 0.6 = 1.32 after white balance; at -1 EV it renders at 0.66 of white, below the clip.
    developed = develop_mosaic(warm_patch_mosaic(), bilinear_session, DevelopOptions(look="neutral", exposure="-1"))
    linear = srgb_decode(developed.image[16:48, 16:48].reshape(-1, 3) / 65535.0).mean(0)
    np.testing.assert_allclose(linear, [0.66, 0.15, 0.225], atol=3e-3)  # red was 0.5 when clipped at 1


def test_a_dark_noisy_patch_keeps_its_mean_in_the_dng(tmp_path):
    """Noise round black, through a model that takes values below black (as the noise-aware ones
    do): the DNG's camera RGB keeps each channel's mean (rawdev.color.lift_negatives), where a
    plain clip at 0 would lift it by a third of the noise."""
    from helpers import bilinear_onnx

    from rawdev.cfa import parse_cfa
    from rawdev.dng import D65, ColourProfile
    from rawdev.model import ModelContract
    from rawdev.session import open_session

    contract = ModelContract(variant="bilinear", width=0, clip_below_black="no")
    session = open_session(bilinear_onnx(tmp_path / "b.onnx", contract), "cpu", threads=1)

    rng = np.random.default_rng(5)
    data = np.round(256 + 4 + 12 * rng.standard_normal((128, 128))).astype(np.uint16)  # 4 codes over black
    mosaic = Mosaic(data=data, cfa=parse_cfa("RGGB"), black=np.full((2, 2), 256.0), white=4095.0,
                    wb_camera=np.array([2.0, 1.0, 1.5]), cam_to_srgb=np.eye(3),
                    colour_profile=ColourProfile((D65,), (XYZ_TO_CAM,)))
    camera = develop_mosaic(mosaic, session, NEUTRAL, camera_rgb=True).image.astype(float) / 65535
    level = (data.astype(float).mean() - 256) / (4095 - 256)
    np.testing.assert_allclose(camera.reshape(-1, 3).mean(0), level, rtol=0.1)


# --- file policy ---------------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_skip_overwrite_and_the_input_untouched(tmp_path, bilinear_model):
    src = write_test_dng(tmp_path / "shot.dng", random_mosaic(32, 48), "RGGB")
    before = digest(src)

    def cli(*extra):
        return CliRunner().invoke(app, ["develop", str(tmp_path), "--format", "dng", "--model", str(bilinear_model),
                                        *extra])

    first = cli()
    assert first.exit_code == 0, first.output
    out = tmp_path / "shot.rawdev.dng"
    assert out.exists() and digest(src) == before
    # The folder now holds the output too; it is not taken for an input.
    assert [p.name for p, _ in collect_inputs([str(tmp_path)], False)] == ["shot.dng"]
    assert [p.name for p, _ in collect_inputs([str(tmp_path / "*.dng")], False)] == ["shot.dng"]
    out.write_bytes(b"an older result")
    second = cli()
    assert second.exit_code == 0 and "skipped" in second.output and out.read_bytes() == b"an older result"
    third = cli("--overwrite")
    assert third.exit_code == 0 and out.read_bytes()[:4] == b"II*\x00"
    assert digest(src) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_write_leaves_nothing_and_the_old_file_stays(tmp_path, bilinear_session, monkeypatch):
    import rawdev.dng_output as dng_output

    src = write_test_dng(tmp_path / "shot.dng", random_mosaic(32, 48), "RGGB")
    out = tmp_path / "shot.rawdev.dng"
    out.write_bytes(b"an older result")

    def broken(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dng_output.dng, "link_exif_ifd", broken)
    line = develop_dng(src, out, bilinear_session, overwrite=True)
    assert line == f"failed cannot write {out}: No space left on device"
    assert out.read_bytes() == b"an older result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shot.dng", "shot.rawdev.dng"]


def test_quad_bayer_follows_the_quad_bayer_option(tmp_path, bilinear_session):
    src = write_test_dng(tmp_path / "quad.dng", random_mosaic(48, 64), "quad-RGGB")
    for mode, shape in (("bin", (24, 32, 3)), ("remosaic", (48, 64, 3))):
        out = tmp_path / f"{mode}.rawdev.dng"
        assert develop_dng(src, out, bilinear_session, DevelopOptions(quad_bayer=mode)) == "ok"
        with rawpy.imread(str(out)) as raw:
            assert raw.raw_image_visible.shape[:2] == shape[:2]


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed (libimage-exiftool-perl)")
def test_exiftool_validates_every_tag_without_a_warning(tmp_path, bilinear_session):
    import subprocess

    src = write_test_dng(tmp_path / "shot.dng", random_mosaic(64, 96), "RGGB", datetime="2024:05:01 12:30:00",
                         exposure_time=0.01, f_number=2.8, iso=200, focal_length=50.0, lens="50mm", orientation=8)
    out = tmp_path / "shot.rawdev.dng"
    assert develop_dng(src, out, bilinear_session) == "ok"
    done = subprocess.run(["exiftool", "-validate", "-warning", "-a", str(out)], capture_output=True, text=True)
    assert done.stdout.split() == ["Validate", ":", "OK"], done.stdout


def test_headroom_only_where_the_gains_would_clip():
    from rawdev.model import ModelContract
    from rawdev.normalize import prepare

    warm = prepare(warm_patch_mosaic(), ModelContract(), headroom=True)
    assert warm.headroom == pytest.approx(0.6 * 2.2, rel=1e-3)
    assert float(warm.source[:, :].max()) == pytest.approx(1.0, abs=1e-3)  # the brightest now fits
    dim = prepare(warm_patch_mosaic(red=0.4), ModelContract(), headroom=True)  # 0.88 after its gain
    assert dim.headroom == 1.0
    assert np.array_equal(dim.source[:, :], prepare(warm_patch_mosaic(red=0.4), ModelContract()).source[:, :])
