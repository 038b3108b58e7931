"""Two head_compare runs' picks, compared row by row on the same selection rows.

    python benchmarks/selection_compare.py A.json B.json [--other-candidates]

Each JSON is written by `benchmarks/head_compare.py --json` (with --folds K: every training row).
Prints, as JSON, each pick's selection log loss and the paired difference B - A: its mean over the
rows and the standard error of that mean (sd / sqrt(n)), so a reader can see whether the difference
is larger than the row-to-row noise (it leaves out the noise of retraining the heads). Refuses two
runs whose selection rows, folds, head seed or candidates differ (candidates: unless
--other-candidates, for a run that adds candidates, whose pick then leans lower). Each pick is
measured on the rows it was picked on, so both figures lean low alike.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    if "winner_selection_log_loss" not in run:
        sys.exit(f"{path}: no winner_selection_log_loss; expected a head_compare.py --json file of this version")
    return run


def candidates(run: dict) -> list[tuple]:
    return sorted({(r["kind"], r["members"], r["calibration"], r["threshold_rule"]) for r in run["rows"]})


def compare(a: dict, b: dict, other_candidates: bool = False) -> dict:
    if a["selection_rows_sha256"] != b["selection_rows_sha256"]:
        raise ValueError("the two runs' selection rows differ (selection_rows_sha256); "
                         "expected the same data and --extra-train files")
    for what, of in (("--folds", lambda r: r["folds"]), ("--seed", lambda r: r.get("seed", 0)),
                     ("candidates (--kinds, --members)", candidates)):
        if what.startswith("candidates") and other_candidates:
            continue
        if of(a) != of(b):  # a pick among more candidates looks better on the rows it was picked on
            raise ValueError(f"the two runs differ in {what}: {of(a)} vs {of(b)}; expected the same")
    loss_a, loss_b = np.asarray(a["winner_selection_log_loss"]), np.asarray(b["winner_selection_log_loss"])
    diff = loss_b - loss_a
    return {"rows": len(diff), "folds": a.get("folds"),
            **{name: {"model": run["model"], "class_weights": run.get("class_weights", "balanced"),
                      "winner": run["winner"], "log_loss": float(loss.mean())}
               for name, run, loss in (("a", a, loss_a), ("b", b, loss_b))},
            "b_minus_a": float(diff.mean()), "standard_error": float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "rows_b_better": int((diff < 0).sum()), "rows_a_better": int((diff > 0).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="head_compare.py --json file (the incumbent)")
    parser.add_argument("b", help="head_compare.py --json file (the candidate)")
    parser.add_argument("--other-candidates", action="store_true",
                        help="compare runs whose candidates differ (a pick among more leans lower)")
    args = parser.parse_args()
    try:
        result = compare(load(args.a), load(args.b), args.other_candidates)
    except ValueError as e:
        sys.exit(f"{args.a} vs {args.b}: {e}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
