"""`elmobatch run --exit-codes` and the job file's exit_codes: orchestrators get 0 for "nothing to do"
(4) and "success with rejects" (3) when they ask; the detailed codes stay the default. Real
subprocesses; a job with nothing to do loads no model, so these are fast (rejects: test_scheduling)."""

import datetime as dt
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def idle_job(tmp_path: Path, extra: str = "") -> Path:
    """A job whose input glob matches nothing: every run has nothing to do."""
    (tmp_path / "incoming").mkdir(exist_ok=True)
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "idle"\ninputs = ["incoming/*.csv"]\noutput = "scored"\n{extra}')
    return job


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "elmobatch", "run", *args], capture_output=True, text=True,
                          cwd=REPO)


def test_nothing_to_do_exits_4_by_default_and_0_with_zero_on_success(tmp_path):
    job = idle_job(tmp_path)
    default = run_cli(str(job))
    assert default.returncode == 4 and "nothing to do" in default.stdout
    assert run_cli(str(job), "--exit-codes", "detailed").returncode == 4
    lenient = run_cli(str(job), "--exit-codes", "zero-on-success")
    assert lenient.returncode == 0 and "nothing to do" in lenient.stdout


def test_job_file_exit_codes_key_and_the_option_overrides_it(tmp_path):
    job = idle_job(tmp_path, 'exit_codes = "zero-on-success"\n')
    assert run_cli(str(job)).returncode == 0
    assert run_cli(str(job), "--exit-codes", "detailed").returncode == 4


def test_bad_exit_codes_value_in_job_file_exits_2_naming_the_key(tmp_path):
    job = idle_job(tmp_path, 'exit_codes = "always-zero"\n')
    result = run_cli(str(job))
    assert result.returncode == 2
    assert "[job].exit_codes must be one of detailed, zero-on-success" in result.stderr


def test_bad_job_file_stays_2_even_with_zero_on_success(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "no inputs"\n')
    assert run_cli(str(job), "--exit-codes", "zero-on-success").returncode == 2


def files_under(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_a_run_writes_sweeps_and_deletes_nothing_in_a_folder_it_did_not_make(tmp_path):
    scored = tmp_path / "scored"
    for name in ("date=2024-01-01", "date=20240102", "date=2026-11-20"):  # the user's own, past retention
        (scored / name).mkdir(parents=True)
        (scored / name / "raw.csv").write_text("text\nmine\n")
    (scored / "date=2026-11-20" / ".tmp-0badc0de-raw.csv.tmp").write_text("mine too")
    before = files_under(scored)
    result = run_cli(str(idle_job(tmp_path, "retention_days = 30\n")))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no _state.json or _last_run.json, so it is not this tool's job output" in result.stdout + result.stderr
    assert files_under(scored) == before and sorted(p.name for p in scored.iterdir()) == sorted(
        ["date=2024-01-01", "date=20240102", "date=2026-11-20"])


def test_retention_deletes_only_its_day_partitions_and_a_future_date_deletes_no_more(tmp_path):
    job = idle_job(tmp_path, "retention_days = 30\n")
    assert run_cli(str(job)).returncode == 4  # an empty output: now marked as the job's
    today = dt.date.today()
    scored = tmp_path / "scored"
    recent, old, compact = (scored / f"date={today - dt.timedelta(days=3)}",
                            scored / f"date={today - dt.timedelta(days=60)}", scored / "date=20240102")
    for partition in (recent, old, compact):
        partition.mkdir()
        (partition / "x.parquet").write_bytes(b"x")
    assert run_cli(str(job), "--date", str(today + dt.timedelta(days=3650))).returncode == 4  # a mistyped year
    assert recent.is_dir() and compact.is_dir() and not old.exists()


def test_what_a_killed_first_run_leaves_is_no_foreign_output(tmp_path):
    scored = tmp_path / "scored"
    (scored / "_tmp").mkdir(parents=True)
    (scored / "_tmp" / ".tmp-0badc0de-_state.json.tmp").write_text("{")
    (scored / ".lock").write_text("")
    (scored / "lost+found").mkdir()  # a freshly mounted volume's
    result = run_cli(str(idle_job(tmp_path)))
    assert result.returncode == 4, result.stdout + result.stderr
    assert not (scored / "_tmp").exists() and (scored / "_state.json").is_file()
