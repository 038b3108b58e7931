"""TensorFlow loads only where a model runs: help, version, argument errors, a job with nothing to
do and `import elmobatch.reading` never import it (checked in real subprocesses' sys.modules)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs the command line as `elmobatch` does, then records which TensorFlow/Keras modules were loaded.
CLI_WITH_MODULE_REPORT = """
import atexit, json, sys
report = sys.argv.pop(1)
def write_report():
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
    with open(report, "w") as f:
        json.dump(loaded, f)
atexit.register(write_report)
from elmobatch.cli import main
main(prog_name="elmobatch")
"""


def run_cli(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str], float]:
    """(the finished process, the TensorFlow modules it loaded, its wall time in seconds)."""
    report = tmp_path / "modules.json"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", CLI_WITH_MODULE_REPORT, str(report), *args],
                            capture_output=True, text=True, cwd=REPO)
    seconds = time.monotonic() - started
    return result, json.loads(report.read_text()), seconds


def test_help_version_and_command_help_load_no_tensorflow(tmp_path):
    for args in (["--help"], ["--version"], ["embed", "--help"], ["run", "--help"]):
        result, loaded, seconds = run_cli(tmp_path, *args)
        assert result.returncode == 0, result.stderr
        assert loaded == [], f"{args}: loaded {loaded[:3]} ({seconds:.2f} s)"
    assert "0.1.0" in run_cli(tmp_path, "--version")[0].stdout


def test_missing_input_file_fails_before_any_model_loads(tmp_path):
    """embed and score refuse a missing input alike: a usage error (exit 2) naming it, no model loaded."""
    for args in (["embed", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out")],
                 ["score", str(tmp_path / "nope.csv")]):
        result, loaded, _ = run_cli(tmp_path, *args)
        assert result.returncode == 2, result.stderr
        assert "nope.csv: no such file or directory" in result.stderr
        assert loaded == []


@pytest.mark.parametrize("args, says", [
    (["embed", "IN", "--out", "OUT", "--chunk-rows", "0"],
     "Invalid value for '--chunk-rows': 0 is not in the range x>=1"),
    (["score", "IN", "--delimiter", ";;"], "Invalid value for '--delimiter': ';;': expected one character"),
    (["score", "IN", "--encoding", "utf9"], "Invalid value for '--encoding': 'utf9': unknown encoding"),
    (["score", "IN", "--threshold", "2"], "Invalid value for '--threshold': 2.0 is not in the range 0<=x<=1"),
    (["score", "IN", "--threshold", "nan"], "Invalid value for '--threshold': 'nan' is not a number"),
    (["train", "IN", "--label-column", "v1", "--out", "OUT", "--learning-rate", "nan"],
     "Invalid value for '--learning-rate': 'nan' is not a number"),
    (["train", "IN", "--label-column", "v1", "--out", "OUT", "--split", "half"],
     "Invalid value for '--split': 'half': expected last:FRACTION or random:FRACTION[:SEED]"),
])
def test_a_bad_option_value_is_a_usage_error_before_any_model_loads(tmp_path, args, says):
    (tmp_path / "in.csv").write_text("v1,v2\nham,hello\n")
    paths = {"IN": str(tmp_path / "in.csv"), "OUT": str(tmp_path / "out")}
    result, loaded, _ = run_cli(tmp_path, *(paths.get(a, a) for a in args))
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert loaded == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, says", [
    (["a/in.csv", "--out", "o.txt"], "o.txt: expected a .csv or .parquet file name"),
    (["a/in.csv", "b/in.csv", "--out", "scored"], "share a file name stem, so both would write"),
    (["a/in.csv", "--out", "s3:///in.scored.csv"], "--out s3:///in.scored.csv: expected s3://BUCKET/KEY"),
])
def test_a_score_output_that_cannot_be_written_is_a_usage_error_before_any_model_loads(tmp_path, args, says):
    for folder in "ab":
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "in.csv").write_text("v1,v2\nham,hello\n")
    paths = [a if a.startswith(("s3:", "--")) else str(tmp_path / a) for a in args]
    result, loaded, _ = run_cli(tmp_path, "score", *paths)
    assert result.returncode == 2 and says in result.stderr, result.stderr
    assert loaded == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "modules.json"]


def test_run_with_nothing_to_do_loads_no_tensorflow(tmp_path):
    (tmp_path / "incoming").mkdir()
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "idle"\ninputs = ["incoming/*.csv"]\noutput = "scored"\n')
    result, loaded, _ = run_cli(tmp_path, "run", str(job))
    assert result.returncode == 4, result.stderr
    assert "nothing to do" in result.stdout
    assert loaded == []


@pytest.mark.parametrize("key, value, says", [
    ("head", "no-head", "[job].head '{tmp}/no-head': no such file or directory"),
    ("model", "no-model", "[job].model '{tmp}/no-model': no such file or directory"),
])
def test_a_job_naming_a_missing_model_or_head_is_a_bad_job_that_creates_nothing(tmp_path, key, value, says):
    (tmp_path / "incoming").mkdir()
    job = tmp_path / "job.toml"
    keys = {"name": "typo", "inputs": "incoming/*.csv", "output": "scored", key: value}
    job.write_text("[job]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items()))
    result, loaded, _ = run_cli(tmp_path, "run", str(job))
    assert result.returncode == 2, result.stderr
    assert f"Error: {job}: " + says.format(tmp=tmp_path) in result.stderr
    assert loaded == [] and not (tmp_path / "scored").exists()


def test_an_input_pattern_that_can_match_nothing_is_warned_of_not_an_error(tmp_path):
    """A typo or a missing mount is said on every run (and in _last_run.json); the folder may also
    appear with its first delivery, so it is not an error: the job's other patterns are read as ever."""
    (tmp_path / "sms").mkdir()
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "two"\ninputs = ["sms/*.csv", "emial/*.jsonl"]\noutput = "scored"\n')
    result, loaded, _ = run_cli(tmp_path, "run", str(job))
    warning = f"warning: {job}: [job].inputs '{tmp_path}/emial/*.jsonl': no folder {tmp_path}/emial, so nothing"
    assert result.returncode == 4 and warning in result.stderr, result.stderr
    assert "'sms" not in result.stderr and loaded == []  # the folder that exists is not warned of
    assert json.loads((tmp_path / "scored" / "_last_run.json").read_text())["warnings"][0].startswith(warning)
    job.write_text('[job]\nname = "two"\ninputs = ["sms/"]\noutput = "scored"\n')  # the folder, not its files
    result, loaded, _ = run_cli(tmp_path, "run", str(job))
    assert result.returncode == 4 and loaded == [], result.stderr
    assert f"[job].inputs '{tmp_path}/sms' is a folder, and a job reads the files its patterns match; expected a " \
           f"pattern such as '{tmp_path}/sms/*.csv'" in result.stderr


def test_bad_job_file_loads_no_tensorflow(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "bad"\n')
    result, loaded, _ = run_cli(tmp_path, "run", str(job))
    assert result.returncode == 2 and "[job] needs inputs, output" in result.stderr
    assert loaded == []


def test_importing_the_reading_and_scheduling_parts_loads_no_tensorflow():
    code = ("import sys, elmobatch, elmobatch.reading, elmobatch.caching, elmobatch.embedding, "
            "elmobatch.scheduling.run, elmobatch.encoding.tokens; "
            "print([m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_load_encoder_from_the_package_loads_tensorflow_lazily_and_quietly(fixture_dir):
    code = ("import sys, elmobatch; assert 'tensorflow' not in sys.modules; "
            "from elmobatch import Encoder, ModelError, load_encoder; "
            f"enc = load_encoder({str(fixture_dir)!r}); assert isinstance(enc, Encoder); "
            "assert issubclass(ModelError, ValueError); print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
    assert "oneDNN" not in result.stderr and "cuda" not in result.stderr.lower()


# ---- packaging: python -m elmobatch, -h, Examples, build requirements, LICENSE, py.typed -------------


COMMANDS = ["info", "models", "embed", "train", "evaluate", "score", "run", "pretrain", "cache"]
CACHE_COMMANDS = ["info", "compact", "prune"]


def test_every_command_accepts_dash_h_and_shows_examples():
    from click.testing import CliRunner

    from elmobatch.cli import main

    assert sorted(main.commands) == sorted(COMMANDS)  # a new command gets checked here too
    assert sorted(main.commands["cache"].commands) == sorted(CACHE_COMMANDS)
    for args in ([], *([c] for c in COMMANDS), *(["cache", c] for c in CACHE_COMMANDS)):
        result = CliRunner().invoke(main, [*args, "-h"])
        assert result.exit_code == 0, (args, result.output)
        assert "Usage: " in result.output and "-h, --help" in result.output
        examples = result.output.split("Examples:\n", 1)
        assert len(examples) == 2, f"{args}: no Examples block"
        assert examples[1].lstrip().startswith("elmobatch "), f"{args}: examples should be command lines"


def test_python_dash_m_elmobatch_runs_the_command_line():
    result = subprocess.run([sys.executable, "-m", "elmobatch", "--version"], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0 and "0.1.0" in result.stdout
    result = subprocess.run([sys.executable, "-m", "elmobatch", "score", "-h"], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0 and result.stdout.startswith("Usage: elmobatch score")


def test_build_requirements_match_the_license_metadata_and_ship_license_and_py_typed():
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"  # an SPDX string: needs setuptools >= 77
    assert "setuptools>=77" in pyproject["build-system"]["requires"]
    license_text = (REPO / pyproject["project"]["license-files"][0]).read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["elmobatch"]
    assert (REPO / "elmobatch" / "py.typed").is_file()
