"""Encoding: tokens, the native biLM, and the encoder API over it and over TF Hub modules."""

from elmobatch.encoding.encoder import Encoder, ModelError, load_encoder

__all__ = ["Encoder", "ModelError", "load_encoder"]
