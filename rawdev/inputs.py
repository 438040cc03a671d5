"""The batch's plan: which files are inputs, where each one's output goes, which to skip or refuse.

Path work only, importing nothing heavy: the CLI plans a single-file run's job before numpy and
the pipeline load, so that the decoder process can start on the file while the model loads.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

RAW_SUFFIXES = {
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
    ".pef", ".srw", ".3fr", ".fff", ".iiq", ".mos", ".mrw", ".x3f", ".erf", ".kdc", ".dcr", ".rwl",
    ".raw", ".gpr", ".mef", ".mdc", ".cap", ".ari", ".bay",
}
MOSAIC_PNG_SUFFIXES = {".png"}


def is_mosaic_png(path: Path) -> bool:
    """A PNG whose header says 16-bit greyscale: what a mosaic PNG is (developed images are RGB)."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return False
    return head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and head[24] == 16 and head[25] == 0


# DNG outputs are named apart from DNG inputs, and folders and globs leave them out (as developed PNGs).
OUTPUT_SUFFIX = {"tiff": ".tif", "png": ".png", "dng": ".rawdev.dng"}


def _is_dng_output(path: Path) -> bool:
    return path.name.lower().endswith(OUTPUT_SUFFIX["dng"])


@dataclass(frozen=True)
class Job:
    """One input file and where its output goes."""

    source: Path
    output: Path


@dataclass
class Outcome:
    """What happened to one job."""

    job: Job
    status: str  # "ok", "skipped", "failed"
    message: str = ""
    seconds: float = 0.0
    megapixels: float = 0.0


class InputError(ValueError):
    """Inputs that name nothing to develop (a usage error)."""


def collect_inputs(inputs: Iterable[str], recursive: bool, include_png: bool = False) -> list[tuple[Path, Path]]:
    """Expand files, globs and folders into (file, base folder) pairs, de-duplicated, in order.

    Folders contribute RAW files, and PNGs only when they are 16-bit greyscale mosaics, so that
    developed PNGs lying beside the inputs are not taken for inputs on the next run.

    Missing paths are returned too (with base None-like ``Path()``) so that they fail as a job
    with a clear line instead of silently disappearing.
    """
    def wanted(f: Path) -> bool:
        suffix = f.suffix.lower()
        if _is_dng_output(f):
            return False
        return suffix in RAW_SUFFIXES or (include_png and suffix in MOSAIC_PNG_SUFFIXES and is_mosaic_png(f))

    seen: set[Path] = set()
    found: list[tuple[Path, Path]] = []

    def add(path: Path, base: Path) -> None:
        key = path.resolve() if path.exists() else path.absolute()
        if key not in seen:
            seen.add(key)
            found.append((path, base))

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            walker = p.rglob("*") if recursive else p.glob("*")
            files = sorted(f for f in walker if f.is_file() and wanted(f))
            if not files:
                hint = "searched sub-folders" if recursive else "use --recursive for sub-folders"
                raise InputError(f"{p}: folder holds no RAW file ({hint})")
            for f in files:
                add(f, p)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=recursive))
            if not matches:
                raise InputError(f"{item}: pattern matches no file")
            for m in matches:
                if m.is_file() and not _is_dng_output(m):
                    add(m, m.parent)
        else:
            add(p, p.parent)
    return found


def plan_jobs(files: list[tuple[Path, Path]], out_dir: Path | None, fmt: str, recursive: bool) -> list[Job]:
    """Output path of each input: ``{stem}.tif`` under ``out_dir`` (sub-folders kept with --recursive)."""
    jobs = []
    for src, base in files:
        folder = src.parent if out_dir is None else out_dir
        if out_dir is not None and recursive:
            try:
                folder = out_dir / src.parent.relative_to(base)
            except ValueError:
                folder = out_dir
        jobs.append(Job(src, folder / (src.stem + OUTPUT_SUFFIX[fmt])))
    return jobs


def check_job(job: Job, overwrite: bool, inputs: set[Path]) -> Outcome | None:
    """Refusals and skips decided before any work: None when the job should run."""
    out = job.output
    out_abs = out.resolve() if out.exists() else out.absolute()
    if out_abs in inputs or (out.exists() and job.source.exists() and os.path.samefile(out, job.source)):
        return Outcome(job, "failed", f"output {out} would replace an input file; choose another -o folder")
    if out.exists() and not overwrite:
        return Outcome(job, "skipped", f"{out} exists (use --overwrite to replace it)")
    return None


def plan_work(jobs: list[Job], overwrite: bool) -> tuple[list[Job], list[Outcome]]:
    """The jobs to develop and the outcomes decided before any work: skips, outputs that would
    replace an input, two inputs with one output (a.dng and a.nef both make a.tif). Local and
    Ray runs both decide here, so they skip and refuse alike."""
    inputs = {j.source.resolve() for j in jobs if j.source.exists()}
    todo: list[Job] = []
    decided: list[Outcome] = []
    claimed: dict[Path, Job] = {}
    for job in jobs:
        outcome = check_job(job, overwrite, inputs)
        key = Path(os.path.abspath(job.output))
        if outcome is None and key in claimed:
            outcome = Outcome(job, "failed", f"output {job.output} is already the output of {claimed[key].source}; "
                                             "develop these files into different -o folders")
        if outcome is None:
            claimed[key] = job
            todo.append(job)
        else:
            decided.append(outcome)
    return todo, decided


def the_only_job(inputs: Iterable[str], recursive: bool, out_dir: Path | None, fmt: str,
                 overwrite: bool) -> Job | None:
    """The job of a run that develops exactly one file, else None (several, none, or inputs the
    run will refuse: it says why itself)."""
    if fmt not in OUTPUT_SUFFIX:
        return None
    try:
        todo, _ = plan_work(plan_jobs(collect_inputs(inputs, recursive, include_png=True), out_dir, fmt, recursive),
                            overwrite)
    except (InputError, OSError):
        return None
    return todo[0] if len(todo) == 1 and todo[0].source.is_file() else None
