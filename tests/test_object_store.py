"""`elmobatch embed` reading s3:// inputs and writing --out s3://, against a real S3 server (moto's
server mode, started as a subprocess on a free port) with the tiny fixture model."""

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.embedding import read_embedding
from elmobatch.files import file_sha256
from elmobatch.reading.inputs import expand_inputs
from tests.conftest import FIXTURE, kill_when, write_messages
from tests.s3_server import AWS_SETTINGS, BUCKET, keys, listing, put

ROOT = Path(__file__).resolve().parents[1]


def embed(*args, cache):
    return CliRunner().invoke(main, ["embed", *map(str, args), "--model", str(FIXTURE), "--cache-dir", str(cache)])


def stored_dataset(fs, prefix: str):
    return ds.dataset(f"{BUCKET}/{prefix}", filesystem=fs, format="parquet").to_table().sort_by("id")


def local_dataset(out: Path):
    return ds.dataset(str(out), format="parquet").to_table().sort_by("id")


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_s3_inputs_to_s3_out_equal_the_local_run(s3, tmp_path):
    a = write_messages(tmp_path / "local" / "a.csv", 0, 40)
    b = write_messages(tmp_path / "b.csv", 40, 70)
    b_gz = tmp_path / "local" / "b.csv.gz"
    b_gz.write_bytes(gzip.compress(b.read_bytes()))
    put(s3, "in/a.csv", a.read_bytes())
    put(s3, "in/b.csv.gz", b_gz.read_bytes())
    put(s3, "in/_skipped.csv", b"text\nnot an input\n")
    put(s3, "in/.hidden.csv", b"text\nnot an input\n")
    assert expand_inputs([f"s3://{BUCKET}/in/"]) == [f"s3://{BUCKET}/in/a.csv", f"s3://{BUCKET}/in/b.csv.gz"]
    assert expand_inputs([f"s3://{BUCKET}/in/*.gz"]) == [f"s3://{BUCKET}/in/b.csv.gz"]

    local = embed(tmp_path / "local", "--out", tmp_path / "out", "--chunk-rows", "25", cache=tmp_path / "c1")
    assert local.exit_code == 0, local.output
    stored = embed(f"s3://{BUCKET}/in/", "--out", f"s3://{BUCKET}/out", "--chunk-rows", "25",
                   cache=tmp_path / "c2")
    assert stored.exit_code == 0, stored.output + repr(stored.exception)

    mine, theirs = stored_dataset(s3, "out"), local_dataset(tmp_path / "out")
    assert mine.num_rows == theirs.num_rows == 70
    assert mine["id"].equals(theirs["id"]) and mine["source_file"].equals(theirs["source_file"])
    assert set(mine["source_file"].to_pylist()) == {"a.csv", "b.csv"}
    np.testing.assert_array_equal(read_embedding(mine), read_embedding(theirs))
    objects = listing(s3, "out")
    assert sorted(objects) == sorted(p.relative_to(tmp_path / "out").as_posix()
                                     for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != ".lock")
    assert objects["_SUCCESS"] == b""
    manifest = json.loads(objects["_manifest.json"])
    assert [i["sha256"] for i in manifest["inputs"]] == [file_sha256(a), file_sha256(b_gz)]
    assert [i["path"] for i in manifest["inputs"]] == [f"s3://{BUCKET}/in/a.csv", f"s3://{BUCKET}/in/b.csv.gz"]


def test_foreign_prefix_is_refused_untouched(s3, tmp_path):
    put(s3, "foreign/data.csv", b"someone,else\n1,2\n")
    put(s3, "foreign/_manifest.json", json.dumps({"format": "something-else"}).encode())
    before = listing(s3, "foreign")
    source = tmp_path / "m.csv"
    write_messages(source, 0, 5)
    result = embed(source, "--out", f"s3://{BUCKET}/foreign", cache=tmp_path / "c")
    assert result.exit_code == 1
    assert f"--out s3://{BUCKET}/foreign: not empty and not an elmobatch output directory" in result.output
    assert listing(s3, "foreign") == before


def test_missing_bucket_or_object_is_one_clear_line(s3, tmp_path):
    source = write_messages(tmp_path / "m.csv", 0, 5)
    cases = [(["s3://no-such-bucket/in.csv", "--out", tmp_path / "o1"], 2, "no such bucket 'no-such-bucket'"),
             ([f"s3://{BUCKET}/in/missing.csv", "--out", tmp_path / "o2"], 2, "no such object or prefix"),
             ([f"s3://{BUCKET}/in/*.nothing", "--out", tmp_path / "o3"], 2, "matches no objects"),
             ([source, "--out", "s3://no-such-bucket/out"], 1, "no such bucket 'no-such-bucket'")]
    for args, code, message in cases:
        result = embed(*args, cache=tmp_path / "c")
        assert result.exit_code == code, result.output
        error = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(error) == 1 and message in error[0], result.output


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_a_live_writer_lease_refuses_a_second_run_and_a_dead_ones_is_taken_over(s3, tmp_path):
    source = write_messages(tmp_path / "m.csv", 0, 5)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as writer:
        try:
            lease = {"id": "other", "host": socket.gethostname(), "pid": writer.pid, "started": "then",
                     "renewed": time.time()}
            put(s3, "leased/.lock", json.dumps(lease).encode())  # another process on this host, renewed just now
            result = embed(source, "--out", f"s3://{BUCKET}/leased", cache=tmp_path / "c")
            assert result.exit_code == 5 and "another run is writing" in result.output
            assert listing(s3, "leased") == {".lock": json.dumps(lease).encode()}
        finally:
            writer.kill()

    elsewhere = {**lease, "host": "another-host", "renewed": time.time() - 3600}  # not renewed for an hour
    for dead in ({**lease, "pid": writer.pid}, {**lease, "pid": os.getpid()}, elsewhere):
        # its process has exited / this very pid (a restarted container's predecessor) / a lapsed lease
        put(s3, "leased/.lock", json.dumps(dead).encode())
        result = embed(source, "--out", f"s3://{BUCKET}/leased", cache=tmp_path / "c")
        assert result.exit_code == 0, (dead, result.output)
        assert "_SUCCESS" in listing(s3, "leased") and ".lock" not in listing(s3, "leased")


def test_a_lease_record_read_torn_is_read_again_not_taken_over(s3):
    """pyarrow reads an object's size, then its bytes: during a renewal of another length it can read
    a torn record. That is the live holder's lease, not a free one."""
    from elmobatch.locking import LockHeld, ObjectLease
    from elmobatch.storage import as_path

    live = json.dumps({"id": "other", "host": "another-host", "pid": 1, "started": "then", "renewed": time.time()})
    put(s3, "torn/.lock", live.encode()[:25])  # what a reader catching a renewal mid-way gets
    renewal = threading.Timer(0.3, put, (s3, "torn/.lock", live.encode()))
    renewal.start()
    try:
        with pytest.raises(LockHeld, match="held by pid 1 on another-host"), \
                ObjectLease(as_path(f"s3://{BUCKET}/torn/.lock")):
            pass
    finally:
        renewal.join()
    assert listing(s3, "torn") == {".lock": live.encode()}  # never overwritten


@pytest.mark.slow  # two CLI subprocesses, each importing TensorFlow
def test_sigkill_then_rerun_to_s3_equals_clean_run(s3, tmp_path):
    source = write_messages(tmp_path / "part.csv", 0, 600)  # 12 chunks of 50
    s3_input = put(s3, "kill-in/part.csv", source.read_bytes())
    out = f"s3://{BUCKET}/killed"
    args = ["embed", s3_input, "--out", out, "--model", str(FIXTURE), "--cache-dir", str(tmp_path / "cache"),
            "--chunk-rows", "50"]
    proc = subprocess.Popen([sys.executable, "-m", "elmobatch.cli", *args], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: len([k for k in keys(s3, "killed") if k.startswith("_state/part-")]) >= 3)
    left = listing(s3, "killed")
    assert proc.returncode == -signal.SIGKILL and "_SUCCESS" not in left and ".lock" in left
    finished = [k.removeprefix("_state/").replace(".json", ".parquet") for k in left if k.startswith("_state/part-")]
    put(s3, "killed/_rejects/_tmp/.tmp-0badc0de-part-00000-000011.parquet.tmp", b"half")  # as a kill mid-copy leaves

    rerun = subprocess.run([sys.executable, "-m", "elmobatch.cli", *args], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    objects = listing(s3, "killed")
    manifest = json.loads(objects["_manifest.json"])
    assert manifest["timings"]["chunks_resumed"] >= len(finished) >= 3
    assert manifest["timings"]["chunks_resumed"] + manifest["timings"]["chunks_written"] == 12
    for name in finished:  # a finished chunk was not written again
        assert objects[name] == left[name]

    clean = embed(source, "--out", tmp_path / "clean", "--chunk-rows", "50", cache=tmp_path / "fresh")
    assert clean.exit_code == 0, clean.output
    resumed, fresh = stored_dataset(s3, "killed"), local_dataset(tmp_path / "clean")
    assert resumed.num_rows == 600 and resumed["id"].equals(fresh["id"])
    assert resumed["text_hash"].equals(fresh["text_hash"])
    np.testing.assert_allclose(read_embedding(resumed), read_embedding(fresh), atol=1e-6)
    assert sorted(objects) == sorted(["_SUCCESS", "_manifest.json"] + [f"part-00000-{i:06d}.parquet" for i in range(12)]
                                     + [f"_rejects/part-00000-{i:06d}.parquet" for i in range(12)])


@pytest.fixture(scope="module")
def spark(s3):
    """A Spark session in local[2] whose Python workers get the moto server's AWS_* settings through
    spark.executorEnv.* (what a cluster needs too; set here also because a JVM started earlier in
    this pytest process keeps the environment it started with)."""
    pytest.importorskip("pyspark", reason="the Spark engine is an optional extra: pip install 'elmobatch[spark]'")
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master("local[2]").appName("elmobatch-s3-tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
               .config("spark.pyspark.python", sys.executable))
    for name in AWS_SETTINGS:
        builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    session = builder.getOrCreate()
    yield session
    session.stop()


def rejected(fs, prefix: str):
    return ds.dataset(f"{BUCKET}/{prefix}/_rejects", filesystem=fs, format="parquet").to_table().sort_by("row_number")


@pytest.mark.slow  # Spark
def test_spark_s3_inputs_to_s3_out_equal_the_local_engine(s3, spark, tmp_path):
    """`embed --engine spark` reads s3:// inputs on the executors and writes --out s3:// (parts, rejects
    and state records uploaded by the tasks, the manifest and _SUCCESS by the driver under its lease)."""
    a = write_messages(tmp_path / "a.csv", 0, 150)
    a.write_bytes(a.read_bytes() + b"ham,a NUL \x00 here,,,\n")  # a rejected row, uploaded by its task
    b = write_messages(tmp_path / "b.csv", 150, 190)
    put(s3, "spark-in/a.csv", a.read_bytes())
    put(s3, "spark-in/b.csv.gz", gzip.compress(b.read_bytes()))
    args = [f"s3://{BUCKET}/spark-in/", "--chunk-rows", "50"]

    local = embed(*args, "--out", f"s3://{BUCKET}/local-out", cache=tmp_path / "c1")
    assert local.exit_code == 0, local.output
    remote = embed(*args, "--out", f"s3://{BUCKET}/spark-out", "--engine", "spark", "--master", "local[2]",
                   cache=tmp_path / "c2")
    assert remote.exit_code == 0, remote.output + repr(remote.exception)
    assert "rows_read 191 = rows_embedded 190 + rows_rejected 1" in remote.output

    mine, theirs = stored_dataset(s3, "spark-out"), stored_dataset(s3, "local-out")
    assert mine.num_rows == theirs.num_rows == 190
    assert mine["id"].equals(theirs["id"]) and mine["source_file"].equals(theirs["source_file"])
    assert mine["text_hash"].equals(theirs["text_hash"])
    np.testing.assert_allclose(read_embedding(mine), read_embedding(theirs), atol=1e-5)
    assert rejected(s3, "spark-out").equals(rejected(s3, "local-out"))
    spark_objects, local_objects = listing(s3, "spark-out"), listing(s3, "local-out")
    assert sorted(spark_objects) == sorted(local_objects)  # no .lock, _state/ or _tmp/ left
    assert len([k for k in spark_objects if k.startswith("part-")]) == 5 and spark_objects["_SUCCESS"] == b""
    manifest, reference = json.loads(spark_objects["_manifest.json"]), json.loads(local_objects["_manifest.json"])
    assert manifest["engine"]["name"] == "spark" and manifest["engine"]["tasks"] >= 2
    assert manifest["counts"]["rows_embedded"] == reference["counts"]["rows_embedded"]
    for key in ("parts", "rejects", "reject_reasons", "signature"):
        assert manifest[key] == reference[key], key
    assert [i["path"] for i in manifest["inputs"]] == [f"s3://{BUCKET}/spark-in/a.csv",
                                                       f"s3://{BUCKET}/spark-in/b.csv.gz"]


def test_the_spark_driver_renews_its_lease_while_waiting_and_stops_if_taken_over(s3):
    """While the Spark jobs run, a thread renews the driver's lease; when another run has taken the
    output over meanwhile, the driver stops with OutputLocked before writing the manifest."""
    from elmobatch.embedding.job import OutputLocked
    from elmobatch.embedding.spark import _renewing
    from elmobatch.locking import ObjectLease
    from elmobatch.storage import as_path

    out = as_path(f"s3://{BUCKET}/renewed")
    with ObjectLease(out / ".lock", lease_seconds=0.45) as lease, _renewing(lease, out):
        first = lease.holder()["renewed"]
        time.sleep(0.6)  # four renewal ticks: a lease not renewed would have lapsed
        assert lease.holder()["renewed"] > first and lease.holder()["id"] == lease.id

    with (pytest.raises(OutputLocked, match="another run is writing"),
          ObjectLease(out / ".lock", lease_seconds=0.45) as lease, _renewing(lease, out)):
        other = {"id": "other", "host": "another-host", "pid": 1, "started": "now", "renewed": time.time()}
        put(s3, "renewed/.lock", json.dumps(other).encode())  # another run takes the output over
        time.sleep(0.3)
    assert json.loads(listing(s3, "renewed")[".lock"])["id"] == "other"  # its lease is left alone


@pytest.mark.slow  # loads the model: measured ~4 s on the busy 2-core machine
def test_a_spark_task_uploads_nothing_once_another_run_took_the_output_over(s3, tmp_path, fixture_encoder):
    """A task (here called in-process, as an executor's Python worker calls it) checks the driver's lease
    before each chunk: another run's record there fails the task before anything is uploaded."""
    from elmobatch.embedding import EmbedOptions
    from elmobatch.embedding.job import open_reader
    from elmobatch.embedding.spark import SparkError, SparkJob, embed_slice
    from elmobatch.storage import as_path

    source = put(s3, "task-in/m.csv", write_messages(tmp_path / "m.csv", 0, 30).read_bytes())
    options = EmbedOptions(chunk_rows=10)
    decisions = open_reader(as_path(source), options, fixture_encoder.tokenizer).decisions.to_dict()
    job = SparkJob(inputs=(source,), decisions=(decisions,), out=f"s3://{BUCKET}/task-out", model_spec=str(FIXTURE),
                   model_path=str(FIXTURE), fingerprint=fixture_encoder.fingerprint,
                   precision=fixture_encoder.precision, cache_dir=str(tmp_path / "cache"), options=options,
                   tokenizer=fixture_encoder.tokenizer, batch_size=None, done=frozenset(),
                   cache_key=fixture_encoder.cache_key, lease_id="the-driver")
    other = {"id": "another-run", "host": "elsewhere", "pid": 7, "started": "now", "renewed": time.time()}
    put(s3, "task-out/.lock", json.dumps(other).encode())
    with pytest.raises(SparkError, match="another run took over this output .pid 7 on elsewhere"):
        embed_slice(job, 0, 0, 1)
    assert sorted(listing(s3, "task-out")) == [".lock"]

    put(s3, "task-out/.lock", json.dumps({**other, "id": "the-driver"}).encode())  # the driver's lease: it writes
    records = embed_slice(job, 0, 0, 1)
    assert [r["part"] for r in records if "part" in r] == [f"part-00000-{i:06d}.parquet" for i in range(3)]
    written = [f"{d}part-00000-{i:06d}.{e}" for d, e in (("", "parquet"), ("_rejects/", "parquet"), ("_state/", "json"))
               for i in range(3)]  # each uploaded to its final name (no _tmp/ on a store)
    assert sorted(listing(s3, "task-out")) == sorted([".lock", *written])


# ---- the embedding cache on the store (--cache-dir s3://) ---------------------------------------


def cache_segments(fs, prefix: str) -> dict[str, bytes]:
    """The segment objects of the fixture model's cache under `prefix`: {v1/<fp>/seg-...: bytes}."""
    return {k: v for k, v in listing(fs, prefix).items() if k.endswith(".ebc")}


def counts(out: Path) -> dict:
    return json.loads((out / "_manifest.json").read_text())["counts"]


def forget_listings() -> None:
    """As a new process starts: nothing of the store's cache remembered."""
    from elmobatch.caching.stored import _LISTINGS

    _LISTINGS.clear()


@pytest.mark.slow  # three embed runs
def test_s3_cache_second_run_computes_nothing_and_gives_the_same_vectors(s3, tmp_path):
    source = write_messages(tmp_path / "m.csv", 0, 60)
    cache = f"s3://{BUCKET}/cache-a"
    first = embed(source, "--out", tmp_path / "o1", "--chunk-rows", "20", cache=cache)
    assert first.exit_code == 0, first.output + repr(first.exception)
    assert counts(tmp_path / "o1")["computed"] == 60
    objects = listing(s3, "cache-a")
    segments = cache_segments(s3, "cache-a")
    assert len(segments) == 3 and all(k.startswith("v1/") and "/seg-" in k for k in segments)  # a segment per chunk
    assert sorted(k for k in objects if k not in segments) == [next(iter(segments)).rsplit("/", 1)[0] + "/model.json"]

    forget_listings()  # the second run knows the cache only from the store
    second = embed(source, "--out", tmp_path / "o2", "--chunk-rows", "20", cache=cache)
    assert second.exit_code == 0, second.output
    assert "cache_hits 60, computed 0" in second.output and counts(tmp_path / "o2")["computed"] == 0
    assert cache_segments(s3, "cache-a") == segments  # nothing written again
    fresh = embed(source, "--out", tmp_path / "o3", "--chunk-rows", "20", cache=tmp_path / "local-cache")
    assert fresh.exit_code == 0, fresh.output
    np.testing.assert_array_equal(read_embedding(local_dataset(tmp_path / "o2")),
                                  read_embedding(local_dataset(tmp_path / "o3")))

    info = CliRunner().invoke(main, ["cache", "info", "--cache-dir", cache])
    assert info.exit_code == 0 and "1 model(s), 60 vectors, 3 segments" in info.output, info.output
    for command in (["prune", "--older-than", "1"], ["compact"]):  # not offered on a store: one clear line
        result = CliRunner().invoke(main, ["cache", *command, "--cache-dir", cache])
        assert result.exit_code == 1 and "on an object store is not supported" in result.output, result.output


@pytest.mark.slow  # three embed runs
def test_a_damaged_segment_on_the_store_is_recomputed_never_served(s3, tmp_path):
    source = write_messages(tmp_path / "m.csv", 0, 60)
    cache = f"s3://{BUCKET}/cache-b"
    warm = embed(source, "--out", tmp_path / "o1", "--chunk-rows", "20", cache=cache)
    assert warm.exit_code == 0, warm.output
    clean = read_embedding(local_dataset(tmp_path / "o1"))
    flipped, truncated, intact = sorted(cache_segments(s3, "cache-b"))
    data = cache_segments(s3, "cache-b")
    put(s3, f"cache-b/{flipped}", data[flipped][:-5] + bytes([data[flipped][-5] ^ 0xFF]) + data[flipped][-4:])

    # the process still knows the segment's keys: the entry's crc catches the flipped byte
    first = embed(source, "--out", tmp_path / "o2", "--chunk-rows", "20", cache=cache)
    assert first.exit_code == 0, first.output
    assert counts(tmp_path / "o2")["computed"] == 20  # the damaged segment's entries, as on a disk
    np.testing.assert_array_equal(read_embedding(local_dataset(tmp_path / "o2")), clean)

    # a new process reads the key sections: a truncated object is caught by its size
    put(s3, f"cache-b/{truncated}", data[truncated][:-1])
    forget_listings()
    second = embed(source, "--out", tmp_path / "o3", "--chunk-rows", "20", cache=cache)
    assert second.exit_code == 0, second.output
    assert counts(tmp_path / "o3")["computed"] == 20
    np.testing.assert_array_equal(read_embedding(local_dataset(tmp_path / "o3")), clean)
    manifest = json.loads((tmp_path / "o3" / "_manifest.json").read_text())
    assert manifest["cache"] == {"directory": cache, "corrupt_segments": 1}
    left = listing(s3, "cache-b")
    assert left[truncated + ".corrupt"] == data[truncated][:-1] and truncated not in left  # set aside
    assert flipped + ".corrupt" in left and left[intact] == data[intact]


@pytest.mark.slow  # Spark
def test_spark_executors_serve_a_cache_the_local_engine_warmed_on_the_store(s3, spark, tmp_path):
    """The executors' Python workers never stored these vectors: they find them by listing the store."""
    source = write_messages(tmp_path / "m.csv", 0, 120)
    cache = f"s3://{BUCKET}/cache-spark"
    warm = embed(source, "--out", tmp_path / "local", "--chunk-rows", "40", cache=cache)
    assert warm.exit_code == 0, warm.output
    remote = embed(source, "--out", tmp_path / "spark", "--chunk-rows", "40", "--engine", "spark",
                   "--master", "local[2]", cache=cache)
    assert remote.exit_code == 0, remote.output + repr(remote.exception)
    manifest = json.loads((tmp_path / "spark" / "_manifest.json").read_text())
    assert manifest["counts"]["computed"] == 0 and manifest["counts"]["cache_hits"] == 120
    assert manifest["engine"]["computed_ahead"] == 0 and manifest["cache"]["directory"] == cache
    np.testing.assert_array_equal(read_embedding(local_dataset(tmp_path / "spark")),
                                  read_embedding(local_dataset(tmp_path / "local")))

    fresh = embed(write_messages(tmp_path / "new.csv", 120, 150), "--out", tmp_path / "new", "--engine", "spark",
                  "--master", "local[2]", cache=cache)  # new texts: computed once by the executors, stored there
    assert fresh.exit_code == 0, fresh.output
    assert counts(tmp_path / "new")["computed"] == 30 and len(cache_segments(s3, "cache-spark")) > 3


@pytest.mark.slow  # two `run`s, each scoring through the model
def test_run_job_with_its_cache_on_the_store(s3, tmp_path, head_dir):
    write_messages(tmp_path / "incoming" / "day1.csv", 0, 50)

    def job(name: str) -> Path:
        spec = {"name": name, "inputs": ["incoming/*.csv"], "output": name, "model": str(FIXTURE),
                "head": str(head_dir), "cache_dir": f"s3://{BUCKET}/job-cache"}
        path = tmp_path / f"{name}.toml"
        path.write_text("[job]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in spec.items()))
        return path

    first = CliRunner().invoke(main, ["run", str(job("first")), "--date", "2026-01-01"])
    assert first.exit_code == 0, first.output
    segments = cache_segments(s3, "job-cache")
    assert len(segments) == 1 and not (tmp_path / "s3:").exists()  # in the bucket, not a local folder "s3:"
    forget_listings()
    second = CliRunner().invoke(main, ["run", str(job("second")), "--date", "2026-01-01"])
    assert second.exit_code == 0 and "scored 50" in second.output, second.output
    assert cache_segments(s3, "job-cache") == segments  # every vector came from the store: nothing new stored


def test_elmobatch_cache_names_a_cache_on_the_store_too(s3, tmp_path, monkeypatch):
    from elmobatch.caching import EmbeddingCache
    from elmobatch.caching.stored import StoredEmbeddingCache

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ELMOBATCH_CACHE", f"s3://{BUCKET}/cache-env")
    assert isinstance(EmbeddingCache(), StoredEmbeddingCache) and str(EmbeddingCache().directory).endswith("cache-env")
    source = write_messages(tmp_path / "m.csv", 0, 20)
    result = CliRunner().invoke(main, ["embed", str(source), "--out", str(tmp_path / "o"), "--model", str(FIXTURE)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert counts(tmp_path / "o")["computed"] == 20 and len(cache_segments(s3, "cache-env")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "o"]  # no local folder "s3:"
    monkeypatch.setenv("ELMOBATCH_CACHE", "gs://bucket/cache")
    for command in (["embed", str(source), "--out", str(tmp_path / "o2"), "--model", str(FIXTURE)],
                    ["score", str(source), "--model", str(FIXTURE)], ["cache", "info"], ["models"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, (command, result.output, result.exception)  # as a bad --cache-dir
        assert "Error: ELMOBATCH_CACHE: gs://bucket/cache: gs:// is not supported" in result.output, result.output
    for command in (["score", "--help"], ["cache", "info", "--cache-dir", str(tmp_path / "c")]):  # not used here
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, (command, result.output)


@pytest.mark.slow  # Spark, and two runs scoring through the model
def test_a_spark_job_from_and_to_the_store_equals_the_local_engine(s3, spark, tmp_path, head_dir):
    """`elmobatch run` with engine = "spark", inputs and output on s3://: the executors fill the job's
    cache through a scratch dataset under the output prefix, then scoring runs; the scored rows are
    the local engine's, and the scratch dataset is gone from the store."""
    source = write_messages(tmp_path / "day1.csv", 0, 80)
    put(s3, "job-in/day1.csv", source.read_bytes())
    jobs = {}
    spark_jobs_before = len(spark.sparkContext.statusTracker().getJobIdsForGroup())
    for engine in ("local", "spark"):
        spec = {"name": f"job-{engine}", "inputs": [f"s3://{BUCKET}/job-in/*.csv"],
                "output": f"s3://{BUCKET}/job-{engine}", "model": str(FIXTURE), "head": str(head_dir),
                "cache_dir": str(tmp_path / f"cache-{engine}"), "engine": engine, "spark_master": "local[2]",
                "chunk_rows": 30}
        jobs[engine] = tmp_path / f"{engine}.toml"
        jobs[engine].write_text("[job]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in spec.items()))
        result = CliRunner().invoke(main, ["run", str(jobs[engine]), "--date", "2026-01-01"])
        assert result.exit_code == 0, result.output + repr(result.exception)
    assert "embedding 1 file(s) with Spark (local[2])" in result.output
    assert len(spark.sparkContext.statusTracker().getJobIdsForGroup()) > spark_jobs_before  # Spark did embed
    spark_objects, local_objects = listing(s3, "job-spark"), listing(s3, "job-local")
    assert not [k for k in spark_objects if k.startswith("_spark_embed")]  # the scratch dataset is gone
    names = sorted(k for k in spark_objects if k.endswith(".parquet"))
    assert names == sorted(k for k in local_objects if k.endswith(".parquet")) and names
    for name in names:
        mine = pq.read_table(f"{BUCKET}/job-spark/{name}", filesystem=s3).replace_schema_metadata(None)
        theirs = pq.read_table(f"{BUCKET}/job-local/{name}", filesystem=s3).replace_schema_metadata(None)
        if "score" in theirs.column_names:
            np.testing.assert_allclose(mine["score"].to_numpy(), theirs["score"].to_numpy(), atol=1e-6)
            mine, theirs = mine.drop(["score"]), theirs.drop(["score"])
        assert mine.equals(theirs), name
    report = json.loads(spark_objects["_last_run.json"])
    assert report["status"] == "ok" and report["rows_scored"] == 80
