"""RAW decoding in a worker process, so that a file which crashes LibRaw fails alone.

LibRaw is C++ parsing untrusted files and it does crash (rawpy 0.28 / LibRaw 0.22.2 segfaults in
``postprocess`` on some DNGs; its history is full of crashes on malformed files). A batch must
not die with it: :class:`DecodeWorker` runs :func:`rawdev.raw.read_mosaic` in a child process
and turns a child that dies (a signal, ``abort()``, the out-of-memory killer) or hangs past the
timeout into a :class:`DecoderFailure` for that one file, then starts a fresh child.

- The child is started with the ``spawn`` context, never ``fork``: rawpy with OpenMP can
  deadlock in a forked child. Spawning costs a few tenths of a second (imports), so the child
  stays alive across files (and across batches in one process, see :func:`acquire_worker`) and
  is only replaced after a crash or timeout.
- The mosaic comes back without being pickled: the child writes its pixels into a POSIX shared
  memory block whose name the parent chose, and sends only the small metadata (the
  :class:`~rawdev.raw.Mosaic` fields minus ``data``). The parent maps the block as the numpy
  array and unlinks its name at once, so the memory lives exactly as long as the array and
  nothing is left in ``/dev/shm``, whatever happens later. Because the parent chose the name,
  it can also remove a block the child made before it crashed or was killed. The child's
  blocks are registered with multiprocessing's resource tracker (shared with the parent), which
  removes them should the parent itself be killed. When ``/dev/shm`` has no room for the block
  (or there is no /dev/shm: not Linux), the pixels travel through the pipe instead (one copy
  more, but no SIGBUS).
- The child ignores SIGINT: Ctrl-C in a terminal reaches the whole process group, and the
  parent, not the child, decides what to stop (it kills a child that is still decoding). The
  child never outlives the parent, even one killed with SIGKILL (see :func:`_die_with_parent`).
- ``spawn`` re-imports the parent's main module in the child: a script that calls
  :func:`rawdev.batch.run_batch` must keep its work under ``if __name__ == "__main__":``
  (the ``rawdev`` command does).
- ``rawdev.batch.RunOptions(decode_in_process=True)`` (or ``RAWDEV_DECODE_IN_PROCESS=1``) decodes
  in the batch's own process, as before: for comparisons (benchmarks/decode_isolation.py) only.

Test-only fault hook: the environment variable ``RAWDEV_TEST_DECODER_FAULT`` (read by the
parent at each request and handed to the child) makes the child fail on purpose when it is
asked to decode a file whose name matches a pattern: a comma-separated list of
``KIND:PATTERN`` (``fnmatch`` on the file name), KIND one of ``crash`` (kill itself with
SIGSEGV), ``abort`` (``os.abort()``: SIGABRT), ``kill`` (SIGKILL, as the out-of-memory killer
does), ``exit`` (``os._exit(3)``), ``hang`` (sleep far past any timeout) and ``crash-late``
(decode, fill the shared memory block, then SIGSEGV before answering). For example
``RAWDEV_TEST_DECODER_FAULT="crash:bad.dng,hang:slow*.dng"``. It exists for the test suite and
the fuzz script; nothing else should set it.
"""

from __future__ import annotations

import atexit
import dataclasses
import fnmatch
import itertools
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import TYPE_CHECKING

from rawdev.errors import RawReadError

if TYPE_CHECKING:  # numpy and rawdev.raw load while the child starts (see prestart_worker)
    import numpy as np

    from rawdev.raw import Mosaic

DEFAULT_DECODE_TIMEOUT = 120.0  # seconds one file may take to decode
STARTUP_TIMEOUT = 120.0  # seconds a fresh worker may take to import numpy and rawpy
FAULT_ENV = "RAWDEV_TEST_DECODER_FAULT"
IN_PROCESS_ENV = "RAWDEV_DECODE_IN_PROCESS"  # "1": decode in the batch's own process (comparisons only)
SHM_PREFIX = "rawdev-"
SHM_DIR = Path("/dev/shm")  # where Linux keeps POSIX shared memory; elsewhere pixels take the pipe
_POLL_S = 0.2  # how often a wait looks at the stop flag


class DecoderFailure(RawReadError):
    """The decoder process died or hung on a file: the file fails, the batch goes on."""


class DecodeCancelled(Exception):
    """The batch was stopped while a file was being decoded."""


def crash_reason(exitcode: int | None) -> str:
    """One line for a worker that ended without answering: 'decoder crashed: signal 11 (SIGSEGV)'."""
    if exitcode is None:
        return "decoder stopped answering"
    if exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        reason = f"decoder crashed: signal {number} ({name})"
        if number == signal.SIGKILL:
            reason += "; killed from outside, most likely by the system running out of memory"
        elif number == getattr(signal, "SIGBUS", None):
            reason += "; shared memory (/dev/shm) may be full"
        return reason
    if exitcode == 0:
        return "decoder exited without an answer"
    return f"decoder crashed: exit code {exitcode}"


# --- the parent side -----------------------------------------------------------------------------


class DecodeWorker:
    """One decoder process, kept alive across files and replaced after a crash or a timeout.

    :meth:`decode` is meant to be called from one thread at a time; :meth:`close` may be called
    from another (it kills a child that is busy).
    """

    def __init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None
        self._ready = False
        self._closed = False
        self._inflight: str | None = None  # the shared-memory name of the request being decoded
        self._ahead: tuple | None = None  # a request sent by decode_ahead, not yet asked for by decode
        self._names = itertools.count()
        self._lock = threading.Lock()
        self.spawned = 0  # processes started so far (a crash or timeout starts another)

    # life cycle

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    @property
    def idle(self) -> bool:
        """Alive and not decoding for a caller (an early request waits for its :meth:`decode`): can
        take the next batch."""
        return self.alive and not self._closed and (self._inflight is None or self._ahead is not None)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child if there is none (returns at once; the child warms up by itself)."""
        with self._lock:
            if self._closed:
                raise DecodeCancelled()
            if self._proc is not None and self._proc.is_alive():
                return
            self._discard_process()
            parent_conn, child_conn = self._ctx.Pipe(duplex=True)
            # The kernel's parent-death signal fires when the *thread* that started the child ends:
            # only ask for it from the main thread, whose end is the process's.
            main_thread = threading.current_thread() is threading.main_thread()
            proc = self._ctx.Process(target=_worker_main, args=(child_conn, os.getpid(), main_thread),
                                     name="rawdev-decode", daemon=True)
            proc.start()
            child_conn.close()
            self._proc, self._conn, self._ready = proc, parent_conn, False
            self.spawned += 1

    def close(self, wait: bool = True) -> None:
        """Stop the child (at once if it is busy, or if not ``wait``: an idle child holds nothing,
        and its own shutdown costs the caller about 0.1 s at exit) and remove a block it may have left."""
        with self._lock:
            self._closed = True
            proc, conn = self._proc, self._conn
        if proc is None:
            return
        if wait and self._inflight is None and self._ready and proc.is_alive():
            try:
                conn.send(None)  # please exit
            except OSError:
                pass
            proc.join(timeout=2)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        inflight = self._inflight
        if inflight is not None:
            discard_segment(inflight)
        with self._lock:
            self._discard_process()

    def _discard_process(self) -> None:
        """Forget a dead (or killed) child and close our end of its pipe."""
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join(timeout=5)
            if self._proc.exitcode is not None:
                self._proc.close()
        self._proc, self._conn, self._ready, self._ahead = None, None, False, None

    def _kill(self) -> int | None:
        """Kill the child, wait for it and return its exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=5)
        return proc.exitcode

    # decoding

    def decode(
        self,
        path: Path,
        cfa_override=None,
        black: float | None = None,
        white: float | None = None,
        *,
        timeout: float = DEFAULT_DECODE_TIMEOUT,
        stop: threading.Event | None = None,
    ) -> Mosaic:
        """:func:`rawdev.raw.read_mosaic` in the child. Raises RawReadError (the file's own
        reason), DecoderFailure (the child crashed or timed out; a fresh one is started) or
        DecodeCancelled (``stop`` was set or :meth:`close` called while waiting). The answer to
        the same request sent ahead (:meth:`decode_ahead`) is taken instead of asking again."""
        self._ensure_ready(stop)
        request = self._request(path, cfa_override, black, white)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not _same_request(ahead, request):
            self._drop_request()  # another file was asked for ahead: its answer is of no use
            self._ensure_ready(stop)
            ahead = None
        name = ahead[5] if ahead is not None else request[5]
        self._inflight = name
        try:
            try:
                if ahead is None:
                    self._conn.send(request)
            except OSError:  # the child died while idle (killed from outside): not this file's doing
                self._restart_after_failure()
                self._ensure_ready(stop)
                self._conn.send(request)
            reply = self._wait(timeout, stop)
            return self._mosaic_from(reply)
        finally:
            self._inflight = None
            discard_segment(name)  # nothing to do unless the child made the block and then failed

    def decode_ahead(self, path: Path, cfa_override=None, black: float | None = None,
                     white: float | None = None) -> None:
        """Ask for ``path`` now, without waiting: the child decodes it (once it has started) while
        the caller goes on, e.g. imports the pipeline and loads the model. The next :meth:`decode`
        of the same request takes the answer; one of another file drops it."""
        self.start()
        request = self._request(path, cfa_override, black, white)
        if self._ahead is not None:  # asked ahead before and never taken (the run stopped early)
            if _same_request(self._ahead, request):
                return
            self._drop_request()
        elif self._inflight is not None:  # a decode is under way
            return
        try:
            self._conn.send(request)  # read after the child's "ready"
        except OSError:
            return  # the child is gone already: decode() starts another and asks again
        self._inflight, self._ahead = request[5], request

    def _request(self, path: Path, cfa_override, black: float | None, white: float | None) -> tuple:
        name = f"{SHM_PREFIX}{os.getpid()}-{next(self._names)}-{secrets.token_hex(4)}"
        return ("decode", str(path), cfa_override, black, white, name, os.environ.get(FAULT_ENV, ""))

    def _drop_request(self) -> None:
        """Forget the request in flight: the child is replaced (it may be busy with it) and a block
        it made is removed."""
        name = self._inflight
        self._kill()
        self._restart_after_failure()
        if name is not None:
            discard_segment(name)
        self._inflight = None

    def _ensure_ready(self, stop: threading.Event | None) -> None:
        """Start a child if there is none and wait until it has imported what it needs."""
        self.start()
        if not self._ready:
            message = self._wait(STARTUP_TIMEOUT, stop, starting=True)
            if message[0] != "ready":
                raise DecoderFailure(f"decoder did not start: unexpected answer {message[0]!r}")
            self._ready = True

    def _wait(self, timeout: float, stop: threading.Event | None, starting: bool = False):
        """The child's next message, or an exception once it died, hung or we were stopped."""
        deadline = time.monotonic() + timeout
        conn, proc = self._conn, self._proc
        while True:
            if (stop is not None and stop.is_set()) or self._closed:
                self._kill()
                raise DecodeCancelled()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                self._restart_after_failure()
                if starting:
                    raise DecoderFailure(f"decoder did not start within {timeout:g} s")
                raise DecoderFailure(f"decoder timed out after {timeout:g} s")
            try:
                ready = multiprocessing.connection.wait([conn, proc.sentinel], timeout=min(_POLL_S, remaining))
            except (OSError, ValueError):  # closed under us by close()
                ready = [proc.sentinel]
            if conn in ready:
                try:
                    return conn.recv()
                except (EOFError, OSError):
                    pass  # died: fall through to the sentinel
            if ready:
                code = self._kill()
                if self._closed or (stop is not None and stop.is_set()):
                    raise DecodeCancelled()
                self._restart_after_failure()
                reason = crash_reason(code)
                raise DecoderFailure(f"decoder could not start ({reason})" if starting else reason)

    def _restart_after_failure(self) -> None:
        """Replace a dead child at once, so that the next one warms up while this file is reported."""
        with self._lock:
            self._discard_process()
        if not self._closed:
            try:
                self.start()
            except DecodeCancelled:
                pass

    def _mosaic_from(self, reply) -> Mosaic:
        import numpy as np

        from rawdev.raw import Mosaic

        kind = reply[0]
        if kind == "raw-error":
            raise RawReadError(reply[1])
        if kind == "error":
            raise RawReadError(f"{reply[1]}: {reply[2]}")
        if kind == "shm":
            _, fields, name, shape, dtype = reply
            try:
                data = map_segment(name, shape, np.dtype(dtype))
            except OSError as exc:
                raise RawReadError(f"cannot map the decoded image ({exc.strerror or exc})") from exc
        elif kind == "inline":
            _, fields, shape, dtype = reply
            try:
                data = np.empty(shape, np.dtype(dtype))
                if data.nbytes:
                    self._conn.recv_bytes_into(memoryview(data).cast("B"))
            except (EOFError, OSError) as exc:  # died while sending the pixels
                code = self._kill()
                self._restart_after_failure()
                raise DecoderFailure(crash_reason(code)) from exc
            except BaseException:  # the pixels are left in the pipe: this child cannot be asked again
                self._kill()
                self._restart_after_failure()
                raise
        else:
            raise DecoderFailure(f"decoder answered {kind!r}")
        return Mosaic(data=data, **fields)


def _same_request(a: tuple, b: tuple) -> bool:
    """The same file and options (the shared-memory names differ)."""
    return a[:5] + a[6:] == b[:5] + b[6:]


def map_segment(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The child's block ``name`` (in /dev/shm) mapped as a writable array, its name removed.

    No copy: the memory is freed when the last view of the array goes, and nothing is left in
    /dev/shm from here on, whatever happens to the batch.
    """
    import mmap

    import numpy as np

    count = int(np.prod(shape))
    path = SHM_DIR / name
    fd = os.open(path, os.O_RDWR)
    try:
        mapped = mmap.mmap(fd, count * dtype.itemsize)
    finally:
        os.close(fd)
    os.unlink(path)
    _untrack(name)
    return np.frombuffer(mapped, dtype, count).reshape(shape)


def discard_segment(name: str) -> bool:
    """Remove block ``name`` if it exists (a child made it and then crashed or failed)."""
    try:
        shm = shared_memory.SharedMemory(name=name)  # registers it with the tracker; unlink unregisters
    except FileNotFoundError:
        return False
    except (OSError, ValueError):  # e.g. a zero-size block from a child killed while making it
        try:
            os.unlink(SHM_DIR / name)
        except OSError:
            return False
        return True
    shm.close()
    try:
        shm.unlink()
    except FileNotFoundError:
        return False
    return True


def _untrack(name: str) -> None:
    try:
        resource_tracker.unregister("/" + name, "shared_memory")
    except Exception:  # noqa: BLE001 - the tracker is a safety net, never a reason to fail a file
        pass


def leftover_segments(pid: int | None = None) -> list[str]:
    """Names of rawdev's blocks in /dev/shm (of the process ``pid``, or of any)."""
    if not SHM_DIR.is_dir():
        return []
    prefix = SHM_PREFIX if pid is None else f"{SHM_PREFIX}{pid}-"
    return sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix))


# --- one worker shared by the batches of a process -----------------------------------------------

_pool_lock = threading.Lock()
_idle_worker: DecodeWorker | None = None


def acquire_worker() -> DecodeWorker:
    """A started worker: the idle one left by an earlier batch, or a fresh one (warming up)."""
    global _idle_worker
    with _pool_lock:
        worker, _idle_worker = _idle_worker, None
    if worker is None or not worker.idle:
        if worker is not None:
            worker.close()
        worker = DecodeWorker()
    worker.start()
    return worker


def release_worker(worker: DecodeWorker, reusable: bool = True) -> None:
    """Keep an idle worker for the next batch of this process, or stop it."""
    global _idle_worker
    if reusable and worker.idle:
        with _pool_lock:
            if _idle_worker is None:
                _idle_worker = worker
                return
    worker.close()


def prestart_worker(first: Path | None = None, black: float | None = None, white: float | None = None) -> None:
    """Start the decoder process now (or keep the one started earlier), so that it warms up
    (imports, a few tenths of a second) while the caller imports the pipeline and loads the model,
    and have it decode ``first`` meanwhile (a single-file run's file, see
    :meth:`DecodeWorker.decode_ahead`); the next :func:`acquire_worker` takes it over. This module
    imports neither numpy nor the pipeline, so the command calls it first. A no-op with
    RAWDEV_DECODE_IN_PROCESS=1."""
    if os.environ.get(IN_PROCESS_ENV) == "1":
        return
    worker = acquire_worker()
    if first is not None:
        worker.decode_ahead(first, None, black, white)
    release_worker(worker)


@atexit.register
def _close_idle_worker() -> None:
    global _idle_worker
    with _pool_lock:
        worker, _idle_worker = _idle_worker, None
    if worker is not None:
        worker.close(wait=False)  # the process is ending: nothing to wait for


# --- the child side ------------------------------------------------------------------------------


def _worker_main(conn, parent_pid: int, death_signal: bool = True) -> None:
    """The child: decode what the parent asks for until told to stop or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    _die_with_parent(parent_pid, death_signal)
    try:  # no core file per crashed decode in a batch of thousands
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, OSError, ValueError):
        pass
    import rawpy  # noqa: F401 - warm up before saying ready: the first file's timeout is for decoding
    import tifffile  # noqa: F401

    from rawdev.raw import read_mosaic

    libraw_says = _capture_stderr()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if request is None or not _serve(conn, request, read_mosaic, libraw_says):
            return
        _return_freed_memory()  # the mosaic now lives in the parent: do not sit on its pages


def _serve(conn, request, read_mosaic, libraw_says: Callable[[str], str]) -> bool:
    """Decode one file and answer the parent; False when the parent is gone."""
    _, path, cfa_override, black, white, name, fault = request
    fault = _fault_for(fault, path)
    _inject_fault(fault)
    libraw_says("")
    try:
        mosaic = read_mosaic(Path(path), cfa_override, black, white)
    except RawReadError as exc:
        _send(conn, ("raw-error", exc.with_libraw_message(libraw_says(path))))
        return True
    except MemoryError:
        _send(conn, ("raw-error", "out of memory while decoding"))
        return True
    except Exception as exc:  # noqa: BLE001 - reported as the file's failure, like in-process
        _send(conn, ("error", type(exc).__name__, str(exc)))
        return True
    try:
        _send_mosaic(conn, mosaic, name, crash_before_answer=fault == "crash-late")
    except (EOFError, OSError, BrokenPipeError):
        return False
    except Exception as exc:  # noqa: BLE001
        _send(conn, ("error", type(exc).__name__, str(exc)))
    return True


def _capture_stderr() -> Callable[[str], str]:
    """Send the child's file descriptor 2 (where LibRaw prints "FILE: data corrupted at ...") to
    a private file, so that the batch shows one line per file. Returns ``says(path)``: what was
    printed since the last call, on one line, the path prefix left out."""
    import tempfile

    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)  # fd 2 keeps the (already unlinked) file open

    def says(path: str) -> str:
        text = os.pread(2, os.fstat(2).st_size, 0).decode(errors="replace") if path else ""
        os.ftruncate(2, 0)
        os.lseek(2, 0, os.SEEK_SET)
        lines = [line.removeprefix(f"{path}: ").strip() for line in text.splitlines() if line.strip()]
        return "; ".join(dict.fromkeys(lines))[:200]

    return says


def _return_freed_memory() -> None:
    """Give freed heap pages back to the system (glibc keeps them otherwise); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _die_with_parent(parent_pid: int, death_signal: bool) -> None:
    """Never outlive the parent, even when stuck in LibRaw: a thread that looks for the parent
    once a second (it runs while LibRaw unpacks: rawpy releases the GIL there) and, for a child
    started by the parent's main thread, the kernel's parent-death signal on Linux (it fires when
    the parent *thread* that started the child ends, so a child started by the decode thread after
    a crash would die with its batch)."""
    if death_signal:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    if os.getppid() != parent_pid:
        os._exit(0)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _send(conn, message) -> None:
    try:
        conn.send(message)
    except (EOFError, OSError):
        os._exit(0)  # the parent is gone


def _send_mosaic(conn, mosaic: Mosaic, name: str, crash_before_answer: bool = False) -> None:
    import numpy as np

    data = np.ascontiguousarray(mosaic.data)
    fields = {f.name: getattr(mosaic, f.name) for f in dataclasses.fields(mosaic) if f.name != "data"}
    shape, dtype = tuple(data.shape), data.dtype.str
    if data.nbytes == 0 or not _room_in_shm(data.nbytes):
        conn.send(("inline", fields, shape, dtype))
        if data.nbytes:
            conn.send_bytes(memoryview(data).cast("B"))
        return
    shm = shared_memory.SharedMemory(name=name, create=True, size=data.nbytes)
    try:
        target = np.ndarray(shape, data.dtype, buffer=shm.buf)
        target[...] = data
        del target
        if crash_before_answer:
            _inject_fault("crash")
        conn.send(("shm", fields, name, shape, dtype))
    except BaseException:
        shm.close()
        shm.unlink()
        raise
    shm.close()


def _room_in_shm(nbytes: int) -> bool:
    """Whether /dev/shm can take the block (a tmpfs that fills up kills the writer with SIGBUS).
    Without /dev/shm (not Linux) the pixels go through the pipe."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize >= nbytes + (16 << 20)


def _fault_for(spec: str, path: str) -> str:
    """The test-only fault hook (see the module docstring): the fault asked for this file, or ''."""
    if not spec:
        return ""
    file_name = Path(path).name
    for item in spec.split(","):
        kind, _, pattern = item.strip().partition(":")
        if pattern and fnmatch.fnmatchcase(file_name, pattern):
            return kind
    return ""


def _inject_fault(kind: str) -> None:
    if kind == "crash":
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "abort":
        os.abort()
    elif kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "exit":
        os._exit(3)
    elif kind == "hang":
        time.sleep(1e6)
    else:
        return
    time.sleep(5)  # a signal is delivered at once; never go on decoding after a requested fault
