"""Training speed of the same Keras CSANet on each Keras 3 backend (TensorFlow, PyTorch, JAX).

    python benchmarks/train_backends.py [--pause-training] [--steps 20]

Each backend runs in its own process (KERAS_BACKEND is read at import) with the same network,
batch (16 x 128x128 crops), loss (Charbonnier + 0.1 (1 - SSIM) on sRGB-encoded output, written
in keras.ops so every backend computes the same thing) and Adam, through Keras' own
``train_on_batch``. rawdev's training loop (TensorFlow, a tf.function step) is timed too. The
median step time of ``--steps`` steps after warm-up is reported as samples per second.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = r'''
import os, sys, time, json
import numpy as np
import keras
from keras import ops
from rawdev.train.network import build_csanet
from rawdev.metrics import _gaussian_1d

steps, batch, patch, width = (int(v) for v in sys.argv[1:5])

def tone(x):
    return ops.where(x <= 0.0031308, 12.92 * x, 1.055 * ops.power(ops.maximum(x, 0.0031308), 1 / 2.4) - 0.055)

g = np.asarray(_gaussian_1d(), np.float32)
kh = np.tile(g.reshape(11, 1, 1, 1), (1, 1, 15, 1))
kw = np.tile(g.reshape(1, 11, 1, 1), (1, 1, 15, 1))

def ssim(x, y):
    s = ops.concatenate([x, y, x * x, y * y, x * y], axis=-1)
    f = ops.depthwise_conv(ops.depthwise_conv(s, kh, padding="valid"), kw, padding="valid")
    mx, my, xx, yy, xy = ops.split(f, 5, axis=-1)
    c = 121.0 / 120.0
    sxx, syy, sxy = c * (xx - mx * mx), c * (yy - my * my), c * (xy - mx * my)
    c1, c2 = 1e-4, 9e-4
    return ops.mean(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2)))

def loss(t, p):
    tp, tt = tone(p), tone(t)
    return ops.mean(ops.sqrt(ops.square(tp - tt) + 1e-12)) + 0.1 * (1 - ssim(ops.clip(tp, 0, 1), tt))

model = build_csanet(width, "residual")
model.compile(optimizer=keras.optimizers.Adam(5e-4), loss=loss)
rng = np.random.default_rng(0)
x = rng.random((batch, patch // 2, patch // 2, 4), dtype=np.float32)
y = rng.random((batch, patch, patch, 3), dtype=np.float32)
for _ in range(3):
    model.train_on_batch(x, y)
times = []
for _ in range(steps):
    t = time.perf_counter()
    model.train_on_batch(x, y)
    times.append(time.perf_counter() - t)
print(json.dumps({"median_step_s": float(np.median(times))}))
'''

LOOP_CHILD = r'''
import sys, time, json, os
import numpy as np
import tensorflow as tf
from rawdev.train.network import build_csanet
from rawdev.train.loop import TrainConfig, make_loss
steps, batch, patch, width = (int(v) for v in sys.argv[1:5])
model = build_csanet(width, "residual")
opt = tf.keras.optimizers.Adam(5e-4)
loss_fn, _ = make_loss(TrainConfig("x"))
@tf.function(reduce_retracing=True)
def step(x, y):
    with tf.GradientTape() as tape:
        l = loss_fn(model(x, training=True), y)
    opt.apply_gradients(zip(tape.gradient(l, model.trainable_variables), model.trainable_variables))
    return l
rng = np.random.default_rng(0)
x = rng.random((batch, patch // 2, patch // 2, 4), dtype=np.float32)
y = rng.random((batch, patch, patch, 3), dtype=np.float32)
for _ in range(3):
    float(step(x, y))
times = []
for _ in range(steps):
    t = time.perf_counter(); float(step(x, y)); times.append(time.perf_counter() - t)
print(json.dumps({"median_step_s": float(np.median(times))}))
'''


def run_child(code: str, backend: str, args: list[str]) -> dict:
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    from _pause import Pauser

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--pause-training", action="store_true")
    p.add_argument("--out", type=Path, default=HERE / "results" / "train_backends.json")
    a = p.parse_args(argv)
    args = [str(a.steps), str(a.batch), str(a.patch), str(a.width)]
    results = {}
    pauser = Pauser(a.pause_training)
    for name, code, backend in [("rawdev loop (tensorflow, tf.function)", LOOP_CHILD, "tensorflow"),
                                ("keras train_on_batch, tensorflow", CHILD, "tensorflow"),
                                ("keras train_on_batch, torch", CHILD, "torch"),
                                ("keras train_on_batch, jax", CHILD, "jax")]:
        with pauser.stretch(name):
            r = run_child(code, backend, args)
        if "median_step_s" in r:
            r["samples_per_s"] = round(a.batch / r["median_step_s"], 1)
        results[name] = r
        print(f"{name:40s} {r}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"settings": vars(a) | {"out": str(a.out)}, "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
