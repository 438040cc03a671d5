"""Time and peak memory of `rawdev develop` against image size, and against --tile.

Synthetic Bayer DNGs (RGGB, 12-bit, black 256, uncompressed, 3:2) are made of a cheap procedural
scene (colour gradients, sinusoidal texture at several scales, hard-edged bars) unprocessed band by
band with ``rawdev.train.synth.Unprocessor.capture`` (fixed camera matrix and white balance,
"low" noise); the mosaic is assembled in a memory-mapped file, so making a 100 MP file takes a few
hundred MB at most, whatever the size. Files are cached in ``--workdir`` (reused when present).

Part 1 (sizes): ``rawdev develop FILE -o DIR --overwrite`` (default model, tile auto, 16-bit TIFF)
for each size; wall time and the process's peak RSS (``os.wait4``), median of ``--repeats``
(``--large-repeats`` from ``--large-mp`` megapixels up); peak memory as in benchmarks/_measure.py
(the larger of wait4's ru_maxrss and the polled process-tree sum). Targets from the develop issue: peak RSS
< 1 GB at 12 MP, < 1.5 GB at 48 and 100 MP.

Part 2 (tiles): the same command with ``--tile N`` for each N on the ``--tile-file-mp`` file;
rounds rotate the order of the tile sizes; every round runs in one paused stretch.

Usage (from the repository root):
    python benchmarks/scaling.py --pause-training
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import (  # noqa: E402
    add_common_args,
    clean_runs,
    command_line,
    fmt,
    header_lines,
    paired_ratio,
    rawdev_command,
    run_clean,
    run_timed,
    start_timed_run,
    summary,
    tries,
    update_results_md,
    with_notes,
    write_json,
)
from rawdev.develop import DEFAULT_OVERLAP  # noqa: E402

DEFAULT_SIZES = (0.25, 3.0, 12.0, 48.0, 100.0)
DEFAULT_TILES = (128, 256, 384, 512, 768, 1024)
TARGETS_MB = {12.0: 1000.0, 48.0: 1500.0, 100.0: 1500.0}  # peak RSS targets (the develop issue)
GENERATOR_VERSION = 1
BLACK, WHITE = 256, 4095
WB = (2.0, 1.0, 1.6)
BAND = 128  # rows generated at a time


def dims_for(mp: float) -> tuple[int, int]:
    """(height, width) of a 3:2 image of about ``mp`` megapixels, both multiples of 4."""
    w = max(32, int(round(math.sqrt(mp * 1e6 * 1.5) / 4)) * 4)
    h = max(32, int(round(mp * 1e6 / w / 4)) * 4)
    return h, w


def scene_band(y0: int, rows: int, height: int, width: int) -> np.ndarray:
    """Rows ``y0:y0+rows`` of the procedural sRGB scene, float64 in [0, 1]."""
    y = (np.arange(y0, y0 + rows, dtype=np.float64) / height)[:, None]
    x = (np.arange(width, dtype=np.float64) / width)[None, :]
    yp = np.arange(y0, y0 + rows, dtype=np.float64)[:, None]
    xp = np.arange(width, dtype=np.float64)[None, :]
    fine = 0.08 * np.sin(xp / 2.3) * np.cos(yp / 3.1)  # texture near the Nyquist limit
    mid = 0.12 * np.sin(xp / 17.0 + 2 * np.sin(yp / 29.0))
    r = 0.45 + 0.3 * np.sin(2 * np.pi * (1.5 * x + 0.7 * y)) + fine + mid
    g = 0.4 + 0.3 * np.cos(2 * np.pi * (0.8 * x - 1.2 * y)) + fine
    b = 0.35 + 0.25 * np.sin(2 * np.pi * (2.2 * y)) + mid
    rgb = np.stack([np.broadcast_to(c, (rows, width)) for c in (r, g, b)], axis=-1).copy()
    bars = ((xp // 97 + yp // 131) % 5 == 0)[..., None]  # hard edges
    rgb = np.where(bars, rgb * 0.35, rgb)
    return np.clip(rgb, 0.0, 1.0)


def make_dng(path: Path, mp: float, seed: int = 0) -> tuple[int, int]:
    """Write a synthetic 12-bit RGGB DNG of about ``mp`` megapixels to ``path`` (memory-light)."""
    from rawdev.cfa import parse_cfa
    from rawdev.dng import write_dng
    from rawdev.train.synth import NOISE_LEVELS, Unprocessor, camera_bank

    h, w = dims_for(mp)
    cfa = parse_cfa("RGGB")
    xyz_to_cam = np.asarray(camera_bank()[0]["xyz_to_cam"], np.float64)
    unproc = Unprocessor(seed)
    tmp_raw = path.with_name(path.name + ".raw.tmp")
    raw = np.memmap(tmp_raw, dtype=np.uint16, mode="w+", shape=(h, w))
    try:
        for y0 in range(0, h, BAND):
            rows = min(BAND, h - y0)  # BAND and h are even: every band starts on an R row
            cap = unproc.capture(scene_band(y0, rows, h, w), cfa, shot=NOISE_LEVELS["low"],
                                 xyz_to_cam=xyz_to_cam, wb_gains=np.array(WB), bits=12,
                                 black_fraction=BLACK / WHITE)
            raw[y0 : y0 + rows] = cap.raw
        raw.flush()
        partial = path.with_name(path.name + ".partial")
        write_dng(partial, raw, cfa, black=BLACK, white=WHITE, xyz_to_cam=xyz_to_cam, wb_gains=np.array(WB),
                  make="rawdev", model="Synthetic scaling")
        partial.replace(path)
    finally:
        del raw
        tmp_raw.unlink(missing_ok=True)
    return h, w


def dng_for(folder: Path, mp: float, say) -> tuple[Path, tuple[int, int]]:
    h, w = dims_for(mp)
    path = folder / f"scaling_v{GENERATOR_VERSION}_{w}x{h}.dng"
    if not path.exists():
        say(f"writing {path.name} ({h * w / 1e6:.1f} MP)")
        make_dng(path, mp)
    return path, (h, w)


def develop_cmd(path: Path, out_dir: Path, args, tile: int | None) -> list[str]:
    cmd = [*rawdev_command(), "develop", str(path), "-o", str(out_dir), "--overwrite", "--model", args.model]
    if tile:
        cmd += ["--tile", str(tile)]
    return cmd


def timed_develop(path: Path, out_dir: Path, args, tile: int | None, pauser=None, expected: float = 0.0,
                  attempts: int = 3) -> dict:
    cmd = develop_cmd(path, out_dir, args, tile)
    if pauser is None:  # warm-up: once, training running
        run = run_timed(cmd, timeout=args.timeout)
    else:
        run = run_clean(cmd, attempts=attempts, timeout=args.timeout, before=lambda: pauser.ensure(expected))
    out = out_dir / f"{path.stem}.tif"
    ok = run.ok and out.exists()
    if out.exists():
        out.unlink()
    d = run.to_dict()
    d["ok"] = ok
    if not ok:
        d["reason"] = f"exit {run.returncode}: {run.stderr_tail.strip().splitlines()[-1:] or ''}"
    return d


def measure_sizes(files: list[tuple[float, Path, tuple[int, int]]], out_dir: Path, args, pauser, say) -> list[dict]:
    rows = []
    s_per_mp = None
    for mp, path, (h, w) in files:
        repeats = args.large_repeats if mp >= args.large_mp else args.repeats
        if args.no_warmup:
            warm, expected = None, 60.0
        elif mp < args.large_mp or s_per_mp is None:
            warm = timed_develop(path, out_dir, args, None)  # untimed warm-up (page cache); training runs
            expected = warm["wall_s"] * 1.2
        else:  # a warm-up of a large file costs minutes: read it into the page cache instead
            warm = None
            with open(path, "rb") as fh:
                while fh.read(1 << 24):
                    pass
            expected = s_per_mp * h * w / 1e6 * 1.3
        runs = []
        for r in range(repeats):
            pauser.ensure(expected, label=f"{mp} MP run {r + 1}")
            runs.append(timed_develop(path, out_dir, args, None, pauser, expected,
                                      attempts=tries(pauser, 2 if mp >= args.large_mp else 3)))
        pauser.resume()
        finished = [r for r in runs if r["ok"]]
        good, dropped = clean_runs(finished)
        real_mp = h * w / 1e6
        row = {"nominal_mp": mp, "megapixels": round(real_mp, 3), "height": h, "width": w, "file": path.name,
               "file_mb": round(path.stat().st_size / 1e6, 1), "runs": runs, "warmup": warm,
               "ok": len(finished) == len(runs)}
        if good:
            wall = summary([r["wall_s"] for r in good])
            rss = summary([r["peak_mb"] for r in finished], 1)  # memory: every run counts
            s_per_mp = wall["median"] / real_mp
            row |= {"wall_s": wall, "peak_rss_mb": rss, "disturbed_runs_dropped": dropped,
                    "s_per_mp": round(wall["median"] / real_mp, 4),
                    "megapixels_per_s": round(real_mp / wall["median"], 3)}
            target = TARGETS_MB.get(mp)
            if target:
                row["target_mb"] = target
                row["meets_target"] = rss["max"] < target
            say(f"{real_mp:6.1f} MP: {wall['median']:.2f} s ({row['megapixels_per_s']:.2f} MP/s), "
                f"peak {rss['median']:.0f} MB" + (f" (target < {target:.0f})" if target else ""))
        else:
            say(f"{real_mp:6.1f} MP: failed: {runs[0].get('reason')}")
        rows.append(row)
    return rows


def measure_tiles(path: Path, mp: float, out_dir: Path, args, pauser, say) -> list[dict]:
    tiles = list(args.tiles)
    results: dict[int, list[dict]] = {t: [] for t in tiles}
    one = 30.0 if args.no_warmup else timed_develop(path, out_dir, args, 512)["wall_s"] * 1.3
    for r in range(args.repeats):
        order = tiles[r % len(tiles):] + tiles[: r % len(tiles)]
        pauser.ensure(one * len(tiles), label=f"tiles round {r + 1}")
        for t in order:
            results[t].append(timed_develop(path, out_dir, args, t, pauser, one, tries(pauser)) | {"round": r})
        pauser.resume()
        say(f"tile round {r + 1}/{args.repeats}: " + ", ".join(f"{t}: {results[t][-1]['wall_s']:.2f} s" for t in tiles))
    rows = []
    for t in tiles:
        finished = [r for r in results[t] if r["ok"]]
        good, dropped = clean_runs(finished)
        row = {"tile": t, "runs": results[t], "ok": bool(good), "disturbed_runs_dropped": dropped}
        if good:
            wall = summary([r["wall_s"] for r in good])
            row |= {"wall_s": wall, "peak_rss_mb": summary([r["peak_mb"] for r in finished], 1),
                    "megapixels_per_s": round(mp / wall["median"], 3)}
        rows.append(row)
    ok_rows = [r for r in rows if r["ok"]]
    if ok_rows:
        best = min(r["wall_s"]["median"] for r in ok_rows)
        for r in ok_rows:
            r["time_vs_fastest"] = round(r["wall_s"]["median"] / best, 3)
        base = next((r for r in ok_rows if r["tile"] == 512), None)
        if base:
            base_runs = clean_runs([x for x in base["runs"] if x["ok"]])[0]
            for r in ok_rows:
                r["time_vs_512"] = round(r["wall_s"]["median"] / base["wall_s"]["median"], 3)
                r["time_vs_512_paired"] = paired_ratio(clean_runs([x for x in r["runs"] if x["ok"]])[0], base_runs)
    return rows


def recommend_tile(rows: list[dict], budget_mb: float, tolerance: float) -> dict | None:
    """Speed first, then memory: among the tiles whose time is within ``tolerance`` of the fastest
    (paired ratio to tile 512 where measured, else the median time) and whose peak RSS stays under
    ``budget_mb``, the one with the lowest peak RSS."""
    ok = [r for r in rows if r["ok"]]
    if not ok:
        return None
    paired = all(r.get("time_vs_512_paired") is not None for r in ok)

    def speed(r):
        return r["time_vs_512_paired"] if paired else r["wall_s"]["median"]

    best = min(speed(r) for r in ok)
    fits = [r for r in ok if speed(r) <= best * (1 + tolerance) and r["peak_rss_mb"]["max"] < budget_mb]
    pick = min(fits, key=lambda r: (r["peak_rss_mb"]["median"], r["tile"])) if fits else min(ok, key=speed)
    measure = "paired time ratio to tile 512" if paired else "median time"
    return {"tile": pick["tile"], "rule": f"lowest peak RSS among tiles within {100 * tolerance:.0f} % of the fastest "
                                          f"({measure}) and under {budget_mb:.0f} MB"}


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    if len(xs) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(xs), np.asarray(ys), 1)
    return float(intercept), float(slope)


def markdown(report: dict) -> str:
    lines = ["## Scaling: time and memory against image size and tile size (benchmarks/scaling.py)", ""]
    lines += header_lines(report)
    kept = report.get("merged_from_earlier_run")
    if kept:
        lines.append(f"- the {kept['part']} table comes from the earlier run of {kept['started']} to "
                     f"{kept['finished']} (`{kept['command']}`); the rest from the run above")
    st = report["settings"]
    lines += ["", f"`rawdev develop` of synthetic 12-bit RGGB DNGs (uncompressed, procedural scene + low noise), "
                  f"model {st['model']}, 16-bit TIFF; median of {st['repeats']} runs ({st['large_repeats']} from "
                  f"{st['large_mp']:g} MP up) after one untimed warm-up run (from {st['large_mp']:g} MP up: the file "
                  "read into the page cache instead); peak RSS: the larger of wait4's ru_maxrss and the polled "
                  "sum over the process tree (rawdev decodes in a worker process). Disturbed runs (other processes "
                  "above 5 % of the CPU) are retried and left out of the median when enough clean ones remain "
                  "(n: runs in the median). The target verdict uses the largest peak of all runs.", ""]
    sizes = report["sizes"]
    if sizes:
        lines.append("| MP | pixels | median wall s | n | min–max s | s / MP | MP/s | peak RSS MB | max | target | |")
        lines.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in sizes:
            if not r["ok"] and "wall_s" not in r:
                lines.append(f"| {r['megapixels']:.1f} | {r['width']}x{r['height']} | failed | | | | | | | | |")
                continue
            w = r["wall_s"]
            target = f"< {r['target_mb']:.0f}" if r.get("target_mb") else ""
            verdict = ("ok" if r["meets_target"] else "**over**") if r.get("target_mb") else ""
            lines.append(f"| {r['megapixels']:.1f} | {r['width']}x{r['height']} | {w['median']:.2f} | {w['n']} | "
                         f"{w['min']:.2f}–{w['max']:.2f} | {r['s_per_mp']:.3f} | {r['megapixels_per_s']:.2f} | "
                         f"{r['peak_rss_mb']['median']:.0f} | {r['peak_rss_mb']['max']:.0f} | {target} | {verdict} |")
        fit = report.get("rss_fit")
        if fit:
            lines += ["", f"Peak RSS ≈ {fit['intercept_mb']:.0f} MB + {fit['mb_per_mp']:.1f} MB per megapixel "
                          f"(least squares over the sizes above); time ≈ {report['time_fit']['intercept_s']:.2f} s + "
                          f"{report['time_fit']['s_per_mp']:.3f} s per megapixel."]
    tiles = report["tiles"]
    if tiles:
        lines += ["", f"`--tile N` on the {report['tile_file']['megapixels']:.1f} MP file "
                      f"(overlap {st['overlap']} packed samples, rounds in rotated order; vs 512 = median over rounds "
                      "of the time / tile 512's time in the same round, which cancels the machine's drift between "
                      "rounds):", "",
                  "| --tile | median wall s | n | min–max s | vs 512 (paired) | MP/s | peak RSS MB |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in tiles:
            if not r["ok"]:
                lines.append(f"| {r['tile']} | failed | | | | | |")
                continue
            w = r["wall_s"]
            lines.append(f"| {r['tile']} | {w['median']:.2f} | {w['n']} | {w['min']:.2f}–{w['max']:.2f} | "
                         f"{fmt(r.get('time_vs_512_paired'))} | {r['megapixels_per_s']:.2f} | "
                         f"{r['peak_rss_mb']['median']:.0f} |")
        rec = report.get("recommended_tile")
        if rec:
            lines += ["", f"Recommended `--tile auto` default from these data: **{rec['tile']}** ({rec['rule']})."]
    return with_notes(lines, report)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmarks/scaling.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="*", type=float, default=list(DEFAULT_SIZES), help="megapixels (none: skip)")
    p.add_argument("--tiles", nargs="*", type=int, default=list(DEFAULT_TILES), help="--tile values (none: skip)")
    p.add_argument("--tile-file-mp", type=float, default=12.0, help="size of the file for the tile sweep")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--large-repeats", type=int, default=3)
    p.add_argument("--large-mp", type=float, default=40.0, help="sizes from here up use --large-repeats")
    p.add_argument("--model", default="csanet-res-c32")
    p.add_argument("--no-warmup", action="store_true", help="no untimed warm-up runs (quick tests)")
    p.add_argument("--overlap", type=int, default=16, help="(reported only: the CLI default overlap is used)")
    p.add_argument("--tile-tolerance", type=float, default=0.05,
                   help="tiles within this fraction of the fastest count as equally fast")
    p.add_argument("--memory-budget", type=float, default=1000.0, help="MB a recommended tile must stay under")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--merge", action="store_true",
                   help="with --sizes or --tiles given empty: keep that part from the existing --out JSON")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rawdev-scaling",
                   help="where the synthetic DNGs are cached")
    add_common_args(p, "scaling")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.large_repeats < 1:
        p.error("--repeats and --large-repeats must be >= 1")
    if any(t < 2 * DEFAULT_OVERLAP for t in args.tiles):  # rawdev develop refuses an overlap above half the tile
        p.error(f"--tiles must be >= {2 * DEFAULT_OVERLAP} (twice rawdev's default --overlap)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = start_timed_run(args)
    say, pauser = run.say, run.pauser
    args.workdir.mkdir(parents=True, exist_ok=True)
    files = []
    for mp in args.sizes:
        path, hw = dng_for(args.workdir, mp, say)
        files.append((mp, path, hw))
    tile_path, tile_hw = (None, None)
    if args.tiles:
        tile_path, tile_hw = dng_for(args.workdir, args.tile_file_mp, say)
    with pauser.session(), tempfile.TemporaryDirectory(prefix="rawdev-scaling-out-") as tmp:
        out_dir = Path(tmp)
        sizes = measure_sizes(files, out_dir, args, pauser, say)
        tiles = []
        if args.tiles:
            tiles = measure_tiles(tile_path, tile_hw[0] * tile_hw[1] / 1e6, out_dir, args, pauser, say)
    command = command_line("scaling.py", argv)
    kept: dict = {}
    if args.merge and args.out.exists() and (not args.sizes or not args.tiles):
        old = json.loads(args.out.read_text())
        part = "sizes" if not args.sizes else "tiles"
        kept = {"part": part, "command": old["command"], "started": old["started"], "finished": old["finished"]}
        if part == "sizes":
            sizes = old["sizes"]
        else:
            tiles, tile_path, tile_hw = old["tiles"], Path(old["tile_file"]["file"]), None
        command = f"{old['command']}` (its {part}), then `{command}"
    report = {
        **run.head("scaling", command),
        "merged_from_earlier_run": kept or None,
        "settings": {"model": args.model, "repeats": args.repeats, "large_repeats": args.large_repeats,
                     "large_mp": args.large_mp, "overlap": args.overlap, "generator_version": GENERATOR_VERSION,
                     "dng": {"cfa": "RGGB", "bits": 12, "black": BLACK, "white": WHITE, "wb": WB,
                             "noise": "low", "compression": "none"}},
        "sizes": sizes,
        "tiles": tiles,
        "tile_file": ({"file": tile_path.name, "megapixels": round(tile_hw[0] * tile_hw[1] / 1e6, 3)}
                      if tile_hw else (old["tile_file"] if kept.get("part") == "tiles" else None)),
        "notes": [],
    }
    ok_sizes = [r for r in sizes if "wall_s" in r]
    fit = fit_line([r["megapixels"] for r in ok_sizes], [r["peak_rss_mb"]["median"] for r in ok_sizes])
    if fit:
        report["rss_fit"] = {"intercept_mb": round(fit[0], 1), "mb_per_mp": round(fit[1], 2)}
        tfit = fit_line([r["megapixels"] for r in ok_sizes], [r["wall_s"]["median"] for r in ok_sizes])
        report["time_fit"] = {"intercept_s": round(tfit[0], 3), "s_per_mp": round(tfit[1], 4)}
    if tiles:
        report["recommended_tile"] = recommend_tile(tiles, args.memory_budget, args.tile_tolerance)
    over = [r for r in ok_sizes if r.get("meets_target") is False]
    if over:
        report["notes"].append("over the memory target: " + ", ".join(
            f"{r['megapixels']:.0f} MP at {r['peak_rss_mb']['median']:.0f} MB (target < {r['target_mb']:.0f})"
            for r in over))
    write_json(args.out, report)
    update_results_md(args.results_md, "scaling", markdown(report))
    if report.get("recommended_tile"):
        say(f"recommended --tile auto default: {report['recommended_tile']['tile']}")
    say(f"wrote {args.out} and the scaling section of {args.results_md}")
    return 0 if all(r["ok"] for r in sizes) and all(r["ok"] for r in tiles) else 1


if __name__ == "__main__":
    sys.exit(main())
