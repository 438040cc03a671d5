"""TensorFlow checkpoint -> ONNX, checked against TensorFlow before anything is written.

Reads rawdev's training checkpoints (a run folder or a ``ckpt-N`` prefix), Keras weight files
(``.weights.h5``), SavedModels (a folder with saved_model.pb), and checkpoints of other CSANet implementations through a
variable-name map. tf2onnx converts at a static spatial size, which lets its rewriters turn the
dilated depthwise convolution into one Conv with dilations instead of a SpaceToBatch chain;
the spatial dimensions are then freed again (the graph holds no shape constants that depend on
them, and the parity check runs at a second size to prove it). Before conversion the network's
full-resolution tail is folded to half resolution, an exact re-parameterization that saves most of
the memory traffic of inference (benchmarks/RESULTS.md). After conversion, :func:`rewrite_graph`
replaces what onnxruntime runs slowly by exact equivalents (the stride-2 transposed convolution as a
sub-pixel convolution, depth-to-space through channels-last transposes, concatenations before 1x1
convolutions as sums, the low-pass free correction's normalised blur without transposes) and
writes down the intermediate shapes, which lets onnxruntime keep more of the graph in its blocked
layout; benchmarks/graph_variants.py measures them against the other graphs.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rawdev import __version__
from rawdev.model import NOISE_CONTRACT, ModelContract, weights_sha256, write_contract

OPSET = 17
TRACE_SIZE = 64  # packed samples per side used while tracing
PARITY_LIMIT = 1e-4
FORBIDDEN_OPS = {"SpaceToDepth", "SpaceToBatchND", "BatchToSpaceND", "Loop", "Scan"}
INPUT_NAME, OUTPUT_NAME = "packed", "rgb"


class ConversionError(RuntimeError):
    """The checkpoint cannot be converted faithfully; nothing was written."""


@dataclass
class ConversionReport:
    output: Path
    max_abs_diff: float
    parity_shapes: list[tuple[int, ...]]
    ops: dict[str, int]
    contract: ModelContract
    ort_output: Path | None = None
    rewrites: dict[str, int] = field(default_factory=dict)  # what rewrite_graph changed, per pass


@dataclass(frozen=True)
class ModelSpec:
    """Which network a checkpoint holds, and what it was trained for."""

    variant: str = "residual"
    width: int = 32
    output_space: str = "linear"
    normalization: str = "black-white"
    white_balance: str = "before"
    training_data: str = ""
    steps: int = 0
    noise_max_shot: str = ""
    correction_lowpass: float = 0.0  # sigma (px) of the local mean taken off the correction
    n_dam: int = 2  # dual attention modules in the H/4 trunk
    half_depth: int = 0  # 3x3 convolutions at H/2 (rawdev.train.network.build_csanet)
    half_branch: int = 0  # 3x3 convolutions in a residual branch at H/2
    branch_width: int = 0  # that branch's width (0: C/2)
    head_conv: bool = True  # the trunk's 3x3 convolution after the strided head
    learned_base: float = 0.0  # gain of a trainable zero-DC filter added to the bilinear base (0: none)
    dam_inner: int = 0  # channels between each DAM's two 3x3 convolutions (0: width)

    def build(self):
        """The untrained Keras network this spec describes."""
        from rawdev.train.network import ARCHITECTURE_KEYS, build_csanet

        # Every architecture key the network takes, so a new one cannot be left out of the build.
        return build_csanet(self.width, self.variant, **{k: getattr(self, k) for k in ARCHITECTURE_KEYS})


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ConversionError("convert-weights needs TensorFlow: pip install 'rawdev[train]'") from exc
    return tf


def find_checkpoint(path: Path) -> tuple[Path, dict]:
    """A run folder, a checkpoints folder or a ``ckpt-N`` prefix -> (prefix, run config)."""
    tf = _tf()
    path = Path(path)
    config: dict = {}
    candidates = [path, path.parent, path.parent.parent]
    for folder in candidates:
        cfg = folder / "config.json"
        if cfg.is_file():
            config = json.loads(cfg.read_text())
            break
    if path.is_dir():
        ckpt_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        prefix = tf.train.latest_checkpoint(str(ckpt_dir))
        if prefix is None:
            raise ConversionError(f"{path}: no TensorFlow checkpoint found in it")
        return Path(prefix), config
    if Path(str(path) + ".index").is_file():
        return path, config
    raise ConversionError(f"{path}: not a checkpoint prefix (no {path.name}.index), run folder or weights file")


def _spec_from(config: dict, overrides: dict) -> ModelSpec:
    paired = bool(config.get("pairs"))
    spec = ModelSpec(
        variant=config.get("variant", "residual"),
        width=int(config.get("width", 32)),
        output_space=config.get("output_space", "srgb" if paired else "linear"),
        normalization="mai" if paired else "black-white",
        white_balance="none" if paired else "before",
        training_data=_training_data(config),
        noise_max_shot=_noise_max_shot(config),
        correction_lowpass=float(config.get("correction_lowpass", 0.0)),
        n_dam=int(config.get("n_dam") or 2),
        half_depth=int(config.get("half_depth") or 0),
        half_branch=int(config.get("half_branch") or 0),
        branch_width=int(config.get("branch_width") or 0),
        head_conv=bool(config.get("head_conv", True)),
        learned_base=float(config.get("learned_base") or 0.0),
        dam_inner=int(config.get("dam_inner") or 0),
    )
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})


def _noise_max_shot(config: dict) -> str:
    """The top of a noise-aware run's shot-noise range, as the contract records it."""
    if config.get("variant") != "noise":
        return ""
    from rawdev.train.synth import SHOT_RANGE

    return repr(float(config.get("max_shot") or SHOT_RANGE[1]))


def _training_data(config: dict) -> str:
    if not config:
        return ""
    if config.get("pairs"):
        return "paired RAW/RGB: " + " + ".join(Path(p).name for p in config["pairs"])
    dirs = ", ".join(Path(d).name for d in config.get("train_dirs", []))
    return f"synthetic RAW unprocessed from {dirs} (patch {config.get('patch')}, batch {config.get('batch')})"


def load_keras_model(source: Path, overrides: dict | None = None, name_map: dict[str, str] | None = None):
    """Build the network and load weights from ``source``; returns (model, ModelSpec)."""
    tf = _tf()
    overrides = overrides or {}
    source = Path(source)
    if (source / "saved_model.pb").is_file():
        return _load_saved_model(source, overrides)
    if source.suffix in (".h5", ".keras") or source.name.endswith(".weights.h5"):
        spec = _spec_from(_config_near(source), overrides)
        model = spec.build()
        model.load_weights(str(source))
        return model, spec
    prefix, config = find_checkpoint(source)
    spec = _spec_from(config, overrides)
    model = spec.build()
    reader = tf.train.load_checkpoint(str(prefix))
    if name_map is not None:
        _assign_by_name_map(model, reader, name_map, prefix)
        steps = 0
    else:
        step = tf.Variable(0, dtype=tf.int64)
        try:
            status = tf.train.Checkpoint(model=model, step=step).restore(str(prefix)).expect_partial()
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError) as exc:
            raise ConversionError(
                f"{prefix}: the checkpoint does not match a CSANet '{spec.variant}' of width {spec.width} "
                f"(give --variant/--width, or --name-map for another implementation): {str(exc)[:200]}"
            ) from exc
        steps = int(step.numpy())
    return model, replace(spec, steps=steps)


def is_saved_model(path: Path) -> bool:
    return (Path(path) / "saved_model.pb").is_file()


def _load_saved_model(source: Path, overrides: dict):
    """A SavedModel (e.g. Keras' ``model.export``) as a callable with the Keras call signature.

    Its variables cannot be mapped back onto our layers, so it converts as traced (unfolded)."""
    tf = _tf()
    loaded = tf.saved_model.load(str(source))
    fn = getattr(loaded, "serve", None) or loaded.signatures.get("serving_default")
    if fn is None:
        raise ConversionError(f"{source}: SavedModel has neither a 'serve' endpoint nor a serving_default signature")

    def call(x, training=False):
        out = fn(tf.convert_to_tensor(x))
        if isinstance(out, dict):
            if len(out) != 1:
                raise ConversionError(f"{source}: SavedModel returns {len(out)} outputs, expected one")
            out = next(iter(out.values()))
        return out

    call.keep_alive = loaded  # the traced function references the SavedModel's variables
    # Variables sorted by name: the SavedModel's own order is not its layers'.
    call.get_weights = lambda: [v.numpy() for v in sorted(loaded.variables, key=lambda v: v.name)]
    return call, _spec_from(_config_near(source / "saved_model.pb"), overrides)


def _config_near(path: Path) -> dict:
    for folder in (path.parent, path.parent.parent):
        cfg = folder / "config.json"
        if cfg.is_file():
            return json.loads(cfg.read_text())
    return {}


def _strip(key: str) -> str:
    return key.replace("/.ATTRIBUTES/VARIABLE_VALUE", "")


def _assign_by_name_map(model, reader, name_map: dict[str, str], prefix: Path) -> None:
    """Copy foreign variables into the model: ``name_map`` maps checkpoint names to our weight
    paths (e.g. ``"csanet/dam_1/conv_a/w": "dam1_conv1/kernel"``); every trainable weight of ours
    must be covered."""
    available = {_strip(k): k for k in reader.get_variable_to_shape_map()}
    ours = {w.path: w for w in model.weights}
    filled = set()
    for foreign, target in name_map.items():
        key = available.get(_strip(foreign))
        if key is None:
            raise ConversionError(f"{prefix}: --name-map names {foreign!r}, which the checkpoint does not hold")
        if target not in ours:
            raise ConversionError(f"--name-map target {target!r} is not a weight of this network")
        value = reader.get_tensor(key)
        if tuple(value.shape) != tuple(ours[target].shape):
            raise ConversionError(
                f"{foreign!r} has shape {tuple(value.shape)} but {target!r} needs {tuple(ours[target].shape)}"
            )
        ours[target].assign(value)
        filled.add(target)
    missing = sorted(p for p, w in ours.items() if w.trainable and p not in filled)
    if missing:
        raise ConversionError(f"--name-map leaves {len(missing)} weights unset, e.g. {', '.join(missing[:4])}")


def _free_spatial_dims(model_proto, fixed: tuple[int, int] | None) -> None:
    for vi in list(model_proto.graph.input) + list(model_proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if fixed is None:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
        else:  # NNAPI and other static runtimes want every dimension known
            dims[0].dim_value = 1
        if fixed is None:
            suffix = "" if vi in model_proto.graph.input else "2"
            for k, name in ((1, "height"), (2, "width")):
                dims[k].ClearField("dim_value")
                dims[k].dim_param = name + suffix
    del model_proto.graph.value_info[:]


def _rename_io(model_proto) -> None:
    graph = model_proto.graph
    renames = {graph.input[0].name: INPUT_NAME, graph.output[0].name: OUTPUT_NAME}
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    graph.input[0].name = INPUT_NAME
    graph.output[0].name = OUTPUT_NAME


def op_counts(model_proto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model_proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def keras_to_onnx(model, spec: ModelSpec, fixed_shape: tuple[int, int] | None = None, fold: bool = True):
    """Convert with tf2onnx and clean the graph; returns the ONNX ModelProto (no metadata yet).

    With ``fold`` the full-resolution tail is first re-expressed at half resolution
    (:func:`rawdev.train.network.fold_for_inference`); the parity check always compares against
    the network as trained. :func:`rewrite_graph` is not applied here."""
    tf = _tf()
    import tf2onnx

    from rawdev.train.network import fold_for_inference

    trace_hw = (fixed_shape[0] // 2, fixed_shape[1] // 2) if fixed_shape else (TRACE_SIZE, TRACE_SIZE)
    signature = [tf.TensorSpec((None, *trace_hw, input_planes(spec.variant)), tf.float32, name=INPUT_NAME)]
    deploy = fold_for_inference(model) if fold else model
    fn = tf.function(lambda x: deploy(x, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=OPSET)
    _free_spatial_dims(proto, fixed_shape)
    _rename_io(proto)
    bad = FORBIDDEN_OPS & set(op_counts(proto))
    if bad:
        raise ConversionError(f"converted graph still holds {', '.join(sorted(bad))}: the graph cleaning failed")
    return proto


# ---------------------------------------------------------------------------------------------
# Graph rewrites after tf2onnx. Each pass is exact (same arithmetic up to float summation order)
# and changes the graph in place; each returns how many places it rewrote.

GRAPH_PASSES = ("subpixel", "split_concat", "nhwc_depth_to_space", "lowpass", "shape_hints")
UNARY_ELEMENTWISE = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "Softplus", "Clip"}


def rewrite_graph(proto, passes: tuple[str, ...] = GRAPH_PASSES) -> dict[str, int]:
    """Apply the named passes in the order of :data:`GRAPH_PASSES` (what onnxruntime's CPU
    provider runs faster, benchmarks/graph_variants.py); returns the rewrites made per pass.

    - ``subpixel``: :func:`convtranspose_to_subpixel`, then :func:`depth_to_space_after_activation`;
    - ``split_concat``: :func:`split_concat_conv`;
    - ``nhwc_depth_to_space``: :func:`depth_to_space_nhwc`;
    - ``lowpass``: :func:`separable_lowpass_normalizer`, then :func:`broadcast_lowpass_subtract`;
    - ``shape_hints``: :func:`symbolic_shape_hints` (last: it describes the final graph).
    """
    unknown = set(passes) - set(GRAPH_PASSES)
    if unknown:
        raise ValueError(f"unknown graph pass(es) {', '.join(sorted(unknown))}; choose from {GRAPH_PASSES}")
    done: dict[str, int] = {}
    if "subpixel" in passes:
        done["subpixel"] = convtranspose_to_subpixel(proto)
        done["activation_before_depth_to_space"] = depth_to_space_after_activation(proto)
    if "split_concat" in passes:
        done["split_concat"] = split_concat_conv(proto)
    if "nhwc_depth_to_space" in passes:
        done["nhwc_depth_to_space"] = depth_to_space_nhwc(proto)
    if "lowpass" in passes:
        done["lowpass_normalizer"] = separable_lowpass_normalizer(proto)
        done["lowpass_subtract"] = broadcast_lowpass_subtract(proto)
    _Graph(proto).drop_unused_initializers()
    if "shape_hints" in passes:
        done["shape_hints"] = symbolic_shape_hints(proto)
    return done


def symbolic_shape_hints(proto) -> int:
    """Record every intermediate tensor's shape, in symbols of the input's (onnxruntime's
    symbolic shape inference), as the graph's value_info; returns how many were added or changed.

    onnxruntime keeps an elementwise Mul in its blocked (NCHWc) layout only where it can prove
    both inputs the same shape, and it does not follow a shape through a dilated convolution: the
    spatial attention's Mul (features x sigmoid of a dilated depthwise Conv) was run in plain
    layout, its inputs reordered out and its product back in, twice a DAM. With the shapes written
    down both stay blocked (4 % less inference time a 256 tile, benchmarks/RESULTS.md). The
    arithmetic is unchanged."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    known = {v.name: v.SerializeToString() for v in proto.graph.value_info}
    hints = [v for v in inferred.graph.value_info if v.type.tensor_type.HasField("shape")]
    changed = sum(known.get(v.name) != v.SerializeToString() for v in hints)
    if changed:
        del proto.graph.value_info[:]
        proto.graph.value_info.extend(hints)
    return changed


class _Graph:
    """Small helpers over a GraphProto: attributes, initializers, consumers, fresh names."""

    def __init__(self, proto):
        self.graph = proto.graph if hasattr(proto, "graph") else proto
        self.inits = {t.name: t for t in self.graph.initializer}
        self.names = {n for node in self.graph.node for n in (*node.input, *node.output, node.name)}
        self.names |= set(self.inits) | {v.name for v in (*self.graph.input, *self.graph.output)}

    @staticmethod
    def attrs(node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def array(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def const(self, base: str, value) -> str:
        from onnx import numpy_helper

        name = self.fresh(base)
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs):
        """A new node named after its output."""
        from onnx import helper

        return helper.make_node(op, inputs, [output], name=self.fresh(f"{output}_{op.lower()}"), **attrs)

    def consumers(self, tensor: str) -> list:
        """The nodes that read ``tensor``."""
        return [n for n in self.graph.node if tensor in n.input]

    def index(self, node) -> int:
        """Position of ``node`` in the graph (nodes are told apart by their outputs)."""
        return next(i for i, n in enumerate(self.graph.node) if list(n.output) == list(node.output))

    def is_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.graph.output)

    def replace_nodes(self, replacements: dict[int, list]) -> None:
        """Put each ``replacements[i]`` list in place of node i (empty list: remove it)."""
        nodes = []
        for i, node in enumerate(self.graph.node):
            nodes.extend(replacements.get(i, [node]))
        del self.graph.node[:]
        self.graph.node.extend(nodes)

    def drop_unused_initializers(self) -> None:
        """Remove initializers no node reads any more (e.g. a replaced ConvTranspose's weights)."""
        used = {n for node in self.graph.node for n in node.input} | {o.name for o in self.graph.output}
        keep = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)

    def channels(self, proto) -> dict[str, int]:
        """Channel count (dimension 1) of every 4-D tensor whose count shape inference knows."""
        import onnx

        inferred = onnx.shape_inference.infer_shapes(proto)
        out = {}
        for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
            shape = vi.type.tensor_type.shape
            if vi.type.tensor_type.HasField("shape") and len(shape.dim) == 4 and shape.dim[1].HasField("dim_value"):
                out[vi.name] = shape.dim[1].dim_value
        return out


def subpixel_weights(weight: np.ndarray, bias: np.ndarray | None, stride: int,
                     pads: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray | None, list[int]] | None:
    """The sub-pixel form of a 2-D ConvTranspose (group 1, dilation 1) whose output is exactly
    ``stride`` times its input: a Conv at the input's resolution with ``stride**2 * Cout`` output
    channels, in depth-to-space (DCR) order, whose DepthToSpace(stride) equals the ConvTranspose.

    ``weight`` is ONNX's (Cin, Cout, kH, kW), ``pads`` (top, left, bottom, right). Output pixel
    ``s*i + a`` of the ConvTranspose sums input pixel ``p`` through kernel tap
    ``k = s*(i - p) + a + pad_top``; phase ``a`` of the Conv therefore reads input offsets
    ``i - d`` for the d with a valid tap, and the taps no phase uses are zeros (on a 3x3 kernel
    at stride 2: 9 useful taps of 16). Returns (Conv weight, Conv bias, Conv pads), or None when
    the output is not ``stride`` times the input or a pad would be negative."""
    cin, cout, kh, kw = weight.shape
    s = stride
    spans = []
    for k, begin, end in ((kh, pads[0], pads[2]), (kw, pads[1], pads[3])):
        if k - begin - end != s or begin > k - 1:
            return None
        d_max = (k - 1 - begin) // s
        d_min = min(-((a + begin) // s) for a in range(s))
        spans.append((d_max, d_min, begin, k))
    (dh_max, dh_min, top, _), (dw_max, dw_min, left, _) = spans
    conv = np.zeros((s * s * cout, cin, dh_max - dh_min + 1, dw_max - dw_min + 1), weight.dtype)
    for a in range(s):
        for b in range(s):
            rows = slice((a * s + b) * cout, (a * s + b + 1) * cout)
            for u in range(conv.shape[2]):
                ky = s * (dh_max - u) + a + top
                for v in range(conv.shape[3]):
                    kx = s * (dw_max - v) + b + left
                    if 0 <= ky < kh and 0 <= kx < kw:
                        conv[rows, :, u, v] = weight[:, :, ky, kx].T
    conv_bias = None if bias is None else np.tile(bias, s * s).astype(bias.dtype)
    return conv, conv_bias, [dh_max, dw_max, -dh_min, -dw_min]


def convtranspose_to_subpixel(proto) -> int:
    """Every 2-D ConvTranspose with constant weights, group 1, dilation 1, equal strides and an
    output exactly ``stride`` times its input (TensorFlow's ``padding="same"``, or ``"valid"``
    with kernel <= stride) becomes Conv (:func:`subpixel_weights`) + DepthToSpace(stride), or a
    plain Conv at stride 1. onnxruntime runs ConvTranspose as a GEMM and a col2im scatter, far
    below its convolution speed. Others are left as they are."""
    from onnx import helper

    g = _Graph(proto)
    replacements = {}
    for i, node in enumerate(g.graph.node):
        if node.op_type != "ConvTranspose" or len(node.input) < 2:
            continue
        a = g.attrs(node)
        weight = g.array(node.input[1])
        bias = g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        strides = list(a.get("strides", [1, 1]))
        if (weight is None or weight.ndim != 4 or (len(node.input) > 2 and node.input[2] and bias is None)
                or a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1]))
                or "output_shape" in a or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")
                or len(set(strides)) != 1):
            continue
        pads = list(a.get("pads", [0, 0, 0, 0]))
        extra = list(a.get("output_padding", [0, 0]))
        pads = [pads[0], pads[1], pads[2] - extra[0], pads[3] - extra[1]]  # output_padding: less end padding
        kernel = list(a.get("kernel_shape", weight.shape[2:]))
        if kernel != list(weight.shape[2:]):
            continue
        made = subpixel_weights(weight, bias, strides[0], tuple(pads))
        if made is None:
            continue
        conv_w, conv_b, conv_pads = made
        stem = node.name or node.output[0]
        inputs = [node.input[0], g.const(stem + "_subpixel_w", conv_w)]
        if conv_b is not None:
            inputs.append(g.const(stem + "_subpixel_b", conv_b))
        s = strides[0]
        phases = node.output[0] if s == 1 else g.fresh(node.output[0] + "_phases")
        new = [helper.make_node("Conv", inputs, [phases], name=g.fresh(stem + "_subpixel"),
                                kernel_shape=list(conv_w.shape[2:]), pads=conv_pads)]
        if s > 1:
            new.append(helper.make_node("DepthToSpace", [phases], [node.output[0]], name=g.fresh(stem + "_d2s"),
                                        blocksize=s, mode="DCR"))
        replacements[i] = new
    g.replace_nodes(replacements)
    return len(replacements)


def depth_to_space_after_activation(proto) -> int:
    """DepthToSpace followed by an elementwise activation (its only consumer) -> the activation
    first: they commute, and onnxruntime fuses an activation into the Conv before it."""
    g = _Graph(proto)
    moved = 0
    changed = True
    while changed:
        changed = False
        for d2s in g.graph.node:
            if d2s.op_type != "DepthToSpace" or g.is_output(d2s.output[0]):
                continue
            users = g.consumers(d2s.output[0])
            if len(users) != 1 or users[0].op_type not in UNARY_ELEMENTWISE or users[0].input[0] != d2s.output[0]:
                continue
            act = users[0]
            before, mid, after = d2s.input[0], d2s.output[0], act.output[0]
            act.input[0], act.output[0] = before, mid
            d2s.input[0], d2s.output[0] = mid, after
            nodes = list(g.graph.node)
            i, j = nodes.index(d2s), nodes.index(act)
            nodes[i], nodes[j] = nodes[j], nodes[i]
            del g.graph.node[:]
            g.graph.node.extend(nodes)
            moved += 1
            changed = True
            break
    return moved


def split_concat_conv(proto) -> int:
    """Concat (channel axis) whose only consumer is a 1x1 Conv (group 1, constant weights) ->
    one 1x1 Conv per concatenated tensor, summed (the bias goes to the first): no copy of the
    concatenation, and each input enters the Conv's blocked layout on its own."""
    from onnx import helper

    g = _Graph(proto)
    channels = g.channels(proto)
    replacements = {}
    for i, cat in enumerate(g.graph.node):
        if cat.op_type != "Concat" or g.attrs(cat).get("axis") not in (1, -3) or g.is_output(cat.output[0]):
            continue
        users = g.consumers(cat.output[0])
        if len(users) != 1 or users[0].op_type != "Conv" or users[0].input[0] != cat.output[0]:
            continue
        conv = users[0]
        a = g.attrs(conv)
        weight = g.array(conv.input[1])
        sizes = [channels.get(t) for t in cat.input]
        if (weight is None or weight.shape[2:] != (1, 1) or a.get("group", 1) != 1 or None in sizes
                or sum(sizes) != weight.shape[1] or any(v != 1 for v in a.get("strides", [1, 1]))
                or any(p != 0 for p in a.get("pads", [0, 0, 0, 0]))):
            continue
        stem = conv.name or conv.output[0]
        new, parts, start = [], [], 0
        for k, (tensor, size) in enumerate(zip(cat.input, sizes, strict=True)):
            inputs = [tensor, g.const(f"{stem}_part{k}_w", np.ascontiguousarray(weight[:, start:start + size]))]
            if k == 0 and len(conv.input) > 2 and conv.input[2]:
                inputs.append(conv.input[2])
            parts.append(g.fresh(f"{stem}_part{k}"))
            new.append(helper.make_node("Conv", inputs, [parts[-1]], name=parts[-1], kernel_shape=[1, 1]))
            start += size
        total = parts[0]
        for k, part in enumerate(parts[1:]):
            last = k == len(parts) - 2
            out = conv.output[0] if last else g.fresh(f"{stem}_sum{k}")
            new.append(helper.make_node("Add", [total, part], [out], name=g.fresh(f"{stem}_add{k}")))
            total = out
        replacements[i] = []
        replacements[g.index(conv)] = new
    g.replace_nodes(replacements)
    return len(replacements) // 2


def depth_to_space_nhwc(proto) -> int:
    """DepthToSpace (DCR) -> the same interleave done channels-last:

        Transpose(0,2,3,1) -> Reshape(N, H, W, s, s*C) -> Transpose(0,1,3,2,4) -> Reshape(N, sH, sW, C)
        [-> Transpose(0,3,1,2) back to NCHW, unless a Transpose(0,2,3,1) followed: it is absorbed]

    onnxruntime's DepthToSpace is a generic 6-D transpose; here the first Transpose becomes its
    blocked-layout ReorderOutput, the middle one moves whole rows of s*C values, and the last
    feeds the next Conv's ReorderInput directly. The target shape is computed from the tensor's
    own shape, so spatial sizes stay free."""

    g = _Graph(proto)
    channels = g.channels(proto)
    replacements = {}
    for i, d2s in enumerate(g.graph.node):
        a = g.attrs(d2s)
        mode = a.get("mode", b"DCR")
        if d2s.op_type != "DepthToSpace" or mode not in (b"DCR", "DCR") or d2s.input[0] not in channels:
            continue
        s = int(a["blocksize"])
        c = channels[d2s.input[0]] // (s * s)
        users = g.consumers(d2s.output[0])
        absorb = (len(users) == 1 and users[0].op_type == "Transpose" and not g.is_output(d2s.output[0])
                  and list(g.attrs(users[0]).get("perm", [])) == [0, 2, 3, 1])
        stem = d2s.name or d2s.output[0]
        nhwc, split, rows, shape, n, hw, hw2, target, result = (g.fresh(f"{stem}_{x}") for x in (
            "nhwc", "split", "rows", "shape", "n", "hw", "hw_scaled", "target", "interleaved"))
        result = users[0].output[0] if absorb else result
        node = g.node

        def ints(label: str, values: list[int], stem: str = stem) -> str:
            return g.const(f"{stem}_{label}", np.array(values, np.int64))

        new = [
            node("Transpose", [d2s.input[0]], nhwc, perm=[0, 2, 3, 1]),
            node("Reshape", [nhwc, ints("split_shape", [0, 0, 0, s, s * c])], split),
            node("Transpose", [split], rows, perm=[0, 1, 3, 2, 4]),
            node("Shape", [rows], shape),
            node("Gather", [shape, ints("i_n", [0])], n, axis=0),
            node("Gather", [shape, ints("i_hw", [1, 3])], hw, axis=0),
            node("Mul", [hw, ints("block", [s, s])], hw2),
            node("Concat", [n, hw2, ints("c", [c])], target, axis=0),
            node("Reshape", [rows, target], result),
        ]
        if absorb:
            replacements[g.index(users[0])] = []
        else:
            new.append(node("Transpose", [result], d2s.output[0], perm=[0, 3, 1, 2]))
        replacements[i] = new
    g.replace_nodes(replacements)
    return len([k for k, v in replacements.items() if v])


def _producer(g: _Graph, tensor: str):
    return next((n for n in g.graph.node if tensor in n.output), None)


def _through_transpose(g: _Graph, node):
    """``node``'s sole consumer if that is a Transpose, else None."""
    users = g.consumers(node.output[0])
    return users[0] if len(users) == 1 and users[0].op_type == "Transpose" else None


def _plain_conv(g: _Graph, node, inputs: int = 2) -> bool:
    """A Conv with ``inputs`` inputs, constant weights, unit strides and dilations and explicit
    pads (what the lowpass rewrites rebuild: they copy only group and pads)."""
    if node is None or node.op_type != "Conv" or len(node.input) != inputs or g.array(node.input[1]) is None:
        return False
    a = g.attrs(node)
    return (a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and all(v == 1 for v in a.get("strides", [1]))
            and all(v == 1 for v in a.get("dilations", [1])))


def _channel_slice(g: _Graph, node) -> tuple[int, int] | None:
    """(start, end) of a Slice along axis 1 with step 1, else None."""
    if node.op_type != "Slice" or len(node.input) < 4:
        return None
    starts, ends, axes = (g.array(n) for n in node.input[1:4])
    steps = g.array(node.input[4]) if len(node.input) > 4 else np.array([1])
    if any(v is None for v in (starts, ends, axes, steps)) or axes.tolist() != [1] or steps.tolist() != [1]:
        return None
    return int(starts[0]), int(ends[0])


def _ones_like(g: _Graph, ones, x: str) -> bool:
    """Whether ConstantOfShape ``ones`` takes its shape from ``x`` (directly or through a Gather
    of Shape(x), tf2onnx's ones_like of a channels-last view)."""
    source = _producer(g, ones.input[0])
    if source is not None and source.op_type == "Gather":
        source = _producer(g, source.input[0])
    return source is not None and source.op_type == "Shape" and source.input[0] == x


def _only_reader(g: _Graph, tensor: str, node) -> bool:
    users = g.consumers(tensor)
    return len(users) == 1 and users[0] is node and not g.is_output(tensor)


def separable_lowpass_normalizer(proto) -> int:
    """The normalised blur of rawdev.train.network._normalized_blur, as tf2onnx writes it:

        Concat(x, ones) -> Conv(K x 1, group 2C) -> Conv(1 x K, group 2C) -> Slice [:C], Slice [C:]
        [-> Transposes to NHWC] -> Div [-> Transpose back]

    becomes the blur of x's C channels alone divided by the blur of ones, computed as the
    product of a column and a row: zero padding makes the blurred ones separable, n(y, x) =
    n_rows(y) * n_cols(x), so a (1, 1, H, W) product of two 1-D blurs replaces C blurred planes of
    ones, and no transposes remain. The function is the same to float rounding. What the new
    nodes replace is left unread and removed."""
    from onnx import numpy_helper

    g = _Graph(proto)
    channels = g.channels(proto)
    replacements: dict[int, list] = {}
    for concat in list(g.graph.node):
        if concat.op_type != "Concat" or len(concat.input) != 2 or g.attrs(concat).get("axis") != 1:
            continue
        ones = _producer(g, concat.input[1])
        if ones is not None and ones.op_type == "Transpose":
            ones = _producer(g, ones.input[0])
        value = g.attrs(ones).get("value") if ones is not None and ones.op_type == "ConstantOfShape" else None
        if value is None or not np.all(numpy_helper.to_array(value) == 1):
            continue
        rows = g.consumers(concat.output[0])
        cols = g.consumers(rows[0].output[0]) if len(rows) == 1 else []
        if len(rows) != 1 or len(cols) != 1 or not _plain_conv(g, rows[0]) or not _plain_conv(g, cols[0]):
            continue
        rows, cols = rows[0], cols[0]
        w_rows, w_cols = g.array(rows.input[1]), g.array(cols.input[1])
        two_c = int(g.attrs(rows).get("group", 1))
        c = two_c // 2
        x = concat.input[0]
        if (two_c % 2 or channels.get(x) != c or not _ones_like(g, ones, x)
                or int(g.attrs(cols).get("group", 1)) != two_c or w_rows.shape[:2] != (two_c, 1)
                or w_cols.shape[:2] != (two_c, 1) or w_rows.shape[3] != 1 or w_cols.shape[2] != 1
                or not (np.all(w_rows == w_rows[:1]) and np.all(w_cols == w_cols[:1]))):
            continue
        slices = g.consumers(cols.output[0])
        if len(slices) != 2 or g.is_output(cols.output[0]):
            continue
        ranges = [_channel_slice(g, n) for n in slices]
        if None in ranges:
            continue
        ends = [(n, _through_transpose(g, n)) for n in slices]
        divs = {id(d): d for n, t in ends for d in g.consumers((t or n).output[0]) if d.op_type == "Div"}
        if len(divs) != 1:
            continue
        div = next(iter(divs.values()))
        by_output = {(t or n).output[0]: (n, t, r) for (n, t), r in zip(ends, ranges)}
        if set(div.input) != set(by_output) or len(set(div.input)) != 2:
            continue
        top, bottom = by_output[div.input[0]][2], by_output[div.input[1]][2]
        if top != (0, c) or bottom[0] != c or bottom[1] < two_c:
            continue
        if not all(_only_reader(g, n.output[0], t or div) and (t is None or _only_reader(g, t.output[0], div))
                   for n, t in ends):
            continue
        transposed = [t for _, t in ends if t is not None]
        back = _through_transpose(g, div)
        if transposed and (len(transposed) != 2 or back is None or g.is_output(div.output[0])
                           or any(list(g.attrs(t)["perm"]) != [0, 2, 3, 1] for t in transposed)
                           or list(g.attrs(back)["perm"]) != [0, 3, 1, 2]):
            continue
        final = back if transposed else div
        result = final.output[0]
        stem = g.fresh("lowpass")
        node = g.node

        def ints(label: str, values: list[int], stem: str = stem) -> str:
            return g.const(f"{stem}_{label}", np.array(values, np.int64))

        one = numpy_helper.from_array(np.ones(1, np.float32))
        blur_rows, blur, shape, hh, ww, col_shape, row_shape, col_ones, row_ones, n_rows, n_cols, norm = (
            g.fresh(f"{stem}_{k}") for k in ("blur_rows", "blur", "shape", "h", "w", "col_shape", "row_shape",
                                             "col_ones", "row_ones", "n_rows", "n_cols", "norm"))
        rows_pads, cols_pads = g.attrs(rows).get("pads", [0] * 4), g.attrs(cols).get("pads", [0] * 4)
        replacements[g.index(final)] = [
            node("Conv", [x, g.const(f"{stem}_w_rows", w_rows[:c])], blur_rows, group=c, pads=rows_pads),
            node("Conv", [blur_rows, g.const(f"{stem}_w_cols", w_cols[:c])], blur, group=c, pads=cols_pads),
            node("Shape", [x], shape),
            node("Gather", [shape, ints("i_h", [2])], hh, axis=0),
            node("Gather", [shape, ints("i_w", [3])], ww, axis=0),
            node("Concat", [ints("n_c", [1, 1]), hh, ints("one", [1])], col_shape, axis=0),
            node("Concat", [ints("n_c_1", [1, 1, 1]), ww], row_shape, axis=0),
            node("ConstantOfShape", [col_shape], col_ones, value=one),
            node("ConstantOfShape", [row_shape], row_ones, value=one),
            node("Conv", [col_ones, g.const(f"{stem}_w_rows_1", w_rows[:1])], n_rows, pads=rows_pads),
            node("Conv", [row_ones, g.const(f"{stem}_w_cols_1", w_cols[:1])], n_cols, pads=cols_pads),
            node("Mul", [n_rows, n_cols], norm),
            node("Div", [blur, norm], result),
        ]
    g.replace_nodes(replacements)
    _drop_dead_nodes(g)
    return len(replacements)


def broadcast_lowpass_subtract(proto) -> int:
    """Sub(a, Conv1x1(lp, spread)) where the spread copies lp's C channels to each of a's K/C
    sub-pixel blocks (the low-pass free correction) -> Sub of a viewed as (N, K/C, C, H*W) and lp
    as (N, 1, C, H*W): a broadcast instead of a convolution that writes K channels."""
    g = _Graph(proto)
    channels = g.channels(proto)
    replacements: dict[int, list] = {}
    for sub in list(g.graph.node):
        if sub.op_type != "Sub":
            continue
        spread = _producer(g, sub.input[1])
        if not _plain_conv(g, spread) or int(g.attrs(spread).get("group", 1)) != 1:
            continue
        w = g.array(spread.input[1])
        if (w.ndim != 4 or w.shape[2:] != (1, 1) or any(g.attrs(spread).get("pads", [0]))
                or not _only_reader(g, spread.output[0], sub)):
            continue
        k, c = w.shape[:2]
        if (k % c or channels.get(sub.input[0]) != k or channels.get(spread.input[0]) != c
                or not np.array_equal(w[:, :, 0, 0], np.tile(np.eye(c, dtype=w.dtype), (k // c, 1)))):
            continue
        stem = g.fresh("lowpass_sub")
        a5, lp5, diff, shape = (g.fresh(f"{stem}_{x}") for x in ("a", "lp", "diff", "shape"))
        blocks = g.const(f"{stem}_blocks", np.array([0, k // c, c, -1], np.int64))
        single = g.const(f"{stem}_single", np.array([0, 1, c, -1], np.int64))
        replacements[g.index(sub)] = [
            g.node("Reshape", [sub.input[0], blocks], a5),
            g.node("Reshape", [spread.input[0], single], lp5),
            g.node("Sub", [a5, lp5], diff),
            g.node("Shape", [sub.input[0]], shape),
            g.node("Reshape", [diff, shape], sub.output[0]),
        ]
    g.replace_nodes(replacements)
    _drop_dead_nodes(g)
    return len(replacements)


def _drop_dead_nodes(g: _Graph) -> None:
    """Remove nodes whose outputs nothing reads (what a rewrite left behind)."""
    while True:
        used = {n for node in g.graph.node for n in node.input} | {o.name for o in g.graph.output}
        dead = [i for i, node in enumerate(g.graph.node) if not any(o in used for o in node.output)]
        if not dead:
            return
        g.replace_nodes({i: [] for i in dead})


def input_planes(variant: str) -> int:
    """Channels of the network's input: the four packed planes, and their noise sigma planes."""
    from rawdev.train.network import NOISE_PLANES

    return 4 + NOISE_PLANES * (variant == "noise")


def parity(model, proto, shapes: list[tuple[int, ...]], seed: int = 0) -> float:
    """Largest |TensorFlow - onnxruntime| over random inputs of the given shapes."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in shapes:
        x = rng.random(shape, dtype=np.float32)
        expected = np.asarray(model(x, training=False))
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        if got.shape != expected.shape:
            raise ConversionError(f"onnxruntime returned {got.shape} for input {shape}, TensorFlow {expected.shape}")
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def convert_checkpoint(
    source: Path,
    output: Path,
    *,
    variant: str | None = None,
    width: int | None = None,
    output_space: str | None = None,
    name_map: Path | None = None,
    fixed_shape: tuple[int, int] | None = None,
    ort_format: bool = False,
    limit: float = PARITY_LIMIT,
    fold: bool = True,
    rewrite: bool = True,
) -> ConversionReport:
    """The whole of ``rawdev convert-weights``."""
    import onnx

    mapping = json.loads(Path(name_map).read_text()) if name_map else None
    overrides = {"variant": variant, "width": width, "output_space": output_space}
    model, spec = load_keras_model(Path(source), overrides, mapping)
    proto = keras_to_onnx(model, spec, fixed_shape, fold and not is_saved_model(Path(source)))
    # The digest names the trained weights as the network holds them (layer order), so neither
    # tf2onnx's initializer order nor the graph rewrites change a model's identity.
    digest = weights_sha256(model.get_weights())
    rewrites = rewrite_graph(proto) if rewrite else {}
    c = input_planes(spec.variant)
    if fixed_shape:
        shapes = [(1, fixed_shape[0] // 2, fixed_shape[1] // 2, c)]
    else:
        shapes = [(1, TRACE_SIZE, TRACE_SIZE, c), (2, 40, 72, c), (1, 30, 50, c)]
    diff = parity(model, proto, shapes)
    if not diff <= limit:
        raise ConversionError(f"onnxruntime differs from TensorFlow by {diff:.3g} (limit {limit:g}); nothing written")
    contract = ModelContract(
        packing="RGGB", normalization=spec.normalization, white_balance=spec.white_balance,
        output_space=spec.output_space,
        scale=2, width=spec.width, variant=spec.variant, version=__version__,
        training_data=spec.training_data, steps=spec.steps, weights_sha256=digest,
        **(NOISE_CONTRACT if spec.variant == "noise" else {}), noise_max_shot=spec.noise_max_shot,
    )
    write_contract(proto, contract)
    proto.producer_name = "rawdev convert-weights"
    proto.doc_string = f"CSANet ({spec.variant}, C={spec.width}) converted from {Path(source).name}"
    onnx.checker.check_model(proto)
    output = Path(output)
    _atomic_bytes(output, proto.SerializeToString())
    ort_path = _to_ort(output) if ort_format else None
    return ConversionReport(output, diff, shapes, op_counts(proto), contract, ort_path, rewrites)


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.rawdev-tmp-")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_ort(onnx_path: Path) -> Path:
    """The ORT format for mobile runtimes, through onnxruntime's own converter."""
    import subprocess
    import sys

    out_dir = Path(tempfile.mkdtemp(prefix="rawdev-ort-"))
    cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(onnx_path),
           "--output_dir", str(out_dir), "--optimization_style", "Fixed"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    produced = sorted(out_dir.glob("*.ort"))
    if result.returncode != 0 or not produced:
        raise ConversionError(f"ORT format conversion failed: {result.stderr.strip()[-300:]}")
    target = onnx_path.with_suffix(".ort")
    os.replace(produced[0], target)
    return target
