"""The `elmobatch` command line: a thin layer over the library; each command calls one function."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys

import click

from elmobatch.encoding.specs import PRECISIONS, ModelError
from elmobatch.errors import ElmobatchError
from elmobatch.cli_options import (NumberRange, cache_dir_option, checked, input_files, input_options, inputs_argument,
                                   local_location, model_of_head_option, model_option)
from elmobatch.text import TOKENIZERS
from elmobatch.settings import (CALIBRATIONS, CLASS_WEIGHTINGS, DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_ROWS,
                                DEFAULT_ENGINE, DEFAULT_PRECISION, DEFAULT_SPLIT, ENGINES, EXIT_CODE_STYLES,
                                HEAD_KINDS, STDOUT_FORMATS, VALIDATION_SLICES, VECTOR_DTYPES, VECTORS, FitSettings,
                                PretrainSettings)

FIT = FitSettings()  # the defaults of the train options

precision_option = click.option(
    "--precision", type=click.Choice(PRECISIONS), default=DEFAULT_PRECISION, show_default=True,
    help="Encoder arithmetic: bf16 runs the biLM's matmuls in bfloat16 (faster; vectors within 0.999 cosine).")


def load_encoder(spec: str, **kwargs):
    """elmobatch.load_encoder, imported only here: TensorFlow loads for the commands that run a model,
    never for help, version, argument errors or a job with nothing to do."""
    from elmobatch.encoding.encoder import load_encoder as load

    return load(spec, **kwargs)


LOG_LEVELS = ("debug", "info", "warning", "error")
logger = logging.getLogger("elmobatch.cli")


class _StderrHandler(logging.StreamHandler):
    """Writes each message to whatever sys.stderr is when it is logged (click's test runner swaps it)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class _EachWarningOnce(logging.Filter):
    """Lets a warning's text through once per command: a file read more than once in a command (say,
    planned, then scored) is warned of once."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        repeated = text in self.seen
        self.seen.add(text)
        return not repeated


def configure_logging(level: int) -> None:
    """The command line's only log handler: messages of the `elmobatch` loggers at `level` and above,
    as plain lines on stderr, each warning once. The library itself never adds a handler."""
    package_logger = logging.getLogger("elmobatch")
    for handler in [h for h in package_logger.handlers if isinstance(h, _StderrHandler)]:
        package_logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.addFilter(_EachWarningOnce())
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger.addHandler(handler)
    package_logger.setLevel(level)
    package_logger.propagate = False


def _log_level(quiet: bool, verbose: bool, log_level: str | None) -> int:
    if quiet and verbose:
        raise click.UsageError("--quiet and -v contradict each other: give one")
    if log_level:
        return getattr(logging, log_level.upper())
    return logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO


def progress(label: str, unit: str = "rows"):
    """A Progress for a long command (a bar on a terminal, a line every few seconds otherwise), or
    None when --quiet (or --log-level above info) asks for no progress."""
    from elmobatch.embedding.progress import Progress

    return Progress(label=label, unit=unit) if logging.getLogger("elmobatch.progress").isEnabledFor(logging.INFO) \
        else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})  # subcommands inherit -h
@click.version_option(package_name="elmobatch")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr: no progress, no notes.")
@click.option("-v", "--verbose", is_flag=True, help="Also debug messages on stderr.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Least important messages shown on stderr (default: info; overrides -q and -v).")
def main(quiet, verbose, log_level):
    """Embed and score message files with ELMo.

    Progress, notes and warnings go to stderr (Python logging, logger `elmobatch`); results to stdout.

    \b
    Examples:
      elmobatch score messages.csv           # label with the bundled model and head
      elmobatch embed messages.csv --out v/  # a Parquet embeddings dataset
      elmobatch score - --out - < in.csv     # standard input to standard output
      elmobatch run jobs/sms-nightly.toml    # a scheduled job
      elmobatch COMMAND -h                   # one command's options
      elmobatch -q run jobs/sms-nightly.toml # no progress or notes, only warnings and errors
    """
    configure_logging(_log_level(quiet, verbose, log_level))


@main.command()
@click.argument("model", default="default")
def info(model):
    """Describe MODEL (a load_encoder spec): path, dim, layers, tokenizer, fingerprint.

    \b
    Examples:
      elmobatch info
      elmobatch info path/to/model_dir
    """
    try:
        enc = load_encoder(model)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"path": enc.path, "dim": enc.dim, "layers": enc.n_layers + 1,
                           "tokenizer": enc.tokenizer, "fingerprint": enc.fingerprint}, indent=2))


@main.command()
@cache_dir_option
def models(cache_dir):
    """List the bundled model and the models with vectors in the embedding cache.

    \b
    Examples:
      elmobatch models
      elmobatch models --cache-dir /data/elmo-cache
    """
    from elmobatch.encoding.specs import bundled_model_dir

    rows = []
    try:
        enc = load_encoder("default")
        rows.append(("default (bundled)", enc.dim, enc.fingerprint[:16], "-", enc.path))
    except ModelError as exc:
        rows.append(("default (bundled)", "-", "-", "-", f"missing: {exc}"))
    cache = _cache(cache_dir)
    for info in cache.models():
        name = "cached" if info.get("precision", "float32") == "float32" else f"cached, {info['precision']}"
        rows.append((name, info.get("dim", "?"), info["fingerprint"][:16], f"{info['vectors']:,}",
                     info.get("path", "?")))
    header = ("model", "dim", "fingerprint", "vectors", "path")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row[:4], widths, strict=True)) + "  " + str(row[4]))
    click.echo(f"(embedding cache: {cache.directory}; bundled models in {bundled_model_dir().parent})")


# ---- cache housekeeping ---------------------------------------------------------------------

def parse_size(text: str) -> int:
    """A --max-size value -> bytes (see caching.cache.parse_size)."""
    from elmobatch.caching.cache import parse_size as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def human_bytes(n: int) -> str:
    """4783875 -> '4.6 MiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"


@main.group()
def cache():
    """Look after the embedding cache: its size, compaction, pruning.

    \b
    Examples:
      elmobatch cache info
      elmobatch cache prune --older-than 30 --max-size 10G
    """


@cache.command("info")
@cache_dir_option
def cache_info(cache_dir):
    """Models, vectors, bytes and segments in the cache.

    \b
    Examples:
      elmobatch cache info
      elmobatch cache info --cache-dir /data/elmobatch-cache
    """

    store = _cache(cache_dir)
    models = store.models()
    header = ("fingerprint", "dim", "vectors", "segments", "bytes", "index", "set aside")
    rows = [(m["fingerprint"][:16], m.get("dim", "?"), f"{m['vectors']:,}", m["segments"], human_bytes(m["bytes"]),
             human_bytes(m["index_bytes"]), m["set_aside"]) for m in models]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    total = sum(m["bytes"] + m["index_bytes"] for m in models)
    click.echo(f"{len(models)} model(s), {sum(m['vectors'] for m in models):,} vectors, "
               f"{sum(m['segments'] for m in models)} segments, {human_bytes(total)} in {store.directory}")


@cache.command("compact")
@cache_dir_option
def cache_compact(cache_dir):
    """Merge each day's small segments (safe while other runs use the cache).

    \b
    Examples:
      elmobatch cache compact
    """

    store = _cache(cache_dir)
    try:
        result = store.compact()
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"segments {result['segments_before']} -> {result['segments_after']} in {store.directory}")


@cache.command("prune")
@click.option("--older-than", "older_than", type=NumberRange(min=0), metavar="DAYS",
              help="Remove vectors written more than DAYS days ago.")
@click.option("--max-size", "max_bytes", metavar="SIZE", callback=lambda _ctx, _param, v: None if v is None
              else parse_size(v), help="Then remove the oldest until the cache's segments "
              "total at most SIZE (500M, 10G, ...).")
@cache_dir_option
def cache_prune(older_than, max_bytes, cache_dir):
    """Remove old vectors (whole segments, oldest first); they are recomputed if needed again.

    \b
    Examples:
      elmobatch cache prune --older-than 30
      elmobatch cache prune --max-size 10G
    """

    if older_than is None and max_bytes is None:
        raise click.UsageError("say what to remove: --older-than DAYS and/or --max-size SIZE")
    store = _cache(cache_dir)
    try:
        removed = store.prune(older_than_days=older_than, max_bytes=max_bytes)
    except OSError as exc:  # e.g. a cache on an object store (not pruned here)
        raise click.ClickException(str(exc)) from exc
    click.echo(f"removed {removed['segments']} segment(s), {removed['vectors']:,} vectors, "
               f"{human_bytes(removed['bytes'])} from {store.directory}")


# ---- embed ------------------------------------------------------------------------------------


@main.command()
@inputs_argument
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output dataset directory, or s3://BUCKET/PREFIX.")
@model_option
@input_options
@click.option("--batch-size", type=click.IntRange(1), default=DEFAULT_BATCH_SIZE, show_default=True,
              help="Messages per encoder batch.")
@click.option("--chunk-rows", type=click.IntRange(1), default=DEFAULT_CHUNK_ROWS, show_default=True,
              help="Rows read, embedded and written at a time.")
@cache_dir_option
@click.option("--keep-text", is_flag=True, help="Also write the message text as a `text` column.")
@click.option("--vectors", type=click.Choice(VECTORS), default=VECTORS[0], show_default=True,
              help="pooled: the `embedding` column only; layers: also each layer's vectors (`layers`, 3x the bytes).")
@click.option("--vector-dtype", type=click.Choice(VECTOR_DTYPES), default=VECTOR_DTYPES[0], show_default=True,
              help="Precision of the vectors written (float16: half the bytes, about 3 significant digits).")
@click.option("--engine", type=click.Choice(ENGINES), default=DEFAULT_ENGINE, show_default=True,
              help="Where chunks are embedded: this process, or Spark tasks (pip install 'elmobatch[spark]').")
@click.option("--master", help="Spark master for --engine spark: local[N], spark://HOST:PORT, yarn "
                               "(default: the active session's, or spark-submit's, or local[*]).")
@precision_option
def embed(inputs, out, model, read, batch_size, chunk_rows, cache_dir, keep_text, vectors, vector_dtype, engine,
          master, precision):
    """Embed message files INPUTS into a Parquet dataset in --out (resumable; see README).

    INPUTS: files (.gz ones read as gzip streams), directories (their files), glob patterns, or -
    for standard input (an empty message is embedded as zeros unless --reject-empty). s3://BUCKET/KEY
    (an object, a prefix or a pattern) and --out s3://BUCKET/PREFIX work too (credentials and
    AWS_ENDPOINT_URL as the AWS tools read them).

    Exit codes: 0 ok, 5 another run is writing --out (it holds --out/.lock; this one did nothing),
    2 bad arguments (e.g. a missing input, a glob matching nothing), 1 failure (a non-empty --out
    that is not an elmobatch output is refused untouched).

    \b
    Examples:
      elmobatch embed messages.csv --out vectors/
      elmobatch embed a.csv b.jsonl --out vectors/ --text-column body --keep-text
      elmobatch embed big.csv --out vectors/ --engine spark --master local[4]
      elmobatch embed incoming/ 'archive/*.csv.gz' --out vectors/
      some-export | elmobatch embed - --format jsonl --out vectors/
    """
    from elmobatch.embedding import EmbedOptions

    options = EmbedOptions.of(read, chunk_rows=chunk_rows, keep_text=keep_text, vectors=vectors,
                              vector_dtype=vector_dtype)
    model = model or "default"
    if master and engine != "spark":
        raise click.ClickException("--master is a Spark setting: add --engine spark")
    with input_files(inputs, objects=True) as paths:  # before the model loads, so a mistyped name fails at once
        _embed(paths, out, model, options, batch_size, cache_dir, engine, master, precision)


def _embed(inputs, out, model, options, batch_size, cache_dir, engine, master, precision):
    """embed's work once its inputs are files."""
    from elmobatch.embedding import OutputError, embed_files, summary_line
    from elmobatch.embedding.job import OutputLocked, duplicate_ids_warning
    from elmobatch.scheduling.run import EXIT_LOCKED  # the same code as `run`'s
    from elmobatch.reading import ReadError

    cache = _cache(cache_dir)  # the Spark engine's tasks open the same location
    try:
        enc = load_encoder(model, precision=precision)
        if engine == "spark":
            from elmobatch.embedding.spark import SparkError, embed_files_spark

            try:
                manifest = embed_files_spark(inputs, out, model, options=options, cache_dir=cache_dir,
                                             batch_size=batch_size, master=master, encoder=enc,
                                             precision=precision)
            except SparkError as exc:
                raise click.ClickException(str(exc)) from exc
        else:
            manifest = embed_files(inputs, out, enc, options=options, cache=cache,
                                   batch_size=batch_size, progress=progress("embed"))
    except OutputLocked as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    except (ModelError, ReadError, OutputError, ValueError, OSError) as exc:  # OSError: e.g. disk full
        raise click.ClickException(str(exc)) from exc
    warning = duplicate_ids_warning(manifest)
    if warning:
        logger.warning(warning)
    click.echo(summary_line(manifest, out))


# ---- heads: train, evaluate, score ----------------------------------------------------------


def _cache(cache_dir):
    """The embedding cache in --cache-dir, else in $ELMOBATCH_CACHE, else in ~/.cache/elmobatch; a usage
    error (exit 2, as a bad --cache-dir) when the variable names no cache location (gs://...)."""
    from elmobatch.caching import EmbeddingCache

    try:
        return EmbeddingCache(cache_dir)
    except ValueError as exc:  # --cache-dir itself was checked by its option
        raise click.UsageError(f"ELMOBATCH_CACHE: {exc}") from None


@main.command()
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option("--label-column", required=True, help="Column holding each row's label.")
@input_options
@model_option
@click.option("--out", required=True, type=click.Path(file_okay=False), callback=local_location,
              help="Head directory to write.")
@click.option("--split", "split_spec", default=DEFAULT_SPLIT, show_default=True,
              callback=checked("elmobatch.training.split", "parse_split"),
              help="Held-out rows: last:FRACTION (by position) or random:FRACTION[:SEED].")
@click.option("--epochs", default=FIT.epochs, show_default=True, type=click.IntRange(1),
              help="Most epochs (early stopping).")
@click.option("--batch-size", default=FIT.batch_size, show_default=True, type=click.IntRange(1),
              help="Rows per training step.")
@click.option("--seed", default=FIT.seed, show_default=True, type=int, help="Seed of every random choice.")
@click.option("--positive-label", help="For two labels: the one `score` is the probability of (default: the rarer).")
@click.option("--head-kind", type=click.Choice(HEAD_KINDS), default=FIT.head_kind, show_default=True,
              help="mlp: layer mix -> Dense(256, relu) -> output; logistic: layer mix -> output, L2-regularized.")
@click.option("--calibrate", type=click.Choice(CALIBRATIONS), default=FIT.calibrate, show_default=True,
              help="Calibrate the scores on the validation slice (before the threshold is chosen there).")
@click.option("--l2", type=NumberRange(min=0), help="L2 strength on the output weights "
              "(default: none for mlp; for logistic the best of 1e-4..1 on the validation slice).")
@click.option("--threshold", type=NumberRange(0, 1, min_open=True, max_open=True),
              help="Two labels: a fixed decision threshold on the (calibrated) score "
                   "(default: the one with the best F1 on the validation slice).")
@click.option("--members", default=FIT.members, show_default=True, type=click.IntRange(1), metavar="N",
              help="Train N nets of --head-kind, alike but for their seeds (--seed, --seed + 1, ...), and "
                   "average their logits: steadier than one net, at N times the training and head time.")
@click.option("--validation-slices", type=click.Choice(VALIDATION_SLICES), default=FIT.validation_slices,
              show_default=True,
              help="shared: one validation slice early-stops every net and fits the calibration and threshold; "
                   "per-net: each net of --members early-stops on its own slice, so together they train on every "
                   "row (with more than one net it needs --calibrate none and --threshold: (almost) no row is "
                   "held out from every net).")
@click.option("--class-weights", type=click.Choice(CLASS_WEIGHTINGS), default=FIT.class_weights, show_default=True,
              help="balanced: each label weighs the same in the training loss (a rare label's rows count "
                   "more); none: every row counts 1.")
@click.option("--dropout", default=FIT.dropout, show_default=True, type=NumberRange(0, 1, max_open=True),
              help="Dropout rate on the layer mix and the hidden layer while training.")
@click.option("--learning-rate", default=FIT.learning_rate, show_default=True,
              type=NumberRange(0, 1, min_open=True), help="Adam's learning rate.")
@click.option("--extra-train", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Another labelled file, read with the same columns and options as INPUT, whose rows all "
                   "train the head (never held out). Repeatable.")
@cache_dir_option
@precision_option
def train(input, label_column, read, model, out, split_spec, epochs, batch_size, seed, positive_label, head_kind,
          calibrate, l2, threshold, members, validation_slices, class_weights, dropout, learning_rate, extra_train,
          precision, cache_dir):
    """Train a head on the labelled file INPUT; write it with its held-out metrics to --out.

    \b
    Examples:
      elmobatch train labelled.csv --label-column v1 --out my_head/
      elmobatch train labelled.csv --label-column v1 --out my_head/ --head-kind logistic --split random:0.2
      elmobatch train labelled.csv --label-column v1 --out my_head/ --extra-train more_labelled.csv
      elmobatch train labelled.csv --label-column v1 --out my_head/ --members 5 --calibrate temperature
    """
    from elmobatch.training.fit import TrainingError, check_settings
    from elmobatch.training.metrics import format_table
    from elmobatch.training.train import model_record, parse_split, train_file

    model = model or "default"
    settings = FitSettings(epochs=epochs, batch_size=batch_size, seed=seed, head_kind=head_kind, calibrate=calibrate,
                           l2=l2, threshold=threshold, members=members, validation_slices=validation_slices,
                           class_weights=class_weights, dropout=dropout, learning_rate=learning_rate)
    try:
        check_settings(settings)  # options that do not go together: said before anything is read
    except TrainingError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        split = parse_split(split_spec)
        encoder = load_encoder(model, precision=precision)
        head = train_file(input, label_column=label_column, out=out, encoder=encoder, cache=_cache(cache_dir),
                          model_spec=model_record(model), split=split, read=read, positive=positive_label,
                          extra_train=extra_train, progress=progress("train: embedding"), settings=settings)
    except ElmobatchError as exc:  # WriteError too: the head's disk is full, naming the file
        raise click.ClickException(str(exc)) from exc
    meta = head.meta
    weights = ", ".join(f"{w:.3f}" for w in meta["layer_weights"])
    threshold = "none (most probable label)" if meta["threshold"] is None else f"{meta['threshold']:.4f}"
    click.echo(f"labels {', '.join(meta['labels'])}; threshold {threshold}; "
               f"layer weights {weights}; gamma {meta['gamma']:.3f}")
    click.echo(f"head {meta['head_kind']} ({meta['training']['architecture']}); {_calibration_line(meta)}")
    extra = sum(e["count"] for e in meta["data"].get("extra_train", []))
    click.echo(f"fitted on {meta['data']['train_rows']['count']} rows of {input}"
               + (f" and {extra} rows of --extra-train" if extra_train else ""))
    if meta["metrics"]:
        test = meta["data"]["test_rows"]
        click.echo(f"held-out rows {test['first']}..{test['last']} ({test['count']}):")
        click.echo(format_table(meta["metrics"]))
    click.echo(f"head written to {out}")


def _calibration_line(meta: dict) -> str:
    calibration = meta.get("calibration") or {"method": "none"}
    details = ", ".join(f"{k} {v:.4g}" for k, v in calibration.items() if k not in ("method", "rows"))
    return f"calibration {calibration['method']}" + (f" ({details})" if details else "")


@main.command()
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option("--label-column", required=True, help="Column holding each row's true label.")
@input_options
@click.option("--head", "head_dir", type=click.Path(exists=True, file_okay=False),
              help="Head directory (default: bundled).")
@model_of_head_option
@click.option("--out", type=click.Path(file_okay=False), callback=local_location,
              help="Report directory (default: <input stem>.report).")
@click.option("--split", "split_spec", callback=checked("elmobatch.training.split", "parse_split"),
              help="Evaluate only the held-out rows of this split (as in train).")
@click.option("--threshold", type=NumberRange(0, 1),
              help="Decision threshold instead of the head's (two labels).")
@cache_dir_option
@precision_option
def evaluate(input, label_column, read, head_dir, model, out, split_spec, threshold, cache_dir, precision):
    """Measure a head on the labelled file INPUT: metrics table, report.html with pictures, metrics.json.

    \b
    Examples:
      elmobatch evaluate test.csv --label-column v1
      elmobatch evaluate labelled.csv --label-column v1 --head my_head/ --split last:0.2 --out report/
    """
    from elmobatch.files import WriteError, named_write_errors, utc_now
    from pathlib import Path

    from elmobatch.training.metrics import format_table
    from elmobatch.reading.inputs import input_stem
    from elmobatch.scoring.report import write_report
    from elmobatch.scoring.score import evaluate_file, load_head_and_model, misclassified_rows
    from elmobatch.files import file_sha256

    try:
        head, encoder = load_head_and_model(head_dir, model, precision)
        metrics, y_true, proba, rows = evaluate_file(
            input, label_column=label_column, head=head, encoder=encoder, cache=_cache(cache_dir),
            read=read, rows=split_spec, threshold=threshold, progress=progress("evaluate"))
    except ElmobatchError as exc:
        raise click.ClickException(str(exc)) from exc
    data = head.meta.get("data", {})
    digest = file_sha256(input) if data else None  # a head without a data record was trained on nothing we know
    if split_spec is None and data.get("file_sha256") == digest:
        logger.warning(f"note: {input} is the file this head was trained on; its training rows are included "
                       f"(evaluate only the held-out rows with --split {data['split']})")
    elif any(extra.get("file_sha256") == digest for extra in data.get("extra_train", [])):
        logger.warning(f"note: {input} is an --extra-train file of this head: all its rows trained it, so these "
                       "figures are training figures")
    out = Path(out) if out else Path.cwd() / f"{input_stem(input)}.report"
    about = {"head": head_dir or "default (bundled)", "head fingerprint": head.fingerprint,
             "model": encoder.path, "model fingerprint": encoder.fingerprint,
             "date": utc_now()}
    try:
        with named_write_errors(out):  # e.g. disk full: the report folder named
            report = write_report(out, metrics, y_true, proba, head.labels, head.layer_weights,
                                  head.gamma, metrics["threshold"], title=f"elmobatch evaluate {input}",
                                  about=about, misclassified=misclassified_rows(head, y_true, proba, rows, threshold))
    except WriteError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_table(metrics))
    click.echo(f"report: {report} (metrics.json and PNGs beside it)")


@main.command()
@inputs_argument
@click.option("--head", "head_dir", type=click.Path(exists=True, file_okay=False),
              help="Head directory (default: bundled).")
@model_of_head_option
@click.option("--out", type=click.Path(allow_dash=True), help="Output .csv/.parquet file (one input), directory "
              "(default: <input stem>.scored.csv in the current directory), s3://BUCKET/KEY.csv|.parquet or "
              "s3://BUCKET/PREFIX, or - for standard output "
              "(then rejects go to <input stem>.scored.rejects.csv in the current directory).")
@click.option("--out-format", type=click.Choice(STDOUT_FORMATS),
              help="What --out - writes: CSV, one header for all inputs (the default), or JSON Lines.")
@click.option("--threshold", type=NumberRange(0, 1),
              help="Decision threshold instead of the head's (two labels).")
@click.option("--provenance/--no-provenance", default=True, show_default=True,
              help="Add source_file and row_number (as rejects number rows) to every scored row.")
@input_options
@cache_dir_option
@precision_option
def score(inputs, head_dir, model, out, out_format, threshold, provenance, read, cache_dir, precision):
    """Label every row of INPUTS: original columns + source_file + row_number + label + score;
    rejected rows to a rejects file. Parquet outputs record the head and model in their metadata.

    INPUTS: files (.gz ones read as gzip streams), directories (their files), glob patterns, or -
    for standard input. With --out - the scores go to standard output and nothing else does.
    s3://BUCKET/KEY (an object, a prefix or a pattern) and --out s3://... work too (credentials
    and AWS_ENDPOINT_URL as the AWS tools read them); each scored object is uploaded whole.

    \b
    Examples:
      elmobatch score messages.csv                     # -> messages.scored.csv
      elmobatch score a.csv b.csv --head my_head/ --out scored/
      elmobatch score messages.csv --out scored.parquet --threshold 0.3
      elmobatch score incoming/ 'archive/*.csv.gz' --out scored/
      elmobatch score 's3://bucket/incoming/*.csv' --out s3://bucket/scored
      cat messages.csv | elmobatch score - --out - > scored.csv

    Exit codes: 0 ok (rows a reader refused are in the rejects file), 2 bad arguments (e.g. a missing
    input, an --out of another extension, outputs that would overwrite an input or each other),
    5 another score is writing the same output, 1 failure (e.g. a head of another model, a full disk).
    """
    if out_format and out != "-":
        raise click.UsageError("--out-format is for --out - (standard output); a file's extension picks its format")
    with input_files(inputs, objects=True) as paths:
        _score(paths, head_dir, model, out, out_format or "csv", threshold, provenance, read, cache_dir, precision)


def _score(inputs, head_dir, model, out, out_format, threshold, provenance, read, cache_dir, precision):
    """score's work once its inputs are files; --out -: one StreamOutput on standard output for them all."""
    from elmobatch.reading.inputs import shown_name
    from elmobatch.scheduling.run import EXIT_LOCKED  # the same code as `run`'s and `embed`'s
    from elmobatch.scoring.score import (OutputLocked, OutputNameError, StreamOutput, load_head_and_model,
                                         output_paths, rejects_path, score_file)

    to_stdout = out == "-"
    try:
        try:
            outputs = output_paths(inputs, None if to_stdout else out, rejects_only=to_stdout)
        except OutputNameError as exc:
            raise click.UsageError(str(exc)) from None
        cache = _cache(cache_dir)  # a bad setting is said before the model loads
        head, encoder = load_head_and_model(head_dir, model, precision)
        with _utf8_stdout() if to_stdout else contextlib.nullcontext() as stdout:
            stream = StreamOutput(stdout, out_format) if to_stdout else None
            for path, target in zip(inputs, outputs, strict=True):
                summary = score_file(path, stream or target, head=head, encoder=encoder, cache=cache,
                                     read=read, threshold=threshold, provenance=provenance,
                                     rejects_to=rejects_path(target) if to_stdout else None,
                                     progress=progress(f"score {path.name}"))
                summary.input = shown_name(path)
                click.echo(summary.line(), err=to_stdout)
    except OutputLocked as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    except (ElmobatchError, OSError) as exc:  # OSError: e.g. disk full, naming the file
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _utf8_stdout():
    """Standard output as UTF-8 text whatever the locale (scores hold any text), flushed at the end."""
    stream = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    try:
        yield stream
    finally:
        stream.flush()
        stream.detach()


# ---- run --------------------------------------------------------------------------------------


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="Partition date (default: today).")
@click.option("--exit-codes", "exit_codes", type=click.Choice(EXIT_CODE_STYLES),
              help="detailed: the codes above; zero-on-success: 0 also for 3 and 4, for orchestrators such as "
                   "Airflow or Kubernetes (default: the job file's exit_codes, else detailed).")
def run(job_file, day, exit_codes):
    """Run the job in JOB_FILE (TOML): score new input files into OUTPUT/date=YYYY-MM-DD/.

    Exit codes: 0 ok, 3 ok with rejected rows, 4 nothing to do, 5 another run holds the lock,
    1 failure, 2 bad job file. With --exit-codes zero-on-success (or exit_codes = "zero-on-success"
    in the job file) 3 and 4 become 0.

    \b
    Examples:
      elmobatch run jobs/sms-nightly.toml
      elmobatch run jobs/sms-nightly.toml --date 2026-01-31
    """
    from elmobatch.scheduling.run import EXIT_BAD_JOB, exit_status, run_job
    from elmobatch.scheduling.spec import JobSpecError, load_job

    try:
        spec = load_job(job_file)
    except JobSpecError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_BAD_JOB)
    report = run_job(spec, today=day.date() if day else None)
    if report.error:
        click.echo(f"Error: {report.error}", err=True)
    click.echo(report.line())
    sys.exit(exit_status(report.exit_code, exit_codes or spec.exit_codes))


# ---- pretrain ---------------------------------------------------------------------------------

PRETRAIN = PretrainSettings()  # the defaults of the pretrain options

@main.command()
@click.argument("corpus", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), callback=local_location,
              help="Model directory to write (and resume from).")
@click.option("--options", "options_path", type=click.Path(dir_okay=False),
              help="options.json of the architecture (default: the bundled model's).")
@click.option("--epochs", default=PRETRAIN.epochs, show_default=True,
              help="Epochs in all (a resumed run counts the earlier ones).")
@click.option("--batch-size", default=PRETRAIN.batch_size, show_default=True,
              help="Messages per step (larger: faster per token).")
@click.option("--max-minutes", type=float, help="Stop this run after M minutes (checkpointed; rerun to resume).")
@click.option("--max-steps", type=int, help="Stop after N steps in all (checkpointed; rerun to resume).")
@click.option("--heldout", default=PRETRAIN.heldout, show_default=True,
              help="Fraction of messages held out for perplexity.")
@click.option("--min-count", default=PRETRAIN.min_count, show_default=True,
              help="Vocabulary: tokens seen at least this often.")
@click.option("--max-vocab", type=int, help="Vocabulary: at most this many entries, specials included.")
@click.option("--tokenizer", default=PRETRAIN.tokenizer, show_default=True, type=click.Choice(TOKENIZERS))
@click.option("--learning-rate", default=PRETRAIN.learning_rate, show_default=True)
@click.option("--dropout", default=PRETRAIN.dropout, show_default=True,
              help="Dropout on the top layer before the softmax.")
@click.option("--init-from", type=click.Path(file_okay=False, exists=True),
              help="Start from this model directory's biLM weights (and architecture), "
              "e.g. to go on training on more text.")
@click.option("--softmax-samples", default=PRETRAIN.softmax_samples, show_default=True,
              help="Train with a sampled softmax over N words per step (for large vocabularies); 0: full softmax.")
@click.option("--seed", default=PRETRAIN.seed, show_default=True)
@click.option("--log-every", default=PRETRAIN.log_every, show_default=True,
              help="Steps between training-perplexity lines.")
@click.option("--checkpoint-every", default=PRETRAIN.checkpoint_every, show_default=True,
              help="Steps between checkpoints.")
@click.option("--note", help="Free text about the corpus, kept in model.json (e.g. where it came from).")
@click.option("--rows", help="Use only data rows START:END (from 0, END excluded) of each corpus file, e.g. 0:4457.")
@input_options
def pretrain(corpus, out, options_path, **kwargs):
    """Pretrain a biLM on the messages of CORPUS files into --out.

    CORPUS: plain text (one message per line) or anything `embed` reads (CSV, TSV, JSON Lines,
    Parquet, .gz, directories, globs, -; --text-column picks the column, --rows the rows).

    Writes options.json + weights.hdf5 (official layout), vocab.txt and model.json; checkpoints
    to OUT/checkpoint and resumes from it when run again with the same corpus and settings.

    \b
    Examples:
      elmobatch pretrain corpus.txt --out my_model/ --epochs 5
      elmobatch pretrain messages.csv --text-column v2 --rows 0:4457 --out my_model/ --max-minutes 30
    """
    from elmobatch.training.corpus import PretrainError
    from elmobatch.training.pretrain import pretrain as run_pretrain
    from elmobatch.training.pretrain import summary_line

    options = None
    if options_path:
        try:
            with open(options_path, encoding="utf-8") as f:
                options = json.load(f)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"{options_path}: not readable JSON options ({exc})") from exc
    with input_files(corpus) as paths:
        try:
            settings = PretrainSettings(options=options, **kwargs)
            metadata = run_pretrain(paths, out, settings, progress=progress("pretrain", "messages"))
        except PretrainError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(summary_line(out, metadata))


if __name__ == "__main__":
    sys.exit(main())
