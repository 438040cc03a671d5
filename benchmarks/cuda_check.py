"""CUDA against the CPU on one 12 MP-class RAW file: are the outputs equal, and how much faster is it?

Prepared for the day a machine with an NVIDIA GPU is at hand; none has been so far, so rawdev's
CUDA path is unmeasured. The file is FILE, else the largest sample of ../shared/samples/raw that
rawdev develops (imageio_Blackmagic.dng, 9.0 MP), else a synthetic 12 MP Bayer DNG made here (the
shared folder does not travel to a lent machine). For ``--device cpu`` and ``--device cuda``:

1. equality: the 16-bit TIFFs of ``rawdev develop`` on each device must agree within one code value
   in each of R, G and B (max |cpu - cuda| <= 1); the in-process images of develop_mosaic are
   compared the same way. Where they do not, one more CUDA session with TF32 off (``use_tf32=0``,
   onnxruntime's CUDA default is on) says whether TF32 is the cause;
2. inference alone: the onnxruntime session calls of develop_mosaic on the decoded mosaic, in this
   process (the copies to and from the GPU included), median of ``--repeats`` after one warm-up;
3. the whole file: ``rawdev develop FILE`` as its own process, from start to exit (interpreter,
   CUDA start-up, decoding, inference, rendering, the TIFF write), median of ``--repeats`` after a
   warm-up run;
4. the machine: ``nvidia-smi`` (its query and ``-L``), ``lscpu``, library versions, providers.

It writes ``--json`` (benchmarks/results/cuda.json) and prints a summary. Where CUDA is not
available (no onnxruntime-gpu, no CUDA libraries, no GPU) it refuses in one line, exit code 2, and
writes nothing. Exit code 1 when the outputs differ by more than one code value.

Usage (from the repository root, in a venv with ``pip install '.[gpu]'``, never beside onnxruntime;
NVIDIA's libraries system-wide or ``pip install 'onnxruntime-gpu[cuda,cudnn]'``):

    python benchmarks/cuda_check.py [FILE] [--repeats 5] [--model NAME] [--tile auto] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    RESULTS,
    SHARED,
    TimedCalls,
    code_version,
    library_versions,
    machine_info,
    now,
)

DEFAULT_JSON = RESULTS / "cuda.json"
SAMPLES = SHARED / "samples" / "raw"
SYNTHETIC_SIZE = (3000, 4000)  # rows, columns: 12 MP
TOLERANCE = 1  # 16-bit code values per channel


class Refused(Exception):
    """CUDA is not available here: the one line to print (exit code 2)."""


def refuse_unless_cuda(model: str | None):
    """The CUDA ModelSession, or Refused saying why there is none. Nothing heavier than onnxruntime is
    imported before CUDA is known to be in the build."""
    from rawdev.model import resolve_model
    from rawdev.session import DeviceUnavailable, import_onnxruntime, installed_builds, open_session

    try:
        ort = import_onnxruntime()
    except DeviceUnavailable as exc:
        raise Refused(f"CUDA is not available here: {exc}") from None
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        build = ", ".join(installed_builds()) or "onnxruntime"
        raise Refused(f"CUDA is not available here: onnxruntime {ort.__version__} ({build}) has only "
                      f"{', '.join(available)}; on a CUDA machine, pip install 'rawdev[gpu]' in a fresh venv")
    # PyTorch, where installed, loads its CUDA and cuDNN libraries as it is imported: onnxruntime-gpu
    # then finds them (its own preload_dlls, which rawdev calls, looks in the nvidia wheels).
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401
    try:
        return open_session(resolve_model(model), "cuda")
    except (DeviceUnavailable, ValueError) as exc:
        raise Refused(f"CUDA is not available here: {exc}") from None


def pick_file(given: Path | None, work: Path, say) -> tuple[Path, str]:
    """The file to develop and where it came from."""
    from rawdev.inputs import RAW_SUFFIXES
    from rawdev.raw import RawReadError, read_mosaic

    if given is not None:
        return given, "given"
    if SAMPLES.is_dir():
        candidates = sorted((p for p in SAMPLES.iterdir() if p.is_file() and p.suffix.lower() in RAW_SUFFIXES),
                            key=lambda p: p.stat().st_size, reverse=True)
        for path in candidates:  # the largest that rawdev develops (a scan or a linear DNG is refused)
            try:
                read_mosaic(path)
            except (RawReadError, ValueError) as exc:
                say(f"skipping {path.name}: {exc}")
                continue
            return path, "largest shared sample"
    return synthetic_dng(work / "synthetic_12mp.dng"), "synthetic (no shared samples here)"


def synthetic_dng(path: Path) -> Path:
    """A 12 MP 12-bit RGGB DNG of smooth colour ramps, fine stripes and noise, with a fixed seed."""
    import numpy as np

    from rawdev.cfa import mosaic, parse_cfa
    from rawdev.dng import write_dng

    h, w = SYNTHETIC_SIZE
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = y / (h - 1), x / (w - 1)
    stripes = 0.15 * (np.sin(2 * np.pi * (x * 400 + y * 37)) > 0)
    rgb = np.stack([0.1 + 0.6 * x + stripes, 0.2 + 0.5 * y, 0.6 - 0.4 * x * y + stripes / 2], -1).clip(0, 1)
    raw = mosaic(rgb, parse_cfa("RGGB")) * (4095 - 256) + 256
    raw += np.random.default_rng(20261201).normal(0, 6, raw.shape)
    xyz_to_cam = np.array([[0.4716, 0.0603, -0.083], [-0.7798, 1.5474, 0.248], [-0.1496, 0.1937, 0.6651]])
    write_dng(path, np.round(raw).clip(0, 4095).astype(np.uint16), parse_cfa("RGGB"), black=256, white=4095,
              xyz_to_cam=xyz_to_cam, wb_gains=(2.1, 1.0, 1.7))
    return path


def timed_inference(session, mosaic, options, repeats: int) -> tuple[list[float], list[float], object]:
    """Seconds of the session calls alone and of all of develop_mosaic, per repeat; the last image."""
    from rawdev.develop import develop_mosaic

    timer = TimedCalls(session.session)
    calls = timer.seconds
    timed = dataclasses.replace(session, session=timer)
    develop_mosaic(mosaic, timed, options)  # warm-up: allocations, cuDNN's algorithm choice
    inference, develop, image = [], [], None
    for _ in range(repeats):
        calls.clear()
        t0 = time.perf_counter()
        image = develop_mosaic(mosaic, timed, options).image
        develop.append(time.perf_counter() - t0)
        inference.append(sum(calls))
    return inference, develop, image


def whole_file(path: Path, device: str, out: Path, args) -> tuple[list[float], Path]:
    """Wall seconds of ``rawdev develop`` as its own process, per repeat (after a warm-up); the TIFF."""
    from benchmarks._measure import rawdev_command

    cmd = [*rawdev_command(), "develop", str(path), "-o", str(out), "--device", device, "--overwrite"]
    if args.model:
        cmd += ["--model", args.model]
    if args.tile != "auto":
        cmd += ["--tile", args.tile]
    env = dict(os.environ)
    libs = nvidia_library_dirs()
    if libs:  # the child imports no PyTorch: it finds NVIDIA's libraries through the loader's path
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    times = []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"rawdev develop --device {device} failed: {done.stderr.strip()[-400:]}")
        if i:
            times.append(elapsed)
    return times, out / (path.stem + ".tif")


def nvidia_library_dirs() -> list[str]:
    """The lib folders of NVIDIA's pip wheels (nvidia-cublas, nvidia-cudnn-cu13, ...) on sys.path."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    roots = list(spec.submodule_search_locations or []) if spec else []
    return sorted(str(d) for root in roots for d in Path(root).glob("*/lib") if d.is_dir())


def differences(a, b) -> dict:
    """Largest |a - b| of each channel and how many samples differ at all."""
    import numpy as np

    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return {"max_per_channel": [int(v) for v in d.reshape(-1, d.shape[-1]).max(0)],
            "samples_differing": int((d > 0).sum()), "samples": int(d.size),
            "within_tolerance": bool(d.max() <= TOLERANCE)}


def tf32_off(session, mosaic, options, reference) -> dict:
    """The CUDA image with TF32 off, against the CPU's (only run where the outputs differ)."""
    from rawdev.develop import develop_mosaic
    from rawdev.session import PROVIDER_OF, import_onnxruntime, provider_list

    ort = import_onnxruntime()
    (name, opts), *rest = provider_list("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    try:
        inner = ort.InferenceSession(str(session.path), providers=[(name, {**opts, "use_tf32": "0"}), *rest],
                                     enable_fallback=0)
    except Exception as exc:  # noqa: BLE001 - an onnxruntime too old for the option says so here
        return {"error": " ".join(str(exc).split())[:300]}
    if PROVIDER_OF["cuda"] not in inner.get_providers():
        return {"error": f"applied only {inner.get_providers()}"}
    image = develop_mosaic(mosaic, dataclasses.replace(session, session=inner), options).image
    return differences(image, reference)


def command_output(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"failed: {exc}"


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", type=Path, help="RAW file (default: the largest shared sample, or synthetic)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each measurement (median)")
    p.add_argument("--model", default=None, help="model name or .onnx file (default: rawdev's default)")
    p.add_argument("--tile", default="auto", help="--tile of rawdev develop (packed samples, or auto)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where the results go")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    say = (lambda *_: None) if args.quiet else (lambda s: print(s, flush=True))
    try:
        cuda = refuse_unless_cuda(args.model)
    except Refused as exc:
        print(f"cuda_check: {exc}", file=sys.stderr)
        return 2

    from rawdev.develop import DEFAULT_TILE, DevelopOptions
    from rawdev.options import parse_tile, session_line
    from rawdev.raw import read_mosaic
    from rawdev.session import open_session

    started = now()
    with tempfile.TemporaryDirectory(prefix="rawdev-cuda-check-") as tmp:
        work = Path(tmp)
        path, origin = pick_file(args.file, work, say)
        mosaic = read_mosaic(path)
        megapixels = mosaic.data.shape[0] * mosaic.data.shape[1] / 1e6
        say(f"file: {path} ({origin}, {megapixels:.1f} MP)")
        t0 = time.perf_counter()
        cpu = open_session(cuda.path, "cpu")
        cpu_open = time.perf_counter() - t0
        options = DevelopOptions(tile=parse_tile(args.tile))
        say(session_line(cuda))
        command = "python benchmarks/cuda_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
        report: dict = {"started": started, "command": command,
                        "file": {"path": str(path), "origin": origin, "megapixels": round(megapixels, 2)},
                        "model": cuda.path.name, "tile": options.tile or DEFAULT_TILE, "repeats": args.repeats,
                        "tolerance_code_values": TOLERANCE, "devices": {}}
        images = {}
        for name, session in (("cpu", cpu), ("cuda", cuda)):
            say(f"{name}: inference in this process ...")
            inference, develop, images[name] = timed_inference(session, mosaic, options, args.repeats)
            say(f"{name}: rawdev develop as a process ...")
            wall, tiff = whole_file(path, name, work / name, args)
            report["devices"][name] = {
                "providers": list(session.providers),
                "inference_s": {"median": median(inference), "values": [round(v, 4) for v in inference]},
                "develop_mosaic_s": {"median": median(develop), "values": [round(v, 4) for v in develop]},
                "whole_file_s": {"median": median(wall), "values": [round(v, 4) for v in wall]},
                "tiff": str(tiff.name),
            }
        report["devices"]["cpu"]["session_open_s"] = round(cpu_open, 3)
        import tifffile

        tiffs = {name: tifffile.imread(work / name / f"{path.stem}.tif") for name in ("cpu", "cuda")}
        report["equality"] = {"tiff": differences(tiffs["cpu"], tiffs["cuda"]),
                              "develop_mosaic": differences(images["cpu"], images["cuda"])}
        equal = all(v["within_tolerance"] for v in report["equality"].values())
        if not equal:
            say("outputs differ by more than one code value: trying CUDA with TF32 off ...")
            report["equality"]["develop_mosaic_tf32_off"] = tf32_off(cuda, mosaic, options, images["cpu"])
    versions = library_versions()
    for name in ("onnxruntime-gpu", "torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    report.update({
        "finished": now(), "machine": machine_info(), "versions": versions, "code": code_version(),
        "nvidia_smi": command_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                                      "power.limit", "--format=csv"]),
        "nvidia_smi_list": command_output(["nvidia-smi", "-L"]),
        "lscpu": command_output(["lscpu"]),
    })
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    c, g = report["devices"]["cpu"], report["devices"]["cuda"]
    e = report["equality"]["tiff"]
    print(f"{path.name} ({megapixels:.1f} MP), model {cuda.path.name}, median of {args.repeats}:")
    for label, key in (("inference alone", "inference_s"), ("develop_mosaic", "develop_mosaic_s"),
                       ("whole file (process)", "whole_file_s")):
        ratio = c[key]["median"] / g[key]["median"] if g[key]["median"] else float("nan")
        print(f"  {label:22s} cpu {c[key]['median']:.3f} s  cuda {g[key]['median']:.3f} s  ({ratio:.1f}x)")
    print(f"  TIFF cpu vs cuda: max |difference| per channel {e['max_per_channel']} "
          f"({e['samples_differing']} of {e['samples']} samples differ): "
          + ("equal within 1 code value" if equal else "NOT equal within 1 code value"))
    print(f"wrote {args.json}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
