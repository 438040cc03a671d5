"""Whole-file speed and peak memory: `rawdev develop` against rawpy, dcraw, dcraw_emu,
rawtherapee-cli and darktable-cli on the same RAW files, plus a 20-file batch.

Every tool runs as its own process, from process start to exit, writing a 16-bit TIFF:

- ``rawdev``: ``rawdev develop FILE -o DIR --overwrite`` (the default model, tile auto, 16-bit
  TIFF, uncompressed as the default is); ``rawdev-deflate``: the same with ``--compression deflate``
  (Adobe Deflate level 1); ``rawdev-overlap``: the default with
  ``RAWDEV_OVERLAP=1`` (blocks rendered and TIFF strips encoded while the network runs on, which
  the default does only where the session leaves a core free);
- ``rawpy``: ``python -c`` reading the file with rawpy, ``postprocess(demosaic_algorithm=AHD,
  output_bps=16, use_camera_wb=True)`` and writing the result with ``tifffile.imwrite``
  (uncompressed), i.e. the same interpreter start, decode and encode costs as rawdev;
- ``dcraw``: ``dcraw -T -6 -w FILE``; ``dcraw_emu``: ``dcraw_emu -T -6 -w FILE`` (LibRaw);
- ``rawtherapee``: ``rawtherapee-cli -t -b16 -Y -o OUT -c FILE`` (its default processing profile);
- ``darktable``: ``darktable-cli FILE OUT --core --configdir DIR --library :memory: --conf
  plugins/imageio/format/tiff/bpp=16``.

Wall time is ``time.perf_counter`` around process start and reap; peak memory is the process's
maximum resident set size from ``os.wait4`` (what ``/usr/bin/time -v`` reports). Each tool runs
once untimed (warm-up: page cache, config folders), then ``--repeats`` rounds; in each round every
tool runs once on every file, in an order rotated from round to round, inside one paused stretch
of the training job. Figures are medians; ratios are the tool's median over rawdev's median on the
same file in the same run. Megapixels are the sensor's visible pixels (= rawdev's output pixels).
Peak memory is the larger of the process's (or any one descendant's) maximum RSS from
``os.wait4`` and the polled sum over its process tree (rawdev decodes in a worker process); see
benchmarks/_measure.py.

The batch part develops ``--batch`` copies of one file (different names) in one ``rawdev develop``
call and compares the time per file with a single-file run and with the stages measured
in-process: ``read_mosaic``, ``develop_mosaic`` (and the onnxruntime session calls it made,
replayed on their own as develop runs them, as many at once: inference alone over the same tiles)
and ``write_image``. If decoding and encoding hid
completely behind inference, a batch file would cost about as much as inference alone.

Usage (from the repository root):
    python benchmarks/speed.py --pause-training
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import (  # noqa: E402
    add_common_args,
    clean_runs,
    command_line,
    debian_version,
    fmt,
    header_lines,
    paired_ratio,
    rawdev_command,
    run_clean,
    run_timed,
    start_timed_run,
    summary,
    timed_clean,
    tries,
    update_results_md,
    write_json,
)
from benchmarks.common import REPO, SHARED, TimedCalls  # noqa: E402
from rawdev import DEFAULT_MODEL  # noqa: E402

DEFAULT_FILES = (SHARED / "samples" / "raw" / "imageio_Blackmagic.dng", REPO / "examples" / "chart_bayer.dng")
RAWDEV_ROWS = ("rawdev", "rawdev-deflate", "rawdev-overlap")
TOOLS = ("rawdev", "rawdev-deflate", "rawdev-overlap", "rawpy", "dcraw", "dcraw_emu", "rawtherapee", "darktable")
BINARIES = {"dcraw": "dcraw", "dcraw_emu": "dcraw_emu", "rawtherapee": "rawtherapee-cli", "darktable": "darktable-cli"}
PACKAGES = {"dcraw": "dcraw", "dcraw_emu": "libraw-bin", "rawtherapee": "rawtherapee", "darktable": "darktable"}

RAWPY_SCRIPT = """
import sys
import rawpy, tifffile
with rawpy.imread(sys.argv[1]) as raw:
    rgb = raw.postprocess(demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD, output_bps=16, use_camera_wb=True)
tifffile.imwrite(sys.argv[2], rgb, photometric="rgb")
"""


@dataclass
class Tool:
    name: str
    description: str
    version: str | None

    def command(self, src: Path, out_dir: Path, args) -> tuple[list[str], Path]:
        """(command, expected output file) for one input; ``out_dir`` is this tool's folder."""
        stem = src.stem
        if self.name in RAWDEV_ROWS:
            cmd = [*rawdev_command(), "develop", str(src), "-o", str(out_dir), "--overwrite", "--model", args.model]
            if args.tile:
                cmd += ["--tile", str(args.tile)]
            if self.name == "rawdev-deflate":
                cmd += ["--compression", "deflate"]
            if self.name == "rawdev-overlap":  # rendering and encoding beside the network, forced
                cmd = ["env", "RAWDEV_OVERLAP=1", *cmd]
            return cmd, out_dir / f"{stem}.tif"
        if self.name == "rawpy":
            out = out_dir / f"{stem}.tif"
            return [sys.executable, "-c", RAWPY_SCRIPT, str(src), str(out)], out
        if self.name in ("dcraw", "dcraw_emu"):
            # Both write next to their input: each gets its own copy of the file in out_dir.
            local = out_dir / src.name
            if not local.exists():
                shutil.copyfile(src, local)
            out = local.with_suffix(".tiff") if self.name == "dcraw" else local.with_name(local.name + ".tiff")
            return [BINARIES[self.name], "-T", "-6", "-w", str(local)], out
        if self.name == "rawtherapee":
            out = out_dir / f"{stem}.tif"
            return ["rawtherapee-cli", "-t", "-b16", "-Y", "-o", str(out), "-c", str(src)], out
        if self.name == "darktable":
            out = out_dir / f"{stem}.tif"
            return ["darktable-cli", str(src), str(out), "--core", "--configdir", str(out_dir / "darktable-config"),
                    "--library", ":memory:", "--conf", "plugins/imageio/format/tiff/bpp=16"], out
        raise ValueError(self.name)


def find_tools(names: list[str], args) -> tuple[list[Tool], dict[str, str]]:
    """The tools that can run here, and why the others cannot."""
    import rawpy

    tools, missing = [], {}
    for name in names:
        if name == "rawdev":
            from importlib import metadata

            tools.append(Tool(name, f"rawdev develop --model {args.model}"
                                    f"{' --tile ' + str(args.tile) if args.tile else ''} (16-bit TIFF, uncompressed)",
                              metadata.version("rawdev")))
        elif name == "rawdev-deflate":
            from importlib import metadata

            tools.append(Tool(name, "the same with --compression deflate (Adobe Deflate level 1, predictor)",
                              metadata.version("rawdev")))
        elif name == "rawdev-overlap":
            from importlib import metadata

            tools.append(Tool(name, "the same with RAWDEV_OVERLAP=1: blocks rendered and TIFF strips encoded "
                                    "beside the network (the default only where a core is left free)",
                              metadata.version("rawdev")))
        elif name == "rawpy":
            tools.append(Tool(name, "rawpy imread + postprocess(AHD, output_bps=16, use_camera_wb) + "
                                    "tifffile.imwrite (uncompressed), in a python subprocess",
                              f"rawpy {rawpy.__version__} / LibRaw {'.'.join(map(str, rawpy.libraw_version))}"))
        else:
            binary = BINARIES[name]
            if shutil.which(binary) is None:
                missing[name] = (f"{binary} not installed (Debian package {PACKAGES[name]}: "
                                 f"apt-get install {PACKAGES[name]})")
                continue
            what = {
                "dcraw": "dcraw -T -6 -w",
                "dcraw_emu": "dcraw_emu -T -6 -w (LibRaw)",
                "rawtherapee": "rawtherapee-cli -t -b16 -Y -o OUT -c FILE",
                "darktable": "darktable-cli FILE OUT --core --library :memory: "
                             "--conf plugins/imageio/format/tiff/bpp=16",
            }[name]
            tools.append(Tool(name, what, debian_version(PACKAGES[name])))
    return tools, missing


def megapixels(path: Path) -> float:
    import rawpy

    with rawpy.imread(str(path)) as raw:
        return raw.sizes.height * raw.sizes.width / 1e6


def failure_reason(run) -> str:
    lines = [ln.strip() for ln in run.stderr_tail.splitlines() if ln.strip()]
    keys = ("fail", "error", "cannot", "unsupported", "not ")
    picked = [i for i, ln in enumerate(lines) if any(k in ln.lower() for k in keys)]
    if picked:
        i = picked[0]
        text = lines[i] + (" " + lines[i + 1] if lines[i].endswith(":") and i + 1 < len(lines) else "")
    else:
        text = (lines or [f"exit code {run.returncode}"])[0]
    text = re.sub(r"void [^,]*, line \d+: ", "", text)  # rawspeed's C++ function names
    return f"exit {run.returncode}: {text[:160]}"


def measure_tools(tools: list[Tool], files: list[Path], work: Path, args, pauser, say) -> dict:
    """Warm-up plus ``repeats`` rotated rounds; returns {file: {tool: {...}}}."""
    out_dirs = {t.name: work / "out" / t.name for t in tools}
    for d in out_dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {f.name: {t.name: {"runs": [], "failures": []} for t in tools} for f in files}
    estimate = 0.0
    if args.no_warmup:
        estimate = 60.0
    else:
        say("warm-up (untimed, training not paused)")
    for f in files if not args.no_warmup else []:
        for t in tools:
            cmd, out = t.command(f, out_dirs[t.name], args)
            run = run_timed(cmd, timeout=args.timeout)
            ok = run.ok and out.exists() and out.stat().st_size > 0
            results[f.name][t.name]["warmup"] = run.to_dict() | {"ok": ok}
            estimate += run.wall_s
            if ok:
                out.unlink()
            say(f"  {f.name} {t.name}: {run.wall_s:.2f} s{'' if ok else '  FAILED ' + failure_reason(run)}")
    for r in range(args.repeats):
        order = tools[r % len(tools):] + tools[: r % len(tools)]
        pauser.ensure(estimate, label=f"round {r + 1}")
        for f in files:
            for t in order:
                cmd, out = t.command(f, out_dirs[t.name], args)
                run = run_clean(cmd, tries(pauser), timeout=args.timeout, before=lambda: pauser.ensure(10.0))
                entry = results[f.name][t.name]
                if run.ok and out.exists() and out.stat().st_size > 0:
                    entry["runs"].append(run.to_dict() | {"round": r})
                    out.unlink()
                else:
                    entry["failures"].append(run.to_dict() | {"reason": failure_reason(run)})
        rows = []
        for f in files:
            last = {t.name: results[f.name][t.name]["runs"][-1]["wall_s"] for t in tools
                    if results[f.name][t.name]["runs"]}
            rows.append(f"{f.stem[:18]}: " + ", ".join(f"{k} {v:.2f}" for k, v in last.items()))
        say(f"round {r + 1}/{args.repeats}: " + "; ".join(rows))
    pauser.resume()
    return results


def summarize_tools(results: dict, files: list[Path], mps: dict[str, float]) -> dict:
    out = {}
    for f in files:
        per = {}
        base = None
        rd = results[f.name].get("rawdev")
        if rd and rd["runs"]:
            base = statistics.median(r["wall_s"] for r in clean_runs(rd["runs"])[0])
        for name, entry in results[f.name].items():
            runs, dropped = clean_runs(entry["runs"])
            if not runs:
                per[name] = {"ok": False, "reason": (entry["failures"] or [{}])[0].get("reason", "no run"),
                             "failed_runs": len(entry["failures"])}
                continue
            wall = summary([r["wall_s"] for r in runs])
            rss = summary([r["peak_mb"] for r in runs], 1)
            cpu = summary([r["user_s"] + r["sys_s"] for r in runs])
            per[name] = {
                "ok": True,
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_mb": rss,
                "largest_process_rss_mb": summary([r["max_rss_mb"] for r in runs], 1),
                "processes": max(r["tree_processes"] for r in runs),
                "megapixels_per_s": round(mps[f.name] / wall["median"], 4),
                "ratio_to_rawdev": round(wall["median"] / base, 3) if base else None,
                "ratio_to_rawdev_paired": paired_ratio(runs, clean_runs(rd["runs"])[0]) if base else None,
                "failed_runs": len(entry["failures"]),
                "disturbed_runs_dropped": dropped,
            }
        out[f.name] = {"megapixels": round(mps[f.name], 6), "tools": per}
    return out


def in_process_stages(path: Path, args, pauser, say) -> dict:
    """read_mosaic, develop_mosaic (and its session calls alone) and write_image, in this process."""
    from rawdev.develop import DevelopOptions, develop_mosaic
    from rawdev.model import resolve_model
    from rawdev.output import COMPRESSIONS, TiffStrips, apply_orientation, write_image
    from rawdev.raw import read_mosaic
    from rawdev.session import open_session

    compression = COMPRESSIONS["tiff"][0]  # what develop writes by default
    session = open_session(resolve_model(args.model), "auto", 0)
    options = DevelopOptions(tile=args.tile)
    timer = TimedCalls(session.session, keep_inputs=True)
    session.session = timer
    stages: dict[str, list[float]] = {"read_mosaic": [], "develop_mosaic": [], "inference": [],
                                      "develop_other": [], "write_image": [], "write_image_deflate": [], "sum": [],
                                      "overlapped_develop_write": [], "overlapped_last_write": []}
    tiles = None
    with tempfile.TemporaryDirectory(prefix="rawdev-speed-") as tmp:
        target = Path(tmp) / "out.tif"
        develop_mosaic(read_mosaic(path), session, options)  # warm-up: first-run allocations
        disturbed = 0
        for r in range(args.repeats):
            def once():
                t0 = time.perf_counter()
                mosaic = read_mosaic(path)
                t1 = time.perf_counter()
                timer.clear()
                developed = develop_mosaic(mosaic, session, options, overlap=False)
                t2 = time.perf_counter()
                upright = apply_orientation(developed.image, mosaic.info.orientation or 1)
                write_image(target, upright, mosaic.info, fmt="tiff", compression=compression)
                t3 = time.perf_counter()
                write_image(target, upright, mosaic.info, fmt="tiff", compression="deflate")
                deflate = time.perf_counter() - t3
                infer = timer.replay(session.concurrency)  # the same tiles, as many at once
                timer.clear()
                # The same with rendering and strip encoding beside the network (what develop does).
                strips = TiffStrips(compression) if (mosaic.info.orientation or 1) == 1 else None
                t4 = time.perf_counter()
                overlapped = develop_mosaic(mosaic, session, options, on_rows=strips.rows_ready if strips else None)
                t5 = time.perf_counter()
                write_image(target, apply_orientation(overlapped.image, mosaic.info.orientation or 1), mosaic.info,
                            fmt="tiff", compression=compression, strips=strips)
                t6 = time.perf_counter()
                return t0, t1, t2, t3, infer, developed, t6 - t4, t6 - t5, deflate

            _, foreign, attempts, (t0, t1, t2, t3, infer, developed, both, last, deflate) = timed_clean(
                once, tries(pauser), before=lambda r=r: pauser.ensure(15.0, label=f"stages {r + 1}"))
            disturbed += attempts == 3 and foreign > 0.1
            tiles = (developed.tiles, list(developed.tile_shape))
            stages["read_mosaic"].append(t1 - t0)
            stages["develop_mosaic"].append(t2 - t1)
            stages["inference"].append(infer)
            stages["develop_other"].append(t2 - t1 - infer)
            stages["write_image"].append(t3 - t2)
            stages["write_image_deflate"].append(deflate)
            stages["sum"].append(t3 - t0)
            stages["overlapped_develop_write"].append(both)
            stages["overlapped_last_write"].append(last)
        pauser.resume()
    say("in-process stages (median s): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in stages.items()))
    return {"stages_s": {k: summary(v) for k, v in stages.items()}, "tiles": tiles[0], "tile_shape": tiles[1],
            "providers": list(session.providers), "disturbed_repeats": int(disturbed)}


def measure_batch(path: Path, work: Path, args, pauser, say) -> dict:
    folder = work / "batch_in"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(args.batch):
        shutil.copyfile(path, folder / f"{path.stem}_{i:02d}{path.suffix}")
    out_dir = work / "batch_out"
    cmd = [*rawdev_command(), "develop", str(folder), "-o", str(out_dir), "--overwrite", "--model", args.model]
    if args.tile:
        cmd += ["--tile", str(args.tile)]
    one_process = [*cmd, "--jobs", "1"]  # the other layout: one session with every core's thread
    runs, singles, ones = [], [], []
    single_cmd = [*rawdev_command(), "develop", str(folder / f"{path.stem}_00{path.suffix}"), "-o",
                  str(work / "single_out"), "--overwrite", "--model", args.model]
    if args.tile:
        single_cmd += ["--tile", str(args.tile)]
    expected = None
    for r in range(args.batch_repeats):
        # The single-file run goes in the same stretch as the batch: the same conditions.
        pauser.ensure(expected or 0.0, label=f"batch {r + 1}")
        single = run_clean(single_cmd, tries(pauser), timeout=args.timeout, before=lambda: pauser.ensure(10.0))
        layouts = [(cmd, runs), (one_process, ones)]
        for command, into in layouts if r % 2 == 0 else layouts[::-1]:
            run = run_clean(command, tries(pauser, 2), timeout=args.timeout * args.batch,
                            before=lambda e=expected: pauser.ensure(e or 0.0))
            produced = len(list(out_dir.glob("*.tif")))
            if not run.ok or produced != args.batch:
                pauser.resume()
                return {"ok": False, "reason": f"{failure_reason(run)}; {produced} of {args.batch} outputs"}
            into.append(run)
            shutil.rmtree(out_dir)
        pauser.resume()
        singles.append(single)
        expected = runs[-1].wall_s + ones[-1].wall_s + single.wall_s
        say(f"batch {r + 1}/{args.batch_repeats}: {runs[-1].wall_s:.1f} s for {args.batch} files "
            f"({runs[-1].wall_s / args.batch:.2f} s/file; --jobs 1: {ones[-1].wall_s / args.batch:.2f} s/file; "
            f"single file {single.wall_s:.2f} s), peak {runs[-1].peak_mb:.0f} MB")
    shutil.rmtree(folder)
    dicts, dropped = clean_runs([r.to_dict() for r in runs])
    kept = [r for r in runs if r.to_dict() in dicts]
    singles_kept, _ = clean_runs([s.to_dict() for s in singles])
    wall = summary([r.wall_s for r in kept])
    ones_kept, _ = clean_runs([r.to_dict() for r in ones])
    return {
        "one_process_per_file_s": summary([r["wall_s"] / args.batch for r in ones_kept]),
        "one_process_peak_rss_mb": summary([r.peak_mb for r in ones], 1),
        "layout_ratio": paired_ratio([{"round": i, "wall_s": o.wall_s} for i, o in enumerate(ones)],
                                     [{"round": i, "wall_s": r.wall_s} for i, r in enumerate(runs)]),
        "ok": True,
        "files": args.batch,
        "command": " ".join(cmd[len(rawdev_command()):]),
        "wall_s": wall,
        "per_file_s": summary([r.wall_s / args.batch for r in kept]),
        "single_file_s": summary([s["wall_s"] for s in singles_kept]),
        "cpu_s": summary([r.user_s + r.sys_s for r in kept]),
        "peak_rss_mb": summary([r.peak_mb for r in runs], 1),
        "single_peak_rss_mb": summary([s.peak_mb for s in singles], 1),
        "processes": max(r.tree_processes for r in runs),
        "disturbed_runs_dropped": dropped,
        "runs": [r.to_dict() for r in runs],
        "single_runs": [s.to_dict() for s in singles],
    }


def markdown(report: dict) -> str:
    lines = ["## Speed: whole files, rawdev against other RAW developers (benchmarks/speed.py)", ""]
    lines += header_lines(report)
    lines.append("")
    lines.append("Every tool is a separate process writing a 16-bit TIFF (process start to exit); "
                 f"median of {report['settings']['repeats']} rounds after one untimed warm-up; ratio = median over "
                 "rounds of the tool's wall time / rawdev's in the same round (above 1: slower than rawdev); "
                 "peak RSS: the larger of wait4's "
                 "ru_maxrss and the polled sum over the process tree (processes: how many the tree had). Runs during "
                 "which other processes used more than 5 % of the CPU are retried (up to 3 attempts) and left out of "
                 "the median when at least 3 undisturbed runs remain (n: runs in the median).")
    for name, text in report["tools_missing"].items():
        lines.append(f"- left out: {name}: {text}")
    lines.append("")
    for fname, entry in report["summary"].items():
        lines.append(f"**{fname}** ({entry['megapixels']:.2f} MP)")
        lines.append("")
        lines.append("| tool | version | median wall s | n | min–max s | ratio to rawdev | MP/s | CPU s "
                     "| peak RSS MB | processes |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        versions = report["tools"]
        for name, t in entry["tools"].items():
            ver = versions.get(name, {}).get("version") or ""
            if not t["ok"]:
                lines.append(f"| {name} | {ver} | fails: {t['reason']} | | | | | | | |")
                continue
            w = t["wall_s"]
            lines.append(f"| {name} | {ver} | {w['median']:.2f} | {w['n']} | {w['min']:.2f}–{w['max']:.2f} | "
                         f"{fmt(t['ratio_to_rawdev_paired'])} | {t['megapixels_per_s']:.2f} | "
                         f"{t['cpu_s']['median']:.2f} | "
                         f"{t['peak_rss_mb']['median']:.0f} | {t['processes']} |")
        lines.append("")
    stages = report.get("stages")
    batch = report.get("batch")
    if stages or batch:
        lines.append(f"**Batch and stages** ({report['settings']['batch_file']})")
        lines.append("")
    if stages:
        s = stages["stages_s"]
        lines.append(f"In-process stages (median of {s['sum']['n']}; {stages['tiles']} tiles of "
                     f"{stages['tile_shape'][0]}x{stages['tile_shape'][1]} packed samples): "
                     f"read_mosaic {s['read_mosaic']['median']:.2f} s, "
                     f"develop_mosaic {s['develop_mosaic']['median']:.2f} s "
                     f"(onnxruntime inference alone over the same tiles {s['inference']['median']:.2f} s; "
                     f"tiling, blending and rendering add {s['develop_other']['median']:.2f} s to it), "
                     f"write_image {s['write_image']['median']:.2f} s"
                     + (f" (with --compression deflate {s['write_image_deflate']['median']:.2f} s)"
                        if "write_image_deflate" in s else "")
                     + f"; sum {s['sum']['median']:.2f} s.")
        if "overlapped_develop_write" in s:
            both, last = s["overlapped_develop_write"]["median"], s["overlapped_last_write"]["median"]
            serial = s["develop_mosaic"]["median"] + s["write_image"]["median"]
            lines.append(f"With rendering (and a compressed TIFF's strip encoding) beside the network "
                         f"(RAWDEV_OVERLAP=1; develop's default only where the sessions leave a core free): "
                         f"develop + write {both:.2f} s against {serial:.2f} s serial ({both / serial:.2f}x), of "
                         f"which {last:.2f} s after the last tile (the last strips and the file's I/O).")
        lines.append("")
    if batch and batch.get("ok"):
        per = batch["per_file_s"]["median"]
        single = batch["single_file_s"]["median"]
        lines.append("| measure | s per file | vs batch |")
        lines.append("|---|---:|---:|")
        lines.append(f"| batch of {batch['files']} in one `rawdev develop` (wall / {batch['files']}, median of "
                     f"{batch['wall_s']['n']}) | {per:.2f} | 1.00 |")
        if "one_process_per_file_s" in batch:
            one = batch["one_process_per_file_s"]["median"]
            lines.append(f"| the same batch with `--jobs 1` (one process, one session with every core's thread; "
                         f"peak {batch['one_process_peak_rss_mb']['median']:.0f} MB) | {one:.2f} | {one / per:.2f} |")
        lines.append(f"| single-file `rawdev develop` (same stretches) | {single:.2f} | {single / per:.2f} |")
        if stages:
            s = stages["stages_s"]
            for key, label in (("sum", "in-process read + develop + write, serial"),
                               ("develop_mosaic", "in-process develop_mosaic"),
                               ("inference", "inference alone (the same session calls replayed, "
                                             "as many at once as develop runs them)")):
                v = s[key]["median"]
                lines.append(f"| {label} | {v:.2f} | {v / per:.2f} |")
        lines.append("")
        lines.append(f"Batch peak RSS {batch['peak_rss_mb']['median']:.0f} MB "
                     f"(single file {batch['single_peak_rss_mb']['median']:.0f} MB); batch CPU time "
                     f"{batch['cpu_s']['median']:.1f} s.")
        if report.get("notes"):
            lines.append("")
            lines += [f"- {n}" for n in report["notes"]]
    elif batch:
        lines.append(f"Batch failed: {batch.get('reason')}")
    return "\n".join(lines) + "\n"


def batch_notes(report: dict) -> list[str]:
    """Plain-words reading of the batch figures."""
    batch, stages = report.get("batch"), report.get("stages")
    if not (batch and batch.get("ok") and stages):
        return []
    s = stages["stages_s"]
    per = batch["per_file_s"]["median"]
    infer, serial = s["inference"]["median"], s["sum"]["median"]
    hidden = (serial - per) / max(serial - infer, 1e-9)
    return [
        f"A batch file costs {per:.2f} s against {infer:.2f} s of inference alone and {serial:.2f} s for the "
        f"stages run one after another: {100 * min(max(hidden, 0), 1):.0f} % of the non-inference work "
        "(decode, tiling, blending, rendering, encoding) is hidden by the overlap.",
        f"A single-file run costs {batch['single_file_s']['median']:.2f} s: "
        f"{batch['single_file_s']['median'] - serial:.2f} s more than the in-process stages "
        "(interpreter start, imports, session creation).",
    ]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmarks/speed.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--files", nargs="+", type=Path, default=None,
                   help="RAW files (default: the shared Blackmagic DNG and examples/chart_bayer.dng)")
    p.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--tile", type=int, default=None, help="rawdev --tile (default: auto)")
    p.add_argument("--batch", type=int, default=20, help="copies in the batch run (0: no batch part)")
    p.add_argument("--batch-repeats", type=int, default=3)
    p.add_argument("--batch-file", type=Path, default=None, help="file copied for the batch (default: the first)")
    p.add_argument("--no-stages", action="store_true", help="skip the in-process stage timing")
    p.add_argument("--no-warmup", action="store_true", help="no untimed warm-up run of each tool (quick tests)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before a tool run is killed")
    p.add_argument("--workdir", type=Path, default=None)
    add_common_args(p, "speed")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.batch < 0 or args.batch_repeats < 1:
        p.error("--repeats and --batch-repeats must be >= 1, --batch >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = start_timed_run(args)
    say, pauser = run.say, run.pauser
    files = args.files
    notes = []
    if files is None:
        files = [f for f in DEFAULT_FILES if f.exists()]
        for f in DEFAULT_FILES:
            if not f.exists():
                notes.append(f"{f} is absent (shared samples folder not here): left out")
                say("note: " + notes[-1])
    missing_files = [f for f in files if not f.exists()]
    if missing_files or not files:
        print(f"error: no such file: {', '.join(map(str, missing_files)) or 'no input files'}", file=sys.stderr)
        return 2
    tools, missing = find_tools(args.tools, args)
    for name, why in missing.items():
        say(f"left out {name}: {why}")
    with pauser.session(), tempfile.TemporaryDirectory(prefix="rawdev-speed-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = work / "in"
        inputs.mkdir(exist_ok=True)
        local = []
        for f in files:  # every tool reads the same local copy
            dst = inputs / f.name
            shutil.copyfile(f, dst)
            local.append(dst)
        mps = {f.name: megapixels(f) for f in local}
        results = measure_tools(tools, local, work, args, pauser, say)
        batch_src = args.batch_file or files[0]
        stages = batch = None
        if "rawdev" in args.tools and not args.no_stages:
            stages = in_process_stages(batch_src, args, pauser, say)
        if args.batch and "rawdev" in args.tools:
            batch = measure_batch(batch_src, work, args, pauser, say)
    report = {
        **run.head("speed", command_line("speed.py", argv)),
        "settings": {"files": [str(f) for f in files], "repeats": args.repeats, "model": args.model,
                     "tile": args.tile or "auto", "batch": args.batch, "batch_repeats": args.batch_repeats,
                     "batch_file": Path(batch_src).name},
        "tools": {t.name: {"description": t.description, "version": t.version} for t in tools},
        "tools_missing": missing,
        "summary": summarize_tools(results, local, mps),
        "stages": stages,
        "batch": batch,
        "runs": results,
    }
    report["notes"] = notes + batch_notes(report)
    write_json(args.out, report)
    update_results_md(args.results_md, "speed", markdown(report))
    for fname, entry in report["summary"].items():
        say(f"{fname} ({entry['megapixels']:.2f} MP):")
        for name, t in entry["tools"].items():
            if t["ok"]:
                say(f"  {name:12s} {t['wall_s']['median']:7.2f} s  x{fmt(t['ratio_to_rawdev'])}  "
                    f"{t['megapixels_per_s']:.2f} MP/s  {t['peak_rss_mb']['median']:.0f} MB")
            else:
                say(f"  {name:12s} fails: {t['reason']}")
    say(f"wrote {args.out} and the speed section of {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
