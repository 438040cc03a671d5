"""Files per second of `rawdev develop --ray` with 1 and 2 Ray actors, against a local run.

Everything runs on this machine: a local Ray instance (``address="local"``, no dashboard, no
usage statistics) with as many CPUs as the machine has. The inputs are ``--files`` synthetic
12-bit RGGB DNGs of ``--mp`` megapixels (a smooth colour scene with texture and a little noise,
different per file), developed with the default model into 16-bit TIFFs (``--overwrite``).

Rows (each: one warm-up run, then ``--repeats`` timed runs; the median and the range are given):

- ``local``: :func:`rawdev.batch.run_batch` in this process, one session with ``--threads 0``
  (all cores), decode / inference / encode overlapped: what ``rawdev develop`` does without --ray.
- ``ray N x C``: :class:`rawdev.distributed.RayPool` with N actors of C CPUs each (one session per
  actor, C onnxruntime threads), started once; the time of ``pool.run`` (Ray and the actors are
  already up: their start-up is reported separately).

A run's time is the wall time from the first file handed out to the last outcome back; files per
second = files / time. With ``--pause-training`` the background training job
(``python -m rawdev.train.loop``) is stopped with SIGSTOP during each row's runs and resumed
after (benchmarks/_pause.py); without it the figures include its load.

Usage (from the repository root, ``pip install '.[ray]'``):

    python benchmarks/ray_scaling.py --pause-training --readme README.md

``--readme`` replaces the block between ``<!-- BEGIN ray_scaling -->`` and
``<!-- END ray_scaling -->`` in that file with the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import code_version, library_versions, machine_info, now  # noqa: E402

BLACK, WHITE = 256, 4095
XYZ_TO_CAM = np.array([[0.4716, 0.0603, -0.083], [-0.7798, 1.5474, 0.248], [-0.1496, 0.1937, 0.6651]])
WB = np.array([2.1, 1.0, 1.7])
MARK = "ray_scaling"


def make_dng(path: Path, mp: float, seed: int) -> None:
    """A 3:2 RGGB DNG of about ``mp`` megapixels: gradients, texture, bars, a little noise."""
    from rawdev.cfa import mosaic, parse_cfa
    from rawdev.dng import write_dng

    w = int(round(np.sqrt(mp * 1e6 * 1.5) / 4)) * 4
    h = int(round(mp * 1e6 / w / 4)) * 4
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    rgb = np.stack([0.45 + 0.3 * np.sin(x / w * 6 + phase[0]) * np.cos(y / h * 4),
                    0.4 + 0.3 * np.cos(x / w * 3 - y / h * 5 + phase[1]),
                    0.35 + 0.25 * np.sin(y / h * 9 + phase[2])], -1)
    rgb += 0.08 * np.sin(x / 2.3)[..., None] * np.cos(y / 3.1)[..., None]
    rgb *= np.where(((x // 97 + y // 131) % 5 == 0)[..., None], 0.35, 1.0)
    lin = np.clip(rgb, 0, 1) ** 2.2 / WB
    raw = mosaic(lin, parse_cfa("RGGB")) * (WHITE - BLACK) + BLACK
    raw += rng.normal(0, 6, raw.shape)
    write_dng(path, np.clip(np.round(raw), 0, WHITE).astype(np.uint16), parse_cfa("RGGB"), black=BLACK,
              white=WHITE, xyz_to_cam=XYZ_TO_CAM, wb_gains=WB, make="rawdev", model="Synthetic ray scaling")


def run_local(jobs, model_path, options, run, threads: int) -> float:
    from rawdev.batch import run_batch
    from rawdev.session import open_session

    session = open_session(model_path, "cpu", threads)
    t0 = time.perf_counter()
    summary = run_batch(jobs, session, options, run)
    seconds = time.perf_counter() - t0
    assert summary.count("ok") == len(jobs), [o.message for o in summary.outcomes if o.status != "ok"]
    return seconds


def busy_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds of ``root`` (this process) and every descendant: the Ray processes it started,
    the actors and their decoders included (their reaped children too)."""
    root = root or os.getpid()
    parent, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        parent[pid] = int(rest[1])
        cpu[pid] = sum(int(v) for v in rest[11:15])  # utime stime cutime cstime
    total = 0
    for pid in cpu:
        p = pid
        while p and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += cpu[pid]
    return total / os.sysconf("SC_CLK_TCK")


def timed(once, attempts: int = 3) -> tuple[float, float, int]:
    """(seconds, foreign CPU seconds, attempts): ``once()`` again while processes outside this
    benchmark's tree used more than 5 % of the machine during it; the least disturbed run."""
    best = None
    for i in range(attempts):
        busy, own = busy_cpu_seconds(), tree_cpu_seconds()
        seconds = once()
        foreign = max(0.0, (busy_cpu_seconds() - busy) - (tree_cpu_seconds() - own))
        if best is None or foreign < best[1]:
            best = (seconds, foreign, i + 1)
        if foreign <= max(0.1, 0.05 * seconds * (os.cpu_count() or 1)):
            break
    return best


def measure(label: str, once, repeats: int, pauser, say) -> dict:
    with pauser.stretch(label) if pauser is not None else contextlib.nullcontext():
        load = os.getloadavg()[0]
        once()  # warm-up
        runs = [timed(once) for _ in range(repeats)]
    times = [r[0] for r in runs]
    say(f"{label}: " + ", ".join(f"{t:.2f} s (others {f:.1f} CPU s)" for t, f, _ in runs))
    return {"label": label, "seconds": [round(t, 3) for t in times], "median_s": round(statistics.median(times), 3),
            "foreign_cpu_s": [round(r[1], 2) for r in runs], "attempts": [r[2] for r in runs],
            "load_1min_before": round(load, 2)}


def markdown(report: dict) -> str:
    m = report["machine"]
    files, mp = report["files"], report["megapixels_per_file"]
    paused = "paused (SIGSTOP) during the runs" if report["training_paused"] else "running alongside"
    rows = [f"| run | files/s (median of {report['repeats']}) | range | speed-up vs 1 actor |",
            "|---|---|---|---|"]
    one = next((r for r in report["rows"] if r["label"] == "ray 1 x 1 CPU"), None)
    for r in report["rows"]:
        rate = files / r["median_s"]
        lo, hi = files / max(r["seconds"]), files / min(r["seconds"])
        gain = f"{rate / (files / one['median_s']):.2f}x" if one else ""
        rows.append(f"| {r['label']} | {rate:.2f} | {lo:.2f}-{hi:.2f} | {gain} |")
    text = [
        f"`python benchmarks/ray_scaling.py` on {m['cpu_model']}, **{m['logical_cores']} cores** (one machine: the "
        f"local Ray instance is the whole cluster), {files} DNGs of {mp:g} MP each, default model, 16-bit TIFF, "
        f"{report['repeats']} timed runs after a warm-up; the background training job {paused}; "
        f"other processes used {report['foreign_share']:.0%} of the CPU during the timed runs. "
        f"Ray {report['versions'].get('ray')}, onnxruntime {report['versions'].get('onnxruntime')}, "
        f"{report['date'][:10]}.",
        "",
        *rows,
        "",
        f"Start-up, not in the figures: `ray.init` of the local instance {report['ray_init_s']:.1f} s; "
        f"actors ready (session opened, decoder warm) {report['pool_start_s']}.",
    ]
    return "\n".join(text)


def replace_block(path: Path, body: str) -> None:
    begin, end = f"<!-- BEGIN {MARK} -->", f"<!-- END {MARK} -->"
    text = path.read_text()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + begin + "\n" + body.rstrip() + "\n" + end + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{begin}\n{body.rstrip()}\n{end}\n"
    path.write_text(text)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--mp", type=float, default=1.0, help="megapixels per file")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--model", default=None, help="registry name or .onnx path (default: the shipped model)")
    p.add_argument("--workers", default="1x1,2x1,1x2",
                   help="Ray rows as ACTORSxCPUS, comma-separated (default 1x1,2x1,1x2)")
    p.add_argument("--no-local", action="store_true", help="leave out the local row")
    p.add_argument("--pause-training", action="store_true",
                   help="SIGSTOP the background training job during each row and SIGCONT it after")
    p.add_argument("--workdir", type=Path, default=None, help="where the DNGs go (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "ray_scaling.json")
    p.add_argument("--readme", type=Path, default=None, help="markdown file whose ray_scaling block is replaced")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from rawdev.batch import Job, RunOptions
    from rawdev.develop import DevelopOptions
    from rawdev.distributed import RayPool
    from rawdev.model import resolve_model

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    pauser = None
    if args.pause_training:
        from benchmarks._pause import Pauser

        pauser = Pauser(enabled=True, say=say)
    model_path = resolve_model(args.model)
    options, run = DevelopOptions(), RunOptions(overwrite=True)
    report = {"date": now(), "machine": machine_info(), "code": code_version(),
              "versions": {**library_versions(), "ray": ray.__version__}, "files": args.files,
              "megapixels_per_file": args.mp, "repeats": args.repeats, "model": str(model_path),
              "training_paused": bool(args.pause_training), "rows": []}
    with tempfile.TemporaryDirectory(prefix="rawdev-ray-bench-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        jobs = []
        for i in range(args.files):
            src = work / f"ray_bench_{args.mp:g}mp_{i}.dng"
            if not src.exists():
                make_dng(src, args.mp, seed=i)
            jobs.append(Job(src, Path(tmp) / "out" / f"{src.stem}.tif"))
        say(f"{args.files} files of {args.mp:g} MP in {work}")
        if not args.no_local:
            report["rows"].append(measure("local (one session, all cores)",
                                          lambda: run_local(jobs, model_path, options, run, 0),
                                          args.repeats, pauser, say))
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
        report["ray_init_s"] = round(time.perf_counter() - t0, 2)
        starts = []
        try:
            for spec in args.workers.split(","):
                actors, cpus = (int(v) for v in spec.lower().split("x"))
                t0 = time.perf_counter()
                with RayPool.start("auto", model_path, "cpu", threads=cpus, actors=actors) as pool:
                    assert pool.wait_ready(120) == actors, "not every actor started"
                    starts.append(f"{time.perf_counter() - t0:.1f} s for {actors} x {cpus} CPU")

                    def once(pool=pool) -> float:
                        t = time.perf_counter()
                        summary = pool.run(jobs, options, run)
                        seconds = time.perf_counter() - t
                        assert summary.count("ok") == len(jobs), [o.message for o in summary.outcomes]
                        return seconds

                    label = f"ray {actors} x {cpus} CPU" + (" (one actor per core)" if cpus == 1 and actors > 1
                                                            else "")
                    row = measure(label, once, args.repeats, pauser, say)
                    row.update(actors=actors, cpus_per_actor=cpus)
                    report["rows"].append(row)
        finally:
            ray.shutdown()
        report["pool_start_s"] = "; ".join(starts)
    if pauser is not None:
        report["pause"] = pauser.describe()
    cores = os.cpu_count() or 1
    wall = sum(sum(r["seconds"]) for r in report["rows"])
    report["foreign_share"] = sum(sum(r["foreign_cpu_s"]) for r in report["rows"]) / (wall * cores) if wall else 0.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    print(table)
    if args.readme is not None:
        replace_block(args.readme, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
