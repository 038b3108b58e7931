"""Inputs as a new user gives them: the same input options on every command that reads messages,
`-` (standard input) and `--out -` (standard output), directories, globs and .gz files."""

import csv
import gzip
import io
import json
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.reading import ReadOptions
from elmobatch.scheduling.run import run_job
from elmobatch.scheduling.spec import load_job
from tests.conftest import FIXTURE, write_messages

REPO = Path(__file__).resolve().parents[1]
INPUT_OPTIONS = {"--format", "--encoding", "--text-column", "--id-column", "--delimiter", "--max-text-chars",
                 "--max-tokens", "--reject-empty"}


def cli(*args, stdin: bytes | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def embedded(out: Path) -> pd.DataFrame:
    """An embed output's rows: id, source_file, row_number, embedding (as lists), in file order."""
    table = pq.read_table(out, columns=["id", "source_file", "row_number", "embedding"]).to_pandas()
    return table.sort_values(["source_file", "row_number"], kind="stable").reset_index(drop=True)


# ---- one set of input options --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["embed", "score", "train", "evaluate", "pretrain"])
def test_every_reading_command_has_the_same_input_options(command):
    """The same eight options, with the same help and defaults, matching ReadOptions field for field."""
    params = {opt: p for p in main.commands[command].params for opt in p.opts}
    assert set(params) >= INPUT_OPTIONS, f"{command} lacks {sorted(INPUT_OPTIONS - set(params))}"
    assert {params[o].name for o in INPUT_OPTIONS} == {f.name for f in fields(ReadOptions)}
    reference = {o: (p.help, p.default) for p in main.commands["embed"].params for o in p.opts}
    assert all((params[o].help, params[o].default) == reference[o] for o in INPUT_OPTIONS)
    assert params["--max-text-chars"].default == ReadOptions().max_text_chars


def test_score_reads_latin1_with_encoding_format_id_column_and_text_limit(tmp_path, head_dir):
    """score takes --encoding, --format, --id-column and --max-text-chars like embed does."""
    path = tmp_path / "legacy.dat"  # no extension the format could be told from
    path.write_bytes("ref;text\nr1;café au lait\nr2;".encode("latin-1") + b"x" * 60 + b"\n")
    out = tmp_path / "scored.csv"
    result = cli("score", path, "--head", head_dir, "--out", out, "--encoding", "latin-1", "--format", "csv",
                 "--id-column", "ref", "--max-text-chars", 40, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out, dtype=str)
    assert scored["text"].tolist() == ["café au lait"] and scored["ref"].tolist() == ["r1"]
    rejects = pd.read_csv(tmp_path / "scored.rejects.csv")
    assert rejects[["row_number", "reason"]].values.tolist() == [[1, "too_long"]]


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_train_and_pretrain_take_format_and_encoding(tmp_path):
    """train and pretrain read a Latin-1 file without a known extension when told its format and encoding."""
    rows = "".join(f"{'spam' if i % 3 == 0 else 'ham'};message {i} café\n" for i in range(30))
    path = tmp_path / "labelled.dat"
    path.write_bytes(("label;text\n" + rows).encode("latin-1"))
    common = ["--format", "csv", "--encoding", "latin-1", "--text-column", "text"]
    result = cli("train", path, "--label-column", "label", "--model", FIXTURE, "--out", tmp_path / "head",
                 "--epochs", 1, "--cache-dir", tmp_path / "cache", *common)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "head" / "head.json").read_text())["data"]["rows_read"] == 30
    from elmobatch.training.corpus import read_corpus

    [info] = read_corpus([path], ReadOptions(fmt="csv", encoding="latin-1", text_column="text")).files
    assert (info["encoding"], info["messages"]) == ("iso8859-1", 30)


def test_job_file_takes_max_text_chars_and_reject_empty(tmp_path, head_dir):
    """A job file has every input key of the command line: max_text_chars and reject_empty reject rows."""
    (tmp_path / "incoming").mkdir()
    (tmp_path / "incoming" / "day.csv").write_text('id,text\n1,short\n2," "\n3,' + "y" * 50 + "\n")
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "limits"\ninputs = ["incoming/*.csv"]\noutput = "scored"\nhead = "{head_dir}"\n'
                   f'model = "{FIXTURE}"\n'
                   'cache_dir = "cache"\noutput_format = "csv"\nmax_text_chars = 20\nreject_empty = true\n')
    report = run_job(load_job(job), log=lambda line: None)
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (3, 1, 2), report.error
    rejects = pd.read_csv(report.files[0]["rejects"])
    assert rejects[["row_number", "reason"]].values.tolist() == [[1, "empty_text"], [2, "too_long"]]


# ---- standard input and standard output ----------------------------------------------------------


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_score_stdin_to_stdout_prints_only_the_csv(tmp_path, head_dir):
    """`printf 'id,text\\n1,hi\\n' | elmobatch score - --format csv --out -`, as a real process: stdout
    is the scored CSV alone; the summary goes to stderr, the rejects to stdin.scored.rejects.csv."""
    result = subprocess.run([sys.executable, "-m", "elmobatch.cli", "score", "-", "--format", "csv", "--out", "-",
                             "--head", str(head_dir), "--cache-dir", str(tmp_path / "cache")],
                            input=b"id,text\n1,hi\n2,caf\xc3\xa9\n", capture_output=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "LANG": "C"}, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    rows = list(csv.reader(io.StringIO(result.stdout.decode("utf-8"))))
    assert rows[0] == ["id", "text", "source_file", "row_number", "label", "score"]
    assert [r[:4] for r in rows[1:]] == [["1", "hi", "stdin", "0"], ["2", "café", "stdin", "1"]]
    assert all(0 <= float(r[3]) <= 1 for r in rows[1:])
    assert "-: rows_read 2 = scored 2 + rejected 0" in result.stderr.decode()
    assert (tmp_path / "stdin.scored.rejects.csv").is_file()


def test_stdin_format_is_detected_and_jsonl_goes_to_stdout(tmp_path, head_dir, monkeypatch):
    """Without --format the content tells: a JSON object per line is JSON Lines; --out-format jsonl
    writes one object per scored row, rejects (row numbers of stdin) to the rejects file."""
    monkeypatch.chdir(tmp_path)
    lines = b'{"id": 7, "text": "hello there"}\nnot json\n{"id": 9, "text": "call now"}\n'
    result = CliRunner().invoke(main, ["score", "-", "--head", str(head_dir), "--out", "-", "--out-format", "jsonl",
                                       "--cache-dir", str(tmp_path / "cache")], input=lines)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["id"], r["text"]) for r in records] == [(7, "hello there"), (9, "call now")]
    assert {"label", "score"} <= set(records[0])
    rejects = pd.read_csv(tmp_path / "stdin.scored.rejects.csv")
    assert rejects[["source_file", "row_number", "reason"]].values.tolist() == [["stdin", 1, "unparseable"]]


def test_embed_reads_stdin(tmp_path):
    """embed - reads standard input; its ids are stdin:ROW (format detected: a delimited header is CSV)."""
    result = cli("embed", "-", "--out", tmp_path / "v", "--model", FIXTURE, "--cache-dir", tmp_path / "cache",
                 stdin=b"text,n\nfirst message,1\nsecond one,2\n")
    assert result.exit_code == 0, result.output
    assert embedded(tmp_path / "v")["id"].tolist() == ["stdin:0", "stdin:1"]


# ---- directories, globs, .gz -----------------------------------------------------------------------


@pytest.fixture()
def folder(tmp_path):
    """incoming/ with b.csv (3 rows), a.csv (2 rows), and _hidden.csv, .x.csv, which are skipped."""
    incoming = tmp_path / "incoming"
    write_messages(incoming / "b.csv", 10, 13)
    write_messages(incoming / "a.csv", 0, 2)
    write_messages(incoming / "_hidden.csv", 0, 5)
    write_messages(incoming / ".x.csv", 0, 5)
    return incoming


def test_directory_and_glob_expand_sorted_skipping_hidden_and_underscore(tmp_path, folder):
    """A directory and a glob name the same files in name order; row numbers count per file."""
    for name, argument in (("dir", folder), ("glob", folder / "*.csv")):
        result = cli("embed", argument, "--out", tmp_path / name, "--model", FIXTURE, "--cache-dir", tmp_path / "c")
        assert result.exit_code == 0, result.output
        manifest = json.loads((tmp_path / name / "_manifest.json").read_text())
        assert [i["name"] for i in manifest["inputs"]] == ["a.csv", "b.csv"]
        table = embedded(tmp_path / name)
        assert table["id"].tolist() == ["a.csv:0", "a.csv:1", "b.csv:0", "b.csv:1", "b.csv:2"]


def test_one_file_named_two_ways_is_one_input(tmp_path, folder, monkeypatch):
    """`score a.csv ./a.csv` was two inputs of one stem, refused as a clash of outputs."""
    from elmobatch.reading.inputs import expand_inputs

    monkeypatch.chdir(folder)
    assert expand_inputs(["a.csv", "./a.csv", str(folder / "a.csv"), "*.csv", "."]) == ["a.csv", "b.csv"]


def test_score_directory_writes_one_output_per_visible_file(tmp_path, folder, head_dir):
    result = cli("score", folder, "--head", head_dir, "--out", tmp_path / "scored", "--cache-dir", tmp_path / "c")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "scored").iterdir()) == [
        "a.scored.csv", "a.scored.rejects.csv", "b.scored.csv", "b.scored.rejects.csv"]
    assert len(pd.read_csv(tmp_path / "scored" / "b.scored.csv")) == 3


def test_glob_matching_nothing_is_a_usage_error(tmp_path, folder):
    for command in (["embed", folder / "*.tsv", "--out", tmp_path / "v"], ["score", folder / "*.tsv"]):
        result = cli(*command)
        assert result.exit_code == 2
        assert "*.tsv: the pattern matches no files" in result.output


def test_gz_input_gives_the_same_rows_ids_and_vectors_as_the_plain_file(tmp_path, head_dir):
    plain = write_messages(tmp_path / "plain" / "day.csv", 0, 40)
    packed = tmp_path / "packed" / "day.csv.gz"
    packed.parent.mkdir()
    with open(plain, "rb") as f, gzip.open(packed, "wb") as g:
        shutil.copyfileobj(f, g)
    tables = []
    for source, out in ((plain, "v_plain"), (packed, "v_gz")):
        result = cli("embed", source, "--out", tmp_path / out, "--model", FIXTURE, "--cache-dir", tmp_path / "c",
                     "--chunk-rows", 15)
        assert result.exit_code == 0, result.output
        tables.append(embedded(tmp_path / out))
    assert len(tables[0]) == 40
    pd.testing.assert_frame_equal(tables[0], tables[1])
    manifest = json.loads((tmp_path / "v_gz" / "_manifest.json").read_text())
    assert manifest["inputs"][0]["decisions"]["format"] == "csv"
    assert manifest["inputs"][0]["rows_read"] == manifest["inputs"][0]["rows_embedded"] == 40  # counted per file
    result = cli("score", packed, "--head", head_dir, "--out", tmp_path / "s", "--cache-dir", tmp_path / "c")
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(tmp_path / "s" / "day.scored.csv")
    assert len(scored) == 40 and set(scored["source_file"]) == {"day.csv"}  # as its rejects and embed name it


def test_a_glob_skips_hidden_and_underscore_directories_and_empty_ones(tmp_path, folder):
    (folder / "_rejects").mkdir()
    (folder / "_rejects" / "r.csv").write_text("id,text\nx,not a message\n")
    (folder / "archive").mkdir()  # empty: nothing to read there, no error
    result = cli("embed", folder / "*", "--out", tmp_path / "v", "--model", FIXTURE, "--cache-dir", tmp_path / "c")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "v" / "_manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == ["a.csv", "b.csv"]


def test_commands_that_do_not_read_object_storage_say_so(tmp_path):
    result = cli("pretrain", "s3://some-bucket/in/day.csv", "--out", tmp_path / "model")
    assert result.exit_code == 2 and "only `elmobatch embed`, `score` and `run` read object storage" in result.output


def test_corrupt_gz_is_one_clear_error(tmp_path):
    path = tmp_path / "day.csv.gz"
    packed = gzip.compress(b"id,text\n" + "".join(f"{i},hello {i * i}\n" for i in range(500)).encode())
    path.write_bytes(packed[: len(packed) // 2])  # cut short
    result = cli("embed", path, "--out", tmp_path / "v", "--model", FIXTURE, "--cache-dir", tmp_path / "c")
    assert result.exit_code == 1
    assert "day.csv.gz: not a readable gzip stream" in result.output


def test_a_file_uri_with_a_host_is_refused_not_read_from_the_root(tmp_path):
    messages = write_messages(tmp_path / "in" / "m.csv", 0, 3)
    result = cli("embed", f"file://{str(messages).lstrip('/')}", "--out", tmp_path / "v", "--model", FIXTURE)
    assert result.exit_code == 2 and "expected file:///ABSOLUTE/PATH" in result.output
    result = cli("embed", f"file://{messages}", "--out", f"file://{tmp_path / 'v'}", "--model", FIXTURE,
                 "--cache-dir", tmp_path / "c")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v" / "_SUCCESS").is_file()


def test_schemes_elmobatch_does_not_read_are_refused_never_made_local_folders(tmp_path, monkeypatch):
    """gs://, hdfs://...: one line naming the path and what is read, and no local "gs:" folder. Commands
    that write only local paths refuse s3:// outputs the same way."""
    from elmobatch.scheduling.spec import JobSpecError, load_job

    monkeypatch.chdir(tmp_path)
    messages = write_messages(tmp_path / "m.csv", 0, 3)
    supported = "expected a local path, file:///PATH or s3://BUCKET/KEY"
    for args, code in ((["embed", "gs://bucket/day.csv", "--out", "v"], 2),
                       (["embed", messages, "--out", "hdfs://namenode/v"], 1),
                       (["embed", messages, "--out", "v", "--cache-dir", "gs://bucket/cache"], 2),
                       (["score", "gs://bucket/day.csv", "--out", "s.csv"], 2),
                       (["score", messages, "--out", "gs://bucket/s.csv"], 2),  # a usage error
                       (["train", messages, "--label-column", "id", "--out", "gs://bucket/head"], 2)):
        result = cli(*args, "--model", FIXTURE)
        assert result.exit_code == code and supported in result.output, (args, result.output)
    for command in (["train", messages, "--label-column", "id", "--model", FIXTURE], ["pretrain", messages]):
        result = cli(*command, "--out", "s3://bucket/out")
        assert result.exit_code == 2 and "writes local or mounted paths only" in result.output, command
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "j"\ninputs = ["m.csv"]\noutput = "gs://bucket/scored"\n')
    with pytest.raises(JobSpecError, match="gs:// is not supported"):
        load_job(job)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml", "m.csv"]  # no "gs:", "s3:" or "hdfs:" folder
