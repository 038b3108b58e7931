"""The encoder's native memory does not grow with the number of batches it has seen.

Every batch has its own shapes (words, sentences, tokens). With TensorFlow's oneDNN kernels on, a
compiled primitive was kept per shape, so a long `embed` grew by hundreds of MiB; elmobatch turns
them off when it loads TensorFlow. Measured in a fresh process (RSS is per process).
"""

import pytest
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURE

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, random, sys
from elmobatch import load_encoder

encoder = load_encoder(sys.argv[1])
rng = random.Random(0)
vocab = ["".join(rng.choices("abcdefghij", k=rng.randint(2, 8))) for _ in range(3000)]

def rss_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

marks = []
for batch in range(12):
    sentences = [[rng.choice(vocab) for _ in range(rng.randint(2, 60))] + [f"new{batch}x{i}"] for i in range(800)]
    encoder.pool_tokens(sentences)  # new words and new batch shapes every time
    if batch in (3, 11):
        marks.append(rss_mib())
print(json.dumps(marks))
"""


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_rss_stays_flat_over_batches_of_new_shapes():
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}  # elmobatch's default
    result = subprocess.run([sys.executable, "-c", PROBE, str(FIXTURE)], cwd=ROOT, capture_output=True, text=True,
                            env=dict(env, PYTHONPATH=str(ROOT)), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    after_4, after_12 = json.loads(result.stdout.strip().splitlines()[-1])
    # 8 more batches of 800 sentences: with oneDNN's per-shape primitives this grew by ~30 MiB (1 MiB without)
    assert after_12 - after_4 < 10, (after_4, after_12)
