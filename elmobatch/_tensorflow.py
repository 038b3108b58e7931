"""TensorFlow, loaded quietly: modules that run a model import `tf` from here, so the CLI's
other paths (help, argument errors, a job with nothing to do) never pay TensorFlow's start-up.

    from elmobatch._tensorflow import tf
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence TensorFlow's C++ start-up lines (oneDNN, CUDA probing), which no env variable stops.

    Only file descriptor 2 is redirected, and only while TensorFlow loads; a Python error raised
    meanwhile still reaches the user once stderr is restored. ELMOBATCH_TF_STARTUP_LOG=1 keeps them.
    """
    if os.environ.get("ELMOBATCH_TF_STARTUP_LOG"):
        yield
        return
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN keeps a compiled primitive per input shape, and batch shapes vary with every batch: with it,
# the memory of a long `embed` grew with the rows (+280 MiB at 1M rows). Without it, as fast here.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
with _quiet_native_stderr():
    import tensorflow as tf

    tf.config.list_physical_devices()  # probes for GPUs now, quietly, not at the first op

__all__ = ["tf"]
