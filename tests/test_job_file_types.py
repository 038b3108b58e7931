"""Job files are type-checked key by key at load: `elmobatch run` exits 2 naming the file, the key and
what it must hold, before any model loads; a job's defaults are the command line's."""

import re
from dataclasses import fields

import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.scheduling.spec import KEY_TYPES, OPTIONAL, REQUIRED, JobSpec, load_job
from elmobatch.settings import (DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_ROWS, DEFAULT_ENGINE, DEFAULT_MAX_TOKENS,
                                DEFAULT_PRECISION)

BASE = {"name": '"typed"', "inputs": '["incoming/*.csv"]', "output": '"scored"'}


def write_job(tmp_path, **values: str):
    """A job file with BASE's keys and `values` (TOML literals) replacing or adding keys."""
    (tmp_path / "incoming").mkdir(exist_ok=True)
    lines = [f"{key} = {literal}" for key, literal in {**BASE, **values}.items()]
    job = tmp_path / "job.toml"
    job.write_text("[job]\n" + "\n".join(lines) + "\n")
    return job


BAD_VALUES = [
    ("retention_days", '"thirty"', "a positive whole number of days"),
    ("retention_days", "0", "a positive whole number of days"),
    ("batch_size", '"lots"', "a positive whole number of messages"),
    ("batch_size", "2.5", "a positive whole number of messages"),
    ("chunk_rows", "true", "a positive whole number of rows"),
    ("max_tokens", "-1", "a positive whole number of tokens"),
    ("threshold", "1.5", "a probability between 0 and 1"),
    ("threshold", '"0.5"', "a probability between 0 and 1"),
    ("encoding", '"klingon"', "an ASCII-compatible text encoding"),
    ("encoding", '"rot13"', "an ASCII-compatible text encoding"),  # a codec, but of text to text
    ("encoding", '"utf-16"', "an ASCII-compatible text encoding"),
    ("text_column", "3", "a column name (a string)"),
    ("id_column", '""', "a column name (a string)"),
    ("format", '"xlsx"', "one of csv, tsv, jsonl, parquet, txt"),
    ("output_format", '"json"', "one of parquet, csv"),
    ("precision", '"int8"', "one of float32, bf16"),
    ("engine", '"dask"', "one of local, spark"),
    ("allow_remote_model", '"yes"', "true or false"),
    ("spark_master", "[1]", "a Spark master URL"),
    ("cache_dir", "false", "a directory path (a string)"),
    ("model", "7", "a load_encoder spec (a string)"),
    ("head", "{ dir = 'x' }", 'a head directory or "default"'),
    ("name", "5", "a non-empty string"),
    ("inputs", "[]", "a glob pattern or a non-empty list of them"),
    ("inputs", '["a.csv", 3]', "a glob pattern or a non-empty list of them"),
    ("output", "1", "a directory path (a string)"),
    ("exit_codes", '"quiet"', "one of detailed, zero-on-success"),
    ("delimiter", '";;"', "one character"),
    ("delimiter", "'\"'", "one character other than a quote or newline"),
]


@pytest.mark.parametrize(("key", "literal", "expected"), BAD_VALUES, ids=[f"{k}={v}" for k, v, _ in BAD_VALUES])
def test_a_wrong_type_exits_2_naming_the_key_and_the_expected_type(tmp_path, key, literal, expected):
    job = write_job(tmp_path, **{key: literal})
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith(f"Error: {job}: [job].{key} must be {expected}"), message
    assert len(message.splitlines()) == 1 and "Traceback" not in message


def test_every_key_has_a_type_check():
    assert set(KEY_TYPES) == set(REQUIRED) | {"model", "head"} | set(OPTIONAL)


def test_good_values_load_and_defaults_are_the_command_lines(tmp_path):
    job = write_job(tmp_path, retention_days="30", batch_size="32", threshold="1", encoding='"latin-1"',
                    inputs='"incoming/*.csv"')
    spec = load_job(job)
    assert (spec.retention_days, spec.batch_size, spec.threshold, spec.encoding) == (30, 32, 1, "latin-1")
    assert spec.inputs == (str(tmp_path / "incoming" / "*.csv"),)
    defaults = load_job(write_job(tmp_path))
    assert defaults.batch_size == DEFAULT_BATCH_SIZE and defaults.chunk_rows == DEFAULT_CHUNK_ROWS
    help_text = CliRunner().invoke(main, ["embed", "-h"]).output
    batch_default = re.search(r"--batch-size.*?\[default: (\d+)", help_text, re.S)
    chunk_default = re.search(r"--chunk-rows.*?\[default: (\d+)", help_text, re.S)
    assert batch_default and int(batch_default.group(1)) == defaults.batch_size
    assert chunk_default and int(chunk_default.group(1)) == defaults.chunk_rows


def test_label_column_is_refused_as_an_unknown_key_naming_it(tmp_path):
    """Scoring never used label_column, so a job that sets it is refused rather than silently ignoring it."""
    job = write_job(tmp_path, label_column='"v1"')
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert message.startswith(f"Error: {job}: unknown key(s) in [job]: label_column (known: "), message
    assert len(message.splitlines()) == 1


def test_every_key_is_a_typed_field_of_job_spec_with_the_command_lines_defaults(tmp_path):
    keys = {f.name for f in fields(JobSpec)} - {"source"}
    assert keys == set(KEY_TYPES) and "label_column" not in keys
    assert "__getattr__" not in vars(JobSpec)
    spec = load_job(write_job(tmp_path))
    embed = {p.name: p.default for p in main.commands["embed"].params}
    for key in ("batch_size", "chunk_rows", "max_tokens", "precision", "engine"):
        assert getattr(spec, key) == embed[key], key
    assert (spec.precision, spec.engine, spec.max_tokens) == (DEFAULT_PRECISION, DEFAULT_ENGINE, DEFAULT_MAX_TOKENS)
