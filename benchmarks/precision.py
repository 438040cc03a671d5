"""int8 against fp32: quality and speed of a model's int8 sibling (``rawdev quantize``), in one run.

Quality (the quality bar: at most 0.1 dB PSNR lost at each noise level, at most 0.1 more mean CIEDE2000
on the chart):
- kodak24 (never trained on) unprocessed to 12-bit DNGs exactly as benchmarks/quality.py makes them
  (``quality.write_capture``, the same seeds), at each noise level, developed in-process by both
  models (``read_mosaic`` + ``develop_mosaic``, look neutral, exposure 0, camera white balance, CPU),
  sRGB PSNR / SSIM against the photographs (``quality.score``, 8-pixel border); also PSNR over the
  dark pixels alone (the photograph's luma below 0.25 sRGB: linear below 0.05);
- ``dark``: the same photographs captured 4 stops under (brightness 1/16, low-noise sensor) and
  developed with ``--exposure 4``: what an underexposed shot looks like after brightening, where
  an absolute error of the network's linear output is 16 times larger in the image;
- the example chart (examples/chart_bayer.dng) through benchmarks/colour_chart.py's own measure:
  mean and largest CIEDE2000 over the 24 patches.

Speed (CPU provider, sessions as ``rawdev develop`` opens them, all cores unless ``--threads``):
- one real tile: (1, 256, 256, 8), the centre of imageio_Blackmagic.dng as the pipeline packs it
  (levels, white balance, noise sigma planes); each repeat is the median of ``--calls`` runs;
- the whole 9 MP file: ``develop_mosaic`` of the decoded mosaic (tiling, inference, blending,
  rendering; decoding and writing excluded).
fp32 and int8 alternate within each of ``--repeats`` rounds (the order rotates), after a warm-up;
the figures are medians and the ratios are paired within rounds. With ``--pause-training`` the
background training job is stopped (benchmarks/_pause.py) for short stretches while timing only.

``--sensitivity``: per node, the PSNR lost when that node alone is quantized (with its ReLU), and
per role (rawdev.quantize.node_roles) when the role alone is, on held-out cbsd68 photographs
(data/val: never trained on, and not the kodak24 benchmark) unprocessed at the three noise levels
and scored against their clean linear targets (sRGB-encoded).

``--variant ROLES[:ACTIVATION]`` (repeatable) adds int8 models quantized here with ``rawdev quantize
--roles ROLES [--activation ACTIVATION]`` to every table: what quantizing more of the network would
buy and cost. ``--calibration-study``: the validation-set PSNR of models calibrated otherwise
(MinMax, int8 activations, a smaller tile, fewer samples, another seed).

    python benchmarks/precision.py --pause-training
    python benchmarks/precision.py --fp32 csanet-nm-c32 --int8 /tmp/m-int8.onnx --variant attention,trunk
    python benchmarks/precision.py --sensitivity --skip-speed --limit 4

Writes benchmarks/results/precision.json and the precision section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import colour_chart, quality  # noqa: E402
from benchmarks._measure import (  # noqa: E402
    SETTLE_S,
    CpuWatch,
    add_common_args,
    command_line,
    header_lines,
    start_timed_run,
    summary,
    update_results_md,
    with_notes,
    write_json,
)
from benchmarks._pause import Pauser  # noqa: E402
from benchmarks.common import REPO, SHARED  # noqa: E402

RESULTS_KEY = "precision"
SPEED_FILE = SHARED / "samples" / "raw" / "imageio_Blackmagic.dng"
CHART = REPO / "examples" / "chart_bayer.dng"
VAL_IMAGES = SHARED / "data" / "val" / "cbsd68"
TRAIN_DATA = SHARED / "data" / "train"
DARK_STOPS = 4  # the dark row: captured this many stops under, developed with --exposure DARK_STOPS
DARK_LUMA = 0.25  # sRGB luma below which a pixel counts as dark (linear 0.05)
QUALITY_BAR_DB = 0.1
QUALITY_BAR_DE = 0.1
TILE = 256
MAX_STRETCH_S = 100.0  # each pause of the training job (the brief: under 2 minutes)
STRETCH_BUDGET_S = 80.0


# --------------------------------------------------------------------------- models


def resolve_models(args) -> dict[str, Path]:
    """label -> ONNX path: fp32, int8 and the variants (quantized into ``args.work``)."""
    from rawdev.model import int8_sibling, resolve_model

    models = {"fp32": resolve_model(args.fp32)}
    int8 = args.int8 or int8_sibling(args.fp32)
    if int8 is None:
        raise SystemExit(f"error: {args.fp32} has no int8 sibling in the registry; give --int8 PATH")
    models["int8"] = resolve_model(int8)
    for spec in args.variant:
        from rawdev.quantize import quantize_model

        roles, _, activation = spec.partition(":")
        path = args.work / f"int8-{spec.replace(',', '+').replace(':', '-')}.onnx"
        args.say(f"quantizing {args.fp32} with roles {roles} ({activation or 'uint8'} activations) -> {path}")
        quantize_model(args.fp32, path, roles=tuple(roles.split(",")), data=[args.train_data], check=False,
                       activation=activation or "uint8")
        models[f"int8 [{spec}]"] = path
    return models


def open_sessions(models: dict[str, Path], threads: int) -> dict:
    from rawdev.session import open_session

    return {label: open_session(path, "cpu", threads) for label, path in models.items()}


# --------------------------------------------------------------------------- quality


def dark_psnr(image16: np.ndarray, reference: np.ndarray, border: int) -> float | None:
    """PSNR over the pixels whose reference luma is below DARK_LUMA (None when there are none)."""
    from rawdev.metrics import luma, psnr_from_mse

    out = image16.astype(np.float32) / np.float32(65535.0)
    b = border
    if b:
        out, reference = out[b:-b, b:-b], reference[b:-b, b:-b]
    mask = luma(reference) < DARK_LUMA
    if not mask.any():
        return None
    return psnr_from_mse(float(np.mean((out[mask] - reference[mask]) ** 2, dtype=np.float64)))


def kodak_quality(sessions: dict, args) -> dict:
    """Per image, level and model: PSNR, SSIM and dark-pixel PSNR."""
    from rawdev.develop import DevelopOptions, develop_mosaic
    from rawdev.raw import read_mosaic

    images = quality.find_images(args.images, args.limit)
    levels = [*args.levels, *(["dark"] if not args.no_dark else [])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rawdev-precision-") as tmp:
        for i, path in enumerate(images):
            srgb = quality.load_photograph(path, None)
            seed = quality.image_seed(path.stem, args.seed)
            for level in levels:
                dng = Path(tmp) / f"{path.stem}_{level}.dng"
                if level == "dark":
                    quality.write_capture(srgb, seed, "low", dng, brightness=2.0 ** -DARK_STOPS)
                    options = DevelopOptions(look="neutral", exposure=str(DARK_STOPS), wb="camera")
                else:
                    quality.write_capture(srgb, seed, level, dng)
                    options = DevelopOptions(look="neutral", exposure="0", wb="camera")
                mosaic = read_mosaic(dng)
                for label, session in sessions.items():
                    image = develop_mosaic(mosaic, session, options).image
                    p, s = quality.score(image, srgb, args.border)
                    rows.append({"image": path.stem, "level": level, "model": label, "psnr": round(p, 4),
                                 "ssim": round(s, 5), "dark_psnr": _round(dark_psnr(image, srgb, args.border), 4)})
                dng.unlink()
            args.say(f"kodak {i + 1}/{len(images)} {path.stem}: " + ", ".join(
                f"{r['level']} {r['model']} {r['psnr']:.2f}" for r in rows[-len(levels) * len(sessions):]))
    return {"images": [p.stem for p in images], "levels": levels, "rows": rows,
            "summary": summarize(rows, list(sessions), levels)}


def _round(v, digits):
    return None if v is None else round(v, digits)


def summarize(rows: list[dict], models: list[str], levels: list[str]) -> dict:
    """Per level and model: means, and the paired change against fp32 (mean, worst image)."""
    out: dict = {}
    for level in levels:
        base = {r["image"]: r for r in rows if r["level"] == level and r["model"] == "fp32"}
        out[level] = {}
        for m in models:
            sel = [r for r in rows if r["level"] == level and r["model"] == m]
            if not sel:
                continue
            entry = {"psnr": round(float(np.mean([r["psnr"] for r in sel])), 3),
                     "ssim": round(float(np.mean([r["ssim"] for r in sel])), 4),
                     "images": len(sel)}
            darks = [r["dark_psnr"] for r in sel if r["dark_psnr"] is not None]
            entry["dark_psnr"] = round(float(np.mean(darks)), 3) if darks else None
            if m != "fp32":
                d = [r["psnr"] - base[r["image"]]["psnr"] for r in sel]
                dd = [r["dark_psnr"] - base[r["image"]]["dark_psnr"] for r in sel
                      if r["dark_psnr"] is not None and base[r["image"]]["dark_psnr"] is not None]
                entry["delta_psnr"] = round(float(np.mean(d)), 3)
                entry["worst_delta_psnr"] = round(float(min(d)), 3)
                entry["delta_ssim"] = round(float(np.mean([r["ssim"] - base[r["image"]]["ssim"] for r in sel])), 5)
                entry["delta_dark_psnr"] = round(float(np.mean(dd)), 3) if dd else None
            out[level][m] = entry
    return out


def chart_quality(models: dict[str, Path], args) -> dict:
    """Mean and largest CIEDE2000 of the chart's 24 patches per model (colour_chart.measure)."""
    patches_doc = json.loads((CHART.parent / colour_chart.PATCHES_JSON).read_text())
    learned = quality.rawdev_methods([str(p) for p in models.values()], "cpu", args.threads, (None,))
    out = {}
    with tempfile.TemporaryDirectory(prefix="rawdev-precision-chart-") as tmp:
        entry = colour_chart.evaluate(CHART, patches_doc, learned, [], Path(tmp), lambda s: None)
    for label, row in zip(models, entry["methods"], strict=True):
        out[label] = {k: row[k] for k in ("mean", "max", "max_patch", "mean_neutrals", "mean_chromatic")}
    for label in out:
        if label != "fp32":
            out[label]["delta_mean"] = round(out[label]["mean"] - out["fp32"]["mean"], 3)
    return out


# --------------------------------------------------------------------------- speed


def real_tile(session, path: Path, size: int = TILE) -> np.ndarray:
    """(1, size, size, planes) from the centre of ``path`` as the pipeline prepares it."""
    from rawdev.develop import sensor_noise
    from rawdev.normalize import prepare
    from rawdev.raw import read_mosaic

    mosaic = read_mosaic(path)
    c = session.contract
    noise = sensor_noise(mosaic) if c.noise_input == "sigma-planes" else None
    source = prepare(mosaic, c, "camera", "bin", noise, 1.0, headroom=True).source
    h, w = source.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(source[y : y + size, x : x + size][None], np.float32)


def timed_rounds(labels: list[str], fn, repeats: int, pauser: Pauser, expected_s: float, label: str) -> dict:
    """``fn(label)`` for every label in every round (order rotated from round to round); seconds per
    label, foreign CPU per run, and the ratio to the first label paired within rounds."""
    times = {m: [] for m in labels}
    foreign = {m: [] for m in labels}
    for r in range(repeats):
        pauser.ensure(expected_s * len(labels), label=f"{label} round {r + 1}")
        for m in labels[r % len(labels):] + labels[: r % len(labels)]:
            time.sleep(SETTLE_S)
            with CpuWatch() as w:
                seconds = fn(m)
            times[m].append(seconds)
            foreign[m].append(round(w.foreign_cpu_s, 3))
    pauser.resume()
    base = labels[0]
    out = {}
    for m in labels:
        out[m] = {"seconds": summary(times[m], 5), "foreign_cpu_s": foreign[m]}
        if m != base:
            out[m]["time_vs_fp32"] = round(statistics.median(a / b for a, b in zip(times[m], times[base])), 4)
            out[m]["speedup_vs_fp32"] = round(1.0 / out[m]["time_vs_fp32"], 3)
    return out


def measure_speed(sessions: dict, args, pauser: Pauser) -> dict:
    from rawdev.develop import DevelopOptions, develop_mosaic
    from rawdev.raw import read_mosaic

    labels = list(sessions)
    tile = real_tile(sessions["fp32"], args.speed_file)
    mosaic = read_mosaic(args.speed_file)
    for s in sessions.values():  # warm-up: first-run allocations, kernel selection
        for _ in range(3):
            s(tile)
        develop_mosaic(mosaic, s, DevelopOptions())

    def tile_once(m: str) -> float:
        calls = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            sessions[m](tile)
            calls.append(time.perf_counter() - t0)
        return statistics.median(calls)

    tiles = {}

    def file_once(m: str) -> float:
        t0 = time.perf_counter()
        developed = develop_mosaic(mosaic, sessions[m], DevelopOptions())
        tiles[m] = developed.tiles
        return time.perf_counter() - t0

    args.say(f"speed: tile {tile.shape}, {args.repeats} rounds of {args.calls} calls")
    tile_result = timed_rounds(labels, tile_once, args.repeats, pauser, 0.1 * args.calls, "tile")
    args.say(f"speed: {args.speed_file.name} ({mosaic.data.size / 1e6:.1f} MP), {args.repeats} rounds")
    file_result = timed_rounds(labels, file_once, args.repeats, pauser, 6.0, "file")
    return {"tile": {"shape": list(tile.shape), "calls_per_repeat": args.calls, "models": tile_result},
            "file": {"path": str(args.speed_file), "megapixels": round(mosaic.data.size / 1e6, 2),
                     "tiles": tiles.get("fp32"), "stage": "develop_mosaic (decoding and writing excluded)",
                     "models": file_result}}


# --------------------------------------------------------------------------- sensitivity


def val_set(limit: int, seed: int = 0) -> dict:
    """cbsd68 photographs unprocessed at each noise level, and ``dark`` (low noise, DARK_STOPS under):
    level -> (inputs, clean targets, the gain that brightens output and target before scoring)."""
    from rawdev.noise import read_level
    from rawdev.train.synth import NOISE_LEVELS, RGGB, Unprocessor, load_photographs, network_input

    images = load_photographs([VAL_IMAGES])[:limit]
    out = {}
    settings = [(level, shot, 1.0) for level, shot in NOISE_LEVELS.items()]
    settings.append(("dark", NOISE_LEVELS["low"], 2.0 ** -DARK_STOPS))
    for level, shot, brightness in settings:
        xs, targets = [], []
        for i, img in enumerate(images):
            img = img[: img.shape[0] // 4 * 4, : img.shape[1] // 4 * 4].astype(np.float32) / 255
            cap = Unprocessor(seed + i).capture(img, RGGB, shot=shot, read=float(read_level(shot)), bits=12,
                                                black_fraction=1 / 16, brightness=brightness)
            xs.append(network_input(cap.raw, cap.black, cap.white, cap.wb_gains, RGGB, (cap.shot, cap.read))[None])
            targets.append(np.clip(cap.linear_cam, 0.0, 1.0))
        out[level] = (xs, targets, 1.0 / brightness)
    return out


def val_psnr(model: Path | bytes, data: dict) -> dict[str, float]:
    """Mean sRGB-encoded PSNR against the clean targets, per level (both brightened by the level's gain)."""
    from rawdev.color import srgb_encode
    from rawdev.metrics import psnr_from_mse
    from rawdev.quantize import _session

    s = _session(model)
    name = s.get_inputs()[0].name
    out = {}
    for level, (xs, targets, gain) in data.items():
        ps = []
        for x, t in zip(xs, targets):
            y = s.run(None, {name: x})[0][0]
            err = srgb_encode(np.clip(gain * y, 0, 1)) - srgb_encode(np.clip(gain * t, 0, 1))
            ps.append(psnr_from_mse(float(np.mean(err**2))))
        out[level] = float(np.mean(ps))
    return out


def sensitivity(args) -> dict:
    """PSNR lost on the validation set when one node, or one role, alone is quantized."""
    import onnx

    from rawdev import quantize as q
    from rawdev.model import read_contract, resolve_model

    fp32 = resolve_model(args.fp32)
    data = val_set(args.val_limit)
    base = val_psnr(fp32, data)
    contract = read_contract(fp32)
    photos = q.pick_photographs([args.train_data], q.DEFAULT_SAMPLES, TILE, q.DEFAULT_SEED)
    calibration = q.calibration_inputs(contract, photos, q.DEFAULT_SAMPLES, TILE, q.DEFAULT_SEED)
    with tempfile.TemporaryDirectory(prefix="rawdev-sensitivity-") as tmp:
        work = Path(tmp)
        q.preprocess(fp32, work / "p.onnx")
        proto = onnx.load(str(work / "p.onnx"))
        q._name_nodes(proto)
        roles = q.node_roles(proto)
        ops = {n.name: n.op_type for n in proto.graph.node}
        relu_after = {}
        producers = {o: n.name for n in proto.graph.node for o in n.output}
        for n in proto.graph.node:
            if n.op_type == "Relu" and n.input[0] in producers:
                relu_after[producers[n.input[0]]] = n.name
        cache = work / "ranges.json"

        def loss(only=None, role_set=None) -> dict:
            out = work / "one.onnx"
            q.quantize_model(fp32, out, calibration=calibration, calibration_cache=cache, check=False,
                             only=only, roles=role_set or q.DEFAULT_ROLES)
            got = val_psnr(out, data)
            return {lv: round(got[lv] - base[lv], 3) for lv in base}

        nodes = []
        for name, role in roles.items():
            if ops[name] in q.LAYOUT_OPS or ops[name] == "Relu":
                continue
            only = [name] + ([relu_after[name]] if name in relu_after else [])
            d = loss(only=only)
            nodes.append({"node": name, "op": ops[name], "role": role, "delta_psnr": d})
            args.say(f"sensitivity {role:9s} {ops[name]:17s} {name}: "
                     + ", ".join(f"{k} {v:+.3f}" for k, v in d.items()))
        by_role = {}
        for role_set in [(r,) for r in q.ROLES] + [("attention", "trunk"), q.ROLES]:
            by_role["+".join(role_set)] = loss(role_set=role_set)
            args.say(f"sensitivity roles {'+'.join(role_set)}: {by_role['+'.join(role_set)]}")
    return {"data": f"{VAL_IMAGES} (first {args.val_limit}), unprocessed at each level (12-bit, black 1/16, "
                    "brightness 1), scored in sRGB against the clean linear target",
            "fp32_psnr": {k: round(v, 3) for k, v in base.items()}, "nodes": nodes, "roles": by_role,
            "calibration": f"{q.DEFAULT_SAMPLES} tiles of {TILE}, seed {q.DEFAULT_SEED}, {q.DEFAULT_METHOD}"}


STUDY = {  # calibration settings against the defaults (rawdev quantize's), per set of roles
    "defaults": {},
    "minmax calibration": {"method": "minmax"},
    "int8 activations": {"activation": "int8"},
    "tile 128": {"tile": 128},
    "16 samples": {"samples": 16},
    "seed 1": {"seed": 1},
}


def calibration_study(args) -> dict:
    """PSNR change on the validation set of int8 models calibrated otherwise than the defaults."""
    from rawdev.model import resolve_model
    from rawdev.quantize import DEFAULT_ROLES, quantize_model

    fp32 = resolve_model(args.fp32)
    data = val_set(args.val_limit)
    base = val_psnr(fp32, data)
    out = {}
    with tempfile.TemporaryDirectory(prefix="rawdev-study-") as tmp:
        for roles in (DEFAULT_ROLES, ("attention", "trunk")):
            for name, kw in STUDY.items():
                path = Path(tmp) / "m.onnx"
                quantize_model(fp32, path, data=[args.train_data], check=False, roles=roles, **kw)
                got = val_psnr(path, data)
                key = f"{'+'.join(roles)}: {name}"
                out[key] = {lv: round(got[lv] - base[lv], 3) for lv in base}
                args.say(f"calibration study {key}: {out[key]}")
    return {"fp32_psnr": {k: round(v, 3) for k, v in base.items()}, "configs": out}


# --------------------------------------------------------------------------- report


def lscpu() -> dict:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Model name", "Flags", "CPU(s)", "Vendor ID", "CPU family", "Model"):
            fields[key.strip()] = value.strip()
    return fields


def verdict(report: dict) -> dict:
    """Whether the int8 model is within the quality bar, faster here, and what auto should do."""
    from rawdev.precision import INT8_FLAGS, fast_int8

    q = report.get("quality", {}).get("summary", {})
    levels = [lv for lv in q if lv != "dark"]
    within = bool(levels) and all(q[lv]["int8"]["delta_psnr"] >= -QUALITY_BAR_DB for lv in levels)
    chart = report.get("chart", {}).get("int8")
    if chart is not None:
        within = within and chart["delta_mean"] <= QUALITY_BAR_DE
    speed = report.get("speed")
    faster = None
    if speed:
        faster = (speed["tile"]["models"]["int8"]["time_vs_fp32"] < 1.0
                  and speed["file"]["models"]["int8"]["time_vs_fp32"] < 1.0)
    flags = report["machine"]["cpu_flags"]
    return {"within_quality_bar": within, "faster_here": faster,
            "cpu_int8_flags": sorted(set(flags) & set(INT8_FLAGS)), "cpu_has_vnni_or_amx": fast_int8(flags),
            "faster_within_bar": bool(within and faster and fast_int8(flags))}


def markdown(report: dict) -> str:
    lines = ["## Precision: int8 against fp32 (benchmarks/precision.py)", "", *header_lines(report)]
    cpu = report.get("lscpu", {})
    v = report["verdict"]
    lines.append(f"- CPU: {cpu.get('Model name', report['machine']['cpu_model'])}; int8 dot-product flags: "
                 f"{', '.join(v['cpu_int8_flags']) or 'none'} (all flags in the JSON)")
    m = report["models"]
    lines.append(f"- fp32: `{m['fp32']['path']}` (sha256 {m['fp32']['sha256'][:12]}); int8: `{m['int8']['path']}` "
                 f"(sha256 {m['int8']['sha256'][:12]}, {m['int8']['quantized_nodes']} nodes quantized)")
    labels = list(m)
    q = report.get("quality")
    if q:
        lines += ["", f"Quality: kodak24 ({len(q['images'])} images), sRGB PSNR / SSIM, and PSNR over the dark pixels "
                  f"(luma < {DARK_LUMA}); `dark`: captured {DARK_STOPS} stops under at low noise, developed with "
                  f"`--exposure {DARK_STOPS}`. Change against fp32: mean over images (worst image).", ""]
        head = "| level | " + " | ".join(labels) + " | " + " | ".join(f"{lb} change" for lb in labels[1:]) + " |"
        lines += [head, "|---" * (1 + 2 * len(labels) - 1) + "|"]
        for level, per in q["summary"].items():
            cells = [f"{per[lb]['psnr']:.2f} / {per[lb]['ssim']:.4f} (darks {per[lb]['dark_psnr']:.2f})"
                     if per[lb].get("dark_psnr") is not None else f"{per[lb]['psnr']:.2f} / {per[lb]['ssim']:.4f}"
                     for lb in labels]
            changes = [f"{per[lb]['delta_psnr']:+.3f} dB ({per[lb]['worst_delta_psnr']:+.3f}); darks "
                       f"{per[lb]['delta_dark_psnr']:+.3f} dB" if per[lb].get("delta_dark_psnr") is not None
                       else f"{per[lb]['delta_psnr']:+.3f} dB ({per[lb]['worst_delta_psnr']:+.3f})"
                       for lb in labels[1:]]
            lines.append(f"| {level} | " + " | ".join(cells + changes) + " |")
    c = report.get("chart")
    if c:
        lines += ["", "Example chart (examples/chart_bayer.dng, benchmarks/colour_chart.py's measure): mean / largest "
                  "CIEDE2000 of the 24 patches: " + "; ".join(
                      f"{lb} {c[lb]['mean']:.3f} / {c[lb]['max']:.3f}"
                      + (f" ({c[lb]['delta_mean']:+.3f})" if "delta_mean" in c[lb] else "") for lb in labels) + "."]
    s = report.get("speed")
    if s:
        lines += ["", f"Speed, CPU provider, {report['settings']['threads_label']} threads: medians of "
                  f"{report['settings']['repeats']} rounds, the models alternated in each (time ratios paired "
                  "within rounds).", "",
                  "| model | tile (1x256x256x8) ms | min-max | file s | min-max | time vs fp32 (tile / file) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for lb in labels:
            t, f = s["tile"]["models"][lb], s["file"]["models"][lb]
            ratio = (f"{t['time_vs_fp32']:.3f} / {f['time_vs_fp32']:.3f}" if "time_vs_fp32" in t else "1 / 1")
            lines.append(f"| {lb} | {1000 * t['seconds']['median']:.1f} | {1000 * t['seconds']['min']:.1f}-"
                         f"{1000 * t['seconds']['max']:.1f} | {f['seconds']['median']:.2f} | {f['seconds']['min']:.2f}-"
                         f"{f['seconds']['max']:.2f} | {ratio} |")
        lines.append("")
        lines.append(f"File: {Path(s['file']['path']).name}, {s['file']['megapixels']} MP, {s['file']['tiles']} tiles, "
                     f"{s['file']['stage']}.")
    sens = report.get("sensitivity")
    if sens:
        lines += ["", "Sensitivity (PSNR change on held-out cbsd68 when only that part is quantized; fp32 "
                  + ", ".join(f"{k} {v:.2f} dB" for k, v in sens["fp32_psnr"].items()) + "):", "",
                  "| quantized | low | medium | high | dark |", "|---|---:|---:|---:|---:|"]
        for name, d in sens["roles"].items():
            lines.append(f"| roles {name} | {d['low']:+.3f} | {d['medium']:+.3f} | {d['high']:+.3f} | "
                         f"{d['dark']:+.3f} |")
        for n in sorted(sens["nodes"], key=lambda n: n["delta_psnr"]["low"]):
            d = n["delta_psnr"]
            short = n["node"].split("/", 1)[1] if "/" in n["node"] else n["node"]  # without the network's scope
            lines.append(f"| {n['role']}: {n['op']} `{short}` | "
                         f"{d['low']:+.3f} | {d['medium']:+.3f} | {d['high']:+.3f} | {d['dark']:+.3f} |")
    study = report.get("calibration_study")
    if study:
        lines += ["", "Calibration (PSNR change on held-out cbsd68 against fp32; defaults: 64 tiles of 256 packed "
                  "samples, seed 0, percentile 99.99, uint8 activations):", "",
                  "| roles: calibration | low | medium | high | dark |", "|---|---:|---:|---:|---:|"]
        for name, d in study["configs"].items():
            lines.append(f"| {name} | {d['low']:+.3f} | {d['medium']:+.3f} | {d['high']:+.3f} | {d['dark']:+.3f} |")
    lines += ["", f"Verdict: within the quality bar (0.1 dB at every noise level, 0.1 CIEDE2000 on the chart): "
              f"**{'yes' if v['within_quality_bar'] else 'no'}**; faster than fp32 here (tile and file): "
              f"**{ {True: 'yes', False: 'no', None: 'not measured'}[v['faster_here']] }**; so `--precision auto` "
              f"{'chooses int8 on this CPU' if v['faster_within_bar'] else 'keeps fp32'}."]
    return with_notes(lines, report)


def parse_args(argv):
    from rawdev import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="benchmarks/precision.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--fp32", default=DEFAULT_MODEL, help="fp32 model: registry name or path")
    p.add_argument("--int8", default=None, help="int8 model (default: the registry's int8 sibling of --fp32)")
    p.add_argument("--variant", action="append", default=[], metavar="ROLES",
                   help="also measure an int8 model quantized here with these roles and activation type "
                        "(e.g. attention,trunk or attention,trunk:int8)")
    p.add_argument("--images", type=Path, default=quality.DEFAULT_IMAGES)
    p.add_argument("--limit", type=int, default=None, help="first N kodak images (the figures need all 24)")
    p.add_argument("--levels", nargs="+", choices=("low", "medium", "high"), default=["low", "medium", "high"])
    p.add_argument("--no-dark", action="store_true", help="leave out the underexposed row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--border", type=int, default=quality.BORDER)
    p.add_argument("--speed-file", type=Path, default=SPEED_FILE)
    p.add_argument("--repeats", type=int, default=7, help="timed rounds (at least 5)")
    p.add_argument("--calls", type=int, default=5, help="tile runs per round (their median is the round's)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores)")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--sensitivity", action="store_true", help="per-node and per-role sensitivity on cbsd68")
    p.add_argument("--calibration-study", action="store_true",
                   help="int8 models calibrated otherwise (method, activation type, tile, samples, seed) on cbsd68")
    p.add_argument("--val-limit", type=int, default=12, help="cbsd68 photographs for --sensitivity and the study")
    p.add_argument("--train-data", type=Path, default=TRAIN_DATA, help="calibration photographs (--variant, "
                   "--sensitivity)")
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--from-json", action="store_true", help="run nothing: rewrite the section from --out")
    add_common_args(p, "precision")
    a = p.parse_args(argv)
    if a.repeats < 5:
        p.error("--repeats: at least 5")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        if not args.out.is_file():
            print(f"error: {args.out} does not exist; run the benchmark first", file=sys.stderr)
            return 2
        update_results_md(args.results_md, RESULTS_KEY, markdown(json.loads(args.out.read_text())))
        return 0
    run = start_timed_run(args)
    args.say = run.say
    # Short stretches: each pause of the training job ends within MAX_STRETCH_S.
    pauser = Pauser(enabled=args.pause_training, gap=args.gap, say=run.say, max_stretch=MAX_STRETCH_S,
                    budget=STRETCH_BUDGET_S)
    run.pauser = pauser
    if not args.skip_quality and not args.images.is_dir():
        print(f"error: {args.images} is absent (the shared data folder); use --skip-quality", file=sys.stderr)
        return 2
    if not args.skip_speed and not args.speed_file.is_file():
        print(f"error: {args.speed_file} is absent; give --speed-file or --skip-speed", file=sys.stderr)
        return 2
    from rawdev.model import file_sha256, read_contract

    with tempfile.TemporaryDirectory(prefix="rawdev-precision-models-") as work:
        args.work = Path(work)
        models = resolve_models(args)
        info = {}
        for label, path in models.items():
            import onnx

            from rawdev.quantize import quantized_nodes

            c = read_contract(path)
            proto = onnx.load(str(path))
            info[label] = {"path": str(path), "sha256": file_sha256(path), "precision": c.precision,
                           "fp32_model": c.fp32_model, "fp32_sha256": c.fp32_sha256,
                           "quantized_nodes": len(quantized_nodes(proto))}
        sessions = open_sessions(models, args.threads)
        report: dict = {}
        with pauser.session():
            if not args.skip_speed:
                report["speed"] = measure_speed(sessions, args, pauser)
            if not args.skip_quality:
                report["quality"] = kodak_quality(sessions, args)
                report["chart"] = chart_quality(models, args)
            if args.sensitivity:
                report["sensitivity"] = sensitivity(args)
            if args.calibration_study:
                report["calibration_study"] = calibration_study(args)
    cores = run.machine["usable_cores"]
    report = {
        **run.head("precision", command_line("precision.py", argv)),
        "lscpu": lscpu(),
        "settings": {"threads": args.threads, "threads_label": str(args.threads) if args.threads else f"all ({cores})",
                     "repeats": args.repeats, "calls": args.calls, "levels": args.levels, "seed": args.seed,
                     "border": args.border, "dark_stops": DARK_STOPS, "dark_luma": DARK_LUMA,
                     "providers": {lb: list(s.providers) for lb, s in sessions.items()}},
        "models": info,
        **report,
        "notes": list(args.note),
    }
    report["verdict"] = verdict(report)
    write_json(args.out, report)
    update_results_md(args.results_md, RESULTS_KEY, markdown(report))
    v = report["verdict"]
    run.say(f"within the quality bar: {v['within_quality_bar']}; faster here: {v['faster_here']}; "
            f"faster_within_bar (what --precision auto needs): {v['faster_within_bar']}")
    run.say(f"wrote {args.out} and the {RESULTS_KEY} section of {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
