"""elmobatch: embed and score message files with ELMo, in batches, on a schedule."""

import os
from contextlib import contextmanager


@contextmanager
def _quiet_native_stderr():
    """Silence TensorFlow's C++ start-up lines (oneDNN, CUDA probing), which no env variable stops.

    Only file descriptor 2 is redirected, and only while TensorFlow loads; a Python error raised
    meanwhile still reaches the user once stderr is restored.
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
with _quiet_native_stderr():
    import tensorflow

    tensorflow.config.list_physical_devices()  # probes for GPUs now, quietly, not at the first op

from elmobatch.encoding import Encoder, ModelError, load_encoder  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Encoder", "ModelError", "load_encoder", "__version__"]
