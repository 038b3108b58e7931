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


if __name__ == "__main__":
    sys.exit(main())
