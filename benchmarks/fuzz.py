"""Fuzz the RAW decoder through `rawdev develop`: mutated DNGs in batches, no batch may die.

N mutated copies of the sample DNGs (examples/chart_bayer.dng and, when present,
../shared/samples/raw/imageio_Blackmagic.dng) go through `rawdev develop` in batches of BATCH
files. Mutations: bit flips (in the TIFF structure, in the first 4 KiB, or anywhere), truncation
at a random length, and inflated dimensions (ImageWidth, ImageLength, StripByteCounts, and the
tile tags where present, in every IFD and SubIFD: multiplied by 2 to 65536 or set to the type's
largest value), alone or combined.

Counted per file: developed, failed cleanly (a RawReadError reason, or a development error),
bare exception (a reason that is only a Python exception, "TypeError: ...": a case rawdev does not
name yet), decoder crashed (the "decoder crashed" lines), decoder timed out. Checked per batch: the batch
process ended with exit code 0 or 1 and printed its summary, the summary adds up, every "ok"
has its output, no temporary or hidden file was left in the output folder, no shared memory
block of the batch is left in /dev/shm, no traceback and no resource-tracker warning on stderr.

The batches run with a memory limit (RLIMIT_AS, --memory-gib, inherited by the decoder
worker), so an inflated image fails with an out-of-memory reason instead of starving the machine.
The default model is a tiny bilinear ONNX model (tests/helpers.py): the decoder is what is
fuzzed, not the network. Not part of the test suite.

    python benchmarks/fuzz.py [-n 300] [--batch 50] [--seed 0] [--decode-timeout 20] [--keep-crashers DIR]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = [REPO / "examples" / "chart_bayer.dng", REPO.parent / "shared" / "samples" / "raw" / "imageio_Blackmagic.dng"]
SUMMARY = re.compile(r"^(\d+) ok, (\d+) skipped, (\d+) failed in", re.M)
LINE = re.compile(r"^(ok|failed|skipped)\s+(\S+?)(?::| ->) (.*)$")
OK_DETAIL = re.compile(r"\(([\d.]+) s, ([\d.]+) MP")

TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}
TYPE_MAX = {3: 0xFFFF, 4: 0xFFFFFFFF, 13: 0xFFFFFFFF}
DIMENSION_TAGS = {256: "ImageWidth", 257: "ImageLength", 279: "StripByteCounts", 322: "TileWidth",
                  323: "TileLength", 325: "TileByteCounts"}
SUB_IFD_TAGS = (330, 34665)  # SubIFDs, Exif IFD


def tiff_entries(data: bytes) -> tuple[str, list[tuple[int, int, int, int, int]]]:
    """Byte order and (tag, type, count, value offset, entry offset) of every IFD entry reachable
    from the header (IFD chain and SubIFDs); empty where the file is not TIFF-based."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8 or struct.unpack(order + "H", data[2:4])[0] != 42:
        return "<", []
    entries = []
    todo, seen = [struct.unpack(order + "I", data[4:8])[0]], set()
    while todo:
        ifd = todo.pop()
        if ifd in seen or ifd == 0 or ifd + 2 > len(data) or len(seen) > 64:
            continue
        seen.add(ifd)
        (n,) = struct.unpack(order + "H", data[ifd:ifd + 2])
        for i in range(min(n, 1000)):
            at = ifd + 2 + 12 * i
            if at + 12 > len(data):
                break
            tag, typ, count = struct.unpack(order + "HHI", data[at:at + 8])
            size = TYPE_SIZE.get(typ, 1) * count
            value_at = at + 8 if size <= 4 else struct.unpack(order + "I", data[at + 8:at + 12])[0]
            entries.append((tag, typ, count, value_at, at))
            if tag in SUB_IFD_TAGS and typ in (4, 13) and value_at + 4 * count <= len(data):
                todo.extend(struct.unpack(order + f"{count}I", data[value_at:value_at + 4 * count]))
        end = ifd + 2 + 12 * n
        if end + 4 <= len(data):
            todo.append(struct.unpack(order + "I", data[end:end + 4])[0])
    return order, entries


def flip_bits(data: bytearray, rng: random.Random, entries) -> str:
    k = rng.choice([1, 2, 4, 8, 32, 128])
    where = rng.choice(["structure", "head", "anywhere"]) if entries else rng.choice(["head", "anywhere"])
    for _ in range(k):
        if where == "structure":
            at = rng.choice(entries)[4] + rng.randrange(12)
        elif where == "head":
            at = rng.randrange(min(4096, len(data)))
        else:
            at = rng.randrange(len(data))
        if at < len(data):
            data[at] ^= 1 << rng.randrange(8)
    return f"flip {k} bits ({where})"


def inflate(data: bytearray, rng: random.Random, order: str, entries) -> str:
    targets = [e for e in entries if e[0] in DIMENSION_TAGS and e[1] in TYPE_MAX]
    if not targets:
        return "inflate: no dimension tag"
    done = []
    for tag, typ, count, value_at, _ in rng.sample(targets, min(len(targets), rng.choice([1, 1, 2, 3]))):
        size, fmt = TYPE_SIZE[typ], order + ("H" if typ == 3 else "I")
        index = rng.randrange(count)
        at = value_at + index * size
        if at + size > len(data):
            continue
        (old,) = struct.unpack(fmt, data[at:at + size])
        factor = rng.choice([2, 3, 16, 256, 65536, None])
        new = TYPE_MAX[typ] if factor is None else min(max(old, 1) * factor, TYPE_MAX[typ])
        data[at:at + size] = struct.pack(fmt, new)
        done.append(f"{DIMENSION_TAGS[tag]}[{index}] {old}->{new}")
    return "inflate " + ", ".join(done)


def mutate(original: bytes, rng: random.Random) -> tuple[bytes, str]:
    data = bytearray(original)
    order, entries = tiff_entries(original)
    kind = rng.choice(["flip", "flip", "truncate", "inflate", "inflate", "inflate+flip", "truncate+inflate"])
    notes = []
    if "inflate" in kind:
        notes.append(inflate(data, rng, order, entries))
    if "flip" in kind:
        notes.append(flip_bits(data, rng, entries))
    if "truncate" in kind:
        cut = rng.choice([rng.randrange(len(data)), rng.randrange(min(65536, len(data)))])
        del data[cut:]
        notes.append(f"truncate at {cut}")
    return bytes(data), "; ".join(notes)


def rawdev_command() -> list[str]:
    script = Path(sys.executable).parent / "rawdev"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rawdev.cli"]


def run_batch(files: list[Path], out: Path, model: str, timeout: float, memory_gib: float, fault: str = "") -> dict:
    limit = int(memory_gib * 2**30)

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ)
    env.pop("RAWDEV_TEST_DECODER_FAULT", None)
    env.pop("RAWDEV_DECODE_IN_PROCESS", None)
    if fault:
        env["RAWDEV_TEST_DECODER_FAULT"] = fault
    command = [*rawdev_command(), "develop", *map(str, files), "-o", str(out), "--model", model,
               "--decode-timeout", str(timeout)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit_memory)
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - t0
    return {"pid": proc.pid, "returncode": proc.returncode, "stdout": stdout, "stderr": stderr, "seconds": seconds}


BARE_EXCEPTION = re.compile(r"^[A-Z]\w*(Error|Exception|Warning): ")  # rawdev's fallback: "TypeError: ..."


def classify(reason: str) -> str:
    if reason.startswith("decoder crashed"):
        return "decoder crashed"
    if reason.startswith("decoder timed out"):
        return "decoder timed out"
    if BARE_EXCEPTION.match(reason):
        return "bare exception"
    return "failed cleanly"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="mutated files in all")
    parser.add_argument("--batch", type=int, default=50, help="files per `rawdev develop` run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decode-timeout", type=float, default=20.0)
    parser.add_argument("--memory-gib", type=float, default=4.0, help="address-space limit of each batch")
    parser.add_argument("--model", help="ONNX model [default: a tiny bilinear model]")
    parser.add_argument("--max-minutes", type=float, default=10.0, help="start no batch after this")
    parser.add_argument("--keep-crashers", type=Path, help="copy files that crashed or hung the decoder, or "
                        "failed with a bare Python exception as their reason, here")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--inject-fault", default="", help="RAWDEV_TEST_DECODER_FAULT for the batches, to check "
                        "that this script counts crashes (e.g. 'crash:f0003_*,hang:f0005_*')")
    args = parser.parse_args()

    samples = [p for p in SAMPLES if p.is_file()]
    originals = {p: p.read_bytes() for p in samples}
    rng = random.Random(args.seed)
    started = time.monotonic()
    counts: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    crashers: list[dict] = []
    problems: list[str] = []
    batches = 0
    slowest = (0.0, 0.0, "")  # seconds, megapixels, file of the slowest developed file
    with tempfile.TemporaryDirectory(prefix="rawdev-fuzz-") as tmp:
        model = args.model
        if model is None:
            sys.path.insert(0, str(REPO / "tests"))
            from helpers import bilinear_onnx

            model = str(bilinear_onnx(Path(tmp) / "bilinear.onnx"))
        made = 0
        while made < args.n:
            if (time.monotonic() - started) / 60 > args.max_minutes:
                problems.append(f"stopped after {made} files: --max-minutes {args.max_minutes:g} reached")
                break
            folder, out = Path(tmp) / f"batch{batches}", Path(tmp) / f"out{batches}"
            folder.mkdir()
            notes = {}
            for _ in range(min(args.batch, args.n - made)):
                source = samples[made % len(samples)]
                data, note = mutate(originals[source], rng)
                path = folder / f"f{made:04d}_{source.stem}.dng"
                path.write_bytes(data)
                notes[path.name] = note
                made += 1
            files = sorted(folder.iterdir())
            result = run_batch(files, out, model, args.decode_timeout, args.memory_gib, args.inject_fault)
            batches += 1
            text = result["stdout"] + result["stderr"]
            seen = {}
            for line in text.splitlines():
                m = LINE.match(line)
                if m and m.group(2).startswith(str(folder)):
                    seen[Path(m.group(2)).name] = (m.group(1), m.group(3))
            summary = SUMMARY.search(text)
            label = f"batch {batches} ({len(files)} files, {result['seconds']:.0f} s)"
            if result["returncode"] not in (0, 1) or summary is None:
                problems.append(f"{label}: DIED with exit code {result['returncode']}: {text[-2000:]}")
            elif sum(map(int, summary.groups())) != len(files) or len(seen) != len(files):
                problems.append(f"{label}: summary {summary.group(0)!r} / {len(seen)} lines for {len(files)} files")
            for name, (status, reason) in seen.items():
                if status == "ok":
                    counts["developed"] += 1
                    m = OK_DETAIL.search(reason)
                    if m:
                        slowest = max(slowest, (float(m.group(1)), float(m.group(2)), name))
                    if not (out / (Path(name).stem + ".tif")).is_file():
                        problems.append(f"{label}: {name} ok but no output")
                    continue
                kind = classify(reason)
                counts[kind] += 1
                reasons[re.sub(r"\d+", "N", reason)[:110]] += 1
                if kind != "failed cleanly":
                    crashers.append({"file": name, "reason": reason, "mutation": notes[name]})
                    if args.keep_crashers:
                        args.keep_crashers.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(folder / name, args.keep_crashers / name)
            if out.exists():
                left = [p.name for p in out.rglob("*") if p.name.startswith(".") or "rawdev-tmp" in p.name]
                if left:
                    problems.append(f"{label}: left in the output folder: {left}")
            shm = Path("/dev/shm")
            if shm.is_dir():
                left = [p.name for p in shm.iterdir() if p.name.startswith(f"rawdev-{result['pid']}-")]
                if left:
                    problems.append(f"{label}: left in /dev/shm: {left}")
            for marker in ("Traceback", "resource_tracker", "leaked"):
                if marker in result["stderr"]:
                    problems.append(f"{label}: {marker!r} on stderr: {result['stderr'][-1500:]}")
            print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), flush=True)
            shutil.rmtree(folder)
            shutil.rmtree(out, ignore_errors=True)

    total = sum(counts.values())
    minutes = (time.monotonic() - started) / 60
    print(f"\n{total} mutated files of {', '.join(p.name for p in samples)} in {batches} batches, {minutes:.1f} min:")
    for kind in ("developed", "failed cleanly", "bare exception", "decoder crashed", "decoder timed out"):
        print(f"  {kind:18s} {counts[kind]}")
    if slowest[2]:
        print(f"slowest developed file: {slowest[2]}, {slowest[0]:.1f} s, {slowest[1]:.1f} MP")
    print("reasons (digits as N):")
    for reason, n in reasons.most_common():
        print(f"  {n:4d}  {reason}")
    for c in crashers:
        print(f"  kept {c['file']}: {c['reason']} <- {c['mutation']}")
    print("problems: " + ("none (no batch died, nothing left behind)" if not problems else ""))
    for p in problems:
        print("  " + p)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"files": total, "batches": batches, "minutes": minutes, "counts": counts,
                                         "reasons": reasons, "crashers": crashers, "problems": problems,
                                         "slowest_developed": slowest}, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
