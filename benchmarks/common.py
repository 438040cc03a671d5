"""What every benchmark records next to its numbers: the machine, the libraries, the code version.

Shared by the benchmark scripts in this folder; nothing here measures anything.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# The shared data folder sits next to the repository checkout (DESIGN.md, section 3).
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RESULTS = BENCH_DIR / "results"

PACKAGES = ("rawdev", "numpy", "onnxruntime", "onnx", "rawpy", "colour-demosaicing", "imagecodecs", "tifffile")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (x86 'model name', ARM 'Hardware'/'Processor')."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in text.splitlines():
            if line.split(":", 1)[0].strip() == key and ":" in line:
                value = line.split(":", 1)[1].strip()
                if value:
                    return value
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The CPU's feature flags (x86 'flags', ARM 'Features') from /proc/cpuinfo, as lscpu lists them."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        if line.split(":", 1)[0].strip() in ("flags", "Features") and ":" in line:
            return line.split(":", 1)[1].split()
    return []


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info() -> dict:
    """Platform, CPU model, core counts, memory and the load at the time of the call."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
    except ImportError:
        providers = []
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory_gib(),
        "load_average_1_5_15min": load,
        "onnxruntime_providers_available": providers,
    }


def library_versions() -> dict:
    """Installed versions of the libraries the benchmarks use (and LibRaw's, through rawpy)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        import rawpy

        out["LibRaw"] = ".".join(str(v) for v in rawpy.libraw_version)
    except ImportError:
        out["LibRaw"] = None
    return out


def code_version() -> dict:
    """The repository's commit and whether the working tree had changes (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def describe_machine(machine: dict, versions: dict) -> list[str]:
    """Human-readable lines for the console and the markdown header."""
    cores = machine["logical_cores"]
    usable = machine["usable_cores"]
    core_text = f"{cores} logical cores" + (f" ({usable} usable)" if usable != cores else "")
    lines = [
        f"machine: {machine['cpu_model']}, {core_text}, "
        f"{machine['memory_gib']} GiB; {machine['platform']}; Python {machine['python']}",
        f"load average at start (1/5/15 min): {machine['load_average_1_5_15min']}",
        "libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v is not None),
    ]
    return lines


class TimedCalls:
    """Stands in for an onnxruntime InferenceSession and records the seconds of each ``run``: the
    inference alone inside a pipeline that calls it. ``keep_inputs``: also keep each call's
    arguments, so that :meth:`replay` can time the same calls on their own."""

    def __init__(self, inner, keep_inputs: bool = False):
        self.inner, self.seconds, self.keep_inputs, self.inputs = inner, [], keep_inputs, []

    def run(self, *args, **kwargs):
        if self.keep_inputs:
            self.inputs.append((args, kwargs))
        t0 = time.perf_counter()
        try:
            return self.inner.run(*args, **kwargs)
        finally:
            self.seconds.append(time.perf_counter() - t0)

    def clear(self) -> None:
        self.seconds.clear()
        self.inputs.clear()

    def replay(self, concurrency: int = 1) -> float:
        """Wall seconds of the kept calls run again, ``concurrency`` at a time (as the pipeline
        runs its tiles): inference alone, without the reading, blending and rendering between."""
        from concurrent.futures import ThreadPoolExecutor

        t0 = time.perf_counter()
        if concurrency <= 1:
            for args, kwargs in self.inputs:
                self.inner.run(*args, **kwargs)
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda call: self.inner.run(*call[0], **call[1]), self.inputs))
        return time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self.inner, name)
