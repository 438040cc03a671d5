"""onnxruntime sessions with an explicit provider list and an honest report of what was applied.

One session per model and device, reused across a batch. A device that was asked for and is not
there is an error: never a silent CPU fallback.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rawdev.model import ContractError, ModelContract

DEVICES = ("auto", "cpu", "cuda", "nnapi")
# With --threads 0 on the CPU, tiles run this many at a time (at most), each on its share of the
# cores: on 2 cores two single-threaded runs did 45 tiles of a 9 MP file in 0.87x the time of one
# two-threaded run (its threads wait for each other at every layer), and a finished tile is
# blended and rendered while the next ones run. More at once would only cost memory.
MAX_CONCURRENT_TILES = 4
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
    note: str = ""  # why --device auto runs on the CPU where the build has an accelerator
    concurrency: int = 1  # tiles to run at once (onnxruntime's run is thread-safe): see open_session

    def __call__(self, packed: np.ndarray) -> np.ndarray:
        """Run one (h, w, C) tile (or a (N, h, w, C) batch); returns (h*s, w*s, K) float32."""
        batch = packed if packed.ndim == 4 else packed[None]
        out = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]
        return out if packed.ndim == 4 else out[0]


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_layout(threads: int, cores: int | None = None) -> tuple[int, int]:
    """(intra-op threads, tiles at once) on the CPU provider: ``threads`` as given, one tile at a
    time; 0 (every core): up to :data:`MAX_CONCURRENT_TILES` tiles at once, the cores shared out."""
    if threads:
        return threads, 1
    cores = cores or cpu_count()
    concurrent = max(1, min(cores, MAX_CONCURRENT_TILES))
    return max(1, cores // concurrent), concurrent


def open_session(path: Path, device: str = "auto", threads: int = 0, spinning: bool = True) -> ModelSession:
    """Build the session for ``path`` on ``device`` and check that the device was really used.

    On the CPU with ``threads`` 0, several tiles run at once, each with its share of the cores
    (:func:`cpu_layout`; ``ModelSession.concurrency``); an accelerator runs one at a time.

    An accelerator that onnxruntime cannot use (onnxruntime-gpu without the CUDA libraries, or
    without a GPU) is an error when it was asked for; with ``auto`` the session is the CPU's and
    ``note`` says why.

    ``spinning=False`` lets onnxruntime's idle threads sleep instead of spin between runs: in a
    batch, decoding and encoding threads then get the cores between tiles (on 2 cores a batch of
    9 MP files ran 12 % faster a file; a lone file's inference about 3 % slower)."""
    ort = import_onnxruntime()

    providers = provider_list(device, available_providers())
    primary = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    intra, concurrency = cpu_layout(threads) if primary == PROVIDER_OF["cpu"] else (threads, 1)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra:
        options.intra_op_num_threads = intra
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    note = ""
    if primary == PROVIDER_OF["cpu"]:
        session = _inference_session(path, options, providers)
    else:
        if primary == PROVIDER_OF["cuda"]:
            _preload_cuda(ort)
        session, why = _accelerated_session(path, options, providers, primary)
        if session is None:
            if device != "auto":
                both = len(installed_builds()) > 1
                advice = BOTH_INSTALLED if both else "check the CUDA and cuDNN libraries, or use --device cpu"
                raise DeviceUnavailable(f"{primary} was requested but onnxruntime could not use it ({why}); {advice}")
            session = _inference_session(path, options, [PROVIDER_OF["cpu"]])
            note = f"{primary.removesuffix('ExecutionProvider')} not usable here: {why}"
    # The contract comes from the session's own copy of the metadata: no second read of the file,
    # and no `import onnx` (a second or so) on the develop path.
    contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
    applied = session.get_providers()
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise DeviceUnavailable(f"{path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    return ModelSession(path, contract, session, device, applied, inputs[0].name, outputs[0].name, note,
                        concurrency)


def _accelerated_session(path: Path, options, providers, primary: str):
    """(session, "") with ``primary`` applied, or (None, why not). onnxruntime reports a provider it
    cannot load on its native stderr and goes on without it: that report is caught here and made the
    reason; where the provider was applied, whatever it printed is passed on unchanged."""
    with _native_stderr() as logged:
        try:
            session = _inference_session(path, options, providers)
        except ContractError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's EP failures have no common class
            session, failure = None, " ".join(str(exc).split())
    log = logged[0] if logged else ""
    if session is not None and primary in session.get_providers():
        if log:
            sys.stderr.write(log)
        return session, ""
    return None, _load_failure(log) if session is not None else failure[:200]


def _preload_cuda(ort) -> None:
    """onnxruntime-gpu's CUDA provider library has no search path of its own for NVIDIA's libraries
    installed as pip wheels (``pip install 'onnxruntime-gpu[cuda,cudnn]'``): ``preload_dlls``
    (onnxruntime 1.21 and later) loads them from there, or from the default paths. What it prints
    about a library it did not find is dropped: the session's own failure then names it."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            preload()
        except Exception:  # noqa: BLE001 - a failed preload leaves the default search, which reports
            pass


def _load_failure(log: str) -> str:
    """The reason in onnxruntime's report of a provider it could not load, in a few words."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log)
    found = re.search(r"with error: ([^\n]+)", text)
    reason = found.group(1).strip() if found else ""
    needs = re.search(r"Require (cuDNN [0-9.*]+ and CUDA [0-9.*]+)", text)
    if needs:
        wanted = needs.group(1).rstrip(".")
        reason = f"{reason}; it needs {wanted}" if reason else f"it needs {wanted}"
    if not reason:
        lines = [ln for ln in text.splitlines() if "[E:" in ln or "[W:" in ln]
        reason = lines[0].rsplit("] ", 1)[-1].strip() if lines else "onnxruntime did not apply it and said nothing"
    return reason[:240]


@contextmanager
def _native_stderr():
    """Catch what native code writes to file descriptor 2 meanwhile: yields a list that holds the
    text afterwards (empty where descriptor 2 cannot be redirected)."""
    caught: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield caught
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield caught
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            caught.append(tmp.read().decode(errors="replace"))


def _inference_session(path: Path, options, providers):
    """``ort.InferenceSession``; a file onnxruntime cannot parse is a ContractError (a usage error)."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    try:
        # enable_fallback=0: onnxruntime would otherwise retry on the CPU by itself, printing to stdout,
        # when an accelerator fails to start or fails in a run: a silent fallback in all but name.
        return ort.InferenceSession(str(path), sess_options=options, providers=providers, enable_fallback=0)
    except (state.InvalidProtobuf, state.InvalidGraph, state.NoSuchFile) as exc:
        raise ContractError(f"{path}: not a readable ONNX file ({exc.__class__.__name__})") from exc
