"""Encoding: tokens, the native biLM, and the encoder API over it and over TF Hub modules.

`Encoder` and `load_encoder` load TensorFlow on first use (module __getattr__), so importing this
package, or `elmobatch.encoding.tokens`, stays cheap.
"""

from typing import TYPE_CHECKING, Any

from elmobatch.encoding.specs import ModelError

if TYPE_CHECKING:
    from elmobatch.encoding.encoder import Encoder, load_encoder

__all__ = ["Encoder", "ModelError", "load_encoder"]
_NEEDS_TENSORFLOW = ("Encoder", "load_encoder")


def __getattr__(name: str) -> Any:
    if name in _NEEDS_TENSORFLOW:
        from elmobatch.encoding import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
