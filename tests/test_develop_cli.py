"""`rawdev develop` end to end through typer's CliRunner, with a real (tiny) ONNX model and real
DNG files; and the tiler inside develop_mosaic: seams and memory."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

rawpy = pytest.importorskip("rawpy")

import imagecodecs  # noqa: E402
import tifffile  # noqa: E402
from conftest import random_mosaic, retype_raw_ifd, write_test_dng  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from rawdev.cfa import mosaic, parse_cfa  # noqa: E402
from rawdev.cli import app  # noqa: E402
from rawdev.develop import DevelopOptions, develop_mosaic  # noqa: E402
from rawdev.raw import Mosaic  # noqa: E402
from rawdev.session import available_providers  # noqa: E402
from rawdev.tiling import plan_tiles  # noqa: E402


def develop(*args: str | Path, model: Path):
    result = CliRunner().invoke(app, ["develop", *map(str, args), "--model", str(model)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def hashes(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[Path]:
    """Temporary or hidden files a writer might leave behind."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") or "tmp" in p.name]


def read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        return tif.pages[0].asarray()


def lines_about(output: str, name: str) -> list[str]:
    """Per-file report lines naming ``name`` (not the closing list of failed files)."""
    return [ln for ln in output.splitlines() if name in ln and not ln.startswith("failed:")]


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_test_dng(folder / "bayer.dng", random_mosaic(48, 64, seed=1), "GRBG")
    write_test_dng(folder / "quad.dng", random_mosaic(48, 64, seed=2), "quad-RGGB")
    return folder


# --- what comes out ------------------------------------------------------------------------------


def test_bayer_and_quad_dng_develop_to_16_bit_tiffs_of_the_right_size(inputs, tmp_path, bilinear_model):
    out = tmp_path / "out"
    result = develop(inputs, "-o", out, model=bilinear_model)
    assert result.exit_code == 0, result.output
    bayer, quad = read_tiff(out / "bayer.tif"), read_tiff(out / "quad.tif")
    assert bayer.dtype == np.uint16 and bayer.shape == (48, 64, 3)
    assert quad.dtype == np.uint16 and quad.shape == (24, 32, 3)  # binned: half size
    assert bayer.max() > 1000  # a real image, not zeros
    assert "2 ok, 0 skipped, 0 failed" in result.output
    assert "on CPUExecutionProvider" in result.output  # the providers really applied
    assert leftovers(out) == []


def test_quad_remosaic_keeps_full_size(inputs, tmp_path, bilinear_model):
    out = tmp_path / "out"
    result = develop(inputs / "quad.dng", "-o", out, "--quad-bayer", "remosaic", model=bilinear_model)
    assert result.exit_code == 0, result.output
    assert read_tiff(out / "quad.tif").shape == (48, 64, 3)


def test_cfa_override_turns_a_declared_bayer_into_a_binned_quad(tmp_path, bilinear_model):
    src = write_test_dng(tmp_path / "phone.dng", random_mosaic(48, 64), "RGGB")
    result = develop(src, "-o", tmp_path / "out", "--cfa", "quad-RGGB", model=bilinear_model)
    assert result.exit_code == 0, result.output
    assert read_tiff(tmp_path / "out" / "phone.tif").shape == (24, 32, 3)


def test_png_output_and_8_bits(inputs, tmp_path, bilinear_model):
    out16, out8 = tmp_path / "png16", tmp_path / "png8"
    assert develop(inputs / "bayer.dng", "-o", out16, "--format", "png", model=bilinear_model).exit_code == 0
    assert develop(inputs / "bayer.dng", "-o", out8, "-f", "png", "--bits", "8", model=bilinear_model).exit_code == 0
    png16 = (out16 / "bayer.png").read_bytes()
    assert png16[:8] == b"\x89PNG\r\n\x1a\n"
    a16, a8 = imagecodecs.imread(png16), imagecodecs.imread((out8 / "bayer.png").read_bytes())
    assert a16.dtype == np.uint16 and a16.shape == (48, 64, 3)
    assert a8.dtype == np.uint8 and a8.shape == (48, 64, 3)
    # the same picture at two depths
    assert np.abs(a16 / 65535.0 - a8 / 255.0).max() <= 1 / 255


@pytest.mark.parametrize("compression,tag", [("deflate", 8), ("zstd", 50000), ("lzw", 5), ("none", 1)])
def test_tiff_compression_is_chosen_and_the_pixels_are_the_same(inputs, tmp_path, bilinear_model, compression, tag):
    reference = tmp_path / "default"
    assert develop(inputs / "bayer.dng", "-o", reference, model=bilinear_model).exit_code == 0
    out = tmp_path / compression
    assert develop(inputs / "bayer.dng", "-o", out, "--compression", compression, model=bilinear_model).exit_code == 0
    with tifffile.TiffFile(out / "bayer.tif") as tif:
        page = tif.pages[0]
        assert page.compression == tag and (tag == 1 or page.predictor == 2)
        assert np.array_equal(page.asarray(), read_tiff(reference / "bayer.tif"))
    with tifffile.TiffFile(reference / "bayer.tif") as tif:  # the default: uncompressed, as dcraw -T writes
        assert tif.pages[0].compression == 1


def test_orientation_is_applied(tmp_path, bilinear_model):
    src = write_test_dng(tmp_path / "portrait.dng", random_mosaic(48, 64), "RGGB", orientation=6)
    assert develop(src, model=bilinear_model).exit_code == 0  # beside the input
    assert read_tiff(tmp_path / "portrait.tif").shape == (64, 48, 3)


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (45, 23)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_small_and_odd_images_keep_their_size(tmp_path, bilinear_model, size):
    src = write_test_dng(tmp_path / "small.dng", random_mosaic(*size), "BGGR")
    result = develop(src, "-o", tmp_path / "out", "--tile", "64", model=bilinear_model)
    assert result.exit_code == 0, result.output
    assert read_tiff(tmp_path / "out" / "small.tif").shape == (*size, 3)


def test_png_mosaic_input(tmp_path, bilinear_model):
    src = tmp_path / "mai.png"
    imagecodecs.imwrite(str(src), np.random.default_rng(0).integers(0, 1021, (40, 56)).astype(np.uint16))
    result = develop(src, "-o", tmp_path / "out", model=bilinear_model)
    assert result.exit_code == 0, result.output
    assert read_tiff(tmp_path / "out" / "mai.tif").shape == (40, 56, 3)


# --- batches -------------------------------------------------------------------------------------


def test_batch_reports_each_bad_file_in_one_line_and_goes_on(inputs, tmp_path, bilinear_model):
    (inputs / "text.dng").write_text("not a raw file at all")
    (inputs / "empty.nef").write_bytes(b"")
    good = inputs / "bayer.dng"
    (inputs / "cut.dng").write_bytes(good.read_bytes()[:2000])  # truncated inside the image data
    before = hashes(inputs)
    out = tmp_path / "out"
    result = develop(inputs, "-o", out, model=bilinear_model)
    assert result.exit_code == 1
    reasons = {"text.dng": "not a RAW file", "empty.nef": "empty file (0 bytes)", "cut.dng": "damaged or truncated"}
    for name, reason in reasons.items():
        [line] = lines_about(result.output, name)
        assert line.startswith("failed") and reason in line
    assert sorted(p.name for p in out.iterdir()) == ["bayer.tif", "quad.tif"]
    assert "2 ok, 0 skipped, 3 failed" in result.output
    assert leftovers(out) == []
    assert hashes(inputs) == before  # inputs are never modified


def test_real_bad_samples_in_a_batch(raw_samples, tmp_path, bilinear_model):
    bad = [raw_samples / "corrupt" / "text_renamed.dng", raw_samples / "corrupt" / "exiv2_Canon-R6-pruned.CR3",
           raw_samples / "photoprism_canon_eos_6d.dng", raw_samples / "imageio_Nikon_uncompressed.nef"]
    good = write_test_dng(tmp_path / "good.dng", random_mosaic(32, 32), "RGGB")
    out = tmp_path / "out"
    result = develop(*bad, good, "-o", out, model=bilinear_model)
    assert result.exit_code == 1
    for path in bad:
        assert len(lines_about(result.output, path.name)) == 1
    assert "linear DNG" in lines_about(result.output, "photoprism_canon_eos_6d.dng")[0]
    assert "RGB scan" in lines_about(result.output, "imageio_Nikon_uncompressed.nef")[0]
    assert [p.name for p in out.iterdir()] == ["good.tif"]
    assert "1 ok, 0 skipped, 4 failed" in result.output


def test_existing_output_is_skipped_and_untouched_unless_overwrite(inputs, tmp_path, bilinear_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "bayer.tif").write_bytes(b"an older result")
    result = develop(inputs / "bayer.dng", "-o", out, model=bilinear_model)
    assert result.exit_code == 0
    [line] = lines_about(result.output, "bayer.dng")
    assert line.startswith("skipped") and "--overwrite" in line
    assert (out / "bayer.tif").read_bytes() == b"an older result"
    assert "0 ok, 1 skipped, 0 failed" in result.output
    result = develop(inputs / "bayer.dng", "-o", out, "--overwrite", model=bilinear_model)
    assert result.exit_code == 0
    assert read_tiff(out / "bayer.tif").shape == (48, 64, 3)
    assert leftovers(out) == []


def test_an_output_never_replaces_its_input(tmp_path, bilinear_model):
    # A PNG mosaic developed to PNG beside itself (or with -o its own folder) would overwrite it.
    src = tmp_path / "shot.png"
    imagecodecs.imwrite(str(src), np.random.default_rng(0).integers(0, 1021, (32, 32)).astype(np.uint16))
    before = src.read_bytes()
    for extra in ([], ["-o", tmp_path], ["-o", tmp_path, "--overwrite"]):
        result = develop(src, "--format", "png", *extra, model=bilinear_model)
        assert result.exit_code == 1
        [line] = lines_about(result.output, "shot.png -") or lines_about(result.output, "would replace")
        assert "would replace an input" in line
        assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shot.png"]


def test_two_inputs_with_one_output_name_do_not_overwrite_each_other(tmp_path, bilinear_model):
    folder = tmp_path / "in"
    folder.mkdir()
    write_test_dng(folder / "a.dng", random_mosaic(32, 32), "RGGB")
    write_test_dng(folder / "a.nef", random_mosaic(40, 40), "RGGB")  # a DNG in disguise, same stem
    out = tmp_path / "out"
    result = develop(folder, "-o", out, model=bilinear_model)
    assert result.exit_code == 1
    [line] = lines_about(result.output, "a.nef:")
    assert "already the output of" in line and "a.dng" in line
    assert read_tiff(out / "a.tif").shape == (32, 32, 3)  # the first one's, not overwritten
    assert "1 ok, 0 skipped, 1 failed" in result.output


def test_recursive_keeps_sub_folders(tmp_path, bilinear_model):
    root = tmp_path / "in"
    (root / "day1" / "am").mkdir(parents=True)
    write_test_dng(root / "top.dng", random_mosaic(32, 32), "RGGB")
    write_test_dng(root / "day1" / "a.dng", random_mosaic(32, 32), "RGGB")
    write_test_dng(root / "day1" / "am" / "b.dng", random_mosaic(32, 32), "RGGB")
    out = tmp_path / "out"
    result = develop(root, "-r", "-o", out, model=bilinear_model)
    assert result.exit_code == 0, result.output
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tif"))
    assert made == ["day1/a.tif", "day1/am/b.tif", "top.tif"]
    # without --recursive only the top folder is developed
    result = develop(root, "-o", tmp_path / "flat", model=bilinear_model)
    assert result.exit_code == 0
    assert [p.name for p in (tmp_path / "flat").rglob("*.tif")] == ["top.tif"]


def test_a_file_whose_output_folder_cannot_be_made_fails_alone(tmp_path, bilinear_model):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    write_test_dng(root / "top.dng", random_mosaic(32, 32), "RGGB")
    write_test_dng(root / "sub" / "b.dng", random_mosaic(32, 32), "RGGB")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the sub-folder should go")  # mkdir fails, even as root
    result = develop(root, "-r", "-o", out, model=bilinear_model)
    assert result.exit_code == 1
    [line] = lines_about(result.output, "b.dng")
    assert line.startswith("failed") and "cannot write" in line
    assert (out / "top.tif").is_file()
    assert leftovers(out) == []


def test_output_folder_under_a_file_is_a_usage_error(inputs, tmp_path, bilinear_model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = develop(inputs, "-o", blocker / "out", model=bilinear_model)
    assert result.exit_code == 2
    assert "cannot create output folder" in result.output


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permission bits do not stop root (or non-POSIX) from writing")
def test_read_only_output_folder_is_a_usage_error(inputs, tmp_path, bilinear_model):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        result = develop(inputs, "-o", out, model=bilinear_model)
    finally:
        out.chmod(0o700)
    assert result.exit_code == 2
    assert "not writable" in result.output
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "args,message",
    [
        (["--format", "jpg"], "--format 'jpg'"),
        (["--wb", "warm"], "--wb 'warm'"),
        (["--wb", "1,0,1"], "three positive numbers"),
        (["--bits", "12"], "--bits"),
        (["--cfa", "RGGX"], "CFA pattern 'RGGX'"),
        (["--quad-bayer", "crop"], "--quad-bayer 'crop'"),
        (["--look", "vivid"], "--look 'vivid'"),
        (["--exposure", "bright"], "--exposure 'bright'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--compression", "jpeg"], "--compression 'jpeg': for TIFF choose none, deflate, zstd, lzw"),
        (["-f", "png", "--compression", "zstd"], "--compression 'zstd': for PNG choose deflate, none"),
        # values that ran for minutes (the tiler stepped by 2 samples) or failed every file
        (["--overlap", "100000"], "--overlap 100000: at most half the tile (256 packed samples with --tile auto)"),
        (["--tile", "8", "--overlap", "16"], "--overlap 16: at most half the tile (8 packed samples)"),
        (["--exposure", "nan"], "--exposure 'nan': give auto or a number of EV from -16 to 16"),
        (["--exposure", "inf"], "--exposure 'inf'"),
        (["--exposure", "5000"], "--exposure '5000'"),
        (["--threads", "-1"], "--threads -1: give 0 (all cores) or a positive number"),
        (["--black", "nan"], "--black nan"),
        (["--white", "inf"], "--white inf"),
        (["--black", "300", "--white", "200"], "--white 200 must be above --black 300"),
        (["--decode-timeout", "nan"], "--decode-timeout nan"),
    ],
)
def test_usage_errors_exit_2_before_any_file_is_written(inputs, tmp_path, bilinear_model, args, message):
    out = tmp_path / "out"
    result = develop(inputs, "-o", out, *args, model=bilinear_model)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() or list(out.iterdir()) == []


def test_an_overlap_of_half_the_tile_is_accepted(inputs, tmp_path, bilinear_model):
    result = develop(inputs / "bayer.dng", "-o", tmp_path / "out", "--tile", "32", "--overlap", "16",
                     model=bilinear_model)
    assert result.exit_code == 0, result.output


# pydantic: typer 0.29 builds an adapter per parameter with it (0.18 s a start), hence typer<0.29
HEAVY_MODULES = ("onnx", "tensorflow", "tf2onnx", "matplotlib", "ray", "rawdev.quantize", "onnxruntime.quantization",
                 "pydantic")


def test_develop_imports_neither_onnx_nor_the_training_and_cluster_libraries(tmp_path):
    """The shipped model's contract comes from onnxruntime's metadata: `import onnx` alone cost
    1.1 s of every run. A fresh process, as a user starts it, on the example chart. numpy's BLAS
    pool is kept to one thread, so that it does not contend with onnxruntime's."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = ("import sys\nfrom rawdev.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as exc:\n"
            "    code = exc.code\n"
            f"print('loaded:', [m for m in {HEAVY_MODULES!r} if m in sys.modules])\n"
            "import os\nprint('blas threads:', os.environ.get('OPENBLAS_NUM_THREADS'))\nsys.exit(code)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    env.pop("OPENBLAS_NUM_THREADS", None)
    run = subprocess.run([sys.executable, "-c", code, "develop", str(root / "examples" / "chart_bayer.dng"),
                          "-o", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "chart_bayer.tif").is_file()
    assert "loaded: []" in run.stdout, run.stdout
    assert "blas threads: 1" in run.stdout, run.stdout


def test_the_rawdev_command_ends_with_its_code_its_exit_handlers_run_and_its_output_flushed(tmp_path):
    """The console entry point (rawdev.__main__, which starts a develop run's decoder before the CLI
    loads) skips the interpreter's teardown (0.15-0.2 s a run), not what the command says or
    cleans up: exit codes, every line written, atexit handlers (the decoder's)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = ("import atexit, sys\nfrom rawdev.__main__ import main\n"
            "atexit.register(lambda: print('handler ran', flush=False))\n"
            "sys.argv = ['rawdev', *sys.argv[1:]]\nmain()")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))

    def rawdev(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                              timeout=300)

    ok = rawdev("develop", str(root / "examples" / "chart_bayer.dng"), "-o", str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "chart_bayer.tif").is_file() and list(tmp_path.glob(".*")) == []
    assert ok.stdout.endswith("handler ran\n") and "1 ok, 0 skipped, 0 failed" in ok.stderr
    missing = rawdev("develop", str(tmp_path / "missing.dng"), "-o", str(tmp_path))
    assert missing.returncode == 1 and "missing.dng: file does not exist" in missing.stderr
    usage = rawdev("develop", "--format", "bogus", "x.dng")
    assert usage.returncode == 2 and "--format 'bogus'" in usage.stderr and "handler ran" in usage.stdout
    assert "rawdev " in rawdev("--version").stdout


def test_a_batch_lets_idle_onnxruntime_threads_sleep(inputs, tmp_path, bilinear_model, monkeypatch):
    import rawdev.session

    real, seen = rawdev.session.open_session, []

    def recording(*args, **kwargs):
        session = real(*args, **kwargs)
        seen.append(session.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning"))
        return session

    monkeypatch.setattr(rawdev.session, "open_session", recording)
    assert develop(inputs / "bayer.dng", "-o", tmp_path / "one", model=bilinear_model).exit_code == 0
    assert develop(inputs, "-o", tmp_path / "many", model=bilinear_model).exit_code == 0
    assert seen == ["1", "0"]  # one file: spin for the lowest latency; a batch: leave the cores to I/O


@pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_usage_error_not_a_silent_fallback(inputs, tmp_path, bilinear_model):
    result = develop(inputs, "-o", tmp_path / "out", "--device", "cuda", model=bilinear_model)
    assert result.exit_code == 2
    assert "CUDAExecutionProvider" in result.output and "--device cpu" in result.output


def test_a_damaged_dng_tag_fails_its_file_with_a_reason_not_a_python_exception(inputs, tmp_path, bilinear_model):
    bad = tmp_path / "in" / "damaged.dng"
    retype_raw_ifd(inputs / "bayer.dng", bad, 262, dtype=7)  # PhotometricInterpretation SHORT -> UNDEFINED
    result = develop(inputs, "-o", tmp_path / "out", model=bilinear_model)
    assert result.exit_code == 1
    (line,) = lines_about(result.output, "damaged.dng")
    assert "damaged DNG tag 262 (PhotometricInterpretation): holds UNDEFINED data where integers belong" in line
    assert "Error:" not in line
    assert "2 ok, 0 skipped, 1 failed" in result.output


def test_missing_model_and_empty_folder_are_usage_errors(inputs, tmp_path, bilinear_model):
    result = develop(inputs, "-o", tmp_path / "out", model=tmp_path / "missing.onnx")
    assert result.exit_code == 2 and "does not exist" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no raw here")
    result = develop(empty, model=bilinear_model)
    assert result.exit_code == 2 and "holds no RAW file" in result.output


# --- the tiler inside develop_mosaic -------------------------------------------------------------


def _gradient_mosaic(h: int, w: int) -> Mosaic:
    """A smooth ramp: the tiles' means differ, which is what makes seams with a tile-global model."""
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    rgb = np.stack([0.2 + 0.3 * x, 0.3 + 0.2 * y, 0.25 + 0.15 * x * y], axis=-1)
    cfa = parse_cfa("RGGB")
    data = np.round(mosaic(rgb, cfa) * 4000).astype(np.uint16)
    return Mosaic(data=data, cfa=cfa, black=np.zeros((2, 2)), white=4000.0, cam_to_srgb=np.eye(3))


def _overlap_zones(starts: tuple[int, ...], size: int, length: int, reach: int = 2) -> np.ndarray:
    """Mask over output-pixel differences (index i: pixel i+1 - pixel i) inside tile overlaps,
    widened by the model's reach (bilinear: 2 pixels), where a tile edge can show."""
    zone = np.zeros(length - 1, bool)
    for a, b in zip(starts, starts[1:]):
        zone[max(2 * b - 1 - reach, 0) : 2 * (a + size) + reach] = True
    return zone


def _seam(tiled: np.ndarray, whole: np.ndarray, plan) -> tuple[float, float]:
    """Largest change of gradient (tiled vs one tile) inside the overlaps and elsewhere."""
    gx = np.abs(np.diff(tiled, axis=1) - np.diff(whole, axis=1)).max(axis=(0, 2))
    gy = np.abs(np.diff(tiled, axis=0) - np.diff(whole, axis=0)).max(axis=(1, 2))
    zx = _overlap_zones(plan.cols.starts, plan.cols.size, tiled.shape[1])
    zy = _overlap_zones(plan.rows.starts, plan.rows.size, tiled.shape[0])
    return max(gx[zx].max(), gy[zy].max()), max(gx[~zx].max(), gy[~zy].max())


def test_small_tiles_match_one_big_tile_without_seams(mean_session):
    mos = _gradient_mosaic(200, 264)

    def run(tile: int, overlap: int) -> np.ndarray:
        options = DevelopOptions(wb="none", exposure="0", look="neutral", tile=tile, overlap=overlap)
        return develop_mosaic(mos, mean_session, options).image.astype(np.float64) / 65535

    whole = run(1024, 16)
    tiled = run(32, 16)
    plan = plan_tiles(100, 132, 32, 16)
    assert plan.count > 20  # really tiled
    # the model scales by its tile's mean, so tiles differ from the whole a little, never a lot
    diff = np.abs(tiled - whole)
    assert diff.max() < 0.05 and diff.mean() < 0.02
    at_seams, elsewhere = _seam(tiled, whole, plan)
    # the measure sees a seam when tiles barely overlap (2 samples: no room to feather) ...
    hard = run(28, 0)
    hard_at_seams, hard_elsewhere = _seam(hard, whole, plan_tiles(100, 132, 28, 0))
    assert hard_at_seams > 5 * hard_elsewhere  # measured: 0.012 at seams, 0.0007 elsewhere
    # ... and the feathered overlaps spread the tiles' difference into an invisible ramp:
    # under a quarter of an 8-bit level per pixel, a tenth of the hard seam's step
    # (measured: 0.0003 at the feathered seams, 0.00006 elsewhere)
    assert at_seams < 1e-3 and at_seams < hard_at_seams / 10


@pytest.mark.parametrize("small,large", [((500, 1200), (2000, 1200)), ((500, 1200), (500, 4800))],
                         ids=["taller", "wider"])
def test_tiler_memory_does_not_grow_with_the_image(bilinear_session, small, large):
    """Peak memory beyond the output image stays set by the tile, not the image: a 4x taller or
    4x wider image adds far less than one full-size float32 plane (a full-width band of tile
    rows would, in the wider case)."""
    options = DevelopOptions(wb="none", tile=64, overlap=8)

    def mosaic_of(height: int, width: int) -> Mosaic:
        return Mosaic(data=random_mosaic(height, width, seed=height + width), cfa=parse_cfa("RGGB"),
                      black=np.zeros((2, 2)), white=4095.0, cam_to_srgb=np.eye(3))

    develop_mosaic(mosaic_of(64, 64), bilinear_session, options)  # warm up: lookup tables built once
    extra = {size: _peak_beyond_image(mosaic_of(*size), bilinear_session, options, overlap=False)
             for size in (small, large)}
    # measured: +0.9 MB taller (the auto-exposure subsample); a float32 copy of the mosaic adds 7.2 MB
    full_float32_growth = (large[0] * large[1] - small[0] * small[1]) * 4
    assert extra[large] - extra[small] < full_float32_growth / 4, extra
    # rendering in the background holds at most a couple of finished blocks more, whatever the size
    block = (2 * options.tile) ** 2 * 3 * 4
    overlapped = _peak_beyond_image(mosaic_of(*large), bilinear_session, options, overlap=True)
    assert overlapped - extra[large] < 6 * block, (overlapped, extra[large], block)


def _peak_beyond_image(mosaic, session, options, overlap: bool) -> int:
    tracemalloc.start()
    try:
        image = develop_mosaic(mosaic, session, options, overlap=overlap).image
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - image.nbytes


@pytest.mark.parametrize("threads,cores,expected", [(0, 2, (1, 2)), (0, 1, (1, 1)), (0, 16, (4, 4)),
                                                    (0, 6, (1, 4)), (3, 2, (3, 1)), (1, 16, (1, 1))])
def test_every_core_runs_a_tile_of_its_own_unless_threads_are_given(threads, cores, expected):
    from rawdev.session import cpu_layout

    assert cpu_layout(threads, cores) == expected  # (intra-op threads, tiles at once)


def test_a_cpu_session_runs_tiles_concurrently_with_the_same_pixels(tmp_path, mean_model):
    import dataclasses

    from rawdev.raw import read_mosaic
    from rawdev.session import MAX_CONCURRENT_TILES, cpu_count, open_session

    session = open_session(mean_model, "cpu", 0)
    assert session.concurrency == min(cpu_count(), MAX_CONCURRENT_TILES)
    assert open_session(mean_model, "cpu", 1).concurrency == 1
    mosaic = read_mosaic(write_test_dng(tmp_path / "m.dng", random_mosaic(200, 260, seed=9), "RGGB"))
    options = DevelopOptions(tile=32, overlap=8)
    images = [develop_mosaic(mosaic, dataclasses.replace(session, concurrency=n), options, overlap=False).image
              for n in (1, 3)]
    assert np.array_equal(images[0], images[1])


@pytest.mark.parametrize("orientation,fmt", [(1, "tiff"), (6, "tiff"), (1, "png")])
def test_overlapped_rendering_and_encoding_write_the_same_bytes_as_the_serial_path(
        tmp_path, mean_model, monkeypatch, orientation, fmt):
    """Blocks rendered in the background and TIFF strips encoded as their rows finish (upright
    TIFFs) give byte for byte the file of the serial path, over many tiles of a model whose
    output depends on the whole tile."""
    src = write_test_dng(tmp_path / "many.dng", random_mosaic(300, 420, seed=5), "RGGB", orientation=orientation)
    written = {}
    for overlap in ("0", "1"):
        monkeypatch.setenv("RAWDEV_OVERLAP", overlap)
        out = tmp_path / f"out{overlap}"
        result = develop(src, "-o", out, "--tile", "48", "--overlap", "8", "--format", fmt, model=mean_model)
        assert result.exit_code == 0, result.output
        (written[overlap],) = out.iterdir()
    assert written["0"].read_bytes() == written["1"].read_bytes()


def test_a_failure_while_rendering_in_the_background_fails_the_file_not_the_batch(
        tmp_path, bilinear_model, monkeypatch):
    import rawdev.develop

    good = write_test_dng(tmp_path / "a_good.dng", random_mosaic(64, 64), "RGGB")
    write_test_dng(tmp_path / "b_bad.dng", random_mosaic(64, 64, seed=3), "RGGB")
    real = rawdev.develop.render_to_int
    calls = {"n": 0}

    def flaky(pixels, rendering, peak, out=None, **options):
        calls["n"] += 1
        if calls["n"] > 1:  # the first file's one block renders, the next file's fails
            raise RuntimeError("render broke")
        return real(pixels, rendering, peak, out=out, **options)

    monkeypatch.setattr(rawdev.develop, "render_to_int", flaky)
    result = develop(tmp_path, "-o", tmp_path / "out", "--jobs", "1", model=bilinear_model)  # patched here only
    assert result.exit_code == 1, result.output
    assert "render broke" in result.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == [good.stem + ".tif"]
