"""Embedding cache lookups as the cache grows: microseconds per key for hits and misses.

    python benchmarks/cache_scale.py --entries 1000000 [--dim 32] [--cache-dir DIR]

Fills a fresh cache with N synthetic vectors through the public API (`EmbeddingCache.store`, one
segment per --segment-entries keys, as `embed` writes one per chunk), then times `lookup` from a
new cache object (as a new run would) over batches of --batch keys, all cached (hits) or none
(misses), then `compact` and the hits again; each figure is the best of 3 passes. Vectors are
3 layers x --dim floats: dim 32 keeps the disk small (the index, the part that grows with N, is
the same whatever the dim). Prints JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from elmobatch.caching import EmbeddingCache

FINGERPRINT = "be" * 32
LAYERS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--segment-entries", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000, help="keys per lookup")
    parser.add_argument("--batches", type=int, default=20, help="lookups timed, for hits and for misses")
    parser.add_argument("--cache-dir", help="where to build the cache (default: a temporary directory, removed)")
    parser.add_argument("--lookups-only", action="store_true",
                        help="time lookups in the cache a previous run left in --cache-dir (same --entries): "
                             "to measure a large cache again on a quieter machine without filling it again")
    args = parser.parse_args()
    if args.lookups_only and not args.cache_dir:
        parser.error("--lookups-only needs --cache-dir, the cache a previous run built")
    directory = Path(args.cache_dir or tempfile.mkdtemp(prefix="cache-scale-"))
    try:
        print(json.dumps(run(directory, args)))
    finally:
        if not args.cache_dir:
            shutil.rmtree(directory, ignore_errors=True)


def run(directory: Path, args) -> dict:
    rng = np.random.default_rng(0)
    if args.lookups_only:
        hits, misses = lookup_batches(rng, args)
        return {"entries": args.entries, "dim": args.dim, "keys_per_lookup": args.batch, "lookups_only": True,
                "segments": len(EmbeddingCache(directory).segments(FINGERPRINT)),
                "bytes_on_disk": disk_bytes(directory), "hit_us_per_key": us_per_key(directory, hits, True),
                "miss_us_per_key": us_per_key(directory, misses, False)}
    started = time.perf_counter()
    writer = EmbeddingCache(directory)
    for start in range(0, args.entries, args.segment_entries):
        n = min(args.segment_entries, args.entries - start)
        writer.store(FINGERPRINT, keys(range(start, start + n)),
                     rng.standard_normal((n, LAYERS, args.dim), dtype=np.float32), np.ones(n, np.int32))
    result = {"entries": args.entries, "dim": args.dim, "layers": LAYERS, "segment_entries": args.segment_entries,
              "keys_per_lookup": args.batch, "fill_s": round(time.perf_counter() - started, 1),
              "segments": len(writer.segments(FINGERPRINT)), "bytes_on_disk": disk_bytes(directory)}
    hit_batches, miss_batches = lookup_batches(rng, args)
    result["hit_us_per_key"] = us_per_key(directory, hit_batches, expect_found=True)
    result["miss_us_per_key"] = us_per_key(directory, miss_batches, expect_found=False)
    started = time.perf_counter()
    compacted = EmbeddingCache(directory).compact()
    result["compact_s"] = round(time.perf_counter() - started, 2)
    result.update(compacted)
    result["bytes_after_compact"] = disk_bytes(directory)
    result["hit_us_per_key_after_compact"] = us_per_key(directory, hit_batches, expect_found=True)
    return result


def lookup_batches(rng, args) -> tuple[list[list[bytes]], list[list[bytes]]]:
    """Batches of stored keys (random) and of keys never stored."""
    hits = [keys(rng.choice(args.entries, min(args.batch, args.entries), replace=False)) for _ in range(args.batches)]
    misses = [keys(range(args.entries + b * args.batch, args.entries + (b + 1) * args.batch))
              for b in range(args.batches)]
    return hits, misses


def keys(numbers) -> list[bytes]:
    return [hashlib.sha256(f"message {int(i)}".encode()).digest() for i in numbers]


def us_per_key(directory: Path, batches: list[list[bytes]], expect_found: bool, passes: int = 3) -> float:
    """Microseconds per key over the batches, looked up by a new cache object (as a new run would);
    the best of `passes` passes (the machine is shared: the best pass is the least disturbed)."""
    best = float("inf")
    for _ in range(passes):
        cache = EmbeddingCache(directory)
        cache.lookup(FINGERPRINT, batches[0][:10])  # opens the index: once per run, not per key
        started = time.perf_counter()
        for batch in batches:
            found = cache.lookup(FINGERPRINT, batch)
            assert len(found) == (len(batch) if expect_found else 0), (len(found), len(batch))
        best = min(best, time.perf_counter() - started)
    return round(best * 1e6 / sum(len(b) for b in batches), 1)


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


if __name__ == "__main__":
    main()
