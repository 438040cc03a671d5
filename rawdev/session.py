"""onnxruntime sessions with an explicit provider list and an honest report of what was applied.

One session per model and device, reused across a batch. A device that was asked for and is not
there is an error: never a silent CPU fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rawdev.model import ContractError, ModelContract

DEVICES = ("auto", "cpu", "cuda", "nnapi")
PROVIDER_OF = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
}


# The two builds of onnxruntime install the same `onnxruntime` module, so they must never be installed
# together; rawdev depends on neither and its extras name one (pyproject.toml).
BUILDS = {"onnxruntime": "cpu", "onnxruntime-gpu": "gpu"}
INSTALL_CPU = "pip install 'rawdev[cpu]'"
INSTALL_GPU = "pip install 'rawdev[gpu]'"
BOTH_INSTALLED = ("onnxruntime and onnxruntime-gpu are both installed here and overwrite each other's files: "
                  f"pip uninstall -y onnxruntime onnxruntime-gpu, then {INSTALL_GPU} (or {INSTALL_CPU})")


class DeviceUnavailable(RuntimeError):
    """The requested execution provider is not available or was not applied."""


class RuntimeMissing(DeviceUnavailable):
    """onnxruntime cannot be imported: neither build is installed, or the one installed is broken."""


def import_onnxruntime():
    """The onnxruntime module; without it, RuntimeMissing with one line saying which extra to install."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeMissing(_missing_message(exc)) from None
    return ort


def _missing_message(exc: ImportError) -> str:
    if isinstance(exc, ModuleNotFoundError) and exc.name == "onnxruntime":
        return f"onnxruntime is not installed: {INSTALL_CPU} (or, for CUDA, {INSTALL_GPU} instead)"
    if len(installed_builds()) > 1:
        return BOTH_INSTALLED
    reason = " ".join(str(exc).split())[:160]
    return (f"onnxruntime cannot be imported ({reason}): reinstall one build, "
            f"pip uninstall -y onnxruntime onnxruntime-gpu, then {INSTALL_CPU} (or {INSTALL_GPU})")


def installed_builds() -> list[str]:
    """The distributions (onnxruntime, onnxruntime-gpu) that installed the `onnxruntime` module Python
    imports from here. Two mean they overwrite each other. A build in another folder of the path that
    this one shadows (a --target install in front of the system's) does not count."""
    import importlib.util
    from importlib import metadata

    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):  # ValueError: a None in sys.modules (tests)
        spec = None
    here = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    found = []
    for name in BUILDS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if here is None or Path(dist.locate_file("onnxruntime/__init__.py")).resolve() == here:
            found.append(name)
    return found


def available_providers() -> list[str]:
    return list(import_onnxruntime().get_available_providers())


def check_device(device: str) -> None:
    """Refuse, before any work, a device that this onnxruntime cannot give (or a missing onnxruntime)."""
    provider_list(device, available_providers())


def provider_list(device: str, available: list[str]) -> list[str | tuple[str, dict]]:
    """The providers to request for ``device``, in priority order, CPU last."""
    if device not in DEVICES:
        raise DeviceUnavailable(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        chosen = next((d for d in ("cuda", "nnapi") if PROVIDER_OF[d] in available), "cpu")
    else:
        chosen = device
    wanted = PROVIDER_OF[chosen]
    if wanted not in available:
        if chosen != "cuda":
            advice = "use --device cpu"
        elif len(installed_builds()) > 1:
            advice = BOTH_INSTALLED
        else:
            advice = f"for CUDA, {INSTALL_GPU} in a fresh venv (onnxruntime-gpu, never beside onnxruntime), " \
                     "or use --device cpu"
        raise DeviceUnavailable(
            f"device {device!r} needs {wanted}, which this onnxruntime build does not have "
            f"(available: {', '.join(available)}); {advice}"
        )
    if chosen == "cuda":
        options = {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}
        return [(wanted, options), PROVIDER_OF["cpu"]]
    if chosen == "nnapi":
        return [wanted, PROVIDER_OF["cpu"]]
    return [wanted]


@dataclass
class ModelSession:
    """A loaded model: the onnxruntime session, its contract and the providers really applied."""

    path: Path
    contract: ModelContract
    session: object
    device: str
    providers: list[str]
    input_name: str
    output_name: str

    def __call__(self, packed: np.ndarray) -> np.ndarray:
        """Run one (h, w, C) tile (or a (N, h, w, C) batch); returns (h*s, w*s, K) float32."""
        batch = packed if packed.ndim == 4 else packed[None]
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        return out if packed.ndim == 4 else out[0]


def open_session(path: Path, device: str = "auto", threads: int = 0, spinning: bool = True) -> ModelSession:
    """Build the session for ``path`` on ``device`` and check that the device was really used.

    ``spinning=False`` lets onnxruntime's idle threads sleep instead of spin between runs: in a
    batch, decoding and encoding threads then get the cores between tiles (on 2 cores a batch of
    9 MP files ran 12 % faster a file; a lone file's inference about 3 % slower)."""
    ort = import_onnxruntime()

    providers = provider_list(device, available_providers())
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = _inference_session(path, options, providers)
    # The contract comes from the session's own copy of the metadata: no second read of the file,
    # and no `import onnx` (a second or so) on the develop path.
    contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
    applied = session.get_providers()
    primary = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if primary not in applied:
        both = len(installed_builds()) > 1
        advice = BOTH_INSTALLED if both else "check the CUDA/cuDNN libraries, or use --device cpu"
        raise DeviceUnavailable(f"{primary} was requested but onnxruntime applied only {', '.join(applied)} ({advice})")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise DeviceUnavailable(f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    return ModelSession(path, contract, session, device, applied, inputs[0].name, outputs[0].name)


def _inference_session(path: Path, options, providers):
    """``ort.InferenceSession``; a file onnxruntime cannot parse is a ContractError (a usage error)."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except (state.InvalidProtobuf, state.InvalidGraph, state.NoSuchFile) as exc:
        raise ContractError(f"{path}: not a readable ONNX file ({exc.__class__.__name__})") from exc
