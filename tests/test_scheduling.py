"""`elmobatch run JOB.toml`: new files only, exit codes, the lock, SIGKILL, disk full, the cron wrapper."""

import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from elmobatch.locking import JobLock
from elmobatch.scheduling.run import run_job
from elmobatch.scheduling.spec import load_job
from elmobatch.scheduling.state import JobState
from tests.conftest import FIXTURE, SMS, write_messages

pytestmark = pytest.mark.slow  # every test runs `elmobatch run` in subprocesses, each importing TensorFlow

REPO = Path(__file__).resolve().parents[1]
ELMOBATCH = [sys.executable, "-m", "elmobatch.cli"]


def write_job(tmp_path: Path, head_dir: Path, **extra) -> Path:
    keys = {"name": "test-job", "inputs": ["incoming/*.csv"], "output": "scored", "model": str(FIXTURE),
            "head": str(head_dir), "cache_dir": "cache", "chunk_rows": 500, **extra}
    lines = ["[job]", *(f"{k} = {json.dumps(v)}" for k, v in keys.items())]
    job = tmp_path / "job.toml"
    job.write_text("\n".join(lines) + "\n")
    return job


def run_cli(job: Path, *args):
    return subprocess.run([*ELMOBATCH, "run", str(job), *args], capture_output=True, text=True, cwd=REPO)


def partition_rows(output: Path) -> dict[str, int]:
    return {p.name: len(pd.read_parquet(p)) for p in output.glob("date=*/*.parquet")}


def test_new_files_only_changed_files_again_and_exit_codes(tmp_path, head_dir):
    write_messages(tmp_path / "incoming" / "day1.csv", 0, 300)
    job = write_job(tmp_path, head_dir)
    first = run_cli(job, "--date", "2026-01-01")
    assert first.returncode == 0, first.stderr
    assert "rows_read 300 = scored 300 + rejected 0" in first.stdout
    output = tmp_path / "scored"
    assert (output / "date=2026-01-01" / "_SUCCESS").is_file()
    report = json.loads((output / "_last_run.json").read_text())
    assert report["exit_code"] == 0 and report["rows_scored"] == 300

    again = run_cli(job, "--date", "2026-01-01")
    assert again.returncode == 4 and "nothing to do" in again.stdout

    # A new file with a bad row, and a changed old file: both processed, nothing else.
    (tmp_path / "incoming" / "day2.csv").write_bytes(b"v1,v2\nham,fine\nspam,bad \x00 row\n")
    write_messages(tmp_path / "incoming" / "day1.csv", 0, 310)
    third = run_cli(job, "--date", "2026-01-02")
    assert third.returncode == 3, third.stderr  # ok with rejected rows
    report = json.loads((output / "_last_run.json").read_text())
    assert sorted(Path(f["input"]).name for f in report["files"]) == ["day1.csv", "day2.csv"]
    assert report["rows_read"] == 312 and report["rows_scored"] == 311 and report["rows_rejected"] == 1
    scored = pd.read_parquet(next((output / "date=2026-01-02").glob("day2-*.parquet")))
    assert list(scored.columns) == ["v1", "v2", "source_file", "row_number", "label", "score"] and len(scored) == 1
    assert scored["source_file"].tolist() == ["day2.csv"] and scored["row_number"].tolist() == [0]
    rejects = pd.read_parquet(next((output / "date=2026-01-02" / "_rejects").glob("day2-*.parquet")))
    assert rejects["reason"].tolist() == ["nul_byte"]


def test_rejects_exit_0_under_zero_on_success_and_3_by_default(tmp_path, head_dir):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "a.csv").write_bytes(b"v1,v2\nham,fine\nspam,bad \x00 row\n")
    job = write_job(tmp_path, head_dir, exit_codes="zero-on-success")
    lenient = run_cli(job, "--date", "2026-06-01")
    assert lenient.returncode == 0, lenient.stderr
    assert "rows_read 2 = scored 1 + rejected 1" in lenient.stdout
    report = json.loads((tmp_path / "scored" / "_last_run.json").read_text())
    assert report["exit_code"] == 3  # the report keeps the detailed outcome
    (incoming / "b.csv").write_bytes(b"v1,v2\nham,also fine\nspam,bad \x00 row\n")
    detailed = run_cli(job, "--date", "2026-06-02", "--exit-codes", "detailed")
    assert detailed.returncode == 3, detailed.stderr


def test_bad_job_file_exits_2_naming_the_key(tmp_path, head_dir):
    job = write_job(tmp_path, head_dir, colour="blue")
    result = run_cli(job)
    assert result.returncode == 2
    assert "unknown key(s) in [job]: colour" in result.stderr and str(job) in result.stderr


def test_second_run_while_locked_exits_5(tmp_path, head_dir):
    write_messages(tmp_path / "incoming" / "a.csv", 0, 50)
    job = write_job(tmp_path, head_dir)
    with JobLock(tmp_path / "scored" / ".lock"):
        result = run_cli(job)
    assert result.returncode == 5
    assert "another run holds the lock" in result.stderr and f"pid {os.getpid()}" in result.stderr
    # The summary line says what happened, not "-> None".
    assert result.stdout.strip() == "test-job: locked: another run holds the lock; this run did nothing"
    assert not list((tmp_path / "scored").glob("date=*"))


def _start_run(job: Path) -> subprocess.Popen:
    return subprocess.Popen([*ELMOBATCH, "run", str(job), "--date", "2026-02-01"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read()
        assert time.monotonic() < deadline, "timed out waiting for the run to make progress"
        time.sleep(0.05)


def test_sigkill_during_run_then_rerun_is_complete_without_duplicates(tmp_path, head_dir):
    for i, (start, stop) in enumerate([(0, 1200), (1200, 2400), (2400, 3600)]):
        write_messages(tmp_path / "incoming" / f"part{i}.csv", start, stop)
    job = write_job(tmp_path, head_dir)
    state = tmp_path / "scored" / "_state.json"
    proc = _start_run(job)
    # Kill once the first file is recorded and the second is under way.
    _wait_for(lambda: state.is_file() and len(json.loads(state.read_text())["files"]) >= 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = len(json.loads(state.read_text())["files"])
    assert done_before < 3

    rerun = run_cli(job, "--date", "2026-02-01")
    assert rerun.returncode == 0, rerun.stderr
    assert "did not finish; taking over its lock" in rerun.stderr
    report = json.loads((tmp_path / "scored" / "_last_run.json").read_text())
    assert len(report["files"]) == 3 - done_before  # finished files are not redone
    rows = partition_rows(tmp_path / "scored")
    assert sorted(rows.values()) == [1200, 1200, 1200] and len(rows) == 3
    assert not list((tmp_path / "scored").rglob(".tmp-*"))  # no partial files left behind


def test_output_written_but_not_recorded_is_not_duplicated_on_another_day(tmp_path, head_dir):
    write_messages(tmp_path / "incoming" / "a.csv", 0, 100)
    job = write_job(tmp_path, head_dir)
    assert run_cli(job, "--date", "2026-03-01").returncode == 0
    # as if killed between the write and the record: no state entry, no run report, no _SUCCESS
    (tmp_path / "scored" / "_state.json").unlink()
    for report in (tmp_path / "scored" / "date=2026-03-01").glob("_run-*.json"):
        report.unlink()
    (tmp_path / "scored" / "date=2026-03-01" / "_SUCCESS").unlink()
    assert run_cli(job, "--date", "2026-03-02").returncode == 0
    rows = partition_rows(tmp_path / "scored")
    assert list(rows.values()) == [100]
    assert next((tmp_path / "scored").glob("date=*/a-*.parquet")).parent.name == "date=2026-03-02"


def test_an_input_back_with_earlier_bytes_leaves_each_days_file_in_place(tmp_path, head_dir):
    job = load_job(write_job(tmp_path, head_dir))
    for day, (start, stop) in (("2026-03-01", (0, 20)), ("2026-03-02", (20, 50)), ("2026-03-03", (0, 20))):
        write_messages(tmp_path / "incoming" / "daily.csv", start, stop)  # day 3: day 1's bytes again
        report = run_job(job, today=dt.date.fromisoformat(day), log=lambda line: None)
        assert report.exit_code == 0, report.error
    days = {p.parent.name: len(pd.read_parquet(p)) for p in (tmp_path / "scored").glob("date=*/daily-*.parquet")}
    assert days == {"date=2026-03-01": 20, "date=2026-03-02": 30, "date=2026-03-03": 20}


def test_a_file_whose_record_failed_is_not_kept_by_its_days_report(tmp_path, head_dir, monkeypatch):
    write_messages(tmp_path / "incoming" / "a.csv", 0, 20)
    job = load_job(write_job(tmp_path, head_dir))

    def fail(*args, **kwargs):
        raise OSError("_state.json could not be written")

    with monkeypatch.context() as patch:
        patch.setattr(JobState, "mark_done", fail)
        report = run_job(job, today=dt.date(2026, 3, 1), log=lambda line: None)
    assert report.exit_code == 1 and report.files == []  # scored, but not recorded: not in the report
    assert run_job(job, today=dt.date(2026, 3, 2), log=lambda line: None).exit_code == 0
    copies = [p.parent.name for p in (tmp_path / "scored").glob("date=*/a-*.parquet")]
    assert copies == ["date=2026-03-02"]  # day 1's unrecorded copy is gone: no row twice


def test_a_file_the_reader_refuses_fails_the_run_but_the_others_are_scored(tmp_path, head_dir):
    incoming = tmp_path / "incoming"
    write_messages(incoming / "b.csv", 0, 30)
    (incoming / "a.csv").write_bytes(gzip.compress(b"v1,v2\nham,hello\n"))  # sorted first; gzip named .csv
    job = load_job(write_job(tmp_path, head_dir, inputs=["incoming/*.csv", "incoming/*.parquet"]))
    (incoming / "d.parquet").write_bytes(b"PAR1garbage")  # no Parquet footer (pyarrow's ArrowInvalid)
    report = run_job(job, today=dt.date(2026, 3, 1), log=lambda line: None)
    assert report.exit_code == 1 and report.status == "not all scored"
    assert "a.csv" in report.error and "gzip" in report.error and "d.parquet" in report.error
    assert [Path(f["input"]).name for f in report.files] == ["b.csv"] and report.rows_scored == 30
    assert [Path(f["input"]).name for f in report.files_not_scored] == ["a.csv", "d.parquet"]
    day = tmp_path / "scored" / "date=2026-03-01"
    assert (day / "_SUCCESS").is_file()  # b's rows are complete: a reader waiting for _SUCCESS gets them
    assert [p.name.split("-")[0] for p in day.glob("*.parquet")] == ["b"]
    [saved] = [json.loads(p.read_text()) for p in day.glob("_run-*.json")]
    assert saved["files_not_scored"] == report.files_not_scored
    assert [Path(p).name for p in JobState(tmp_path / "scored" / "_state.json").files] == ["b.csv"]

    write_messages(incoming / "a.csv", 100, 110)  # the sender fixes one: the next run scores it, only it
    report = run_job(job, today=dt.date(2026, 3, 2), log=lambda line: None)
    assert report.exit_code == 1 and [Path(f["input"]).name for f in report.files] == ["a.csv"]
    (incoming / "d.parquet").unlink()  # and the other goes away
    assert run_job(job, today=dt.date(2026, 3, 3), log=lambda line: None).exit_code == 4
    assert (tmp_path / "scored" / "date=2026-03-02" / "_SUCCESS").is_file()
    assert sorted(partition_rows(tmp_path / "scored").values()) == [10, 30]


@pytest.mark.parametrize("meanwhile", ["appended", "touched"])
def test_a_file_that_changes_while_scored_is_not_recorded_or_kept(tmp_path, head_dir, monkeypatch, meanwhile):
    """A sender still appending: the rows scored are not those hashed, so nothing of it is kept; the
    next run scores the whole file once (no partial copy the day before and a full one after). A
    file only touched (same bytes, new mtime) keeps its scores."""
    import elmobatch.scoring.score as scoring

    a = write_messages(tmp_path / "incoming" / "a.csv", 0, 20)
    write_messages(tmp_path / "incoming" / "b.csv", 20, 30)
    job = load_job(write_job(tmp_path, head_dir))
    real_file_vectors = scoring.file_vectors

    def read_while_the_sender_writes(path, *args, **kwargs):
        yield from real_file_vectors(path, *args, **kwargs)
        if str(path).endswith("a.csv"):  # once the scorer has read it all, before its output is in place
            if meanwhile == "appended":
                write_messages(a, 0, 25)  # the sender's last rows land
            else:
                os.utime(a, ns=(time.time_ns(), time.time_ns() + 10**9))

    with monkeypatch.context() as patch:
        patch.setattr(scoring, "file_vectors", read_while_the_sender_writes)
        report = run_job(job, today=dt.date(2026, 3, 1), log=lambda line: None)
    if meanwhile == "touched":
        assert report.exit_code == 0 and sorted(partition_rows(tmp_path / "scored").values()) == [10, 20]
        return
    assert report.exit_code == 1 and "a.csv: changed while it was being scored" in report.error
    assert [Path(f["input"]).name for f in report.files] == ["b.csv"]
    assert list(partition_rows(tmp_path / "scored").values()) == [10]  # a's first 20 rows were not kept
    assert not list((tmp_path / "scored").glob("date=*/_rejects/a-*")) and not list(tmp_path.rglob(".tmp-*"))
    assert run_job(job, today=dt.date(2026, 3, 2), log=lambda line: None).exit_code == 0
    assert sorted(partition_rows(tmp_path / "scored").values()) == [10, 25]


def test_a_failure_writing_success_is_reported_as_such(tmp_path, head_dir, monkeypatch):
    import elmobatch.scheduling.run as run_module

    write_messages(tmp_path / "incoming" / "a.csv", 0, 20)
    job = load_job(write_job(tmp_path, head_dir))
    real_write = run_module.write_text_atomically

    def full_at_success(path, text):
        if path.name == "_SUCCESS":
            raise OSError(28, "No space left on device")
        real_write(path, text)

    monkeypatch.setattr(run_module, "write_text_atomically", full_at_success)
    report = run_job(job, today=dt.date(2026, 3, 1), log=lambda line: None)
    assert report.exit_code == 1 and report.status == "failed" and "No space left" in report.error
    assert "lock" not in report.error  # was: "cannot take the lock"
    [saved] = [json.loads(p.read_text()) for p in (tmp_path / "scored" / "date=2026-03-01").glob("_run-*.json")]
    assert saved["status"] == "failed"  # the partition's report agrees with _last_run.json
    assert json.loads((tmp_path / "scored" / "_last_run.json").read_text())["status"] == "failed"


def test_retention_drops_old_partitions(tmp_path, head_dir):
    write_messages(tmp_path / "incoming" / "a.csv", 0, 20)
    job = write_job(tmp_path, head_dir, retention_days=7)
    assert run_cli(job, "--date", "2026-04-01").returncode == 0
    write_messages(tmp_path / "incoming" / "b.csv", 20, 40)
    assert run_cli(job, "--date", "2026-04-20").returncode == 0
    assert sorted(p.name for p in (tmp_path / "scored").glob("date=*")) == ["date=2026-04-20"]


def test_disk_full_fails_cleanly_keeps_earlier_outputs_and_rerun_succeeds(tmp_path, head_dir, small_tmpfs):
    write_messages(tmp_path / "incoming" / "small.csv", 0, 50)
    job = write_job(tmp_path, head_dir, output_format="csv")
    assert run_cli(job, "--date", "2026-05-01").returncode == 0
    earlier = {p: p.read_bytes() for p in (small_tmpfs / "date=2026-05-01").rglob("*") if p.is_file()}
    assert len(earlier) == 4  # scores, rejects, run report, _SUCCESS

    # Each copy of the reference file scores to about 0.6 MB of CSV: two do not fit in 1 MiB.
    for i in range(2):
        (tmp_path / "incoming" / f"big{i}.csv").write_bytes(SMS.read_bytes() + f"ham,copy {i}\n".encode())
    full = run_cli(job, "--date", "2026-05-02")
    assert full.returncode == 1
    assert "No space left on device" in full.stderr
    for path, content in earlier.items():
        assert path.read_bytes() == content, f"{path} changed"
    recorded = json.loads((small_tmpfs / "_state.json").read_text())["files"]
    assert len(recorded) < 3  # the file that did not fit is not recorded as done
    assert not list(small_tmpfs.rglob(".tmp-*"))
    assert not (small_tmpfs / "date=2026-05-02" / "_SUCCESS").exists()

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    rerun = run_cli(job, "--date", "2026-05-02")
    assert rerun.returncode == 0, rerun.stderr
    assert (small_tmpfs / "date=2026-05-02" / "_SUCCESS").is_file()
    state = json.loads((small_tmpfs / "_state.json").read_text())["files"]
    assert len(state) == 3


def test_cron_wrapper_under_env_i_logs_and_rotates(tmp_path, head_dir):
    write_messages(tmp_path / "incoming" / "a.csv", 0, 30)
    job = write_job(tmp_path, head_dir)
    log = tmp_path / "logs" / "job.log"
    log.parent.mkdir()
    log.write_text("x" * 2000)  # over LOG_MAX_BYTES below: rotated before this run
    elmobatch = Path(sys.executable).parent / "elmobatch"
    env = ["env", "-i", f"HOME={tmp_path}", f"ELMOBATCH={elmobatch}", "LOG_MAX_BYTES=1000", "LOG_KEEP=2"]
    result = subprocess.run([*env, "/bin/sh", str(REPO / "cron" / "elmobatch-cron.sh"), str(job), str(log)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + log.read_text()
    assert (tmp_path / "logs" / "job.log.1").read_text() == "x" * 2000
    text = log.read_text()
    assert "start job=" in text and "rows_read 30 = scored 30 + rejected 0" in text and "exit=0" in text
    again = subprocess.run([*env, "/bin/sh", str(REPO / "cron" / "elmobatch-cron.sh"), str(job), str(log)],
                           capture_output=True, text=True)
    assert again.returncode == 4 and "nothing to do" in log.read_text()


def test_cron_wrapper_without_elmobatch_says_so_in_the_log(tmp_path):
    wrapper = tmp_path / "install" / "cron" / "elmobatch-cron.sh"  # no .venv beside this copy
    wrapper.parent.mkdir(parents=True)
    wrapper.write_bytes((REPO / "cron" / "elmobatch-cron.sh").read_bytes())
    env = ["env", "-i", f"HOME={tmp_path}", f"ELMOBATCH={tmp_path / 'missing' / 'elmobatch'}"]
    result = subprocess.run([*env, "/bin/sh", str(wrapper), str(tmp_path / "nightly.toml")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    log = tmp_path / ".local" / "state" / "elmobatch" / "nightly.log"  # the default, its folder created
    text = log.read_text()
    assert "start job=" in text and "error: elmobatch not found: set ELMOBATCH" in text and "exit=1" in text
    assert "elmobatch not found" in result.stderr  # also for cron's mail
    crontab = (REPO / "cron" / "crontab.example").read_text().splitlines()
    assert 'MAILTO=""' not in crontab and any(line.startswith("MAILTO=") for line in crontab)


def test_a_head_of_another_model_fails_the_run_with_a_message_for_a_job_file(tmp_path):
    """The bundled head with the fixture model: one line naming both and the job key to change, with no
    exception type before it (elmobatch's errors are written for people; any other keeps its type)."""
    write_messages(tmp_path / "incoming" / "a.csv", 0, 5)
    report = run_job(load_job(write_job(tmp_path, "default")), today=dt.date(2026, 3, 1), log=lambda line: None)
    assert report.exit_code == 1 and report.status == "failed"
    assert report.error.startswith("head default was trained on vectors of model default"), report.error
    assert "pass the head's own model (--model; in a job file, model)" in report.error



def test_a_reading_error_in_a_job_names_the_job_files_keys_not_the_command_lines_options(tmp_path, head_dir):
    """The newcomer's read: a job's text_column missing from a file was reported as "--text-column"."""
    write_messages(tmp_path / "incoming" / "a.csv", 0, 5)
    report = run_job(load_job(write_job(tmp_path, head_dir, text_column="nope")), today=dt.date(2026, 3, 1),
                     log=lambda line: None)
    assert report.exit_code == 1 and report.status == "not all scored"
    [refused] = report.files_not_scored
    assert "text_column 'nope' not found; columns are: v1, v2" in refused["error"], refused["error"]
    assert "--" not in refused["error"] and "text_column 'nope'" in report.error
    # only whole words are options: a path or a quoted column name holding one stays as it is
    from elmobatch.scheduling.run import in_job_terms

    assert in_job_terms("/in/--format.csv: --id-column '--encoding' not found; pass --encoding.") == \
        "/in/--format.csv: id_column '--encoding' not found; set encoding."
