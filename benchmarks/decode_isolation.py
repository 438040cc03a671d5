"""Throughput of `rawdev develop` on good files: decoding in a worker process vs in-process.

Decoding in a worker process (rawdev.decode) keeps a batch alive when LibRaw crashes; this
measures what it costs on files that do not crash. Each run is a fresh `rawdev develop` process
on COPIES copies of one RAW file (default: examples/chart_bayer.dng, 1.6 MP, synthetic), with
RAWDEV_DECODE_IN_PROCESS=1 for the in-process figure; the two modes alternate, RUNS runs each,
and the median is reported. The figure compared is the batch time the CLI prints in its summary
("N ok ... in X s"): from the start of the batch (after the model is loaded) to the last file
written, so the worker's start-up is included. Also printed: the whole process's wall time, its
CPU time with its children (the decoder worker's included; less sensitive to other load on the
machine than wall time) and the 1-minute load average after each run.

While a run is timed, the background training job (`python -m rawdev.train.loop`, found with
`pgrep -f rawdev.train.loop` and kept only when its argv names that module, so that scripts
which merely import it are left alone) is paused with SIGSTOP, and always resumed with SIGCONT:
in a finally block, on SIGTERM, at exit, and by a detached watchdog should this process be
killed. Training runs for a few seconds between two timed runs. --no-pause leaves it running.

    python benchmarks/decode_isolation.py [--source FILE] [--copies 10] [--runs 3] [--model csanet-res-c32]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^(\d+) ok, (\d+) skipped, (\d+) failed in ([\d.]+) s \(([\d.]+) MP/s\)", re.M)
TRAINING_MODULE = "rawdev.train.loop"
WATCHDOG = ("import os, signal, sys, time\ntime.sleep(float(sys.argv[1]))\n"
            "for p in sys.argv[2:]:\n    try:\n        os.kill(int(p), signal.SIGCONT)\n"
            "    except OSError:\n        pass\n")


def training_pids() -> list[int]:
    """`pgrep -f rawdev.train.loop`, kept only where the module is run (an argv element equal to it)."""
    found = subprocess.run(["pgrep", "-f", TRAINING_MODULE], capture_output=True, text=True).stdout.split()
    pids = []
    for pid in map(int, found):
        if pid in (os.getpid(), os.getppid()):
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if TRAINING_MODULE.encode() in argv:
            pids.append(pid)
    return pids


def process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, T for stopped, ...), '' when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


class Paused:
    """SIGSTOP the training job inside the block, SIGCONT it after, however the block ends."""

    stopped: list[int] = []

    def __init__(self, enabled: bool, limit_s: float = 170.0):
        self.enabled, self.limit_s, self.watchdog = enabled, limit_s, None

    def __enter__(self):
        if not self.enabled:
            return self
        pids = training_pids()
        if pids:  # a detached process resumes training even if this one is killed with SIGKILL
            self.watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(self.limit_s), *map(str, pids)],
                                             start_new_session=True, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid in pids:
            if process_state(pid) == "T":
                continue  # stopped by someone else (another benchmark): theirs to resume, not ours
            try:
                os.kill(pid, signal.SIGSTOP)
                Paused.stopped.append(pid)
            except ProcessLookupError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        resume_training()
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()


def resume_training() -> None:
    while Paused.stopped:
        pid = Paused.stopped.pop()
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def _on_term(signum, frame):
    resume_training()
    raise SystemExit(128 + signum)


def rawdev_command() -> list[str]:
    script = Path(sys.executable).parent / "rawdev"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rawdev.cli"]


def one_run(inputs: Path, out: Path, model: str, in_process: bool, pause: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    env.pop("RAWDEV_TEST_DECODER_FAULT", None)
    env["RAWDEV_DECODE_IN_PROCESS"] = "1" if in_process else "0"
    command = [*rawdev_command(), "develop", str(inputs), "-o", str(out), "--model", model]
    with Paused(pause):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)  # with the decoder worker
    text = proc.stdout + proc.stderr
    m = SUMMARY.search(text)
    if proc.returncode != 0 or m is None or int(m.group(3)):
        raise SystemExit(f"rawdev develop failed (exit {proc.returncode}):\n{text}")
    return {"files": int(m.group(1)), "batch_s": float(m.group(4)), "mp_per_s": float(m.group(5)), "wall_s": wall,
            "cpu_s": cpu, "load_1min": os.getloadavg()[0]}


def main() -> int:
    default_source = REPO / "examples" / "chart_bayer.dng"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=default_source, help="RAW file to copy (default: %(default)s)")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="csanet-res-c32")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds of training between two timed runs")
    parser.add_argument("--no-pause", action="store_true", help="leave the training job running")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    atexit.register(resume_training)
    signal.signal(signal.SIGTERM, _on_term)
    pause = not args.no_pause
    print(f"training job: {'paused while timing, pids ' + str(training_pids()) if pause else 'left running'}")
    results: dict[str, list[dict]] = {"in-process": [], "worker": []}
    with tempfile.TemporaryDirectory(prefix="rawdev-decode-bench-") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        for i in range(args.copies):
            shutil.copyfile(args.source, inputs / f"copy{i:02d}{args.source.suffix}")
        try:
            for run in range(args.runs):
                order = ["in-process", "worker"] if run % 2 == 0 else ["worker", "in-process"]
                for mode in order:
                    if results["in-process"] or results["worker"]:
                        time.sleep(args.gap if pause else 0)
                    r = one_run(inputs, Path(tmp) / "out", args.model, mode == "in-process", pause)
                    results[mode].append(r)
                    print(f"run {run + 1} {mode:10s}: batch {r['batch_s']:.2f} s, {r['mp_per_s']:.3f} MP/s, "
                          f"process {r['wall_s']:.2f} s, CPU {r['cpu_s']:.1f} s, load {r['load_1min']:.1f}",
                          flush=True)
        finally:
            resume_training()

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    figures = {mode: {key: med(mode, key) for key in ("batch_s", "mp_per_s", "wall_s", "cpu_s")} for mode in results}
    ratio = figures["in-process"]["batch_s"] / figures["worker"]["batch_s"]
    print(f"\n{args.copies} x {args.source.name}, model {args.model}, median of {args.runs} runs:")
    for mode, f in figures.items():
        print(f"  {mode:10s}  batch {f['batch_s']:.2f} s  ({f['mp_per_s']:.3f} MP/s, "
              f"{args.copies / f['batch_s']:.3f} files/s)   whole process {f['wall_s']:.2f} s, CPU {f['cpu_s']:.1f} s")
    print(f"  throughput worker / in-process: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"source": str(args.source), "copies": args.copies, "model": args.model,
                                         "runs": results, "median": figures, "throughput_ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
