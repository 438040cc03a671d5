"""The batch runner: inputs -> jobs -> decode | develop | encode, overlapped in threads.

File policy (after RawTherapee-cli): existing outputs are skipped unless told to overwrite, an
output that would replace an input is refused, each failure is one line and the batch goes on,
every output is written atomically.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rawdev.color import encode_table
from rawdev.decode import (
    DEFAULT_DECODE_TIMEOUT,
    IN_PROCESS_ENV,
    DecodeCancelled,
    DecodeWorker,
    acquire_worker,
    release_worker,
)
from rawdev.develop import DevelopOptions, develop_mosaic
from rawdev.dng_output import DngOutputError, LinearImage, dng_problem, write_linear_dng
from rawdev.inputs import Job, Outcome, plan_work
from rawdev.output import COMPRESSIONS, TiffStrips, apply_orientation, write_image
from rawdev.raw import Mosaic, RawReadError, read_mosaic
from rawdev.session import ModelSession


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.count("failed") else 0


@dataclass
class RunOptions:
    overwrite: bool = False
    fmt: str = "tiff"
    compression: str | None = None  # rawdev.output.write_image's; None: the format's default (COMPRESSIONS)
    cfa_override: object = None
    black: float | None = None
    white: float | None = None
    # Seconds a file may take to decode; past it the decoder process is killed and the file fails.
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT
    # Decode in this process (a LibRaw crash then ends the batch): for comparisons only.
    # RAWDEV_DECODE_IN_PROCESS=1 sets it from outside (benchmarks/decode_isolation.py).
    decode_in_process: bool = field(default_factory=lambda: os.environ.get(IN_PROCESS_ENV) == "1")
    # Render finished blocks and encode finished TIFF strips while the network runs on (the
    # bytes written are the same either way). None: only where the sessions leave a core free
    # (rawdev.workers.overlap_pays; on 2 cores with both on the network it measured 2-5 % slower).
    # RAWDEV_OVERLAP=1 or 0 forces it: for comparisons.
    overlap: bool | None = field(default_factory=lambda: {"1": True, "0": False}.get(
        os.environ.get("RAWDEV_OVERLAP", "")))

    def __post_init__(self) -> None:
        if self.compression is None:
            self.compression = COMPRESSIONS.get(self.fmt, ("none",))[0]


class Reporter:
    """Callbacks the runner uses to show progress; the CLI implements them with rich."""

    def start(self, total: int) -> None: ...
    def file_started(self, job: Job) -> None: ...
    def tile_done(self, done: int, total: int) -> None: ...
    def file_done(self, outcome: Outcome) -> None: ...


def _decode(job: Job, run: RunOptions) -> Mosaic:
    return read_mosaic(job.source, run.cfa_override, run.black, run.white)  # type: ignore[arg-type]


def run_batch(
    jobs: list[Job],
    model: ModelSession,
    options: DevelopOptions,
    run: RunOptions,
    reporter: Reporter | None = None,
    decode: Callable[[Job, RunOptions], Mosaic] | None = None,
) -> Summary:
    """Develop every job; decoding, inference and encoding overlap in three stages.

    Files are decoded in a worker process (rawdev.decode) unless ``decode`` is given or
    ``run.decode_in_process`` is set: a file that crashes or hangs LibRaw fails alone.
    """
    reporter = reporter or Reporter()
    stop = threading.Event()
    worker: DecodeWorker | None = None
    if decode is None and not run.decode_in_process:
        worker = acquire_worker()  # started now: it warms up while the jobs are checked
        decode = _in_worker(worker, stop)
    try:
        return _run(jobs, model, options, run, reporter, decode or _decode, stop, worker)
    finally:
        if worker is not None:
            release_worker(worker)  # kept for the next batch when idle; stopped when busy or broken


def _in_worker(worker: DecodeWorker, stop: threading.Event) -> Callable[[Job, RunOptions], Mosaic]:
    def decode(job: Job, run: RunOptions) -> Mosaic:
        return worker.decode(job.source, run.cfa_override, run.black, run.white,  # type: ignore[arg-type]
                             timeout=run.decode_timeout, stop=stop)

    return decode


def start_batch(jobs: list[Job], overwrite: bool, reporter: Reporter) -> tuple[Summary, list[Job]]:
    """The batch's summary with the outcomes decided before any work (reported), and the jobs to
    develop; the reporter is told how many."""
    summary = Summary()
    todo, decided = plan_work(jobs, overwrite)
    for outcome in decided:
        summary.outcomes.append(outcome)
        reporter.file_done(outcome)
    reporter.start(len(todo))
    return summary, todo


def _run(jobs: list[Job], model: ModelSession, options: DevelopOptions, run: RunOptions, reporter: Reporter,
         decode: Callable[[Job, RunOptions], Mosaic], stop: threading.Event, worker: DecodeWorker | None) -> Summary:
    summary, todo = start_batch(jobs, run.overwrite, reporter)

    # One file decoded ahead and one being written while one develops: at most two mosaics and
    # two developed images are alive at once, whatever the batch's size (memory, issue #2).
    decoded: queue.Queue = queue.Queue()
    encoded: queue.Queue = queue.Queue()
    decode_slot = threading.Semaphore(1)  # taken by the decoder, given back when develop takes the file
    write_slot = threading.Semaphore(1)  # taken when an image is handed over, given back once written
    lock = threading.Lock()

    def finish(outcome: Outcome) -> None:
        with lock:
            summary.outcomes.append(outcome)
        reporter.file_done(outcome)

    def decoder() -> None:
        for job in todo:
            if not _acquire(decode_slot, stop):
                break
            t0 = time.perf_counter()
            try:
                item: object = decode(job, run)
            except DecodeCancelled:
                break
            except Exception as exc:  # noqa: BLE001 - one file's failure must not end the batch
                item = exc
            decoded.put((job, item, time.perf_counter() - t0))  # never blocks: decode_slot bounds it
        decoded.put(None)

    def encoder() -> None:
        while True:
            entry = encoded.get()
            if entry is None:
                return
            job, image, info, t_start, mp, strips = entry
            try:
                job.output.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(image, LinearImage):  # stored as the sensor saw it, Orientation as a tag
                    write_linear_dng(job.output, image, info)
                else:
                    write_image(job.output, apply_orientation(image, info.orientation or 1), info, fmt=run.fmt,
                                compression=run.compression, strips=strips)
                finish(Outcome(job, "ok", "", time.perf_counter() - t_start, mp))
            except OSError as exc:
                finish(Outcome(job, "failed", f"cannot write {job.output}: {exc.strerror or exc}"))
            except Exception as exc:  # noqa: BLE001
                finish(Outcome(job, "failed", f"cannot write {job.output}: {exc}"))
            del entry, image
            write_slot.release()

    threads = [threading.Thread(target=decoder, daemon=True, name="decode"),
               threading.Thread(target=encoder, daemon=True, name="encode")]
    for t in threads:
        t.start()
    if run.fmt != "dng" and model.contract.output_space == "linear":
        # The output's lookup table (0.1 s) builds while the first file decodes, not after it.
        threading.Thread(target=encode_table, args=(options.look, options.peak), daemon=True).start()
    try:
        while True:
            entry = decoded.get()
            decode_slot.release()
            if entry is None:
                break
            job, item, decode_s = entry
            t_start = time.perf_counter() - decode_s
            reporter.file_started(job)
            if isinstance(item, Exception):
                finish(Outcome(job, "failed", _reason(item)))
                continue
            mosaic: Mosaic = item
            dng = run.fmt == "dng"
            try:
                if dng and (problem := dng_problem(mosaic.colour_profile)) is not None:
                    raise DngOutputError(problem)  # before any inference
                strips = _streamed_strips(mosaic, run)
                developed = develop_mosaic(mosaic, model, options, reporter.tile_done, camera_rgb=dng,
                                           on_rows=strips.rows_ready if strips else None,
                                           overlap=bool(run.overlap))
            except Exception as exc:  # noqa: BLE001
                finish(Outcome(job, "failed", _reason(exc)))
                continue
            info, mp = mosaic.info, mosaic.megapixels
            image = developed.image if not dng else LinearImage(
                developed.image, developed.wb_gains, developed.exposure_ev, developed.rendering, mosaic.colour_profile)
            del mosaic, item, entry  # free the pixels (a worker's are mapped memory) before waiting
            write_slot.acquire()
            encoded.put((job, image, info, t_start, mp, strips))
            del image
            del developed
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        stop.set()  # a decode in flight is cancelled (its worker killed, its shared memory removed)
        if worker is not None:
            threads[0].join(timeout=30)
        _drain(decoded)
        encoded.put(None)
        threads[1].join()
    return summary


def _streamed_strips(mosaic: Mosaic, run: RunOptions) -> TiffStrips | None:
    """The TIFF strips to encode while the image develops: an upright TIFF only (a rotated
    image's first strip is known only once its last tile has run)."""
    if run.overlap is True and run.fmt == "tiff" and run.compression != "none" and (mosaic.info.orientation or 1) == 1:
        return TiffStrips(run.compression)
    return None


def _acquire(slot: threading.Semaphore, stop: threading.Event) -> bool:
    """Take ``slot``, or give up (False) once ``stop`` is set."""
    while not stop.is_set():
        if slot.acquire(timeout=0.2):
            return True
    return False


def _drain(q: queue.Queue) -> None:
    """Drop what is waiting in ``q`` (decoded mosaics of a stopped batch)."""
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def _reason(exc: Exception) -> str:
    if isinstance(exc, (RawReadError, DngOutputError)):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while developing; try a smaller --tile"
    return f"{type(exc).__name__}: {exc}"
