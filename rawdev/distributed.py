"""`rawdev develop --ray`: a batch spread over the actors of a Ray cluster.

The design, in a few rules:

- Per node: Ray actors (:class:`Developer`), each reserving ``cpus_per_actor`` CPUs (and one
  GPU on a GPU run) and :data:`ACTOR_MEMORY` of Ray's memory resource. An actor opens ONE
  onnxruntime session when it starts, with its intra-op thread count set to the CPUs Ray
  assigned it, and keeps it for the whole run. The model travels once, as
  bytes (so every node runs the very same weights, whatever is installed where).
- Per file: one request to one actor, which develops the file end to end with the local
  pipeline itself, :func:`rawdev.batch.run_batch` on a one-job list: decoding in its crash-isolated
  worker process, inference, the atomic write. The pixels never travel: each node reads the input
  and writes the output on storage that every node sees at the same path. A request carries the
  job (two paths) and the options; the answer is one small :class:`~rawdev.batch.Outcome`.
- The driver (the ``rawdev`` process) holds only the list of jobs, the actor handles and one
  request per actor (:data:`IN_FLIGHT`); a free actor gets the next file at once. It decides
  skips and refusals before any work, exactly as a local batch does (:func:`plan_work`, the same
  checks, the same lines), feeds every outcome to the same
  :class:`~rawdev.batch.Reporter` (progress bar, per-file lines) and returns a
  :class:`~rawdev.batch.Summary`, so the summary and the exit codes are the local ones.

Faults:

- An actor that dies (a crash in inference, the out-of-memory killer, a lost node) is replaced,
  and the file it was developing is sent again to a live actor, with overwrite on (the dead actor
  may have written it). A file whose second attempt dies too fails with one line, so a file that
  kills every worker cannot sink the batch. The temporary file of a write cut short is removed.
- A file is never left half-written: every output is written to a temporary file and renamed, so
  even when a "dead" actor was in fact still writing, the last complete image wins.
- Ctrl-C kills the actors, waits until they are gone and removes the temporary files of the files
  they were writing; what was finished is complete, and a rerun develops only what is missing
  (existing outputs are skipped).
- After an actor was killed or died, the decoded-image blocks its decoder may have left in that
  node's /dev/shm are removed (Ray kills the actor's whole process group, rawdev.decode's resource
  tracker with it).

Ray is imported only here and only when a pool starts: ``rawdev --version`` stays fast.

Test-only fault hook: the environment variable ``RAWDEV_TEST_ACTOR_FAULT`` (read by the driver at
each run and sent with each request) makes the actor process exit with ``os._exit(1)`` on a file:
a comma-separated list of ``WHEN:PATTERN[:ONCE_FILE]``, WHEN ``before`` (on receiving the
request) or ``after`` (after the output was written, before answering), PATTERN an ``fnmatch``
pattern on the input's file name; with ONCE_FILE only the first actor that manages to create that
file (``O_EXCL``) exits. For the test suite only.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rawdev.batch import Job, Outcome, Reporter, RunOptions, Summary, plan_work

FAULT_ENV = "RAWDEV_TEST_ACTOR_FAULT"
# Requests sent to an actor at a time. One: when an actor dies, its one unanswered request is the
# file it was developing. With two, the answer to a finished file can die with the process
# (seen with os._exit right after the next file started), and the innocent finished file would be
# blamed instead of the one that killed it. The round trip it costs is a millisecond per file.
IN_FLIGHT = 1
# --threads 0 under --ray. One CPU per actor developed the most files per second in
# benchmarks/ray_scaling.py (2 x 1 CPU: 2.0x one actor; 1 x 2 CPU: 1.3x): a session's threads
# scale less than whole files do, and each file's decode and encode then run beside others' inference.
DEFAULT_CPUS_PER_ACTOR = 1
# Ray memory reserved per actor, so that a node with many cores and little memory runs fewer actors:
# `rawdev develop` peaks at about 0.8 GB for 12 MP and 1.5 GB for 48 MP (benchmarks/scaling.py).
ACTOR_MEMORY = 2 * 1024**3
ACTOR_START_TIMEOUT = 300.0  # seconds without any working actor before the remaining files fail
JOIN_GRACE = 5.0  # seconds the other actors get to start once the first one works (later ones join the run)
KILL_WAIT = 15.0  # seconds to wait for killed actors to be gone (Ctrl-C)
TEMP_GLOB = ".{name}.rawdev-tmp-*"  # rawdev.output._atomic_write's temporary files


class ClusterUnavailable(RuntimeError):
    """Ray is not installed, the cluster cannot be reached, or no actor could start (a usage error)."""


# --- the actor -----------------------------------------------------------------------------------


class Developer:
    """One Ray actor: an onnxruntime session for the whole run, files developed end to end."""

    def __init__(self, model_name: str, model_bytes: bytes, device: str, cwd: str):
        import ray

        from rawdev import __version__
        from rawdev.options import session_line
        from rawdev.session import open_session

        assigned = ray.get_runtime_context().get_assigned_resources()
        self.threads = max(1, int(round(assigned.get("CPU", 1))))
        with tempfile.TemporaryDirectory(prefix="rawdev-actor-") as folder:  # gone once the session is built
            path = Path(folder) / model_name
            path.write_bytes(model_bytes)
            self.session = open_session(path, device, threads=self.threads, spinning=False)  # many files
        try:  # relative paths then mean what they mean on the driver (and the lines read the same)
            os.chdir(cwd)
            self.same_cwd = True
        except OSError:
            self.same_cwd = False
        from rawdev.decode import acquire_worker, release_worker

        release_worker(acquire_worker())  # the decoder process warms up now, not on the first file
        self.about = {"host": socket.gethostname(), "node": ray.get_runtime_context().get_node_id(),
                      "pid": os.getpid(), "threads": self.threads, "line": session_line(self.session),
                      "same_cwd": self.same_cwd, "version": __version__}

    def info(self) -> dict:
        return self.about

    def develop(self, job: Job, options, run: RunOptions, fault: str = "") -> Summary:
        from rawdev.batch import run_batch

        _fault(fault, job, "before")
        summary = run_batch([job], self.session, options, run)
        _fault(fault, job, "after")
        return summary


def _fault(spec: str, job: Job, when: str) -> None:
    """The test-only hook (module docstring): exit the actor process on a matching file."""
    for item in filter(None, spec.split(",")):
        parts = item.split(":", 2)
        if len(parts) < 2 or parts[0] != when or not fnmatch.fnmatch(job.source.name, parts[1]):
            continue
        if len(parts) == 3:
            try:
                os.close(os.open(parts[2], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
        os._exit(1)


# --- the driver ----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Slot:
    """An actor as the driver sees it: starting (``ready`` pending) or working (``about`` known)."""

    actor: Any
    ready: Any  # the ObjectRef of info() until it answers
    about: dict | None = None
    inflight: list[tuple[Any, Job, bool]] = field(default_factory=list)  # (ref, job, retry), oldest first


class RayPool:
    """The actors of one ``rawdev develop --ray`` run. Use :meth:`start`, then :meth:`run`, then
    :meth:`close` (or ``with``)."""

    def __init__(self, model_path: Path, device: str, cpus_per_actor: int, gpus_per_actor: float,
                 session_device: str, actors: int, owns_ray: bool, memory_per_actor: int = 0):
        self.model_path = Path(model_path)
        self.device = device
        self.session_device = session_device
        self.cpus_per_actor = cpus_per_actor
        self.gpus_per_actor = gpus_per_actor
        self.memory_per_actor = memory_per_actor
        self.size = actors
        self.owns_ray = owns_ray
        self.slots: list[_Slot] = []
        self.deaths = 0
        self._model_ref = None
        self._remote = None
        self._cwd = os.getcwd()

    # life cycle

    @classmethod
    def start(cls, address: str | None, model_path: Path, device: str = "auto", threads: int = 0,
              files: int | None = None, actors: int | None = None) -> RayPool:
        """Connect to Ray (``auto``: a running cluster if there is one, else a local one; or an
        address), size the pool and wait until every actor has opened its session.

        ``threads``: CPUs (= onnxruntime threads) per actor, 0 for :data:`DEFAULT_CPUS_PER_ACTOR`.
        ``actors``: how many (default: as many as the cluster's CPUs or GPUs hold, at most ``files``).
        A Ray that this process already initialized (a script, a test) is used as it is.
        """
        from rawdev.model import read_contract

        read_contract(model_path)  # a bad model is a usage error here, before any cluster starts
        ray = _import_ray()
        owns = not ray.is_initialized()
        if owns:
            try:
                ray.init(address=None if address in (None, "", "auto") else address, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
            except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError ...
                raise ClusterUnavailable(f"cannot start or reach the Ray cluster {address!r}: {exc}") from None
        try:
            pool = cls._sized(ray, model_path, device, threads, files, actors, owns)
            pool._launch(ray)
        except BaseException:
            if owns:
                ray.shutdown()
            raise
        return pool

    @classmethod
    def _sized(cls, ray, model_path, device, threads, files, actors, owns) -> RayPool:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        node_cpus = [int(r.get("CPU", 0)) for r in nodes]
        node_gpus = [int(r.get("GPU", 0)) for r in nodes]
        if not any(node_cpus):
            raise ClusterUnavailable("the Ray cluster has no CPU to run on")
        use_gpu = device == "cuda" or (device == "auto" and sum(node_gpus) > 0)
        cpus = threads or DEFAULT_CPUS_PER_ACTOR
        cpus = max(1, min(cpus, max(node_cpus)))
        memory = int(min(ACTOR_MEMORY, max(r.get("memory", ACTOR_MEMORY) for r in nodes)))  # one fits somewhere
        per_node = [min(c // cpus, int(r.get("memory", ACTOR_MEMORY) // memory)) for c, r in zip(node_cpus, nodes)]
        if use_gpu:
            if not sum(node_gpus):
                raise ClusterUnavailable("--device cuda: the Ray cluster has no GPU")
            per_node = [min(g, n) for g, n in zip(node_gpus, per_node)]
        capacity = max(1, sum(per_node))
        count = actors or min(capacity, files or capacity)
        # "auto" on a CPU actor must not pick a CUDA provider whose GPU Ray has hidden from it
        session_device = "cpu" if device == "auto" and not use_gpu else device
        return cls(model_path, device, cpus, 1 if use_gpu else 0, session_device, count, owns, memory)

    def _launch(self, ray) -> None:
        """Start the actors; return once the first is working and the others had JOIN_GRACE seconds
        to follow (an actor still waiting for resources joins the run when it starts)."""
        self._model_ref = ray.put(self.model_path.read_bytes())
        for _ in range(self.size):
            self.slots.append(self._new_slot(ray))
        deadline = time.monotonic() + ACTOR_START_TIMEOUT
        pending = {slot.ready: slot for slot in self.slots}
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            done, _ = ray.wait(list(pending), num_returns=1, timeout=remaining)
            for ref in done:
                slot = pending.pop(ref)
                try:
                    slot.about = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise ClusterUnavailable(f"a Ray actor could not start: {_short(exc)}") from None
                slot.ready = None
                deadline = min(deadline, time.monotonic() + JOIN_GRACE)
        if not any(s.about for s in self.slots):
            raise ClusterUnavailable(f"no Ray actor started within {ACTOR_START_TIMEOUT:g} s "
                                     f"({self.size} actor(s) of {self._resources()} were asked for)")
        from rawdev import __version__

        versions = {s.about["version"] for s in self.slots if s.about}
        if versions != {__version__}:
            raise ClusterUnavailable(f"the Ray workers run rawdev {', '.join(sorted(versions))}, this is "
                                     f"{__version__}: install the same version on every node")

    def _new_slot(self, ray) -> _Slot:
        if self._remote is None:
            self._remote = ray.remote(num_cpus=self.cpus_per_actor, num_gpus=self.gpus_per_actor,
                                      memory=self.memory_per_actor or None, max_restarts=0, max_concurrency=1,
                                      scheduling_strategy="SPREAD")(Developer)
        actor = self._remote.remote(self.model_path.name, self._model_ref, self.session_device, self._cwd)
        return _Slot(actor, actor.info.remote())

    def wait_ready(self, timeout: float = ACTOR_START_TIMEOUT) -> int:
        """Bring the pool back to its size (after deaths) and wait until every actor works, or the
        timeout; returns how many work. For benchmarks and tests: :meth:`run` does not need it."""
        ray = _import_ray()
        self._fill(ray, self.deaths)
        deadline = time.monotonic() + timeout
        for slot in list(self.slots):
            if slot.ready is not None:
                ray.wait([slot.ready], timeout=max(0.0, deadline - time.monotonic()))
                ready, _ = ray.wait([slot.ready], timeout=0)
                if ready:
                    self._started(ray, slot)
        return sum(s.about is not None for s in self.slots)

    def _resources(self) -> str:
        gpu = f", {self.gpus_per_actor} GPU" if self.gpus_per_actor else ""
        memory = f", {self.memory_per_actor / 1024**3:.1f} GiB" if self.memory_per_actor else ""
        return f"{self.cpus_per_actor} CPU{gpu}{memory} each"

    def describe(self) -> str:
        """The session line of the local run, then the actors: how many, of what, on how many nodes."""
        working = [s.about for s in self.slots if s.about]
        lines = sorted({a["line"] for a in working})
        nodes = len({a["node"] for a in working})
        starting = len(self.slots) - len(working)
        later = f" ({starting} more starting)" if starting else ""
        return f"{'; '.join(lines)}; {len(working)} Ray actor(s) x {self._resources()} on {nodes} node(s){later}"

    def close(self) -> None:
        """Stop the actors, and the Ray instance when this pool started it (about a second, during
        which Ctrl-C is ignored: the run is over, the summary is still to be printed)."""
        import signal
        import threading

        ray = _import_ray()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            for slot in self.slots:
                _kill(ray, slot.actor)
            self.slots.clear()
            if self.owns_ray and ray.is_initialized():
                ray.shutdown()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # running

    def run(self, jobs: list[Job], options, run: RunOptions, reporter: Reporter | None = None) -> Summary:
        """Develop ``jobs`` on the actors; the same outcomes, lines and summary as a local batch."""
        ray = _import_ray()
        reporter = reporter or Reporter()
        summary = Summary()
        fault = os.environ.get(FAULT_ENV, "")

        def finish(outcome: Outcome) -> None:
            summary.outcomes.append(outcome)
            reporter.file_done(outcome)

        todo, decided = plan_work(jobs, run.overwrite)
        for outcome in decided:
            finish(outcome)
        reporter.start(len(todo))
        _hide_tile_bar(reporter)  # tiles are counted on the actors; the driver shows files
        queue: deque[tuple[Job, bool]] = deque((job, False) for job in todo)
        deaths: dict[Job, int] = {}
        owner: dict[Any, _Slot] = {}
        last_working = time.monotonic()
        max_deaths = self.deaths + 2 * (len(todo) + self.size)
        try:
            while queue or owner:
                self._fill(ray, max_deaths)
                working = [s for s in self.slots if s.about is not None]
                if working:
                    last_working = time.monotonic()
                elif time.monotonic() - last_working > ACTOR_START_TIMEOUT or not self.slots:
                    reason = "no Ray actor is left" if not self.slots else \
                        f"no Ray actor started within {ACTOR_START_TIMEOUT:g} s"
                    while queue:
                        finish(Outcome(queue.popleft()[0], "failed", f"{reason} to develop this file"))
                    continue
                while queue and working:
                    slot = min(working, key=lambda s: len(s.inflight))
                    if len(slot.inflight) >= IN_FLIGHT:
                        break
                    job, retry = queue.popleft()
                    sent = job if slot.about["same_cwd"] else Job(job.source.absolute(), job.output.absolute())
                    ref = slot.actor.develop.remote(sent, options, dataclasses.replace(run, overwrite=True)
                                                    if retry else run, fault)
                    slot.inflight.append((ref, job, retry))
                    owner[ref] = slot
                waiting = list(owner) + [s.ready for s in self.slots if s.ready is not None]
                if not waiting:
                    continue
                done, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
                for ref in done:
                    slot = owner.get(ref) or next((s for s in self.slots if s.ready == ref), None)
                    if slot is None or slot not in self.slots:
                        continue  # settled with its actor's death
                    if ref == slot.ready:
                        self._started(ray, slot)
                        continue
                    entry = next(e for e in slot.inflight if e[0] == ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # raised in develop(): the file's failure
                        _forget(slot, owner, entry)
                        finish(Outcome(entry[1], "failed", _short(exc)))
                    except ray.exceptions.RayError as exc:  # the actor is gone
                        self._lost(ray, slot, exc, owner, queue, deaths, finish)
                    else:
                        _forget(slot, owner, entry)
                        if not result.outcomes and result.interrupted:  # SIGINT reached the actor too
                            raise KeyboardInterrupt
                        for outcome in result.outcomes:
                            finish(dataclasses.replace(outcome, job=entry[1]))
        except KeyboardInterrupt:
            summary.interrupted = True
            self._abort(ray, owner, finish)
        return summary

    def _fill(self, ray, max_deaths: int) -> None:
        """Keep the pool at its size: a dead actor's replacement starts at once (while deaths are
        few enough to come from files; a cluster that keeps killing actors is not fed forever)."""
        while len(self.slots) < self.size and self.deaths <= max_deaths:
            self.slots.append(self._new_slot(ray))

    def _started(self, ray, slot: _Slot) -> None:
        try:
            slot.about = ray.get(slot.ready)
            slot.ready = None
        except ray.exceptions.RayError:  # a replacement that could not start: not replaced again
            _kill(ray, slot.actor)
            self.slots.remove(slot)
            self.size = max(0, self.size - 1)

    def _lost(self, ray, slot: _Slot, exc: Exception, owner: dict, queue: deque, deaths: dict, finish) -> None:
        """An actor died: settle its requests (some may have finished first), retry the others."""
        self.deaths += 1
        _kill(ray, slot.actor)
        self.slots.remove(slot)
        refs = [e[0] for e in slot.inflight]
        ray.wait(refs, num_returns=len(refs), timeout=KILL_WAIT)
        if slot.about is not None:
            _wait_gone([slot.about])
            _clean_nodes(ray, [slot.about])
        again: list[tuple[Job, bool]] = []
        suspect = True
        for ref, job, _retry in slot.inflight:
            owner.pop(ref, None)
            try:
                result = ray.get(ref, timeout=0)
            except ray.exceptions.RayTaskError as err:
                finish(Outcome(job, "failed", _short(err)))
            except ray.exceptions.RayError:
                _remove_temporary(job.output)  # killed mid-write: its temporary file is an orphan
                if suspect:  # the oldest unanswered request was being developed when the actor died
                    suspect = False
                    deaths[job] = deaths.get(job, 0) + 1
                    if deaths[job] >= 2:
                        finish(Outcome(job, "failed", f"the Ray worker developing this file died twice "
                                                      f"({_short(exc)})"))
                        continue
                again.append((job, True))
            else:
                for outcome in result.outcomes:
                    finish(dataclasses.replace(outcome, job=job))
        slot.inflight.clear()
        queue.extendleft(reversed(again))

    def _abort(self, ray, owner: dict, finish) -> None:
        """Ctrl-C: kill every actor, keep what finished, remove half-written temporary files."""
        refs = list(owner)
        for slot in self.slots:
            _kill(ray, slot.actor)
        try:
            if refs:
                ray.wait(refs, num_returns=len(refs), timeout=KILL_WAIT)
            busy = [s.about for s in self.slots if s.about and s.inflight]
            _wait_gone(busy)
            _clean_nodes(ray, busy)
            for slot in self.slots:
                for ref, job, _retry in slot.inflight:
                    try:
                        result = ray.get(ref, timeout=0)
                    except Exception:  # noqa: BLE001 - killed mid-file: remove its temporary file
                        _remove_temporary(job.output)
                    else:
                        for outcome in result.outcomes:
                            finish(dataclasses.replace(outcome, job=job))
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, the temporary files may stay
            pass
        self.slots.clear()


def _wait_gone(actors: list[dict]) -> None:
    """Wait until killed actor processes have really ended: Ray reports an actor dead (its calls
    fail) a moment before its process is gone, and a process still writing would leave a
    temporary file behind the sweep. Processes on this host are watched; on other hosts a second
    is given."""
    host = socket.gethostname()
    local = [a["pid"] for a in actors if a["host"] == host]
    deadline = time.monotonic() + KILL_WAIT
    start = time.monotonic()
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in local) and (len(local) == len(actors) or time.monotonic() - start > 1):
            return
        time.sleep(0.05)


def _remove_segments(pids: list[int]) -> int:
    """Remove the decoded-image blocks (rawdev.decode) that killed actors ``pids`` left in this
    node's /dev/shm. Ray kills a dead actor's whole process group, its decoder's resource tracker
    (which would have removed them) included."""
    from rawdev.decode import discard_segment, leftover_segments

    return sum(discard_segment(name) for pid in pids for name in leftover_segments(pid))


def _clean_nodes(ray, actors: list[dict]) -> None:
    """:func:`_remove_segments` on each node that had dead actors: here directly, elsewhere by a
    small task pinned to that node (waited for a few seconds at most)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    by_node: dict[str, list[int]] = {}
    for a in actors:
        by_node.setdefault(a["node"], []).append(a["pid"])
    here = ray.get_runtime_context().get_node_id()
    refs = []
    for node, pids in by_node.items():
        if node == here:
            _remove_segments(pids)
        else:
            task = ray.remote(num_cpus=0, max_retries=0)(_remove_segments)
            refs.append(task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                        .remote(pids))
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=KILL_WAIT)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _forget(slot: _Slot, owner: dict, entry) -> None:
    slot.inflight.remove(entry)
    owner.pop(entry[0], None)


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _remove_temporary(output: Path) -> None:
    for tmp in output.parent.glob(TEMP_GLOB.format(name=output.name)):
        try:
            tmp.unlink()
        except OSError:
            pass


def _hide_tile_bar(reporter: Reporter) -> None:
    progress, tiles = getattr(reporter, "progress", None), getattr(reporter, "tiles", None)
    if progress is not None and tiles is not None:
        progress.update(tiles, visible=False)


def _short(exc: BaseException) -> str:
    """One line for a Ray error: the user's exception for a task error, the exit detail for a death."""
    import ray

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if getattr(exc, "cause", None) is not None else exc
        text = f"{type(cause).__name__}: {cause}" if cause is not exc else str(exc)
    else:  # Ray's death reports run to a dozen lines: keep the exit detail, drop the list of causes
        text = str(exc)
        marker = "Worker exit detail:"
        if marker in text:
            text = text.split(marker, 1)[1]
        for cut in (" Some common causes", " There are some potential root causes", "\n\t"):
            text = text.split(cut, 1)[0]
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:199] + "…"


def _import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine unasked
    try:
        import ray
    except ImportError:
        raise ClusterUnavailable("--ray needs Ray: pip install 'rawdev[ray]'") from None
    return ray
