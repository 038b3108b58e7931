"""The embedding cache keyed by (model fingerprint, normalized text hash)."""

from elmobatch.caching.cache import (EmbeddingCache, default_cache_dir, normalize_text, text_hash, text_key)

__all__ = ["EmbeddingCache", "default_cache_dir", "normalize_text", "text_hash", "text_key"]
