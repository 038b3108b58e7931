"""Head comparison: head kind x calibration x threshold rule, picked on validation rows only.

    python benchmarks/head_compare.py [--model SPEC] [--cache-dir DIR] [--extra-train FILE] [--members 1,5]
                                      [--kinds mlp,logistic] [--folds K] [--fold-seed S] [--json OUT]

Candidates, each trained by elmobatch's own `fit_head` (so exactly what `elmobatch train
--head-kind K --calibrate C` does):

  kind         mlp (layer mix -> Dense(256, relu) -> Dense(1); today's head) or logistic (layer mix
               -> Dense(1), L2 strength picked on the validation slice)
  members      1 (one net) or an ensemble of N nets averaging their logits (`train --members N`);
               --members lists the sizes (default 1 and 5)
  calibration  none, platt or temperature, fitted on the head's validation slice (10% of its rows)
  threshold    F1-optimal on the validation slice (what train stores) or 0.5
  (--validation-slices per-net: each net early-stops on its own slice, `train --validation-slices
  per-net`; (almost) no row is then held out from every net, so only calibration none and the 0.5 threshold)

The training rows are the 4,457 reference training rows, plus every row of each --extra-train file
(v1 label, v2 text, as `elmobatch train --extra-train` adds them).
Stage 1 (selection): a stratified 20% of the training rows is set aside; the
candidates train on the other 80% and are measured on it. With --folds K, K-fold cross-validation
instead: the training rows are cut into K stratified folds, each fold is scored by the candidates
trained on the other K-1, and the candidates are measured on the out-of-fold scores of every
training row (five times the rows of the 20% split). --fold-seed deals the folds (or the 20%) another
way: the same candidates judged on another cut, to see how much a pick owes to the cut.
The winner is the kind, members and calibration with the lowest log loss there, then the
threshold rule with the higher spam F1 there. The 1,115 test rows play no part in the choice.
Stage 2 (report): every candidate is retrained on all the training rows and measured on the
reference test rows and on the everyday set (benchmarks/quality.py's columns).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time

import numpy as np

from dataclasses import dataclass, replace

from elmobatch.caching import EmbeddingCache
from elmobatch.encoding import load_encoder
from elmobatch.settings import CALIBRATIONS, CLASS_WEIGHTINGS, VALIDATION_SLICES
from elmobatch.training.fit import FitSettings, calibrate_head, fit_head, validation_split
from elmobatch.training.head import Head

import quality

KINDS = ("mlp", "logistic")
MEMBERS = (1, 5)
THRESHOLD_RULES = ("best-f1", "0.5")
SELECTION_FRACTION, SELECTION_SEED = 0.2, 1

Candidate = tuple[str, int, str]  # (kind, members, calibration)


def labels_of(data: quality.Dataset) -> list[str]:
    return ["spam" if s else "ham" for s in data.is_spam]


def train_candidates(train: quality.Dataset, model_meta: dict, fit: FitSettings,
                     members: tuple[int, ...] = MEMBERS, kinds: tuple[str, ...] = KINDS) -> dict[Candidate, Head]:
    """(kind, members, calibration) -> head, each trained with `fit`'s settings but for kind and members.

    Each kind trains max(members) nets once: an ensemble's first m members are the ensemble of m
    of the same seed (tests/test_head_ensemble.py), and the calibrations share the nets, as in fit_head.
    """
    heads = {}
    for kind in kinds:
        settings = replace(fit, head_kind=kind, members=max(members))
        started = time.perf_counter()
        base, summary = fit_head(train.x, labels_of(train), model_meta=model_meta, settings=settings)
        epochs = ", ".join(str(net["epochs_run"]) for net in summary.get("member_fits", [summary]))
        print(f"  {kind} x{settings.members}: {epochs} epochs, l2 {summary['l2']}, "
              f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
        y = train.is_spam.astype(np.int64)
        _, val = validation_split(y, settings.validation_fraction, settings.seed)
        for m in members:
            nets = base.first_members(m)
            for method in calibrations(fit):
                heads[kind, m, method] = calibrate_head(Head(nets.weights, copy.deepcopy(nets.meta)),
                                                        train.x[val], y[val], method, fit.threshold)
    return heads


def calibrations(fit: FitSettings) -> tuple[str, ...]:
    """Per-net validation slices hold no row out from every net: nothing to calibrate on."""
    return CALIBRATIONS if fit.validation_slices == "shared" else ("none",)


def threshold_rules(fit: FitSettings) -> tuple[str, ...]:
    """Per-net validation slices hold no row out from every net: no best-F1 threshold, only 0.5."""
    return THRESHOLD_RULES if fit.validation_slices == "shared" else ("0.5",)


def threshold_of(head: Head, rule: str) -> float:
    return head.threshold if rule == "best-f1" else 0.5


@dataclass
class Predictions:
    """One candidate's scores of some rows, and its labels under each threshold rule."""

    score: np.ndarray                  # (n,) P(spam)
    is_spam: dict[str, np.ndarray]     # threshold rule -> (n,) bool

    @classmethod
    def of(cls, head: Head, x: np.ndarray) -> Predictions:
        proba = head.probabilities(x)
        decided = {rule: head.decide(proba, threshold_of(head, rule)) for rule in THRESHOLD_RULES}
        score = next(iter(decided.values()))[1].astype(np.float64)
        return cls(score, {rule: index == 1 for rule, (index, _) in decided.items()})


def heldout_predictions(train: quality.Dataset, model_meta: dict, fit: FitSettings, members: tuple[int, ...],
                        kinds: tuple[str, ...], folds: int,
                        fold_seed: int = SELECTION_SEED) -> tuple[np.ndarray, dict[Candidate, Predictions]]:
    """Selection rows and each candidate's predictions of them, by heads that never saw them.

    folds 0: the stratified 20% split (rows: that 20%). folds K >= 2: K-fold cross-validation
    (rows: every training row, each scored by the heads trained on the other folds).
    """
    y = train.is_spam.astype(np.int64)
    if folds == 0:
        fit_rows, selection_rows = validation_split(y, SELECTION_FRACTION, fold_seed)
        print(f"stage 1: {len(fit_rows)} rows fit, {len(selection_rows)} selection rows", file=sys.stderr)
        heads = train_candidates(train.subset(fit_rows), model_meta, fit, members, kinds)
        x = train.x[selection_rows]
        return selection_rows, {c: Predictions.of(head, x) for c, head in heads.items()}
    fold_of = stratified_folds(y, folds, fold_seed)
    parts: dict[Candidate, list[Predictions]] = {}
    for k in range(folds):
        held = np.flatnonzero(fold_of == k)
        print(f"stage 1, fold {k + 1} of {folds}: {len(y) - len(held)} rows fit, {len(held)} scored", file=sys.stderr)
        heads = train_candidates(train.subset(np.flatnonzero(fold_of != k)), model_meta, fit, members, kinds)
        for c, head in heads.items():
            parts.setdefault(c, []).append(Predictions.of(head, train.x[held]))
    order = np.concatenate([np.flatnonzero(fold_of == k) for k in range(folds)])
    inverse = np.argsort(order)
    return np.arange(len(y)), {c: Predictions(np.concatenate([p.score for p in ps])[inverse],
                                              {rule: np.concatenate([p.is_spam[rule] for p in ps])[inverse]
                                               for rule in THRESHOLD_RULES})
                               for c, ps in parts.items()}


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(n,) fold number of each row: each class shuffled and dealt round the folds."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold_of[rows] = np.arange(len(rows)) % folds
    return fold_of


def row_log_loss(is_spam: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(n,) -log P(true label), P clipped to [1e-7, 1]."""
    return -np.log(np.clip(np.where(is_spam, score, 1 - score), 1e-7, 1))


def selection_metrics(is_spam: np.ndarray, predictions: Predictions, rule: str) -> dict:
    metrics = quality.reference_metrics(is_spam, predictions.is_spam[rule], predictions.score)
    return dict(metrics, log_loss=float(row_log_loss(is_spam, predictions.score).mean()))


def pick_winner(rows: list[dict]) -> dict:
    """Lowest selection log loss picks kind and calibration; the higher selection F1 picks the threshold rule."""
    best = min(rows, key=lambda r: r["selection"]["log_loss"])
    same = [r for r in rows if (r["kind"], r["members"], r["calibration"])
            == (best["kind"], best["members"], best["calibration"])]
    return max(same, key=lambda r: r["selection"]["spam_f1"])


def name_of(row: dict) -> str:
    members = f" x{row['members']}" if row["members"] > 1 else ""
    return f"{row['kind']}{members} / {row['calibration']} / t={row['threshold_rule']}"


def format_table(rows: list[dict], winner: dict, selection_rows: int, train_rows: int, folds: int) -> str:
    header = (f"{'candidate':<40} {'sel logloss':>11} {'sel Brier':>9} {'sel F1':>7} | {'t':>6} {'acc':>7} "
              f"{'spam F1':>7} {'AUC':>7} {'Brier':>7} | "
              f"{'ev acc':>6} {'notif':>6} {'pers':>6} {'spam':>6} {'conf':>5}")
    selection = (f"{folds}-fold out-of-fold ({selection_rows} rows)" if folds
                 else f"selection rows ({selection_rows} of {train_rows})")
    lines = [f"{'':<40} {selection:^31} | {'reference split (1,115 test rows)':^40} | {'everyday set':^35}",
             header, "-" * len(header)]
    for r in rows:
        s, ref, ev = r["selection"], r["reference"], r["everyday"]
        sel = (f"{s['log_loss']:>11.4f} {s['brier']:>9.4f} {s['spam_f1']:>7.3f}" if s
               else f"{'-':>11} {'-':>9} {'-':>7}")
        by = ev["accuracy_by_group"]
        mark = " *" if r is winner else ""
        lines.append(f"{name_of(r) + mark:<40} {sel} | {r['threshold']:>6.3f} {ref['accuracy']:>7.4f} "
                     f"{ref['spam_f1']:>7.3f} {ref['roc_auc']:>7.4f} {ref['brier']:>7.4f} | {ev['accuracy']:>6.3f} "
                     f"{by['notification ham']:>6.3f} {by['personal/work ham']:>6.3f} {by['spam']:>6.3f} "
                     f"{ev['confident_mistakes']:>5d}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="Encoder spec (default: the bundled model).")
    parser.add_argument("--cache-dir", help="Embedding cache (default: $ELMOBATCH_CACHE, else ~/.cache/elmobatch).")
    parser.add_argument("--data", default=str(quality.SMS), help="The SMS Spam Collection CSV (v1 label, v2 text).")
    parser.add_argument("--everyday", default=str(quality.EVERYDAY), help="The everyday set CSV.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the heads' training (fit_head's --seed).")
    parser.add_argument("--extra-train", action="append", default=[],
                        help="More labelled training rows (v1 label, v2 text). Repeatable.")
    parser.add_argument("--members", default=",".join(map(str, MEMBERS)),
                        help="Ensemble sizes to compare, comma-separated (1: one net).")
    parser.add_argument("--kinds", default=",".join(KINDS), help="Head kinds to compare, comma-separated.")
    parser.add_argument("--folds", type=int, default=0,
                        help="Select by K-fold cross-validation over all training rows (default: one 20%% split).")
    parser.add_argument("--class-weights", choices=CLASS_WEIGHTINGS, default="balanced",
                        help="The heads' loss weighting (train --class-weights).")
    parser.add_argument("--dropout", type=float, default=FitSettings.dropout,
                        help="The heads' dropout rate (train --dropout).")
    parser.add_argument("--learning-rate", type=float, default=FitSettings.learning_rate,
                        help="The heads' Adam learning rate (train --learning-rate).")
    parser.add_argument("--validation-slices", choices=VALIDATION_SLICES, default=FitSettings.validation_slices,
                        help="The heads' early-stopping slices (train --validation-slices).")
    parser.add_argument("--fold-seed", type=int, default=SELECTION_SEED,
                        help=f"Seed dealing the folds or the 20%% split (default {SELECTION_SEED}: every cut so far).")
    parser.add_argument("--json", help="Also write the results as JSON to this file.")
    args = parser.parse_args()
    members = tuple(sorted({int(m) for m in args.members.split(",")}))
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if set(kinds) - set(KINDS) or not kinds:
        parser.error(f"--kinds: expected some of {', '.join(KINDS)}, got {args.kinds!r}")
    if args.folds == 1 or args.folds < 0:
        parser.error(f"--folds: expected 0 (one 20% split) or at least 2, got {args.folds}")

    encoder = load_encoder(args.model)
    cache = EmbeddingCache(args.cache_dir)
    sms = quality.load_dataset(quality.Path(args.data), encoder, cache, "v1", "v2")
    everyday = quality.load_dataset(quality.Path(args.everyday), encoder, cache, "label", "text")
    train, test = quality.reference_split(sms)
    train = train.plus(*(quality.load_dataset(quality.Path(p), encoder, cache, "v1", "v2") for p in args.extra_train))
    model_meta = {"fingerprint": encoder.fingerprint, "spec": args.model}

    fit = FitSettings(seed=args.seed, class_weights=args.class_weights, dropout=args.dropout,
                      learning_rate=args.learning_rate, validation_slices=args.validation_slices,
                      threshold=None if args.validation_slices == "shared" else 0.5)
    selection_rows, heldout = heldout_predictions(train, model_meta, fit, members, kinds, args.folds, args.fold_seed)
    selected = train.is_spam[selection_rows]
    print(f"stage 2: all {len(train.texts)} training rows", file=sys.stderr)
    final_heads = train_candidates(train, model_meta, fit, members, kinds)

    rows = []
    for (kind, m, method), head in final_heads.items():
        for rule in threshold_rules(fit):
            system = quality.elmobatch_head(_with_threshold(head, threshold_of(head, rule)))
            rows.append({"kind": kind, "members": m, "calibration": method, "threshold_rule": rule,
                         "threshold": threshold_of(head, rule),
                         "calibration_params": head.meta["calibration"], "l2": head.meta["training"]["l2"],
                         "selection": selection_metrics(selected, heldout[kind, m, method], rule),
                         **{k: v for k, v in quality.measure("", system, test, everyday).items() if k != "system"}})
    winner = pick_winner(rows)
    winner_scores = heldout[winner["kind"], winner["members"], winner["calibration"]].score
    result = {"command": quality.command_line(), "machine": quality.machine(), "model": str(encoder.path),
              "model_fingerprint": encoder.fingerprint,
              "extra_train": args.extra_train, "folds": args.folds, "fold_seed": args.fold_seed, "seed": args.seed,
              "class_weights": args.class_weights, "dropout": args.dropout, "learning_rate": args.learning_rate,
              "validation_slices": args.validation_slices,
              "selection_rows": len(selection_rows),
              "training_rows": len(train.texts), "winner": name_of(winner), "rows": rows,
              # per selection row, in order, so two models' picks can be compared row by row
              # (benchmarks/selection_compare.py); the digest says the rows are the same
              "selection_rows_sha256": rows_digest(train, selection_rows),
              "winner_selection_log_loss": [round(float(v), 6) for v in row_log_loss(selected, winner_scores)]}
    print(f"command: {result['command']}\nmachine: {result['machine']}\nmodel:   {result['model']}")
    print(format_table(rows, winner, len(selection_rows), len(train.texts), args.folds))
    print(f"* winner on the selection rows: {name_of(winner)}")
    print(json.dumps({k: v for k, v in result.items() if k != "winner_selection_log_loss"}))
    quality.write_json(args.json, result)


def rows_digest(data: quality.Dataset, rows: np.ndarray) -> str:
    digest = hashlib.sha256()
    for i in rows:
        digest.update(f"{int(data.is_spam[i])}\t{data.texts[i]}\n".encode())
    return digest.hexdigest()


def _with_threshold(head: Head, threshold: float) -> Head:
    return Head(head.weights, dict(head.meta, threshold=threshold))


if __name__ == "__main__":
    main()
