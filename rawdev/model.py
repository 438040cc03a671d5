"""The model contract carried in ONNX metadata, and the registry of shipped weights.

The pipeline reads what a model expects and returns from its metadata and never guesses a model
from tensor shapes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from rawdev import DEFAULT_MODEL

PREFIX = "rawdev."
WEIGHTS_DIR = Path(__file__).parent / "weights"

# Site (row, column) of each input plane inside the 2x2 RGGB tile.
PACKINGS = {
    "RGGB": ((0, 0), (0, 1), (1, 0), (1, 1)),
    # The MAI 2021 challenge loader: B, Gb, R, Gr = raw[1::2,1::2], raw[0::2,1::2], raw[0::2,0::2], raw[1::2,0::2]
    "MAI": ((1, 1), (0, 1), (0, 0), (1, 0)),
}
NORMALIZATIONS = ("black-white", "mai")
OUTPUT_SPACES = ("linear", "srgb")
NOISE_INPUTS = ("none", "sigma-planes")
PRECISIONS = ("fp32", "int8")  # what the model's weights and activations are stored and run in
# What the contract of a noise-aware network (train variant "noise") says beyond the defaults.
NOISE_CONTRACT = {"noise_input": "sigma-planes", "clip_below_black": "no"}


class ContractError(ValueError):
    """An ONNX file that does not say, or says something impossible, about what it expects."""


class ModelIntegrityError(ContractError):
    """A shipped model whose file is missing or differs from the sha256 its registry recorded."""


@dataclass(frozen=True)
class ModelContract:
    """What a model takes and returns; stored as ``rawdev.*`` ONNX metadata entries."""

    packing: str = "RGGB"
    normalization: str = "black-white"
    white_balance: str = "before"  # "before": the pipeline applies WB to the mosaic; "none"
    output_space: str = "linear"
    scale: int = 2  # output pixels per packed sample along each axis
    width: int = 32
    variant: str = "residual"
    version: str = "1"
    training_data: str = ""
    steps: int = 0
    weights_sha256: str = ""
    # "sigma-planes": after the packed planes come as many planes holding each sample's noise
    # standard deviation (rawdev.normalize.noise_sigma); models without the key take none.
    noise_input: str = "none"
    # "yes": input below the black level is clipped to 0 (the older models were trained so);
    # "no": it is kept, so the noise around black averages to the true level.
    clip_below_black: str = "yes"
    # The noisiest shot level a noise-aware model was trained on (text; "" = not recorded): the
    # noise it is told is capped there, so a strong --denoise never asks for more than it knows.
    noise_max_shot: str = ""
    # "int8": a quantized model (rawdev quantize) made from the fp32 model named in fp32_model,
    # whose file had the sha256 fp32_sha256; "fp32" (absent in older models): as trained.
    precision: str = "fp32"
    fp32_model: str = ""
    fp32_sha256: str = ""

    def __post_init__(self):
        if self.packing not in PACKINGS:
            raise ContractError(f"packing {self.packing!r} is not one of {sorted(PACKINGS)}")
        if self.normalization not in NORMALIZATIONS:
            raise ContractError(f"normalization {self.normalization!r} is not one of {NORMALIZATIONS}")
        if self.white_balance not in ("before", "none"):
            raise ContractError(f"white_balance {self.white_balance!r} must be 'before' or 'none'")
        if self.output_space not in OUTPUT_SPACES:
            raise ContractError(f"output_space {self.output_space!r} is not one of {OUTPUT_SPACES}")
        if self.noise_input not in NOISE_INPUTS:
            raise ContractError(f"noise_input {self.noise_input!r} is not one of {NOISE_INPUTS}")
        if self.noise_max_shot:
            try:
                if not float(self.noise_max_shot) > 0:
                    raise ValueError
            except ValueError:
                raise ContractError(f"noise_max_shot {self.noise_max_shot!r} is not a positive number") from None
        if self.clip_below_black not in ("yes", "no"):
            raise ContractError(f"clip_below_black {self.clip_below_black!r} must be 'yes' or 'no'")
        if self.precision not in PRECISIONS:
            raise ContractError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.precision == "int8" and not (self.fp32_model and self.fp32_sha256):
            raise ContractError("an int8 model must name the fp32 model it was made from (fp32_model, fp32_sha256)")

    @property
    def sites(self) -> tuple[tuple[int, int], ...]:
        return PACKINGS[self.packing]

    def to_metadata(self) -> dict[str, str]:
        return {PREFIX + k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str = "model") -> ModelContract:
        entries = {k[len(PREFIX):]: v for k, v in meta.items() if k.startswith(PREFIX)}
        if not entries:
            raise ContractError(
                f"{source} carries no rawdev model contract in its metadata; "
                "convert it with `rawdev convert-weights` (or `rawdev models stamp`) first"
            )
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            if f.name in entries:
                kwargs[f.name] = int(entries[f.name]) if f.type in ("int", int) else entries[f.name]
        missing = {"packing", "normalization", "output_space"} - set(kwargs)
        if missing:
            raise ContractError(f"{source}: model contract lacks {', '.join(sorted(missing))}")
        return cls(**kwargs)  # type: ignore[arg-type]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(initializers: list[np.ndarray]) -> str:
    """Digest of the weights alone (order, shapes and values), independent of graph details;
    convert-weights takes them in the trained network's layer order."""
    h = hashlib.sha256()
    for arr in initializers:
        a = np.ascontiguousarray(arr)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_contract(path: Path) -> ModelContract:
    """Contract of an ONNX file, read from its metadata without loading the weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ContractError(f"{path}: not a readable ONNX file ({exc.__class__.__name__})") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    return ModelContract.from_metadata(meta, source=str(path))


def write_contract(model, contract: ModelContract) -> None:
    """Set the contract entries on an in-memory onnx.ModelProto (replacing older ones)."""
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in contract.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


@dataclass(frozen=True)
class RegisteredModel:
    """A shipped model: its file and the sha256 recorded when it was published."""

    name: str
    path: Path
    sha256: str
    card: str
    int8_of: str = ""  # an int8 model: the registry name of the fp32 model it was quantized from
    # An int8 model measured faster than its fp32 model on a CPU with VNNI, within the quality bar
    # (benchmarks/precision.py): only then does --precision auto choose it.
    faster_within_bar: bool = False
    fp32_sha256: str = ""  # an int8 model: the sha256 of the fp32 file it was made from

    def verify(self) -> bool:
        return self.path.exists() and file_sha256(self.path) == self.sha256

    def check(self) -> None:
        """Raise ModelIntegrityError (one line: which model, what is wrong, what to do) unless the
        file is there and matches the registry's sha256."""
        if not self.path.is_file():
            raise ModelIntegrityError(f"model {self.name}: its file {self.path} is missing; reinstall rawdev")
        actual = file_sha256(self.path)
        if actual != self.sha256:
            raise ModelIntegrityError(
                f"model {self.name}: {self.path} does not match the sha256 in the registry (file "
                f"{actual[:12]}, registry {self.sha256[:12]}): it is damaged or was replaced; reinstall rawdev, "
                "or give the file as --model PATH.onnx to use it unchecked")


def registry() -> dict[str, RegisteredModel]:
    """Models shipped in rawdev/weights (listed in registry.json)."""
    index = WEIGHTS_DIR / "registry.json"
    if not index.exists():
        return {}
    entries = json.loads(index.read_text())
    return {
        e["name"]: RegisteredModel(e["name"], WEIGHTS_DIR / e["file"], e["sha256"], e.get("card", ""),
                                   e.get("int8_of", ""), bool(e.get("faster_within_bar", False)),
                                   e.get("fp32_sha256", ""))
        for e in entries
    }


def int8_sibling(name: str, models: dict[str, RegisteredModel] | None = None) -> str | None:
    """The registry name of the int8 model quantized from the registered fp32 model ``name``."""
    models = registry() if models is None else models
    return next((m.name for m in sorted(models.values(), key=lambda m: m.name) if m.int8_of == name), None)


def is_model_path(name_or_path: str) -> bool:
    """Whether ``--model`` names a file (an .onnx path, or anything that exists) rather than a registry entry."""
    candidate = Path(name_or_path).expanduser()
    return candidate.suffix == ".onnx" or candidate.exists()


def resolve_model(name_or_path: str | None, verify: bool = True) -> Path:
    """A registry name or a path to an .onnx file -> the file's path.

    A registry name's file is checked against the registry's sha256 (``verify``; a few
    milliseconds, once a run): ModelIntegrityError when it differs. A path is used as it is."""
    name = name_or_path or DEFAULT_MODEL
    candidate = Path(name).expanduser()
    if is_model_path(name):
        if not candidate.is_file():
            raise ContractError(f"model file {candidate} does not exist")
        return candidate
    models = registry()
    if name not in models:
        known = ", ".join(sorted(models)) or "none shipped"
        raise ContractError(f"unknown model {name!r} (shipped: {known}); give a registry name or an .onnx path")
    if verify:
        models[name].check()
    return models[name].path
