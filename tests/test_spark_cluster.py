"""The Spark engine on a real standalone cluster (a master and two one-core workers on 127.0.0.1):
`elmobatch embed --engine spark --master spark://...` as a CLI subprocess, the model shipped with
--archives as the README's cluster recipe says, gives the local engine's dataset; and a run whose
executor is SIGKILLed mid-task still ends complete and correct, Spark running the task again.

One cluster for the module (tests/spark_cluster.py, fixture `spark_cluster` in conftest.py).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from contextlib import suppress
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

pytest.importorskip("pyspark", reason="the Spark engine is an optional extra: pip install 'elmobatch[spark]'")

from elmobatch.caching import EmbeddingCache  # noqa: E402
from elmobatch.embedding import EmbedOptions, embed_files, read_embedding  # noqa: E402
from tests.conftest import FIXTURE, write_messages  # noqa: E402
from tests.s3_server import AWS_SETTINGS, BUCKET, listing, put  # noqa: E402
from tests.spark_cluster import HOST, REPO, command_line, descendants, executors, signal_all  # noqa: E402

MESSAGES, CHUNK_ROWS = 2000, 250  # 8 chunks: two tasks (the cluster's two cores) of four chunks each
SMALL = 200  # the object-store run's messages: one chunk (CHUNK_ROWS) and one task
RUN_TIMEOUT_S = 300
KILL_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def messages(tmp_path_factory) -> Path:
    return write_messages(tmp_path_factory.mktemp("input") / "sms2000.csv", 0, MESSAGES)


@pytest.fixture(scope="module")
def local_out(messages, fixture_encoder, tmp_path_factory) -> Path:
    """The same input through the local engine: the dataset the cluster must reproduce."""
    base = tmp_path_factory.mktemp("local")
    embed_files([messages], base / "out", fixture_encoder, options=EmbedOptions(chunk_rows=CHUNK_ROWS),
                cache=EmbeddingCache(base / "cache"))
    return base / "out"


@pytest.fixture(scope="module")
def driver_dir(tmp_path_factory) -> Path:
    """The driver's working directory, as in the README's recipe: the model packed as elmo.tar.gz
    (shipped with --archives elmo.tar.gz#elmo) and unpacked as ./elmo for the driver."""
    base = tmp_path_factory.mktemp("driver")
    with tarfile.open(base / "elmo.tar.gz", "w:gz") as tar:
        for item in sorted(FIXTURE.iterdir()):
            tar.add(item, arcname=item.name)
    shutil.copytree(FIXTURE, base / "elmo")
    return base


def start_embed(cluster, driver_dir: Path, messages, out, cache, logs: Path | None = None,
                executor_env: tuple[str, ...] = ()) -> subprocess.Popen:
    """`elmobatch embed --engine spark --master spark://...` from `driver_dir`, with Spark settings in
    PYSPARK_SUBMIT_ARGS; its event log goes to LOGS/events, its stdout and stderr to files in LOGS
    (default: out's folder; a pipe nobody reads while it runs could fill and stall it). The executors
    get the driver's values of the variables `executor_env` names (spark.executorEnv.*)."""
    logs = logs or out.parent
    events = logs / "events"
    events.mkdir(parents=True, exist_ok=True)
    passed = "".join(f"--conf spark.executorEnv.{name}={os.environ[name]} " for name in executor_env)
    submit = (f"--archives {driver_dir / 'elmo.tar.gz'}#elmo --conf spark.ui.enabled=false {passed}"
              f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={events.as_uri()} "
              "--conf spark.eventLog.compress=false --conf spark.eventLog.rolling.enabled=false pyspark-shell")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": HOST,
           "PYSPARK_SUBMIT_ARGS": submit}
    args = [sys.executable, "-m", "elmobatch.cli", "embed", str(messages), "--out", str(out), "--model", "elmo",
            "--cache-dir", str(cache), "--chunk-rows", str(CHUNK_ROWS), "--engine", "spark", "--master", cluster.url]
    with open(logs / "driver.out", "wb") as stdout, open(logs / "driver.err", "wb") as stderr:
        return subprocess.Popen(args, cwd=driver_dir, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr, start_new_session=True)  # its own group: the driver JVM goes with it


def finish(run: subprocess.Popen, logs: Path) -> tuple[int, str, str]:
    """Wait for the CLI (killing its whole group, driver JVM included, past the timeout); returns
    its exit code, stdout and the tail of its stderr."""
    try:
        run.wait(timeout=RUN_TIMEOUT_S)
    except BaseException:
        stop(run)
        raise
    read = partial(Path.read_text, errors="replace")
    return run.returncode, read(logs / "driver.out"), read(logs / "driver.err")[-3000:]


def stop(run: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def assert_same_dataset(out: Path, expected: Path) -> None:
    """Same files, same schema, same ids in the same parts, same vectors (within 1e-6)."""
    def listing(d):
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.name != "_manifest.json")

    assert listing(out) == listing(expected)  # parts, _rejects, _SUCCESS; no _tmp, no _state
    got, want = (ds.dataset(str(d), format="parquet").to_table().sort_by("id") for d in (out, expected))
    assert got.schema.equals(want.schema, check_metadata=True)
    assert got.num_rows == MESSAGES and got["id"].to_pylist() == want["id"].to_pylist()
    assert got["source_file"].to_pylist() == want["source_file"].to_pylist()
    difference = np.abs(read_embedding(got) - read_embedding(want)).max()
    assert difference <= 1e-6, f"largest vector difference {difference}"


def summary(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("rows_read"))


def new_app_dirs(cluster, before: set[str]) -> list[Path]:
    return [d for d in cluster.work_dir.glob("app-*") if d.name not in before]


@pytest.mark.slow  # a Spark cluster, a driver and two executors each importing TensorFlow
def test_embed_on_standalone_cluster_equals_local(spark_cluster, messages, local_out, driver_dir, tmp_path):
    before, out = {d.name for d in spark_cluster.work_dir.glob("app-*")}, tmp_path / "out"
    run = start_embed(spark_cluster, driver_dir, messages, out, tmp_path / "cache")
    code, stdout, stderr = finish(run, out.parent)
    assert code == 0, stdout + stderr
    assert summary(stdout).startswith(f"rows_read {MESSAGES:,} = rows_embedded {MESSAGES:,} + rows_rejected 0;")
    assert_same_dataset(out, local_out)
    engine = json.loads((out / "_manifest.json").read_text())["engine"]
    assert engine["master"] == spark_cluster.url and engine["tasks"] == 2
    assert 1 <= engine["model_loads"] <= engine["python_workers"] <= 2
    # the model reached the executors as the archive, unpacked in their working directories
    apps = new_app_dirs(spark_cluster, before)
    assert len(apps) == 1 and list(apps[0].glob("*/elmo/options.json")), list(apps[0].rglob("*"))[:20]


def kill_an_executor_mid_task(cluster, run: subprocess.Popen, out: Path) -> int:
    """Wait until an executor of the run's application has started its Python worker (a task is
    running), then SIGKILL that executor JVM and its Python processes. Returns the executor's pid."""
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while time.monotonic() < deadline and run.poll() is None:
        for app in cluster.state().get("activeapps", []):
            for pid in executors(app["id"]):
                below = descendants(pid)  # at start, also the tar unpacking the archive
                if any(python_worker(child) for child in below) and not (out / "_SUCCESS").exists():
                    signal_all([pid, *below], signal.SIGKILL)
                    return pid
        time.sleep(0.1)
    raise AssertionError(f"no executor with a running task to kill (run exit code {run.poll()})")


def python_worker(pid: int) -> bool:
    """Whether `pid` is an executor's Python worker (pyspark's daemon or a worker it forked)."""
    return any(module in command_line(pid) for module in ("pyspark.daemon", "pyspark.worker"))


def task_ends(events: Path) -> list[tuple[int, int, str]]:
    """(stage, task index in its stage, end reason) of every task attempt in the run's Spark event log."""
    logs = list(events.iterdir())
    assert len(logs) == 1, logs
    ends = [json.loads(line) for line in logs[0].read_text().splitlines() if '"SparkListenerTaskEnd"' in line]
    return [(end["Stage ID"], end["Task Info"]["Index"], end["Task End Reason"]["Reason"]) for end in ends]


@pytest.mark.slow  # a Spark cluster; one executor is SIGKILLed mid-task
def test_executor_killed_mid_run_still_gives_complete_dataset(spark_cluster, messages, local_out, driver_dir,
                                                              tmp_path):
    out = tmp_path / "out"
    run = start_embed(spark_cluster, driver_dir, messages, out, tmp_path / "cache")
    try:
        killed = kill_an_executor_mid_task(spark_cluster, run, out)
    except BaseException:
        stop(run)
        raise
    assert not (out / "_SUCCESS").exists() and run.poll() is None  # the kill landed while the run was going
    code, stdout, stderr = finish(run, out.parent)
    assert code == 0, stdout + stderr
    assert not any("CoarseGrainedExecutorBackend" in arg for arg in command_line(killed))  # it is gone
    ends = task_ends(tmp_path / "events")
    lost = {(stage, index) for stage, index, reason in ends if reason == "ExecutorLostFailure"}
    succeeded = [(stage, index) for stage, index, reason in ends if reason == "Success"]
    assert lost, ends  # a task died with its executor ...
    assert lost <= set(succeeded), ends  # ... and ran again, to success
    assert set(succeeded) == {(stage, index) for stage, index, _ in ends}, ends  # every task finished
    assert summary(stdout).startswith(f"rows_read {MESSAGES:,} = rows_embedded {MESSAGES:,} + rows_rejected 0;")
    assert_same_dataset(out, local_out)


@pytest.mark.slow  # a Spark cluster; two runs, each a driver and executors importing TensorFlow
def test_cluster_embeds_s3_input_with_s3_cache_to_s3_out_as_the_local_engine_and_then_computes_0(
        spark_cluster, s3, driver_dir, fixture_encoder, tmp_path):
    """Executors on a standalone cluster with only the store in common: they read the input, look up
    and store vectors in the cache, and upload the parts, all on s3:// (moto on 127.0.0.1)."""
    source = write_messages(tmp_path / "small.csv", 0, SMALL)
    embed_files([source], tmp_path / "local", fixture_encoder, options=EmbedOptions(chunk_rows=CHUNK_ROWS),
                cache=EmbeddingCache(tmp_path / "local-cache"))
    expected = ds.dataset(str(tmp_path / "local"), format="parquet").to_table().sort_by("id")
    distinct = json.loads((tmp_path / "local" / "_manifest.json").read_text())["counts"]["computed"]  # repeats: hits
    source_uri, cache = put(s3, "cluster-in/small.csv", source.read_bytes()), f"s3://{BUCKET}/cluster-cache"

    for name, computed in (("first", distinct), ("second", 0)):
        logs = tmp_path / name
        logs.mkdir()
        run = start_embed(spark_cluster, driver_dir, source_uri, f"s3://{BUCKET}/cluster-{name}", cache, logs,
                          executor_env=AWS_SETTINGS)
        code, stdout, stderr = finish(run, logs)
        assert code == 0, stdout + stderr
        manifest = json.loads(listing(s3, f"cluster-{name}")["_manifest.json"])
        assert manifest["counts"]["computed"] == computed, (name, manifest["counts"])
        assert manifest["counts"]["cache_hits"] == SMALL - computed and distinct > 100
        assert manifest["engine"]["master"] == spark_cluster.url
        got = ds.dataset(f"{BUCKET}/cluster-{name}", filesystem=s3, format="parquet").to_table().sort_by("id")
        assert got.num_rows == SMALL and got["id"].to_pylist() == expected["id"].to_pylist()
        np.testing.assert_allclose(read_embedding(got), read_embedding(expected), atol=1e-6)
