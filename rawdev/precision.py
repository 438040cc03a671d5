"""``--precision auto|fp32|int8``: whether a model runs as trained (fp32) or as its int8 sibling.

A shipped fp32 model may have an int8 sibling in the registry (``int8_of`` names its fp32 model;
made by ``rawdev quantize``). ``int8`` runs the sibling (or an int8 model given by path), ``fp32``
the fp32 model, and ``auto`` picks int8 only where it pays: the CPU execution provider, a CPU with
8-bit dot-product instructions (VNNI or AMX), and a sibling whose registry entry says it was
measured faster than its fp32 model within the quality bar (``faster_within_bar``,
benchmarks/precision.py); fp32 everywhere else.

Nothing here imports onnxruntime or onnx: the registry is JSON and the CPU's flags are in
/proc/cpuinfo, so the choice is made, and its usage errors found, before any file is read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("auto", "fp32", "int8")
# x86 instructions that multiply-accumulate 8-bit integers (what makes int8 convolutions faster than
# fp32 in onnxruntime's kernels): AVX-512 VNNI (Cascade Lake, Ice Lake, Zen 4 and later), AVX-VNNI
# (Alder Lake, Zen 5), AMX (Sapphire Rapids).
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8")
CPU_PROVIDER = "CPUExecutionProvider"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (``cpuinfo``: its text; empty where unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def fast_int8(flags: Iterable[str]) -> bool:
    """Whether a CPU with these flags has 8-bit dot-product instructions (VNNI or AMX)."""
    return bool(set(flags) & set(INT8_FLAGS))


def auto_precision(provider: str, flags: Iterable[str], sibling_pays: bool) -> str:
    """What ``--precision auto`` runs: ``int8`` on the CPU provider of a CPU with VNNI or AMX when
    the model's int8 sibling was measured to pay (faster within the quality bar), else ``fp32``."""
    return "int8" if provider == CPU_PROVIDER and fast_int8(flags) and sibling_pays else "fp32"


@dataclass(frozen=True)
class ModelChoice:
    """The model files ``--model`` and ``--precision`` leave to choose from."""

    requested: str  # auto, fp32 or int8
    fp32: str | None  # registry name or path to run for fp32
    int8: str | None  # registry name or path to run for int8
    sibling_pays: bool = False  # the int8 sibling's registry entry: faster within the quality bar
    path: bool = False  # --model is a file: its precision is known once it is opened

    @property
    def needs_provider(self) -> bool:
        """Whether the choice depends on the execution provider and the CPU (auto with a sibling that pays)."""
        return self.requested == "auto" and self.fp32 is not None and self.int8 is not None and self.sibling_pays

    def pick(self, provider: str | None = None, flags: Iterable[str] | None = None) -> str:
        """The registry name or path to run; ``provider`` (the primary execution provider) and
        ``flags`` (the CPU's) decide ``auto`` where :attr:`needs_provider`."""
        if self.needs_provider:
            chosen = auto_precision(provider or "", cpu_flags() if flags is None else flags, self.sibling_pays)
            return self.int8 if chosen == "int8" else self.fp32  # type: ignore[return-value]
        return self.fp32 if self.fp32 is not None else self.int8  # type: ignore[return-value]


def choose(model: str, precision: str) -> ModelChoice:
    """The choice for ``--model`` and ``--precision``; ValueError (a usage error, one line) for a
    precision that is not one of auto, fp32, int8, for int8 of a registered model without an int8
    sibling, and for fp32 of a registered int8 model. A model given as a path is checked once
    its contract is read (:func:`check_contract`). Reads the registry only."""
    from rawdev.model import ContractError, int8_sibling, is_model_path, registry

    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose auto, fp32 or int8")
    if is_model_path(model):
        return ModelChoice(precision, model if precision != "int8" else None, model if precision == "int8" else None,
                           path=True)
    models = registry()
    if model not in models:
        known = ", ".join(sorted(models)) or "none shipped"
        raise ContractError(f"unknown model {model!r} (shipped: {known}); give a registry name or an .onnx path")
    entry = models[model]
    if entry.int8_of:  # an int8 model by name
        if precision == "fp32":
            raise ValueError(f"--precision fp32: {model} is an int8 model; for fp32 choose --model {entry.int8_of}")
        return ModelChoice(precision, None, model)
    sibling = int8_sibling(model, models)
    stale = sibling is not None and models[sibling].fp32_sha256 not in ("", entry.sha256)
    if precision == "int8" and stale:
        raise ValueError(f"--precision int8: the int8 sibling {sibling} was made from another version of {model} "
                         f"(sha256 {models[sibling].fp32_sha256[:12]}, now {entry.sha256[:12]}); remake it with "
                         f"`python weights/publish_int8.py {model}` or use --precision fp32")
    if stale:  # auto: an int8 model of other weights is no sibling
        sibling = None
    if precision == "int8" and sibling is None:
        shipped = ", ".join(sorted(n for n, m in models.items() if m.int8_of)) or "none"
        raise ValueError(f"--precision int8: model {model} has no int8 sibling (int8 models shipped: {shipped}); "
                         f"use --precision fp32, or make one with `rawdev quantize {model} -o {model}-int8.onnx` "
                         "and give it as --model")
    if precision == "int8":
        return ModelChoice(precision, None, sibling, models[sibling].faster_within_bar)
    if precision == "fp32" or sibling is None:
        return ModelChoice(precision, model, None)
    return ModelChoice(precision, model, sibling, models[sibling].faster_within_bar)


def check_contract(requested: str, contract, model_path: Path) -> None:
    """A model file whose precision contradicts ``--precision`` is a usage error (ValueError)."""
    name = Path(model_path).name
    if requested == "fp32" and contract.precision != "fp32":
        raise ValueError(f"--precision fp32: {name} is an {contract.precision} model (made from "
                         f"{contract.fp32_model}); give an fp32 model or leave --precision out")
    if requested == "int8" and contract.precision != "int8":
        raise ValueError(f"--precision int8: {name} is an {contract.precision} model; give an int8 model "
                         f"(rawdev quantize {name} -o {Path(name).stem}-int8.onnx) or leave --precision out")
