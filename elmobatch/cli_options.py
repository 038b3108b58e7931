"""Command-line options shared by several commands, each declared once (defaults from elmobatch.settings).

    @main.command()
    @input_options            # --format ... --reject-empty: the command gets read=ReadOptions(...)
    @model_option
    def score(inputs, model, read, ...):
        with input_files(inputs) as paths:   # `-`, directories, globs -> files
            ...
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import sys
from collections.abc import Iterator

import click

from elmobatch.settings import DEFAULT_MAX_TEXT_CHARS, DEFAULT_MAX_TOKENS, FORMATS


def checked(module: str, check: str):
    """A click callback that gives an option's value, as given, to `module`.`check` first (imported
    only when the option is used: the reader loads pandas). Its ValueError, which names the option,
    becomes a usage error (exit 2) before any model loads; the library checks the value again for
    its own callers."""
    def callback(ctx, param, value: str | None) -> str | None:
        if value is not None:
            try:
                getattr(importlib.import_module(module), check)(value)
            except ValueError as exc:
                raise click.BadParameter(str(exc).removeprefix(f"{param.opts[0]} ")) from None
        return value

    return callback


class NumberRange(click.FloatRange):
    """click's FloatRange that also refuses nan (which compares false to every bound, so passes them)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


# The options of elmobatch.reading.ReadOptions, by field name (its `fmt` is --format).
_READ_OPTIONS = {
    "fmt": click.option(
        "--format", "fmt", type=click.Choice(FORMATS),
        help="Input format (default: from the extension, the one before .gz for a gzip stream; for - and "
             "names without an extension, from the content)."),
    "encoding": click.option(
        "--encoding", callback=checked("elmobatch.reading.detect", "check_encoding"),
        help="Text encoding (default: UTF-8, falling back to Latin-1 for files that are not)."),
    "text_column": click.option("--text-column", help="Column holding the message (default: detected)."),
    "id_column": click.option(
        "--id-column", help="Column of each row's id: embed's `id` column (default: file name:row number); every "
                            "command rejects a row without one (missing_id)."),
    "delimiter": click.option(
        "--delimiter", callback=checked("elmobatch.reading.detect", "check_delimiter"),
        help="Field delimiter of CSV/TSV input, one character (default: detected from the first lines among "
             ", ; tab |; the choice and its reason are recorded)."),
    "max_text_chars": click.option(
        "--max-text-chars", type=click.IntRange(1), default=DEFAULT_MAX_TEXT_CHARS, show_default=True,
        help="Longer messages are rejected (too_long)."),
    "max_tokens": click.option(
        "--max-tokens", type=click.IntRange(1), default=DEFAULT_MAX_TOKENS, show_default=True,
        help="Messages with more tokens are rejected (too_many_tokens): this bounds each message's time and memory."),
    "reject_empty": click.option(
        "--reject-empty", is_flag=True,
        help="Reject empty messages (nothing but spaces or invisible characters) instead of reading them as messages."),
}


def input_options(command):
    """Add the input options to `command`, which receives them as one `read` (a ReadOptions)."""

    @functools.wraps(command)
    def with_read_options(*args, **kwargs):
        from elmobatch.reading import ReadOptions  # pandas: only once a command runs

        read = ReadOptions(**{name: kwargs.pop(name) for name in _READ_OPTIONS})
        return command(*args, read=read, **kwargs)

    for option in reversed(_READ_OPTIONS.values()):
        with_read_options = option(with_read_options)
    return with_read_options


model_option = click.option("--model", help="Encoder: a load_encoder spec (default: the bundled model).")
model_of_head_option = click.option(
    "--model", help="Encoder: a load_encoder spec (default: the model the head names; the bundled head's is the "
                    "bundled model).")

def _parsed_location(value) -> object:
    """as_path(value) (a Path or a StoredPath); a scheme elmobatch does not read is a usage error."""
    from elmobatch.storage import as_path

    try:
        return as_path(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _storage_location(ctx, param, value):
    """A local path, file:///PATH or s3://...; any other scheme is a usage error (never a local folder "gs:")."""
    if value is not None and "://" in str(value):
        _parsed_location(value)
    return value


def local_location(ctx, param, value):
    """For options that write only local paths: s3:// and other schemes are usage errors (never a
    local folder named "s3:" or "gs:"); file:///PATH is the local PATH."""
    from elmobatch.storage import is_object_uri

    if value is None:
        return None
    if is_object_uri(str(value)):
        raise click.BadParameter(f"{value}: this command writes local or mounted paths only; "
                                 "`elmobatch embed`, `score` and `run` write object storage")
    return str(_parsed_location(value))


cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False), callback=_storage_location,
    help="Embedding cache: a directory or s3://BUCKET/PREFIX (default: $ELMOBATCH_CACHE, else ~/.cache/elmobatch).")

inputs_argument = click.argument("inputs", nargs=-1, required=True)


@contextlib.contextmanager
def input_files(arguments, *, objects: bool = False) -> Iterator[list]:
    """The files INPUTS name (`-`: standard input, copied to a temporary file for the block;
    directories and globs expanded, sorted). One that names nothing is a usage error (exit 2), and
    so is an object store's (s3://) unless the command reads them (`objects`)."""
    from elmobatch.reading.inputs import InputError, open_inputs
    from elmobatch.storage import is_object_uri

    stored = [str(a) for a in arguments if is_object_uri(str(a))]
    if stored and not objects:  # refused before any request to the store
        raise click.UsageError(f"{stored[0]}: only `elmobatch embed`, `score` and `run` read object storage so "
                               "far; copy the objects to a local or mounted path first")
    with contextlib.ExitStack() as stack:
        try:
            paths = stack.enter_context(open_inputs(arguments, sys.stdin.buffer))
        except InputError as exc:
            raise click.UsageError(str(exc)) from None
        yield paths
