"""Training loop: the paper's loss and step schedule, TensorFlow checkpoints, resume, CSV log."""

from __future__ import annotations

import csv
import json
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rawdev.color import Rendering, render
from rawdev.metrics import psnr, ssim

LR_STEPS = ((0.2, 5e-4), (0.5, 1e-4), (0.8, 5e-5), (1.01, 1e-5))
# What a resumed run takes from the command line rather than from its saved config.
RESUME_OVERRIDES = ("steps", "checkpoint_every", "validate_every")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved next to its checkpoints."""

    run_dir: str
    variant: str = "residual"
    width: int = 32
    steps: int = 60000
    batch: int = 16
    patch: int = 128
    seed: int = 0
    train_dirs: list[str] = field(default_factory=lambda: ["../shared/data/train"])
    val_dir: str = "../shared/data/val/cbsd68"
    pairs: tuple[str, str] | None = None
    output_space: str = "linear"
    ssim_weight: float = 0.1
    vgg_weights: str | None = None
    vgg_weight: float = 0.001
    checkpoint_every: int = 500
    validate_every: int = 2000
    val_images: int = 12
    keep_checkpoints: int = 3
    colour_weight: float = 0.0  # L1 on 8x8-averaged colour: keeps flat patches' mean colour
    hard_fraction: float = 0.0  # share of crops mined for demosaicking difficulty
    warm_start: str | None = None  # checkpoint (or run folder) of another CSANet to start from
    lr_max: float | None = None  # cap on the paper's schedule (for a warm start)
    balance_sets: bool = False  # each sub-folder of a training folder drawn equally often
    flat_fraction: float = 0.0  # share of flat colour fields (mean colour must come back)
    dark_fraction: float = 0.0  # share of scenes 0-6 stops under the usual brightness
    max_shot: float | None = None  # top of the shot-noise range (default synth.SHOT_RANGE[1])
    correction_lowpass: float = 0.0  # sigma (px) of the local mean taken off the correction; 0 = off
    n_dam: int = 2  # dual attention modules in the H/4 trunk
    half_depth: int = 0  # 3x3 convolutions (width C/2) at H/2; 0 = the 1x1 fuse of width C
    half_branch: int = 0  # 3x3 convolutions (width C/2) in a zero-initialised residual branch at H/2
    branch_width: int = 0  # that branch's width; 0 = C/2
    head_conv: bool = True  # the 3x3 convolution between the strided head and the first DAM
    learned_base: float = 0.0  # gain of a trainable zero-DC filter added to the bilinear base (0: none)
    dam_inner: int = 0  # channels inside each DAM, between its 3x3 convolutions (0: width)
    # Where the loss compares: "camera" (white-balanced camera RGB, as the network outputs it) or
    # "srgb" (through each sample's camera -> sRGB matrix first, as the image is scored and seen:
    # the matrix amplifies chroma errors, which the camera-space loss under-weights).
    loss_space: str = "camera"
    # The pixel term: "charbonnier" (a smooth L1) or "rmse" (each crop's root-mean-square error,
    # averaged: the error PSNR scores, at L1's scale, so the SSIM and colour terms keep their weight).
    pixel_loss: str = "charbonnier"

    @property
    def noise_input(self) -> bool:
        return self.variant == "noise"


LOSS_SPACES = ("camera", "srgb")
PIXEL_LOSSES = ("charbonnier", "rmse")


def learning_rate(step: int, total: int, lr_max: float | None = None) -> float:
    """The paper's schedule (5e-4, then 1e-4, 5e-5, 1e-5 at 20/50/80% of the run), at most
    ``lr_max``."""
    frac = step / max(total, 1)
    rate = LR_STEPS[-1][1]
    for edge, lr in LR_STEPS:
        if frac < edge:
            rate = lr
            break
    return min(rate, lr_max) if lr_max else rate


def tone_tf(x):
    """sRGB transfer extended linearly below zero, so the loss has gradients everywhere."""
    import tensorflow as tf

    high = 1.055 * tf.pow(tf.maximum(x, 0.0031308), 1 / 2.4) - 0.055
    return tf.where(x <= 0.0031308, 12.92 * x, high)


def charbonnier(pred, target, eps: float = 1e-6):
    import tensorflow as tf

    return tf.reduce_mean(tf.sqrt(tf.square(pred - target) + eps * eps))


def rmse(pred, target, eps: float = 1e-6):
    """Each (N, H, W, C) sample's root-mean-square error, averaged over the batch."""
    import tensorflow as tf

    return tf.reduce_mean(tf.sqrt(tf.reduce_mean(tf.square(pred - target), axis=[1, 2, 3]) + eps * eps))


class PerceptualLoss:
    """VGG-19 feature distance (last conv layer) from a user-supplied weights file."""

    def __init__(self, weights_path: str):
        import keras

        vgg = keras.applications.VGG19(include_top=False, weights=None)
        vgg.load_weights(weights_path)
        self.model = keras.Model(vgg.input, vgg.get_layer("block5_conv4").output)
        self.model.trainable = False

    def __call__(self, pred, target):
        import tensorflow as tf

        mean = tf.constant([103.939, 116.779, 123.68])
        def prep(x):
            return tf.reverse(x * 255.0, axis=[-1]) - mean
        return tf.reduce_mean(tf.square(self.model(prep(pred)) - self.model(prep(target))))


def ssim_tf(x, y, max_val: float = 1.0):
    """Mean SSIM (Gaussian 11, sigma 1.5, valid windows) with separable filtering.

    tf.image.ssim computes the same figure but with a dense 11x11 filter that costs several
    times the network's own training step on this CPU.
    """
    import tensorflow as tf

    from rawdev.metrics import _gaussian_1d

    g = tf.constant(_gaussian_1d(), tf.float32)
    channels = x.shape[-1]
    stack = tf.concat([x, y, x * x, y * y, x * y], axis=-1)
    n = 5 * channels
    kh = tf.tile(tf.reshape(g, (11, 1, 1, 1)), (1, 1, n, 1))
    kw = tf.tile(tf.reshape(g, (1, 11, 1, 1)), (1, 1, n, 1))
    f = tf.nn.depthwise_conv2d(stack, kh, [1, 1, 1, 1], "VALID")
    f = tf.nn.depthwise_conv2d(f, kw, [1, 1, 1, 1], "VALID")
    mx, my, xx, yy, xy = tf.split(f, 5, axis=-1)
    cov = 121.0 / 120.0
    sxx, syy, sxy = cov * (xx - mx * mx), cov * (yy - my * my), cov * (xy - mx * my)
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return tf.reduce_mean(s)


def lowpass_colour(pred, target, linear: bool, size: int = 8):
    """Mean absolute difference of the 8x8 block means (averaged in linear light, then toned):
    the colour of flat areas, which per-pixel losses let drift under noise."""
    import tensorflow as tf

    def pool(x):
        m = tf.nn.avg_pool2d(x, size, size, "VALID")
        return tone_tf(m) if linear else m

    return tf.reduce_mean(tf.abs(pool(pred) - pool(target)))


def output_space(rgb, matrices):
    """(N, H, W, 3) camera RGB through each sample's (N, 3, 3) camera -> sRGB matrix (TensorFlow)."""
    import tensorflow as tf

    return tf.einsum("nhwc,ndc->nhwd", rgb, matrices)


def make_loss(config: TrainConfig):
    """Charbonnier (or RMSE) + w * (1 - SSIM) [+ 0.001 VGG] [+ low-pass colour] on tone-mapped output."""
    import tensorflow as tf

    perceptual = PerceptualLoss(config.vgg_weights) if config.vgg_weights else None

    def loss_fn(pred, target):
        if config.output_space == "linear":
            p, t = tone_tf(pred), tone_tf(target)
        else:
            p, t = pred, target
        loss = rmse(p, t) if config.pixel_loss == "rmse" else charbonnier(p, t)
        if config.ssim_weight:
            s = ssim_tf(tf.clip_by_value(p, 0.0, 1.0), t)
            loss = loss + config.ssim_weight * (1.0 - s)
        if perceptual is not None:
            loss = loss + config.vgg_weight * perceptual(tf.clip_by_value(p, 0, 1), t)
        if config.colour_weight:
            loss = loss + config.colour_weight * lowpass_colour(pred, target, config.output_space == "linear")
        return loss

    return loss_fn, perceptual is not None


class BatchPrefetcher:
    """Synthesizes batches in a background thread so numpy work overlaps the training step."""

    def __init__(self, make_batch, depth: int = 4):
        self.queue: queue.Queue = queue.Queue(depth)
        self.make_batch = make_batch
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            batch = self.make_batch()
            while not self.stop.is_set():
                try:
                    self.queue.put(batch, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def get(self):
        return self.queue.get()

    def close(self):
        self.stop.set()


def validation_set(config: TrainConfig):
    """Fixed synthetic captures of held-out photographs at low and medium noise."""
    from rawdev.color import cam_to_srgb_matrix
    from rawdev.train.synth import NOISE_LEVELS, RGGB, Unprocessor, load_photographs, network_input

    images = load_photographs([Path(config.val_dir)])[: config.val_images]
    unproc = Unprocessor(seed=1234)
    items = []
    for level in ("low", "medium"):
        for img in images:
            h, w = (img.shape[0] // 4) * 4, (img.shape[1] // 4) * 4
            srgb = img[:h, :w].astype(np.float32) / 255
            cap = unproc.capture(srgb, RGGB, shot=NOISE_LEVELS[level])
            noise = (cap.shot, cap.read) if config.noise_input else None
            items.append((level, network_input(cap.raw, cap.black, cap.white, cap.wb_gains, noise=noise),
                          cam_to_srgb_matrix(cap.xyz_to_cam), srgb))
    return items


def evaluate(model, items, output_space: str) -> dict[str, float]:
    scores: dict[str, list[float]] = {}
    for level, packed, m, srgb in items:
        pred = np.asarray(model(packed[None], training=False))[0]
        if output_space == "linear":
            out = render(np.clip(pred, 0, 1), Rendering(m, look="neutral"))
        else:
            out = np.clip(pred, 0, 1)
        scores.setdefault(f"psnr_{level}", []).append(psnr(out, srgb))
        scores.setdefault(f"ssim_{level}", []).append(ssim(out, srgb))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def train(config: TrainConfig, resume: bool = True, max_minutes: float | None = None, log=print) -> Path:
    """Train (or resume) a CSANet; returns the run directory holding checkpoints and log.csv."""
    import tensorflow as tf

    from rawdev.train.network import architecture, build_csanet

    run = Path(config.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    cfg_path = run / "config.json"
    if resume and cfg_path.exists():
        saved = json.loads(cfg_path.read_text())
        saved.update({k: v for k, v in asdict(config).items() if k in RESUME_OVERRIDES})
        config = TrainConfig(**saved)
    cfg_path.write_text(json.dumps(asdict(config), indent=2))

    tf.random.set_seed(config.seed)
    model = build_csanet(config.width, config.variant, **architecture(asdict(config)))
    optimizer = tf.keras.optimizers.Adam(learning_rate=learning_rate(0, config.steps))
    step_var = tf.Variable(0, dtype=tf.int64, name="step")
    samples_var = tf.Variable(0, dtype=tf.int64, name="samples")
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var, samples=samples_var)
    manager = tf.train.CheckpointManager(ckpt, str(run / "checkpoints"), max_to_keep=config.keep_checkpoints)
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
        log(f"resumed from {manager.latest_checkpoint} at step {int(step_var.numpy())}")
    elif config.warm_start:
        log(f"warm start from {config.warm_start}: {', '.join(_warm_start(model, Path(config.warm_start)))}")

    if config.loss_space not in LOSS_SPACES:
        raise ValueError(f"loss_space {config.loss_space!r}: choose {' or '.join(LOSS_SPACES)}")
    if config.pixel_loss not in PIXEL_LOSSES:
        raise ValueError(f"pixel_loss {config.pixel_loss!r}: choose {' or '.join(PIXEL_LOSSES)}")
    if config.loss_space == "srgb" and (config.pairs or config.output_space != "linear"):
        raise ValueError("loss_space srgb needs synthetic data and linear output (each sample's colour matrix)")
    loss_fn, perceptual_on = make_loss(config)
    log(f"perceptual (VGG-19) term: {'on' if perceptual_on else 'off (no --vgg-weights file given)'}")

    @tf.function(reduce_retracing=True)
    def train_step(packed, target, to_output):
        with tf.GradientTape() as tape:
            pred = model(packed, training=True)
            if config.loss_space == "srgb":
                pred, target = output_space(pred, to_output), output_space(target, to_output)
            loss = loss_fn(pred, target)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    make_batch = _batch_source(config, int(step_var.numpy()))
    prefetch = BatchPrefetcher(make_batch)
    if config.pairs:
        from rawdev.train.pairs import validation_pairs

        val_items = validation_pairs(Path(config.pairs[0]), Path(config.pairs[1]))
    elif config.val_dir and Path(config.val_dir).exists():
        val_items = validation_set(config)
    else:
        val_items = []

    log_path = run / "log.csv"
    new_log = not log_path.exists()
    fields = ["step", "samples", "wall_s", "lr", "loss", "samples_per_s"]
    fields += ["psnr_pairs", "ssim_pairs"] if config.pairs else ["psnr_low", "ssim_low", "psnr_medium", "ssim_medium"]
    if not new_log:  # keep the columns of the log being resumed
        with log_path.open() as f:
            fields = next(csv.reader(f))
    log_file = log_path.open("a", newline="")
    writer = csv.DictWriter(log_file, fieldnames=fields, extrasaction="ignore")
    if new_log:
        writer.writeheader()

    started = time.monotonic()
    wall_offset = _last_wall(log_path)
    window_loss, window_start, window_samples = [], time.monotonic(), 0
    try:
        while int(step_var.numpy()) < config.steps:
            step = int(step_var.numpy())
            optimizer.learning_rate.assign(learning_rate(step, config.steps, config.lr_max))
            packed, target, to_output = prefetch.get()
            loss = float(train_step(packed, target, to_output))
            step_var.assign_add(1)
            samples_var.assign_add(len(packed))
            window_loss.append(loss)
            window_samples += len(packed)
            step += 1
            done = step >= config.steps
            if step % 100 == 0:
                log(f"step {step} loss {np.mean(window_loss[-100:]):.5f} "
                    f"{window_samples / (time.monotonic() - window_start):.1f} samples/s")
            out_of_time = max_minutes is not None and time.monotonic() - started > max_minutes * 60
            if step % config.checkpoint_every == 0 or done or out_of_time:
                manager.save(checkpoint_number=step)
                row = {"step": step, "samples": int(samples_var.numpy()),
                       "wall_s": round(wall_offset + time.monotonic() - started, 1),
                       "lr": learning_rate(step - 1, config.steps, config.lr_max),
                       "loss": round(float(np.mean(window_loss)), 6),
                       "samples_per_s": round(window_samples / (time.monotonic() - window_start), 2)}
                if val_items and (step % config.validate_every == 0 or done):
                    row.update({k: round(v, 4) for k, v in evaluate(model, val_items, config.output_space).items()})
                writer.writerow(row)
                log_file.flush()
                _plot(log_path, log)
                log(" ".join(f"{k}={v}" for k, v in row.items()))
                window_loss, window_start, window_samples = [], time.monotonic(), 0
            if out_of_time:
                break
    finally:
        prefetch.close()
        log_file.close()
    return run


def _plot(log_path: Path, log) -> None:
    """Redraw curves.png beside the log; training goes on without matplotlib."""
    try:
        from rawdev.train.plot import plot_curves

        plot_curves(log_path, log_path.with_name("curves.png"))
    except ImportError:
        log("curves.png not drawn: matplotlib is missing (pip install 'rawdev[train]')")


def _warm_start(model, source: Path) -> list[str]:
    """Copy the matching layers of another run's newest checkpoint into ``model``."""
    import tensorflow as tf

    from rawdev.train.network import architecture, build_csanet, warm_start

    if source.is_dir():  # a run or checkpoint folder: its newest checkpoint
        folder = source
        prefix = tf.train.latest_checkpoint(str(folder)) or tf.train.latest_checkpoint(str(folder / "checkpoints"))
    else:  # a ckpt-N prefix
        folder, prefix = source.parent, str(source)
    cfg = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    if not prefix:
        raise FileNotFoundError(f"no checkpoint under {source}")
    other = build_csanet(cfg.get("width", model.get_layer("head_down").filters), cfg.get("variant", "residual"),
                         **architecture(cfg))
    tf.train.Checkpoint(model=other).restore(prefix).expect_partial()
    return warm_start(model, other)


def _last_wall(log_path: Path) -> float:
    if not log_path.exists():
        return 0.0
    rows = list(csv.DictReader(log_path.open()))
    return float(rows[-1]["wall_s"]) if rows else 0.0


def _batch_source(config: TrainConfig, step: int):
    """A callable returning (packed, target) batches: synthetic or real pairs."""
    if config.pairs:
        from rawdev.train.pairs import PairedData

        data = PairedData(Path(config.pairs[0]), Path(config.pairs[1]), config.patch, seed=config.seed + step)
    else:
        from rawdev.train.synth import TrainingData, load_photographs

        folders = [Path(d) for d in config.train_dirs]
        if config.balance_sets:
            folders = [sub for d in folders for sub in sorted(d.iterdir()) if sub.is_dir()] or folders
        images, weights = [], []
        for folder in folders:
            found = load_photographs([folder])
            images += found
            weights += [1.0 / len(found)] * len(found) if found else []
        if not images:
            raise FileNotFoundError(f"no training photographs under {config.train_dirs}")
        data = TrainingData(images, config.patch, seed=config.seed + step, noise_input=config.noise_input,
                            hard_fraction=config.hard_fraction, weights=weights if config.balance_sets else None,
                            flat_fraction=config.flat_fraction, dark_fraction=config.dark_fraction,
                            max_shot=config.max_shot)

    def make():
        b = data.batch(config.batch)
        return b.packed, b.target, np.asarray(b.cam_to_srgb, np.float32)  # real pairs: identity

    return make


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="train CSANet (see rawdev train --help)")
    p.add_argument("run_dir")
    p.add_argument("--variant", default="residual")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=60000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--max-minutes", type=float, default=None)
    a = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cfg = TrainConfig(a.run_dir, variant=a.variant, width=a.width, steps=a.steps, batch=a.batch, patch=a.patch)
    train(cfg, max_minutes=a.max_minutes, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
