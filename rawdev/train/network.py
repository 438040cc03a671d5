"""CSANet (Hsyu et al., CVPR 2021 workshops) defined once, in Keras.

Input: packed Bayer planes (H/2, W/2, 4) in canonical RGGB order; output (H, W, 3).
Three variants share every layer of the paper:

- ``paper``: the network as published, ending in a sigmoid.
- ``residual``: the same trunk predicts a correction on top of a fixed bilinear demosaic of
  the input, plus a shortcut from the packed input at H/2, so fine detail that the H/4 trunk
  loses is carried past it. Its output is linear (clipped to [0, 1] at inference).
- ``noise``: the residual network told the noise level. Its input has four more planes, the
  standard deviation of each packed sample's noise (``rawdev.normalize.noise_sigma``), which
  enter the head and the H/2 shortcut through 1x1 convolutions; scaling them is the denoising
  strength. Every other layer is the residual variant's, so it starts from a residual checkpoint.

Any variant with a bilinear base can also be built with ``correction_lowpass`` (a Gaussian sigma
in output pixels): the network's correction then has its own local mean taken away, so the mean
colour of every area is the bilinear base's, the mosaic's own. On a flat field a demosaicker must
give back the field's camera RGB; without this the correction's low frequencies drift it.

``learned_base`` adds a trainable linear filter to that base (a 3x3 convolution on the packed
planes, about 6x6 mosaic samples), constrained to zero response on every flat plane: the base
learns what gradient-corrected demosaickers (Malvar et al. 2004) fix by hand, the flat-field
colour stays the mosaic's own, and it folds into the base's existing convolution at no cost.
Its value is the gain on that filter's parameter (1: plain; larger: the filter learns that many
times faster than the rest of the network under Adam, whose steps do not scale with the gradient).
"""

from __future__ import annotations

import functools
import math

import numpy as np

VARIANTS = ("paper", "residual", "noise")
NOISE_PLANES = 4  # one noise sigma per packed plane


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


def _dam(x, width: int, reduction: int, name: str, inner: int = 0):
    """Double Attention Module: conv-ReLU-conv, spatial and channel attention, 1x1 fuse, skip.
    ``inner``: channels between the two convolutions (0: ``width``)."""
    layers = _keras().layers
    f = layers.Conv2D(inner or width, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
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


ARCHITECTURE_KEYS = ("n_dam", "half_depth", "half_branch", "branch_width", "head_conv", "correction_lowpass",
                     "learned_base", "dam_inner")


def architecture(config: dict) -> dict:
    """The build_csanet keyword arguments beyond width and variant that a run's config.json
    records (absent keys: the defaults, which older runs were trained with)."""
    return {k: config[k] for k in ARCHITECTURE_KEYS if config.get(k) is not None}


def build_csanet(width: int = 32, variant: str = "paper", n_dam: int = 2, reduction: int = 4,
                 correction_lowpass: float = 0.0, half_depth: int = 0, half_branch: int = 0,
                 branch_width: int = 0, head_conv: bool = True, learned_base: float = 0.0,
                 dam_inner: int = 0):
    """Build CSANet as a Keras functional model with free spatial size.

    ``half_depth`` > 0 gives the H/2 path (after the transposed convolution) width C/2 and that
    many 3x3 convolutions with a skip round them: demosaicking's aliasing is resolved at the
    mosaic's own resolution, which the H/4 trunk never sees. 0 is the single 1x1 fuse of width C.

    ``half_branch`` > 0 keeps that fuse and adds a residual branch on it at H/2 (1x1 to C/2, that
    many 3x3 convolutions of width C/2, 1x1 back to C, the last initialised to zero): a network
    without the branch is where training starts, so a shipped checkpoint warm-starts it whole.
    ``branch_width`` is the branch's width (0: C/2); ``head_conv=False`` drops the 3x3
    convolution between the strided head and the first DAM (0.58 GMAC per output MP at C=32), the
    cheapest layer of the trunk to give up for the branch. ``learned_base``: see the module's
    docstring; it starts at zero, so a checkpoint without it is where training begins.
    ``dam_inner`` narrows the channels inside each DAM (between its two 3x3 convolutions; 0: C):
    at C=32 each channel given up saves 36 MACs per output pixel; a wider checkpoint warm-starts
    it with its strongest channels (see ``warm_start``)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown CSANet variant {variant!r}; choose one of {VARIANTS}")
    if correction_lowpass and variant == "paper":
        raise ValueError("correction_lowpass needs a variant with a bilinear base (residual or noise)")
    if learned_base and variant == "paper":
        raise ValueError("learned_base needs a variant with a bilinear base (residual or noise)")
    keras = _keras()
    layers = keras.layers
    noise = variant == "noise"
    packed = keras.Input((None, None, 4 + NOISE_PLANES * noise), name="packed")
    planes, sigma = packed, None
    if noise:
        planes = layers.Lambda(lambda t: t[..., :4], name="planes")(packed)
        sigma = layers.Lambda(lambda t: t[..., 4:], name="sigma")(packed)
    x = _conv_with_noise(planes, sigma, width, 3, 2, "head_down")
    if head_conv:
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name="head_conv")(x)
    trunk = x
    for i in range(n_dam):
        x = _dam(x, width, reduction, name=f"dam{i + 1}", inner=dam_inner)
    x = layers.Add(name="trunk_skip")([trunk, x])
    if (half_depth or half_branch) and variant == "paper":
        raise ValueError("half_depth and half_branch need a variant with the H/2 shortcut (residual or noise)")
    if half_depth and half_branch:
        raise ValueError("choose half_depth or half_branch, not both")
    half = width // 2 if half_depth else width
    x = layers.Conv2DTranspose(half, 3, strides=2, padding="same", activation="relu", name="up")(x)
    if variant != "paper":
        shortcut = _conv_with_noise(planes, sigma, width // 2, 3, 1, "half_skip")
        x = layers.Concatenate(name="half_cat")([x, shortcut])
        x = layers.Conv2D(half, 1, activation="relu", name="half_fuse")(x)
        if half_depth:
            fused = x
            for i in range(half_depth):
                x = layers.Conv2D(half, 3, padding="same", activation="relu", name=f"half_conv{i + 1}")(x)
            x = layers.Add(name="half_out")([fused, x])
        if half_branch:
            bw = branch_width or width // 2
            b = layers.Conv2D(bw, 1, activation="relu", name="half_branch_in")(x)
            for i in range(half_branch):
                b = layers.Conv2D(bw, 3, padding="same", activation="relu", name=f"half_branch{i + 1}")(b)
            b = layers.Conv2D(width, 1, kernel_initializer="zeros", name="half_branch_out")(b)
            x = layers.Add(name="half_out")([x, b])
    x = _depth_to_space(x, "d2s")
    if variant == "paper":
        rgb = layers.Conv2D(3, 3, padding="same", activation="sigmoid", name="rgb")(x)
    else:
        correction = layers.Conv2D(3, 3, padding="same", kernel_initializer="zeros", name="rgb")(x)
        if correction_lowpass:
            local_mean = layers.AveragePooling2D(2, name="lowpass_pool")(correction)
            local_mean = _normalized_blur(local_mean, correction_lowpass / 2, "lowpass")
            local_mean = layers.UpSampling2D(2, name="lowpass_up")(local_mean)
            correction = layers.Subtract(name="lowpass_free")([correction, local_mean])
        base = bilinear_base(planes)
        if learned_base:
            delta = _zero_dc_conv()(12, gain=float(learned_base), name="base_delta")
            delta = delta(_reflect_pad1(planes, "base_delta_pad"))
            base = layers.Add(name="base_learned")([base, _depth_to_space(delta, "base_delta_d2s")])
        rgb = layers.Add(name="residual_out")([base, correction])
    return keras.Model(packed, rgb, name=f"csanet_{variant}_c{width}")


def zero_dc(kernel, mean=np.mean):
    """A (kh, kw, in, out) kernel less its mean over the taps: no response to a constant plane.
    ``mean``: numpy's, or keras.ops.mean for a tensor."""
    return kernel - mean(kernel, axis=(0, 1), keepdims=True)


@functools.cache
def _zero_dc_conv():
    """The class of a bias-free, valid 3x3 convolution whose kernel is kept zero-DC (``zero_dc``)
    by construction, so training can never move a flat field's colour through it."""
    keras = _keras()

    class ZeroDCConv(keras.layers.Layer):
        def __init__(self, filters: int, gain: float = 1.0, **kwargs):
            super().__init__(**kwargs)
            self.filters = filters
            self.gain = gain

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], self.filters), initializer="zeros",
                                          name="kernel")

        def call(self, x):
            kernel = zero_dc(self.kernel, keras.ops.mean) * self.gain
            return keras.ops.conv(x, kernel, strides=1, padding="valid")

    return ZeroDCConv


def _conv_with_noise(planes, sigma, width: int, kernel: int, strides: int, name: str):
    """ReLU(conv(planes) [+ conv1x1(sigma)]): the noise planes are smooth, so a 1x1 convolution
    carries them at a few MACs a pixel; it starts at zero, so a residual checkpoint's function
    is where training begins."""
    layers = _keras().layers
    if sigma is None:
        return layers.Conv2D(width, kernel, strides=strides, padding="same", activation="relu", name=name)(planes)
    x = layers.Conv2D(width, kernel, strides=strides, padding="same", name=name)(planes)
    n = layers.Conv2D(width, 1, strides=strides, padding="same", use_bias=False, kernel_initializer="zeros",
                      name=f"{name}_noise")(sigma)
    return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_sum")([x, n]))


def gaussian_taps(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps out to three sigma."""
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def correction_lowpass_sigma(model) -> float:
    """The sigma (output pixels) a network's correction is made low-pass free with; 0 if not."""
    try:
        layer = model.get_layer("lowpass_rows")
    except ValueError:
        return 0.0
    return 2.0 * float(layer.sigma)


def _normalized_blur(x, sigma: float, name: str):
    """Separable Gaussian blur of ``x`` (C channels) that averages only over the samples inside the
    image: zero padding, divided by the blur of ones. Any tile size works (a reflect pad would need
    tiles wider than the kernel), and a constant stays exactly constant up to the border."""
    keras = _keras()
    layers = keras.layers
    # The ones have all of x's channels: tf2onnx turns transposes of a one-channel tensor into
    # reshapes to the traced size, which would fix the model to one tile size.
    channels = 2 * x.shape[-1]
    ones = layers.Lambda(lambda t: keras.ops.ones_like(t), name=f"{name}_ones")(x)
    y = layers.Concatenate(name=f"{name}_with_ones")([x, ones])
    taps = gaussian_taps(sigma)
    for axis, shape in (("rows", (len(taps), 1)), ("cols", (1, len(taps)))):
        blur = layers.DepthwiseConv2D(shape, padding="same", use_bias=False, trainable=False, name=f"{name}_{axis}")
        y = blur(y)
        blur.set_weights([np.tile(taps.reshape(shape + (1, 1)), (1, 1, channels, 1))])
        blur.sigma = sigma
    half = x.shape[-1]
    return layers.Lambda(lambda t: t[..., :half] / t[..., half:], name=f"{name}_normalize")(y)


def strongest_channels(conv1: list[np.ndarray], conv2: list[np.ndarray], keep: int) -> np.ndarray:
    """Indices (ascending) of the ``keep`` channels between two convolutions that carry the most:
    each channel scored by the norm of the filter that makes it times the norm of the weights that
    read it (a channel either convolution leaves at zero scores 0)."""
    made = np.sqrt(np.sum(conv1[0] ** 2, axis=(0, 1, 2)))
    read = np.sqrt(np.sum(conv2[0] ** 2, axis=(0, 1, 3)))
    return np.sort(np.argsort(-(made * read), kind="stable")[:keep])


def _narrowed(layer, theirs: dict) -> list[np.ndarray] | None:
    """A DAM convolution's weights from a source DAM with more inner channels: its strongest ones."""
    name = layer.name
    if not (name.startswith("dam") and name.endswith(("_conv1", "_conv2"))):
        return None
    first = theirs[name[:-1] + "1"].get_weights()
    second = theirs[name[:-1] + "2"].get_weights()
    keep = layer.weights[0].shape[3] if name.endswith("1") else layer.weights[0].shape[2]
    if keep >= first[0].shape[3]:
        return None
    idx = strongest_channels(first, second, keep)
    if name.endswith("1"):
        return [first[0][..., idx], first[1][idx]]
    return [second[0][:, :, idx, :], second[1]]


def warm_start(model, source) -> list[str]:
    """Copy every layer's weights from ``source`` (another CSANet) where the layer name and
    shapes match, or where ``model``'s DAMs are narrower inside (their strongest channels, see
    ``strongest_channels``); returns the names copied."""
    theirs = {layer.name: layer for layer in source.layers}
    copied = []
    for layer in model.layers:
        other = theirs.get(layer.name)
        if other is None or not layer.weights:
            continue
        weights = other.get_weights()
        narrowed = _narrowed(layer, theirs)
        if narrowed is not None and [w.shape for w in narrowed] == [tuple(v.shape) for v in layer.weights]:
            layer.set_weights(narrowed)
            copied.append(f"{layer.name} (narrowed)")
            continue
        if [w.shape for w in weights] == [tuple(v.shape) for v in layer.weights]:
            rescale = getattr(other, "gain", 1.0) / getattr(layer, "gain", 1.0)  # the same filter at another gain
            layer.set_weights([w * rescale for w in weights] if rescale != 1.0 else weights)
            copied.append(layer.name)
    return copied


def _depth_to_space(x, name: str):
    """Depth-to-space (x2, DCR order) as a weightless layer; TensorFlow's own op on that backend
    (tf2onnx maps it to one DepthToSpace node), keras.ops elsewhere."""
    keras = _keras()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return keras.layers.Lambda(lambda t: tf.nn.depth_to_space(t, 2), name=name)(x)

    def d2s(t):
        ops = keras.ops
        b, h, w, c = ops.shape(t)
        t = ops.reshape(t, (b, h, w, 2, 2, c // 4))
        t = ops.transpose(t, (0, 1, 3, 2, 4, 5))
        return ops.reshape(t, (b, h * 2, w * 2, c // 4))

    return keras.layers.Lambda(d2s, name=name)(x)


def _reflect_pad1(x, name: str):
    """Reflect-pad height and width by one sample."""
    keras = _keras()
    pads = [[0, 0], [1, 1], [1, 1], [0, 0]]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return keras.layers.Lambda(lambda t: tf.pad(t, pads, mode="REFLECT"), name=name)(x)
    return keras.layers.Lambda(lambda t: keras.ops.pad(t, pads, mode="reflect"), name=name)(x)


def bilinear_base(packed):
    """Bilinear demosaic of packed RGGB planes with fixed (untrainable) convolutions."""
    layers = _keras().layers
    scatter, interp = bilinear_kernels()
    sparse = layers.Conv2D(12, 1, use_bias=False, trainable=False, name="bilinear_scatter")
    dense = layers.DepthwiseConv2D(3, padding="same", use_bias=False, trainable=False,
                                   name="bilinear_interp")
    # Reflect the planes by one sample so the border is interpolated from real neighbours
    # (colour-correct: each plane holds one CFA site), then crop the two extra output pixels.
    x = _reflect_pad1(packed, "bilinear_pad")
    x = sparse(x)
    x = _depth_to_space(x, "bilinear_d2s")
    x = dense(x)
    sparse.set_weights([scatter])
    dense.set_weights([interp])
    return layers.Lambda(lambda t: t[:, 2:-2, 2:-2, :], name="bilinear_crop")(x)


def subpixel_kernel(full_res_kernel: np.ndarray) -> np.ndarray:
    """Re-express "depth-to-space (x2), then a 3x3 convolution" as "a 3x3 convolution at half
    resolution, then depth-to-space": exactly the same function, but the convolution and all the
    memory traffic stay at a quarter of the pixels.

    ``full_res_kernel`` is (3, 3, Cin, Cout) applied to depth_to_space(x) where x has 4*Cin channels;
    returns the (3, 3, 4*Cin, 4*Cout) kernel whose output, put through depth_to_space, equals it.
    Zero padding at full resolution corresponds to zero padding at half resolution.
    """
    k = np.asarray(full_res_kernel)
    cin, cout = k.shape[2], k.shape[3]
    w = np.zeros((3, 3, 4 * cin, 4 * cout), k.dtype)
    for a in range(2):
        for b in range(2):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    oy, sy = divmod(a + dy, 2)
                    ox, sx = divmod(b + dx, 2)
                    src = (sy * 2 + sx) * cin
                    dst = (a * 2 + b) * cout
                    w[oy + 1, ox + 1, src : src + cin, dst : dst + cout] += k[dy + 1, dx + 1]
    return w


def fold_for_inference(model):
    """The same network with its full-resolution tail moved to half resolution (see
    :func:`subpixel_kernel`): one depth-to-space of 12 channels at the very end instead of
    depth-to-space of C channels, a full-resolution convolution and, for the residual variant, a
    second depth-to-space and a depthwise convolution for the bilinear base."""
    keras = _keras()
    layers = keras.layers
    rgb = model.get_layer("rgb")
    kernel, bias = rgb.get_weights()
    residual = "residual_out" in [layer.name for layer in model.layers]
    names = [layer.name for layer in model.layers]
    trunk_end = model.get_layer(next(n for n in ("half_out", "half_fuse", "up") if n in names)).output
    packed = model.get_layer("planes").output if "planes" in names else model.input
    head = layers.Conv2D(12, 3, padding="same", name="rgb_subpixel")
    x = head(trunk_end)
    head.set_weights([subpixel_kernel(kernel), np.tile(bias, 4)])
    sigma = correction_lowpass_sigma(model)
    if sigma:
        # The 2x2 mean of the full-resolution correction is the mean of its four sub-pixel
        # positions, and nearest upsampling is a copy back to each of them.
        mean = layers.Conv2D(3, 1, use_bias=False, name="lowpass_pool_subpixel")
        spread = layers.Conv2D(12, 1, use_bias=False, name="lowpass_up_subpixel")
        local_mean = spread(_normalized_blur(mean(x), sigma / 2, "lowpass_fold"))
        gather = np.tile(np.eye(3, dtype=np.float32), (4, 1))  # (12, 3): sub-pixel block b, colour c -> c
        mean.set_weights([(gather / 4)[None, None]])
        spread.set_weights([gather.T[None, None]])
        x = layers.Subtract(name="lowpass_free_subpixel")([x, local_mean])
    if residual:
        scatter, interp = bilinear_kernels()
        dense = np.zeros((3, 3, 3, 3), np.float32)
        for c in range(3):
            dense[:, :, c, c] = interp[:, :, c, 0]
        # scatter (1x1, 4 -> 12) then the subpixel form of the interpolation: one 3x3 conv 4 -> 12
        bil = np.tensordot(subpixel_kernel(dense), scatter[0, 0], axes=([2], [1])).transpose(0, 1, 3, 2)
        if "base_delta" in names:
            delta = model.get_layer("base_delta")
            bil = bil + delta.gain * zero_dc(delta.get_weights()[0])
        padded = _reflect_pad1(packed, "bilinear_pad_fold")
        base = layers.Conv2D(12, 3, padding="valid", use_bias=False, name="bilinear_subpixel")
        b = base(padded)
        base.set_weights([bil.astype(np.float32)])
        x = layers.Add(name="residual_subpixel")([x, b])
    else:
        x = layers.Activation("sigmoid", name="rgb_sigmoid")(x)
    out = _depth_to_space(x, "d2s_out")
    return keras.Model(model.input, out, name=model.name + "_folded")
