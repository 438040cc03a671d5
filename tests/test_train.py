"""The network, the synthetic data, the loss, and a short real train -> convert -> develop run."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import imagecodecs  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from rawdev import cfa  # noqa: E402
from rawdev.cli import app  # noqa: E402
from rawdev.dng import write_dng  # noqa: E402
from rawdev.metrics import ssim  # noqa: E402
from rawdev.model import read_contract  # noqa: E402
from rawdev.output import read_image  # noqa: E402
from rawdev.train.loop import charbonnier, learning_rate, ssim_tf  # noqa: E402
from rawdev.train.network import build_csanet  # noqa: E402
from rawdev.train.synth import RGGB, Unprocessor, network_input, read_level  # noqa: E402

runner = CliRunner()


@pytest.mark.parametrize("variant", ["paper", "residual"])
def test_network_maps_packed_planes_to_full_resolution_rgb(variant):
    model = build_csanet(32, variant)
    out = model(np.zeros((2, 12, 20, 4), np.float32))
    assert out.shape == (2, 24, 40, 3)
    assert 55_000 < model.count_params() < 75_000  # ~64k for the paper's C=32 (design brief: ~67k)


def test_residual_variant_starts_as_a_bilinear_demosaic():
    model = build_csanet(16, "residual")
    grey = np.full((1, 8, 8, 4), 0.3, np.float32) * np.array([1.0, 0.5, 0.5, 2.0], np.float32)
    out = model(grey).numpy()[0]
    np.testing.assert_allclose(out, np.broadcast_to([0.3, 0.15, 0.6], out.shape), atol=1e-6)


@pytest.mark.parametrize("name", cfa.BAYER_NAMES + ("quad-RGGB",))
def test_synthetic_capture_is_the_mosaic_of_the_target_on_every_cfa(name):
    pattern = cfa.parse_cfa(name)
    rng = np.random.default_rng(0)
    srgb = rng.random((24, 32, 3)).astype(np.float32)
    unproc = Unprocessor(seed=1)
    cap = unproc.capture(srgb, pattern, shot=1e-12, read=0.0, bits=16, black_fraction=1 / 16)
    norm = (cap.raw.astype(np.float64) - cap.black) / (cap.white - cap.black)
    sensor = cap.linear_cam / cap.wb_gains
    expected = cfa.mosaic(np.clip(sensor, 0, 1), pattern)
    np.testing.assert_allclose(norm, expected, atol=1.0 / (cap.white - cap.black))


def test_noise_follows_the_heteroscedastic_model():
    unproc = Unprocessor(seed=2)
    flat = np.full((256, 256, 3), 0.5, np.float32)
    shot = 4e-3
    cap = unproc.capture(flat, RGGB, shot=shot, bits=16, wb_gains=np.ones(3), xyz_to_cam=_srgb_camera())
    norm = (cap.raw.astype(np.float64) - cap.black) / (cap.white - cap.black)
    clean = cfa.mosaic(np.clip(cap.linear_cam, 0, 1), RGGB)
    var = np.var(norm - clean)
    expected = np.mean(shot * clean + read_level(shot))
    assert var == pytest.approx(expected, rel=0.1)


def _srgb_camera():
    from rawdev.color import SRGB_TO_XYZ

    return np.linalg.inv(SRGB_TO_XYZ)


def test_network_input_is_normalized_white_balanced_and_packed():
    raw = np.array([[1000, 2000], [3000, 4095]], np.uint16)
    packed = network_input(raw, black=0, white=4095, wb_gains=np.array([2.0, 1.0, 1.5]))
    np.testing.assert_allclose(packed[0, 0], [min(2 * 1000 / 4095, 1), 2000 / 4095, 3000 / 4095, 1.0], rtol=1e-6)


def test_loss_terms():
    rng = np.random.default_rng(0)
    a = rng.random((2, 32, 32, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.05, a.shape), 0, 1).astype(np.float32)
    assert float(charbonnier(tf.constant(a), tf.constant(a))) == pytest.approx(1e-6, rel=1e-3)
    assert float(charbonnier(tf.constant(a), tf.constant(b))) > 0.02
    # our separable SSIM is Wang et al.'s SSIM (numpy reference, itself checked against scikit-image)
    expected = np.mean([ssim(a[i], b[i]) for i in range(2)])
    assert float(ssim_tf(tf.constant(a), tf.constant(b))) == pytest.approx(expected, abs=1e-5)


def test_learning_rate_follows_the_papers_steps_scaled_to_the_run():
    assert [learning_rate(s, 1000) for s in (0, 199, 200, 499, 500, 799, 800, 999)] == [
        5e-4, 5e-4, 1e-4, 1e-4, 5e-5, 5e-5, 1e-5, 1e-5]


def _photos(folder, n, size, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.random((size // 8, size // 8, 3))
        img = np.kron(base, np.ones((8, 8, 1)))
        imagecodecs.imwrite(str(folder / f"p{i}.png"), (img * 255).astype(np.uint8))
    return folder


def test_train_from_scratch_resume_convert_and_develop(tmp_path):
    data = _photos(tmp_path / "photos", 3, 96, 0)
    val = _photos(tmp_path / "val", 2, 64, 1)
    run = tmp_path / "run"
    common = [str(run), "--data", str(data), "--val", str(val), "--width", "8", "--batch", "2", "--patch", "32",
              "--checkpoint-every", "2", "--validate-every", "2"]
    first = runner.invoke(app, ["train", *common, "--steps", "2"])
    assert first.exit_code == 0, first.output
    assert "perceptual (VGG-19) term: off" in first.output
    assert (run / "checkpoints" / "ckpt-2.index").exists()
    second = runner.invoke(app, ["train", *common, "--steps", "4"])
    assert second.exit_code == 0, second.output
    assert "resumed from" in second.output and "ckpt-2" in second.output
    log = (run / "log.csv").read_text().strip().splitlines()
    assert log[0].startswith("step,samples") and [row.split(",")[0] for row in log[1:]] == ["2", "4"]
    assert log[-1].split(",")[6] != ""  # validation PSNR was measured
    curves = read_image(run / "curves.png")  # redrawn with every log row
    assert curves.shape[1] > 1000 and curves.std() > 0

    onnx_path = tmp_path / "m.onnx"
    conv = runner.invoke(app, ["convert-weights", str(run), "-o", str(onnx_path)])
    assert conv.exit_code == 0, conv.output
    assert "largest difference to TensorFlow" in conv.output
    contract = read_contract(onnx_path)
    assert (contract.steps, contract.width, contract.output_space) == (4, 8, "linear")

    rng = np.random.default_rng(3)
    cap = Unprocessor(seed=4).capture(rng.random((40, 48, 3)).astype(np.float32), RGGB, shot=1e-3)
    dng = tmp_path / "shot.dng"
    write_dng(dng, cap.raw, RGGB, black=cap.black, white=int(cap.white), xyz_to_cam=cap.xyz_to_cam,
              wb_gains=cap.wb_gains)
    dev = runner.invoke(app, ["develop", str(dng), "-o", str(tmp_path / "out"), "--model", str(onnx_path)])
    assert dev.exit_code == 0, dev.output
    assert (tmp_path / "out" / "shot.tif").exists()


def test_paired_training_makes_an_srgb_model(tmp_path):
    raw_dir, rgb_dir = tmp_path / "raw", tmp_path / "rgb"
    raw_dir.mkdir()
    rgb_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        rgb = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        mosaic = cfa.mosaic(rgb.astype(np.float64) / 255 * 1020, RGGB).astype(np.uint16)
        imagecodecs.imwrite(str(raw_dir / f"{i}.png"), mosaic)
        imagecodecs.imwrite(str(rgb_dir / f"{i}.png"), rgb)
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", str(run), "--pairs", str(raw_dir), str(rgb_dir), "--width", "8",
                              "--batch", "2", "--patch", "32", "--steps", "2", "--checkpoint-every", "2"])
    assert res.exit_code == 0, res.output
    conv = runner.invoke(app, ["convert-weights", str(run), "-o", str(tmp_path / "p.onnx")])
    assert conv.exit_code == 0, conv.output
    c = read_contract(tmp_path / "p.onnx")
    assert (c.output_space, c.normalization, c.white_balance) == ("srgb", "mai", "none")


def test_quad_bayer_samples_go_through_the_pipelines_binning():
    from rawdev.train.synth import QUAD_RGGB, TrainingData

    rng = np.random.default_rng(5)
    photos = [(rng.random((80, 80, 3)) * 255).astype(np.uint8) for _ in range(2)]
    data = TrainingData(photos, patch=32, seed=0, quad_fraction=1.0)
    packed, target, _, _ = data.sample()
    assert packed.shape == (16, 16, 4) and target.shape == (32, 32, 3)
    # binning a noise-free quad capture of a flat colour gives that colour's Bayer planes
    cap = Unprocessor(seed=3).capture(np.full((32, 32, 3), 0.5, np.float32), QUAD_RGGB, shot=1e-12, read=0.0,
                                      bits=16)
    planes = network_input(cap.raw, cap.black, cap.white, cap.wb_gains, QUAD_RGGB)
    assert planes.shape == (8, 8, 4)
    expected = np.clip(cap.linear_cam[0, 0], 0, 1)[[0, 1, 1, 2]]
    np.testing.assert_allclose(planes, np.broadcast_to(expected, planes.shape), atol=2e-4)
