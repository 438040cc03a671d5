"""The converted graph against equivalent ONNX graphs of the same network: same weights, same
interface (input ``packed`` (N, H, W, 4) NHWC, output ``rgb`` (N, 2H, 2W, 3)), timed in
onnxruntime on the CPU with rawdev's session options.

The base graph is what tf2onnx makes of the checkpoint (``--checkpoint``, with the network's
full-resolution tail folded, as ``rawdev convert-weights`` does, but without
``rawdev.convert.rewrite_graph``), or an ONNX file given with ``--model``. The variants apply the
converter's graph passes (rawdev/convert.py) alone and together:

- ``converted``: the base graph as it is;
- ``subpixel+d2s``: every stride-2 ConvTranspose as a sub-pixel Conv (kernel taps re-arranged
  per output phase, 4x the output channels, the activation fused into it) + DepthToSpace;
- ``nhwc-d2s``: every DepthToSpace (the output's, with its NCHW->NHWC Transpose) done as
  channels-last transposes (ConvTranspose kept);
- ``split-concat``: every Concat before a 1x1 Conv as a sum of 1x1 Convs;
- ``subpixel+nhwc-d2s``, ``subpixel+split``: two of the three;
- ``no-shape-hints``: every pass but ``shape_hints`` (the graph's intermediate shapes unwritten,
  so onnxruntime runs the spatial attention's Mul outside its blocked layout);
- ``rawdev``: all passes, the graph ``rawdev convert-weights`` writes;
- ``nchw-interface`` (reference, information only: another interface): the base graph with its
  boundary Transposes removed, input (N, 4, H, W) and output (N, 3, 2H, 2W).

``--also FILE`` adds ONNX files timed as they are (e.g. the shipped model).

Each variant must equal the base graph to ``--tolerance`` (max abs, default 1e-5) on uniform
random inputs at two shapes, or the script stops before timing. Timing: one (1, T, T, 4) tile
(T = ``--tile`` packed samples), ``--warmup`` untimed runs, then ``--repeats`` rounds in which
every variant runs once, in rotated order (slow spells of the machine hit all alike); ratios to
the best are medians of the per-round ratios. The MAC rate counts the NETWORK's multiply-adds
(benchmarks/roofline.py's count of the base graph: the ConvTranspose's kH x kW x Cin x Cout per
input pixel), never the zero taps a sub-pixel Conv adds; the executed MACs (zeros included) are
listed beside them. Peak: cores x 16 fp32 FMA per cycle x the clock, as in roofline.py.

Usage (from the repository root):
    python benchmarks/graph_variants.py --pause-training
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
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
    write_json,
)
from benchmarks.common import REPO  # noqa: E402
from benchmarks.roofline import FMA_PER_CYCLE, count_macs, cpu_mhz, make_session, profile_ops  # noqa: E402
from rawdev.convert import GRAPH_PASSES  # noqa: E402

CHECKPOINT = REPO / "weights" / "checkpoints" / "csanet-res-c32"
SHIPPED = REPO / "rawdev" / "weights" / "csanet-res-c32.onnx"
CHECK_SHAPES = ((1, 64, 64, 4), (2, 40, 72, 4))
REFERENCE = "nchw-interface"
# onnxruntime's worker threads spin-wait for a while after a run; the next variant's session,
# with threads of its own, would share the two cores with them (measured here: 170-200 ms per
# tile back to back against 120-135 ms with 50 ms between calls). rawdev runs one session, so
# every timed call starts after this pause.

# name -> (rewrite_graph passes, description); None: the NCHW-interface reference
VARIANTS: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "converted": ((), "as converted: tf2onnx + fold, no graph rewrite"),
    "subpixel+d2s": (("subpixel",), "ConvTranspose -> sub-pixel Conv + DepthToSpace"),
    "nhwc-d2s": (("nhwc_depth_to_space",), "DepthToSpace (+ output Transpose) as channels-last transposes"),
    "split-concat": (("split_concat",), "Concat + 1x1 Conv -> sum of 1x1 Convs"),
    "subpixel+nhwc-d2s": (("subpixel", "nhwc_depth_to_space"), "sub-pixel Conv, channels-last depth-to-space"),
    "subpixel+split": (("subpixel", "split_concat"), "sub-pixel Conv + DepthToSpace, Concat split"),
    "no-shape-hints": (tuple(p for p in GRAPH_PASSES if p != "shape_hints"),
                       "every pass but shape_hints (the intermediate shapes left unwritten)"),
    "rawdev": (GRAPH_PASSES, "every pass: what rawdev convert-weights writes"),
    REFERENCE: (None, "reference: no boundary Transposes, NCHW input and output (another interface)"),
}


@dataclass
class Variant:
    name: str
    description: str
    path: Path
    nchw: bool = False  # NCHW interface: input and output transposed around the call
    same_as: str | None = None  # identical graph to an earlier variant: not timed again


def _copy(proto):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def base_graph(args, say):
    """The graph the variants start from: ``--model`` as it is, or the checkpoint through tf2onnx."""
    import onnx

    if args.model is not None:
        return onnx.load(str(args.model)), str(args.model)
    from rawdev.convert import keras_to_onnx, load_keras_model

    say(f"converting {args.checkpoint} with tf2onnx (fold, no graph rewrite) ...")
    model, spec = load_keras_model(args.checkpoint)
    return keras_to_onnx(model, spec), f"{args.checkpoint} (tf2onnx, folded, steps {spec.steps})"


def nchw_interface(proto):
    """The graph with its boundary Transposes removed: input (N, C, H, W), output (N, K, sH, sW).
    An input consumer that is neither a Transpose to NCHW nor a Pad followed by one, or an output
    not made by a Transpose to NHWC, gets a Transpose of its own (still exact)."""
    from onnx import helper, numpy_helper

    g = proto.graph
    inp, out = g.input[0].name, g.output[0].name
    inits = {t.name: t for t in g.initializer}
    to_nchw, to_nhwc = [0, 3, 1, 2], [0, 2, 3, 1]

    def perm(node):
        return [list(a.ints) for a in node.attribute if a.name == "perm"][0]

    drop, renames, extra = set(), {}, []
    for node in g.node:
        if inp not in node.input:
            continue
        if node.op_type == "Transpose" and perm(node) == to_nchw:
            drop.add(node.output[0])
            renames[node.output[0]] = inp
            continue
        nexts = [n for n in g.node if node.output[0] in n.input]
        if (node.op_type == "Pad" and node.input[0] == inp and len(node.input) > 1 and node.input[1] in inits
                and len(nexts) == 1 and nexts[0].op_type == "Transpose" and perm(nexts[0]) == to_nchw):
            pads = numpy_helper.to_array(inits[node.input[1]])
            name = node.input[1] + "_nchw"
            g.initializer.append(numpy_helper.from_array(np.concatenate([pads[:4][to_nchw], pads[4:][to_nchw]]), name))
            node.input[1] = name
            drop.add(nexts[0].output[0])
            renames[nexts[0].output[0]] = node.output[0]
            continue
        extra.append(helper.make_node("Transpose", [inp], [inp + "_nhwc"], perm=to_nhwc))
        node.input[:] = [inp + "_nhwc" if i == inp else i for i in node.input]
    last = next(n for n in g.node if out in n.output)
    nodes = extra + [n for n in g.node if n.output[0] not in drop]
    if last.op_type == "Transpose" and perm(last) == to_nhwc:
        nodes.remove(last)
        renames[last.input[0]] = out
    else:
        last.output[:] = [out + "_nhwc" if o == out else o for o in last.output]
        nodes.append(helper.make_node("Transpose", [out + "_nhwc"], [out], perm=to_nchw))
    for node in nodes:  # removed Transposes: their readers read (and the tensor before them is) what they made
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    del g.node[:]
    g.node.extend(nodes)
    for vi in (g.input[0], g.output[0]):
        dims = vi.type.tensor_type.shape.dim
        old = [(d.dim_param, d.dim_value) for d in dims]
        for d, k in zip(dims, to_nchw, strict=True):
            d.Clear()
            if old[k][0]:
                d.dim_param = old[k][0]
            else:
                d.dim_value = old[k][1]
    del g.value_info[:]
    return proto


def build_variants(base, folder: Path, also: list[Path]) -> list[Variant]:
    """Write every variant of ``base`` (and the ``also`` files) to ``folder``; identical graphs
    are marked ``same_as`` the first one."""
    import onnx

    from rawdev.convert import rewrite_graph

    out, seen = [], {}
    for name, (passes, description) in VARIANTS.items():
        proto = _copy(base)
        if passes is None:
            nchw_interface(proto)
        else:
            rewrite_graph(proto, passes)
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
        path = folder / f"{name}.onnx"
        path.write_bytes(data)
        out.append(Variant(name, description, path, nchw=passes is None, same_as=seen.get(data)))
        seen.setdefault(data, name)
    for f in also:
        data = Path(f).read_bytes()
        out.append(Variant(f"file:{Path(f).name}", f"{f} as it is", Path(f), same_as=seen.get(data)))
        seen.setdefault(data, f"file:{Path(f).name}")
    return out


def _call(session, x: np.ndarray, nchw: bool) -> np.ndarray:
    name = session.get_inputs()[0].name
    if nchw:
        return session.run(None, {name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0].transpose(0, 2, 3, 1)
    return session.run(None, {name: x})[0]


def max_differences(variants: list[Variant], threads: int, shapes=CHECK_SHAPES, seed: int = 0) -> dict[str, float]:
    """Largest |variant - converted| over uniform random inputs at ``shapes``."""
    rng = np.random.default_rng(seed)
    inputs = [rng.random(s, dtype=np.float32) for s in shapes]
    sessions = {v.name: make_session(v.path, threads) for v in variants}
    expected = [_call(sessions["converted"], x, False) for x in inputs]
    worst = {}
    for v in variants:
        diffs = []
        for x, e in zip(inputs, expected, strict=True):
            got = _call(sessions[v.name], x, v.nchw)
            diffs.append(float("inf") if got.shape != e.shape else float(np.max(np.abs(got - e))))
        worst[v.name] = max(diffs)
    return worst


def time_variants(variants: list[Variant], x: np.ndarray, threads: int, warmup: int, repeats: int,
                  pauser, settle: float = SETTLE_S) -> dict[str, list[float]]:
    """Seconds per call of each variant: ``repeats`` rounds, every variant once per round in an
    order rotated from round to round, after ``warmup`` calls each; ``settle`` seconds of sleep
    before each call (untimed)."""
    sessions = {v.name: make_session(v.path, threads) for v in variants}
    feeds = {v.name: {sessions[v.name].get_inputs()[0].name:
                      np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if v.nchw else x} for v in variants}
    for v in variants:
        for _ in range(warmup):
            sessions[v.name].run(None, feeds[v.name])
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    names = [v.name for v in variants]
    for r in range(repeats):
        pauser.ensure(1.0 * len(names) + 5, label=f"round {r + 1}")
        for n in names[r % len(names):] + names[: r % len(names)]:
            seconds, _, _, _ = timed_clean(lambda n=n: sessions[n].run(None, feeds[n]), tries(pauser),
                                           before=lambda: time.sleep(settle))
            times[n].append(seconds)
    pauser.resume()
    return times


def timing_of(report: dict, name: str) -> dict:
    """A variant's timing, or that of the identical graph it was not timed apart from."""
    by_name = {v["name"]: v for v in report["variants"]}
    v = by_name[name]
    return v["timing"] if "timing" in v else by_name[v["same_as"]]["timing"]


def markdown(report: dict) -> str:
    s = report["settings"]
    peak = report["peak"]
    lines = ["## Converted graph against equivalent graphs (benchmarks/graph_variants.py)", ""]
    lines += header_lines(report)
    shapes = ", ".join(str(tuple(x)) for x in s["check_shapes"])
    lines += ["", f"Base graph: {report['base']}. Every variant has the base graph's weights; all but the "
                  f"reference take `packed` (N, H, W, 4) and return `rgb` (N, 2H, 2W, 3). Checked against the "
                  f"base graph on uniform random inputs of shapes {shapes} "
                  f"(max abs difference, limit {s['tolerance']:g}). Timing: one {s['tile']}x{s['tile']} packed "
                  f"tile, batch 1, onnxruntime CPU with rawdev's session options ({s['threads_label']} threads), "
                  f"{s['warmup']} warm-up runs, then {s['repeats']} rounds with every variant once per round in "
                  f"rotated order, {s['settle_s']:g} s idle before each timed call (so that the previous "
                  f"session's spinning worker threads are parked); vs best = median over rounds of the time / "
                  f"the best variant's time in the same round. GMAC/s counts the network's "
                  f"{report['network_macs'] / 1e9:.2f} GMAC per tile "
                  f"(roofline.py's count of the base graph), not the zero taps a sub-pixel Conv adds (executed "
                  f"GMAC: what the graph's convolutions compute, zeros included). Peak "
                  f"{peak['fma_per_s'] / 1e9:.1f} GMAC/s ({peak['cores']} cores x {FMA_PER_CYCLE} FMA/cycle x "
                  f"{peak['clock_mhz']:.0f} MHz).", "",
              "| variant | graph | max abs diff | median s / tile | min–max | vs best | GMAC/s (network) "
              "| % of peak | executed GMAC |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for v in report["variants"]:
        t = v.get("timing")
        executed = f"{v['executed_macs'] / 1e9:.2f}" if v.get("executed_macs") else "–"
        if t is None:
            lines.append(f"| {v['name']} | {v['description']} | {v['max_abs_diff']:.1e} | same graph as "
                         f"{v['same_as']} | | | | | {executed} |")
            continue
        sec = t["seconds"]
        lines.append(f"| {'**' + v['name'] + '**' if v['name'] == report['best'] else v['name']} | "
                     f"{v['description']} | {v['max_abs_diff']:.1e} | {sec['median']:.4f} | "
                     f"{sec['min']:.4f}–{sec['max']:.4f} | {t['vs_best']:.3f} | {t['network_macs_per_s'] / 1e9:.1f} | "
                     f"{100 * t['fraction_of_peak']:.1f} | {executed} |")
    ratio = timing_of(report, "rawdev")["vs_best"]
    verdict = "within the 5 % target" if ratio <= 1.05 else "**outside** the 5 % target"
    lines += ["", f"Best equivalent graph (same interface): **{report['best']}**; the graph convert-weights "
                  f"writes (`rawdev`) takes {ratio:.3f}x its time ({verdict})."]
    profiled = [v for v in report["variants"] if v.get("profile")]
    if profiled:
        lines += ["", "Kernel time per op type (onnxruntime profiler, same tile, ms per run; the six largest):", ""]
        for v in profiled:
            p = v["profile"]
            top = ", ".join(f"{r['op']} {1000 * r['seconds_per_run']:.1f}" for r in p["by_op"][:6])
            lines.append(f"- {v['name']} ({1000 * p['kernel_s_per_run']:.0f} ms of kernels): {top}")
    for note in report.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmarks/graph_variants.py", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, default=None, help="base graph: an ONNX file as converted (no rewrites)")
    src.add_argument("--checkpoint", type=Path, default=None,
                     help=f"base graph: this checkpoint through tf2onnx (default {CHECKPOINT.relative_to(REPO)})")
    p.add_argument("--also", nargs="*", type=Path, default=None,
                   help=f"ONNX files timed as they are (default with the default checkpoint: "
                        f"{SHIPPED.relative_to(REPO)})")
    p.add_argument("--tile", type=int, default=512, help="packed samples per side of the timed tile")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds (every variant once per round)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default, all cores)")
    p.add_argument("--settle", type=float, default=SETTLE_S,
                   help="seconds of sleep before each timed call (other sessions' threads stop spinning)")
    p.add_argument("--tolerance", type=float, default=1e-5, help="largest allowed |variant - converted|")
    p.add_argument("--clock-mhz", type=float, default=None, help="override the clock read from /proc/cpuinfo")
    p.add_argument("--cores", type=int, default=None, help="cores in the peak (default: usable cores)")
    p.add_argument("--no-profile", action="store_true", help="skip the per-op-type kernel profile")
    p.add_argument("--keep", type=Path, default=None, help="also write the variant ONNX files to this folder")
    p.add_argument("--note", action="append", default=[], help="a line for the notes (repeatable)")
    add_common_args(p, "graph_variants")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.tile < 4:
        p.error("--repeats must be >= 1 and --tile >= 4")
    if args.model is None and args.checkpoint is None:
        args.checkpoint = CHECKPOINT
        if args.also is None:
            args.also = [SHIPPED]
    args.also = args.also or []
    return args


def main(argv: list[str] | None = None) -> int:
    import onnx

    from rawdev.convert import op_counts

    args = parse_args(argv)
    run = start_timed_run(args)
    say, pauser = run.say, run.pauser
    cores = args.cores or run.machine["usable_cores"] or 1
    mhz = args.clock_mhz or cpu_mhz()
    if mhz is None:
        print("error: no 'cpu MHz' in /proc/cpuinfo; give --clock-mhz", file=sys.stderr)
        return 2
    peak = {"cores": cores, "fma_per_cycle": FMA_PER_CYCLE, "clock_mhz": mhz,
            "clock_source": "--clock-mhz" if args.clock_mhz else "/proc/cpuinfo cpu MHz",
            "fma_per_s": cores * FMA_PER_CYCLE * mhz * 1e6}
    base, base_label = base_graph(args, say)
    threads_label = str(args.threads) if args.threads else f"default ({cores})"
    with tempfile.TemporaryDirectory(prefix="rawdev-graph-variants-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        variants = build_variants(base, folder, args.also)
        network_macs = count_macs(folder / "converted.onnx", args.tile)["macs"]
        diffs = max_differences(variants, args.threads)
        entries = {}
        for v in variants:
            entry = {"name": v.name, "description": v.description, "max_abs_diff": diffs[v.name], "same_as": v.same_as}
            if not v.nchw:
                counted = count_macs(v.path, args.tile)
                entry["executed_macs"] = counted["executed_macs"]
                entry["executed_macs_by_op"] = counted["by_op"]
            entry["ops"] = op_counts(onnx.load(str(v.path)))
            entries[v.name] = entry
            say(f"{v.name}: max |diff| {diffs[v.name]:.2e}" + (f" (same graph as {v.same_as})" if v.same_as else ""))
        bad = {n: d for n, d in diffs.items() if not d <= args.tolerance}
        if bad:
            print("error: variants differ from the converted graph: "
                  + ", ".join(f"{n} {d:.3g}" for n, d in bad.items()), file=sys.stderr)
            return 1
        timed = [v for v in variants if v.same_as is None]
        x = np.random.default_rng(0).random((1, args.tile, args.tile, 4), dtype=np.float32)
        with pauser.session():
            times = time_variants(timed, x, args.threads, args.warmup, args.repeats, pauser, args.settle)
            equivalent = [v.name for v in timed if not v.nchw]
            best = min(equivalent, key=lambda n: statistics.median(times[n]))
            for v in timed:
                med = statistics.median(times[v.name])
                ratios = [a / b for a, b in zip(times[v.name], times[best], strict=True)]
                entries[v.name]["timing"] = {
                    "seconds": summary(times[v.name], 7), "vs_best": round(statistics.median(ratios), 4),
                    "network_macs_per_s": network_macs / med,
                    "fraction_of_peak": network_macs / med / peak["fma_per_s"],
                }
                say(f"{v.name}: {1000 * med:.1f} ms per tile, {statistics.median(ratios):.3f} x best, "
                    f"{network_macs / med / 1e9:.1f} GMAC/s (network)")
                if not args.no_profile:
                    pauser.ensure(30.0, label=f"{v.name} profile")
                    feed = np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if v.nchw else x
                    entries[v.name]["profile"] = profile_ops(v.path, feed, args.threads, args.warmup,
                                                             max(3, args.repeats // 4), Path(tmp))
                    pauser.resume()
    report = {
        **run.head("graph_variants", command_line("graph_variants.py", argv)),
        "settings": {"tile": args.tile, "batch": 1, "repeats": args.repeats, "warmup": args.warmup,
                     "threads": args.threads, "threads_label": threads_label, "tolerance": args.tolerance,
                     "settle_s": args.settle,
                     "check_shapes": [list(s) for s in CHECK_SHAPES], "input": "uniform [0, 1) float32, seed 0"},
        "base": base_label,
        "peak": peak,
        "network_macs": network_macs,
        "best": best,
        "variants": list(entries.values()),
        "notes": list(args.note),
    }
    write_json(args.out, report)
    update_results_md(args.results_md, "graph_variants", markdown(report))
    say(f"best: {best}; wrote {args.out} and the graph_variants section of {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
