"""Tiled against whole-image output of the real shipped model on real images: PSNR, largest
difference, and whether tile boundaries show.

For each image (a centre crop of the shared Blackmagic DNG, and examples/chart_bayer.dng) the
pipeline runs in-process (``rawdev.raw.read_mosaic`` + ``rawdev.develop.develop_mosaic``, default
look, auto exposure, camera white balance, 16-bit) once with a single tile covering the whole
image ("whole") and once per ``--tiles`` x ``--overlaps`` configuration, with
``DevelopOptions(tile=..., overlap=...)``.

Per configuration, on the 16-bit sRGB outputs as floats in [0, 1]:

- PSNR of tiled against whole, and the largest absolute difference (in 16-bit codes);
- seam ratio: the mean absolute gradient *across* tile boundaries (between the two output pixel
  columns/rows at the centre of each overlap, where the blend weights cross) over the mean
  absolute gradient everywhere else (away from every overlap by ``--margin`` pixels). About 1:
  the boundary looks like any other place. The same ratio of the whole-image output at the same
  places is the control (image content alone), and *seam excess* = tiled ratio / control ratio;
- boundary error: mean |tiled - whole| within the overlaps over the mean elsewhere (above 1: the
  tiles disagree most where they are blended).

Channel attention takes a mean over the whole input tile, so tiles differ from the whole image
everywhere, not only at boundaries: PSNR measures that, the seam figures measure the boundaries.
A PNG per image shows the worst boundary region (largest local gradient excess over the control)
of the configuration with the largest seam excess and of the default configuration: whole,
tiled and the amplified difference, magnified with nearest-neighbour.

Usage (from the repository root):
    python benchmarks/seams.py
(add --pause-training to time the configurations on a quiet machine; the quality figures do not
depend on it).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import (  # noqa: E402
    add_common_args,
    command_line,
    header_lines,
    start_timed_run,
    timed_clean,
    tries,
    update_results_md,
    with_notes,
    write_json,
)
from benchmarks.common import REPO, RESULTS, SHARED  # noqa: E402
from rawdev import DEFAULT_MODEL  # noqa: E402
from rawdev.develop import DEFAULT_OVERLAP, DEFAULT_TILE  # noqa: E402

BLACKMAGIC = SHARED / "samples" / "raw" / "imageio_Blackmagic.dng"
CHART = REPO / "examples" / "chart_bayer.dng"
DEFAULT_TILES = (128, 256, 512)
DEFAULT_OVERLAPS = (0, 8, 16, 32)
DEFAULT_CONFIG = (DEFAULT_TILE, DEFAULT_OVERLAP)  # rawdev's tile auto default and default overlap
MAGNIFY = 4
WINDOW = 64  # output pixels: the size of the saved crop and of the local search window


@dataclasses.dataclass
class Image:
    name: str
    source: str
    mosaic: object


def load_images(specs: list[str], crop: int) -> tuple[list[Image], list[str]]:
    """``blackmagic`` (centre crop of ``crop`` x ``crop`` mosaic pixels), ``chart`` or a RAW path."""
    from rawdev.raw import read_mosaic

    images, notes = [], []
    for spec in specs:
        path = {"blackmagic": BLACKMAGIC, "chart": CHART}.get(spec, Path(spec))
        if not path.exists():
            notes.append(f"{path} is absent: left out")
            continue
        mosaic = read_mosaic(path)
        name, where = path.stem, str(path)
        h, w = mosaic.data.shape
        if spec == "blackmagic" and crop and (h > crop or w > crop):
            period = mosaic.cfa.period
            ch, cw = min(crop, h), min(crop, w)
            y0 = ((h - ch) // 2) // period * period
            x0 = ((w - cw) // 2) // period * period
            mosaic = dataclasses.replace(mosaic, data=np.ascontiguousarray(mosaic.data[y0 : y0 + ch, x0 : x0 + cw]))
            name = f"{path.stem}_crop{ch}x{cw}"
            where = f"{path} [{y0}:{y0 + ch}, {x0}:{x0 + cw}]"
        images.append(Image(name, where, mosaic))
    return images, notes


def plan_for(mosaic, session, tile: int, overlap: int):
    """The tile plan and canonical offset develop_mosaic uses for these options."""
    from rawdev.normalize import prepare
    from rawdev.tiling import plan_tiles

    # Only the geometry is needed: the noise planes a noise-aware model takes do not change it.
    prepared = prepare(mosaic, dataclasses.replace(session.contract, noise_input="none"))
    h, w = prepared.source.shape[:2]
    plan = plan_tiles(h, w, tile=tile, overlap=overlap, align=2, scale=session.contract.scale)
    return plan, prepared.canonical, (h, w)


def overlaps_out(axis, scale: int, offset: int, length: int) -> list[tuple[int, int]]:
    """[start, end) of every overlap between neighbouring tiles along one axis, in output pixels of
    the final (unpadded) image; an empty overlap becomes the bare boundary (start == end)."""
    spans = []
    for prev, nxt in zip(axis.starts, axis.starts[1:], strict=False):
        a = nxt * scale - offset
        b = (prev + axis.size) * scale - offset
        a, b = max(0, min(a, length)), max(0, min(max(a, b), length))
        spans.append((a, b))
    return spans


def boundary_lines(spans: list[tuple[int, int]]) -> list[int]:
    """The pixel index b of each boundary: the gradient across it is between b-1 and b."""
    return [max(1, (a + b + 1) // 2) for a, b in spans]


def seam_figures(img: np.ndarray, ref: np.ndarray, rows_spans, cols_spans, margin: int) -> dict:
    """Seam ratio of ``img`` and of the control ``ref``, and the boundary error ratio."""
    h, w = img.shape[:2]

    def grads(x: np.ndarray):
        gx = np.abs(np.diff(x, axis=1)).mean(axis=2)  # (h, w-1): between column j and j+1
        gy = np.abs(np.diff(x, axis=0)).mean(axis=2)  # (h-1, w)
        return gx, gy

    near_x = np.zeros(w, bool)
    for a, b in cols_spans:
        near_x[max(0, a - margin) : min(w, b + margin)] = True
    near_y = np.zeros(h, bool)
    for a, b in rows_spans:
        near_y[max(0, a - margin) : min(h, b + margin)] = True
    bx, by = boundary_lines(cols_spans), boundary_lines(rows_spans)

    def ratio(x: np.ndarray) -> tuple[float | None, float, float]:
        gx, gy = grads(x)
        across = [gx[:, b - 1] for b in bx if b - 1 < gx.shape[1]] + [gy[b - 1, :] for b in by if b - 1 < gy.shape[0]]
        far_x = ~(near_x[:-1] | near_x[1:])
        far_y = ~(near_y[:-1] | near_y[1:])
        elsewhere = np.concatenate([gx[:, far_x].ravel(), gy[far_y, :].ravel()])
        if not across or elsewhere.size == 0:
            return None, float("nan"), float("nan")
        a = float(np.mean(np.concatenate(across)))
        e = float(np.mean(elsewhere))
        return a / e if e > 0 else None, a, e

    r_img, a_img, e_img = ratio(img)
    r_ref, _, _ = ratio(ref)
    diff = np.abs(img - ref).mean(axis=2)
    in_overlap = np.zeros((h, w), bool)
    for a, b in cols_spans:
        in_overlap[:, a : max(b, a + 1)] = True
    for a, b in rows_spans:
        in_overlap[a : max(b, a + 1), :] = True
    err_in = float(diff[in_overlap].mean()) if in_overlap.any() else None
    err_out = float(diff[~in_overlap].mean()) if (~in_overlap).any() else None
    return {
        "seam_ratio": r_img,
        "control_ratio": r_ref,
        "seam_excess": (r_img / r_ref) if (r_img and r_ref) else None,
        "grad_across": a_img,
        "grad_elsewhere": e_img,
        "boundary_error_ratio": (err_in / err_out) if (err_in is not None and err_out) else None,
        "boundaries": {"x": bx, "y": by},
    }


def worst_spot(img: np.ndarray, ref: np.ndarray, bx: list[int], by: list[int]) -> tuple[int, int, float] | None:
    """(y, x, excess) of the WINDOW-long stretch of boundary where the gradient across it exceeds the
    control's by the most."""
    best = None
    half = WINDOW // 2

    def consider(line_img: np.ndarray, line_ref: np.ndarray, place) -> None:
        nonlocal best
        excess = line_img - line_ref
        if excess.size < WINDOW:
            score = float(excess.mean())
            pos = excess.size // 2
        else:
            c = np.convolve(excess, np.ones(WINDOW) / WINDOW, mode="valid")
            pos = int(np.argmax(c)) + half
            score = float(c.max())
        if best is None or score > best[2]:
            best = (*place(pos), score)

    for b in bx:
        li = np.abs(img[:, b] - img[:, b - 1]).mean(axis=1)
        lr = np.abs(ref[:, b] - ref[:, b - 1]).mean(axis=1)
        consider(li, lr, lambda p, b=b: (p, b))
    for b in by:
        li = np.abs(img[b] - img[b - 1]).mean(axis=1)
        lr = np.abs(ref[b] - ref[b - 1]).mean(axis=1)
        consider(li, lr, lambda p, b=b: (b, p))
    return best


def save_crop_png(path: Path, whole: np.ndarray, tiled: np.ndarray, y: int, x: int, title: str,
                  bx: list[int], by: list[int]) -> dict:
    """whole | tiled | amplified |difference| around (y, x), magnified; boundaries marked on the
    edges of the difference panel."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    h, w = whole.shape[:2]
    y0 = int(min(max(0, y - WINDOW // 2), max(0, h - WINDOW)))
    x0 = int(min(max(0, x - WINDOW // 2), max(0, w - WINDOW)))
    a = whole[y0 : y0 + WINDOW, x0 : x0 + WINDOW]
    b = tiled[y0 : y0 + WINDOW, x0 : x0 + WINDOW]
    d = np.abs(b - a)
    peak = float(d.max())
    gain = 1.0 / peak if peak > 0 else 1.0
    panels = [a, b, np.clip(d * gain, 0, 1)]
    big = [np.kron(np.round(p * 255).astype(np.uint8), np.ones((MAGNIFY, MAGNIFY, 1), np.uint8)) for p in panels]
    ph, pw = big[0].shape[:2]
    pad, top = 6, 34
    canvas = PILImage.new("RGB", (3 * pw + 4 * pad, ph + top + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    labels = ["whole image (1 tile)", "tiled", f"|tiled - whole| x {gain:.0f}"]
    for i, (panel, label) in enumerate(zip(big, labels, strict=True)):
        px = pad + i * (pw + pad)
        canvas.paste(PILImage.fromarray(panel), (px, top))
        draw.text((px, 18), label, fill=(0, 0, 0))
        for bxi in bx:  # tick marks where the boundaries cross the crop
            if x0 <= bxi < x0 + a.shape[1]:
                tx = px + (bxi - x0) * MAGNIFY
                draw.line([(tx, top - 5), (tx, top - 1)], fill=(255, 0, 0), width=2)
        for byi in by:
            if y0 <= byi < y0 + a.shape[0]:
                ty = top + (byi - y0) * MAGNIFY
                draw.line([(px - 5, ty), (px - 1, ty)], fill=(255, 0, 0), width=2)
    draw.text((pad, 3), title, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return {"png": str(path), "y0": y0, "x0": x0, "size": WINDOW, "magnify": MAGNIFY,
            "diff_gain": round(gain, 2), "max_abs_diff_in_crop": round(peak * 65535)}


def evaluate(image: Image, session, args, pauser, say) -> dict:
    from rawdev.develop import DevelopOptions, develop_mosaic
    from rawdev.metrics import psnr

    mosaic = image.mosaic
    _, canon, (ph, pw) = plan_for(mosaic, session, 2, 0)
    whole_tile = int(math.ceil(max(ph, pw) / 2) * 2)

    def develop(tile: int, overlap: int):
        options = DevelopOptions(tile=tile, overlap=overlap)
        times, out = [], None
        for _ in range(args.repeats):
            seconds, _, _, out = timed_clean(lambda: develop_mosaic(mosaic, session, options),
                                             attempts=tries(pauser),
                                             before=lambda: pauser.ensure(10.0))
            times.append(seconds)
        return out, statistics.median(times)

    whole, whole_s = develop(whole_tile, 0)
    assert whole.tiles == 1, whole.tiles
    ref = whole.image.astype(np.float32) / 65535
    out_h, out_w = ref.shape[:2]
    say(f"{image.name}: {out_w}x{out_h} output, whole = one {whole.tile_shape[0]}x{whole.tile_shape[1]} tile "
        f"({whole_s:.2f} s)")
    rows = []
    keep: dict[tuple[int, int], np.ndarray] = {}
    for tile in args.tiles:
        for overlap in args.overlaps:
            plan, canon, _ = plan_for(mosaic, session, tile, overlap)
            dev, seconds = develop(tile, overlap)
            img = dev.image.astype(np.float32) / 65535
            s = session.contract.scale
            rspans = overlaps_out(plan.rows, s, canon.top * 1, out_h)
            cspans = overlaps_out(plan.cols, s, canon.left * 1, out_w)
            fig = seam_figures(img, ref, rspans, cspans, args.margin)
            p = psnr(img, ref)
            row = {
                "tile": tile, "overlap": overlap, "tiles": dev.tiles, "tile_shape": list(dev.tile_shape),
                "actual_overlaps_px": sorted({b - a for a, b in rspans + cspans}),
                "psnr_db": round(p, 2) if math.isfinite(p) else None,
                "max_abs_diff_16bit": int(np.abs(dev.image.astype(np.int32) - whole.image.astype(np.int32)).max()),
                "mean_abs_diff_16bit": round(float(np.abs(img - ref).mean() * 65535), 2),
                "seconds": round(seconds, 3),
                "time_vs_whole": round(seconds / whole_s, 3),
                **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in fig.items()},
            }
            rows.append(row)
            keep[(tile, overlap)] = img
            say(f"  tile {tile:4d} overlap {overlap:2d}: {dev.tiles:3d} tiles, PSNR {row['psnr_db']} dB, "
                f"max diff {row['max_abs_diff_16bit']}, seam ratio {row['seam_ratio']} "
                f"(control {row['control_ratio']}), boundary error x{row['boundary_error_ratio']}, {seconds:.2f} s")
    pauser.resume()
    pngs = {}
    scored = [r for r in rows if r["seam_excess"] is not None]
    picks = {}
    if scored:
        picks["worst"] = max(scored, key=lambda r: r["seam_excess"])
    default = next((r for r in rows if (r["tile"], r["overlap"]) == DEFAULT_CONFIG and r["tiles"] > 1), None)
    if default:
        picks["default"] = default
    for label, r in picks.items():
        img = keep[(r["tile"], r["overlap"])]
        spot = worst_spot(img, ref, r["boundaries"]["x"], r["boundaries"]["y"])
        if spot is None:
            continue
        y, x, excess = spot
        path = args.png_dir / f"seams_{image.name}_{label}.png"
        title = (f"{image.name}: tile {r['tile']}, overlap {r['overlap']} ({label}); worst boundary stretch, "
                 f"x{MAGNIFY}")
        pngs[label] = save_crop_png(path, ref, img, y, x, title, r["boundaries"]["x"], r["boundaries"]["y"])
        pngs[label] |= {"tile": r["tile"], "overlap": r["overlap"], "local_gradient_excess": round(excess * 65535, 1)}
    for r in rows:
        r.pop("boundaries")
    return {"name": image.name, "source": image.source, "output_shape": [out_h, out_w],
            "whole_tile": list(whole.tile_shape), "whole_seconds": round(whole_s, 3), "configs": rows, "pngs": pngs}


def markdown(report: dict) -> str:
    lines = ["## Seams: tiled against whole-image output (benchmarks/seams.py)", ""]
    lines += header_lines(report)
    st = report["settings"]
    lines += ["", f"Model {st['model']}; `develop_mosaic` with `DevelopOptions(tile, overlap)` (packed samples; "
                  "default look, auto exposure) against one tile covering the image. PSNR and differences on the "
                  "16-bit sRGB output. Seam ratio = mean |gradient| across the boundary lines (centre of each "
                  f"overlap) / elsewhere (> {st['margin']} px from any overlap); control = the same ratio on the "
                  "whole-image output; excess = ratio / control (1 = no seam). Boundary error = mean |tiled - whole| "
                  f"inside the overlaps / outside. Time: median of {st['repeats']} `develop_mosaic` calls.", ""]
    for im in report["images"]:
        lines += [f"**{im['name']}** ({im['output_shape'][1]}x{im['output_shape'][0]} output; whole = one "
                  f"{im['whole_tile'][0]}x{im['whole_tile'][1]} tile, {im['whole_seconds']:.2f} s)", "",
                  "| tile | overlap | tiles | PSNR dB | max diff (16-bit) | mean diff | seam ratio | control | excess "
                  "| boundary error | time vs whole |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in im["configs"]:
            def f(v, d=3):
                return "–" if v is None else f"{v:.{d}f}"
            lines.append(f"| {r['tile']} | {r['overlap']} | {r['tiles']} | {f(r['psnr_db'], 2)} | "
                         f"{r['max_abs_diff_16bit']} | {r['mean_abs_diff_16bit']:.1f} | {f(r['seam_ratio'])} | "
                         f"{f(r['control_ratio'])} | {f(r['seam_excess'])} | {f(r['boundary_error_ratio'], 2)} | "
                         f"{r['time_vs_whole']:.2f} |")
        for label, png in im["pngs"].items():
            rel = Path(png["png"])
            try:
                rel = rel.relative_to(Path(report["results_md_dir"]))
            except ValueError:
                pass
            lines += ["", f"{label} ({png['tile']}/{png['overlap']}): ![{im['name']} {label}]({rel}) — crop at "
                          f"y={png['y0']}, x={png['x0']}, {png['size']} px x{png['magnify']}; difference x"
                          f"{png['diff_gain']:.0f} (largest {png['max_abs_diff_in_crop']} codes)"]
        lines.append("")
    return with_notes(lines, report)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmarks/seams.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", nargs="+", default=["blackmagic", "chart"],
                   help="blackmagic (centre crop), chart, or RAW file paths")
    p.add_argument("--crop", type=int, default=2048, help="mosaic pixels of the Blackmagic centre crop")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--tiles", nargs="+", type=int, default=list(DEFAULT_TILES))
    p.add_argument("--overlaps", nargs="+", type=int, default=list(DEFAULT_OVERLAPS))
    p.add_argument("--margin", type=int, default=4, help="pixels around overlaps excluded from 'elsewhere'")
    p.add_argument("--repeats", type=int, default=3, help="develop_mosaic calls per configuration (timing)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--png-dir", type=Path, default=RESULTS)
    add_common_args(p, "seams")
    args = p.parse_args(argv)
    if args.repeats < 1 or any(t < 2 for t in args.tiles) or any(o < 0 for o in args.overlaps):
        p.error("--repeats >= 1, --tiles >= 2, --overlaps >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = start_timed_run(args)
    say, pauser = run.say, run.pauser
    from rawdev.model import resolve_model
    from rawdev.session import open_session

    images, notes = load_images(args.images, args.crop)
    for n in notes:
        say("note: " + n)
    if not images:
        print("error: no image to measure (" + "; ".join(notes) + ")", file=sys.stderr)
        return 2
    session = open_session(resolve_model(args.model), "cpu", args.threads)
    with pauser.session():
        results = [evaluate(im, session, args, pauser, say) for im in images]
    report = {
        **run.head("seams", command_line("seams.py", argv)),
        "settings": {"model": args.model, "model_path": str(session.path), "tiles": args.tiles,
                     "overlaps": args.overlaps, "margin": args.margin, "repeats": args.repeats,
                     "crop": args.crop},
        "results_md_dir": str(args.results_md.resolve().parent),
        "images": results,
        "notes": notes,
    }
    write_json(args.out, report)
    update_results_md(args.results_md, "seams", markdown(report))
    say(f"wrote {args.out} and the seams section of {args.results_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
