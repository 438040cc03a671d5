"""`rawdev develop --jobs N`: a local batch over N worker processes, one session each.

One onnxruntime session with every core's thread scales less than whole files do: its threads
wait for each other at every layer, and a file's decode, rendering and encoding run beside the
network rather than hidden behind it. With one process per core, each with a single-threaded
session, every core is on a file of its own from start to end (benchmarks/speed.py measures
both layouts).

- The parent decides skips and refusals before any work (:func:`rawdev.batch.plan_work`, the
  same lines as a one-process batch), hands out one file at a time to whichever worker is free,
  and feeds every outcome to the same :class:`~rawdev.batch.Reporter`.
- A worker develops each file with the local pipeline, :func:`rawdev.batch.run_batch` on a
  one-job list: decoding in its own crash-isolated decoder process, the atomic write.
- A worker that dies (a crash in inference, the out-of-memory killer) fails the file it had with
  one line, its temporary file is removed, and a new worker takes its place; the batch goes on.
- Ctrl-C stops the workers; what was finished is complete, nothing is half-written.

The test suite makes a worker exit on a file with ``RAWDEV_TEST_ACTOR_FAULT=before:PATTERN``
(rawdev.distributed's hook).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from rawdev.batch import Job, Outcome, Reporter, RunOptions, Summary, start_batch
from rawdev.develop import DevelopOptions
from rawdev.distributed import FAULT_ENV, _fault, _hide_tile_bar, _remove_temporary
from rawdev.exiting import exit_without_teardown
from rawdev.session import cpu_count

POLL_S = 0.2
START_TIMEOUT = 120.0  # seconds for a worker to open its session
MAX_DEATHS = 8  # replacement workers started in one batch; past it the remaining files fail


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection  # this worker's own pipe: jobs go down it, events come back
    job: Job | None = None
    ready: bool = False
    running: bool = False  # its job has started (a death then fails that file)
    started: float = 0.0


class _Forward(Reporter):
    """A worker's reporter: outcomes go to the parent; tiles are not shown for parallel files."""

    def __init__(self, conn: Connection):
        self.conn = conn

    def file_done(self, outcome: Outcome) -> None:
        self.conn.send(("done", outcome))


def _worker_main(model_path: str, device: str, threads: int, options: DevelopOptions, run: RunOptions,
                 conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    from rawdev.batch import run_batch
    from rawdev.session import open_session

    try:
        session = open_session(Path(model_path), device, threads, spinning=False)
    except Exception as exc:  # noqa: BLE001 - told to the parent as one line
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    reporter = _Forward(conn)
    fault = os.environ.get(FAULT_ENV, "")  # the test suite's hook, as for Ray actors
    while True:
        job = conn.recv()
        if job is None:  # every outcome is in the pipe and every output written: the parent waits
            conn.close()  # for this process to end, so it skips the teardown (0.2-0.4 s here)
            exit_without_teardown(0)
        conn.send(("started", job))  # a pipe write: there before anything below can kill us
        _fault(fault, job, "before")
        run_batch([job], session, options, run, reporter)


def run_parallel(jobs: list[Job], model_path: Path, device: str, options: DevelopOptions, run: RunOptions,
                 reporter: Reporter | None = None, workers: int = 2, threads: int = 1) -> Summary:
    """Develop ``jobs`` over ``workers`` processes with ``threads`` session threads each."""
    reporter = reporter or Reporter()
    summary, todo = start_batch(jobs, run.overwrite, reporter)
    _hide_tile_bar(reporter)
    if not todo:
        return summary
    # Decided above: a worker must not skip a file because another worker has just written it.
    ctx = multiprocessing.get_context("spawn")  # onnxruntime's threads do not survive a fork
    pending = list(todo)
    pool: list[_Worker] = []
    deaths = 0

    def start() -> None:
        ours, theirs = ctx.Pipe()
        p = ctx.Process(target=_worker_main, name="rawdev-worker",
                        args=(str(model_path), device, threads, options, run, theirs))
        p.start()
        theirs.close()
        pool.append(_Worker(p, ours, started=time.monotonic()))

    def finish(outcome: Outcome) -> None:
        summary.outcomes.append(outcome)
        reporter.file_done(outcome)

    def feed(worker: _Worker) -> None:
        worker.job = pending.pop(0) if pending else None
        worker.conn.send(worker.job)  # None: nothing left, the worker ends

    def handle(worker: _Worker, kind: str, value) -> bool:
        """One event from a worker; False when the batch cannot go on."""
        if kind == "ready":
            worker.ready = True
            feed(worker)
        elif kind == "started":
            worker.running = True
            reporter.file_started(value)
        elif kind == "done":
            worker.running = False
            finish(value)
            feed(worker)
        elif kind == "failed":  # the session would not open: it is the same for every worker
            for job in pending + [w.job for w in pool if w.job]:
                finish(Outcome(job, "failed", f"the worker could not open the model: {value}"))
            pending.clear()
            for w in pool:
                w.job = None
            return False
        return True

    def events(worker: _Worker) -> list:
        got = []
        with contextlib.suppress(EOFError, OSError):
            while worker.conn.poll():
                got.append(worker.conn.recv())
        return got

    def buried(worker: _Worker) -> None:
        """A worker process has ended: its last words first, then its file."""
        nonlocal deaths
        going = True
        for event in events(worker):
            going = handle(worker, *event) and going
        pool.remove(worker)
        worker.conn.close()
        if worker.job is None and worker.ready:
            return  # done with its share
        if worker.job is not None and worker.running:
            _remove_temporary(worker.job.output)
            finish(Outcome(worker.job, "failed", f"the developing process died (exit code "
                                                 f"{worker.process.exitcode}); the rest of the batch goes on"))
        elif worker.job is not None:  # given to it, never started: another worker takes it
            pending.insert(0, worker.job)
        worker.job = None
        deaths += 1
        if going and pending and deaths <= MAX_DEATHS:
            start()
        elif pending and not any(w.process.is_alive() for w in pool):
            for job in pending:
                finish(Outcome(job, "failed", "worker processes keep dying; not developed"))
            pending.clear()

    for _ in range(min(workers, len(todo))):
        start()
    try:
        while pool:
            by_handle = {w.conn: w for w in pool} | {w.process.sentinel: w for w in pool}
            for ready in wait(list(by_handle), timeout=POLL_S):
                worker = by_handle[ready]
                if worker not in pool:
                    continue
                if ready is worker.conn:
                    for event in events(worker):
                        if not handle(worker, *event):
                            raise _Stop
                elif not worker.process.is_alive():
                    worker.process.join()
                    buried(worker)
            for worker in pool:
                if not worker.ready and time.monotonic() - worker.started > START_TIMEOUT:
                    worker.process.kill()
    except _Stop:
        pass
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        for w in pool:
            if w.process.is_alive():
                w.process.terminate()
        for w in pool:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            if w.job is not None:
                _remove_temporary(w.job.output)
    return summary


class _Stop(Exception):
    """The batch cannot go on (the workers cannot open the model)."""


# A file larger than this may be a 40-100 MP image: each worker holds about 230 MB plus 8 MB per
# megapixel (benchmarks/scaling.py's one-process figures; two workers on 9 MP: 784 MB measured), so
# two such files at once would pass the memory bounds of one file; such batches run one at a time.
LARGE_FILE_BYTES = 40 * 1024**2


def batch_layout(jobs: str, threads: int, files: int, cpu_provider: bool, largest_bytes: int,
                 cores: int | None = None) -> tuple[int, int]:
    """(worker processes, session threads each) for ``--jobs`` and ``--threads``.

    ``--jobs auto``: one single-threaded worker per core for a batch of several files on the CPU
    provider (the faster layout, benchmarks/speed.py), unless ``--threads`` is given or a file is
    large; otherwise one process whose session has ``--threads`` (0: every core)."""
    cores = cores or cpu_count()
    if jobs == "auto":
        parallel = cpu_provider and threads == 0 and files > 1 and largest_bytes <= LARGE_FILE_BYTES
        workers = min(cores, files) if parallel else 1
    else:
        workers = max(1, min(int(jobs), files))
    if workers == 1:
        return 1, threads
    return workers, threads or max(1, cores // workers)


def overlap_pays(threads: int, workers: int, cores: int | None = None) -> bool:
    """Whether rendering and encoding beside the network can win anything: only where the sessions
    leave a core free. With every core on the network they compete with it (benchmarks/speed.py:
    2-5 % slower on 2 cores)."""
    cores = cores or cpu_count()
    return 0 < threads and threads * workers < cores


def parse_jobs(value: str) -> str:
    """``--jobs``: auto or a number of worker processes (1: everything in this process)."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--jobs {value!r}: give auto or a number of worker processes of at least 1")
    return str(n)
