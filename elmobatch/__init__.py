"""elmobatch: embed and score message files with ELMo, in batches, on a schedule.

`Encoder` and `load_encoder` load TensorFlow on first use (quietly: see elmobatch._tensorflow);
importing elmobatch or its reading, caching and scheduling parts does not.
"""

import logging
from typing import TYPE_CHECKING, Any

from elmobatch.encoding.specs import ModelError
from elmobatch.errors import ElmobatchError

if TYPE_CHECKING:
    from elmobatch.encoding.encoder import Encoder, load_encoder

__version__ = "0.1.0"
__all__ = ["ElmobatchError", "Encoder", "ModelError", "load_encoder", "__version__"]
_NEEDS_TENSORFLOW = ("Encoder", "load_encoder")

# Messages go through the `elmobatch` loggers; a program using the library chooses where they go
# (the command line sends them to stderr). Without a handler of its own, nothing is printed.
logging.getLogger("elmobatch").addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    if name in _NEEDS_TENSORFLOW:
        from elmobatch.encoding import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
