"""Peak memory of `elmobatch embed` does not grow with the input: N rows vs 10 x N rows.

    python benchmarks/embed_memory.py [--model DIR] [--rows 20000] [--factor 10] [--chunk-rows 10000]

Generates two CSV files of random, mostly distinct messages, embeds each in its own process
(fresh cache, so every vector is computed and stored) and reports each process's peak RSS
(from os.wait4, the child alone). Not a unit test: run it by hand, put its output in the README.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT.parent / "shared" / "fixtures" / "bilm_tiny"


def write_messages(path: Path, rows: int, seed: int = 0) -> None:
    """`rows` messages of 3 to 40 words drawn from a 5,000-word made-up vocabulary."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(5000)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "text"])
        for i in range(rows):
            words = rng.choices(vocab, k=rng.randint(3, 40))
            writer.writerow([i, rng.choice(["ham", "spam"]), " ".join(words).capitalize() + rng.choice(".!?")])


def run(path: Path, work: Path, model: str, chunk_rows: int, *options: str) -> tuple[int, float, str]:
    """(peak RSS in bytes, seconds, summary line) of one `elmobatch embed` process, writing
    WORK/<stem>-out with a fresh cache WORK/<stem>-cache; `options`: more embed options."""
    command = [sys.executable, "-m", "elmobatch.cli", "embed", str(path), "--out", str(work / (path.stem + "-out")),
               "--model", model, "--cache-dir", str(work / (path.stem + "-cache")), "--chunk-rows", str(chunk_rows),
               *options]
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    summary = proc.stdout.read().strip()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {status}")
    return usage.ru_maxrss * 1024, time.monotonic() - start, summary  # ru_maxrss is KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = []
        for rows in (args.rows, args.rows * args.factor):
            path = work / f"messages_{rows}.csv"
            write_messages(path, rows)
            peak, seconds, summary = run(path, work, args.model, args.chunk_rows)
            results.append(peak)
            print(f"{rows:>9,} rows  {path.stat().st_size / 2**20:7.1f} MiB input  peak RSS {peak / 2**20:7.1f} MiB  "
                  f"{seconds:6.1f} s  | {summary.split(' -> ')[0]}", flush=True)
    small, large = results
    print(f"peak RSS ratio {args.factor}x rows: {large / small:.3f} ({(large - small) / 2**20:+.1f} MiB)")


if __name__ == "__main__":
    main()
