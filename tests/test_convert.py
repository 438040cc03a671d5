"""convert-weights: TensorFlow checkpoints of ours and of other implementations -> checked ONNX."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

tf = pytest.importorskip("tensorflow")

from rawdev.convert import ConversionError, convert_checkpoint  # noqa: E402
from rawdev.model import read_contract  # noqa: E402
from rawdev.train.network import build_csanet  # noqa: E402


def _trained_like(width=8, variant="residual", seed=1, **options):
    """A network with non-trivial weights (random, including the zero-initialized output conv)."""
    tf.random.set_seed(seed)
    model = build_csanet(width, variant, **options)
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(rng.normal(0, 0.1, w.shape).astype(np.float32))
    return model


def _save_run(tmp_path, model, variant, width, **config):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"variant": variant, "width": width, "train_dirs": ["x"],
                                                 "patch": 64, "batch": 2, **config}))
    step = tf.Variable(123, dtype=tf.int64)
    tf.train.Checkpoint(model=model, step=step).save(str(run / "checkpoints" / "ckpt"))
    return run


def _run_onnx(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(["rgb"], {"packed": x})[0]


@pytest.mark.parametrize("variant", ["paper", "residual"])
def test_run_folder_converts_with_parity_and_a_clean_graph(tmp_path, variant):
    model = _trained_like(8, variant)
    run = _save_run(tmp_path, model, variant, 8)
    report = convert_checkpoint(run, tmp_path / "m.onnx")
    assert report.max_abs_diff <= 1e-4
    proto = onnx.load(str(tmp_path / "m.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert not {"SpaceToDepth", "SpaceToBatchND", "BatchToSpaceND"} & set(ops)
    # rewrite_graph ran: no ConvTranspose or DepthToSpace left (benchmarks/graph_variants.py)
    assert not {"ConvTranspose", "DepthToSpace"} & set(ops)
    assert report.rewrites["subpixel"] == 1 and report.rewrites["nhwc_depth_to_space"] == 2
    dilated = [n for n in proto.graph.node if n.op_type == "Conv"
               and any(a.name == "dilations" and list(a.ints) == [2, 2] for a in n.attribute)]
    assert len(dilated) == 2  # one per DAM: the spatial attention's depthwise 5x5, dilation 2
    contract = read_contract(tmp_path / "m.onnx")
    assert (contract.variant, contract.width, contract.steps, contract.output_space) == (variant, 8, 123, "linear")
    assert len(contract.weights_sha256) == 64
    # free spatial size: another shape than the one traced gives TensorFlow's answer
    x = np.random.default_rng(0).random((1, 26, 34, 4), dtype=np.float32)
    np.testing.assert_allclose(_run_onnx(tmp_path / "m.onnx", x), model(x).numpy(), atol=1e-4)


def test_a_lowpass_free_run_converts_from_its_config_with_parity(tmp_path):
    model = _trained_like(8, "noise", correction_lowpass=8.0)
    run = _save_run(tmp_path, model, "noise", 8, correction_lowpass=8.0)
    report = convert_checkpoint(run, tmp_path / "m.onnx")
    assert report.max_abs_diff <= 1e-4
    # the blur of ones became a product of two 1-D blurs, and the spread a broadcast
    assert report.rewrites["lowpass_normalizer"] == 1 and report.rewrites["lowpass_subtract"] == 1
    assert report.ops["ConstantOfShape"] == 2 and "Transpose" not in _ops_after("Div", tmp_path / "m.onnx")
    for x in (np.random.default_rng(0).random((1, 26, 34, 8), dtype=np.float32),
              np.random.default_rng(1).random((2, 4, 6, 8), dtype=np.float32)):
        np.testing.assert_allclose(_run_onnx(tmp_path / "m.onnx", x), model(x).numpy(), atol=1e-4)
    # the same weights without the option in the config are another function: it is not ignored
    (run / "config.json").write_text(json.dumps({"variant": "noise", "width": 8}))
    with pytest.raises(ConversionError):
        convert_checkpoint(run, tmp_path / "other.onnx")


def _ops_after(op: str, path) -> set[str]:
    """The op types of the nodes that read a node of type ``op``'s output."""
    graph = onnx.load(str(path)).graph
    outputs = {o for n in graph.node if n.op_type == op for o in n.output}
    return {n.op_type for n in graph.node if outputs & set(n.input)}


def _converts_with_parity(folder, **architecture) -> onnx.ModelProto:
    """Train-like weights of a width-8 noise network with ``architecture``, saved as a run in
    ``folder`` with that config, converted; the ONNX file gives TensorFlow's answer."""
    model = _trained_like(8, "noise", **architecture)
    report = convert_checkpoint(_save_run(folder, model, "noise", 8, **architecture), folder / "m.onnx")
    assert report.max_abs_diff <= 1e-4
    x = np.random.default_rng(4).random((1, 22, 18, 8), dtype=np.float32)
    np.testing.assert_allclose(_run_onnx(folder / "m.onnx", x), model(x).numpy(), atol=1e-4)
    return onnx.load(str(folder / "m.onnx"))


def test_a_run_with_a_deep_half_resolution_path_converts_from_its_config_with_parity(tmp_path):
    _converts_with_parity(tmp_path, n_dam=1, half_depth=2, correction_lowpass=8.0)


def test_a_run_with_narrower_dams_converts_from_its_config_with_parity(tmp_path):
    proto = _converts_with_parity(tmp_path, correction_lowpass=8.0, dam_inner=6)
    inits = {i.name: i for i in proto.graph.initializer}
    assert any(list(i.dims)[:2] == [6, 8] for i in inits.values())  # a DAM's first 3x3 conv: 8 -> 6


def test_a_run_with_a_learned_base_converts_from_its_config_into_the_same_graph(tmp_path):
    """The learned base folds into the bilinear base's convolution: parity, and no node more than
    the same network without it."""
    (tmp_path / "learned").mkdir()
    (tmp_path / "plain").mkdir()
    learned = _converts_with_parity(tmp_path / "learned", n_dam=1, correction_lowpass=8.0, learned_base=5.0)
    plain = _converts_with_parity(tmp_path / "plain", n_dam=1, correction_lowpass=8.0)
    ops = [sorted(n.op_type for n in m.graph.node) for m in (learned, plain)]
    assert ops[0] == ops[1]


def test_foreign_checkpoint_converts_through_a_name_map(tmp_path):
    model = _trained_like(8, "paper", seed=3)
    foreign = {}
    mapping = {}
    for i, w in enumerate(model.weights):
        name = f"other_impl/block_{i}/{w.path.split('/')[-1]}"
        foreign[name.replace("/", "_")] = tf.Variable(w.numpy(), name=name)
        mapping[name.replace("/", "_")] = w.path
    tf.train.Checkpoint(**foreign).save(str(tmp_path / "foreign" / "ckpt"))
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    prefix = tf.train.latest_checkpoint(str(tmp_path / "foreign"))
    report = convert_checkpoint(prefix, tmp_path / "f.onnx", variant="paper", width=8, name_map=tmp_path / "map.json")
    assert report.max_abs_diff <= 1e-4
    x = np.random.default_rng(1).random((1, 16, 20, 4), dtype=np.float32)
    np.testing.assert_allclose(_run_onnx(tmp_path / "f.onnx", x), model(x).numpy(), atol=1e-4)


def test_incomplete_name_map_is_refused_and_writes_nothing(tmp_path):
    model = _trained_like(8, "paper")
    w = model.weights[0]
    tf.train.Checkpoint(only=tf.Variable(w.numpy())).save(str(tmp_path / "foreign" / "ckpt"))
    (tmp_path / "map.json").write_text(json.dumps({"only": w.path}))
    prefix = tf.train.latest_checkpoint(str(tmp_path / "foreign"))
    with pytest.raises(ConversionError, match="unset"):
        convert_checkpoint(prefix, tmp_path / "x.onnx", variant="paper", width=8, name_map=tmp_path / "map.json")
    assert not (tmp_path / "x.onnx").exists()


def test_wrong_architecture_is_refused(tmp_path):
    run = _save_run(tmp_path, _trained_like(8, "residual"), "residual", 8)
    with pytest.raises(ConversionError, match="does not match"):
        convert_checkpoint(run, tmp_path / "x.onnx", width=16)
    assert not list(tmp_path.glob("*.onnx"))


def test_fixed_shape_for_static_runtimes(tmp_path):
    run = _save_run(tmp_path, _trained_like(8, "paper"), "paper", 8)
    report = convert_checkpoint(run, tmp_path / "fixed.onnx", fixed_shape=(32, 48), ort_format=True)
    proto = onnx.load(str(tmp_path / "fixed.onnx"))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 16, 24, 4]
    # the ORT format (for mobile runtimes) loads and gives the same answer
    assert report.ort_output == tmp_path / "fixed.ort"
    x = np.random.default_rng(0).random((1, 16, 24, 4), dtype=np.float32)
    np.testing.assert_allclose(_run_onnx(report.ort_output, x), _run_onnx(tmp_path / "fixed.onnx", x), atol=1e-6)


def test_keras_weights_file_converts(tmp_path):
    model = _trained_like(8, "residual", seed=5)
    path = tmp_path / "w.weights.h5"
    model.save_weights(str(path))
    report = convert_checkpoint(path, tmp_path / "k.onnx", variant="residual", width=8)
    assert report.max_abs_diff <= 1e-4


def test_saved_model_converts(tmp_path):
    model = _trained_like(8, "paper", seed=7)
    model.export(str(tmp_path / "sm"), verbose=False)
    report = convert_checkpoint(tmp_path / "sm", tmp_path / "s.onnx", variant="paper", width=8)
    assert report.max_abs_diff <= 1e-4
    x = np.random.default_rng(2).random((1, 18, 22, 4), dtype=np.float32)
    np.testing.assert_allclose(_run_onnx(tmp_path / "s.onnx", x), model(x).numpy(), atol=1e-4)
    assert read_contract(tmp_path / "s.onnx").variant == "paper"


def test_graph_rewrite_keeps_the_function_and_the_contract(tmp_path):
    """The graph rewrites change the graph, not the model: same output (to float rounding) and the
    same contract, weights_sha256 included: it is the digest of the trained network's weights in
    layer order, the same however tf2onnx orders its initializers and whatever the rewrites do."""
    from rawdev.model import weights_sha256

    model = _trained_like(8, "residual", seed=9)
    run = _save_run(tmp_path, model, "residual", 8)
    plain = convert_checkpoint(run, tmp_path / "plain.onnx", rewrite=False)
    rewritten = convert_checkpoint(run, tmp_path / "rewritten.onnx")
    again = convert_checkpoint(run, tmp_path / "again.onnx")
    assert plain.rewrites == {} and "ConvTranspose" in plain.ops and "ConvTranspose" not in rewritten.ops
    assert plain.contract == rewritten.contract == again.contract
    assert rewritten.contract.weights_sha256 == weights_sha256(model.get_weights())
    x = np.random.default_rng(3).random((2, 22, 30, 4), dtype=np.float32)
    np.testing.assert_allclose(_run_onnx(tmp_path / "rewritten.onnx", x), _run_onnx(tmp_path / "plain.onnx", x),
                               atol=1e-5, rtol=0)
