"""MACs per output megapixel of each shipped model, the MAC rate onnxruntime reaches, and the
fraction of the CPU's fp32 multiply-add peak; where the time goes, per operator type.

MACs are counted from the ONNX graph itself: the input is fixed to (1, T, T, 4) (T = ``--tile``
packed samples), ``onnx.shape_inference`` gives every tensor's shape, and

- Conv: output pixels x kH x kW x Cin/group x Cout (= output pixels x the weight's element count);
- ConvTranspose: input pixels x kH x kW x Cin x Cout/group (= input pixels x the weight's size);
- with a constant weight, only its non-zero taps count: a rewrite that runs structural zeros (the
  sub-pixel form of a transposed convolution has 7 of 16 taps per output phase at zero) does not
  do more of the network's work; those MACs are reported apart as executed MACs;
- MatMul/Gemm: M x K x N; everything elementwise (ReLU, sigmoid, Mul, Add, pooling) is ignored.

Output megapixels are (2T)^2 / 1e6 (scale 2: one packed sample is 2x2 output pixels).

Inference: an onnxruntime session built like rawdev's (``rawdev.session.open_session``: all graph
optimizations, CPU provider, intra-op threads = all cores unless ``--threads``), one (1, T, T, 4)
tile of uniform [0, 1) data, ``--warmup`` untimed runs, then the median of ``--repeats`` runs, each
after ``--settle`` seconds of idle (the previous session's threads stop spinning). All
(model, threads) pairs run once per round, in rotated order, so that the machine's slow spells
(a cloud VM's neighbours) hit them alike; ratios between models are paired within rounds.

Peak: cores x 16 fp32 FMA per cycle (two 256-bit FMA units x 8 lanes, AVX2 + FMA) x the clock
from /proc/cpuinfo "cpu MHz" (the first core's; override with ``--clock-mhz``). One FMA is one
multiply-add, i.e. one MAC, so the fraction is MAC/s over that peak.

Per operator type: a second session with ``SessionOptions.enable_profiling``; the profile's
"Node" events (kernel times, after graph optimization and fusion) are summed per op type over the
timed runs.

Usage (from the repository root):
    python benchmarks/roofline.py --pause-training
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import (  # noqa: E402
    SETTLE_S,
    add_common_args,
    command_line,
    header_lines,
    start_timed_run,
    summary,
    timed_clean,
    tries,
    update_results_md,
    with_notes,
    write_json,
)
from benchmarks.common import REPO  # noqa: E402

WEIGHTS = REPO / "rawdev" / "weights"
FMA_PER_CYCLE = 16  # fp32 FMAs per core per cycle: 2 x 256-bit FMA units x 8 lanes


def cpu_mhz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == "cpu MHz":
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def _dims(value_info) -> list[int] | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return dims


def count_macs(path: Path, tile: int, batch: int = 1) -> dict:
    """MACs of one (batch, tile, tile, C) input through the model at ``path``, per op type and node."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {init.name for init in graph.initializer}]
    if len(inputs) != 1:
        raise ValueError(f"{path.name}: expected one input, got {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    channels = dims[3].dim_value if len(dims) == 4 and dims[3].HasField("dim_value") else 4
    for d, v in zip(dims, (batch, tile, tile, channels), strict=True):
        d.ClearField("dim_param")
        d.dim_value = v
    for out in graph.output:  # let inference fill in the output shape
        for d in out.type.tensor_type.shape.dim:
            d.ClearField("dim_param")
            d.ClearField("dim_value")
    inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        d = _dims(vi)
        if d is not None:
            shapes[vi.name] = d
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # Constant nodes carrying weights
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    arr = numpy_helper.to_array(a.t)
                    weights[node.output[0]] = arr.shape
                    consts[node.output[0]] = arr
    per_node, per_type = [], defaultdict(int)
    missing = []
    executed = 0

    def taps(name: str, shape: tuple) -> tuple[int, int]:
        """(non-zero, all) weight elements of a Conv/ConvTranspose weight."""
        arr = consts.get(name)
        return (int(np.count_nonzero(arr)) if arr is not None else int(np.prod(shape))), int(np.prod(shape))

    for node in graph.node:
        macs = None
        if node.op_type in ("Conv", "ConvTranspose"):
            w = weights.get(node.input[1]) or tuple(shapes.get(node.input[1], ()))
            # Conv: per output pixel; ConvTranspose: per input pixel (x Cin x Cout/g x kH kW)
            at = shapes.get(node.output[0] if node.op_type == "Conv" else node.input[0])
            if w and at:
                useful, every = taps(node.input[1], w)
                pixels = int(np.prod(at[2:])) * at[0]
                macs = pixels * useful
                executed += pixels * every - macs
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                trans_a = node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
                k = a[0] if trans_a else a[-1]
                macs = int(np.prod(out)) * k
        else:
            continue
        if macs is None:
            missing.append(node.name or node.output[0])
            continue
        per_node.append({"name": node.name, "op": node.op_type, "macs": macs})
        per_type[node.op_type] += macs
    total = sum(per_type.values())
    out_shape = shapes.get(graph.output[0].name)
    out_pixels = int(np.prod(out_shape[1:3])) * batch if out_shape else (2 * tile) ** 2 * batch
    params = int(sum(np.prod(s) for n, s in weights.items()
                     if len(s) >= 1 and n in consts and consts[n].dtype == np.float32))
    return {"tile": tile, "batch": batch, "output_shape": out_shape, "macs": total, "executed_macs": total + executed,
            "macs_per_output_mp": total / (out_pixels / 1e6), "by_op": dict(per_type), "nodes": per_node,
            "params": params, "uncounted": missing}


def make_session(path: Path, threads: int, profile_prefix: str | None = None):
    """A session like rawdev's open_session (same options), optionally with profiling."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return session


def tile_sweep(path: Path, tiles: list[int], threads: int, repeats: int, pauser, batch_tile: int) -> list[dict]:
    """Inference time per output megapixel at each tile size (one session, every shape warmed up
    first; rounds over the sizes, ratios to ``batch_tile`` paired within a round)."""
    session = make_session(path, threads)
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(1)
    planes = session.get_inputs()[0].shape[3]
    inputs = {t: rng.uniform(0, 1, (1, t, t, planes)).astype(np.float32) for t in tiles}
    for t in tiles:  # onnxruntime plans each new shape once
        session.run(None, {name: inputs[t]})
    times: dict[int, list[float]] = {t: [] for t in tiles}
    for r in range(repeats):
        pauser.ensure(sum((2 * t) ** 2 for t in tiles) / 1e6 * 1.0 + 5, label=f"tile sweep {r + 1}")
        order = tiles[r % len(tiles):] + tiles[: r % len(tiles)]
        for t in order:
            seconds, _, _, _ = timed_clean(lambda t=t: session.run(None, {name: inputs[t]}), tries(pauser))
            times[t].append(seconds)
    pauser.resume()
    rows = []
    for t in tiles:
        per_mp = [s / ((2 * t) ** 2 / 1e6) for s in times[t]]
        row = {"tile": t, "seconds": summary(times[t], 6), "seconds_per_output_mp": summary(per_mp, 5)}
        if batch_tile in times:
            ratios = [a / (b * (2 * t) ** 2 / (2 * batch_tile) ** 2) for a, b in zip(times[t], times[batch_tile],
                                                                                      strict=True)]
            row[f"per_mp_vs_{batch_tile}"] = round(statistics.median(ratios), 4)
        rows.append(row)
    return rows


def profile_ops(path: Path, x: np.ndarray, threads: int, warmup: int, repeats: int, folder: Path) -> dict:
    """Per-op-type kernel time from onnxruntime's profiler over ``repeats`` runs (after warm-up)."""
    session = make_session(path, threads, str(folder / "ort_profile"))
    name = session.get_inputs()[0].name
    for _ in range(warmup):
        session.run(None, {name: x})
    t0 = time.perf_counter()
    for _ in range(repeats):
        session.run(None, {name: x})
    wall = (time.perf_counter() - t0) / repeats
    profile_file = session.end_profiling()
    events = json.loads(Path(profile_file).read_text())
    os.unlink(profile_file)
    # Only the timed runs: the last `repeats` model_run events bound them.
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    start = runs[-repeats]["ts"] if len(runs) >= repeats else 0
    per_type: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") != "Node" or e["ts"] < start or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        op = e.get("args", {}).get("op_name", "?")
        per_type[op] += e["dur"] / 1e6 / repeats
        count[op] += 1
    total = sum(per_type.values())
    rows = sorted(({"op": op, "seconds_per_run": round(s, 5), "share": round(s / total, 4) if total else None,
                    "nodes_per_run": count[op] // repeats} for op, s in per_type.items()),
                  key=lambda r: -r["seconds_per_run"])
    return {"wall_s_per_run": round(wall, 5), "kernel_s_per_run": round(total, 5), "by_op": rows}


def markdown(report: dict) -> str:
    lines = ["## Roofline: MACs, MAC/s and share of the CPU's fp32 peak (benchmarks/roofline.py)", ""]
    lines += header_lines(report)
    peak = report["peak"]
    lines += ["", f"Peak: {peak['cores']} cores x {FMA_PER_CYCLE} fp32 FMA/cycle x {peak['clock_mhz']:.0f} MHz "
                  f"({peak['clock_source']}) = **{peak['fma_per_s'] / 1e9:.1f} GMAC/s**. "
                  f"Inference: one {report['settings']['tile']}x{report['settings']['tile']} packed tile, batch 1, "
                  f"median of {report['settings']['repeats']} runs after {report['settings']['warmup']} warm-up runs "
                  "(all model/thread pairs interleaved in rounds), session options as rawdev's.", ""]
    first = report["models"][0]["name"]
    lines.append(f"| model | params | GMAC / output MP | threads | median s / tile | min–max | time vs {first} "
                 "| GMAC/s | % of peak | output MP/s |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m in report["models"]:
        for t in m["timings"]:
            s = t["seconds"]
            vs = t.get(f"time_vs_{first}", 1.0)
            lines.append(f"| {m['name']} | {m['macs']['params']:,} | {m['macs']['macs_per_output_mp'] / 1e9:.2f} | "
                         f"{t['threads_label']} | {s['median']:.3f} | {s['min']:.3f}–{s['max']:.3f} | {vs:.2f} | "
                         f"{t['macs_per_s'] / 1e9:.1f} | {100 * t['fraction_of_peak']:.1f} | "
                         f"{t['output_mp_per_s']:.2f} |")
    for m in report["models"]:
        extra = m["macs"].get("executed_macs", m["macs"]["macs"]) - m["macs"]["macs"]
        lines += ["", f"**{m['name']}**: MACs by op type (of {m['macs']['macs'] / 1e9:.2f} GMAC per tile"
                  + (f"; {extra / 1e9:.2f} GMAC more are run on zero weight taps and not counted" if extra else "")
                  + "): "
                  + ", ".join(f"{op} {v / m['macs']['macs']:.1%}" for op, v in sorted(m["macs"]["by_op"].items(),
                                                                                    key=lambda kv: -kv[1])) + "."]
        sweep = m.get("tile_sweep")
        if sweep:
            key = f"per_mp_vs_{report['settings']['tile']}"
            lines += ["", f"Inference alone against tile size ({m['name']}, one tile per call, rounds over the sizes; "
                          f"vs {report['settings']['tile']}: time per output MP over that of tile "
                          f"{report['settings']['tile']} in the same round):", "",
                      "| tile (packed) | output px | median s / tile | s / output MP | vs " +
                      f"{report['settings']['tile']} |", "|---:|---:|---:|---:|---:|"]
            for r in sweep:
                lines.append(f"| {r['tile']} | {2 * r['tile']}x{2 * r['tile']} | {r['seconds']['median']:.3f} | "
                             f"{r['seconds_per_output_mp']['median']:.3f} | {r.get(key, float('nan')):.2f} |")
        prof = m.get("profile")
        if prof:
            lines += ["", f"Kernel time per op type (onnxruntime profiler, optimized graph, {prof['threads_label']} "
                          f"threads; {prof['kernel_s_per_run'] * 1000:.0f} ms of kernels in a "
                          f"{prof['wall_s_per_run'] * 1000:.0f} ms run):", "",
                      "| op type | ms / run | share | nodes |", "|---|---:|---:|---:|"]
            for r in prof["by_op"]:
                lines.append(f"| {r['op']} | {r['seconds_per_run'] * 1000:.1f} | {100 * r['share']:.1f} % | "
                             f"{r['nodes_per_run']} |")
    return with_notes(lines, report)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmarks/roofline.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", type=Path, default=None,
                   help="ONNX files (default: every rawdev/weights/*.onnx)")
    p.add_argument("--tile", type=int, default=512, help="packed samples per side of the timed tile")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", nargs="+", type=int, default=[0, 1],
                   help="intra-op thread counts to time (0 = onnxruntime's default, all cores)")
    p.add_argument("--clock-mhz", type=float, default=None, help="override the clock read from /proc/cpuinfo")
    p.add_argument("--cores", type=int, default=None, help="cores in the peak (default: usable cores)")
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help="seconds of sleep before each timed call (other sessions' threads stop spinning)")
    p.add_argument("--sweep", nargs="*", type=int, default=[128, 256, 384, 512, 768, 1024],
                   help="tile sizes for the inference-time-per-megapixel sweep (none: skip)")
    p.add_argument("--note", action="append", default=[], help="a line for the notes (repeatable)")
    add_common_args(p, "roofline")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.tile < 4:
        p.error("--repeats must be >= 1 and --tile >= 4")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = start_timed_run(args)
    say, pauser = run.say, run.pauser
    models = args.model or sorted(WEIGHTS.glob("*.onnx"))
    if not models:
        print(f"error: no ONNX models in {WEIGHTS}", file=sys.stderr)
        return 2
    cores = args.cores or run.machine["usable_cores"] or os.cpu_count() or 1
    mhz = args.clock_mhz or cpu_mhz()
    source = "--clock-mhz" if args.clock_mhz else "/proc/cpuinfo cpu MHz"
    if mhz is None:
        print("error: no 'cpu MHz' in /proc/cpuinfo; give --clock-mhz", file=sys.stderr)
        return 2
    peak = {"cores": cores, "fma_per_cycle": FMA_PER_CYCLE, "clock_mhz": mhz, "clock_source": source,
            "fma_per_s": cores * FMA_PER_CYCLE * mhz * 1e6}
    rng = np.random.default_rng(0)
    out_mp = (2 * args.tile) ** 2 / 1e6
    results = []
    with pauser.session(), tempfile.TemporaryDirectory(prefix="rawdev-roofline-") as tmp:
        counted = {}
        for path in models:
            macs = count_macs(path, args.tile)
            counted[path] = macs
            say(f"{path.name}: {macs['macs'] / 1e9:.2f} GMAC per {args.tile}x{args.tile} tile = "
                f"{macs['macs_per_output_mp'] / 1e9:.2f} GMAC per output MP ({macs['params']:,} parameters)")
            if macs["uncounted"]:
                say(f"  uncounted nodes (no shape): {macs['uncounted']}")
        # Every (model, threads) pair runs once per round, in an order rotated from round to round,
        # so that a slow spell of the machine hits all of them alike.
        combos = [(path, threads) for path in models for threads in args.threads]
        sessions = {c: make_session(*c) for c in combos}
        name = {c: sessions[c].get_inputs()[0].name for c in combos}
        # each model's own input planes: 4 packed, or 8 with the noise sigma planes
        inputs = {c: rng.uniform(0, 1, (1, args.tile, args.tile, sessions[c].get_inputs()[0].shape[3]))
                  .astype(np.float32) for c in combos}
        for c in combos:
            for _ in range(args.warmup):
                sessions[c].run(None, {name[c]: inputs[c]})
        times: dict = {c: [] for c in combos}
        disturbed = {c: 0 for c in combos}
        for r in range(args.repeats):
            pauser.ensure(5.0 * len(combos), label=f"round {r + 1}")
            for c in combos[r % len(combos):] + combos[: r % len(combos)]:
                seconds, foreign, used, _ = timed_clean(lambda c=c: sessions[c].run(None, {name[c]: inputs[c]}),
                                                        tries(pauser), before=lambda: time.sleep(args.settle))
                disturbed[c] += used == tries(pauser) and foreign > 0.1
                times[c].append(seconds)
        pauser.resume()
        sessions.clear()
        for path in models:
            macs = counted[path]
            timings = []
            for threads in args.threads:
                c = (path, threads)
                label = str(threads) if threads else f"default ({cores})"
                med = statistics.median(times[c])
                rate = macs["macs"] / med
                timing = {"threads": threads, "threads_label": label, "seconds": summary(times[c], 7),
                          "disturbed_runs": int(disturbed[c]), "macs_per_s": rate,
                          "fraction_of_peak": rate / peak["fma_per_s"], "output_mp_per_s": out_mp / med}
                first = (models[0], threads)
                if path != models[0]:
                    timing[f"time_vs_{models[0].stem}"] = round(statistics.median(
                        a / b for a, b in zip(times[c], times[first], strict=True)), 4)
                timings.append(timing)
                say(f"{path.name} threads {label}: {med * 1000:.1f} ms per tile, {rate / 1e9:.1f} GMAC/s, "
                    f"{100 * rate / peak['fma_per_s']:.1f} % of peak")
            entry = {"name": path.stem, "path": str(path), "macs": {k: v for k, v in macs.items() if k != "nodes"},
                     "nodes": macs["nodes"], "timings": timings}
            if args.sweep:
                entry["tile_sweep"] = tile_sweep(path, args.sweep, args.threads[0], args.repeats, pauser, args.tile)
                say("  tile sweep (s per output MP): " + ", ".join(
                    f"{r['tile']}: {r['seconds_per_output_mp']['median']:.3f}" for r in entry["tile_sweep"]))
            if not args.no_profile:
                threads = args.threads[0]
                pauser.ensure(30.0, label=f"{path.name} profile")
                prof = profile_ops(path, inputs[(path, args.threads[0])], threads, args.warmup, args.repeats, Path(tmp))
                pauser.resume()
                prof["threads_label"] = str(threads) if threads else f"default ({cores})"
                entry["profile"] = prof
                top = ", ".join(f"{r['op']} {100 * r['share']:.0f} %" for r in prof["by_op"][:4])
                say(f"  profile: {top}")
            results.append(entry)
    report = {
        **run.head("roofline", command_line("roofline.py", argv)),
        "settings": {"tile": args.tile, "batch": 1, "repeats": args.repeats, "warmup": args.warmup,
                     "threads": args.threads, "settle_s": args.settle,
                     "input": "uniform [0, 1) float32, seed 0"},
        "peak": peak,
        "models": results,
        "notes": list(args.note),
    }
    write_json(args.out, report)
    update_results_md(args.results_md, "roofline", markdown(report))
    say(f"wrote {args.out} and the roofline section of {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
