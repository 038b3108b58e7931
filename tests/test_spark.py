"""The Spark engine in local mode gives the local engine's output: same files, rows, vectors, rejects, counts.

One Spark session (local[2]) for the module: starting Spark takes ~20 s.
"""

import gzip
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

pytest.importorskip("pyspark", reason="the Spark engine is an optional extra: pip install 'elmobatch[spark]'")

from elmobatch.caching import EmbeddingCache  # noqa: E402
from elmobatch.cli import main  # noqa: E402
from elmobatch.embedding import EmbedOptions, embed_files, read_embedding  # noqa: E402
from elmobatch.embedding.spark import SparkError, embed_files_spark  # noqa: E402
from elmobatch.encoding import load_encoder  # noqa: E402
from tests.conftest import FIXTURE, SMS, tiny_options, write_random_model  # noqa: E402

OPTIONS = EmbedOptions(chunk_rows=100, keep_text=True)  # 4 chunks of the CSV, so two tasks share it


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # Python workers run this interpreter (the spark.pyspark.python conf alone is not read in local mode)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("elmobatch-tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .config("spark.pyspark.python", sys.executable).getOrCreate())
    yield session
    session.stop()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    """300 reference rows (Latin-1, spilled row 95) + a NUL row + an unterminated quote; a small JSON Lines file."""
    base = tmp_path_factory.mktemp("inputs")
    lines = SMS.read_bytes().split(b"\n")[:301]
    csv_file = base / "sms300.csv"
    csv_file.write_bytes(b"\n".join(lines) + b"\nham,a NUL \x00 here,,,\nham,\"never closed\n")
    jsonl = base / "extra.jsonl"
    rows = [json.dumps({"text": f"message number {i} , ok"}) for i in range(12)]
    jsonl.write_text("\n".join(rows[:5] + ["{not json", ""] + rows[5:] + [json.dumps({"text": 7})]) + "\n")
    return [csv_file, jsonl]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, inputs, spark, fixture_encoder):
    """The same inputs through both engines, each with a fresh cache."""
    base = tmp_path_factory.mktemp("runs")
    local = embed_files(inputs, base / "local", fixture_encoder, options=OPTIONS, cache=EmbeddingCache(base / "c1"))
    remote = embed_files_spark(inputs, base / "spark", str(FIXTURE), options=OPTIONS, cache_dir=base / "c2",
                               spark=spark)
    return base, local, remote


def table(out):
    return ds.dataset(str(out), format="parquet").to_table().sort_by("id")


def rejects(out) -> pd.DataFrame:
    frame = ds.dataset(str(Path(out) / "_rejects"), format="parquet").to_table().to_pandas()
    return frame.sort_values(["source_file", "row_number"]).reset_index(drop=True)


def listing(out) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in Path(out).rglob("*"))


def assert_same_output(a, b):
    assert listing(a) == listing(b)  # part-<file>-<chunk> names, _rejects/, _manifest.json, _SUCCESS; no _tmp/_state
    ta, tb = table(a), table(b)
    assert tb.schema.equals(ta.schema, check_metadata=True)  # fixed_size_list types and elmobatch metadata
    for column in ("id", "source_file", "row_number", "text_hash", "n_tokens", "text", "model_fingerprint"):
        assert tb[column].to_pylist() == ta[column].to_pylist(), column
    np.testing.assert_allclose(read_embedding(tb), read_embedding(ta), atol=1e-5)
    pd.testing.assert_frame_equal(rejects(b), rejects(a))
    for name in listing(a):
        if name.endswith(".parquet"):
            assert pq.ParquetFile(Path(b) / name).metadata.num_rows == pq.ParquetFile(Path(a) / name).metadata.num_rows


@pytest.mark.slow  # starts Spark
def test_spark_output_equals_local(runs, inputs):
    base, local, remote = runs
    assert_same_output(base / "local", base / "spark")
    for key in ("reject_reasons", "parts", "rejects", "options", "signature"):
        assert remote[key] == local[key], key
    rows = ("rows_read", "rows_embedded", "rows_rejected")
    assert {k: remote["counts"][k] for k in rows} == {k: local["counts"][k] for k in rows}
    assert {k: remote["counts"][k] for k in rows} == {"rows_read": 317, "rows_embedded": 312, "rows_rejected": 5}
    # Each distinct text is computed once in the run, as in the local engine, though the two CSV slices share some
    c = remote["counts"]
    assert c["cache_hits"] + c["computed"] == c["rows_embedded"] and c["computed"] == local["counts"]["computed"]
    assert remote["engine"]["computed_ahead"] == c["computed"]
    assert remote["reject_reasons"] == {"nul_byte": 1, "unterminated_quote": 1, "unparseable": 1, "not_text": 1,
                                        "blank_line": 1}
    assert [i["decisions"]["encoding"] for i in remote["inputs"]] == ["latin-1", "utf-8"]
    engine = remote["engine"]
    assert engine["name"] == "spark" and engine["tasks"] == 3  # 2 slices of the CSV + 1 for the JSON Lines file
    assert 1 <= engine["model_loads"] <= engine["python_workers"] <= 2  # once per Python worker, not per task
    assert json.loads((base / "spark" / "_manifest.json").read_text())["counts"] == remote["counts"]
    spilled = table(base / "spark").filter(ds.field("id") == "sms300.csv:95").to_pylist()[0]
    assert spilled["text"].endswith("FML, PO Box 5249, MK17 92H. 450Ppw 16\"")


@pytest.mark.slow  # Spark
def test_cli_spark_reuses_cache_and_session(runs, inputs, spark):
    base, local, _ = runs
    out = base / "cli"
    args = ["embed", *map(str, inputs), "--out", str(out), "--model", str(FIXTURE), "--cache-dir", str(base / "c2"),
            "--chunk-rows", "100", "--keep-text", "--engine", "spark", "--master", "local[2]"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "rows_read 317 = rows_embedded 312 + rows_rejected 5; cache_hits 312, computed 0" in result.output
    assert_same_output(base / "local", out)
    assert spark.range(3).count() == 3  # the CLI used the active session and left it running


@pytest.mark.slow  # Spark
def test_worker_model_must_match_driver(runs, inputs, spark, tmp_path):
    """The driver's model and the executors' differ: the run fails with the reason, and no _SUCCESS."""
    other = load_encoder(str(write_random_model(tmp_path / "other", tiny_options())))
    with pytest.raises(SparkError, match="fingerprint .* the driver's has"):
        embed_files_spark(inputs[1:], tmp_path / "out", str(FIXTURE), encoder=other, cache_dir=tmp_path / "c",
                          spark=spark)
    assert not (tmp_path / "out" / "_SUCCESS").exists()


@pytest.mark.slow  # Spark
def test_spark_computes_a_message_repeated_across_tasks_once(spark, tmp_path):
    """Four inputs (four tasks on local[2], two at a time) share 40 messages, some in every chunk: the run
    computes and stores each distinct text once; the write tasks then find every vector in the cache."""
    shared = [f"see you at the station at {h} o'clock" for h in range(40)]
    inputs, distinct = [], set(shared)
    for f in range(4):
        rows = [f"file {f} says hello number {i}" for i in range(120)]
        distinct.update(rows)
        for i, text in enumerate(shared):  # spread over the file's four chunks (50, 50, 50, 10)
            rows.insert(4 * i, text)
        inputs.append(tmp_path / f"feed{f}.txt")
        inputs[-1].write_text("\n".join(rows) + "\n")
    manifest = embed_files_spark(inputs, tmp_path / "out", str(FIXTURE), options=EmbedOptions(chunk_rows=50),
                                 cache_dir=tmp_path / "cache", spark=spark)
    assert manifest["engine"]["tasks"] == 4 and manifest["timings"]["chunks_written"] == 16
    assert manifest["counts"]["rows_embedded"] == 4 * 160
    assert manifest["counts"]["computed"] == manifest["engine"]["computed_ahead"] == len(distinct) == 520
    assert manifest["counts"]["cache_hits"] == 4 * 160 - 520
    [model] = EmbeddingCache(tmp_path / "cache").models()
    assert model["vectors"] == 520  # every encoder call stores its vectors: none was computed twice


def test_tasks_are_planned_without_reading_the_inputs(inputs, tmp_path, fixture_encoder):
    """The driver sizes the slices from file sizes alone: the inputs are not read again after planning."""
    from elmobatch.embedding.job import plan_run
    from elmobatch.embedding.spark import _units

    copies = []
    for path in inputs:
        copies.append(tmp_path / path.name)
        copies[-1].write_bytes(path.read_bytes())
    with plan_run(copies, tmp_path / "out", fixture_encoder, OPTIONS) as plan:
        for path in copies:
            path.unlink()  # a driver that opened them now would fail
        units = _units(plan, OPTIONS.chunk_rows, parallelism=2)
    assert units == [(0, 0, 2), (0, 1, 2), (1, 0, 1)]
    with plan_run([inputs[1]], tmp_path / "one", fixture_encoder, OPTIONS) as plan:  # 433 bytes, 14 lines
        # no more slices than ceil(433 / 100) (a record takes a byte at least), though 8 were asked for
        assert _units(plan, OPTIONS.chunk_rows, parallelism=8) == [(0, k, 5) for k in range(5)]


def test_missing_pyspark_and_master_without_engine(inputs, tmp_path, monkeypatch):
    base = ["embed", str(inputs[1]), "--out", str(tmp_path / "out"), "--model", str(FIXTURE)]
    result = CliRunner().invoke(main, [*base, "--master", "local[2]"])
    assert result.exit_code == 1 and "--master is a Spark setting: add --engine spark" in result.output
    monkeypatch.setitem(sys.modules, "pyspark", None)  # what an install without the extra looks like to Python
    result = CliRunner().invoke(main, [*base, "--engine", "spark"])
    assert result.exit_code == 1 and "pip install 'elmobatch[spark]'" in result.output
    assert not (tmp_path / "out").exists()  # refused before touching --out


class Interrupt(Exception):
    pass


class StopAfterFirstChunk:
    """A progress sink that interrupts the local engine once its first chunk is on disk (progress
    also comes after each encoder batch, before a chunk is written)."""

    def __init__(self, out: Path):
        self.first_chunk = out / "_state" / "part-00000-000000.json"

    def update(self, rows, fraction):
        if self.first_chunk.is_file():
            raise Interrupt

    def close(self):
        pass


@pytest.mark.slow  # Spark
def test_spark_resumes_an_interrupted_run(runs, inputs, spark, fixture_encoder):
    base, local, _ = runs
    out = base / "resumed"
    with pytest.raises(Interrupt):
        embed_files(inputs, out, fixture_encoder, options=OPTIONS, cache=EmbeddingCache(base / "c3"),
                    progress=StopAfterFirstChunk(out))
    assert (out / "_state" / "part-00000-000000.json").is_file() and not (out / "_SUCCESS").exists()
    manifest = embed_files_spark(inputs, out, str(FIXTURE), options=OPTIONS, cache_dir=base / "c3", spark=spark)
    assert manifest["timings"]["chunks_resumed"] == 1 and manifest["timings"]["chunks_written"] == 4
    assert manifest["counts"]["rows_read"] == local["counts"]["rows_read"]
    assert_same_output(base / "local", out)


@pytest.mark.slow  # Spark
def test_run_job_on_spark(inputs, spark, tmp_path, fixture_encoder):
    """`elmobatch run` with engine = "spark": Spark fills the job's cache, then scoring finds every vector."""
    import datetime as dt

    from elmobatch.embedding.spark import SPARK_SCRATCH
    from elmobatch.reading import read_messages
    from elmobatch.scheduling.run import embed_with_spark, run_job
    from elmobatch.scheduling.spec import load_job

    train = tmp_path / "train.csv"
    train.write_bytes(b"\n".join(SMS.read_bytes().split(b"\n")[:401]) + b"\n")
    head = tmp_path / "head"
    result = CliRunner().invoke(main, ["train", str(train), "--label-column", "v1", "--model", str(FIXTURE),
                                       "--out", str(head), "--epochs", "2", "--cache-dir", str(tmp_path / "c0")])
    assert result.exit_code == 0, result.output
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "spark-job"\ninputs = ["{inputs[0]}"]\noutput = "{tmp_path / "scored"}"\n'
                   f'model = "{FIXTURE}"\nhead = "{head}"\ncache_dir = "{tmp_path / "cache"}"\nchunk_rows = 100\n'
                   'engine = "spark"\nspark_master = "local[2]"\n')
    spec = load_job(job)

    [manifest] = embed_with_spark(spec, list(spec.inputs), spark=spark)
    assert manifest["engine"]["name"] == "spark" and manifest["counts"]["rows_embedded"] == 300
    assert not (spec.output / SPARK_SCRATCH).exists()  # only the cache is kept
    texts = [t for chunk in read_messages(inputs[0]) for t in chunk.texts]
    cache = EmbeddingCache(tmp_path / "cache")
    cache.embed(fixture_encoder, texts)
    assert len(texts) == 300 and cache.computed == 0 and cache.hits == 300

    log = []
    report = run_job(spec, today=dt.date(2026, 1, 1), log=log.append)
    assert report.exit_code == 3, (report.error, log)  # ok, with the NUL row and the unterminated quote rejected
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (302, 300, 2)
    assert any("with Spark (local[2])" in line for line in log)
    assert (spec.output / "date=2026-01-01" / "_SUCCESS").is_file() and not (spec.output / SPARK_SCRATCH).exists()

    # A file the reader refuses stays out of the Spark job; the others are embedded and scored.
    (tmp_path / "refused.csv").write_bytes(gzip.compress(b"v1,v2\nham,hello\n"))
    job.write_text(job.read_text().replace(f'inputs = ["{inputs[0]}"]', f'inputs = ["{tmp_path / "refused.csv"}", '
                                           f'"{inputs[0]}"]').replace(str(tmp_path / "scored"), str(tmp_path / "s2"))
                   .replace(str(tmp_path / "cache"), str(tmp_path / "cache2")))
    log.clear()
    report = run_job(load_job(job), today=dt.date(2026, 1, 1), log=log.append)
    assert report.exit_code == 1 and report.status == "not all scored", (report.error, log)
    assert [Path(f["input"]).name for f in report.files_not_scored] == ["refused.csv"] and report.rows_scored == 300
    assert any("embedding 1 file(s) with Spark" in line for line in log)


@pytest.mark.slow  # a Spark job of two passes, and one of one
@pytest.mark.parametrize("id_column", [None, "msg_id"])
def test_run_on_spark_scores_inputs_of_one_file_name_in_two_folders(spark, tmp_path, head_dir, monkeypatch,
                                                                     id_column):
    """Their default ids (NAME:ROW) would collide in one Spark dataset: each is embedded in a pass of
    its own, and both are scored from the cache, as by the local engine. With an id column (here each
    file's own numbering from 1, so the ids repeat across files) one pass embeds them all."""
    import datetime as dt

    import elmobatch.embedding.spark as spark_engine
    from elmobatch.embedding.spark import SPARK_SCRATCH, distinct_name_passes
    from elmobatch.reading import read_messages
    from elmobatch.scheduling.run import run_job
    from elmobatch.scheduling.spec import load_job
    from tests.conftest import write_messages

    first = write_messages(tmp_path / "a" / "day.csv", 0, 30)
    second = write_messages(tmp_path / "b" / "day.csv", 30, 50)
    other = write_messages(tmp_path / "a" / "other.csv", 50, 60)
    assert distinct_name_passes([first, other, second]) == [[first, other], [second]]
    if id_column:
        for path in (first, second, other):
            table = pd.read_csv(path, encoding="latin-1")
            table.insert(0, id_column, range(1, len(table) + 1))
            table.to_csv(path, index=False, encoding="latin-1")
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "two-folders"\ninputs = ["{tmp_path}/*/*.csv"]\noutput = "{tmp_path / "scored"}"\n'
                   f'model = "{FIXTURE}"\nhead = "{head_dir}"\ncache_dir = "{tmp_path / "cache"}"\n'
                   'engine = "spark"\nspark_master = "local[2]"\n'
                   + (f'id_column = "{id_column}"\n' if id_column else ""))
    passes, sessions, missing = [], [], []
    real_embed = spark_engine.embed_files_spark
    encoder = load_encoder(str(FIXTURE))

    def embed_recording_each_pass(inputs, out, *args, **kwargs):
        passes.append(sorted(Path(p).relative_to(tmp_path).as_posix() for p in inputs))
        sessions.append(kwargs["spark"])
        manifest = real_embed(inputs, out, *args, **kwargs)
        check = EmbeddingCache(tmp_path / "cache")  # before scoring, which would fill in what is missing
        check.embed(encoder, [t for p in inputs for chunk in read_messages(p) for t in chunk.texts])
        missing.append(check.computed)
        return manifest

    monkeypatch.setattr(spark_engine, "embed_files_spark", embed_recording_each_pass)
    report = run_job(load_job(job), today=dt.date(2026, 1, 1), log=lambda line: None)
    assert report.exit_code == 0, report.error
    if id_column:
        assert passes == [["a/day.csv", "a/other.csv", "b/day.csv"]]
    else:
        assert passes == [["a/day.csv", "a/other.csv"], ["b/day.csv"]]
        assert sessions == [spark, spark]  # one session for both passes (here the module's, which is active)
    assert sorted(Path(f["input"]).relative_to(tmp_path).as_posix() for f in report.files) == \
        ["a/day.csv", "a/other.csv", "b/day.csv"]
    assert report.rows_scored == 60 and not (tmp_path / "scored" / SPARK_SCRATCH).exists()
    assert missing == [0] * len(passes)  # each pass left every vector of its inputs in the job's cache
