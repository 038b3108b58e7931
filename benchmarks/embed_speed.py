"""Embedding speed of the full-size ELMo architecture (random weights) and of the default model.

    python benchmarks/embed_speed.py [--messages 2000] [--csv ../shared/data/sms_spam.csv]

Builds `elmo_2x4096_512_2048cnn_2xhighway` with random weights in the official layout, measures this
machine's float32 and bfloat16 matmul peak (4096^3 through TensorFlow) in the same run, embeds the
first N messages of the reference file, and prints one JSON object: per model and precision, tokens/s,
messages/s, useful GFLOP/s (architecture FLOPs per token times real tokens/s: <S>, </S> and padding
are not counted as useful), that as a fraction of the float32 peak and of the precision's own peak,
the speed-up over float32, and peak RSS.

"Useful" counts the work a plain per-position graph would do for these tokens. The encoder skips
some of it exactly (the char CNN and layer 1's input gates once per distinct word, the shared
first step of each direction, nothing past a sentence's end, repeated messages once), so useful
GFLOP/s can exceed the matmul peak: it is a speed, not a hardware counter.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd

from elmobatch import load_encoder  # first: it loads TensorFlow quietly
import tensorflow as tf  # noqa: E402
from elmobatch.encoding.bilm import BiLM, BiLMConfig
from elmobatch.encoding.encoder import PRECISIONS, bundled_model_dir

FULL_SIZE_OPTIONS = {
    "char_cnn": {"activation": "relu", "embedding": {"dim": 16},
                 "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]],
                 "max_characters_per_token": 50, "n_characters": 261, "n_highway": 2},
    "lstm": {"cell_clip": 3, "dim": 4096, "n_layers": 2, "proj_clip": 3, "projection_dim": 512,
             "use_skip_connections": True},
}


def flops_per_token(c: BiLMConfig) -> float:
    """Multiply-adds x 2 for one token through the char CNN, highway, projection and all LSTMs."""
    cnn = sum(2 * (c.max_characters_per_token - w + 1) * w * c.char_dim * n for w, n in c.filters)
    highway = c.n_highway * 2 * 2 * c.n_filters**2
    projection = 2 * c.n_filters * c.projection_dim if c.use_cnn_projection else 0
    lstm_step = 2 * (c.projection_dim + c.projection_dim) * 4 * c.lstm_dim  # W_0 on [input; previous output]
    if c.use_lstm_projection:
        lstm_step += 2 * c.lstm_dim * c.projection_dim
    return cnn + highway + projection + 2 * c.n_layers * lstm_step


def _giga_ops_per_s(matmul, a: tf.Tensor, b: tf.Tensor, repeats: int = 5) -> float:
    """Multiply-adds x 2 per second / 1e9 of `matmul(a, b)` on square matrices, after one warm-up."""
    f = tf.function(matmul)
    f(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        f(a, b).numpy()
    return 2 * a.shape[0] ** 3 * repeats / (time.perf_counter() - start) / 1e9


def matmul_peak(dtype: tf.DType, n: int = 4096) -> float:
    a, b = (tf.cast(tf.random.normal((n, n)), dtype) for _ in range(2))
    return _giga_ops_per_s(tf.matmul, a, b)


def int8_matmul_peak(n: int = 4096) -> float:
    """uint8 x int8 -> int32 through TensorFlow's oneDNN quantized matmul (the fastest int8 op it
    offers on CPU), for comparison: an int8 mode only pays where this beats the bf16 peak."""
    ua = tf.bitcast(tf.cast(tf.random.uniform((n, n), 0, 255, tf.int32), tf.uint8), tf.quint8)
    ib = tf.bitcast(tf.cast(tf.random.uniform((n, n), -127, 127, tf.int32), tf.int8), tf.qint8)
    lo, hi = tf.constant(-1.0), tf.constant(1.0)
    return _giga_ops_per_s(lambda a, b: tf.raw_ops.QuantizedMatMulWithBias(
        a=a, b=b, bias=tf.zeros([n]), min_a=lo, max_a=hi, min_b=lo, max_b=hi, Toutput=tf.qint32)[0], ua, ib)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(enc, texts: list[str], flops: float, peak32: float, own_peak: float) -> dict:
    tokens = [enc.tokenize(t) for t in texts]
    n_tokens = sum(len(t) for t in tokens)
    enc.pool_tokens(tokens[:64])  # compile outside the timing
    start = time.perf_counter()
    enc.pool_tokens(tokens)
    seconds = time.perf_counter() - start
    gflops = flops * n_tokens / seconds / 1e9
    return {"tokens": n_tokens, "seconds": round(seconds, 2), "tokens_per_s": round(n_tokens / seconds, 1),
            "messages_per_s": round(len(texts) / seconds, 1), "useful_gflops": round(gflops, 1),
            "fraction_of_fp32_peak": round(gflops / peak32, 3), "fraction_of_own_peak": round(gflops / own_peak, 3),
            "peak_rss_mb": round(peak_rss_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--csv", default=str(Path(__file__).resolve().parents[2] / "shared/data/sms_spam.csv"))
    parser.add_argument("--tokenizer", default="whitespace", help="whitespace: the TF Hub default split")
    parser.add_argument("--skip-full-size", action="store_true")
    args = parser.parse_args()

    texts = pd.read_csv(args.csv, encoding="latin-1", usecols=[1]).iloc[: args.messages, 0].astype(str).tolist()
    peak32, peak16 = matmul_peak(tf.float32), matmul_peak(tf.bfloat16)
    report = {"machine": {"cpu": cpu_name(), "cpus": len(os.sched_getaffinity(0)),
                          "fp32_matmul_gflops": round(peak32, 1), "bf16_matmul_gflops": round(peak16, 1),
                          "int8_matmul_gops": round(int8_matmul_peak(), 1)},
              "messages": len(texts), "tokenizer": args.tokenizer}
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_full_size:
            config = BiLMConfig.from_options(FULL_SIZE_OPTIONS)
            BiLM(config, seed=0).save(tmp)
            models["full_size_random"] = tmp
        if (bundled_model_dir() / "weights.hdf5").is_file():
            models["default"] = "default"
        for name, spec in models.items():
            for precision in PRECISIONS:
                enc = load_encoder(spec, tokenizer=args.tokenizer, precision=precision)
                flops = flops_per_token(enc.bilm.config)
                result = measure(enc, texts, flops, peak32, peak16 if precision == "bf16" else peak32)
                result["mflops_per_token"] = round(flops / 1e6, 1)
                base = report.get(f"{name}/float32")
                if base and precision != "float32":
                    result["speedup_over_float32"] = round(result["tokens_per_s"] / base["tokens_per_s"], 2)
                report[f"{name}/{precision}"] = result
                print(json.dumps({f"{name}/{precision}": result}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
