"""CSANet (Hsyu et al., CVPR 2021 workshops) defined once, in Keras.

Input: packed Bayer planes (H/2, W/2, 4) in canonical RGGB order; output (H, W, 3).
Two variants share every layer of the paper:

- ``paper``: the network as published, ending in a sigmoid.
- ``residual``: the same trunk predicts a correction on top of a fixed bilinear demosaic of
  the input, plus a shortcut from the packed input at H/2, so fine detail that the H/4 trunk
  loses is carried past it. Its output is linear (clipped to [0, 1] at inference).
"""

from __future__ import annotations

import numpy as np

VARIANTS = ("paper", "residual")


def _keras():
    import keras

    return keras


def bilinear_kernels() -> tuple[np.ndarray, np.ndarray]:
    """Fixed weights that scatter RGGB planes into a sparse RGB mosaic and interpolate it.

    Returns the 1x1 scatter kernel (1, 1, 4, 12) used before depth-to-space and the depthwise
    3x3 interpolation kernel (3, 3, 3, 1).
    """
    scatter = np.zeros((1, 1, 4, 12), np.float32)
    # depth_to_space (DCR): output[2h+i, 2w+j, c] = input[h, w, (2i+j)*3 + c]
    for plane, (block, colour) in enumerate([(0, 0), (1, 1), (2, 1), (3, 2)]):
        scatter[0, 0, plane, block * 3 + colour] = 1.0
    rb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4
    g = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4
    interp = np.stack([rb, g, rb], axis=-1)[..., None]
    return scatter, interp


def _dam(x, width: int, reduction: int, name: str):
    """Double Attention Module: conv-ReLU-conv, spatial and channel attention, 1x1 fuse, skip."""
    layers = _keras().layers
    f = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
    f = layers.Conv2D(width, 3, padding="same", name=f"{name}_conv2")(f)
    sa = layers.DepthwiseConv2D(5, padding="same", dilation_rate=2, activation="sigmoid",
                                name=f"{name}_sa_dw")(f)
    sa = layers.Multiply(name=f"{name}_sa")([f, sa])
    ca = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_ca_pool")(f)
    ca = layers.Conv2D(width // reduction, 1, activation="relu", name=f"{name}_ca_fc1")(ca)
    ca = layers.Conv2D(width, 1, activation="sigmoid", name=f"{name}_ca_fc2")(ca)
    ca = layers.Multiply(name=f"{name}_ca")([f, ca])
    fused = layers.Concatenate(name=f"{name}_cat")([sa, ca])
    fused = layers.Conv2D(width, 1, name=f"{name}_fuse")(fused)
    return layers.Add(name=f"{name}_out")([x, fused])


def build_csanet(width: int = 32, variant: str = "paper", n_dam: int = 2, reduction: int = 4):
    """Build CSANet as a Keras functional model with free spatial size."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown CSANet variant {variant!r}; choose one of {VARIANTS}")
    keras = _keras()
    layers = keras.layers
    packed = keras.Input((None, None, 4), name="packed")
    x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name="head_down")(packed)
    x = layers.Conv2D(width, 3, padding="same", activation="relu", name="head_conv")(x)
    trunk = x
    for i in range(n_dam):
        x = _dam(x, width, reduction, name=f"dam{i + 1}")
    x = layers.Add(name="trunk_skip")([trunk, x])
    x = layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu", name="up")(x)
    if variant == "residual":
        shortcut = layers.Conv2D(width // 2, 3, padding="same", activation="relu", name="half_skip")(packed)
        x = layers.Concatenate(name="half_cat")([x, shortcut])
        x = layers.Conv2D(width, 1, activation="relu", name="half_fuse")(x)
    x = _depth_to_space(x, "d2s")
    if variant == "paper":
        rgb = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="rgb")(x)
    else:
        correction = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name="rgb")(x)
        rgb = layers.Add(name="residual_out")([bilinear_base(packed), correction])
    return keras.Model(packed, rgb, name=f"csanet_{variant}_c{width}")


def _depth_to_space(x, name: str):
    import tensorflow as tf

    return _keras().layers.Lambda(lambda t: tf.nn.depth_to_space(t, 2), name=name)(x)


def bilinear_base(packed):
    """Bilinear demosaic of packed RGGB planes with fixed (untrainable) convolutions."""
    layers = _keras().layers
    scatter, interp = bilinear_kernels()
    sparse = layers.Conv2D(12, 1, use_bias=False, trainable=False, name="bilinear_scatter")
    dense = layers.DepthwiseConv2D(3, padding="same", use_bias=False, trainable=False,
                                   name="bilinear_interp")
    import tensorflow as tf

    # Reflect the planes by one sample so the border is interpolated from real neighbours
    # (colour-correct: each plane holds one CFA site), then crop the two extra output pixels.
    x = layers.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT"),
                      name="bilinear_pad")(packed)
    x = sparse(x)
    x = _depth_to_space(x, "bilinear_d2s")
    x = dense(x)
    sparse.set_weights([scatter])
    dense.set_weights([interp])
    return layers.Lambda(lambda t: t[:, 2:-2, 2:-2, :], name="bilinear_crop")(x)
