"""Pause a background training job while a benchmark times something, and always resume it.

The benchmark machine has two cores and a CNN training job (``python -m rawdev.train.loop``) may
be using both. Timings taken while it runs measure the scheduler, not rawdev. ``Pauser`` stops the
training processes with SIGSTOP for one short *stretch* at a time and sends SIGCONT when the
stretch ends, however it ends (normal exit, exception, Ctrl-C, SIGTERM). Three more guards:

- a stretch has a hard limit (default 170 s): a watchdog *thread* resumes training when it is
  reached, and a detached watchdog *process* (a tiny Python child of our own) sends SIGCONT a
  little later even if this benchmark process is killed with SIGKILL;
- between two stretches training runs for at least ``gap`` seconds, so it is never starved;
- an ``atexit`` hook resumes anything still stopped.

Pausing is opt-in (``--pause-training`` on every benchmark script): without it every stretch is a
no-op and nothing is signalled, which is what the tests use.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

# `python -m rawdev.train.loop ...`, or the console script `rawdev train ...` (its command line is
# ".../bin/rawdev train RUN_DIR ..."); alternatives are separated by "|".
DEFAULT_PATTERN = "rawdev.train.loop|bin/rawdev train "
DEFAULT_MAX_STRETCH = 170.0  # seconds; the brief asks for < 3 minutes at a time
DEFAULT_GAP = 5.0  # seconds of training between two paused stretches
DEFAULT_BUDGET = 120.0  # ensure() starts a new stretch rather than let one grow past this


def find_training(pattern: str = DEFAULT_PATTERN) -> list[int]:
    """PIDs of processes whose command line contains ``pattern``, or one of its "|"-separated
    alternatives (never this process or its parent)."""
    own = {os.getpid(), os.getppid()}
    alternatives = [p for p in pattern.split("|") if p]
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(p in cmdline for p in alternatives) and "benchmarks/" not in cmdline and "pytest" not in cmdline:
            pids.append(int(entry.name))
    return sorted(pids)


def cpu_seconds() -> tuple[float, float]:
    """System-wide (busy, steal) CPU seconds from /proc/stat (all cores; (0, 0) where absent)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return 0.0, 0.0
    v = [int(x) for x in fields] + [0] * 10
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq + steal) / hz, steal / hz


def own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its reaped children."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def foreign_load(seconds: float = 0.5) -> float:
    """Fraction of the machine's CPU capacity used by other processes over ``seconds``."""
    b0, own0, t0 = cpu_seconds()[0], own_cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    b1, own1, t1 = cpu_seconds()[0], own_cpu_seconds(), time.monotonic()
    return max(0.0, (b1 - b0) - (own1 - own0)) / ((t1 - t0) * (os.cpu_count() or 1))


def _signal_all(pids: list[int], sig: int) -> list[int]:
    done = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            done.append(pid)
        except ProcessLookupError:
            pass
    return done


_WATCHDOG = (
    "import os, signal, sys, time\n"
    "time.sleep(float(sys.argv[1]))\n"
    "for p in sys.argv[2:]:\n"
    "    try:\n"
    "        os.kill(int(p), signal.SIGCONT)\n"
    "    except OSError:\n"
    "        pass\n"
)


class Pauser:
    """Pause/resume a training job around timed stretches; a no-op when ``enabled`` is false."""

    def __init__(self, enabled: bool = False, pattern: str = DEFAULT_PATTERN,
                 max_stretch: float = DEFAULT_MAX_STRETCH, gap: float = DEFAULT_GAP,
                 budget: float = DEFAULT_BUDGET, quiet_load: float = 0.15, quiet_wait: float = 120.0,
                 say=lambda *a: None):
        self.enabled = enabled
        self.pattern = pattern
        self.max_stretch = max_stretch
        self.gap = gap
        self.say = say
        self._stopped: list[int] = []
        self._lock = threading.Lock()
        self._last_resume = 0.0
        self.paused_seconds = 0.0
        self.stretches = 0
        self.longest_stretch = 0.0
        self.timed_out = 0
        self.noisy_starts = 0
        self.quiet_load = quiet_load
        self.quiet_wait = quiet_wait
        self.budget = min(budget, max_stretch)
        self._since = 0.0
        self._timer: threading.Timer | None = None
        self._watchdog_proc: subprocess.Popen | None = None
        if enabled:
            atexit.register(self.resume)

    @property
    def active(self) -> bool:
        """True while training is stopped by us."""
        return bool(self._stopped)

    def describe(self) -> dict:
        return {
            "enabled": self.enabled,
            "pattern": self.pattern,
            "training_pids": find_training(self.pattern) if self.enabled else [],
            "max_stretch_s": self.max_stretch,
            "gap_s": self.gap,
            "stretches": self.stretches,
            "paused_seconds": round(self.paused_seconds, 1),
            "longest_stretch_s": round(self.longest_stretch, 1),
            "stretches_cut_by_watchdog": self.timed_out,
            "stretches_started_while_others_busy": self.noisy_starts,
        }

    def pause(self, label: str = "") -> list[int]:
        """Stop the training processes now (no-op when disabled or already paused); waits first
        until training has run ``gap`` seconds since the last resume."""
        if not self.enabled or self._stopped:
            return list(self._stopped)
        wait = self._last_resume + self.gap - time.monotonic()
        if self._last_resume and wait > 0:
            time.sleep(wait)
        pids = find_training(self.pattern)
        if not pids:
            return []
        self._stop(pids, label)
        self._wait_quiet(pids, label)
        return pids

    def _wait_quiet(self, pids: list[int], label: str) -> None:
        """With training stopped, wait (training resumed meanwhile) until no other process keeps
        more than ``quiet_load`` of the CPU busy, for at most ``quiet_wait`` seconds."""
        if self.quiet_wait <= 0 and self.quiet_load >= 1:
            return
        waited = 0.0
        while True:
            load = foreign_load(0.5)
            if load <= self.quiet_load:
                return
            if waited >= self.quiet_wait:
                self.noisy_starts += 1
                self.say(f"pause: other processes keep {100 * load:.0f} % of the CPU busy; measuring anyway")
                return
            self.say(f"pause: other processes use {100 * load:.0f} % of the CPU; waiting for quiet")
            self.resume()
            time.sleep(10.0)
            waited += 10.0
            self._stop(find_training(self.pattern) or pids, label)

    def _stop(self, pids: list[int], label: str) -> None:
        # The detached watchdog survives a SIGKILL of this process.
        self._watchdog_proc = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.max_stretch + 10), *map(str, pids)],
            start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with self._lock:
            self._stopped = _signal_all(pids, signal.SIGSTOP)
        self._since = time.monotonic()

        def expire():
            if self._stopped:
                self.timed_out += 1
                self.say(f"pause: stretch {label!r} reached {self.max_stretch:.0f} s; training resumed")
            self.resume()

        self._timer = threading.Timer(self.max_stretch, expire)
        self._timer.daemon = True
        self._timer.start()

    def resume(self) -> None:
        """Send SIGCONT to what we stopped (safe to call any number of times, from any thread)."""
        with self._lock:
            if self._stopped:
                _signal_all(self._stopped, signal.SIGCONT)
                self._stopped = []
                self._last_resume = time.monotonic()
                spent = self._last_resume - self._since
                self.paused_seconds += spent
                self.stretches += 1
                self.longest_stretch = max(self.longest_stretch, spent)
        timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        proc, self._watchdog_proc = self._watchdog_proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def ensure(self, expected_s: float = 0.0, label: str = "") -> None:
        """Make sure training is paused for a measurement expected to last ``expected_s``: when
        the current stretch would pass ``budget`` seconds with it, resume first (training gets
        its ``gap``) and start a fresh stretch."""
        if not self.enabled:
            return
        if self._stopped and time.monotonic() - self._since + expected_s > self.budget:
            self.resume()
        self.pause(label)

    @contextlib.contextmanager
    def session(self) -> Iterator[Pauser]:
        """A block in which ``ensure`` may pause training; it is always resumed at the end, also
        on exceptions, Ctrl-C and SIGTERM."""
        previous_term = None
        if self.enabled and threading.current_thread() is threading.main_thread():
            def on_term(signum, frame):
                self.resume()
                raise SystemExit(128 + signum)

            previous_term = signal.signal(signal.SIGTERM, on_term)
        try:
            yield self
        finally:
            self.resume()
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)

    @contextlib.contextmanager
    def stretch(self, label: str = "") -> Iterator[list[int]]:
        """Training is stopped inside the block (at most ``max_stretch`` seconds) and resumed after."""
        with self.session():
            yield self.pause(label)
