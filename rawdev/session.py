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


class DeviceUnavailable(RuntimeError):
    """The requested execution provider is not available or was not applied."""


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


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
        raise DeviceUnavailable(
            f"device {device!r} needs {wanted}, which this onnxruntime build does not have "
            f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA or use --device cpu"
        )
    if chosen == "cuda":
        options = {"cudnn_conv_algo_search": "HEURISTIC", "arena_extend_strategy": "kSameAsRequested"}
        return [(wanted, options), PROVIDER_OF["cpu"]]
    if chosen == "nnapi":
        return [wanted, PROVIDER_OF["cpu"]]
    return [wanted]


def runs_on_cpu(device: str) -> bool:
    """Whether ``device`` comes down to onnxruntime's CPU provider on this machine."""
    first = provider_list(device, available_providers())[0]
    return (first[0] if isinstance(first, tuple) else first) == PROVIDER_OF["cpu"]


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
    import onnxruntime as ort

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
        raise DeviceUnavailable(
            f"{primary} was requested but onnxruntime applied only {', '.join(applied)} "
            "(check the CUDA/cuDNN libraries, or use --device cpu)"
        )
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
