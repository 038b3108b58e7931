"""What a model spec names, without loading TensorFlow: the error for a bad spec, the precisions,
where the bundled model lives and whether a spec is remote. Commands check these before (or
instead of) running a model."""

from pathlib import Path

from elmobatch.errors import ElmobatchError

PRECISIONS = ("float32", "bf16")


class ModelError(ElmobatchError, ValueError):
    """A model spec that cannot be loaded, with what was expected."""


def is_remote(spec: str) -> bool:
    """Whether loading `spec` may use the network: a URL or TF Hub handle ("https://...", "gs://...")."""
    return "://" in str(spec)


def bundled_model_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "models" / "default"
