"""A file that crashes or hangs the RAW decoder fails alone: decoding runs in a worker process.

The faults are injected with the test-only hook RAWDEV_TEST_DECODER_FAULT (rawdev.decode): the
worker kills itself with SIGSEGV, aborts, or sleeps past --decode-timeout on the named file.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rawpy")

import tifffile  # noqa: E402
from conftest import random_mosaic, write_test_dng  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from rawdev import decode as decode_mod  # noqa: E402
from rawdev.batch import Job, Reporter, RunOptions, run_batch  # noqa: E402
from rawdev.cfa import parse_cfa  # noqa: E402
from rawdev.cli import app  # noqa: E402
from rawdev.decode import FAULT_ENV, DecodeWorker, crash_reason, leftover_segments  # noqa: E402
from rawdev.develop import DevelopOptions  # noqa: E402
from rawdev.output import CaptureInfo  # noqa: E402
from rawdev.raw import Mosaic  # noqa: E402

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and /dev/shm are POSIX")


def develop(*args: str | Path, model: Path):
    result = CliRunner().invoke(app, ["develop", *map(str, args), "--model", str(model)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def lines_about(output: str, name: str) -> list[str]:
    return [ln for ln in output.splitlines() if name in ln and not ln.startswith("failed:")]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.startswith(".") or "tmp" in p.name]


def decode_workers() -> list:
    return [p for p in multiprocessing.active_children() if p.name == "rawdev-decode"]


@pytest.fixture
def folder(tmp_path) -> Path:
    """Three good DNGs and three that will crash, abort and hang the decoder."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["a", "crash", "b", "hang", "c", "abort"]):
        write_test_dng(folder / f"{name}.dng", random_mosaic(32, 48, seed=i), "RGGB")
    return folder


def test_batch_survives_a_crash_an_abort_and_a_hang(folder, tmp_path, bilinear_model, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "crash:crash.dng,hang:hang.dng,abort:abort.dng")
    out = tmp_path / "out"
    t0 = time.monotonic()
    result = develop(folder, "-o", out, "--decode-timeout", "2", model=bilinear_model)
    took = time.monotonic() - t0
    assert result.exit_code == 1, result.output
    reasons = {"crash.dng": "decoder crashed: signal 11 (SIGSEGV)", "abort.dng": "decoder crashed: signal 6 (SIGABRT)",
               "hang.dng": "decoder timed out after 2 s"}
    for name, reason in reasons.items():
        [line] = lines_about(result.output, name)
        assert line.startswith("failed") and line.endswith(reason), line
    assert "3 ok, 0 skipped, 3 failed" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "c.tif"]
    for name in ("a", "b", "c"):
        with tifffile.TiffFile(out / f"{name}.tif") as tif:
            image = tif.pages[0].asarray()
        assert image.dtype == np.uint16 and image.shape == (32, 48, 3) and image.max() > 1000
    assert leftovers(out) == []
    assert leftover_segments(os.getpid()) == []
    assert took < 40  # the hang cost its 2 s timeout, not the default 120 s


def test_worker_reasons_are_the_same_as_in_process(tmp_path, bilinear_model, monkeypatch):
    """RawReadErrors raised in the worker arrive as the same one-line reasons as before."""
    folder = tmp_path / "in"
    folder.mkdir()
    good = write_test_dng(folder / "good.dng", random_mosaic(32, 32), "RGGB")
    (folder / "text.dng").write_text("not a raw file at all")
    (folder / "empty.nef").write_bytes(b"")
    (folder / "cut.dng").write_bytes(good.read_bytes()[:2000])
    runs = {}
    for mode in ("worker", "in-process"):
        if mode == "in-process":
            monkeypatch.setenv("RAWDEV_DECODE_IN_PROCESS", "1")
        result = develop(folder, "-o", tmp_path / mode, model=bilinear_model)
        assert result.exit_code == 1
        runs[mode] = {name: lines_about(result.output, name) for name in ("text.dng", "empty.nef", "cut.dng")}
    assert runs["worker"] == runs["in-process"]
    expected = {"text.dng": "not a RAW file", "empty.nef": "empty file (0 bytes)", "cut.dng": "damaged or truncated"}
    for name, reason in expected.items():
        [line] = runs["worker"][name]
        assert line.startswith("failed") and reason in line
    assert leftover_segments(os.getpid()) == []


def test_a_block_made_before_the_crash_is_removed(tmp_path, bilinear_session, monkeypatch):
    """The worker fills its shared memory block and dies before answering: the parent, which chose
    the block's name, removes it."""
    src = write_test_dng(tmp_path / "late.dng", random_mosaic(32, 32), "RGGB")
    ok = write_test_dng(tmp_path / "ok.dng", random_mosaic(32, 32, seed=3), "RGGB")
    monkeypatch.setenv(FAULT_ENV, "crash-late:late.dng")
    jobs = [Job(src, tmp_path / "late.tif"), Job(ok, tmp_path / "ok.tif")]
    summary = run_batch(jobs, bilinear_session, DevelopOptions(), RunOptions(decode_timeout=30))
    assert [(o.job.source.name, o.status) for o in summary.outcomes] == [("late.dng", "failed"), ("ok.dng", "ok")]
    assert summary.outcomes[0].message == "decoder crashed: signal 11 (SIGSEGV)"
    assert leftover_segments(os.getpid()) == []


class _InterruptOnFirstFile(Reporter):
    """Ctrl-C while the worker is busy with the next file (which hangs)."""

    def file_started(self, job: Job) -> None:
        time.sleep(1.0)  # the decode thread has long sent hang.dng to the worker
        raise KeyboardInterrupt


def test_ctrl_c_while_the_decoder_hangs_stops_it_and_leaves_nothing(tmp_path, bilinear_session, monkeypatch):
    good = write_test_dng(tmp_path / "a.dng", random_mosaic(32, 32), "RGGB")
    hang = write_test_dng(tmp_path / "hang.dng", random_mosaic(32, 32), "RGGB")
    monkeypatch.setenv(FAULT_ENV, "hang:hang.dng")
    jobs = [Job(good, tmp_path / "a.tif"), Job(hang, tmp_path / "hang.tif")]
    t0 = time.monotonic()
    summary = run_batch(jobs, bilinear_session, DevelopOptions(), RunOptions(decode_timeout=60),
                        _InterruptOnFirstFile())
    assert time.monotonic() - t0 < 10  # not the 60 s timeout: the busy worker was killed
    assert summary.interrupted and summary.exit_code == 130
    kept = decode_mod._idle_worker  # an idle worker may be kept for the next batch, nothing else
    assert [p for p in decode_workers() if kept is None or p.pid != kept.pid] == []
    assert kept is None or kept.idle
    assert leftover_segments(os.getpid()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dng", "hang.dng"]


def test_mosaic_crosses_over_shared_memory_or_the_pipe(monkeypatch):
    """Both transports (in one process): the metadata and pixels arrive intact, the array is
    writable, and the block's name is gone from /dev/shm as soon as it is mapped."""
    info = CaptureInfo(make="Make", model="Model", iso=200, orientation=6)
    mosaic = Mosaic(data=random_mosaic(20, 30), cfa=parse_cfa("GRBG"), black=np.full((2, 2), 64.0), white=4095.0,
                    wb_camera=np.array([2.0, 1.0, 1.5]), cam_to_srgb=np.eye(3), info=info, source=Path("x.dng"))
    for room in (True, False):
        monkeypatch.setattr(decode_mod, "_room_in_shm", lambda nbytes, room=room: room)
        parent, child = multiprocessing.Pipe()
        worker = DecodeWorker()
        worker._conn = parent
        name = f"{decode_mod.SHM_PREFIX}{os.getpid()}-unit-{room}"
        sender = threading.Thread(target=decode_mod._send_mosaic, args=(child, mosaic, name))
        sender.start()
        reply = parent.recv()
        assert reply[0] == ("shm" if room else "inline")
        got = worker._mosaic_from(reply)
        sender.join()
        assert leftover_segments(os.getpid()) == []
        np.testing.assert_array_equal(got.data, mosaic.data)
        assert got.data.flags.writeable and got.data.dtype == np.uint16
        assert got.cfa == mosaic.cfa and got.info == info and got.source == Path("x.dng") and got.white == 4095.0
        np.testing.assert_array_equal(got.black, mosaic.black)
        got.data[0, 0] = 7  # the pipeline may work in place
        parent.close()
        child.close()


def test_the_decoder_process_starts_before_numpy_and_the_pipeline_load():
    """The CLI starts the decoder first, so that the child's imports run beside the parent's
    (about 0.4 s of a single-file run): rawdev.decode itself imports neither numpy nor the
    pipeline. A fresh process, as a user starts one; the started child is the one a batch gets."""
    import subprocess
    import sys

    code = ("import sys, rawdev.decode as d\n"
            "print('loaded:', [m for m in ('numpy', 'rawpy', 'rawdev.raw', 'rawdev.color') if m in sys.modules])\n"
            "d.prestart_worker()\nstarted = d._idle_worker.pid\nw = d.acquire_worker()\n"
            "print('same:', w.pid == started, w.alive)\nd.release_worker(w)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != decode_mod.IN_PROCESS_ENV})
    assert run.returncode == 0, run.stderr
    assert "loaded: []" in run.stdout and "same: True True" in run.stdout, run.stdout


def test_an_idle_worker_is_killed_without_waiting_at_exit(tmp_path):
    """At exit the idle child holds nothing (no block, no request): it is killed rather than
    asked, which saved about 0.1 s of every run, and leaves nothing in /dev/shm."""
    worker = DecodeWorker()
    path = tmp_path / "a.dng"
    write_test_dng(path, random_mosaic(32, 48), "RGGB")
    assert worker.decode(path).data.shape == (32, 48)  # started, ready and idle
    proc, codes = worker._proc, []
    proc.close = lambda: codes.append(proc.exitcode)  # the exit code, as the worker lets the process go
    t0 = time.monotonic()
    worker.close(wait=False)
    assert time.monotonic() - t0 < 1.0
    assert codes == [-9]  # SIGKILL, not a polite exit
    assert not Path(f"/proc/{proc.pid}").exists()  # gone and reaped
    assert leftover_segments(os.getpid()) == []


def test_a_request_sent_ahead_is_answered_once(tmp_path):
    """decode_ahead asks at once and decode takes that answer instead of asking again (the file may
    be gone by then); a request for another file drops the early one and leaves nothing behind."""
    a, b = tmp_path / "a.dng", tmp_path / "b.dng"
    write_test_dng(a, random_mosaic(32, 48, seed=1), "RGGB")
    write_test_dng(b, random_mosaic(32, 48, seed=2), "RGGB")
    from rawdev.raw import read_mosaic

    expected = read_mosaic(a).data  # what the child computes
    worker = DecodeWorker()
    try:
        worker.decode_ahead(a)
        assert worker.idle  # may be pooled and taken over by the next batch
        worker._ensure_ready(None)
        assert worker._conn.poll(60)  # the answer is there
        a.unlink()
        np.testing.assert_array_equal(worker.decode(a).data, expected)
        worker.decode_ahead(tmp_path / "missing.dng")
        worker.decode_ahead(tmp_path / "missing.dng")  # a run that stopped early, then the next one
        worker.decode_ahead(tmp_path / "other.dng")
        got = worker.decode(b)  # not an early request's answer (those files do not exist)
        assert got.source == b and got.data.shape == (32, 48)
        assert leftover_segments(os.getpid()) == []
        worker.decode_ahead(b)
    finally:
        worker.close()  # with the last early request in flight
    assert not worker.alive and leftover_segments(os.getpid()) == []


def test_crash_reasons_are_one_clear_line():
    assert crash_reason(-11) == "decoder crashed: signal 11 (SIGSEGV)"
    assert crash_reason(-6) == "decoder crashed: signal 6 (SIGABRT)"
    assert crash_reason(-9).startswith("decoder crashed: signal 9 (SIGKILL); ") and "out of memory" in crash_reason(-9)
    assert crash_reason(3) == "decoder crashed: exit code 3"


def test_decode_timeout_must_be_positive(tmp_path, bilinear_model):
    result = develop(tmp_path, "--decode-timeout", "0", model=bilinear_model)
    assert result.exit_code == 2 and "--decode-timeout" in result.output


def test_what_libraw_prints_becomes_part_of_the_files_one_line(raw_samples, tmp_path, bilinear_model):
    """LibRaw prints "FILE: data corrupted at N" to the process's stderr; from the worker it goes
    into that file's failure line instead of between the batch's lines."""
    import random
    import subprocess
    import sys

    data = bytearray((raw_samples / "imageio_Blackmagic.dng").read_bytes())
    rng = random.Random(1)  # 20 bit flips in the lossless-JPEG data that LibRaw reports
    for _ in range(20):
        data[rng.randrange(len(data) // 2, len(data))] ^= 1 << rng.randrange(8)
    bad = tmp_path / "flipped.dng"
    bad.write_bytes(bytes(data))
    good = write_test_dng(tmp_path / "good.dng", random_mosaic(32, 48), "RGGB")
    command = [sys.executable, "-m", "rawdev.cli", "develop", str(bad), str(good), "-o", str(tmp_path / "out"),
               "--model", str(bilinear_model)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    about = [ln for ln in output.splitlines() if "flipped.dng" in ln and not ln.startswith("failed:")]
    assert len(about) == 1 and about[0].startswith("failed  "), output
    assert "(LibRaw: data corrupted at " in about[0]
    assert output.count("data corrupted") == 1, output  # not printed again on its own line
    assert (tmp_path / "out" / "good.tif").exists()
