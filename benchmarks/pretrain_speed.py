"""Pretraining speed of the default architecture: today's training step against the earlier one.

    python benchmarks/pretrain_speed.py [--steps 8] [--repeats 2] [--csv ../shared/data/sms_spam.csv]
        [--corpus FILE ...] [--min-count 2] [--max-vocab N] [--variant NAME=BATCH,SAMPLES[,baseline] ...]
        [--json OUT]

Corpus: the message text of the reference training rows (0..4456), or `--corpus` text files (one
message per line, e.g. build/sms_train.txt build/wordnet.txt), tokenized as `elmobatch pretrain`
does, vocabulary by --min-count/--max-vocab, in the batches of its first epoch (shuffled,
length-bucketed). Each variant trains a fresh model for 2 warm-up steps and `--steps` timed
steps, in `--repeats` rounds over all variants (interleaved, so a slow spell of the machine hits
them alike); each reports its fastest round:

  tokens_per_s           message tokens trained per second (<S>, </S> and padding not counted)
  useful_gflops          tokens/s x 3 x forward FLOPs per token of a plain per-position graph
                         (forward + backward = 3x forward; softmax: all words, or the sampled ones)
  computed_gflops        3 x the forward FLOPs the step really computes, per second: the char CNN
                         and highway over the rows it runs (every position before; each distinct
                         word of the batch, on the char columns it keeps, now), the LSTMs over every
                         position (<S>, </S>, padding), the softmax over every target
  fraction_of_fp32_peak  computed_gflops over the highest float32 matmul peak measured in the run
                         (before the first round and after each)
  x_before               tokens_per_s over the "before" variant's

Variants:
  before      the step as it was when pretraining was first measured, kept here as the baseline:
              32 messages, the token layer at every position on all 50 char columns, the LSTM
              loop differentiated by TensorFlow, the full softmax (`BaselineStep`)
  before_128  the same step on 128 messages: the gain of the code alone, at the same batch size
  now         today's step (`elmobatch.training.pretrain.Trainer`) at the default batch size
Machines differ 2-4x: compare figures from one run, and the machine is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from typing import NamedTuple
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "scripts")]

from elmobatch import load_encoder  # noqa: E402,F401  (first: it loads TensorFlow quietly)
import tensorflow as tf  # noqa: E402
from embed_speed import cpu_name, flops_per_token, matmul_peak  # noqa: E402
from sms_corpus import messages  # noqa: E402

from elmobatch.encoding import tokens as tok  # noqa: E402
from elmobatch.encoding.bilm import BiLM, BiLMConfig  # noqa: E402
from elmobatch.training import pretrain as pt  # noqa: E402
from elmobatch.settings import PretrainSettings  # noqa: E402
from elmobatch.training.corpus import epoch_batches  # noqa: E402
from elmobatch.training.vocabulary import build_vocabulary  # noqa: E402



def softmax_flops(p: int, vocab_size: int, samples: int) -> float:
    """Forward FLOPs of the softmax for one target (one direction)."""
    return 2 * p * (samples + 1 if samples else vocab_size)


def token_layer_flops(c: BiLMConfig, n_chars: int) -> float:
    """Forward FLOPs of the char CNN, highway and projection for one row of n_chars char ids."""
    return flops_per_token(replace(c, max_characters_per_token=n_chars)) - lstm_flops(c)


def lstm_flops(c: BiLMConfig) -> float:
    """Forward FLOPs of every LSTM layer, both directions, at one position."""
    return flops_per_token(c) - flops_per_token(replace(c, n_layers=0))


class BaselineStep:
    """The training step as it was first measured, for the baseline variants: the token layer at
    every position of (batch, T, max_chars) char ids, the LSTM step loop differentiated by
    TensorFlow (`lstm_layers(plain=True)`), the same full softmax, optimizer and clipping as `Trainer`."""

    def __init__(self, trainer: pt.Trainer):
        self.trainer, self.lm = trainer, trainer.lm
        signature = [tf.TensorSpec([None, None, self.lm.bilm.config.max_characters_per_token], tf.int32),
                     tf.TensorSpec([None, None], tf.int32)]
        self.train_step = tf.function(self._train_step, input_signature=signature)

    def _train_step(self, char_ids, word_ids):
        variables, bilm = self.lm.trainable_variables, self.lm.bilm
        with tf.GradientTape() as tape:
            weights = bilm.layout()
            lengths = tf.reduce_sum(tf.cast(tf.reduce_any(char_ids > 0, axis=-1), tf.int32), axis=1)
            layers = bilm.lstm_layers(weights, bilm.token_layer(weights, char_ids), lengths, plain=True)
            nll, n = self.lm.nll_of_top_layer(layers[-1], lengths, word_ids, self.trainer.dropout)
            loss = tf.reduce_sum(nll) / tf.cast(2 * n, tf.float32)
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), self.trainer.clip_norm)
        self.trainer.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return nll, n


class Variant(NamedTuple):
    batch_size: int
    softmax_samples: int  # 0: the full softmax
    baseline: bool  # the step as first measured (BaselineStep), else today's Trainer

    @classmethod
    def parse(cls, spec: str) -> tuple[str, Variant]:
        """NAME=BATCH,SAMPLES[,baseline] -> (name, Variant)."""
        name, values = spec.split("=")
        batch, samples, *kind = values.split(",")
        variant = cls(int(batch), int(samples), kind == ["baseline"])
        if variant.baseline and variant.softmax_samples:
            raise SystemExit(f"--variant {spec}: the baseline step has only the full softmax (SAMPLES 0)")
        return name, variant


VARIANTS = {"before": Variant(32, 0, baseline=True), "before_128": Variant(128, 0, baseline=True),
            "now": Variant(PretrainSettings().batch_size, 0, baseline=False)}


def measure(sentences, vocab, config: BiLMConfig, variant: Variant, steps: int) -> dict:
    batch_size, samples, baseline = variant
    lm = pt.LanguageModels(BiLM(config, seed=0), len(vocab), seed=0)
    trainer = pt.Trainer(lm, learning_rate=1e-3, dropout=0.1, softmax_samples=samples)
    lengths = np.array([len(s) for s in sentences])
    batches = epoch_batches(lengths, batch_size, seed=0, epoch=0)[: steps + 2]
    data = [trainer.batch([sentences[i] for i in b], vocab) for b in batches]
    if baseline:
        step = BaselineStep(trainer).train_step
        data = [(tok.char_ids([sentences[i] for i in b], config.max_characters_per_token), batch.word_ids)
                for b, batch in zip(batches, data, strict=True)]
    else:
        step = trainer.train_step
    for batch in data[:2]:
        step(*map(tf.constant, batch))
    start = time.perf_counter()
    for batch in data[2:]:
        step(*map(tf.constant, batch))
    seconds = time.perf_counter() - start
    timed = batches[2:]
    tokens = int(sum(lengths[b].sum() for b in timed))
    targets = sum(int(lengths[b].sum()) + len(b) for b in timed)  # per direction: L + 1 for L tokens
    softmax = 2 * targets * softmax_flops(config.projection_dim, len(vocab), trainer.softmax_samples)
    positions = sum(batch[-1].size for batch in data[2:])
    if baseline:
        token_rows = positions * token_layer_flops(config, config.max_characters_per_token)
    else:
        token_rows = sum(batch.word_chars.shape[0] * token_layer_flops(config, batch.word_chars.shape[1])
                         for batch in data[2:])
    computed = 3 * (token_rows + positions * lstm_flops(config) + softmax) / seconds / 1e9
    plain = flops_per_token(config) + 2 * softmax_flops(config.projection_dim, len(vocab), trainer.softmax_samples)
    useful = 3 * plain * tokens / seconds / 1e9
    return {"step": "baseline" if baseline else "today", "batch_size": batch_size,
            "softmax_samples": trainer.softmax_samples, "steps": steps, "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "useful_gflops": round(useful, 1),
            "computed_gflops": round(computed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--repeats", type=int, default=2,
                        help="rounds over all variants, interleaved; each variant reports its fastest round")
    parser.add_argument("--csv", default=str(HERE.parents[1] / "shared/data/sms_spam.csv"))
    parser.add_argument("--corpus", nargs="+", help="text files, one message per line (default: the SMS rows)")
    parser.add_argument("--min-count", type=int, default=2)
    parser.add_argument("--max-vocab", type=int)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=BATCH,SAMPLES[,baseline]: another variant to time (SAMPLES 0: full softmax; "
                             "baseline: the step as first measured)")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args()
    variants = dict(VARIANTS) | dict(Variant.parse(spec) for spec in args.variant)

    texts = messages(args.csv, 0, 4457) if not args.corpus else [
        line for path in args.corpus for line in Path(path).read_text(encoding="utf-8").splitlines()]
    sentences = [s for s in (tok.tokenize(m, "punct") for m in texts) if s]
    vocab = build_vocabulary(sentences, args.min_count, args.max_vocab)
    config = BiLMConfig.from_options(pt.DEFAULT_OPTIONS)
    peaks = [matmul_peak(tf.float32)]
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for round_ in range(args.repeats):
        for name, variant in variants.items():
            runs[name].append(measure(sentences, vocab, config, variant, args.steps))
            print(json.dumps({"round": round_, name: runs[name][-1]}), flush=True)
        peaks.append(matmul_peak(tf.float32))
    peak = max(peaks)
    report = {"command": "python " + " ".join(sys.argv),
              "machine": {"cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0)), "load_average": os.getloadavg()[0],
                          "fp32_matmul_gflops_measured": [round(p, 1) for p in peaks],
                          "fp32_matmul_gflops_peak": round(peak, 1)},
              "corpus": {"files": args.corpus or ["SMS rows 0..4456"], "messages": len(sentences),
                         "vocabulary": len(vocab)}}
    for name, measured in runs.items():
        best = min(measured, key=lambda run: run["seconds"])
        report[name] = best | {"tokens_per_s_each_round": [run["tokens_per_s"] for run in measured],
                               "fraction_of_fp32_peak": round(best["computed_gflops"] / peak, 3),
                               "x_before": round(best["tokens_per_s"] / min(
                                   runs["before"], key=lambda run: run["seconds"])["tokens_per_s"], 2)}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
