"""`rawdev develop --ray` (rawdev/distributed.py) on a local Ray cluster started by the tests.

One Ray instance for the module (loopback only: no dashboard, no usage statistics), tiny DNGs and
the bilinear test model. What is checked: the same output bytes, per-file lines, summary and exit
code as a local run; actors killed mid-run (by the test-only fault hook, and by ray.kill from the
test) and every file still developed exactly once; a file that kills every actor fails alone;
Ctrl-C leaves no partial file and a rerun develops only what is missing.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import random_mosaic, write_test_dng
from typer.testing import CliRunner

from rawdev.batch import Job, Outcome, Reporter, RunOptions
from rawdev.cli import app
from rawdev.develop import DevelopOptions

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before Ray is imported: nothing leaves the machine


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # Four logical CPUs (and 8 GiB of Ray's logical memory, 2 GiB an actor) on the two-core test
    # machine: the shared pool (2 x 1 CPU) and a CLI run's own actors (2 x 1 CPU) fit side by side;
    # only one of them is busy at a time.
    ray.init(address="local", num_cpus=4, _memory=8 * 1024**3, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_cluster, bilinear_model):
    from rawdev.distributed import RayPool

    with RayPool.start("auto", bilinear_model, "cpu", threads=1, actors=2) as p:
        assert not p.owns_ray  # the module's Ray is used as it is
        yield p


class Recorder(Reporter):
    """The outcomes in the order the driver reports them; optionally does something on one."""

    def __init__(self, on_done=None):
        self.outcomes: list[Outcome] = []
        self.total = None
        self.on_done = on_done

    def start(self, total: int) -> None:
        self.total = total

    def file_done(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        if self.on_done is not None:
            self.on_done(self, outcome)


def make_inputs(folder: Path, count: int) -> list[Job]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Job(write_test_dng(folder / f"c{i}.dng", random_mosaic(32, 48, seed=i), "RGGB"),
                folder.parent / "out" / f"c{i}.tif") for i in range(count)]


def actor_pids(pool) -> set[int]:
    return {s.about["pid"] for s in pool.slots if s.about}


def assert_no_shared_memory_left(pids: set[int]) -> None:
    """Killed actors' decoded-image blocks are removed (Ray kills the decoder's tracker with them)."""
    from rawdev.decode import leftover_segments

    assert [name for pid in pids for name in leftover_segments(pid)] == []


def assert_each_once(jobs: list[Job], outcomes: list[Outcome]) -> None:
    """Every job reported exactly once, every output a complete image, no temporary file left."""
    assert sorted(str(o.job.source) for o in outcomes) == sorted(str(j.source) for j in jobs)
    for job in jobs:
        with tifffile.TiffFile(job.output) as tif:
            assert tif.pages[0].asarray().shape == (32, 48, 3)
    out = jobs[0].output.parent
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


OPTIONS = DevelopOptions()


# --- the same as a local run ---------------------------------------------------------------------


def _cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["develop", *map(str, args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _file_lines(output: str, out_dir: Path) -> list[str]:
    """Per-file lines, the output folder and the timings taken out, sorted (the order differs)."""
    lines = [ln for ln in output.splitlines() if ln.split(" ", 1)[0] in ("ok", "skipped", "failed")]
    lines = [re.sub(r" \(\d+\.\d s, .*MP/s\)$", "", ln.replace(str(out_dir), "OUT")) for ln in lines]
    return sorted(lines)


def test_ray_run_gives_the_bytes_lines_summary_and_exit_code_of_a_local_run(ray_cluster, tmp_path,
                                                                              bilinear_model):
    src = tmp_path / "in"
    src.mkdir()
    write_test_dng(src / "bayer.dng", random_mosaic(48, 64, seed=1), "GRBG")
    write_test_dng(src / "quad.dng", random_mosaic(48, 64, seed=2), "quad-RGGB")
    write_test_dng(src / "a.dng", random_mosaic(32, 32, seed=3), "RGGB")
    write_test_dng(src / "a.nef", random_mosaic(40, 40, seed=4), "RGGB")  # same output name as a.dng
    write_test_dng(src / "old.dng", random_mosaic(32, 32, seed=5), "RGGB")
    (src / "text.dng").write_text("not a raw file at all")
    results = {}
    for name, extra in (("local", []), ("ray", ["--ray", "auto", "--threads", "1"])):
        out = tmp_path / name
        out.mkdir()
        (out / "old.tif").write_bytes(b"an older result")  # skipped, untouched
        code, output = _cli(src, "-o", out, "--model", bilinear_model, *extra)
        results[name] = code, _file_lines(output, out), output.splitlines()[-2], out
    (local_code, local_lines, local_summary, local_out), (ray_code, ray_lines, ray_summary, ray_out) = \
        results["local"], results["ray"]
    assert ray_code == local_code == 1
    assert ray_lines == local_lines and len(ray_lines) == 6
    assert any("already the output of" in ln for ln in ray_lines)
    assert any(ln.startswith("skipped") and "old.dng" in ln for ln in ray_lines)
    assert ray_summary.split(" in ")[0] == local_summary.split(" in ")[0] == "3 ok, 1 skipped, 2 failed"
    names = sorted(p.name for p in local_out.iterdir())
    assert names == sorted(p.name for p in ray_out.iterdir()) == ["a.tif", "bayer.tif", "old.tif", "quad.tif"]
    for name in names:
        assert (ray_out / name).read_bytes() == (local_out / name).read_bytes(), name
    assert (ray_out / "old.tif").read_bytes() == b"an older result"


def test_dng_output_travels_to_the_actors_and_gives_the_bytes_of_a_local_run(pool, tmp_path, bilinear_session):
    from rawdev.batch import run_batch

    (tmp_path / "in").mkdir()
    sources = [write_test_dng(tmp_path / "in" / f"d{i}.dng", random_mosaic(32, 48, seed=i), "RGGB", orientation=i + 5)
               for i in range(2)]
    outputs = {}
    for name in ("local", "ray"):
        jobs = [Job(src, tmp_path / name / f"{src.stem}.rawdev.dng") for src in sources]
        run = RunOptions(fmt="dng", decode_in_process=name == "local")
        summary = run_batch(jobs, bilinear_session, OPTIONS, run) if name == "local" else pool.run(jobs, OPTIONS, run)
        assert summary.exit_code == 0 and [o.status for o in summary.outcomes] == ["ok", "ok"]
        outputs[name] = {j.output.name: j.output.read_bytes() for j in jobs}
    assert outputs["ray"] == outputs["local"]
    assert all(data[:4] == b"II*\x00" and len(data) > 32 * 48 * 6 for data in outputs["ray"].values())


def test_the_driver_decides_skips_and_refusals_as_a_local_batch_does(tmp_path, bilinear_session):
    import imagecodecs

    from rawdev.batch import run_batch
    from rawdev.distributed import plan_work

    out = tmp_path / "out"
    out.mkdir()
    shot = tmp_path / "shot.png"  # a PNG mosaic whose PNG output would replace it
    imagecodecs.imwrite(str(shot), np.random.default_rng(0).integers(0, 1021, (32, 32)).astype(np.uint16))
    (out / "old.tif").write_bytes(b"an older result")
    jobs = [Job(shot, shot), Job(write_test_dng(tmp_path / "old.dng", random_mosaic(32, 32), "RGGB"), out / "old.tif"),
            Job(write_test_dng(tmp_path / "a.dng", random_mosaic(32, 32), "RGGB"), out / "a.tif"),
            Job(write_test_dng(tmp_path / "a.nef", random_mosaic(32, 32), "RGGB"), out / "a.tif"),
            Job(tmp_path / "missing.dng", out / "missing.tif")]
    for overwrite in (False, True):
        todo, decided = plan_work(jobs, overwrite)
        local = run_batch(jobs, bilinear_session, OPTIONS, RunOptions(overwrite=overwrite, decode_in_process=True))
        ran = {o.job for o in local.outcomes if o.status == "ok" or "missing" in str(o.job.source)}
        assert [(o.job, o.status, o.message) for o in decided] == \
            [(o.job, o.status, o.message) for o in local.outcomes if o.job not in ran]
        assert set(todo) == ran
    assert [o.status for o in decided] == ["failed", "failed"]  # with --overwrite: refused, claimed


# --- faults --------------------------------------------------------------------------------------


def test_actors_that_die_mid_run_have_their_files_developed_once_elsewhere(pool, tmp_path, monkeypatch):
    jobs = make_inputs(tmp_path / "in", 6)
    # one actor dies on receiving c1, another after writing c3 (before answering): both files
    # are sent again (c3 over its own complete output) and counted once
    monkeypatch.setenv("RAWDEV_TEST_ACTOR_FAULT",
                       f"before:c1.dng:{tmp_path / 'once1'},after:c3.dng:{tmp_path / 'once3'}")
    deaths = pool.deaths
    recorder = Recorder()
    pool.wait_ready(60)
    summary = pool.run(jobs, OPTIONS, RunOptions(), recorder)
    assert pool.deaths - deaths == 2
    assert (tmp_path / "once1").exists() and (tmp_path / "once3").exists()  # the faults did fire
    assert summary.exit_code == 0 and summary.count("ok") == 6 and len(summary.outcomes) == 6
    assert recorder.total == 6
    assert_each_once(jobs, recorder.outcomes)


def test_an_actor_killed_from_outside_mid_run(pool, ray_cluster, tmp_path):
    jobs = make_inputs(tmp_path / "in", 6)
    deaths = pool.deaths

    assert pool.wait_ready(60) == 2  # both actors working: one of them is busy at some file's end
    killed = []

    def kill_one(recorder, outcome):  # the first time an actor is busy with a file
        busy = [s for s in pool.slots if s.inflight]
        if busy and not killed:
            killed.append(busy[0].inflight[0][1])
            ray_cluster.kill(busy[0].actor, no_restart=True)

    recorder = Recorder(kill_one)
    pids = actor_pids(pool)
    summary = pool.run(jobs, OPTIONS, RunOptions(), recorder)
    assert len(killed) == 1 and pool.deaths - deaths == 1
    assert_no_shared_memory_left(pids)
    assert summary.count("ok") == 6 and len(summary.outcomes) == 6
    assert_each_once(jobs, recorder.outcomes)


def test_a_file_that_kills_every_actor_fails_alone(pool, tmp_path, monkeypatch):
    jobs = make_inputs(tmp_path / "in", 3)
    monkeypatch.setenv("RAWDEV_TEST_ACTOR_FAULT", "before:c1.dng")
    summary = pool.run(jobs, OPTIONS, RunOptions(), Recorder())
    assert summary.exit_code == 1
    failures = [o for o in summary.outcomes if o.status == "failed"]
    assert len(failures) == 1, failures
    [failed] = failures
    assert failed.job == jobs[1] and "died twice" in failed.message and "\n" not in failed.message
    assert summary.count("ok") == 2 and len(summary.outcomes) == 3
    assert not jobs[1].output.exists()


def test_ctrl_c_leaves_no_partial_file_and_a_rerun_finishes_only_what_is_missing(pool, tmp_path):
    jobs = make_inputs(tmp_path / "in", 6)

    def interrupt(recorder, outcome):
        raise KeyboardInterrupt

    pool.wait_ready(60)
    pids = actor_pids(pool)
    first = pool.run(jobs, OPTIONS, RunOptions(), Recorder(interrupt))
    assert_no_shared_memory_left(pids)
    assert first.interrupted and first.exit_code == 130
    done = {o.job for o in first.outcomes if o.status == "ok"}
    assert 1 <= len(done) < 6
    out = jobs[0].output.parent
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file
    recorder = Recorder()
    second = pool.run(jobs, OPTIONS, RunOptions(), recorder)  # the pool starts new actors
    assert second.exit_code == 0
    assert {o.job for o in second.outcomes if o.status == "skipped"} >= done
    made = [o.job for o in second.outcomes if o.status == "ok"]
    assert len(made) + second.count("skipped") == 6 and not set(made) & done
    assert_each_once(jobs, recorder.outcomes)


# --- no Ray unless asked -------------------------------------------------------------------------


def test_ray_is_imported_only_with_the_ray_option():
    code = "import sys, rawdev.cli; assert 'ray' not in sys.modules; import rawdev.distributed; " \
           "assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ray_missing_is_a_usage_error(tmp_path, bilinear_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    src = write_test_dng(tmp_path / "x.dng", random_mosaic(32, 32), "RGGB")
    code, output = _cli(src, "-o", tmp_path / "out", "--model", bilinear_model, "--ray", "auto")
    assert code == 2 and "pip install 'rawdev[ray]'" in output
    assert not (tmp_path / "out" / "x.tif").exists()

