"""Training curves as a PNG: loss and learning rate against step, validation PSNR / SSIM.

Written beside ``log.csv`` as ``curves.png`` whenever the training loop logs a row, and by
``python -m rawdev.train.plot RUN_DIR [OUT.png]`` for any run folder (or log file).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

VALIDATION_SETS = (("low", "low noise"), ("medium", "medium noise"), ("pairs", "paired data"))


def read_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Each numeric column of a training log as (step, value) points; empty cells are left out."""
    series: dict[str, list[tuple[int, float]]] = {}
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            for key, value in row.items():
                if key != "step" and value not in ("", None):
                    series.setdefault(key, []).append((step, float(value)))
    return series


def plot_curves(log_csv: Path, out_png: Path, title: str = "") -> list[str]:
    """Draw the curves of ``log_csv`` into ``out_png``; returns the names of the curves drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_log(log_csv)
    if not series.get("loss"):
        raise ValueError(f"{log_csv}: no loss rows to plot")
    drawn = []
    fig, (ax_loss, ax_psnr, ax_ssim) = plt.subplots(1, 3, figsize=(15, 4.2), dpi=100)
    steps, loss = zip(*series["loss"])
    ax_loss.plot(steps, loss, color="tab:blue", label="training loss")
    drawn.append("loss")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (Charbonnier + 0.1 (1 - SSIM))")
    if series.get("lr"):
        ax_lr = ax_loss.twinx()
        lr_steps, lr = zip(*series["lr"])
        ax_lr.step(lr_steps, lr, where="post", color="tab:gray", alpha=0.6, label="learning rate")
        ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate")
        drawn.append("lr")
    for ax, metric, unit in ((ax_psnr, "psnr", "dB"), (ax_ssim, "ssim", "")):
        for name, label in VALIDATION_SETS:
            points = series.get(f"{metric}_{name}")
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", label=label)
                drawn.append(f"{metric}_{name}")
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation {metric.upper()}" + (f" ({unit})" if unit else ""))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    ax_loss.grid(alpha=0.3)
    fig.suptitle(title or f"training curves: {Path(log_csv).parent.name}")
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)
    return drawn


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 2:
        print("usage: python -m rawdev.train.plot RUN_DIR|LOG.csv [OUT.png]", file=sys.stderr)
        return 2
    source = Path(args[0])
    log_csv = source / "log.csv" if source.is_dir() else source
    out = Path(args[1]) if len(args) > 1 else log_csv.with_name("curves.png")
    plot_curves(log_csv, out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
