"""The rawdev command line: parse, call, report. Exit codes: 0 ok, 1 a file failed, 2 usage."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer

from rawdev import DEFAULT_MODEL, __version__
from rawdev import options as opts

app = typer.Typer(
    name="rawdev",
    help="Develop camera RAW files into 16-bit images with CSANet, a learned ISP.",
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rawdev {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """rawdev: camera RAW files in, full-resolution 16-bit TIFF or PNG out."""
    # numpy's BLAS only multiplies pixel rows by 3x3 colour matrices here, beside onnxruntime's
    # threads on every core: a thread pool of its own would contend with them (render 0.11 s a
    # 9 MP file single-threaded, 0.15 s with its pool). Set before numpy loads; the workers inherit it.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _console(stderr: bool = False):
    from rich.console import Console

    # soft_wrap: a file's failure stays one line however long its path is.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def usage_error(message: str) -> typer.Exit:
    from rich.markup import escape

    _console(stderr=True).print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(2)


@app.command()
def develop(
    inputs: list[str] = typer.Argument(..., help="RAW files, globs or folders."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output folder (default: beside each input)."),
    model: opts.Model = DEFAULT_MODEL,
    device: opts.Device = "auto",
    precision: opts.Precision = "auto",
    threads: opts.Threads = 0,
    jobs: opts.Jobs = "auto",
    fmt: str = typer.Option("tiff", "--format", "-f", help="tiff, png, or dng (linear camera RGB for a raw "
                            "editor: {stem}.rawdev.dng)."),
    bits: int = typer.Option(16, help="Bits per channel: 8 or 16."),
    compression: str | None = typer.Option(None, help="TIFF: none (default, as dcraw, RawTherapee and Lightroom "
                                           "write), deflate (about 20 % smaller, 0.45 s more per 9 MP), zstd or "
                                           "lzw, always with the predictor (zstd is fast but not every reader has "
                                           "it). PNG: deflate (default) or none. DNG: none."),
    wb: opts.WhiteBalance = "camera",
    exposure: opts.Exposure = "auto",
    look: opts.Look = "default",
    quad_bayer: opts.QuadBayer = "bin",
    cfa: opts.CFAOverride = None,
    black: opts.Black = None,
    white: opts.White = None,
    tile: opts.Tile = "auto",
    overlap: opts.Overlap = 16,
    denoise: opts.Denoise = "auto",
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into folders, keep sub-folders."),
    overwrite: bool = typer.Option(False, help="Replace existing outputs."),
    decode_timeout: float = typer.Option(120.0, "--decode-timeout",
                                         help="Seconds a file may take to decode before it fails."),
    ray: str | None = typer.Option(None, "--ray", metavar="auto|ADDRESS",
                                   help="Spread the files over a Ray cluster (needs the optional ray extra): "
                                        "auto joins a running one or starts a local one; --threads is then "
                                        "CPUs per actor."),
) -> None:
    """Develop RAW files into 16-bit sRGB TIFF or PNG images, or linear DNGs for a raw editor."""
    if ray is None:  # first: the decoder process imports and decodes a single file while this one
        from rawdev.decode import prestart_worker  # imports the pipeline and loads the model
        from rawdev.inputs import the_only_job

        only = the_only_job(inputs, recursive, output, fmt, overwrite) if cfa is None else None
        prestart_worker(only.source if only is not None else None, black, white)
    from rawdev.batch import RunOptions, run_batch
    from rawdev.cfa import CFAError
    from rawdev.inputs import InputError, collect_inputs, plan_jobs
    from rawdev.model import ContractError
    from rawdev.session import PROVIDER_OF, DeviceUnavailable, check_device, import_onnxruntime, open_session

    err = _console(stderr=True)
    from rawdev.output import COMPRESSIONS

    if fmt not in COMPRESSIONS:
        raise usage_error(f"--format {fmt!r}: choose tiff, png or dng")
    choices = COMPRESSIONS[fmt]
    compression = compression or choices[0]
    if fmt == "dng" and bits != 16:
        raise usage_error(f"--bits {bits}: a DNG always holds 16-bit linear data")
    if compression not in choices:
        raise usage_error(f"--compression {compression!r}: for {fmt.upper()} choose {', '.join(choices)}")
    if not decode_timeout > 0:  # also refuses nan
        raise usage_error(f"--decode-timeout {decode_timeout:g}: give a number of seconds above 0")
    try:
        options = opts.develop_options(wb, quad_bayer, exposure, look, tile, overlap, bits, denoise)
        cfa_override = opts.cfa_option(cfa)
        opts.check_values(threads, black, white)
        from rawdev.workers import parse_jobs

        jobs = parse_jobs(jobs)
        choice = opts.model_choice(model, precision)
        # A shipped model is checked against its sha256 here; where --precision auto depends on
        # the execution provider, once the decoder has started (onnxruntime is imported then).
        model_path = None if choice.needs_provider else opts.pick_model(choice, device)
    except (ValueError, CFAError) as exc:  # ContractError is a ValueError
        raise usage_error(str(exc)) from None
    try:  # before anything is written: a missing onnxruntime, a device it cannot give
        if ray is None:
            check_device(device)
        else:  # the actors' devices are those of their nodes, checked there
            import_onnxruntime()
    except DeviceUnavailable as exc:
        raise usage_error(str(exc)) from None
    try:
        files = collect_inputs(inputs, recursive, include_png=True)
    except InputError as exc:
        raise usage_error(str(exc)) from None
    if output is not None and (problem := _output_folder_problem(output)):
        raise usage_error(problem)
    planned = plan_jobs(files, output, fmt, recursive)
    from rawdev.distributed import ClusterUnavailable, RayPool

    pool = None
    workers, threads_each = 1, threads
    try:
        if model_path is None:
            model_path = opts.pick_model(choice, device)
        if ray is None:
            from rawdev.workers import batch_layout

            session = open_session(model_path, device, threads, spinning=len(planned) <= 1)
            opts.check_contract(options, session.contract, session.path, fmt)
            opts.check_precision(precision, session.contract, session.path)
            on_cpu = session.providers[0] == PROVIDER_OF["cpu"]
            workers, threads_each = batch_layout(jobs, threads, len(planned), on_cpu, _largest(planned))
        else:  # the same jobs, developed by Ray actors (rawdev/distributed.py)
            from rawdev.model import read_contract

            contract = read_contract(model_path)
            opts.check_contract(options, contract, model_path, fmt)
            opts.check_precision(precision, contract, model_path)
            pool = RayPool.start(ray, model_path, device, threads, files=len(planned))
    except (ContractError, DeviceUnavailable, ClusterUnavailable, ValueError) as exc:
        raise usage_error(str(exc)) from None
    if output is not None:  # only now: a refused model or device leaves nothing behind
        problem = None
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            problem = f"cannot create output folder {output}: {exc.strerror or exc}"
        if problem is None and not _writable(output):
            problem = f"output folder {output} is not writable; choose another -o"
        if problem:
            if pool is not None:
                pool.close()
            raise usage_error(problem)
    from rich.markup import escape

    line = opts.session_line(session) if pool is None else pool.describe()
    if workers > 1:
        line += f" in {workers} worker processes x {threads_each} thread(s)"
    err.print(escape(line))
    where = output if output is not None else "beside each input"
    err.print(f"developing {len(planned)} file(s) -> {where}")
    run = RunOptions(overwrite=overwrite, fmt=fmt, compression=compression, cfa_override=cfa_override,
                     black=black, white=white, decode_timeout=decode_timeout)
    if run.overlap is None:
        from rawdev.workers import overlap_pays

        run.overlap = overlap_pays(threads_each, workers)
    from rawdev.progress import make_reporter

    reporter = make_reporter(err)
    with reporter:
        if workers > 1:
            from rawdev.workers import run_parallel

            del session  # each worker opens its own
            summary = run_parallel(planned, model_path, device, options, run, reporter, workers, threads_each)
        elif pool is None:
            summary = run_batch(planned, session, options, run, reporter)
        else:
            with pool:
                summary = pool.run(planned, options, run, reporter)
    reporter.print_summary(summary)
    raise typer.Exit(summary.exit_code)


@app.command("convert-weights")
def convert_weights(
    checkpoint: Path = typer.Argument(..., help="Run folder, ckpt-N prefix or .weights.h5 file."),
    output: Path | None = typer.Option(None, "-o", "--output", help="ONNX file (default: model.onnx here)."),
    variant: str | None = typer.Option(None, help="paper or residual (default: from the run's config)."),
    width: int | None = typer.Option(None, help="Channel width C (default: from the run's config)."),
    output_space: str | None = typer.Option(None, help="linear or srgb (default: from the run's config)."),
    name_map: Path | None = typer.Option(None, help="JSON map of foreign variable names to ours."),
    fixed_shape: str | None = typer.Option(None, help="Static output size HxW for NNAPI, e.g. 544x960."),
    ort: bool = typer.Option(False, "--ort", help="Also write the ORT format for mobile runtimes."),
) -> None:
    """Convert a TensorFlow checkpoint to ONNX, checked against TensorFlow before writing."""
    from rawdev.convert import ConversionError, convert_checkpoint
    from rawdev.session import RuntimeMissing, import_onnxruntime

    try:
        import_onnxruntime()  # the conversion is checked in onnxruntime
    except RuntimeMissing as exc:
        raise usage_error(str(exc)) from None
    fixed = None
    if fixed_shape:
        try:
            h, w = (int(v) for v in fixed_shape.lower().split("x"))
        except ValueError:
            raise usage_error(f"--fixed-shape {fixed_shape!r}: give HxW, e.g. 544x960") from None
        if h % 4 or w % 4:
            raise usage_error("--fixed-shape: height and width must be multiples of 4")
        fixed = (h, w)
    target = output or Path("model.onnx")
    try:
        report = convert_checkpoint(checkpoint, target, variant=variant, width=width, output_space=output_space,
                                    name_map=name_map, fixed_shape=fixed, ort_format=ort)
    except (ConversionError, FileNotFoundError, ValueError) as exc:
        from rich.markup import escape

        _console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    c = report.contract
    out = _console()
    out.print(f"largest difference to TensorFlow: {report.max_abs_diff:.3g} over inputs {report.parity_shapes}")
    out.print(f"wrote {report.output} (CSANet {c.variant}, C={c.width}, {c.output_space}, {c.steps} steps, "
              f"weights sha256 {c.weights_sha256[:16]})")
    if report.ort_output:
        out.print(f"wrote {report.ort_output}")


@app.command()
def quantize(
    model: str = typer.Argument(..., help="Registry name or path of the fp32 .onnx model."),
    output: Path = typer.Option(..., "-o", "--output", help="int8 ONNX file to write."),
    samples: int = typer.Option(64, help="Calibration tiles."),
    seed: int = typer.Option(0, help="Seed of the calibration data: the same model, data and seed give the same file."),
    data: list[Path] = typer.Option([Path("../shared/data/train")], help="Folders of photographs to calibrate on."),
    tile: int = typer.Option(256, help="Calibration tile in packed samples (develop's tile)."),
    roles: str = typer.Option("attention", help="What is quantized, comma-separated: attention, trunk, input, "
                              "output, or all; the rest stays fp32 (attention: within 0.1 dB of fp32)."),
    activation: str = typer.Option("uint8", help="Activation type: uint8 or int8."),
    method: str = typer.Option("percentile", help="Calibration: percentile (99.99), minmax or entropy."),
) -> None:
    """Make a static int8 (QDQ) model from an fp32 one, calibrated on synthetic RAW from photographs."""
    from rawdev.model import ContractError
    from rawdev.quantize import ROLES, QuantizeError, quantize_model

    chosen = ROLES if roles.strip() == "all" else tuple(r.strip() for r in roles.split(",") if r.strip())
    out = _console()
    try:
        report = quantize_model(model, output, samples=samples, seed=seed, data=data, tile=tile, roles=chosen,
                                activation=activation, method=method, log=lambda s: out.print(s))
    except (QuantizeError, ContractError) as exc:
        raise usage_error(str(exc)) from None
    kept = ", ".join(f"{role} {len(names)}" for role, names in report.kept_fp32.items()) or "none"
    out.print(f"wrote {report.output} (sha256 {report.sha256[:16]}): int8 of {report.fp32_model} "
              f"(sha256 {report.fp32_sha256[:16]}), {len(report.quantized)} nodes quantized ({', '.join(chosen)}); "
              f"fp32 nodes: {kept}")
    c = report.check
    if c:
        out.print(f"against fp32 on {c['tiles']} held-out synthetic tiles: sRGB PSNR {c['psnr_srgb_db']} dB "
                  f"({c['psnr_srgb_dark_db']} dB in the darks), largest linear difference {c['max_abs_linear']}")


@app.command()
def train(
    run_dir: Path = typer.Argument(..., help="Folder for checkpoints, config.json and log.csv."),
    variant: str = typer.Option("residual", help="paper, residual or noise (residual told the noise level)."),
    width: int = typer.Option(32, help="Channel width C."),
    steps: int = typer.Option(60000, help="Total steps; the learning-rate schedule scales to it."),
    batch: int = typer.Option(16, help="Batch size."),
    patch: int = typer.Option(128, help="Training crop size in output pixels."),
    data: list[Path] = typer.Option([Path("../shared/data/train")], help="Folders of training photographs."),
    val: str = typer.Option("../shared/data/val/cbsd68", help="Held-out validation photographs ('' for none)."),
    pairs: tuple[Path, Path] | None = typer.Option(None, help="RAW_DIR RGB_DIR of real aligned pairs (srgb model)."),
    vgg_weights: Path | None = typer.Option(None, help="VGG-19 weights file for the perceptual term."),
    checkpoint_every: int = typer.Option(500, help="Steps between checkpoints."),
    validate_every: int = typer.Option(2000, help="Steps between validations."),
    max_minutes: float | None = typer.Option(None, help="Stop (with a checkpoint) after this long."),
    resume: bool = typer.Option(True, help="Continue from the run folder's newest checkpoint."),
    seed: int = typer.Option(0, help="Seed of the data synthesis."),
    colour_weight: float = typer.Option(0.0, help="Weight of the low-pass colour loss (8x8 block means)."),
    hard_fraction: float = typer.Option(0.0, help="Share of crops mined as the hardest to demosaic of four."),
    warm_start: Path | None = typer.Option(None, help="Checkpoint or run folder of a CSANet to start from."),
    lr_max: float | None = typer.Option(None, help="Cap on the learning-rate schedule (for a warm start)."),
    balance_sets: bool = typer.Option(False, help="Draw each sub-folder of the training folders equally often."),
    correction_lowpass: float = typer.Option(
        0.0, help="Take the local mean (Gaussian sigma in pixels) off the network's correction, so areas keep "
        "the mosaic's own mean colour; 0 = off."),
    n_dam: int = typer.Option(2, min=1, help="Dual attention modules in the H/4 trunk."),
    half_depth: int = typer.Option(0, min=0, help="3x3 convolutions of width C/2 at H/2, where aliasing is resolved; "
                                   "0 = one 1x1 fuse of width C (the shipped models up to csanet-nmlp-c32)."),
    half_branch: int = typer.Option(0, min=0, help="3x3 convolutions of width C/2 in a residual branch on the H/2 "
                                    "fuse, its output initialised to zero (warm-starts from a model without it)."),
    branch_width: int = typer.Option(0, min=0, help="Width of that branch (0: C/2)."),
    head_conv: bool = typer.Option(True, "--head-conv/--no-head-conv",
                                   help="Keep the trunk's 3x3 convolution after the strided head."),
    learned_base: float = typer.Option(0.0, min=0.0, help="Add a trainable linear filter (zero response on flat "
                                       "planes) to the bilinear base, its parameter scaled by this gain (it learns "
                                       "that much faster); 0 = none. Folds into the base at no cost."),
    dam_inner: int = typer.Option(0, min=0, help="Channels inside each DAM, between its two 3x3 convolutions "
                                  "(0: --width); narrower than a --warm-start model keeps its strongest ones."),
    loss_space: str = typer.Option("camera", help="camera (white-balanced camera RGB, as the network outputs "
                                   "it) or srgb (through each sample's colour matrix, as the image is scored)."),
    pixel_loss: str = typer.Option("charbonnier", help="charbonnier (a smooth L1) or rmse (each crop's RMS "
                                   "error, the error PSNR scores, at L1's scale)."),
) -> None:
    """Train CSANet on synthetic RAW (or real pairs); resumable."""
    try:
        from rawdev.train.loop import LOSS_SPACES, PIXEL_LOSSES, TrainConfig
        from rawdev.train.loop import train as run_training
    except ImportError as exc:
        raise usage_error(f"training needs TensorFlow: pip install 'rawdev[train]' ({exc})") from None
    if loss_space not in LOSS_SPACES or (loss_space == "srgb" and pairs):
        raise usage_error(f"--loss-space {loss_space!r}: choose {' or '.join(LOSS_SPACES)} (srgb: synthetic data only)")
    if pixel_loss not in PIXEL_LOSSES:
        raise usage_error(f"--pixel-loss {pixel_loss!r}: choose {' or '.join(PIXEL_LOSSES)}")
    if learned_base and variant == "paper":
        raise usage_error("--learned-base needs the bilinear base of --variant residual or noise")
    if (half_depth or half_branch) and variant == "paper":
        raise usage_error("--half-depth and --half-branch need the H/2 shortcut of --variant residual or noise")
    if half_depth and half_branch:
        raise usage_error("--half-depth and --half-branch: choose one")
    if width % (8 if half_depth else 4):
        raise usage_error(f"--width {width}: give a multiple of {8 if half_depth else 4} "
                          f"(the {'C/2 ' if half_depth else ''}channels go through a 2x2 depth-to-space)")
    config = TrainConfig(
        str(run_dir), variant=variant, width=width, steps=steps, batch=batch, patch=patch, seed=seed,
        train_dirs=[str(d) for d in data], val_dir=val.strip(),
        pairs=(str(pairs[0]), str(pairs[1])) if pairs else None,
        output_space="srgb" if pairs else "linear",
        vgg_weights=str(vgg_weights) if vgg_weights else None,
        checkpoint_every=checkpoint_every, validate_every=validate_every,
        colour_weight=colour_weight, hard_fraction=hard_fraction,
        warm_start=str(warm_start) if warm_start else None, lr_max=lr_max, balance_sets=balance_sets,
        correction_lowpass=correction_lowpass, n_dam=n_dam, half_depth=half_depth, half_branch=half_branch,
        branch_width=branch_width, head_conv=head_conv, loss_space=loss_space, learned_base=learned_base,
        dam_inner=dam_inner, pixel_loss=pixel_loss,
    )
    run_training(config, resume=resume, max_minutes=max_minutes, log=lambda s: typer.echo(s))


def _largest(jobs) -> int:
    """Bytes of the largest input that exists (a missing one fails as its own job)."""
    sizes = [j.source.stat().st_size for j in jobs if j.source.is_file()]
    return max(sizes, default=0)


def _output_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot become the output folder, found without creating anything: it or its
    nearest existing parent must be a folder this process may write into."""
    import os

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot create output folder {folder}: {existing} is not a folder"
    if existing == folder:
        return None if _writable(folder) else f"output folder {folder} is not writable; choose another -o"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot create output folder {folder}: {existing} is not writable; choose another -o"
    return None


def _writable(folder: Path) -> bool:
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rawdev-probe-"):
            return True
    except OSError:
        return False


@app.command()
def info() -> None:
    """Versions, execution providers and LibRaw."""
    import numpy as np
    import rawpy
    from rich.markup import escape
    from rich.table import Table

    from rawdev.session import BOTH_INSTALLED, RuntimeMissing, import_onnxruntime, installed_builds

    table = Table(show_header=False, box=None)
    table.add_row("rawdev", __version__)
    table.add_row("python", sys.version.split()[0])
    table.add_row("numpy", np.__version__)
    table.add_row("rawpy / LibRaw", f"{rawpy.__version__} / {'.'.join(map(str, rawpy.libraw_version))}")
    from rawdev.precision import INT8_FLAGS, cpu_flags

    table.add_row("int8 instructions", ", ".join(sorted(cpu_flags() & set(INT8_FLAGS))) or "none (no VNNI or AMX)")
    try:
        ort = import_onnxruntime()
    except RuntimeMissing as exc:  # info still reports the rest
        table.add_row("onnxruntime", escape(f"missing: {exc}"))
        _console().print(table)
        return
    builds = installed_builds()
    table.add_row("onnxruntime", escape(f"{ort.__version__} ({BOTH_INSTALLED if len(builds) > 1 else builds[0]})"
                                        if builds else ort.__version__))
    table.add_row("available providers", ", ".join(ort.get_available_providers()))
    try:
        from rawdev.session import open_session

        t0 = time.perf_counter()
        s = open_session(opts.pick_model(opts.model_choice(DEFAULT_MODEL, "auto"), "auto"), "auto")
        load_ms = (time.perf_counter() - t0) * 1000
        table.add_row("applied (auto)", f"{', '.join(s.providers)}, {s.contract.precision} ({load_ms:.0f} ms to load)")
    except Exception as exc:  # noqa: BLE001 - info reports, it does not fail
        table.add_row("applied (auto)", escape(f"no default model loaded: {exc}"))
    _console().print(table)


models_app = typer.Typer(help="List, verify and locate shipped models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Shipped models with their contracts."""
    from rich.table import Column, Table

    from rawdev.model import read_contract, registry

    table = Table(Column("name", no_wrap=True), "variant", "C", "output", "steps", "precision",
                  Column("file", overflow="fold"))
    for name, m in sorted(registry().items()):
        c = read_contract(m.path)
        table.add_row(name, c.variant, str(c.width), c.output_space, str(c.steps), c.precision, str(m.path))
    _console().print(table)


@models_app.command("verify")
def models_verify() -> None:
    """Check each shipped model's sha256 against the registry."""
    from rawdev.model import registry

    bad = 0
    for name, m in sorted(registry().items()):
        ok = m.verify()
        bad += not ok
        typer.echo(f"{name}: {'ok' if ok else 'MISMATCH'} {m.sha256[:16]}")
    raise typer.Exit(1 if bad else 0)


@models_app.command("path")
def models_path(name: str = typer.Argument(DEFAULT_MODEL)) -> None:
    """Print the file path of a model."""
    from rawdev.model import ContractError, resolve_model

    try:
        typer.echo(str(resolve_model(name, verify=False)))  # where it is, even when it is damaged
    except ContractError as exc:
        raise usage_error(str(exc)) from None


@app.command("compare")
def compare(
    candidate: Path = typer.Argument(
        ..., help="RAW file (developed here) or developed image (TIFF, PNG, JPEG), or a folder of them."
    ),
    reference: Path = typer.Argument(..., help="Reference image (TIFF, PNG, JPEG), or a folder of them."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON instead of a table."),
    align: bool = typer.Option(True, "--align/--no-align", help="Find and undo a small global shift."),
    border: int = typer.Option(0, help="Leave N pixels out on each side before scoring."),
    model: opts.Model = DEFAULT_MODEL,
    device: opts.Device = "auto",
    precision: opts.Precision = "auto",
    threads: opts.Threads = 0,
    wb: opts.WhiteBalance = "camera",
    exposure: opts.Exposure = "auto",
    look: opts.Look = "default",
    quad_bayer: opts.QuadBayer = "bin",
    cfa: opts.CFAOverride = None,
    black: opts.Black = None,
    white: opts.White = None,
    tile: opts.Tile = "auto",
    overlap: opts.Overlap = 16,
) -> None:
    """Score a developed RAW file (or an image) against a reference: PSNR, SSIM, CIEDE2000.

    Geometry is matched first and every step reported: orientation tags, a common size (area
    average by an integer factor, Lanczos-3 otherwise), centre crop, sub-pixel alignment.
    Pairs whose aspect ratios differ by more than 5% are refused. Two folders are paired by
    file name stem (RAW files first; a folder may be compared with itself) and the means
    close the table. Exit code 1 when a pair failed, 2 for usage errors.
    """
    import json

    from rich.markup import escape

    from rawdev.cfa import CFAError
    from rawdev.compare import (
        Developer,
        PairResult,
        UsageError,
        compare_pair,
        is_raw,
        plan_pairs,
        render_table,
        to_json,
    )
    from rawdev.model import ContractError
    from rawdev.session import DeviceUnavailable

    err = _console(stderr=True)
    if border < 0:
        raise usage_error(f"--border {border}: give 0 or more pixels")
    try:
        options = opts.develop_options(wb, quad_bayer, exposure, look, tile, overlap)
        cfa_override = opts.cfa_option(cfa)
        opts.check_values(threads, black, white)
        choice = opts.model_choice(model, precision)
    except (ValueError, CFAError) as exc:
        raise usage_error(str(exc)) from None
    try:
        plan = plan_pairs(candidate, reference)
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    developer = Developer(model, device, threads, options, cfa_override, black, white)
    if any(is_raw(c) for c, _, error in plan.pairs if error is None):
        try:
            developer.model = str(opts.pick_model(choice, device))  # a shipped model's sha256 checked
            developer.open()
            opts.check_precision(precision, developer.session.contract, developer.session.path)
        except (ContractError, DeviceUnavailable, ValueError) as exc:
            raise usage_error(str(exc)) from None
        s = developer.session
        err.print(escape(opts.session_line(s)))

    results = []
    for cand, ref, error in plan.pairs:
        if error is not None:
            result = PairResult(cand.stem, cand, ref, error=error)
        else:
            result = compare_pair(cand, ref, developer, align, border)  # type: ignore[arg-type]
        results.append(result)
        if result.ok:
            geo = result.geometry
            steps = "; ".join(geo.steps) if geo and geo.steps else "same size, no change"
            err.print(escape(f"{result.name}: {steps}; scored {geo.size[0]}x{geo.size[1]}" if geo else result.name))
        else:
            err.print(f"[red]failed:[/red] {escape(str(result.error))}")
    if plan.ignored:
        err.print(escape(f"ignored (a RAW file has the same name): {', '.join(p.name for p in plan.ignored)}"))
    if plan.unpaired_candidates:
        err.print(escape(f"unpaired, no reference: {', '.join(p.name for p in plan.unpaired_candidates)}"))
    if plan.unpaired_references:
        err.print(escape(f"unpaired, no candidate: {', '.join(p.name for p in plan.unpaired_references)}"))

    if as_json:
        typer.echo(json.dumps(to_json(results, plan), indent=2))
    else:
        _console().print(render_table(results))
    failed = sum(not r.ok for r in results)
    if failed and len(results) > 1:
        err.print(f"{len(results) - failed} pair(s) scored, {failed} failed")
    raise typer.Exit(1 if failed else 0)


def console_main() -> None:
    """The ``rawdev`` command; once it has finished, the process ends without the interpreter's
    teardown (rawdev.exiting): 0.15-0.2 s of every run, a tenth of a small file's."""
    from rawdev.exiting import exit_without_teardown

    try:
        app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    exit_without_teardown(code)


if __name__ == "__main__":
    console_main()
