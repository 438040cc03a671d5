"""rawdev's DNG in raw editors: darktable and RawTherapee open the rawdev DNG and the original, and
their exports of the two are compared by CIEDE2000; exiftool validates the DNG.

For each input (default: examples/chart_bayer.dng, examples/scene_quad.dng and, where the shared
samples are present, ../shared/samples/raw/imageio_Blackmagic.dng):

1. ``rawdev develop --format dng`` in-process (the shipped model unless ``--model``) into a
   temporary folder; ``exiftool -validate -warning -a`` on the DNG (its output is recorded).
2. Each editor exports the original and the DNG as 16-bit TIFF:
   - ``darktable``: ``darktable-cli IN OUT --apply-custom-presets false`` with a fresh config
     folder, the default (scene-referred) workflow;
   - ``darktable-none``: the same with ``plugins/darkroom/workflow=none`` (no auto-applied
     exposure or filmic: the editor's plain raw pipeline);
   - ``rawtherapee``: ``rawtherapee-cli -t -b16 -q`` (neutral profile).
3. The two exports are brought to one frame (an editor's border crop taken off the larger one,
   centred; a binned Quad-Bayer DNG is half size, so the original's export is area-averaged 2x2)
   and compared: per-pixel CIEDE2000 (8-px border left out: mean, median, 95th percentile) and,
   for the chart files, the CIEDE2000 of each ColorChecker patch's mean colour (examples/
   chart_patches.json's sample rectangles; mean and max), which leaves demosaicking and noise out.
   Per-pixel differences include those of the network's demosaicking against the editor's own.
4. The headroom change (issue #12): rawdev's default TIFF of each file developed with and without
   the highlight headroom (``prepare(headroom=False)`` is the pipeline before the change); sRGB PSNR.

Programs that are absent are reported absent (the rest still runs); a file an editor cannot open is
recorded with what it said. Writes benchmarks/results/editors.json, editors.md, the ``editors``
section of benchmarks/RESULTS.md and, with ``--figure``, a crop of darktable's development of the
original beside the DNG's.

    apt-get install darktable rawtherapee libimage-exiftool-perl
    python benchmarks/editors.py --figure docs/darktable_dng_crop.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import debian_version, sayer, update_results_md, write_json  # noqa: E402
from benchmarks.common import REPO, RESULTS, SHARED, code_version, library_versions, machine_info, now  # noqa: E402

EXAMPLES = REPO / "examples"
DEFAULT_FILES = (EXAMPLES / "chart_bayer.dng", EXAMPLES / "scene_quad.dng",
                 SHARED / "samples" / "raw" / "imageio_Blackmagic.dng")
PATCHES = EXAMPLES / "chart_patches.json"
CHART_SIZE = (1024, 1536)
EDITORS = ("darktable", "darktable-none", "rawtherapee")
PACKAGES = {"darktable": "darktable", "darktable-none": "darktable", "rawtherapee": "rawtherapee"}
PROGRAMS = {"darktable": "darktable-cli", "darktable-none": "darktable-cli", "rawtherapee": "rawtherapee-cli"}
BORDER = 8
TIMEOUT_S = 600
RESULTS_KEY = "editors"


# --------------------------------------------------------------------------- running the programs


def export_command(editor: str, src: Path, out: Path, config: Path) -> list[str]:
    """The command that makes ``editor`` export ``src`` as a 16-bit TIFF ``out``."""
    if editor.startswith("darktable"):
        cmd = ["darktable-cli", str(src), str(out), "--apply-custom-presets", "false", "--core",
               "--configdir", str(config), "--conf", "plugins/imageio/format/tiff/bpp=16"]
        return cmd + (["--conf", "plugins/darkroom/workflow=none"] if editor == "darktable-none" else [])
    return ["rawtherapee-cli", "-o", str(out), "-t", "-b16", "-q", "-Y", "-c", str(src)]


def export(editor: str, src: Path, out: Path, config: Path) -> tuple[np.ndarray | None, str]:
    """Run the export; (the 16-bit image or None, the program's last lines when it failed)."""
    import tifffile

    cmd = ["nice", "-n", "10", *export_command(editor, src, out, config)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {TIMEOUT_S} s"
    said = " | ".join(line for line in (done.stdout + done.stderr).splitlines()[-4:]
                      if "running darktable as root" not in line)
    if done.returncode != 0 or not out.exists():
        return None, f"exit {done.returncode}: {said}"
    image = tifffile.imread(out)
    if image.dtype != np.uint16 or image.ndim != 3:
        return None, f"exported {image.dtype} {image.shape}, not 16-bit RGB"
    return image[..., :3], ""


def exiftool_validate(path: Path) -> str | None:
    """``exiftool -validate -warning -a`` of ``path`` (its Validate/Warning lines), None if absent."""
    if shutil.which("exiftool") is None:
        return None
    done = subprocess.run(["exiftool", "-validate", "-warning", "-a", "-G1", str(path)],
                          capture_output=True, text=True, timeout=120)
    return (done.stdout + done.stderr).strip()


# --------------------------------------------------------------------------- comparing


def centre_crop(image: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return image[top : top + h, left : left + w]


def common_frame(original: np.ndarray, ours: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Both exports in one frame as float sRGB in [0, 1]: the original area-averaged by ``scale``
    (2 for a binned Quad-Bayer DNG), then both centre-cropped to the smaller size."""
    from rawdev.color import srgb_decode, srgb_encode
    from rawdev.metrics import area_downscale

    a = original.astype(np.float32) / np.float32(65535)
    if scale > 1:
        a = srgb_encode(area_downscale(srgb_decode(a), scale))
    b = ours.astype(np.float32) / np.float32(65535)
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return centre_crop(a, h, w), centre_crop(b, h, w)


def patch_lab(image: np.ndarray, full: tuple[int, int], scale: int) -> np.ndarray:
    """L*a*b* of the mean colour (in linear light) of each chart patch of an export, (24, 3);
    ``full`` is the uncropped size of the chart at output scale (the export is centred in it)."""
    from rawdev.color import SRGB_TO_XYZ, srgb_decode
    from rawdev.metrics import xyz_to_lab

    dy, dx = (full[0] - image.shape[0]) // 2, (full[1] - image.shape[1]) // 2
    rows = []
    for p in json.loads(PATCHES.read_text())["patches"]:
        x0, y0, x1, y1 = (v // scale for v in p["sample_rect"])
        block = srgb_decode(image[y0 - dy : y1 - dy, x0 - dx : x1 - dx])
        rows.append(block.reshape(-1, 3).mean(axis=0, dtype=np.float64))
    return xyz_to_lab(np.array(rows) @ SRGB_TO_XYZ.T)


def reference_lab() -> np.ndarray:
    """L*a*b* of the chart's published patch colours (what the example files were made from)."""
    from rawdev.metrics import srgb_to_lab

    patches = json.loads(PATCHES.read_text())["patches"]
    return srgb_to_lab(np.array([p["srgb8"] for p in patches], np.float64) / 255.0)


def _mean_max(values: np.ndarray) -> list[float]:
    return [round(float(np.mean(values)), 3), round(float(np.max(values)), 3)]


def compare(original: np.ndarray, ours: np.ndarray, scale: int, chart: bool) -> dict:
    from rawdev.metrics import delta_e_srgb

    a, b = common_frame(original, ours, scale)
    de = delta_e_srgb(b[BORDER:-BORDER, BORDER:-BORDER], a[BORDER:-BORDER, BORDER:-BORDER])
    out = {"frame": list(a.shape[:2]), "pixel_mean": round(float(de.mean()), 3),
           "pixel_median": round(float(np.median(de)), 3), "pixel_p95": round(float(np.percentile(de, 95)), 3)}
    if chart:
        from rawdev.metrics import ciede2000

        full = (CHART_SIZE[0] // scale, CHART_SIZE[1] // scale)
        lab_a, lab_b, ref = patch_lab(a, full, scale), patch_lab(b, full, scale), reference_lab()
        patches = ciede2000(lab_a, lab_b)
        out |= {"patch_mean": _mean_max(patches)[0], "patch_max": _mean_max(patches)[1],
                "patches": [round(float(v), 3) for v in patches],
                "original_vs_reference": _mean_max(ciede2000(lab_a, ref)),
                "dng_vs_reference": _mean_max(ciede2000(lab_b, ref))}
    return out


# --------------------------------------------------------------------------- rawdev


def develop_dng(src: Path, out: Path, session) -> str:
    from rawdev.batch import Job, RunOptions, run_batch
    from rawdev.develop import DevelopOptions

    summary = run_batch([Job(src, out)], session, DevelopOptions(), RunOptions(fmt="dng", decode_in_process=True))
    [outcome] = summary.outcomes
    return "" if outcome.status == "ok" else outcome.message


def libraw_psnr(src: Path, dng: Path, session) -> float:
    """sRGB PSNR (after one global gain in linear light) between LibRaw's neutral development of the
    DNG (camera WB, no auto-bright, sRGB, gamma 2.4 / 12.92) and rawdev's ``--look neutral
    --exposure 0`` of the original."""
    import rawpy

    from rawdev.develop import DevelopOptions, develop_mosaic
    from rawdev.metrics import psnr_after_gain
    from rawdev.raw import read_mosaic

    ours = develop_mosaic(read_mosaic(src), session, DevelopOptions(look="neutral", exposure="0")).image
    with rawpy.imread(str(dng)) as raw:
        libraw = raw.postprocess(use_camera_wb=True, no_auto_bright=True, output_color=rawpy.ColorSpace.sRGB,
                                 gamma=(2.4, 12.92), output_bps=16, user_flip=0)
    return round(psnr_after_gain(libraw, ours), 2)


def headroom_psnr(src: Path, session) -> float | str:
    """sRGB PSNR between rawdev's default 16-bit development with the headroom and without it."""
    import rawdev.develop as develop
    from rawdev.metrics import psnr
    from rawdev.normalize import prepare
    from rawdev.raw import read_mosaic

    mosaic = read_mosaic(src)
    with_headroom = develop.develop_mosaic(mosaic, session).image
    develop.prepare = lambda *a, **k: prepare(*a, **{**k, "headroom": False})  # the pipeline before #12
    try:
        without = develop.develop_mosaic(mosaic, session).image
    finally:
        develop.prepare = prepare
    value = psnr(with_headroom / 65535.0, without / 65535.0)
    return "identical" if np.isinf(value) else round(value, 2)


# --------------------------------------------------------------------------- the run


def run_file(src: Path, session, editors: list[str], work: Path, say) -> tuple[dict, dict]:
    """One input: the DNG, exiftool, each editor's two exports compared; and the exports kept for
    the figure ({editor: (original, ours)})."""
    from rawdev.raw import read_mosaic

    entry: dict = {"file": src.name}
    dng = work / f"{src.stem}.rawdev.dng"
    problem = develop_dng(src, dng, session)
    if problem:
        entry["rawdev"] = f"failed: {problem}"
        return entry, {}
    entry["dng_bytes"] = dng.stat().st_size
    entry["exiftool"] = exiftool_validate(dng)
    entry["headroom_psnr_db"] = headroom_psnr(src, session)
    entry["libraw_vs_rawdev_psnr_db"] = libraw_psnr(src, dng, session)
    say(f"{src.name}: DNG {entry['dng_bytes'] / 1e6:.1f} MB; headroom change {entry['headroom_psnr_db']} dB; "
        f"LibRaw's DNG vs rawdev's neutral TIFF {entry['libraw_vs_rawdev_psnr_db']} dB")
    mosaic = read_mosaic(src)
    scale = 2 if mosaic.cfa.kind == "quad" else 1  # binned by default
    chart = src.parent == EXAMPLES
    kept = {}
    for editor in editors:
        config = work / f"config-{editor}"
        original, why_o = export(editor, src, work / f"{editor}-{src.stem}.tif", config)
        ours, why_d = export(editor, dng, work / f"{editor}-{src.stem}.rawdev.tif", config)
        result: dict = {"original": why_o or "ok", "dng": why_d or "ok"}
        if original is not None and ours is not None:
            result |= compare(original, ours, scale, chart)
            kept[editor] = (original, ours)
        entry[editor] = result
        say(f"  {editor}: {json.dumps({k: v for k, v in result.items() if k != 'patches'})}")
    return entry, kept


def figure(path: Path, original: np.ndarray, ours: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """``original``'s and ``ours``'s crops ``box`` (y0, x0, h, w) side by side, 8-bit, labelled."""
    from PIL import Image, ImageDraw

    y0, x0, h, w = box
    crops = [np.round(img[y0 : y0 + h, x0 : x0 + w, :3] / 257.0).astype(np.uint8) for img in (original, ours)]
    canvas = Image.new("RGB", (2 * w + 12, h + 22), (255, 255, 255))
    for i, (crop, label) in enumerate(zip(crops, ("darktable: original raw", "darktable: rawdev DNG"))):
        canvas.paste(Image.fromarray(crop), (4 + i * (w + 4), 18))
        ImageDraw.Draw(canvas).text((4 + i * (w + 4), 3), label, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)


def _short(said: str, limit: int = 90) -> str:
    """A table cell of what a program said: its first error, cut to ``limit`` characters."""
    if "First Error:" in said:  # rawspeed's
        said = said.split("First Error:", 1)[1]
    said = " ".join(said.replace("|", " ").split())
    return said if len(said) <= limit else said[: limit - 1] + "…"


def _db(value) -> str:
    return "–" if value is None else f"{value} dB" if isinstance(value, (int, float)) else str(value)


def markdown(report: dict) -> str:
    lines = ["## rawdev's DNG in raw editors", "",
             f"Command: `{report['command']}`", "",
             f"- editors: {', '.join(f'{k} {v}' for k, v in report['editor_versions'].items())}; "
             f"model {report['model']}; commit {str(report['code'].get('commit'))[:12]}, {report['finished']}",
             "- CIEDE2000 between an editor's export of the original and of rawdev's DNG (same editor, same "
             "settings); per pixel (mean / median / 95th percentile, includes demosaicking and noise "
             "differences) and, on the chart, of the 24 patch means (mean / max)", "",
             "- the last two columns: each export's patch means against the chart's published colours "
             "(mean / max CIEDE2000; the editors' own tone and exposure count against them)", "",
             "| file | editor | original | DNG | per pixel mean / median / p95 | chart patches mean / max "
             "| original vs chart | DNG vs chart |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in report["files"]:
        for editor in report["editors"]:
            r = entry.get(editor)
            if r is None:
                continue
            pixel = (f"{r['pixel_mean']:.2f} / {r['pixel_median']:.2f} / {r['pixel_p95']:.2f}"
                     if "pixel_mean" in r else "–")
            patch = f"{r['patch_mean']:.2f} / {r['patch_max']:.2f}" if "patch_mean" in r else "–"
            refs = [" / ".join(f"{v:.2f}" for v in r[k]) if k in r else "–"
                    for k in ("original_vs_reference", "dng_vs_reference")]
            lines.append(f"| {entry['file']} | {editor} | {_short(r['original'])} | {_short(r['dng'])} | {pixel} "
                         f"| {patch} "
                         f"| {refs[0]} | {refs[1]} |")
    lines += ["", "Per file: `exiftool -validate -warning -a` on the DNG; LibRaw's neutral development of the "
              "DNG against rawdev's `--look neutral --exposure 0` of the original (sRGB PSNR after one global "
              "gain in linear light); the headroom change (rawdev's default TIFF with and without the issue #12 "
              "headroom, sRGB PSNR):", ""]
    for entry in report["files"]:
        said = " ".join((entry.get("exiftool") or "exiftool absent").split())
        lines.append(f"- {entry['file']}: {entry.get('rawdev', 'DNG written')}; exiftool `{said}`; LibRaw vs "
                     f"rawdev {entry.get('libraw_vs_rawdev_psnr_db', '–')} dB; headroom change "
                     f"{_db(entry.get('headroom_psnr_db'))}")
    lines += ["", *[f"- {note}" for note in report.get("notes", [])]]
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/editors.py", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", type=Path, help="RAW files (default: the examples and the Blackmagic sample)")
    p.add_argument("--model", default=None, help="model name or .onnx (default: the shipped one)")
    p.add_argument("--editors", nargs="+", default=list(EDITORS), choices=EDITORS)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "editors.json")
    p.add_argument("--markdown", type=Path, default=RESULTS / "editors.md")
    p.add_argument("--results-md", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    p.add_argument("--figure", type=Path, default=None, help="PNG: darktable's original beside the DNG (chart)")
    p.add_argument("--note", action="append", default=[], help="a line for the notes (repeatable)")
    p.add_argument("--from-json", action="store_true", help="run nothing: rewrite the markdown from --out "
                                                             "(with --note: these notes instead)")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = sayer(args.quiet)
    if args.from_json:
        report = json.loads(args.out.read_text())
        report["notes"] = args.note or report.get("notes", [])
        write_json(args.out, report)
        args.markdown.write_text(markdown(report))
        update_results_md(args.results_md, RESULTS_KEY, markdown(report))
        return 0
    from rawdev.model import resolve_model
    from rawdev.session import open_session

    files = args.files or [f for f in DEFAULT_FILES if f.exists()]
    editors = [e for e in args.editors if shutil.which(PROGRAMS[e])]
    for e in sorted(set(args.editors) - set(editors)):
        say(f"{e}: {PROGRAMS[e]} is not installed (apt-get install {PACKAGES[e]}); skipped")
    started = now()
    model = resolve_model(args.model)
    session = open_session(model, "cpu", args.threads)
    entries, kept_chart = [], {}
    with tempfile.TemporaryDirectory(prefix="rawdev-editors-") as tmp:
        for src in files:
            entry, kept = run_file(src, session, editors, Path(tmp), say)
            entries.append(entry)
            if src.name == "chart_bayer.dng":
                kept_chart = kept
    given = list(sys.argv[1:] if argv is None else argv)
    shown = [a for i, a in enumerate(given) if a != "--note" and (i == 0 or given[i - 1] != "--note")]
    report = {"benchmark": "editors", "command": " ".join(["python benchmarks/editors.py", *shown]),
              "started": started, "finished": now(), "code": code_version(), "machine": machine_info(),
              "versions": library_versions(), "model": model.name,
              "editor_versions": {p: debian_version(p) for p in ("darktable", "rawtherapee", "libimage-exiftool-perl")},
              "editors": editors, "files": entries, "notes": args.note}
    write_json(args.out, report)
    text = markdown(report)
    args.markdown.write_text(text)
    update_results_md(args.results_md, RESULTS_KEY, text)
    if args.figure is not None and "darktable-none" in kept_chart:
        figure(args.figure, *kept_chart["darktable-none"], box=(380, 560, 200, 300))
        say(f"wrote {args.figure}")
    say(f"wrote {args.out}, {args.markdown} and the {RESULTS_KEY} section of {args.results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
