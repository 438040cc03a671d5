"""Helpers shared by speed.py, scaling.py, roofline.py and seams.py: timing a subprocess with its
peak memory, summary statistics, common options and the RESULTS.md section writer.

Peak memory of a subprocess is measured two ways:

- ``max_rss_mb``: the kernel's own figure, ``ru_maxrss`` from ``os.wait4`` (what ``/usr/bin/time -v``
  prints as "Maximum resident set size"): the largest resident set of the process or of any one of
  its reaped descendants, exact however short the peak, but never a sum over processes;
- ``tree_rss_mb``: the process tree polled every 20 ms (``/proc/PID/status``, cheap): the largest sum
  over the tree of RssAnon + RssFile, plus the largest RssShmem of any one process (shared memory is
  counted once). rawdev decodes in a worker process (rawdev.decode), so its memory is the tree's.
  Shared library pages are counted once per process, so the sum overstates a little; a peak
  shorter than the polling interval can be missed, which ``max_rss_mb`` then catches.

``peak_mb`` = the larger of the two is the figure reported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._pause import DEFAULT_GAP, Pauser, cpu_seconds, own_cpu_seconds  # noqa: E402
from benchmarks.common import (  # noqa: E402
    BENCH_DIR,
    code_version,
    describe_machine,
    library_versions,
    machine_info,
    now,
)

RESULTS_MD = BENCH_DIR / "RESULTS.md"
RESULTS_TITLE = "# Benchmark results\n"
RESULTS_INTRO = (
    "Each section below is written by the script named in its heading and says the command that\n"
    "reproduces it; the JSON files in `benchmarks/results/` hold every run. Timed runs pause the\n"
    "background training job (`--pause-training`, see `benchmarks/_pause.py`), so the numbers are\n"
    "for an otherwise idle machine.\n"
)


@dataclass
class Run:
    """One subprocess run: wall time, CPU time, peak memory and how it ended."""

    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    returncode: int
    tree_rss_mb: float = 0.0
    tree_processes: int = 1
    stderr_tail: str = ""
    timed_out: bool = False
    foreign_cpu_s: float = 0.0  # CPU time other processes used meanwhile (all cores)
    steal_s: float = 0.0  # time the hypervisor gave our vCPUs to someone else
    attempts: int = 1

    @property
    def peak_mb(self) -> float:
        return max(self.max_rss_mb, self.tree_rss_mb)

    @property
    def clean(self) -> bool:
        return not disturbed(self.foreign_cpu_s, self.wall_s)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("stderr_tail")
        for k in ("wall_s", "user_s", "sys_s", "foreign_cpu_s", "steal_s"):
            d[k] = round(d[k], 4)
        d["max_rss_mb"] = round(d["max_rss_mb"], 1)
        d["tree_rss_mb"] = round(d["tree_rss_mb"], 1)
        d["peak_mb"] = round(self.peak_mb, 1)
        return d


# Seconds of idle before a timed onnxruntime call: the intra-op threads of the session that ran
# last keep spinning for a while and would slow the next one (benchmarks/graph_variants.py).
SETTLE_S = 0.1


def sayer(quiet: bool):
    """``say(*parts)``: print a progress line at once, or nothing with ``--quiet``."""
    return (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))

def _status_kb(pid: int) -> tuple[int, int, int] | None:
    """(RssAnon + RssFile, RssShmem, PPid) of a process in kB, from /proc/PID/status."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    anon = file = shmem = ppid = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "RssAnon":
            anon = int(value.split()[0])
        elif key == "RssFile":
            file = int(value.split()[0])
        elif key == "RssShmem":
            shmem = int(value.split()[0])
        elif key == "PPid":
            ppid = int(value.split()[0])
    return anon + file, shmem, ppid


def _children(root: int) -> set[int]:
    """PIDs of ``root`` and all its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = {root}, [root]
    while todo:
        for c in parents.get(todo.pop(), []):
            if c not in tree:
                tree.add(c)
                todo.append(c)
    return tree


class TreeSampler:
    """Poll the memory of a process tree in a thread: ``peak_mb`` and ``processes`` seen."""

    def __init__(self, root: int, interval: float = 0.02, rescan: float = 0.5):
        self.root, self.interval, self.rescan = root, interval, rescan
        self.peak_mb = 0.0
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)
        return False

    def _run(self) -> None:
        pids: set[int] = {self.root}
        last_scan = 0.0
        while not self._stop.is_set():
            now_ = time.monotonic()
            if now_ - last_scan > self.rescan:
                pids = _children(self.root)
                last_scan = now_
            total = shm = 0
            for pid in list(pids):
                got = _status_kb(pid)
                if got is None:
                    continue
                total += got[0]
                shm = max(shm, got[1])
            self.seen |= pids
            self.peak_mb = max(self.peak_mb, (total + shm) / 1024)
            self._stop.wait(self.interval)


def run_timed(cmd: list[str], cwd: Path | None = None, timeout: float | None = None,
              stdout_path: Path | None = None, env: dict | None = None) -> Run:
    """Run ``cmd`` and return its wall time (perf_counter around start and reap), CPU times and
    peak RSS from ``os.wait4``. stdout goes to ``stdout_path`` (or /dev/null), stderr is kept."""
    err_r, err_w = os.pipe()
    out = open(stdout_path, "wb") if stdout_path else open(os.devnull, "wb")
    timed_out = threading.Event()
    try:
        busy0, steal0 = cpu_seconds()
        own0 = own_cpu_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err_w, env=env)
        os.close(err_w)
        chunks: list[bytes] = []

        def drain():
            while True:
                block = os.read(err_r, 65536)
                if not block:
                    return
                chunks.append(block)
                if len(chunks) > 64:
                    del chunks[:32]

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        sampler = TreeSampler(proc.pid).__enter__()
        killer = None
        if timeout:
            def kill():
                timed_out.set()
                proc.kill()

            killer = threading.Timer(timeout, kill)
            killer.daemon = True
            killer.start()
        try:
            # Reap with wait4 only once the child has exited (waitid WNOWAIT leaves it a zombie),
            # so the sampler can still read the tree until the very end.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except BaseException:  # Ctrl-C, SIGTERM: do not leave the tool running
            proc.kill()
            raise
        finally:
            wall = time.perf_counter() - t0
            sampler.__exit__()
            _, status, usage = os.wait4(proc.pid, 0)
        busy1, steal1 = cpu_seconds()
        own1 = own_cpu_seconds()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if killer is not None:
            killer.cancel()
        reader.join(5)
    finally:
        out.close()
        try:
            os.close(err_r)
        except OSError:
            pass
    tail = b"".join(chunks).decode(errors="replace")[-2000:]
    foreign = max(0.0, (busy1 - busy0) - (own1 - own0))
    return Run(wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode,
               sampler.peak_mb, len(sampler.seen), tail, timed_out.is_set(), foreign, steal1 - steal0)


def disturbed(foreign_cpu_s: float, wall_s: float) -> bool:
    """Did other processes use a noticeable share of the CPU during a measurement? More than 5 %
    of the machine's capacity over the measurement (and more than 0.1 s, the /proc/stat grain)."""
    return foreign_cpu_s > max(0.1, 0.05 * wall_s * (os.cpu_count() or 1))


def tries(pauser: Pauser, n: int = 3) -> int:
    """Attempts for a measurement: retrying disturbed runs only makes sense on a paused machine
    (otherwise the training job disturbs every run)."""
    return n if pauser.enabled else 1


def run_clean(cmd: list[str], attempts: int = 3, before=None, **kw) -> Run:
    """``run_timed`` again (up to ``attempts`` times) while other processes disturbed the run; the
    first undisturbed run, or the least disturbed one, with ``attempts`` set. ``before()`` is
    called before each attempt (e.g. to make sure training is paused)."""
    best = None
    for i in range(attempts):
        if before is not None:
            before()
        run = run_timed(cmd, **kw)
        run.attempts = i + 1
        if not run.ok or run.clean:
            return run
        if best is None or run.foreign_cpu_s < best.foreign_cpu_s:
            best = run
        if i + 1 < attempts:
            time.sleep(1.0)
    best.attempts = attempts
    return best


def timed_clean(fn, attempts: int = 3, before=None) -> tuple[float, float, int, object]:
    """Call ``fn()`` until a call is not disturbed by other processes (at most ``attempts``):
    (seconds, foreign CPU seconds, attempts, fn's result) of the first clean or least disturbed call."""
    best = None
    for i in range(attempts):
        if before is not None:
            before()
        with CpuWatch() as w:
            result = fn()
        if w.clean:
            return w.wall_s, w.foreign_cpu_s, i + 1, result
        if best is None or w.foreign_cpu_s < best[1]:
            best = (w.wall_s, w.foreign_cpu_s, attempts, result)
    return best


class CpuWatch:
    """Foreign CPU time (other processes) during an in-process block: ``with CpuWatch() as w: ...``
    then ``w.foreign_cpu_s`` and ``w.clean``."""

    def __enter__(self):
        self._busy, self._own, self._t = cpu_seconds()[0], own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy, own = cpu_seconds()[0], own_cpu_seconds()
        self.wall_s = time.perf_counter() - self._t
        self.foreign_cpu_s = max(0.0, (busy - self._busy) - (own - self._own))
        self.clean = not disturbed(self.foreign_cpu_s, self.wall_s)
        return False


def clean_runs(runs: list[dict]) -> tuple[list[dict], int]:
    """The runs other processes did not disturb when there are at least 3 of them (or at least half),
    else all runs; and how many disturbed runs were dropped."""
    clean = [r for r in runs if not disturbed(r.get("foreign_cpu_s", 0.0), r["wall_s"])]
    if len(clean) >= min(3, len(runs)) or len(clean) * 2 >= len(runs) and clean:
        return clean, len(runs) - len(clean)
    return runs, 0


def paired_ratio(runs: list[dict], base: list[dict]) -> float | None:
    """Median over rounds of (run / base run of the same round), pairing by each run's "round" key:
    the ratio is measured within a round, so the machine's drift from round to round cancels."""
    by_round = {r["round"]: r["wall_s"] for r in base}
    ratios = [r["wall_s"] / by_round[r["round"]] for r in runs if r.get("round") in by_round]
    return round(statistics.median(ratios), 4) if ratios else None


def summary(values: list[float], digits: int = 4) -> dict:
    """Median, min, max, n and the values themselves."""
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "values": []}
    return {
        "n": len(values),
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


def rawdev_command() -> list[str]:
    """The ``rawdev`` CLI of this interpreter's environment (its console script, or -m rawdev.cli)."""
    script = Path(sys.executable).with_name("rawdev")
    if script.exists():
        return [str(script)]
    found = shutil.which("rawdev")
    if found:
        return [found]
    return [sys.executable, "-m", "rawdev.cli"]


def debian_version(package: str) -> str | None:
    """Installed version of a Debian package (None when dpkg-query is absent or it is not installed)."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def add_common_args(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("--pause-training", action="store_true",
                   help="SIGSTOP the background training job (python -m rawdev.train.loop) during each "
                        "timed stretch and SIGCONT it after (off by default)")
    p.add_argument("--gap", type=float, default=DEFAULT_GAP,
                   help="seconds training runs between two paused stretches")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / f"{name}.json", help="JSON results")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD,
                   help="markdown file whose section for this benchmark is replaced (created if absent)")
    p.add_argument("--quiet", action="store_true")


def make_pauser(args, say) -> Pauser:
    return Pauser(enabled=args.pause_training, gap=args.gap, say=say)


def command_line(script: str, argv: list[str] | None) -> str:
    return f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def header_lines(report: dict) -> list[str]:
    """Command, machine, versions, code and pausing lines for a markdown section."""
    lines = [f"Command: `{report['command']}`", ""]
    lines += [f"- {line}" for line in describe_machine(report["machine"], report["versions"])]
    code = report.get("code") or {}
    dirty = " (working tree modified)" if code.get("dirty") else ""
    lines.append(f"- code: commit {str(code.get('commit'))[:12]}{dirty}; "
                 f"run {report['started']} to {report['finished']}")
    pause = report.get("pause") or {}
    if pause.get("enabled"):
        lines.append(f"- training job paused during timing: {pause['stretches']} stretches, "
                     f"longest {pause['longest_stretch_s']} s, {pause['paused_seconds']} s in all; "
                     f"{pause['stretches_cut_by_watchdog']} cut short by the watchdog")
    elif "enabled" in pause:
        lines.append("- training job NOT paused (no --pause-training): timings share the CPU with it")
    return lines


def with_notes(lines: list[str], report: dict) -> str:
    """A section's markdown: ``lines``, then the report's notes as a list after a blank line."""
    notes = report.get("notes", [])
    return "\n".join(lines + ([""] if notes else []) + [f"- {note}" for note in notes]) + "\n"


def update_results_md(path: Path, key: str, body: str) -> None:
    """Replace the block between ``<!-- BEGIN key -->`` and ``<!-- END key -->`` in ``path`` (append
    it when absent; create the file with a title when missing). Other sections are left alone."""
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else RESULTS_TITLE + "\n" + RESULTS_INTRO
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@dataclass
class TimedRun:
    """What a timed benchmark sets up first and writes at the head of its report."""

    say: object
    pauser: Pauser
    machine: dict
    versions: dict
    started: str

    def head(self, benchmark: str, command: str) -> dict:
        return {"benchmark": benchmark, "command": command, "started": self.started, "finished": now(),
                "code": code_version(), "machine": self.machine, "versions": self.versions,
                "pause": self.pauser.describe()}


def start_timed_run(args) -> TimedRun:
    """Progress printer, training pauser, machine and library description, start time."""
    say = sayer(args.quiet)
    return TimedRun(say, make_pauser(args, say), machine_info(), library_versions(), now())
