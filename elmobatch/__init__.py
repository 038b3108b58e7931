"""elmobatch: embed and score message files with ELMo, in batches, on a schedule."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off users' terminals

from elmobatch.encoding import Encoder, ModelError, load_encoder  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Encoder", "ModelError", "load_encoder", "__version__"]
