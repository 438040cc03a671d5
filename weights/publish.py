"""Publish a training run as a shipped model: convert its newest checkpoint, register its sha256,
and keep the checkpoint and log that made it.

    python weights/publish.py runs/csanet-res-c32 csanet-res-c32
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from rawdev.convert import convert_checkpoint, find_checkpoint
from rawdev.model import WEIGHTS_DIR, file_sha256
from rawdev.train.plot import plot_curves

HERE = Path(__file__).parent


def publish(run_dir: Path, name: str, card: str) -> dict:
    onnx_path = WEIGHTS_DIR / f"{name}.onnx"
    report = convert_checkpoint(run_dir, onnx_path)
    prefix, _ = find_checkpoint(run_dir)
    keep = HERE / "checkpoints" / name
    with tempfile.TemporaryDirectory() as staging:  # run_dir may be ``keep`` itself (a republish)
        staged = Path(staging)
        for f in prefix.parent.glob(prefix.name + ".*"):
            shutil.copy2(f, staged / f.name)
        for extra in ("config.json", "log.csv"):
            if (run_dir / extra).exists():
                shutil.copy2(run_dir / extra, staged / extra)
        if keep.exists():
            shutil.rmtree(keep)
        shutil.copytree(staged, keep)
    (keep / "checkpoint").write_text(f'model_checkpoint_path: "{prefix.name}"\n')
    if (keep / "log.csv").exists():
        plot_curves(keep / "log.csv", keep / "curves.png", title=f"{name}: training curves")
    index_path = WEIGHTS_DIR / "registry.json"
    entries = json.loads(index_path.read_text()) if index_path.exists() else []
    entries = [e for e in entries if e["name"] != name]
    entry = {"name": name, "file": onnx_path.name, "sha256": file_sha256(onnx_path), "card": card,
             "steps": report.contract.steps, "max_abs_diff_to_tf": report.max_abs_diff}
    entries.append(entry)
    index_path.write_text(json.dumps(sorted(entries, key=lambda e: e["name"]), indent=2) + "\n")
    return entry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_dir", type=Path)
    p.add_argument("name")
    p.add_argument("--card", default="weights/README.md")
    a = p.parse_args()
    print(json.dumps(publish(a.run_dir, a.name, a.card), indent=2))


if __name__ == "__main__":
    main()
