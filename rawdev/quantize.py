"""fp32 ONNX model -> static int8 model (QDQ), calibrated on synthetic RAW made from photographs.

``rawdev quantize MODEL -o OUT.onnx`` takes a registered model name or an fp32 .onnx file and writes
an int8 model in onnxruntime's QDQ form (QuantizeLinear/DequantizeLinear around the quantized
operators, which onnxruntime's CPU provider fuses into integer kernels): weights int8 per output
channel, activations uint8 or int8 (``activation``), ranges from MinMax calibration.

Calibration inputs are what the pipeline feeds the network: photographs from the training folders,
unprocessed by rawdev.train.synth (camera matrix, white balance, mosaic, shot and read noise at
levels drawn as in training, bit depth and black level, some flat colour fields and dark scenes)
and normalized by rawdev.train.synth.network_input (which is the pipeline's own normalize.prepare),
at the pipeline's tile size (rawdev.develop.DEFAULT_TILE packed samples; photographs too small for
a tile give one tile of their own size, as the tiler does). Everything is drawn from ``seed``, so a
given model, data folder and seed give the same file, byte for byte.

Only the nodes of the roles given are quantized (:data:`DEFAULT_ROLES`: the attention branches;
roles are found from the graph's structure by :func:`node_roles`, so a retrained network of the
same shape is handled alike); the rest stays fp32. What each node costs in accuracy is measured by
``benchmarks/precision.py --sensitivity``.

The output keeps the fp32 model's contract (rawdev.model) with ``precision=int8`` and the fp32
model's name and file sha256 (``fp32_model``, ``fp32_sha256``); the pipeline runs it unchanged.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from rawdev.model import ModelContract, file_sha256, is_model_path, read_contract, resolve_model, write_contract

DEFAULT_SAMPLES = 64
DEFAULT_SEED = 0
DEFAULT_DATA = Path("../shared/data/train")  # beside the checkout, as `rawdev train` reads it
ACTIVATIONS = ("uint8", "int8")
# uint8 (asymmetric) activations: more accurate than int8 (symmetric, half the range unused after a
# ReLU) and faster with onnxruntime's x86 kernels (u8 x s8 is the VNNI instruction's form).
DEFAULT_ACTIVATION = "uint8"
METHODS = ("percentile", "minmax", "entropy")
# Ranges from the 0.01 % and 99.99 % points of each tensor's histogram over the calibration
# tiles: less quantization noise than the extremes (MinMax), for a clip of what is rarer.
DEFAULT_METHOD = "percentile"
DEFAULT_PERCENTILE = 99.99
# The share of calibration tiles that are flat colour fields, dark scenes (0-6 stops under) and
# noise-free captures: the default model's training settings (weights/checkpoints/*/config.json).
FLAT_FRACTION = 0.1
DARK_FRACTION = 0.15
CLEAN_FRACTION = 0.05
CALIBRATION_CHUNK = 4  # tiles per calibration pass (memory: all tensors of a chunk are held at once)
CHECK_TILES = 4  # held-out synthetic tiles (another seed) on which the int8 model is compared with fp32
CHECK_SEED_OFFSET = 1_000_003

# Roles of nodes (node_roles) and which are quantized by default: the attention branches alone.
# Quantizing the trunk too is faster but loses far more than the quality bar allows (0.1 dB on
# kodak24 at each noise level): benchmarks/RESULTS.md, weights/README.md.
ROLES = ("input", "output", "attention", "trunk")
DEFAULT_ROLES = ("attention",)
LAYOUT_OPS = {"Slice", "Transpose", "Pad", "Reshape", "Shape", "Gather", "Concat", "Unsqueeze", "Squeeze",
              "Identity", "Flatten", "DepthToSpace", "SpaceToDepth"}
QUANTIZABLE_OPS = {"Conv", "Add", "Mul", "Sigmoid", "Relu", "GlobalAveragePool", "ConvTranspose", "MatMul"}


class QuantizeError(RuntimeError):
    """The model cannot be quantized as asked; nothing was written."""


@dataclass
class QuantizeReport:
    output: Path
    fp32_path: Path
    fp32_model: str
    fp32_sha256: str
    sha256: str
    contract: ModelContract
    samples: int
    tile: int
    seed: int
    activation: str
    method: str
    roles: tuple[str, ...]  # the roles quantized (empty when chosen nodes were)
    kept_fp32: dict[str, list[str]]  # role -> node names left in fp32
    quantized: list[str]  # names of the nodes quantized
    ops: dict[str, int]
    check: dict = field(default_factory=dict)  # int8 against fp32 on held-out synthetic tiles


# --------------------------------------------------------------------------- the graph


def _producers(graph) -> dict[str, object]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _shape_only(graph) -> set[str]:
    """Names of nodes that compute tensor shapes (Shape and what is made of shapes and constants
    alone): integer arithmetic, never quantized."""
    constants = {t.name for t in graph.initializer}
    shapes: set[str] = set()
    nodes: set[str] = set()
    for node in graph.node:  # topological order
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" or (inputs and all(i in shapes or i in constants for i in inputs)
                                       and any(i in shapes for i in inputs)):
            shapes.update(node.output)
            nodes.add(node.name)
    return nodes


def node_roles(proto) -> dict[str, str]:
    """Role of every node of a rawdev network that could be quantized (shape arithmetic is left out):

    - ``input``: the layout operators on the graph input (slices, transposes, padding) and the
      convolutions they feed (the first convolutions on the packed planes and on the noise sigma
      planes, the fixed bilinear base): the raw samples;
    - ``output``: the node that makes the output (the residual Add of the bilinear base and the
      correction, reached from the graph output back through layout operators), those layout
      operators and the convolutions that feed it (the correction's last convolution);
    - ``attention``: the gates of each Double Attention Module: the channel attention's pooling,
      1x1 convolutions and Sigmoid, the spatial attention's depthwise convolution and Sigmoid (not
      the features they gate, nor the products that apply them);
    - ``trunk``: every other node (the head convolution, the modules' convolutions, the gating
      products, the fusing convolutions, the residual sums, the upsampling and half-resolution
      convolutions)."""
    graph = proto.graph
    producers, users = _producers(graph), _consumers(graph)
    shape_nodes = _shape_only(graph)
    roles: dict[str, str] = {}
    # input: breadth-first from the graph inputs through layout nodes
    frontier = [i.name for i in graph.input]
    seen: set[str] = set()
    while frontier:
        tensor = frontier.pop()
        for node in users.get(tensor, []):
            if node.name in seen or node.name in shape_nodes:
                continue
            seen.add(node.name)
            if node.op_type in LAYOUT_OPS:  # slicing, padding, transposing the input: kept with it
                roles[node.name] = "input"
                frontier.extend(node.output)
            elif node.op_type in ("Conv", "ConvTranspose"):
                roles[node.name] = "input"
    # output: back from the graph outputs through layout nodes to the first compute node
    for out in graph.output:
        node = producers.get(out.name)
        while node is not None and node.op_type in LAYOUT_OPS:
            roles[node.name] = "output"
            node = producers.get(node.input[0])
        if node is None:
            continue
        roles[node.name] = "output"
        for name in node.input:
            feeder = producers.get(name)
            if feeder is not None and feeder.op_type in ("Conv", "ConvTranspose") and feeder.name not in roles:
                roles[feeder.name] = "output"
    # attention: from each GlobalAveragePool forward to its Sigmoid, and the conv before each Sigmoid
    attention: set[str] = set()
    for pool in (n for n in graph.node if n.op_type == "GlobalAveragePool"):
        attention.add(pool.name)
        frontier = list(pool.output)
        while frontier:
            for node in users.get(frontier.pop(), []):
                if node.name not in attention and node.op_type in LAYOUT_OPS | {"Conv", "Relu", "Sigmoid"}:
                    attention.add(node.name)
                    if node.op_type != "Sigmoid":
                        frontier.extend(node.output)
    for gate in (n for n in graph.node if n.op_type == "Sigmoid"):
        attention.add(gate.name)
        feeder = producers.get(gate.input[0])
        if feeder is not None and feeder.op_type == "Conv":
            attention.add(feeder.name)
    for node in graph.node:
        if node.name in roles or node.name in shape_nodes:
            continue
        if node.name in attention:
            roles[node.name] = "attention"
        elif node.op_type in QUANTIZABLE_OPS:
            roles[node.name] = "trunk"
        elif node.op_type in LAYOUT_OPS:  # a layout step inside the network goes with what it moves
            feeder = producers.get(node.input[0])
            if feeder is not None and roles.get(feeder.name) in ("trunk", "attention"):
                roles[node.name] = roles[feeder.name]
    return roles


def keep_fp32_consumers(proto, quantized: set[str]) -> int:
    """Where an fp32 tensor enters the quantized part of the graph (QuantizeLinear ->
    DequantizeLinear on a tensor made by an fp32 node), its fp32 consumers read it as it was, not
    its quantized copy: onnxruntime's quantizer hands the copy to every consumer. Quantization
    then touches only the quantized nodes and what they output. Returns the inputs rewired."""
    producers = _producers(proto.graph)
    qin = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    constants = {t.name for t in proto.graph.initializer}
    original = {}
    for n in proto.graph.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in qin:
            continue
        source = qin[n.input[0]]
        maker = producers.get(source)
        if source in constants or (maker is not None and maker.name in quantized):
            continue  # a weight, or the output of a quantized node: it is 8-bit for everyone
        original[n.output[0]] = source
    rewired = 0
    for n in proto.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.name in quantized:
            continue
        for i, name in enumerate(n.input):
            if name in original:
                n.input[i] = original[name]
                rewired += 1
    return rewired


def quantized_nodes(proto) -> list[str]:
    """Names of the nodes of a QDQ model that onnxruntime runs in 8 bits: fed by DequantizeLinear
    and with every output quantized again (DQ -> node -> Q, what it fuses into an integer kernel)."""
    dq = {out for n in proto.graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    users = _consumers(proto.graph)
    return sorted(n.name for n in proto.graph.node
                  if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and dq & set(n.input)
                  and all(users.get(o) and all(u.op_type == "QuantizeLinear" for u in users[o]) for o in n.output))


def _name_nodes(proto) -> None:
    """Give every unnamed node a unique name (nodes_to_exclude works by name)."""
    names = {n.name for n in proto.graph.node if n.name}
    for i, node in enumerate(proto.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in names:
                name += "_"
            node.name = name
            names.add(name)


# --------------------------------------------------------------------------- calibration data


def _crop(rng: np.random.Generator, img: np.ndarray, size: int) -> np.ndarray:
    """A random crop of at most ``size`` x ``size`` pixels (whole 2x2 blocks, even packed size),
    flipped and transposed at random as the training crops are; float in [0, 1]."""
    h, w = (min(img.shape[0], size) // 4) * 4, (min(img.shape[1], size) // 4) * 4
    y = int(rng.integers(img.shape[0] - h + 1))
    x = int(rng.integers(img.shape[1] - w + 1))
    c = img[y : y + h, x : x + w]
    if rng.uniform() < 0.5:
        c = c[:, ::-1]
    if rng.uniform() < 0.5:
        c = c[::-1]
    if rng.uniform() < 0.5:
        c = c.transpose(1, 0, 2)
    return np.ascontiguousarray(c, np.float32) / np.float32(255.0)


def pick_photographs(folders: list[Path], count: int, tile: int, seed: int) -> list[np.ndarray]:
    """Up to ``count`` photographs drawn from ``folders`` by ``seed``: those whose short side
    holds a whole tile (``tile`` packed samples = 2 x ``tile`` pixels) first; when too few do,
    smaller ones too (each then gives one tile of its own size, as the tiler makes for an image
    smaller than a tile)."""
    from rawdev.train.synth import photograph_paths, read_photograph

    paths = photograph_paths([Path(f) for f in folders])
    if not paths:
        raise QuantizeError(f"no photographs in {', '.join(map(str, folders))} to calibrate on")
    order = np.random.default_rng(seed).permutation(len(paths))
    whole, small = [], []
    for i in order:
        img = read_photograph(paths[i])
        if img is None:
            continue
        (whole if min(img.shape[:2]) >= 2 * tile else small).append(img)
        if len(whole) >= count:
            break
    return (whole + small)[:count] if len(whole) < count else whole


def calibration_inputs(contract: ModelContract, photographs: list[np.ndarray], count: int, tile: int,
                       seed: int) -> list[np.ndarray]:
    """``count`` network inputs (1, h, w, planes) of at most ``tile`` x ``tile`` packed samples,
    made as training makes them (rawdev.train.synth) from ``photographs``, all drawn from ``seed``."""
    from rawdev.noise import read_level
    from rawdev.train.synth import RGGB, SHOT_RANGE, TrainingData, Unprocessor, network_input

    if contract.packing != "RGGB" or contract.normalization != "black-white" or contract.white_balance != "before":
        raise QuantizeError(
            f"calibration data is synthetic RAW in the RGGB / black-white / white balance before contract; this "
            f"model is {contract.packing} / {contract.normalization} / white balance {contract.white_balance}")
    noise_aware = contract.noise_input == "sigma-planes"
    max_shot = float(contract.noise_max_shot) if contract.noise_max_shot else SHOT_RANGE[1]
    unprocess = Unprocessor(seed, max_shot=max_shot)
    rng = unprocess.rng
    # TrainingData's helpers (flat fields, scene brightness) on the same generator.
    helpers = TrainingData([], patch=4, seed=seed, flat_fraction=FLAT_FRACTION, dark_fraction=DARK_FRACTION)
    helpers.rng = rng
    out = []
    for k in range(count):
        img = photographs[k % len(photographs)]
        crop = _crop(rng, img, 2 * tile)
        if rng.uniform() < FLAT_FRACTION:
            crop = helpers.flat_field(crop.shape[0])[:, : crop.shape[1]]
        shot = unprocess.random_shot()
        read = float(read_level(shot) * np.exp(rng.normal(0, 0.26)))
        if noise_aware and rng.uniform() < CLEAN_FRACTION:
            shot, read = 0.0, 0.0
        cap = unprocess.capture(
            crop, RGGB, shot=shot, read=read, bits=int(rng.choice([10, 12, 14])),
            black_fraction=float(rng.choice([0.0, 1 / 64, 1 / 16])), inverse_tone=bool(rng.uniform() < 0.5),
            brightness=helpers.brightness(),
        )
        noise = (cap.shot, cap.read) if noise_aware else None
        x = network_input(cap.raw, cap.black, cap.white, cap.wb_gains, RGGB, noise)
        out.append(np.ascontiguousarray(x[None], np.float32))
    return out


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of inputs."""

    def __init__(self, name: str, inputs: list[np.ndarray]):
        self.name, self.inputs, self.i = name, inputs, 0

    def get_next(self):
        if self.i >= len(self.inputs):
            return None
        self.i += 1
        return {self.name: self.inputs[self.i - 1]}

    def rewind(self):
        self.i = 0

    def set_range(self, start_index: int, end_index: int):  # CalibStridedMinMax: one chunk at a time
        self.inputs_all = getattr(self, "inputs_all", self.inputs)
        self.inputs, self.i = self.inputs_all[start_index:end_index], 0

    def __len__(self):
        return len(getattr(self, "inputs_all", self.inputs))


# --------------------------------------------------------------------------- quantization


def _source(model: str | Path) -> tuple[Path, str]:
    """A registry name (checked against its sha256) or an .onnx path -> (file, the name recorded)."""
    ref = str(model)
    path = resolve_model(ref)
    return path, (Path(ref).stem if is_model_path(ref) else ref)


def preprocess(source: Path, target: Path) -> None:
    """onnxruntime's quant_pre_process: graph optimization (constant folding, fusions) and ONNX
    shape inference, so that the quantizer knows which tensors are float. Symbolic shape inference
    is skipped (it is for transformers; the spatial sizes of this network are free)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


def quantize_model(
    model: str | Path,
    output: Path,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = DEFAULT_SEED,
    data: Iterable[Path] = (DEFAULT_DATA,),
    tile: int | None = None,
    activation: str = DEFAULT_ACTIVATION,
    roles: Iterable[str] = DEFAULT_ROLES,
    exclude: Iterable[str] = (),
    only: Iterable[str] | None = None,
    calibration: list[np.ndarray] | None = None,
    calibration_cache: Path | None = None,
    method: str = DEFAULT_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    pre_process: bool = True,
    check: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> QuantizeReport:
    """The whole of ``rawdev quantize``: calibrate, quantize, stamp the contract, check, write.

    ``roles``: the roles (:func:`node_roles`) whose nodes are quantized, the rest stays fp32;
    ``exclude``: node names that stay fp32 all the same; ``only``: quantize these nodes alone
    instead (per-layer sensitivity). ``calibration``: inputs to
    calibrate on instead of making them; ``calibration_cache``: onnxruntime's JSON of the
    calibrated ranges (reused when it exists: the same model and calibration data only)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from rawdev.convert import _atomic_bytes, op_counts
    from rawdev.develop import DEFAULT_TILE

    if activation not in ACTIVATIONS:
        raise QuantizeError(f"activation type {activation!r}: choose {' or '.join(ACTIVATIONS)}")
    if method not in METHODS:
        raise QuantizeError(f"calibration method {method!r}: choose {', '.join(METHODS)}")
    if samples < 1:
        raise QuantizeError(f"--samples {samples}: give at least 1")
    roles = tuple(roles)
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise QuantizeError(f"unknown role(s) {', '.join(sorted(unknown))}; choose from {', '.join(ROLES)}")
    tile = tile or DEFAULT_TILE
    fp32_path, fp32_name = _source(model)
    contract = read_contract(fp32_path)
    if contract.precision != "fp32":
        raise QuantizeError(f"{fp32_path} is already {contract.precision} (made from {contract.fp32_model})")
    fp32_sha = file_sha256(fp32_path)
    output = Path(output)
    if output.resolve() == fp32_path.resolve():
        raise QuantizeError(f"-o {output} is the fp32 model itself; choose another file")

    with tempfile.TemporaryDirectory(prefix="rawdev-quantize-") as tmp:
        work = Path(tmp)
        prepared = work / "prepared.onnx"
        if pre_process:
            preprocess(fp32_path, prepared)
            proto = onnx.load(str(prepared))
        else:
            proto = onnx.load(str(fp32_path))
        _name_nodes(proto)
        onnx.save(proto, str(prepared))
        role_of = node_roles(proto)
        chosen = sorted(only) if only is not None else sorted(
            n for n, role in role_of.items() if role in roles and n not in set(exclude))
        kept = {r: sorted(n for n, role in role_of.items() if n not in chosen and role == r) for r in ROLES}
        kept = {r: names for r, names in kept.items() if names}
        if not chosen:  # onnxruntime would read an empty list as "quantize every node"
            raise QuantizeError(f"no node of role(s) {', '.join(roles)} in {fp32_path}: nothing to quantize")
        if calibration is None and not (calibration_cache and Path(calibration_cache).is_file()):
            log(f"calibration: {samples} tiles of up to {tile} x {tile} packed samples, seed {seed}")
            photos = pick_photographs(list(data), samples, tile, seed)
            calibration = calibration_inputs(contract, photos, samples, tile, seed)
        reader = _Reader(proto.graph.input[0].name, calibration) if calibration is not None else None
        quantized_path = work / "int8.onnx"
        act = QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8
        methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                   "entropy": CalibrationMethod.Entropy}
        # One tile at a time: the histogram calibrators keep every tensor of every tile they are
        # given (some 250 MB a 256 x 256 tile), so they are fed in chunks (their histograms merge).
        chunk = CALIBRATION_CHUNK if reader is not None and len(reader) % CALIBRATION_CHUNK == 0 else 1
        extra: dict = {"ActivationSymmetric": activation == "int8", "CalibStridedMinMax": chunk}
        if method == "percentile":
            extra.update(CalibPercentile=percentile, CalibNumBins=2048)
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print their progress
            quantize_static(
                str(prepared), str(quantized_path), reader,
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=False,
                activation_type=act, weight_type=QuantType.QInt8,
                nodes_to_quantize=chosen,
                calibrate_method=methods[method],
                extra_options=extra,
                calibration_cache_path=str(calibration_cache) if calibration_cache else None,
            )
        q = onnx.load(str(quantized_path))
    keep_fp32_consumers(q, set(chosen))
    int8_contract = replace(contract, precision="int8", fp32_model=fp32_name, fp32_sha256=fp32_sha)
    write_contract(q, int8_contract)
    q.producer_name = "rawdev quantize"
    q.doc_string = (f"int8 (QDQ, {activation} activations, per-channel int8 weights; roles quantized: "
                    f"{', '.join(roles) if only is None else 'chosen nodes'}) of {fp32_name} (sha256 "
                    f"{fp32_sha[:16]}), {method} calibration on {len(calibration or []) or samples} synthetic tiles, "
                    f"seed {seed}")
    onnx.checker.check_model(q)
    data_bytes = q.SerializeToString()
    report = QuantizeReport(output, fp32_path, fp32_name, fp32_sha, "", int8_contract, samples, tile, seed,
                            activation, method, roles if only is None else (), kept, chosen, op_counts(q))
    if check:
        check_seed = seed + CHECK_SEED_OFFSET
        held_out = calibration_inputs(contract, pick_photographs(list(data), CHECK_TILES, tile, check_seed),
                                      CHECK_TILES, tile, check_seed)
        report.check = compare_outputs(fp32_path, data_bytes, held_out)
    _atomic_bytes(output, data_bytes)
    report.sha256 = file_sha256(output)
    return report


def compare_outputs(fp32: Path | bytes, int8: Path | bytes, inputs: list[np.ndarray], threads: int = 0) -> dict:
    """int8 against fp32 on ``inputs``: largest absolute difference of the linear output, and PSNR
    of the sRGB-encoded outputs (clipped to [0, 1]; the encoding weighs the darks as a developed
    image does), overall and in the darks (fp32 output below 0.05 linear, sRGB 0.25)."""
    from rawdev.color import srgb_encode
    from rawdev.metrics import psnr_from_mse

    a, b = _session(fp32, threads), _session(int8, threads)
    worst, errs, dark_errs, dark_count = 0.0, [], [], 0
    for x in inputs:
        ya = a.run(None, {a.get_inputs()[0].name: x})[0]
        yb = b.run(None, {b.get_inputs()[0].name: x})[0]
        worst = max(worst, float(np.max(np.abs(ya - yb))))
        ea, eb = srgb_encode(np.clip(ya, 0, 1)), srgb_encode(np.clip(yb, 0, 1))
        errs.append(float(np.mean((ea - eb) ** 2)))
        dark = ya < 0.05
        if dark.any():
            dark_errs.append(float(np.sum((ea[dark] - eb[dark]) ** 2)))
            dark_count += int(dark.sum())
    mse = float(np.mean(errs))
    dark_mse = sum(dark_errs) / dark_count if dark_count else 0.0
    return {
        "tiles": len(inputs),
        "max_abs_linear": round(worst, 6),
        "psnr_srgb_db": round(psnr_from_mse(mse), 2),
        "psnr_srgb_dark_db": round(psnr_from_mse(dark_mse), 2),
        "dark_fraction": round(dark_count / sum(int(np.prod(x.shape[1:3])) * 4 * 3 for x in inputs), 4),
    }


def _session(model: Path | bytes, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                providers=["CPUExecutionProvider"])
