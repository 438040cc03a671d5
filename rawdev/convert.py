"""TensorFlow checkpoint -> ONNX, checked against TensorFlow before anything is written.

Reads rawdev's training checkpoints (a run folder or a ``ckpt-N`` prefix), Keras weight files
(``.weights.h5``), SavedModels (a folder with saved_model.pb), and checkpoints of other CSANet implementations through a
variable-name map. tf2onnx converts at a static spatial size, which lets its rewriters turn the
dilated depthwise convolution into one Conv with dilations instead of a SpaceToBatch chain;
the spatial dimensions are then freed again (the graph holds no shape constants that depend on
them, and the parity check runs at a second size to prove it). Before conversion the network's
full-resolution tail is folded to half resolution, an exact re-parameterization that saves most of
the memory traffic of inference (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rawdev import __version__
from rawdev.model import ModelContract, weights_sha256, write_contract

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
    )
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})


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
    from rawdev.train.network import build_csanet

    overrides = overrides or {}
    source = Path(source)
    if (source / "saved_model.pb").is_file():
        return _load_saved_model(source, overrides)
    if source.suffix in (".h5", ".keras") or source.name.endswith(".weights.h5"):
        spec = _spec_from(_config_near(source), overrides)
        model = build_csanet(spec.width, spec.variant)
        model.load_weights(str(source))
        return model, spec
    prefix, config = find_checkpoint(source)
    spec = _spec_from(config, overrides)
    model = build_csanet(spec.width, spec.variant)
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
    the network as trained."""
    tf = _tf()
    import tf2onnx

    from rawdev.train.network import fold_for_inference

    trace_hw = (fixed_shape[0] // 2, fixed_shape[1] // 2) if fixed_shape else (TRACE_SIZE, TRACE_SIZE)
    signature = [tf.TensorSpec((None, *trace_hw, 4), tf.float32, name=INPUT_NAME)]
    deploy = fold_for_inference(model) if fold else model
    fn = tf.function(lambda x: deploy(x, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=OPSET)
    _free_spatial_dims(proto, fixed_shape)
    _rename_io(proto)
    bad = FORBIDDEN_OPS & set(op_counts(proto))
    if bad:
        raise ConversionError(f"converted graph still holds {', '.join(sorted(bad))}: the graph cleaning failed")
    return proto


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
) -> ConversionReport:
    """The whole of ``rawdev convert-weights``."""
    import onnx

    mapping = json.loads(Path(name_map).read_text()) if name_map else None
    overrides = {"variant": variant, "width": width, "output_space": output_space}
    model, spec = load_keras_model(Path(source), overrides, mapping)
    proto = keras_to_onnx(model, spec, fixed_shape, fold and not is_saved_model(Path(source)))
    if fixed_shape:
        shapes = [(1, fixed_shape[0] // 2, fixed_shape[1] // 2, 4)]
    else:
        shapes = [(1, TRACE_SIZE, TRACE_SIZE, 4), (2, 40, 72, 4), (1, 30, 50, 4)]
    diff = parity(model, proto, shapes)
    if not diff <= limit:
        raise ConversionError(f"onnxruntime differs from TensorFlow by {diff:.3g} (limit {limit:g}); nothing written")
    initializers = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer]
    contract = ModelContract(
        packing="RGGB", normalization=spec.normalization, white_balance=spec.white_balance,
        output_space=spec.output_space,
        scale=2, width=spec.width, variant=spec.variant, version=__version__,
        training_data=spec.training_data, steps=spec.steps, weights_sha256=weights_sha256(initializers),
    )
    write_contract(proto, contract)
    proto.producer_name = "rawdev convert-weights"
    proto.doc_string = f"CSANet ({spec.variant}, C={spec.width}) converted from {Path(source).name}"
    onnx.checker.check_model(proto)
    output = Path(output)
    _atomic_bytes(output, proto.SerializeToString())
    ort_path = _to_ort(output) if ort_format else None
    return ConversionReport(output, diff, shapes, op_counts(proto), contract, ort_path)


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
