"""`rawdev develop --jobs`: a batch over worker processes, one single-threaded session each."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rawpy")

from conftest import random_mosaic, write_test_dng  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from rawdev.cli import app  # noqa: E402
from rawdev.workers import LARGE_FILE_BYTES, batch_layout, parse_jobs  # noqa: E402


def develop(*args: str | Path, model: Path):
    return CliRunner().invoke(app, ["develop", *map(str, args), "--model", str(model)])


def test_auto_runs_one_single_threaded_worker_per_core_for_a_batch_on_the_cpu():
    assert batch_layout("auto", 0, files=10, cpu_provider=True, largest_bytes=30 << 20, cores=2) == (2, 1)
    assert batch_layout("auto", 0, files=10, cpu_provider=True, largest_bytes=30 << 20, cores=8) == (8, 1)
    # one file, another provider, --threads given or a very large file: one process, as before
    assert batch_layout("auto", 0, files=1, cpu_provider=True, largest_bytes=30 << 20, cores=2) == (1, 0)
    assert batch_layout("auto", 0, files=10, cpu_provider=False, largest_bytes=30 << 20, cores=2) == (1, 0)
    assert batch_layout("auto", 2, files=10, cpu_provider=True, largest_bytes=30 << 20, cores=2) == (1, 2)
    assert batch_layout("auto", 0, files=10, cpu_provider=True, largest_bytes=LARGE_FILE_BYTES + 1,
                        cores=2) == (1, 0)
    # a number: that many workers (never more than files), the cores shared out unless --threads says
    assert batch_layout("3", 0, files=10, cpu_provider=True, largest_bytes=0, cores=6) == (3, 2)
    assert batch_layout("4", 0, files=2, cpu_provider=True, largest_bytes=0, cores=2) == (2, 1)
    assert batch_layout("2", 3, files=5, cpu_provider=True, largest_bytes=0, cores=2) == (2, 3)
    assert batch_layout("1", 0, files=5, cpu_provider=True, largest_bytes=0, cores=2) == (1, 0)


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_jobs_must_be_auto_or_a_positive_number(tmp_path, bilinear_model, value):
    src = write_test_dng(tmp_path / "a.dng", random_mosaic(32, 32), "RGGB")
    result = develop(src, "-o", tmp_path / "out", "--jobs", value, model=bilinear_model)
    assert result.exit_code == 2
    assert "--jobs" in result.output and not (tmp_path / "out").exists()
    assert parse_jobs("auto") == "auto" and parse_jobs("3") == "3"


def _batch(folder: Path) -> list[Path]:
    folder.mkdir()
    return [write_test_dng(folder / f"f{i}.dng", random_mosaic(64 + 8 * i, 80, seed=i), "RGGB") for i in range(5)]


def test_workers_write_what_one_process_writes_and_skip_alike(tmp_path, bilinear_model):
    _batch(tmp_path / "in")
    one = develop(tmp_path / "in", "-o", tmp_path / "one", "--jobs", "1", model=bilinear_model)
    assert one.exit_code == 0, one.output
    two = develop(tmp_path / "in", "-o", tmp_path / "two", "--jobs", "2", model=bilinear_model)
    assert two.exit_code == 0, two.output
    assert "2 worker processes x 1 thread" in two.output
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir()) and len(names) == 5
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    again = develop(tmp_path / "in", "-o", tmp_path / "two", "--jobs", "2", model=bilinear_model)
    assert again.exit_code == 0 and again.output.count("exists (use --overwrite") == 5


def test_a_worker_that_dies_fails_its_file_and_the_batch_goes_on(tmp_path, bilinear_model, monkeypatch):
    """The file being developed when its worker exits fails with one line; a new worker takes the
    rest; nothing half-written is left."""
    _batch(tmp_path / "in")
    monkeypatch.setenv("RAWDEV_TEST_ACTOR_FAULT", "before:f2.dng")
    result = develop(tmp_path / "in", "-o", tmp_path / "out", "--jobs", "2", model=bilinear_model)
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if "f2.dng" in line and "died" in line]
    assert len(failed) == 1, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["f0.tif", "f1.tif", "f3.tif", "f4.tif"]


def test_bad_files_in_a_parallel_batch_fail_alone(tmp_path, bilinear_model):
    _batch(tmp_path / "in")
    (tmp_path / "in" / "broken.dng").write_bytes(b"II*\0not a dng at all")
    result = develop(tmp_path / "in", "-o", tmp_path / "out", "--jobs", "2", model=bilinear_model)
    assert result.exit_code == 1
    assert len([line for line in result.output.splitlines() if "broken.dng" in line]) >= 1
    assert len(list((tmp_path / "out").iterdir())) == 5


def test_rendering_beside_the_network_only_where_the_sessions_leave_a_core_free():
    from rawdev.workers import overlap_pays

    assert not overlap_pays(0, 1, cores=2)  # one session on every core
    assert not overlap_pays(1, 2, cores=2)  # one worker per core
    assert overlap_pays(1, 1, cores=2) and overlap_pays(2, 3, cores=8)
    assert not overlap_pays(4, 2, cores=8)
