"""The batch runner keeps memory bounded: at most two mosaics and two developed images alive."""

import threading
import time
import weakref

import numpy as np

from rawdev import batch
from rawdev.batch import Job, RunOptions, run_batch
from rawdev.cfa import parse_cfa
from rawdev.develop import DevelopOptions
from rawdev.raw import Mosaic
from tests.conftest import random_mosaic


class Alive:
    """Counts the arrays of one kind that are still referenced, and the most seen at once."""

    def __init__(self):
        self.now = 0
        self.most = 0
        self.lock = threading.Lock()

    def track(self, array: np.ndarray) -> np.ndarray:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        weakref.finalize(array, self._gone)
        return array

    def _gone(self):
        with self.lock:
            self.now -= 1


def test_a_slow_writer_holds_back_development_and_decoding(tmp_path, bilinear_session, monkeypatch):
    mosaics, images = Alive(), Alive()

    def decode(job, run):
        return Mosaic(data=mosaics.track(random_mosaic(64, 96, seed=len(job.source.name))),
                      cfa=parse_cfa("RGGB"), black=np.full((2, 2), 64.0), white=4095.0, source=job.source)

    real_develop, real_write = batch.develop_mosaic, batch.write_image

    def develop(*args, **kwargs):
        developed = real_develop(*args, **kwargs)
        images.track(developed.image)
        return developed

    def slow_write(path, image, *args, **kwargs):
        time.sleep(0.15)  # encoding far slower than developing: the runner must wait, not pile up
        real_write(path, image, *args, **kwargs)

    monkeypatch.setattr(batch, "develop_mosaic", develop)
    monkeypatch.setattr(batch, "write_image", slow_write)
    jobs = [Job(tmp_path / f"in{i}.dng", tmp_path / "out" / f"in{i}.tif") for i in range(8)]
    summary = run_batch(jobs, bilinear_session, DevelopOptions(exposure="0"), RunOptions(), decode=decode)

    assert [o.status for o in summary.outcomes] == ["ok"] * 8
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(j.output.name for j in jobs)
    assert images.most <= 2, f"{images.most} developed images were alive at once"
    assert mosaics.most <= 2, f"{mosaics.most} decoded mosaics were alive at once"
    assert mosaics.most == 2  # but decoding still runs one file ahead of development
