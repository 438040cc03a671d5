"""Publish the int8 sibling of a shipped model: quantize it (``rawdev quantize`` with its defaults),
register the file's sha256 with the fp32 model it was made from, and, given the report of
benchmarks/precision.py for that very file, whether it was measured faster within the quality bar
(the only case where ``--precision auto`` chooses it).

    python weights/publish_int8.py csanet-nm-c32
    python benchmarks/precision.py --pause-training
    python weights/publish_int8.py csanet-nm-c32 --results benchmarks/results/precision.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's rawdev, not an installed one

from rawdev.model import WEIGHTS_DIR, file_sha256, registry  # noqa: E402
from rawdev.quantize import quantize_model  # noqa: E402


def publish(name: str, card: str, results: Path | None, data: list[Path]) -> dict:
    models = registry()
    if name not in models or models[name].int8_of:
        raise SystemExit(f"error: {name} is not a registered fp32 model")
    target = WEIGHTS_DIR / f"{name}-int8.onnx"
    report = quantize_model(name, target, data=data)
    sha = file_sha256(target)
    faster_within_bar, measured = False, None
    if results is not None:
        verdict = json.loads(results.read_text())
        int8 = verdict["models"]["int8"]
        if int8["sha256"] != sha:
            raise SystemExit(f"error: {results} measured another file (sha256 {int8['sha256'][:12]}, this one "
                             f"{sha[:12]}); run benchmarks/precision.py on this file first")
        faster_within_bar = bool(verdict["verdict"]["faster_within_bar"])
        measured = str(results)
    index_path = WEIGHTS_DIR / "registry.json"
    entries = [e for e in json.loads(index_path.read_text()) if e["name"] != f"{name}-int8"]
    entry = {"name": f"{name}-int8", "file": target.name, "sha256": sha, "card": card, "int8_of": name,
             "fp32_sha256": report.fp32_sha256, "roles_quantized": list(report.roles),
             "calibration": {"samples": report.samples, "tile": report.tile, "seed": report.seed,
                             "method": report.method, "activation": report.activation},
             "faster_within_bar": faster_within_bar, "measured_in": measured}
    entries.append(entry)
    index_path.write_text(json.dumps(sorted(entries, key=lambda e: e["name"]), indent=2) + "\n")
    return entry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("name", help="registered fp32 model")
    p.add_argument("--card", default="weights/README.md")
    p.add_argument("--results", type=Path, default=None, help="benchmarks/precision.py's JSON for this file")
    p.add_argument("--data", type=Path, action="append", default=None,
                   help="calibration photographs (default: ../shared/data/train beside the checkout)")
    a = p.parse_args()
    data = a.data or [Path(__file__).resolve().parents[2] / "shared" / "data" / "train"]
    print(json.dumps(publish(a.name, a.card, a.results, data), indent=2))


if __name__ == "__main__":
    main()
