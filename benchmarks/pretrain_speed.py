"""Pretraining speed of the default architecture: today's training step against the earlier one.

    python benchmarks/pretrain_speed.py [--steps 8] [--csv ../shared/data/sms_spam.csv]
        [--corpus FILE ...] [--min-count 2] [--max-vocab N] [--variant NAME=BATCH,SAMPLES ...]

Corpus: the message text of the reference training rows (0..4456), or `--corpus` text files (one
message per line, e.g. build/sms_train.txt build/wordnet.txt), tokenized as `elmobatch pretrain`
does, vocabulary by --min-count/--max-vocab, in the batches of its first epoch (shuffled,
length-bucketed). Each variant trains
a fresh model (`elmobatch.training.pretrain.Trainer`, the whole step in one tf.function) for
2 warm-up steps and `--steps` timed steps, and reports:

  tokens_per_s           message tokens trained per second (<S>, </S> and padding not counted)
  useful_gflops          tokens/s x 3 x forward FLOPs per token (forward + backward = 3x forward;
                         the softmax counted as computed: all words, or the sampled ones)
  computed_gflops        the same over every position the step computes (<S>, </S>, padding)
  fraction_of_fp32_peak  computed_gflops over the float32 matmul peak measured in the same run

Variants: "before" is the step as it was (32 messages, full softmax); "now" is today's default
(128 messages, full softmax at this vocabulary size). Machines differ 2-4x: compare figures from
one run, and the machine is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
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
from elmobatch.training.corpus import epoch_batches, make_batch  # noqa: E402
from elmobatch.training.vocabulary import build_vocabulary  # noqa: E402

VARIANTS = {"before": (32, 0), "now": (128, 0)}


def softmax_flops(p: int, vocab_size: int, samples: int) -> float:
    """Forward FLOPs of both directions' softmax for one target token."""
    return 2 * 2 * p * (samples + 1 if samples else vocab_size)


def measure(sentences, vocab, config: BiLMConfig, batch_size: int, samples: int, steps: int, peak32: float) -> dict:
    lm = pt.LanguageModels(BiLM(config, seed=0), len(vocab), seed=0)
    trainer = pt.Trainer(lm, learning_rate=1e-3, dropout=0.1, softmax_samples=samples)
    lengths = np.array([len(s) for s in sentences])
    batches = epoch_batches(lengths, batch_size, seed=0, epoch=0)[: steps + 2]
    data = [make_batch([sentences[i] for i in b], vocab, config.max_characters_per_token) for b in batches]
    for chars, words in data[:2]:
        trainer.train_step(tf.constant(chars), tf.constant(words))
    tokens = positions = 0
    start = time.perf_counter()
    for chars, words in data[2:]:
        trainer.train_step(tf.constant(chars), tf.constant(words))
        positions += words.size
    seconds = time.perf_counter() - start
    tokens = int(sum(lengths[b].sum() for b in batches[2:]))
    forward = flops_per_token(config) + softmax_flops(config.projection_dim, len(vocab), trainer.softmax_samples)
    useful, computed = 3 * forward * tokens / seconds / 1e9, 3 * forward * positions / seconds / 1e9
    return {"batch_size": batch_size, "softmax_samples": trainer.softmax_samples, "steps": steps,
            "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "train_mflops_per_token": round(3 * forward / 1e6, 1), "useful_gflops": round(useful, 1),
            "computed_gflops": round(computed, 1), "fraction_of_fp32_peak": round(computed / peak32, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant")
    parser.add_argument("--csv", default=str(HERE.parents[1] / "shared/data/sms_spam.csv"))
    parser.add_argument("--corpus", nargs="+", help="text files, one message per line (default: the SMS rows)")
    parser.add_argument("--min-count", type=int, default=2)
    parser.add_argument("--max-vocab", type=int)
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=BATCH,SAMPLES: another variant to time (SAMPLES 0: full softmax)")
    args = parser.parse_args()
    variants = dict(VARIANTS)
    for spec in args.variant:
        name, values = spec.split("=")
        batch, samples = values.split(",")
        variants[name] = (int(batch), int(samples))

    texts = messages(args.csv, 0, 4457) if not args.corpus else [
        line for path in args.corpus for line in Path(path).read_text(encoding="utf-8").splitlines()]
    sentences = [s for s in (tok.tokenize(m, "punct") for m in texts) if s]
    vocab = build_vocabulary(sentences, args.min_count, args.max_vocab)
    config = BiLMConfig.from_options(pt.DEFAULT_OPTIONS)
    peak32 = matmul_peak(tf.float32)
    report = {"machine": {"cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0)),
                          "load_average": os.getloadavg()[0], "fp32_matmul_gflops": round(peak32, 1)},
              "corpus": {"files": args.corpus or ["SMS rows 0..4456"], "messages": len(sentences),
                         "vocabulary": len(vocab)}}
    for name, (batch_size, samples) in variants.items():
        report[name] = measure(sentences, vocab, config, batch_size, samples, args.steps, peak32)
        print(json.dumps({name: report[name]}), flush=True)
    report["speedup_now_over_before"] = round(report["now"]["tokens_per_s"] / report["before"]["tokens_per_s"], 2)
    report["machine"]["fp32_matmul_gflops_after"] = round(matmul_peak(tf.float32), 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
