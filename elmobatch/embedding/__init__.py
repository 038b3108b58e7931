"""The embedding job: message files in, a Parquet embeddings dataset (plus rejects and manifest) out."""

from elmobatch.embedding.job import EmbedOptions, OutputError, embed_files, summary_line
from elmobatch.embedding.output import embeddings_schema, read_embedding, read_layers
from elmobatch.embedding.progress import Progress

__all__ = ["EmbedOptions", "OutputError", "Progress", "embed_files", "embeddings_schema",
           "read_embedding", "read_layers", "summary_line"]
