"""Outputs other tools and other runs can trust: foreign directories untouched, one writer per
output, no temporary a reader's glob matches (SIGKILL at a random moment), clear one-line errors."""

import hashlib
import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.locking import JobLock
from tests.conftest import FIXTURE, SMS, write_messages
from tests.test_scheduling import run_cli, write_job

REPO = Path(__file__).resolve().parents[1]
ELMOBATCH = [sys.executable, "-m", "elmobatch.cli"]


def embed_cli(*args, cache):
    return CliRunner().invoke(main, ["embed", *map(str, args), "--model", str(FIXTURE), "--cache-dir", str(cache)])


def query(sql: str) -> list[tuple]:
    return duckdb.connect().execute(sql).fetchall()


def tree_hashes(directory: Path) -> dict[str, str]:
    """Every path under `directory` -> sha256 of its bytes ('dir' for folders)."""
    return {str(p.relative_to(directory)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))}


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".tmp-*") if "cache" not in p.parts]


# ---- foreign directories -----------------------------------------------------------------------


def spark_style_dataset(directory: Path) -> Path:
    """Another tool's dataset: Spark part names, _SUCCESS, a _rejects/ of its own."""
    directory.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"x": [i, i + 1]}), directory / f"part-0000{i}-abc-c000.snappy.parquet")
    (directory / "_SUCCESS").touch()
    (directory / "_rejects").mkdir()
    (directory / "_rejects" / "theirs.txt").write_text("not elmobatch's")
    return directory


@pytest.mark.parametrize("marker", ["_SUCCESS", "manifest of another tool"])
def test_foreign_dataset_is_refused_byte_for_byte_intact(tmp_path, marker):
    out = spark_style_dataset(tmp_path / "d")
    if marker != "_SUCCESS":
        (out / "_manifest.json").write_text(json.dumps({"format": "delta", "parts": 3}))
    before = tree_hashes(out)
    result = embed_cli(REPO / "examples" / "messages.csv", "--out", out, cache=tmp_path / "cache")
    assert result.exit_code == 1, result.output
    assert f"--out {out}: not empty and not an elmobatch output directory" in result.output
    assert tree_hashes(out) == before  # nothing deleted, changed or added (no lock file either)


def test_only_elmobatch_marker_counts_and_the_marker_is_written(tmp_path):
    out = tmp_path / "out"
    assert embed_cli(REPO / "examples" / "messages.csv", "--out", out, cache=tmp_path / "cache").exit_code == 0
    assert json.loads((out / "_manifest.json").read_text())["format"] == "elmobatch-embeddings"
    # a completed run is rewritten; a first run killed before its marker (lock file, _state/ with a
    # temporary) is started again
    assert embed_cli(REPO / "examples" / "messages.csv", "--out", out, cache=tmp_path / "cache").exit_code == 0
    killed = tmp_path / "killed"
    (killed / "_state").mkdir(parents=True)
    (killed / "_state" / ".tmp-0123abcd-run.json.tmp").write_text("{")
    (killed / ".lock").write_text(json.dumps({"pid": 1, "started": "2026-01-01T00:00:00"}))
    result = embed_cli(REPO / "examples" / "messages.csv", "--out", killed, cache=tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert pq.read_table(killed / "part-00000-000000.parquet").num_rows == 35


# ---- one writer per output ---------------------------------------------------------------------


def _embed_process(source: Path, out: Path, cache: Path, chunk_rows: int) -> subprocess.Popen:
    return subprocess.Popen([*ELMOBATCH, "embed", str(source), "--out", str(out), "--model", str(FIXTURE),
                             "--chunk-rows", str(chunk_rows), "--cache-dir", str(cache)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def many_messages(path: Path, n: int) -> Path:
    """n distinct one-line messages (v1,v2 columns like the reference file): minutes of work to none."""
    path.write_text("v1,v2\n" + "".join(f"ham,message {i} says {i * 7919 % 10007} things\n" for i in range(n)))
    return path


def _wait_for_lock_holder(proc: subprocess.Popen, lock: Path) -> None:
    """Until `proc` holds `lock` (its pid is in the holder record)."""
    deadline = time.monotonic() + 300
    while JobLock(lock).holder().get("pid") != proc.pid:
        assert proc.poll() is None, "ended before taking the lock: " + proc.stderr.read()
        assert time.monotonic() < deadline, "the lock was never taken"
        time.sleep(0.05)


@pytest.mark.slow  # two embed subprocesses, each importing TensorFlow
def test_two_embeds_on_one_output_one_is_refused_with_exit_5(tmp_path):
    out = tmp_path / "X"
    first = _embed_process(many_messages(tmp_path / "many.csv", 40_000), out, tmp_path / "cA", 2000)
    _wait_for_lock_holder(first, out / ".lock")  # so the second surely finds the output taken
    second = _embed_process(SMS, out, tmp_path / "cB", 1000)
    _, second_err = second.communicate(timeout=600)
    assert first.poll() is None, "the first embed ended before the second tried: give it more rows"
    assert second.returncode == 5, second_err[-2000:]
    assert f"--out {out}: another run is writing this directory (pid {first.pid}" in second_err
    assert "Traceback" not in second_err
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-2000:]
    assert query(f"SELECT count(*), count(DISTINCT id) FROM read_parquet('{out}/*.parquet')") == [(40_000, 40_000)]
    assert json.loads((out / "_manifest.json").read_text())["counts"]["rows_read"] == 40_000


HOLD_LOCK = ("import sys, time; from elmobatch.locking import JobLock\n"
             "with JobLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)\n")


@pytest.fixture
def lock_holder(tmp_path):
    """Another process holding OUT/.lock, as a running embed would."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / ".lock")], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield out, holder.pid
    holder.kill()
    holder.wait()


@pytest.mark.slow  # the lock holder is a subprocess importing TensorFlow; one engine is Spark
@pytest.mark.parametrize("engine", ["local", "spark"])
def test_embed_refused_while_another_process_holds_the_lock(tmp_path, lock_holder, engine):
    out, pid = lock_holder
    before = tree_hashes(out)
    result = embed_cli(REPO / "examples" / "messages.csv", "--out", out, "--engine", engine,
                       cache=tmp_path / "cache")
    assert result.exit_code == 5, result.output
    assert f"--out {out}: another run is writing this directory (pid {pid}" in result.output
    assert tree_hashes(out) == before


def score_cli(messages: Path, out: Path, head_dir: Path, cache: Path):
    return CliRunner().invoke(main, ["score", str(messages), "--head", str(head_dir), "--model", str(FIXTURE),
                                     "--out", str(out), "--cache-dir", str(cache)])


@pytest.mark.slow  # trains a head; the lock holder is a subprocess
@pytest.mark.parametrize("held", ["day.scored.csv", "day.scored.rejects.csv"])  # the second: `score --out -`'s
def test_second_score_of_one_output_is_refused_and_leaves_the_first_ones_temporary(tmp_path, head_dir, held):
    out = tmp_path / "scored" / "day.scored.csv"
    live = out.parent / "_tmp" / f".tmp-0123abcd-{held}.tmp"  # the first scorer's file in progress
    live.parent.mkdir(parents=True)
    live.write_text("half written")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out.parent / "_tmp" / f"{held}.lock")],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = score_cli(write_messages(tmp_path / "day.csv", 0, 20), out, head_dir, tmp_path / "cache")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 5, result.output
    assert f"Error: {out.parent / held}: another score is writing this output (pid {holder.pid}" in result.output
    assert live.read_text() == "half written" and not out.exists()


@pytest.mark.slow  # trains a head
def test_score_leaves_a_tmp_folder_it_did_not_make(tmp_path, head_dir):
    out = tmp_path / "scored" / "day.scored.csv"
    (out.parent / "_tmp").mkdir(parents=True)  # another writer's, about to put its file there
    result = score_cli(write_messages(tmp_path / "day.csv", 0, 20), out, head_dir, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert (out.parent / "_tmp").is_dir() and not any((out.parent / "_tmp").iterdir())
    assert len(pd.read_csv(out)) == 20


# ---- temporaries and SIGKILL -------------------------------------------------------------------


def _kill_at_a_random_moment_of_writing(proc: subprocess.Popen, output: Path) -> None:
    """SIGKILL once a temporary output file exists, after a further random 0-300 ms."""
    deadline = time.monotonic() + 300
    while not temporaries(output):
        assert proc.poll() is None, "ended before writing: " + proc.stderr.read()
        assert time.monotonic() < deadline, "no temporary file appeared"
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"ended (exit {proc.returncode}) before the kill: give it more work"


@pytest.mark.slow  # `elmobatch run` subprocesses, SIGKILLed and rerun
@pytest.mark.parametrize("output_format", ["parquet", "csv"])
def test_run_killed_at_random_then_rerun_readme_query_counts_every_row_once(tmp_path, head_dir, output_format):
    # four files of 1,200 rows: the kill, at most 0.3 s into the first file's writing, lands long before the end
    for i in range(4):
        write_messages(tmp_path / "incoming" / f"part{i}.csv", i * 1200, (i + 1) * 1200)
    job = write_job(tmp_path, head_dir, output_format=output_format)
    proc = subprocess.Popen([*ELMOBATCH, "run", str(job), "--date", "2026-06-01"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_at_a_random_moment_of_writing(proc, tmp_path / "scored")
    rerun = run_cli(job, "--date", "2026-06-01")
    assert rerun.returncode == 0, rerun.stderr  # the killed run left files to do
    assert not temporaries(tmp_path / "scored")
    reader = "read_parquet" if output_format == "parquet" else "read_csv"
    glob = str(tmp_path / "scored" / f"date=*/*.{output_format}")
    per_file = query(f"SELECT regexp_extract(filename, 'part\\d'), count(*) FROM "
                     f"{reader}('{glob}', hive_partitioning=true, filename=true) GROUP BY ALL ORDER BY 1")
    assert per_file == [("part0", 1200), ("part1", 1200), ("part2", 1200), ("part3", 1200)]


@pytest.mark.slow  # `elmobatch score` subprocesses, SIGKILLed and rerun
def test_score_killed_at_random_then_rerun_leaves_only_whole_files(tmp_path, head_dir):
    # 15,000 distinct messages: two chunks, so the output is being written for seconds
    messages = many_messages(tmp_path / "many.csv", 15000)
    out = tmp_path / "out" / "many.scored.parquet"
    command = [*ELMOBATCH, "score", str(messages), "--head", str(head_dir), "--model", str(FIXTURE),
               "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _kill_at_a_random_moment_of_writing(proc, out.parent)
    assert temporaries(out.parent) and all(p.name.endswith(".tmp") and p.parent.name == "_tmp"
                                           for p in temporaries(out.parent))
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert not temporaries(out.parent) and not (out.parent / "_tmp").exists()
    counts = query(f"SELECT count(*), count(DISTINCT v2) FROM read_parquet('{out.parent}/*.scored.parquet')")
    assert counts == [(15000, 15000)]


# ---- one-line errors ---------------------------------------------------------------------------


@pytest.mark.slow  # trains a head, then scores onto a tmpfs
def test_score_on_a_full_disk_is_one_line_naming_the_file(tmp_path, head_dir, small_tmpfs):
    (small_tmpfs / "filler").write_bytes(b"x" * 900_000)
    target = small_tmpfs / "sms.scored.csv"
    messages = write_messages(tmp_path / "some.csv", 0, 2000)  # about 200 kB of scores: does not fit
    result = CliRunner().invoke(main, ["score", str(messages), "--head", str(head_dir), "--model", str(FIXTURE),
                                       "--out", str(target), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert f"Error: {target}: cannot write (No space left on device)" in result.output
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler"]  # no partial file, no _tmp/


@pytest.mark.slow  # trains a head
def test_train_on_a_full_disk_is_one_line_naming_the_file(tmp_path, small_tmpfs):
    messages = write_messages(tmp_path / "train.csv", 0, 200)
    with pytest.raises(OSError), open(small_tmpfs / "filler", "wb") as filler:
        while True:  # fill the head's disk to the last byte
            filler.write(b"x" * 4096)
            filler.flush()
    out = small_tmpfs / "head"
    result = CliRunner().invoke(main, ["train", str(messages), "--label-column", "v1", "--model", str(FIXTURE),
                                       "--out", str(out), "--epochs", "1", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.strip().splitlines()[-1] == f"Error: {out}/head.npz: cannot write (No space left on device)"
    assert list(out.iterdir()) == []  # no temporary file left


@pytest.mark.slow  # trains a head
def test_evaluate_on_a_full_disk_is_one_line_naming_the_report(tmp_path, head_dir, small_tmpfs):
    (small_tmpfs / "filler").write_bytes(b"x" * 1_000_000)  # the report's pictures do not fit
    messages = write_messages(tmp_path / "test.csv", 400, 600)
    out = small_tmpfs / "report"
    result = CliRunner().invoke(main, ["evaluate", str(messages), "--label-column", "v1", "--head", str(head_dir),
                                       "--model", str(FIXTURE), "--out", str(out),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.strip().splitlines()[-1] == f"Error: {out}: cannot write (No space left on device)"


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_embed_on_a_full_disk_names_the_file(tmp_path, small_tmpfs):
    result = embed_cli(SMS, "--out", small_tmpfs, cache=tmp_path / "cache")  # about 2.8 MB of vectors
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"Error: {small_tmpfs}/") and line.endswith(": cannot write (No space left on device)")


@pytest.mark.slow  # trains a head; `elmobatch run` in a subprocess
def test_corrupt_job_state_is_one_line_naming_it(tmp_path, head_dir):
    write_messages(tmp_path / "incoming" / "a.csv", 0, 20)
    job = write_job(tmp_path, head_dir)
    state = tmp_path / "scored" / "_state.json"
    state.parent.mkdir()
    state.write_bytes(b"\xff\xfe not json")
    result = run_cli(job)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{state}: unreadable job state" in result.stderr
    assert re.fullmatch(r"test-job: failed before writing any output \(\d+\.\d s\)", result.stdout.strip())
    assert json.loads((tmp_path / "scored" / "_last_run.json").read_text())["exit_code"] == 1


@pytest.mark.slow  # trains a head
def test_run_on_a_full_output_disk_is_one_line_naming_the_lock(tmp_path, head_dir, small_tmpfs):
    write_messages(tmp_path / "incoming" / "a.csv", 0, 20)
    job = write_job(tmp_path, head_dir)
    (small_tmpfs / "_last_run.json").write_text("{}")  # the job's own output, from an earlier run
    with pytest.raises(OSError), open(small_tmpfs / "filler", "wb") as filler:
        while True:  # fill the output's disk to the last byte
            filler.write(b"x" * 4096)
            filler.flush()
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert f"Error: {small_tmpfs / '.lock'}: cannot take the lock (No space left on device)" in result.output
    assert "test-job: failed before writing any output" in result.output


def test_job_state_entry_without_sha256_is_one_line_naming_the_file(tmp_path):
    from elmobatch.scheduling.state import JobState

    state = tmp_path / "_state.json"
    state.write_text(json.dumps({"files": {"/in/a.csv": {"size": 3, "mtime_ns": 1}}}))
    with pytest.raises(ValueError) as refused:
        JobState(state).pending((str(tmp_path / "*.csv"),))
    assert str(refused.value) == (f"{state}: unreadable job state (the entry for /in/a.csv has no 'sha256' "
                                  "string); move it away to reprocess every input")
