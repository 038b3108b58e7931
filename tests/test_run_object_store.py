"""`elmobatch run JOB.toml` with the job's inputs and output on s3://, against a real S3 server (moto's
server mode on 127.0.0.1, fixture `s3`): the same labelled rows as the local job, a rerun that redoes
nothing, retention on the store, the lease (refused, taken over mid-run), and a SIGKILLed run resumed."""

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.files import file_sha256
from elmobatch.scheduling.run import EXIT_LOCKED, output_name, run_job
from elmobatch.scheduling.spec import load_job
from tests.conftest import FIXTURE, kill_when, write_messages
from tests.s3_server import BUCKET, listing, put

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-01-01"


def write_job(path: Path, head_dir: Path, inputs: str, output: str, **extra) -> Path:
    spec = {"name": path.stem, "inputs": [inputs], "output": output, "model": str(FIXTURE), "head": str(head_dir),
            "cache_dir": f"cache-{path.stem}", **extra}  # a cache per job: each computes its own vectors
    path.write_text("[job]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in spec.items()))
    return path


def run(job: Path):
    return CliRunner().invoke(main, ["run", str(job), "--date", DAY])


def local_files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def run_reports(names) -> list[str]:
    return [n for n in names if n.startswith(f"date={DAY}/_run-")]


def layout(name: str) -> str:
    """An output's name with its 12 hex digits (of its input's path and checksum) written <sha12>."""
    return re.sub(r"-[0-9a-f]{12}\.", "-<sha12>.", name)


def scored(table):
    """A scored file's rows without its schema metadata (which records when it was written)."""
    return table.replace_schema_metadata(None)


@pytest.mark.slow  # three runs, each scoring through the model
def test_run_from_s3_inputs_to_s3_output_equals_the_local_job_and_a_rerun_redoes_nothing(s3, tmp_path, head_dir):
    day1 = write_messages(tmp_path / "incoming" / "day1.csv", 0, 60)
    day1.write_bytes(day1.read_bytes() + b"ham,a NUL \x00 here,,,\n")  # a rejected row
    day2 = write_messages(tmp_path / "incoming" / "day2.csv", 60, 100)
    for source in (day1, day2):
        put(s3, f"run-in/{source.name}", source.read_bytes())
    old = tmp_path / "scored" / "date=2025-01-01" / "_rejects" / "old.parquet"  # past retention_days, in
    old.parent.mkdir(parents=True)                                             # an output of the job's
    old.write_bytes(b"old")
    (tmp_path / "scored" / "_last_run.json").write_text("{}")
    put(s3, "run-out/date=2025-01-01/_rejects/old.parquet", b"old")
    put(s3, "run-out/_last_run.json", b"{}")
    put(s3, f"run-out/date={DAY}/_tmp/.tmp-0badc0de-day1.parquet.tmp", b"half")  # as a kill mid-copy leaves
    local_job = write_job(tmp_path / "local.toml", head_dir, "incoming/*.csv", "scored", retention_days=30)
    stored_job = write_job(tmp_path / "stored.toml", head_dir, f"s3://{BUCKET}/run-in/*.csv",
                           f"s3://{BUCKET}/run-out", retention_days=30)

    local, stored = run(local_job), run(stored_job)
    assert local.exit_code == stored.exit_code == 3, stored.output + repr(stored.exception)
    assert f"rows_read 101 = scored 100 + rejected 1 -> s3://{BUCKET}/run-out/date={DAY}" in stored.output
    objects, files = listing(s3, "run-out"), local_files(tmp_path / "scored")
    assert len(run_reports(objects)) == len(run_reports(files)) == 1
    local_names = sorted((n for n in files if n != ".lock" and n not in run_reports(files)), key=layout)
    stored_names = sorted((n for n in objects if n not in run_reports(objects)), key=layout)
    assert list(map(layout, stored_names)) == list(map(layout, local_names))  # no .lock, _tmp/ left
    name = output_name(f"s3://{BUCKET}/run-in/day1.csv", file_sha256(day1), "parquet")
    assert f"date={DAY}/{name}" in objects and f"date={DAY}/_rejects/{name}" in objects
    pairs = [(a, b) for a, b in zip(stored_names, local_names, strict=True) if a.endswith(".parquet")]
    assert len(pairs) == 4 and not any(n.startswith("date=2025") for n in objects)  # retention applied
    for stored_name, local_name in pairs:  # the scored files and their rejects: the same rows, labels and scores
        mine = scored(pq.read_table(f"{BUCKET}/run-out/{stored_name}", filesystem=s3))
        theirs = scored(pq.read_table(tmp_path / "scored" / local_name))
        if "score" in theirs.column_names:
            np.testing.assert_allclose(mine["score"].to_numpy(), theirs["score"].to_numpy(), atol=1e-6)
            mine, theirs = mine.drop(["score"]), theirs.drop(["score"])
        assert mine.equals(theirs), stored_name
    state = json.loads(objects["_state.json"])["files"]
    assert sorted(state) == [f"s3://{BUCKET}/run-in/day1.csv", f"s3://{BUCKET}/run-in/day2.csv"]
    assert [state[k]["sha256"] for k in sorted(state)] == [file_sha256(day1), file_sha256(day2)]
    report = json.loads(objects["_last_run.json"])
    assert report["removed_partitions"] == ["date=2025-01-01"] and report["rows_scored"] == 100
    assert objects[f"date={DAY}/_SUCCESS"].decode() == report["run_id"] + "\n"

    again = run(stored_job)  # nothing new: nothing read, scored or uploaded but the run's report
    assert again.exit_code == 4 and "nothing to do" in again.output, again.output
    after = listing(s3, "run-out")
    assert {k: v for k, v in after.items() if k != "_last_run.json"} == \
        {k: v for k, v in objects.items() if k != "_last_run.json"}

    put(s3, "run-in/day2.csv", write_messages(tmp_path / "day2-changed.csv", 60, 110).read_bytes())
    changed = run(stored_job)  # a changed object (size, time, sha256) is scored again, alone
    assert changed.exit_code == 0, changed.output
    assert [f["input"] for f in json.loads(listing(s3, "run-out")["_last_run.json"])["files"]] == \
        [f"s3://{BUCKET}/run-in/day2.csv"]


def test_a_live_lease_on_the_output_prefix_refuses_the_run_untouched(s3, tmp_path, head_dir):
    lease = {"id": "other", "host": "another-host", "pid": 7, "started": "then", "renewed": time.time()}
    put(s3, "leased-run/.lock", json.dumps(lease).encode())
    before = listing(s3, "leased-run")
    job = write_job(tmp_path / "job.toml", head_dir, f"s3://{BUCKET}/run-in/*.csv", f"s3://{BUCKET}/leased-run")
    result = run(job)
    assert result.exit_code == EXIT_LOCKED and "locked: another run holds the lock" in result.output, result.output
    assert listing(s3, "leased-run") == before


def damaged_page(rows: int = 5000) -> bytes:
    """A Parquet file whose footer is whole and one data page zeroed: pyarrow raises an OSError
    without errno ("Corrupt snappy compressed data"), as a network error on the store does."""
    import io

    import pyarrow as pa

    buffer = io.BytesIO()
    pq.write_table(pa.table({"v1": ["ham"] * rows, "v2": [f"hello {i}" for i in range(rows)]}), buffer,
                   row_group_size=1000)
    data = buffer.getvalue()
    return data[:200] + bytes(300) + data[500:]


@pytest.mark.slow  # scores one file through the model
def test_a_damaged_parquet_object_is_refused_and_the_other_inputs_are_scored(s3, tmp_path, head_dir):
    put(s3, "damaged-in/a.parquet", damaged_page())
    put(s3, "damaged-in/b.csv", write_messages(tmp_path / "b.csv", 0, 30).read_bytes())
    job = load_job(write_job(tmp_path / "job.toml", head_dir, f"s3://{BUCKET}/damaged-in/*",
                             f"s3://{BUCKET}/damaged-out"))
    report = run_job(job, log=lambda line: None)
    assert report.exit_code == 1 and report.status == "not all scored", report
    assert f"s3://{BUCKET}/damaged-in/a.parquet: not a readable Parquet file" in report.error
    assert [f["input"] for f in report.files] == [f"s3://{BUCKET}/damaged-in/b.csv"] and report.rows_scored == 30
    assert [f["input"] for f in report.files_not_scored] == [f"s3://{BUCKET}/damaged-in/a.parquet"]


def test_an_error_of_the_store_reading_parquet_stays_an_oserror(tmp_path):
    """The other side of the test above: the same kind of OSError from the store's client (a network
    error) is not called a damaged file. The store here is one that has stopped."""
    from elmobatch.reading.reader import _parquet_errors
    from elmobatch.storage import as_path
    from tests.s3_server import moto_server

    with moto_server(tmp_path) as fs:
        uri = put(fs, "stopped/a.parquet", damaged_page(10))
    with pytest.raises(OSError, match="AWS Error") as raised:  # the server has stopped: a real client error
        fs.open_input_file(f"{BUCKET}/stopped/a.parquet")
    with pytest.raises(OSError, match="AWS Error"), _parquet_errors(as_path(uri)):
        raise raised.value


@pytest.mark.slow  # scores one file through the model
def test_a_run_whose_prefix_is_taken_over_records_and_commits_nothing_more(s3, tmp_path, head_dir):
    for name, (start, stop) in {"a.csv": (0, 30), "b.csv": (30, 60)}.items():
        put(s3, f"takeover-in/{name}", write_messages(tmp_path / name, start, stop).read_bytes())
    job = load_job(write_job(tmp_path / "job.toml", head_dir, f"s3://{BUCKET}/takeover-in/*.csv",
                             f"s3://{BUCKET}/takeover-out"))
    other = {"id": "another-run", "host": socket.gethostname() + "-elsewhere", "pid": 7, "started": "now"}

    def log(message: str) -> None:  # once a.csv is scored and recorded, another run takes the prefix
        if message.startswith(f"s3://{BUCKET}/takeover-in/a.csv: rows_read"):
            put(s3, "takeover-out/.lock", json.dumps({**other, "renewed": time.time()}).encode())

    report = run_job(job, log=log)
    assert report.exit_code == EXIT_LOCKED and report.status == "taken over", report
    assert "another run took over this output (pid 7" in report.line()
    objects = listing(s3, "takeover-out")
    assert list(json.loads(objects["_state.json"])["files"]) == [f"s3://{BUCKET}/takeover-in/a.csv"]
    assert not [k for k in objects if k.endswith("_SUCCESS") or "/b-" in k or k == "_last_run.json"], sorted(objects)
    assert json.loads(objects[".lock"])["id"] == "another-run"  # its lease left alone


def state_files(fs) -> dict:
    """The job state's files; {} while there is none, or when a read meets the object being replaced
    (pyarrow reads the size, then the bytes: a new object of another size reads torn)."""
    try:
        with fs.open_input_stream(f"{BUCKET}/killed-run/_state.json", compression=None) as f:
            return json.loads(f.read())["files"]
    except (FileNotFoundError, ValueError):
        return {}


@pytest.mark.slow  # two `run` subprocesses, each importing TensorFlow
def test_sigkilled_run_on_s3_resumes_without_redoing_or_duplicating(s3, tmp_path, head_dir):
    for i in range(3):
        put(s3, f"kill-run-in/part{i}.csv",
            write_messages(tmp_path / f"part{i}.csv", 1200 * i, 1200 * (i + 1)).read_bytes())
    job = write_job(tmp_path / "job.toml", head_dir, f"s3://{BUCKET}/kill-run-in/*.csv",
                    f"s3://{BUCKET}/killed-run", chunk_rows=500)
    command = [sys.executable, "-m", "elmobatch.cli", "run", str(job), "--date", DAY]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: len(state_files(s3)) >= 1)  # the first file recorded, the second under way
    assert proc.returncode == -signal.SIGKILL
    left = listing(s3, "killed-run")
    done = state_files(s3)
    assert f"date={DAY}/_SUCCESS" not in left and ".lock" in left and len(done) < 3

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "did not finish; taking over its lock" in rerun.stderr  # the dead run's lease, on this host
    objects = listing(s3, "killed-run")
    assert len(json.loads(objects["_last_run.json"])["files"]) == 3 - len(done)  # finished files not redone
    for entry in done.values():  # nor uploaded again
        name = entry["output"].removeprefix(f"s3://{BUCKET}/killed-run/")
        assert objects[name] == left[name]
    parts = sorted(k for k in objects if k.startswith(f"date={DAY}/part"))
    assert len(parts) == 3 and ".lock" not in objects and f"date={DAY}/_SUCCESS" in objects
    assert [pq.read_metadata(f"{BUCKET}/killed-run/{k}", filesystem=s3).num_rows for k in parts] == [1200] * 3
