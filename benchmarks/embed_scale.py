"""`elmobatch embed` at 100k and 1M rows of a message feed with many repeats: rows/s and peak RSS.

    python benchmarks/embed_scale.py [--rows 100000 1000000] [--out benchmarks/results/embed_scale.json]

For each size, writes a CSV feed (seeded, so reproducible) made of days of 100,000 rows: in each
day most rows are drawn from that day's pool of distinct messages with a Zipf-like skew (a few
messages very often, a long tail rarely), as real feeds repeat themselves; the rest are unique
messages with numbers in them (codes, amounts, times). Every day has the same share of repeats, so
a row costs the same at every size and rows/s compares the sizes fairly (with one pool for the
whole file, a larger file would be mostly repeats and look faster than it is).
Each file is embedded by its own `elmobatch embed` process (the real CLI, fresh cache and
output) with the tiny fixture model; peak RSS is that process's alone (os.wait4). rows/s is the
manifest's (the run itself, after the model is loaded); `steady_rows_per_second` leaves out the
first chunk too (part files' times), where the encoder compiles its graph for the first batch
shapes, a fixed cost a small run amortizes less; `process_seconds` adds Python, TensorFlow and
model start-up. Prints JSON (and writes it to --out). The target: rows/s at the largest size
within 20% of the smallest, and peak RSS flat.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from embed_memory import run  # the same measured embed process (this folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT.parent / "shared" / "fixtures" / "bilm_tiny"
DAY_ROWS = 100_000  # rows per day of feed; each day has its own pool
POOL = 20_000  # distinct repeated messages per day
UNIQUE_SHARE = 0.05  # rows that are a one-off message with numbers
ZIPF_EXPONENT = 1.1


def vocabulary(rng: np.random.Generator, size: int = 8_000) -> list[str]:
    """Made-up words of 1 to 10 letters, short ones more common (as in English)."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = np.clip(rng.geometric(0.25, size), 1, 10)
    return ["".join(rng.choice(letters, n)) for n in lengths]


def sentence(rng: np.random.Generator, words: list[str]) -> str:
    """A message of SMS-like length: 2 to 60 words, median about 12 (log-normal)."""
    n = int(np.clip(rng.lognormal(2.5, 0.6), 2, 60))
    picked = rng.integers(0, len(words), n)
    return " ".join(words[i] for i in picked).capitalize() + str(rng.choice(list(".!?")))


def write_feed(path: Path, rows: int, seed: int = 0) -> int:
    """`rows` messages (columns id, text) to `path`, day after day; returns how many distinct texts it holds."""
    words = vocabulary(np.random.default_rng(seed))
    distinct: set[str] = set()
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for day, first in enumerate(range(0, rows, DAY_ROWS)):
            rng = np.random.default_rng([seed, day])
            for i, text in enumerate(day_messages(rng, words, min(DAY_ROWS, rows - first)), start=first):
                distinct.add(text)
                writer.writerow([f"m{i}", text])
    return len(distinct)


def day_messages(rng: np.random.Generator, words: list[str], rows: int) -> Iterator[str]:
    """One day's messages: Zipf-like draws from the day's pool, and some one-off messages with numbers."""
    pool = [sentence(rng, words) for _ in range(POOL)]
    weights = 1.0 / np.arange(1, POOL + 1) ** ZIPF_EXPONENT
    draws = rng.choice(POOL, rows, p=weights / weights.sum())
    unique = rng.random(rows) < UNIQUE_SHARE
    for i in range(rows):
        if unique[i]:
            yield (f"{pool[draws[i]][:-1]} code {rng.integers(100_000, 1_000_000)} "
                   f"for {rng.integers(1, 500)}.{rng.integers(0, 100):02d} at {i % 24:02d}:{i % 60:02d}")
        else:
            yield pool[draws[i]]


def embed(path: Path, work: Path, model: str, chunk_rows: int) -> dict:
    """Run one `elmobatch embed` process (fresh cache and output): its manifest figures, wall time and peak RSS."""
    peak_rss, wall, summary = run(path, work, model, chunk_rows, "--id-column", "id")
    out = work / (path.stem + "-out")
    manifest = json.loads((out / "_manifest.json").read_text())
    c, t = manifest["counts"], manifest["timings"]
    return {"seconds": t["seconds"], "rows_per_second": t["rows_per_second"],
            "steady_rows_per_second": steady_rate(out, chunk_rows), "process_seconds": round(wall, 1),
            "peak_rss_mib": round(peak_rss / 2**20, 1),
            "computed": c["computed"], "cache_hits": c["cache_hits"], "rows_embedded": c["rows_embedded"],
            "summary": summary.split(" -> ")[0]}


def steady_rate(out: Path, chunk_rows: int) -> float | None:
    """rows/s from the first part file written to the last (their mtimes): the run without its first
    chunk, which also pays for compiling the encoder's graph for the first batch shapes."""
    parts = sorted(out.glob("part-*.parquet"), key=lambda p: p.stat().st_mtime)
    seconds = parts[-1].stat().st_mtime - parts[0].stat().st_mtime
    return round((len(parts) - 1) * chunk_rows / seconds, 1) if len(parts) > 1 and seconds > 0 else None


def machine() -> dict:
    """CPU model, cores and load average (the machine may be shared: the load says how busy it was)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000], help="sizes to run")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = {"command": " ".join(["python", "benchmarks/embed_scale.py", *sys.argv[1:]]),
              "model": args.model, "chunk_rows": args.chunk_rows, "seed": args.seed, "pool": POOL,
              "unique_share": UNIQUE_SHARE, "zipf_exponent": ZIPF_EXPONENT, "machine_before": machine(), "sizes": []}
    with tempfile.TemporaryDirectory(prefix="embed-scale-") as tmp:
        work = Path(tmp)
        for rows in args.rows:
            path = work / f"feed_{rows}.csv"
            distinct = write_feed(path, rows, args.seed)
            figures = embed(path, work, args.model, args.chunk_rows)
            result["sizes"].append({"rows": rows, "distinct_texts": distinct, "input_mib": round(
                path.stat().st_size / 2**20, 1), **figures, "load_average_after": machine()["load_average"]})
            print(json.dumps(result["sizes"][-1]), file=sys.stderr, flush=True)
    first, last = result["sizes"][0], result["sizes"][-1]
    result["rows_per_second_ratio"] = round(last["rows_per_second"] / first["rows_per_second"], 3)
    if first["steady_rows_per_second"] and last["steady_rows_per_second"]:  # None: a single chunk
        result["steady_rows_per_second_ratio"] = round(last["steady_rows_per_second"] / first["steady_rows_per_second"],
                                                       3)
    result["peak_rss_ratio"] = round(last["peak_rss_mib"] / first["peak_rss_mib"], 3)
    result["machine_after"] = machine()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
