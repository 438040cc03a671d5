"""Flat-field colour: does a flat patch come back as its own colour, at every brightness and noise?

The 24 ColorChecker patches (their published sRGB D65 values, as examples/make_examples.py uses
them) are laid out as flat 128-pixel squares, exposed at -6, -4, -2 and 0 EV (0 EV: 18 % grey at
12.7 % of the sensor's range, ISO 12232's saturation-based exposure), and unprocessed
through four real cameras' matrices and daylight white balances (rawdev.train.synth.Unprocessor;
no tone curve, so a neutral development is the exact inverse) at each noise level of
benchmarks/quality.py into 12-bit RGGB DNGs that carry a NoiseProfile, as real DNGs do.

Each DNG is developed as ``rawdev develop --look neutral --exposure 0`` does it, in-process. The
mean of each patch's central 96 x 96 pixels, in linear light, averaged over ``--draws`` noise
draws of the same case, goes to CIE L*a*b* (D65) and is compared by CIEDE2000 with the patch's
truth: the clean camera RGB the sensor saw through the file's colour matrix (its reference colour
at that EV, except where a saturated colour falls outside the camera's gamut and the sensor clips
it at 0). The drift, on which the targets are checked, compares it instead with the noisy mean
of the same samples with its negative channels at 0: the nearest an image can hold to what that
capture's noise left (at -6 EV and high noise a dark channel's sample mean is below 0 in many
draws). One draw leaves the sample's own noise in the darkest, noisiest cases (up to 2 units of
drift, 5 to the truth); 16 bring it well under the targets. Rows:

- ``rawdev <model>``: the pipeline with each --model (default: the shipped default);
- ``libraw-ahd``: LibRaw's linear 16-bit output (AHD, camera white balance, sRGB, gamma 1) of the
  same DNG, averaged the same way;
- ``noisy mean (floor)``: the mean of the noisy mosaic's own samples over the same area, white
  balanced and put through the same colour matrix: what any developer that keeps the mean gets,
  so it is the floor set by the noise of a 96 x 96 sample.

Targets (issue #10): rawdev's mean CIEDE2000 at most 0.5 and its largest at most 1.5.

    python benchmarks/flat_field.py [--model NAME_OR_PATH ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks.common` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._measure import (  # noqa: E402
    RESULTS_MD,
    command_line,
    header_lines,
    sayer,
    update_results_md,
    write_json,
)
from benchmarks.common import RESULTS, code_version, library_versions, machine_info, now  # noqa: E402

CAMERAS = ("Canon EOS 5D Mark II", "Nikon D850", "Sony ILCE-7M3", "Samsung Galaxy S9")
EVS = (-6, -4, -2, 0)
PATCH = 128  # output pixels per patch side
SAMPLE = 96  # the central square measured
# 0 EV exposes the chart as ISO 12232's saturation-based speed does: half a stop of headroom, so
# 18 % grey lands at 12.7 % of the sensor's range and the white patch at 63 %.
HEADROOM = 2.0**-0.5
COLUMNS = 6
TARGET_MEAN, TARGET_MAX = 0.5, 1.5
RESULTS_KEY = "flat-field"
DRAWS = 16
FLOOR = "noisy mean (floor)"
HELD = "noisy mean, negative channels at 0"
LEVELS = ("low", "medium", "high")


@dataclass(frozen=True)
class Case:
    camera: str
    ev: int
    level: str


def _colorchecker() -> tuple[tuple[str, tuple[int, int, int]], ...]:
    """The (name, 8-bit sRGB) of the 24 patches, as examples/make_examples.py defines them."""
    examples = str(Path(__file__).resolve().parents[1] / "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)
    from make_examples import COLORCHECKER_SRGB8

    return COLORCHECKER_SRGB8


def reference_srgb8() -> np.ndarray:
    """(24, 3) the ColorChecker's published 8-bit sRGB values, in chart order."""
    return np.array([rgb for _, rgb in _colorchecker()], np.float64)


def patch_names() -> list[str]:
    return [name for name, _ in _colorchecker()]


def truth_linear(ev: int) -> np.ndarray:
    """(24, 3) linear sRGB of each patch at ``ev``."""
    from rawdev.color import srgb_decode

    return srgb_decode(reference_srgb8() / 255.0).astype(np.float64) * 2.0**ev * HEADROOM


def chart_image(ev: int) -> np.ndarray:
    """The flat patches as an encoded sRGB float image (4 x 6 patches of PATCH pixels)."""
    from rawdev.color import srgb_encode

    lin = truth_linear(ev)
    rows = len(lin) // COLUMNS
    img = np.zeros((rows * PATCH, COLUMNS * PATCH, 3), np.float32)
    for i, colour in enumerate(lin):
        r, c = divmod(i, COLUMNS)
        img[r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH] = srgb_encode(colour)
    return img


def sample_boxes(scale: int = 1) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of each patch's central SAMPLE square, at 1/scale resolution."""
    m = (PATCH - SAMPLE) // 2
    out = []
    for i in range(24):
        r, c = divmod(i, COLUMNS)
        y0, x0 = r * PATCH + m, c * PATCH + m
        out.append((y0 // scale, (y0 + SAMPLE) // scale, x0 // scale, (x0 + SAMPLE) // scale))
    return out


def camera_matrix(name: str) -> np.ndarray:
    from rawdev.train.synth import camera_bank

    for cam in camera_bank():
        if cam["name"] == name:
            return np.array(cam["xyz_to_cam"], np.float64)
    raise KeyError(name)


def daylight_gains(xyz_to_cam: np.ndarray) -> np.ndarray:
    """The white-balance gains that neutralize D65 white for this camera (G = 1)."""
    d65 = np.array([0.95047, 1.0, 1.08883])
    raw_white = xyz_to_cam @ d65
    return raw_white[1] / raw_white


def write_case(case: Case, path: Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unprocess the chart for ``case`` into a DNG at ``path``; returns the raw capture's
    white-balanced, normalized mosaic (float, for the floor row) and the clean camera RGB
    (what the sensor saw: colours outside the camera's gamut come out clipped at 0)."""
    from rawdev.dng import write_dng
    from rawdev.train.synth import NOISE_LEVELS, RGGB, Unprocessor, mosaic_gains

    m = camera_matrix(case.camera)
    gains = daylight_gains(m)
    cap = Unprocessor(seed).capture(chart_image(case.ev), RGGB, shot=NOISE_LEVELS[case.level], xyz_to_cam=m,
                                    wb_gains=gains)
    write_dng(path, cap.raw, RGGB, black=cap.black, white=int(cap.white), xyz_to_cam=cap.xyz_to_cam,
              wb_gains=cap.wb_gains, make="rawdev", model=f"flat field {case.camera}",
              noise_profile=(cap.shot, cap.read))
    norm = (cap.raw.astype(np.float64) - cap.black) / (cap.white - cap.black)
    return norm * mosaic_gains(gains, norm.shape), cap.linear_cam


def box_means(image: np.ndarray) -> np.ndarray:
    """(24, 3) mean of an (H, W, 3) image over each patch's sample square."""
    return np.array([image[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0, dtype=np.float64)
                     for y0, y1, x0, x1 in sample_boxes()])


def truth_of(clean_cam: np.ndarray, cam_to_srgb: np.ndarray) -> np.ndarray:
    """(24, 3) linear sRGB each patch should come back as: the clean camera RGB the sensor saw
    through the file's own colour matrix (equal to the reference colour where the camera's gamut
    holds it)."""
    return box_means(clean_cam) @ np.asarray(cam_to_srgb, np.float64).T


def lab_of_linear(linear: np.ndarray) -> np.ndarray:
    from rawdev.color import SRGB_TO_XYZ
    from rawdev.metrics import xyz_to_lab

    return xyz_to_lab(np.asarray(linear, np.float64) @ SRGB_TO_XYZ.T)


def means_of_image16(image16: np.ndarray) -> np.ndarray:
    """(24, 3) mean linear sRGB of each sample square of a 16-bit sRGB image."""
    from rawdev.color import srgb_decode

    return box_means(srgb_decode(image16.astype(np.float32) / np.float32(65535.0)))


def floor_means(balanced: np.ndarray, cam_to_srgb: np.ndarray) -> np.ndarray:
    """(24, 3) linear sRGB of the noisy mosaic's own per-colour means in each sample square."""
    out = []
    for y0, y1, x0, x1 in sample_boxes():
        block = balanced[y0:y1, x0:x1]
        cam = [block[0::2, 0::2].mean(), (block[0::2, 1::2].mean() + block[1::2, 0::2].mean()) / 2,
               block[1::2, 1::2].mean()]
        out.append(np.asarray(cam_to_srgb, np.float64) @ np.array(cam))
    return np.array(out)


def libraw_means(dng: Path) -> np.ndarray:
    import rawpy

    with rawpy.imread(str(dng)) as raw:
        rgb = raw.postprocess(use_camera_wb=True, output_bps=16, gamma=(1, 1), no_auto_bright=True, bright=1.0,
                              user_flip=0, demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD,
                              output_color=rawpy.ColorSpace.sRGB, adjust_maximum_thr=0.0,
                              highlight_mode=rawpy.HighlightMode.Clip)
    return box_means(rgb.astype(np.float64) / 65535.0)


def rawdev_developer(session):
    """A function DNG path -> (24, 3) patch means through the real pipeline."""
    from rawdev.develop import DevelopOptions, develop_mosaic
    from rawdev.raw import read_mosaic

    options = DevelopOptions(look="neutral", exposure="0", wb="camera")

    def run(dng: Path) -> np.ndarray:
        return means_of_image16(develop_mosaic(read_mosaic(dng), session, options).image)

    return run


def evaluate(sessions: dict[str, object], cases: list[Case], work: Path, seed: int = 0, libraw: bool = True,
             say=print, draws: int = 1) -> dict:
    """CIEDE2000 of every patch of every case for each row: {row: {"cases": [...], summary}}.

    ``draws``: noise draws per case; each row's patch means (and the floor's and the truth's) are
    averaged over them in linear light before the comparison, so that the sample's own noise,
    which no developer can remove from a mean, shrinks as 1/sqrt(draws) while a bias stays."""
    from rawdev.metrics import ciede2000
    from rawdev.raw import read_mosaic

    developers = {name: rawdev_developer(s) for name, s in sessions.items()}
    rows: dict[str, list[dict]] = {name: [] for name in developers}
    if libraw:
        rows["libraw-ahd"] = []
    rows[FLOOR] = []
    for i, case in enumerate(cases):
        sums: dict[str, np.ndarray] = {}
        truth_sum = np.zeros((24, 3))
        for d in range(draws):
            dng = work / f"flat_{i}.dng"
            balanced, clean = write_case(case, dng, seed + i + d * len(cases))
            cam_to_srgb = read_mosaic(dng).cam_to_srgb
            truth_sum += truth_of(clean, cam_to_srgb)
            means = {name: dev(dng) for name, dev in developers.items()}
            if libraw:
                means["libraw-ahd"] = libraw_means(dng)
            means[FLOOR] = floor_means(balanced, cam_to_srgb)
            # The drift's reference: the noisy mean as an image can hold it (no channel below 0).
            means[HELD] = np.maximum(means[FLOOR], 0.0)
            for name, linear in means.items():
                sums[name] = sums.get(name, 0.0) + linear
        truth = lab_of_linear(truth_sum / draws)
        floor = lab_of_linear(sums.pop(HELD) / draws)
        for name, total in sums.items():
            lab = lab_of_linear(total / draws)
            rows[name].append({"camera": case.camera, "ev": case.ev, "level": case.level,
                               "delta_e00": np.round(ciede2000(truth, lab), 3).tolist(),
                               "drift": np.round(ciede2000(floor, lab), 3).tolist()})
        say(f"{case.camera} {case.ev:+d} EV {case.level}: drift " +
            ", ".join(f"{n} {np.mean(r[-1]['drift']):.2f}" for n, r in rows.items() if n != FLOOR))
    return {name: {"cases": r, "truth": summarize(r, "delta_e00"), "drift": summarize(r, "drift")}
            for name, r in rows.items()}


def summarize(cases: list[dict], key: str) -> dict:
    """Mean and largest CIEDE2000 (``key``: ``delta_e00`` to the truth, or ``drift`` from the
    noisy mean) overall, by noise level and by EV, and the worst patch."""
    names = patch_names()
    de = np.array([c[key] for c in cases])
    worst_case, worst_patch = np.unravel_index(int(np.argmax(de)), de.shape)
    w = cases[worst_case]

    def by(field: str) -> dict:
        values = sorted({c[field] for c in cases}, key=lambda v: LEVELS.index(v) if field == "level" else v)
        groups = {v: np.array([c[key] for c in cases if c[field] == v]) for v in values}
        return {str(v): {"mean": round(float(g.mean()), 3), "max": round(float(g.max()), 3)} for v, g in groups.items()}

    return {"mean": round(float(de.mean()), 3), "max": round(float(de.max()), 3),
            "worst": f"{names[worst_patch]} ({w['camera']}, {w['ev']:+d} EV, {w['level']} noise)",
            "by_level": by("level"), "by_ev": by("ev"),
            "by_patch": [round(float(v), 3) for v in de.mean(axis=0)]}


def all_cases(cameras=CAMERAS, evs=EVS, levels=LEVELS) -> list[Case]:
    return [Case(c, e, lv) for c in cameras for e in evs for lv in levels]


def table(rows: dict, kind: str = "drift") -> list[str]:
    """Markdown rows of one kind of summary (``truth`` or ``drift``)."""
    rows = {name: r[kind] for name, r in rows.items() if not (kind == "drift" and name == FLOOR)}
    levels = [lv for lv in LEVELS if lv in next(iter(rows.values()))["by_level"]]
    evs = list(next(iter(rows.values()))["by_ev"])
    head = "| row | mean | max | " + " | ".join(f"{lv} noise" for lv in levels) + " | " + \
        " | ".join(f"{e} EV" for e in evs) + " | worst patch |"
    lines = [head, "|" + "---|" * (4 + len(levels) + len(evs))]
    for name, r in rows.items():
        cells = [f"{r['by_level'][lv]['mean']:.2f} / {r['by_level'][lv]['max']:.2f}" for lv in levels]
        cells += [f"{r['by_ev'][e]['mean']:.2f} / {r['by_ev'][e]['max']:.2f}" for e in evs]
        lines.append(f"| {name} | {r['mean']:.2f} | {r['max']:.2f} | " + " | ".join(cells) + f" | {r['worst']} |")
    return lines


def markdown(report: dict) -> str:
    lines = ["## Flat-field colour: CIEDE2000 of flat ColorChecker patches (benchmarks/flat_field.py)", "",
             *header_lines(report), "",
             f"- cases: {len(report['cameras'])} cameras ({', '.join(report['cameras'])}; daylight white balance "
             f"from each matrix) x EV {', '.join(f'{e:+d}' for e in report['evs'])} x noise "
             f"{', '.join(report['levels'])}; 24 patches each, {SAMPLE} x {SAMPLE} px measured of {PATCH} x {PATCH}",
             f"- targets (issue #10): mean at most {TARGET_MEAN}, largest at most {TARGET_MAX}; cells are mean / "
             "largest CIEDE2000",
             f"- noise draws per case: {report.get('draws', 1)}; every mean (developed, floor, truth) is averaged "
             "over them in linear light before the comparison", "",
             "**Drift**: CIEDE2000 between each patch's developed mean and the mean of the noisy mosaic's own "
             "samples over the same pixels, its negative channels at 0 as an image holds them (what the developer "
             "adds: bias from clipping, the network, tone and gamut handling; the targets are checked on this):",
             "",
             *table(report["rows"], "drift"), "",
             "**To the truth**: CIEDE2000 to the patch's reference colour. The floor row is the noisy mean "
             f"itself: with {SAMPLE} x {SAMPLE} pixels and these draws, the noise of the sample alone keeps any "
             "developer this far from the truth in the dark, noisy cases:", "",
             *table(report["rows"], "truth"), ""]
    names = patch_names()
    rows = report["rows"]
    lines += ["Mean drift per patch (all cases):", "", "| patch | " + " | ".join(n for n in rows if n != FLOOR) + " |",
              "|---|" + "---|" * (len(rows) - 1)]
    for i, n in enumerate(names):
        lines.append(f"| {n} | " + " | ".join(f"{r['drift']['by_patch'][i]:.2f}" for k, r in rows.items()
                                              if k != FLOOR) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/flat_field.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="extend", nargs="+", default=[], metavar="PATH_OR_NAME",
                   help="ONNX file or registry name (default: the shipped default model)")
    p.add_argument("--cameras", nargs="+", default=list(CAMERAS))
    p.add_argument("--evs", nargs="+", type=int, default=list(EVS))
    p.add_argument("--levels", nargs="+", choices=LEVELS, default=list(LEVELS))
    p.add_argument("--no-libraw", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=DRAWS, help="noise draws per case, averaged (default %(default)s)")
    p.add_argument("--out", type=Path, default=RESULTS / "flat_field.json")
    p.add_argument("--markdown", type=Path, default=RESULTS / "flat_field.md")
    p.add_argument("--results-md", type=Path, default=RESULTS_MD)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    say = sayer(args.quiet)
    from rawdev import DEFAULT_MODEL
    from rawdev.model import resolve_model
    from rawdev.session import open_session

    sessions = {}
    for name in args.model or [DEFAULT_MODEL]:
        s = open_session(resolve_model(name), "cpu", args.threads)
        sessions[f"rawdev {Path(s.path).stem} ({s.contract.steps} steps)"] = s
    started = now()
    cases = all_cases(args.cameras, args.evs, args.levels)
    with tempfile.TemporaryDirectory(prefix="rawdev-flat-") as tmp:
        rows = evaluate(sessions, cases, Path(tmp), args.seed, not args.no_libraw, say, args.draws)
    report = {"benchmark": "flat-field", "command": command_line("flat_field.py", argv).rstrip(), "started": started,
              "finished": now(), "code": code_version(), "machine": machine_info(), "versions": library_versions(),
              "cameras": args.cameras, "evs": args.evs, "levels": args.levels, "draws": args.draws,
              "rows": rows}
    write_json(args.out, report)
    text = markdown(report)
    args.markdown.write_text(text)
    update_results_md(args.results_md, RESULTS_KEY, text)
    say("\n".join(table(rows, "drift") + [""] + table(rows, "truth")))
    say(f"wrote {args.out}, {args.markdown} and the {RESULTS_KEY} section of {args.results_md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
