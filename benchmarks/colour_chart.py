"""Colour accuracy on the example chart: CIEDE2000 of every ColorChecker patch, rawdev against LibRaw.

examples/chart_bayer.dng (RGGB) and examples/scene_quad.dng (Quad-Bayer, 4x4 CFA) are made by
examples/make_examples.py from one procedural scene: a 6x4 ColorChecker whose patches carry the
published sRGB (D65) values of the 24 patches (examples/chart_patches.json: each patch's rectangle,
its central ``sample_rect`` (inset by 20 % of the patch on every side) and its 8-bit sRGB value),
unprocessed with rawdev's own synthesis (the Canon EOS 5D Mark II matrix, gains R 2.1 / B 1.7,
low noise, 12 bits; no tone curve, so a neutral development is the exact inverse).

Each file is developed in-process, as benchmarks/quality.py does it (its method rows are reused):

- ``rawdev``: ``read_mosaic`` + ``develop_mosaic`` with look neutral, exposure 0 EV, camera white
  balance (``rawdev develop --look neutral --exposure 0``), the shipped model unless ``--model``;
  for the Quad-Bayer file binned (``[bin]``, the default: half resolution) and remosaicked
  (``[remosaic]``);
- ``libraw-ahd``: rawpy ``postprocess`` (AHD, 16 bits, camera white balance, sRGB, no auto-bright,
  sRGB gamma; ``quality.LIBRAW_COMMON``); LibRaw cannot read the 4x4 CFA, so for the Quad-Bayer
  file it gets the pipeline's binned / remosaicked mosaic written as a Bayer DNG.

The mean of each patch's ``sample_rect`` (halved for binned output) is taken in linear light,
converted to CIE L*a*b* (D65 white, ``rawdev.metrics.xyz_to_lab``) and compared with the reference
value by CIEDE2000 (``rawdev.metrics.ciede2000``). Writes benchmarks/results/colour.json, colour.md,
one figure per file (colour_<file>.png: reference | each method, patch by patch) and the colour
section of benchmarks/RESULTS.md.

    python benchmarks/colour_chart.py

(Not ``colour.py``: run as a script, a ``colour.py`` in this folder would shadow colour-science's
``colour`` package, which colour-demosaicing imports, for every script here.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality  # noqa: E402
from benchmarks._measure import (  # noqa: E402
    RESULTS_MD,
    command_line,
    header_lines,
    sayer,
    update_results_md,
    write_json,
)
from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    code_version,
    describe_machine,
    library_versions,
    machine_info,
    now,
)

EXAMPLES = REPO / "examples"
FILES = ("chart_bayer.dng", "scene_quad.dng")
PATCHES_JSON = "chart_patches.json"
DEFAULT_BASELINES = ("libraw-ahd",)
NEUTRALS = range(18, 24)  # patches 19-24: white to black
RESULTS_KEY = "colour"
CELL, GAP = 30, 2  # figure: stripe width and gap, pixels


def reference_lab(patches: list[dict]) -> np.ndarray:
    """L*a*b* (D65) of the patches' published 8-bit sRGB values, (24, 3)."""
    from rawdev.metrics import srgb_to_lab

    return srgb_to_lab(np.array([p["srgb8"] for p in patches], np.float64) / 255.0)


def sample_box(patch: dict, scale: int) -> tuple[int, int, int, int]:
    """The patch's sample rectangle (x0, y0, x1, y1) in an output of 1/scale the chart's size,
    shrunk to whole output pixels inside it."""
    x0, y0, x1, y1 = patch["sample_rect"]
    return -(-x0 // scale), -(-y0 // scale), x1 // scale, y1 // scale


def patch_means(image16: np.ndarray, patches: list[dict], scale: int) -> np.ndarray:
    """Mean linear sRGB of each patch's sample rectangle in a 16-bit sRGB image, (24, 3)."""
    from rawdev.color import srgb_decode

    means = []
    for p in patches:
        x0, y0, x1, y1 = sample_box(p, scale)
        block = srgb_decode(image16[y0:y1, x0:x1].astype(np.float32) / np.float32(65535.0))
        means.append(block.reshape(-1, 3).mean(axis=0, dtype=np.float64))
    return np.array(means)


def measure(image16: np.ndarray, patches: list[dict], scale: int, ref_lab: np.ndarray) -> dict:
    """Per patch: measured L*a*b* and 8-bit sRGB, CIEDE2000 to the reference; mean / max."""
    from rawdev.color import SRGB_TO_XYZ, srgb_encode
    from rawdev.metrics import ciede2000, xyz_to_lab

    linear = patch_means(image16, patches, scale)
    lab = xyz_to_lab(linear @ SRGB_TO_XYZ.T)
    de = ciede2000(ref_lab, lab)
    srgb8 = np.round(np.asarray(srgb_encode(np.clip(linear, 0, 1)), np.float64) * 255).astype(int)
    chroma = np.hypot(lab[:, 1], lab[:, 2]) - np.hypot(ref_lab[:, 1], ref_lab[:, 2])
    colours = [i for i in range(len(patches)) if i not in NEUTRALS]
    worst = int(np.argmax(de))
    return {
        "patches": [{"index": p["index"], "name": p["name"], "lab": np.round(lab[i], 3).tolist(),
                     "srgb8": srgb8[i].tolist(), "delta_e00": round(float(de[i]), 3)}
                    for i, p in enumerate(patches)],
        "mean": round(float(de.mean()), 3),
        "max": round(float(de.max()), 3),
        "max_patch": patches[worst]["name"],
        "mean_neutrals": round(float(de[list(NEUTRALS)].mean()), 3),
        "mean_chromatic": round(float(de[colours].mean()), 3),
        "mean_delta_l": round(float((lab[:, 0] - ref_lab[:, 0]).mean()), 3),
        "mean_delta_c_chromatic": round(float(chroma[colours].mean()), 3),
    }


def methods_for(quads: tuple[str | None, ...], learned: list[quality.Method], baselines: list[str]):
    """The rows for one file: per Quad-Bayer mode (one pass for Bayer), the models, then the baselines."""
    return [m for quad in quads
            for m in [*(r for r in learned if r.quad == quad), *(quality.baseline_method(b, quad) for b in baselines)]]


def evaluate(dng: Path, patches_doc: dict, learned: list[quality.Method], baselines: list[str], work: Path,
             say) -> dict:
    from rawdev.raw import read_mosaic

    patches = patches_doc["patches"]
    quads = quality.QUAD_MODES if read_mosaic(dng).cfa.kind == "quad" else (None,)
    ref_lab = reference_lab(patches)
    rows = []
    for m in methods_for(quads, learned, baselines):
        source = m.prepare(dng, work) if m.prepare else dng
        image = m.run(source)
        expect = (patches_doc["height"] // m.scale, patches_doc["width"] // m.scale, 3)
        if image.shape != expect:
            raise ValueError(f"{dng.name}, {m.name}: output {image.shape}, expected {expect}")
        result = measure(image, patches, m.scale, ref_lab)
        rows.append({"method": m.name, "kind": m.kind, "quad": m.quad, "scale": m.scale,
                     "description": m.description, **result})
        say(f"{dng.name} {m.name}: mean {result['mean']:.2f}, max {result['max']:.2f} ({result['max_patch']})")
    return {"file": dng.name, "cfa": "quad" if quads != (None,) else "bayer", "methods": rows,
            "reference_lab": np.round(ref_lab, 3).tolist()}


# --------------------------------------------------------------------------- figure


def figure(path: Path, entry: dict, patches: list[dict]) -> None:
    """The chart patch by patch: a stripe of the reference colour, then one per method (its
    measured mean), with each method's CIEDE2000 under its stripe."""
    from PIL import Image, ImageDraw

    methods = entry["methods"]
    stripes = 1 + len(methods)
    cell_w, cell_h, text_h = stripes * (CELL + GAP) + 8, 2 * CELL, 14
    top = 16 + 12 * stripes
    canvas = Image.new("RGB", (6 * cell_w + 8, top + 4 * (cell_h + text_h + 8)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    labels = ["reference", *(f"{i}: {m['method']}" for i, m in enumerate(methods, 1))]
    draw.text((4, 2), f"{entry['file']}: stripes left to right, CIEDE2000 under each", fill=(0, 0, 0))
    for i, label in enumerate(labels):
        draw.text((4, 14 + 12 * i), label, fill=(0, 0, 0))
    for k, patch in enumerate(patches):
        r, c = divmod(k, 6)
        x, y = 4 + c * cell_w, top + r * (cell_h + text_h + 8)
        colours = [tuple(patch["srgb8"]), *(tuple(m["patches"][k]["srgb8"]) for m in methods)]
        for s, rgb in enumerate(colours):
            x0 = x + s * (CELL + GAP)
            draw.rectangle([x0, y, x0 + CELL - 1, y + cell_h - 1], fill=rgb)
            text = f"{methods[s - 1]['patches'][k]['delta_e00']:.1f}" if s else "ref"
            draw.text((x0, y + cell_h + 1), text, fill=(0, 0, 0) if s else (128, 128, 128))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


# --------------------------------------------------------------------------- markdown


def short_names(report: dict) -> dict[str, str]:
    """Column labels: 'rawdev' for the rows of the one model, the method names otherwise."""
    names = {m["method"] for f in report["files"] for m in f["methods"]}
    models = report["model_rows"]
    if len(models) != 1:
        return {n: n for n in names}
    return {n: n.replace(models[0], "rawdev") for n in names}


def table(report: dict) -> list[str]:
    """One row per patch, one column per file and method; mean, max and neutral/chromatic means."""
    short = short_names(report)
    columns = [(f, m) for f in report["files"] for m in f["methods"]]
    head = [f"{Path(f['file']).stem}: {short[m['method']]}" for f, m in columns]
    lines = ["| # | patch | reference sRGB | " + " | ".join(head) + " |",
             "|---:|---|---|" + "---:|" * len(columns)]
    for k, patch in enumerate(report["patches"]):
        cells = [f"{m['patches'][k]['delta_e00']:.2f}" for _, m in columns]
        lines.append(f"| {patch['index']} | {patch['name']} | {', '.join(map(str, patch['srgb8']))} | "
                     + " | ".join(cells) + " |")
    for key, label in (("mean", "**mean**"), ("max", "**max**"), ("mean_neutrals", "mean of the neutrals (19-24)"),
                       ("mean_chromatic", "mean of the colours (1-18)"),
                       ("mean_delta_l", "mean ΔL* (signed, all)"),
                       ("mean_delta_c_chromatic", "mean ΔC*ab (signed, colours 1-18)")):
        lines.append(f"| | {label} | | " + " | ".join(f"{m[key]:.2f}" for _, m in columns) + " |")
    return lines


def body(report: dict, figures: dict[str, str]) -> list[str]:
    short = short_names(report)
    lines = [
        "CIEDE2000 between each ColorChecker patch's published sRGB (D65) value and the mean of its central "
        "60 % (the `sample_rect` of examples/chart_patches.json, averaged in linear light) after a neutral "
        "development (look neutral, exposure 0 EV, camera white balance). The chart is rendered "
        "procedurally with those values and unprocessed with a known camera matrix and white balance "
        "(examples/make_examples.py), so an exact development gives 0 up to the capture's noise.",
        "",
    ]
    bayer_rows = {m["method"]: m["description"] for f in report["files"] for m in f["methods"] if not m["quad"]}
    lines += [f"- **{short[n]}**" + (f" ({n})" if short[n] != n else "") + f": {d}" for n, d in bayer_rows.items()]
    if any(f["cfa"] == "quad" for f in report["files"]):
        lines.append("- Quad-Bayer file: **[bin]** rows develop the 2x2-binned mosaic (half resolution; the "
                     "sample rectangles are halved), **[remosaic]** rows the remosaicked full-resolution one "
                     "(`--quad-bayer remosaic`); LibRaw, which reads the 4x4 CFA as a meaningless 2x2 pattern, "
                     f"gets the pipeline's binned / remosaicked mosaic written as a Bayer DNG (values x "
                     f"{quality.QUAD_DNG_SCALE}, exact for binning)")
    lines += ["", *table(report), ""]
    for f in report["files"]:
        best = min(f["methods"], key=lambda m: m["mean"])
        lines.append(f"- {f['file']}: " + "; ".join(
            f"{short[m['method']]} mean {m['mean']:.2f}, max {m['max']:.2f} ({m['max_patch']})" for m in f["methods"])
            + f"; lowest mean: {short[best['method']]}")
    for name, png in figures.items():
        lines += ["", f"{name}: ![{name} patches]({png})"]
    return lines


def markdown(report: dict, figures: dict[str, str]) -> str:
    lines = ["# Colour benchmark: CIEDE2000 per chart patch", ""]
    lines += header_lines(report)
    lines += ["", *body(report, figures)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/colour_chart.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=Path, default=EXAMPLES,
                   help=f"folder with the DNGs and {PATCHES_JSON} (default: the repository's examples/)")
    p.add_argument("--files", nargs="+", default=list(FILES), help="DNG files in --examples to measure")
    p.add_argument("--model", action="extend", nargs="+", default=[], metavar="PATH_OR_NAME",
                   help="ONNX file or registry name (default: the shipped default model)")
    p.add_argument("--baselines", nargs="*", choices=quality.BASELINES, default=list(DEFAULT_BASELINES),
                   help="classical rows (default: libraw-ahd)")
    p.add_argument("--device", default="cpu", help="onnxruntime device for the models")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = default)")
    p.add_argument("--out", type=Path, default=RESULTS / "colour.json")
    p.add_argument("--markdown", type=Path, default=RESULTS / "colour.md")
    p.add_argument("--png-dir", type=Path, default=RESULTS, help="where colour_<file>.png go")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD,
                   help="markdown file whose colour section is replaced (created if absent)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = sayer(args.quiet)
    patches_path = args.examples / PATCHES_JSON
    dngs = [args.examples / f for f in args.files]
    missing = [str(p) for p in [patches_path, *dngs] if not p.is_file()]
    if missing:
        print(f"error: missing {', '.join(missing)} (make them with examples/make_examples.py)", file=sys.stderr)
        return 2
    patches_doc = json.loads(patches_path.read_text())
    machine, versions = machine_info(), library_versions()
    for line in describe_machine(machine, versions):
        say(line)

    models = args.model
    if not models:
        from rawdev.model import DEFAULT_MODEL

        models = [DEFAULT_MODEL]
    try:
        learned = quality.rawdev_methods(models, args.device, args.threads, (None, *quality.QUAD_MODES))
    except Exception as exc:  # ContractError, DeviceUnavailable, onnxruntime errors
        print(f"error: cannot load model: {exc}", file=sys.stderr)
        return 2

    started = now()
    with tempfile.TemporaryDirectory(prefix="rawdev-colour-") as tmp:
        files = [evaluate(dng, patches_doc, learned, args.baselines, Path(tmp), say) for dng in dngs]
    report = {
        "benchmark": "colour",
        "command": command_line("colour_chart.py", argv).rstrip(),
        "started": started,
        "finished": now(),
        "code": code_version(),
        "machine": machine,
        "versions": versions,
        "settings": {
            "examples": str(args.examples),
            "reference": patches_doc["source"],
            "sample": "sample_rect of each patch (the rect inset by 20 % on each side; halved for binned "
                      "output), mean in linear light",
            "colour_space": "CIE L*a*b*, D65 white of sRGB (rawdev.metrics.xyz_to_lab)",
            "metric": "CIEDE2000 (rawdev.metrics.ciede2000)",
            "develop": {"look": "neutral", "exposure": "0", "wb": "camera", "path": "in-process"},
        },
        "models": {m.name: m.info for m in learned if m.quad is None},
        "model_rows": [m.name for m in learned if m.quad is None],
        "patches": [{k: p[k] for k in ("index", "name", "srgb8", "sample_rect")} for p in patches_doc["patches"]],
        "files": files,
    }
    figures = {}
    for f in files:
        png = args.png_dir / f"colour_{Path(f['file']).stem}.png"
        figure(png, f, patches_doc["patches"])
        figures[f["file"]] = png
    write_json(args.out, report)
    rel = {name: _relative(png, args.markdown.parent) for name, png in figures.items()}
    quality.write_text(args.markdown, markdown(report, rel))
    section = ["## Colour: CIEDE2000 per chart patch (benchmarks/colour_chart.py)", "", *header_lines(report), "",
               *body(report, {n: _relative(p, args.results_md.parent) for n, p in figures.items()})]
    update_results_md(args.results_md, RESULTS_KEY, "\n".join(section))
    if not args.quiet:
        say("\n".join(table(report)))
    say(f"wrote {args.out}, {args.markdown}, {', '.join(map(str, figures.values()))} and the {RESULTS_KEY} "
        f"section of {args.results_md}")
    return 0


def _relative(path: Path, start: Path) -> str:
    """``path`` as a link from a markdown file in ``start`` (absolute when it is not below it)."""
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path.resolve())


if __name__ == "__main__":
    sys.exit(main())
