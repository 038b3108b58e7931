"""The `elmobatch` command line: a thin layer over the library; each command calls one function."""

from __future__ import annotations

import json
import sys

import click

from elmobatch.encoding import ModelError, load_encoder


@click.group()
@click.version_option(package_name="elmobatch")
def main():
    """Embed and score message files with ELMo."""


@main.command()
@click.argument("model", default="default")
def info(model):
    """Describe MODEL (a load_encoder spec): path, dim, layers, tokenizer, fingerprint."""
    try:
        enc = load_encoder(model)
    except ModelError as exc:
        raise click.ClickException(str(exc))
    click.echo(json.dumps({"path": enc.path, "dim": enc.dim, "layers": enc.n_layers + 1,
                           "tokenizer": enc.tokenizer, "fingerprint": enc.fingerprint}, indent=2))


# ---- embed (issue 3) -------------------------------------------------------------------------


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output dataset directory.")
@click.option("--model", default="default", show_default=True, help="A load_encoder spec.")
@click.option("--text-column", help="Column holding the message (default: detected).")
@click.option("--id-column", help="Column used as `id` (default: file name:row number).")
@click.option("--format", "fmt", type=click.Choice(["csv", "tsv", "jsonl", "parquet", "txt"]),
              help="Input format (default: from the extension).")
@click.option("--encoding", help="Text encoding (default: UTF-8, falling back to Latin-1 for files that are not).")
@click.option("--batch-size", type=int, help="Messages per encoder batch.")
@click.option("--chunk-rows", type=int, default=10_000, show_default=True, help="Rows read, embedded and written at a time.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Embedding cache (default: $ELMOBATCH_CACHE or ~/.cache/elmobatch).")
@click.option("--keep-text", is_flag=True, help="Also write the message text as a `text` column.")
@click.option("--max-text-chars", type=int, default=20_000, show_default=True, help="Longer messages are rejected.")
@click.option("--reject-empty", is_flag=True, help="Reject empty messages instead of embedding them as zeros.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="Where chunks are embedded: this process, or Spark tasks (pip install 'elmobatch[spark]').")
@click.option("--master", help="Spark master for --engine spark: local[N], spark://HOST:PORT, yarn "
                               "(default: the active session's, or spark-submit's, or local[*]).")
def embed(inputs, out, model, text_column, id_column, fmt, encoding, batch_size, chunk_rows, cache_dir, keep_text,
          max_text_chars, reject_empty, engine, master):
    """Embed message files INPUTS into a Parquet dataset in --out (resumable; see README)."""
    from elmobatch.caching import EmbeddingCache
    from elmobatch.embedding import EmbedOptions, OutputError, Progress, embed_files, summary_line
    from elmobatch.reading import ReadError

    options = EmbedOptions(text_column=text_column, id_column=id_column, fmt=fmt, encoding=encoding,
                           chunk_rows=chunk_rows, max_text_chars=max_text_chars, reject_empty=reject_empty,
                           keep_text=keep_text)
    if master and engine != "spark":
        raise click.ClickException("--master is a Spark setting: add --engine spark")
    try:
        enc = load_encoder(model)
        if engine == "spark":
            from elmobatch.embedding.spark import SparkError, embed_files_spark

            try:
                manifest = embed_files_spark(inputs, out, model, options=options, cache_dir=cache_dir,
                                             batch_size=batch_size, master=master, encoder=enc)
            except SparkError as exc:
                raise click.ClickException(str(exc))
        else:
            manifest = embed_files(inputs, out, enc, options=options, cache=EmbeddingCache(cache_dir),
                                   batch_size=batch_size, progress=Progress(sys.stderr))
    except (ModelError, ReadError, OutputError, ValueError, OSError) as exc:  # OSError: e.g. disk full
        raise click.ClickException(str(exc))
    click.echo(summary_line(manifest, out))


if __name__ == "__main__":
    sys.exit(main())
