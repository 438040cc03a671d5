"""Command-line options that `develop` and `compare` share: one definition, one set of defaults."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the heavy modules load when a command runs, so that --version stays fast
    from rawdev.cfa import CFA
    from rawdev.develop import DevelopOptions

Model = Annotated[str, typer.Option("--model", "-m", help="Registry name or path to an .onnx model.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or nnapi.")]
Threads = Annotated[int, typer.Option(help="onnxruntime intra-op threads (0 = all cores; with several "
                                            "--jobs, the cores shared out).")]
Jobs = Annotated[str, typer.Option(help="Worker processes for a batch, each with its own session: auto (one "
                                        "single-threaded worker per core for several files on the CPU) or N.")]
WhiteBalance = Annotated[str, typer.Option("--wb", help="White balance: camera, daylight, none or R,G,B multipliers.")]
Exposure = Annotated[str, typer.Option(help="auto (LibRaw-like brightening) or exposure in EV.")]
Look = Annotated[str, typer.Option(help="default (tone curve) or neutral (matrix and sRGB transfer only).")]
QuadBayer = Annotated[str, typer.Option("--quad-bayer", help="Quad-Bayer: bin (half size) or remosaic.")]
CFAOverride = Annotated[str | None, typer.Option("--cfa", help="Override the CFA, e.g. RGGB, BGGR or quad-RGGB.")]
Black = Annotated[float | None, typer.Option(help="Override the black level (PNG mosaics: default 0).")]
White = Annotated[float | None, typer.Option(help="Override the white level (PNG mosaics: default 1020).")]
Tile = Annotated[str, typer.Option(help="Tile size in packed samples (auto or N).")]
Overlap = Annotated[int, typer.Option(help="Tile overlap in packed samples.")]
Precision = Annotated[str, typer.Option(help="auto (int8 where it was measured faster within 0.1 dB: the CPU "
                                             "provider, a CPU with VNNI or AMX, a model with such an int8 "
                                             "sibling; else fp32), fp32, or int8 (the model's int8 sibling).")]
Denoise = Annotated[str, typer.Option(help="Denoising strength of a noise-aware model: auto (the sensor's "
                                           "noise, from the DNG NoiseProfile or estimated), or S from 0 (keep "
                                           "the grain) to 4; 2 is twice as strong.")]

def parse_tile(tile: str) -> int | None:
    if tile == "auto":
        return None
    try:
        return int(tile)
    except ValueError:
        raise ValueError(f"--tile {tile!r}: give auto or a number of packed samples") from None


def develop_options(wb: str, quad_bayer: str, exposure: str, look: str, tile: str, overlap: int,
                    bits: int = 16, denoise: str = "auto") -> DevelopOptions:
    """DevelopOptions from the shared command-line values; ValueError says what is wrong."""
    from rawdev.develop import DevelopOptions

    return DevelopOptions(wb=wb, quad_bayer=quad_bayer, exposure=exposure, look=look, bits=bits,
                          tile=parse_tile(tile), overlap=overlap, denoise=denoise)


def check_contract(options: DevelopOptions, contract, model_path: Path, fmt: str = "tiff") -> None:
    """What the model's contract rules out is a usage error (ValueError): a strength for a model
    that takes no noise level; DNG output from a model whose output is finished sRGB."""
    if fmt == "dng" and contract.output_space != "linear":
        raise ValueError("--format dng needs a model with linear output (its output here is finished sRGB)")
    if options.denoise != "auto" and contract.noise_input == "none":
        raise ValueError(f"--denoise is not available for {Path(model_path).name}: it takes no noise level; "
                         "leave --denoise out or choose a noise-aware model (rawdev models list)")


def check_values(threads: int, black: float | None, white: float | None) -> None:
    """Usage errors in the other values `develop` and `compare` share (ValueError), found before
    any file is read rather than once per file."""
    if threads < 0:
        raise ValueError(f"--threads {threads}: give 0 (all cores) or a positive number")
    for name, level in (("--black", black), ("--white", white)):
        if level is not None and not 0 <= level < math.inf:  # also refuses nan
            raise ValueError(f"{name} {level:g}: give a finite level of 0 or more")
    if black is not None and white is not None and white <= black:
        raise ValueError(f"--white {white:g} must be above --black {black:g}")


def cfa_option(text: str | None) -> CFA | None:
    from rawdev.cfa import parse_cfa

    return parse_cfa(text) if text else None


def model_choice(model: str, precision: str):
    """``--model`` with ``--precision``: the files to choose from (rawdev.precision.ModelChoice);
    ValueError for what the registry already rules out."""
    from rawdev.precision import choose

    return choose(model, precision)


def pick_model(choice, device: str) -> Path:
    """The model file to run for ``choice`` on ``device`` (``auto`` decides on the primary
    execution provider and the CPU's flags), checked against the registry's sha256 when it is a
    registered model; ValueError (ContractError, DeviceUnavailable) otherwise."""
    from rawdev.model import resolve_model

    provider = None
    if choice.needs_provider:
        from rawdev.session import available_providers, provider_list

        first = provider_list(device, available_providers())[0]
        provider = first[0] if isinstance(first, tuple) else first
    return resolve_model(choice.pick(provider))


def check_precision(precision: str, contract, model_path: Path) -> None:
    """A model file whose precision contradicts ``--precision`` is a usage error (ValueError)."""
    from rawdev.precision import check_contract as check

    check(precision, contract, model_path)


def session_line(session) -> str:
    """One line naming the model, the execution providers onnxruntime really applied, the
    precision the model runs in and how many tiles run at once."""
    c = session.contract
    told = ", told the noise level" if c.noise_input != "none" else ""
    note = f" ({session.note})" if getattr(session, "note", "") else ""
    together = getattr(session, "concurrency", 1)
    at_once = f", {together} tiles at once" if together > 1 else ""
    return (f"model {Path(session.path).name} ({c.variant}, C={c.width}, {c.output_space}{told}) "
            f"on {', '.join(session.providers)}, {c.precision}{note}{at_once}")
