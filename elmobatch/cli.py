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


# ---- pretrain (issue 5) ---------------------------------------------------------------------


@main.command()
@click.argument("corpus", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model directory to write (and resume from).")
@click.option("--options", "options_path", type=click.Path(dir_okay=False), help="options.json of the architecture (default: the bundled model's).")
@click.option("--epochs", default=10, show_default=True, help="Epochs in all (a resumed run counts the earlier ones).")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--max-minutes", type=float, help="Stop this run after M minutes (checkpointed; rerun to resume).")
@click.option("--max-steps", type=int, help="Stop after N steps in all (checkpointed; rerun to resume).")
@click.option("--heldout", default=0.05, show_default=True, help="Fraction of messages held out for perplexity.")
@click.option("--min-count", default=2, show_default=True, help="Vocabulary: tokens seen at least this often.")
@click.option("--max-vocab", type=int, help="Vocabulary: at most this many entries, specials included.")
@click.option("--tokenizer", default="punct", show_default=True, type=click.Choice(["punct", "whitespace"]))
@click.option("--learning-rate", default=1e-3, show_default=True)
@click.option("--dropout", default=0.1, show_default=True, help="Dropout on the top layer before the softmax.")
@click.option("--seed", default=0, show_default=True)
@click.option("--log-every", default=50, show_default=True, help="Steps between training-perplexity lines.")
@click.option("--checkpoint-every", default=200, show_default=True, help="Steps between checkpoints.")
@click.option("--note", help="Free text about the corpus, kept in model.json (e.g. where it came from).")
def pretrain(corpus, out, options_path, **kwargs):
    """Pretrain a biLM on CORPUS text files (UTF-8, one message per line) into --out.

    Writes options.json + weights.hdf5 (official layout), vocab.txt and model.json; checkpoints
    to OUT/checkpoint and resumes from it when run again with the same corpus and settings.
    """
    from elmobatch.training.pretrain import PretrainError, pretrain as run_pretrain

    options = None
    if options_path:
        try:
            with open(options_path, encoding="utf-8") as f:
                options = json.load(f)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"{options_path}: not readable JSON options ({exc})")
    try:
        run_pretrain(list(corpus), out, options=options, log=lambda line: click.echo(line, err=True), **kwargs)
    except PretrainError as exc:
        raise click.ClickException(str(exc))


if __name__ == "__main__":
    sys.exit(main())
