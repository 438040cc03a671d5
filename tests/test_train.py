"""The network, the synthetic data, the loss, and a short real train -> convert -> develop run."""

import json

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
from rawdev.train.loop import TrainConfig, charbonnier, learning_rate, make_loss, rmse, ssim_tf  # noqa: E402
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


def test_the_rmse_pixel_loss_is_each_crops_rms_error_averaged():
    """PSNR's error at L1's scale: a crop twice as far off counts twice, whatever the other's error."""
    rng = np.random.default_rng(1)
    t = rng.random((2, 16, 16, 3)).astype(np.float32)
    p = t.copy()
    p[0] += 0.02
    p[1] += rng.choice([-0.06, 0.06], t.shape[1:]).astype(np.float32)
    assert float(rmse(tf.constant(p), tf.constant(t))) == pytest.approx((0.02 + 0.06) / 2, rel=1e-4)
    assert float(charbonnier(tf.constant(p), tf.constant(t))) == pytest.approx(0.04, rel=1e-3)  # the same mean |e|
    spread = p.copy()
    spread[0] = t[0] + rng.choice([-0.01, 0.03], t.shape[1:]).astype(np.float32)  # same mean |e|, larger RMS
    assert float(rmse(tf.constant(spread), tf.constant(t))) > float(rmse(tf.constant(p), tf.constant(t)))
    config = TrainConfig("run", output_space="srgb", ssim_weight=0.0, pixel_loss="rmse")
    loss_fn, _ = make_loss(config)
    assert float(loss_fn(tf.constant(p), tf.constant(t))) == pytest.approx(0.04, rel=1e-4)


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


def test_the_srgb_loss_space_scores_each_sample_through_its_own_colour_matrix(tmp_path):
    from rawdev.train.loop import output_space

    rng = np.random.default_rng(7)
    rgb = rng.random((2, 4, 5, 3)).astype(np.float32)
    matrices = rng.normal(size=(2, 3, 3)).astype(np.float32)
    expected = np.stack([rgb[i] @ matrices[i].T for i in range(2)])
    np.testing.assert_allclose(np.asarray(output_space(rgb, matrices)), expected, rtol=1e-5, atol=1e-6)

    data = _photos(tmp_path / "photos", 2, 96, 0)
    run = tmp_path / "run"
    args = ["train", str(run), "--data", str(data), "--val", "", "--width", "8", "--batch", "2", "--patch", "32",
            "--steps", "2", "--checkpoint-every", "2"]
    bad = runner.invoke(app, [*args, "--loss-space", "xyz"])
    assert bad.exit_code == 2 and "--loss-space 'xyz'" in bad.output and not run.exists()
    bad = runner.invoke(app, [*args, "--pixel-loss", "l7"])
    assert bad.exit_code == 2 and "--pixel-loss 'l7'" in bad.output and not run.exists()
    res = runner.invoke(app, [*args, "--loss-space", "srgb", "--pixel-loss", "rmse"])
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["loss_space"] == "srgb" and saved["pixel_loss"] == "rmse"
    assert (run / "checkpoints" / "ckpt-2.index").exists()


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


def test_noise_variant_warm_starts_from_a_residual_run_and_converts_to_a_noise_aware_model(tmp_path):
    """A residual run's checkpoint starts the noise variant where it was (the noise branches begin
    at zero); the converted model says it takes the sigma planes, and develop --denoise runs it."""
    from rawdev.model import NOISE_CONTRACT
    from rawdev.train.loop import _warm_start

    data = _photos(tmp_path / "photos", 3, 96, 0)
    val = _photos(tmp_path / "val", 1, 64, 1)
    common = ["--data", str(data), "--val", str(val), "--width", "8", "--batch", "2", "--patch", "32",
              "--checkpoint-every", "2", "--steps", "2"]
    parent = runner.invoke(app, ["train", str(tmp_path / "res"), *common])
    assert parent.exit_code == 0, parent.output

    residual = build_csanet(8, "residual")
    tf.train.Checkpoint(model=residual).restore(str(tmp_path / "res" / "checkpoints" / "ckpt-2")).expect_partial()
    noise = build_csanet(8, "noise")
    copied = _warm_start(noise, tmp_path / "res")
    assert {"head_down", "half_skip", "dam1_conv1", "rgb"} <= set(copied)
    x = np.random.default_rng(0).random((1, 12, 16, 8)).astype(np.float32)
    np.testing.assert_allclose(noise(x).numpy(), residual(x[..., :4]).numpy(), atol=1e-6)

    run = tmp_path / "noise"
    child = runner.invoke(app, ["train", str(run), *common, "--variant", "noise", "--warm-start",
                                str(tmp_path / "res"), "--colour-weight", "1", "--hard-fraction", "0.5"])
    assert child.exit_code == 0, child.output
    assert "warm start from" in child.output
    onnx_path = tmp_path / "n.onnx"
    conv = runner.invoke(app, ["convert-weights", str(run), "-o", str(onnx_path)])
    assert conv.exit_code == 0, conv.output
    contract = read_contract(onnx_path)
    assert (contract.variant, contract.noise_input, contract.clip_below_black) == (
        "noise", NOISE_CONTRACT["noise_input"], NOISE_CONTRACT["clip_below_black"])

    cap = Unprocessor(seed=4).capture(np.random.default_rng(3).random((40, 48, 3)).astype(np.float32), RGGB,
                                      shot=1e-3)
    dng = tmp_path / "shot.dng"
    write_dng(dng, cap.raw, RGGB, black=cap.black, white=int(cap.white), xyz_to_cam=cap.xyz_to_cam,
              wb_gains=cap.wb_gains)
    dev = runner.invoke(app, ["develop", str(dng), "-o", str(tmp_path / "out"), "--model", str(onnx_path),
                              "--denoise", "0.5"])
    assert dev.exit_code == 0, dev.output


def test_noise_aware_samples_carry_sigma_planes_and_grain_targets_for_lower_strengths(tmp_path):
    from rawdev.train.synth import TrainingData, bilinear_demosaic, mosaic_gains

    photos = [np.random.default_rng(i).integers(0, 255, (80, 80, 3)).astype(np.uint8) for i in range(2)]
    data = TrainingData(photos, patch=32, seed=0, quad_fraction=0.0, noise_input=True, strength_fraction=1.0,
                        clean_fraction=0.0)
    packed, target, _, _ = data.sample()
    assert packed.shape == (16, 16, 8)
    assert (packed[..., 4:] > 0).all()  # told a noise level
    assert target.shape == (32, 32, 3)
    # the grain term is what bilinear demosaicking makes of the mosaic's noise
    noise = np.random.default_rng(1).standard_normal((32, 32)).astype(np.float32)
    grain = bilinear_demosaic(noise * mosaic_gains(np.array([2.0, 1.0, 1.5]), noise.shape))
    assert grain.shape == (32, 32, 3)
    np.testing.assert_allclose(grain[0::2, 0::2, 0], 2.0 * noise[0::2, 0::2], rtol=1e-6)
    clean = TrainingData(photos, patch=32, seed=0, quad_fraction=0.0, noise_input=True, clean_fraction=1.0)
    packed_clean = clean.sample()[0]
    assert packed_clean[..., 4:].max() < 1e-3  # quantization alone


def test_hard_patch_mining_prefers_crops_that_bilinear_demosaicking_gets_wrong():
    from rawdev.train.synth import TrainingData, demosaic_difficulty

    flat = np.full((128, 128, 3), 128, np.uint8)
    stripes = flat.copy()
    stripes[:, ::2] = 255
    mixed = np.concatenate([flat, stripes], axis=1)
    assert demosaic_difficulty(stripes[:32, :32] / 255) > demosaic_difficulty(flat[:32, :32] / 255)
    data = TrainingData([mixed], patch=32, seed=0, hard_fraction=1.0, hard_candidates=8)
    picked = [demosaic_difficulty(data.hard_crop()) for _ in range(10)]
    random = [demosaic_difficulty(data.crop()) for _ in range(10)]
    assert np.mean(picked) > np.mean(random)


def test_lowpass_colour_term_sees_a_colour_cast_that_averages_out_per_pixel_noise_does_not():
    from rawdev.train.loop import lowpass_colour

    rng = np.random.default_rng(0)
    target = tf.constant(np.full((1, 32, 32, 3), 0.3, np.float32))
    noisy = target + tf.constant(rng.choice([-0.05, 0.05], (1, 32, 32, 3)).astype(np.float32))
    cast = target + tf.constant([0.0, 0.05, 0.0])
    assert float(lowpass_colour(noisy, target, True)) < 0.5 * float(lowpass_colour(cast, target, True))


def test_stronger_than_one_targets_are_blurred_and_keep_the_mean():
    from rawdev.train.synth import gaussian_blur

    rng = np.random.default_rng(0)
    img = rng.random((40, 40, 3)).astype(np.float32)
    np.testing.assert_array_equal(gaussian_blur(img, 0.0), img)
    soft, softer = gaussian_blur(img, 0.5), gaussian_blur(img, 1.0)
    assert img.std() > soft.std() > softer.std()
    assert abs(softer.mean() - img.mean()) < 0.01
    flat = np.full((20, 20, 3), 0.4, np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, 1.5), flat, atol=1e-6)


def _randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(rng.normal(0, 0.1, w.shape).astype(np.float32))
    return model


def test_a_lowpass_free_correction_gives_a_flat_field_back_whatever_the_correction_adds():
    """A constant correction (the output conv's bias: a colour cast) is taken off entirely, at
    every tile size including the smallest; without the option it casts the field."""
    grey = np.full((1, 24, 20, 8), 0.01, np.float32)
    grey[..., :4] = np.array([0.3, 0.15, 0.15, 0.6], np.float32)
    for lowpass, cast in ((8.0, False), (0.0, True)):
        model = build_csanet(8, "noise", correction_lowpass=lowpass)
        rgb = model.get_layer("rgb")
        kernel, bias = rgb.get_weights()
        rgb.set_weights([kernel, bias + np.array([0.05, -0.03, 0.02], np.float32)])
        for size in ((24, 20), (2, 2)):
            out = model(grey[:, : size[0], : size[1]]).numpy()[0]
            drift = np.abs(out - np.array([0.3, 0.15, 0.6], np.float32)).max()
            assert (drift > 0.01) if cast else (drift < 1e-6), (lowpass, size, drift)


def test_a_lowpass_free_correction_takes_off_the_local_mean_and_folds_exactly():
    from rawdev.train.network import correction_lowpass_sigma, fold_for_inference

    model = _randomized(build_csanet(8, "noise", correction_lowpass=8.0))
    assert correction_lowpass_sigma(model) == 8.0
    assert correction_lowpass_sigma(build_csanet(8, "noise")) == 0.0
    x = np.random.default_rng(1).random((1, 64, 48, 8)).astype(np.float32)
    out = model(x).numpy()[0]
    folded = fold_for_inference(model)(x).numpy()[0]
    np.testing.assert_allclose(folded, out, atol=2e-6)
    # what is left of the correction averages out over areas larger than the sigma
    base = build_csanet(8, "noise")(x).numpy()[0]  # the zero-initialised output: the bilinear base
    area_mean = (out - base)[16:112, 16:80].reshape(6, 16, 4, 16, 3).mean(axis=(1, 3))
    assert np.abs(area_mean).max() < 0.25 * np.abs(out - base).mean()

    with pytest.raises(ValueError, match="bilinear base"):
        build_csanet(8, "paper", correction_lowpass=8.0)


def test_a_deep_half_resolution_path_folds_exactly_and_warm_starts_from_the_trunk():
    """half_depth adds 3x3 convolutions of width C/2 at H/2; the sub-pixel fold still gives the
    same function, and a checkpoint of the shallow network seeds every layer both share."""
    from rawdev.train.network import architecture, fold_for_inference, warm_start

    deep = _randomized(build_csanet(8, "noise", n_dam=1, half_depth=2, correction_lowpass=8.0))
    assert [layer.name for layer in deep.layers if layer.name.startswith("half_conv")] == ["half_conv1", "half_conv2"]
    assert deep.get_layer("half_fuse").filters == 4
    x = np.random.default_rng(2).random((1, 40, 36, 8)).astype(np.float32)
    np.testing.assert_allclose(fold_for_inference(deep)(x).numpy(), deep(x).numpy(), atol=2e-6)

    shallow = _randomized(build_csanet(8, "noise"))
    fresh = build_csanet(8, "noise", **architecture({"n_dam": 1, "half_depth": 2, "width": 8}))
    copied = warm_start(fresh, shallow)
    assert {"head_down", "head_conv", "half_skip"} <= set(copied)
    assert not {"up", "half_fuse", "rgb"} & set(copied)  # their shapes changed
    with pytest.raises(ValueError, match="H/2 shortcut"):
        build_csanet(8, "paper", half_depth=2)


def test_an_empty_val_means_no_validation_not_the_current_folder(tmp_path, monkeypatch):
    data = _photos(tmp_path / "photos", 3, 96, 0)
    monkeypatch.chdir(data)  # photographs here: "--val ''" must not read them
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", str(run), "--data", str(data), "--val", "", "--width", "8", "--batch", "2",
                              "--patch", "32", "--steps", "2", "--checkpoint-every", "2", "--validate-every", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "config.json").read_text())["val_dir"] == ""
    last = (run / "log.csv").read_text().strip().splitlines()[-1].split(",")
    assert last[0] == "2" and last[6] == ""  # no validation PSNR


def test_a_half_resolution_branch_starts_as_the_network_without_it_and_folds_exactly():
    """half_branch adds a residual branch at H/2 whose output starts at zero: warm-started from a
    network without it, the function is that network's until training moves it."""
    from rawdev.train.network import fold_for_inference, warm_start

    plain = _randomized(build_csanet(8, "noise", n_dam=1, correction_lowpass=8.0), seed=3)
    branched = build_csanet(8, "noise", n_dam=1, half_branch=1, correction_lowpass=8.0)
    copied = warm_start(branched, plain)
    assert "half_fuse" in copied and "rgb" in copied and "half_branch1" not in copied
    x = np.random.default_rng(5).random((1, 24, 28, 8)).astype(np.float32)
    np.testing.assert_allclose(branched(x).numpy(), plain(x).numpy(), atol=1e-6)
    trained = _randomized(branched, seed=4)
    assert np.abs(trained(x).numpy() - plain(x).numpy()).max() > 1e-3
    np.testing.assert_allclose(fold_for_inference(trained)(x).numpy(), trained(x).numpy(), atol=2e-6)
    with pytest.raises(ValueError, match="not both"):
        build_csanet(8, "noise", half_depth=1, half_branch=1)


def test_a_narrow_branch_without_the_head_conv_folds_exactly_and_takes_the_rest_of_a_checkpoint():
    from rawdev.train.network import fold_for_inference, warm_start

    lean = build_csanet(8, "noise", half_branch=2, branch_width=2, head_conv=False, correction_lowpass=8.0)
    names = [layer.name for layer in lean.layers]
    assert "head_conv" not in names and lean.get_layer("half_branch2").filters == 2
    copied = warm_start(lean, _randomized(build_csanet(8, "noise", correction_lowpass=8.0), seed=6))
    assert {"head_down", "dam1_conv1", "dam2_fuse", "half_fuse", "rgb"} <= set(copied)
    trained = _randomized(lean, seed=7)
    x = np.random.default_rng(8).random((1, 20, 24, 8)).astype(np.float32)
    np.testing.assert_allclose(fold_for_inference(trained)(x).numpy(), trained(x).numpy(), atol=2e-6)


def test_a_learned_base_starts_as_the_bilinear_one_keeps_flat_fields_and_folds_exactly():
    """learned_base adds a trainable zero-DC filter to the bilinear base: warm-started, the function
    is the checkpoint's; trained, it sharpens edges but gives a flat mosaic exactly the bilinear
    base's colour; and it folds into the base's one convolution."""
    from rawdev.train.network import fold_for_inference, warm_start

    plain = _randomized(build_csanet(8, "noise", n_dam=1, correction_lowpass=8.0), seed=9)
    learned = build_csanet(8, "noise", n_dam=1, correction_lowpass=8.0, learned_base=20.0)
    copied = warm_start(learned, plain)
    assert "rgb" in copied and "base_delta" not in copied
    x = np.random.default_rng(10).random((1, 20, 24, 8)).astype(np.float32)
    np.testing.assert_allclose(learned(x).numpy(), plain(x).numpy(), atol=1e-6)

    learned.get_layer("base_delta").kernel.assign(np.random.default_rng(11).normal(0, 0.01, (3, 3, 4, 12)))  # x20
    assert np.abs(learned(x).numpy() - plain(x).numpy()).max() > 1e-2
    flat = np.concatenate([np.full((1, 20, 24, 4), 0.3, np.float32) * [1.0, 0.6, 0.6, 0.4],
                           np.full((1, 20, 24, 4), 0.01, np.float32)], axis=-1)
    np.testing.assert_allclose(learned(flat).numpy(), plain(flat).numpy(), atol=1e-6)
    np.testing.assert_allclose(fold_for_inference(learned)(x).numpy(), learned(x).numpy(), atol=2e-6)
    # The same filter warm-started into a network that gives it another gain: the same function.
    faster = build_csanet(8, "noise", n_dam=1, correction_lowpass=8.0, learned_base=100.0)
    assert "base_delta" in warm_start(faster, learned)
    np.testing.assert_allclose(faster(x).numpy(), learned(x).numpy(), atol=2e-6)
    with pytest.raises(ValueError, match="bilinear base"):
        build_csanet(8, "paper", learned_base=1.0)


def test_narrower_dams_warm_start_with_the_strongest_channels_and_fold_exactly():
    """dam_inner narrows each DAM between its 3x3 convolutions; warm-started from a wider network
    whose dropped channels carry nothing (zero filters), the function is the wider network's."""
    from rawdev.train.network import fold_for_inference, strongest_channels, warm_start

    wide = _randomized(build_csanet(8, "noise", correction_lowpass=8.0, learned_base=20.0), seed=5)
    for name, silent in (("dam1", [1, 6]), ("dam2", [0, 3])):
        w, b = wide.get_layer(f"{name}_conv1").get_weights()
        w[..., silent], b[silent] = 0.0, -1.0  # ReLU(negative bias) = 0: these channels carry nothing
        wide.get_layer(f"{name}_conv1").set_weights([w, b])
    narrow = build_csanet(8, "noise", correction_lowpass=8.0, learned_base=20.0, dam_inner=6)
    copied = warm_start(narrow, wide)
    assert {"dam1_conv1 (narrowed)", "dam1_conv2 (narrowed)", "dam2_conv1 (narrowed)", "head_conv"} <= set(copied)
    assert narrow.get_layer("dam1_conv1").filters == 6
    assert list(strongest_channels(wide.get_layer("dam1_conv1").get_weights(),
                                   wide.get_layer("dam1_conv2").get_weights(), 6)) == [0, 2, 3, 4, 5, 7]
    x = np.random.default_rng(4).random((1, 40, 36, 8)).astype(np.float32)
    np.testing.assert_allclose(narrow(x).numpy(), wide(x).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fold_for_inference(narrow)(x).numpy(), narrow(x).numpy(), rtol=1e-5, atol=1e-5)
