"""Scoring speed from cached vectors (the head alone, as `score` and `run` apply it after a cache hit).

    python benchmarks/score_speed.py [--rows 200000] [--head DIR]

Applies the bundled default head (or --head) to random per-layer vectors of its shape and prints
JSON: messages/s over the whole batch, best of 3.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from elmobatch.training.head import default_head_dir, load_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--head", default=str(default_head_dir()))
    args = parser.parse_args()
    head = load_head(args.head)
    layers, dim = head.weights["mean"].shape
    x = np.random.default_rng(0).standard_normal((args.rows, layers, dim), dtype=np.float32)
    head.predict(x[:1000])
    best = min(_timed(head, x) for _ in range(3))
    print(json.dumps({"head": args.head, "rows": args.rows, "layers": layers, "dim": dim,
                      "seconds": round(best, 3), "messages_per_s": round(args.rows / best)}))


def _timed(head, x) -> float:
    start = time.perf_counter()
    head.predict(x)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
