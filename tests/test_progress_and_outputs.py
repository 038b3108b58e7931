"""Progress and logging on every long command; provenance and metadata in scored outputs; the
evaluation report's precision-recall curve, fingerprints and misclassified rows."""

import csv
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from tests.conftest import FIXTURE, tiny_options, write_messages

REPO = Path(__file__).resolve().parents[1]


def invoke(*args, expect_ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if expect_ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def write_rows(path: Path, header: list[str], rows: list[list[str]], extra: str = "") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
        f.write(extra)
    return path


# ---- progress and logging ---------------------------------------------------------------------


def test_progress_moves_within_a_chunk_after_each_encoder_batch(tmp_path, fixture_encoder, head_dir):
    """One 300-row chunk, encoder batches of 50: progress lines before the chunk ends (embed and score)."""
    import io

    from elmobatch.caching import EmbeddingCache
    from elmobatch.embedding import EmbedOptions, Progress, embed_files
    from elmobatch.scoring.score import load_head_and_model, score_file

    messages = write_messages(tmp_path / "one-chunk.csv", 0, 300)
    head = load_head_and_model(str(head_dir), str(FIXTURE))[0]
    fixture_encoder.batch_size = 50
    try:
        for run, work in (("embed", lambda progress: embed_files(
                              [messages], tmp_path / "vectors", fixture_encoder, options=EmbedOptions(),
                              cache=EmbeddingCache(tmp_path / "c1"), progress=progress)),
                          ("score", lambda progress: score_file(
                              messages, tmp_path / "scored.csv", head=head, encoder=fixture_encoder,
                              cache=EmbeddingCache(tmp_path / "c2"), progress=progress))):
            stream = io.StringIO()
            work(Progress(stream, label=run, tty=False, every_s=0))
            rows = [int(m.group(1).replace(",", "")) for m in re.finditer(rf"{run}: ([\d,]+) rows", stream.getvalue())]
            assert any(0 < n < 300 for n in rows), (run, rows)  # within the one chunk
            assert rows == sorted(rows) and rows[-1] == 300, (run, rows)
    finally:
        fixture_encoder.batch_size = 256


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_score_evaluate_and_train_report_progress_on_stderr_and_quiet_silences_it(tmp_path, head_dir):
    messages = write_messages(tmp_path / "few.csv", 0, 60)
    cache = tmp_path / "cache"
    common = ["--head", head_dir, "--model", FIXTURE, "--cache-dir", cache]
    scored = invoke("score", messages, *common, "--out", tmp_path / "a.csv")
    assert "score few.csv: 60 rows" in scored.stderr and "rows/s" in scored.stderr and "ETA" in scored.stderr
    assert "rows/s" not in scored.stdout  # results on stdout, progress on stderr
    evaluated = invoke("evaluate", messages, "--label-column", "v1", *common, "--out", tmp_path / "report")
    assert "evaluate: 60 rows" in evaluated.stderr and "rows/s" in evaluated.stderr
    trained = invoke("train", messages, "--label-column", "v1", "--model", FIXTURE, "--cache-dir", cache,
                     "--epochs", "1", "--out", tmp_path / "head")
    assert "train: embedding: 60 rows" in trained.stderr and "rows/s" in trained.stderr
    assert "60 rows read, 60 with text and label" in trained.stderr  # the library's log, through logging

    for quiet in (["-q"], ["--quiet"], ["--log-level", "warning"]):
        silent = invoke(*quiet, "score", messages, *common, "--out", tmp_path / "b.csv")
        assert silent.stderr == "" and "rows_read 60 = scored 60" in silent.stdout
    both = invoke("-q", "-v", "score", messages, *common, expect_ok=False)
    assert both.exit_code == 2 and "--quiet and -v" in both.output


@pytest.mark.slow  # pretraining
def test_pretrain_reports_progress_every_step(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"message number {i} about lunch and prizes" for i in range(40)) + "\n")
    options = tmp_path / "options.json"
    options.write_text(json.dumps(tiny_options(max_characters_per_token=20)))
    result = invoke("pretrain", corpus, "--out", tmp_path / "model", "--options", options, "--batch-size", "8",
                    "--max-steps", "3", "--heldout", "0.1", "--min-count", "1")
    assert re.search(r"pretrain: \d+ messages .*100.0%.* messages/s", result.stderr), result.stderr


@pytest.mark.slow  # a subprocess importing TensorFlow
def test_the_library_prints_nothing_when_used_from_a_program(tmp_path, head_dir):
    """A program calling run_job (and scoring a file whose columns collide) gets no output it did
    not ask for: messages go to the `elmobatch` loggers, which have no handler of the library's own."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    write_rows(incoming / "day.csv", ["label", "text"], [["ham", "see you at lunch"], ["spam", "WIN a prize"]])
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\nname = "quiet"\ninputs = ["incoming/*.csv"]\noutput = "out"\nmodel = "{FIXTURE}"\n'
                   f'head = "{head_dir}"\ncache_dir = "cache"\n')
    program = ("from elmobatch.scheduling.run import run_job\nfrom elmobatch.scheduling.spec import load_job\n"
               f"report = run_job(load_job({str(job)!r}))\nassert report.exit_code == 0, report.error\n")
    done = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_a_command_writes_each_warning_once_and_every_progress_line(capsys):
    """A file read more than once in one command (run --engine spark plans, then scores it) is warned
    of once; progress and notes below warning level are all written."""
    import logging

    from elmobatch.cli import configure_logging

    configure_logging(logging.INFO)
    reading = logging.getLogger("elmobatch")
    for name in ("day.csv", "day.csv", "other.csv"):
        reading.warning(f"warning: {name}: repeated column name(s) renamed")
    for _ in range(2):
        logging.getLogger("elmobatch.progress").info("score day.csv: 2 rows")
    err = capsys.readouterr().err
    assert err.count("warning: day.csv") == 1 and err.count("warning: other.csv") == 1
    assert err.count("score day.csv: 2 rows") == 2
    configure_logging(logging.INFO)  # a new command: the same warning is written again
    reading.warning("warning: day.csv: repeated column name(s) renamed")
    assert capsys.readouterr().err.count("warning: day.csv") == 1


# ---- scored outputs ---------------------------------------------------------------------------


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_scored_rows_carry_source_file_and_row_number_and_parquet_names_head_and_model(tmp_path, head_dir):
    from elmobatch import __version__, load_encoder
    from elmobatch.training.head import load_head

    rows = [[f"m{i}", "ham", "0.5", f"message {i} see you soon"] for i in range(6)]
    path = write_rows(tmp_path / "in.csv", ["id", "label", "score", "text"], rows[:3],
                      extra="only-one-field\n" + "".join(",".join(r) + "\n" for r in rows[3:]))
    out = tmp_path / "in.scored.parquet"
    result = invoke("score", path, "--head", head_dir, "--model", FIXTURE, "--cache-dir", tmp_path / "cache",
                    "--out", out)
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["id", "input_label", "input_score", "text", "source_file", "row_number",
                                    "label", "score"]
    rejects = pd.read_parquet(tmp_path / "in.scored.rejects.parquet")
    # Data rows 0..6: the fourth (number 3) is rejected; the scored rows keep their own numbers.
    assert rejects["row_number"].tolist() == [3] and scored["row_number"].tolist() == [0, 1, 2, 4, 5, 6]
    assert set(scored["source_file"]) == set(rejects["source_file"]) == {"in.csv"}
    assert scored["input_label"].tolist() == ["ham"] * 6
    # The renames are reported: a warning on stderr and in the summary line.
    assert "warning:" in result.stderr and "'label', 'score' written as 'input_label', 'input_score'" in result.stderr
    assert "input column 'label' written as 'input_label'" in result.stdout

    record = json.loads(pq.read_schema(out).metadata[b"elmobatch"])
    assert record["head"]["fingerprint"] == load_head(head_dir).fingerprint and len(record["head"]["fingerprint"]) == 64
    assert record["model"]["fingerprint"] == load_encoder(str(FIXTURE)).fingerprint
    assert record["elmobatch_version"] == __version__ and record["written"][:10] == datetime.now(UTC).date().isoformat()
    assert record["renamed_columns"] == {"label": "input_label", "score": "input_score"}

    bare = invoke("score", path, "--head", head_dir, "--model", FIXTURE, "--cache-dir", tmp_path / "cache",
                  "--out", tmp_path / "bare.csv", "--no-provenance")
    assert list(pd.read_csv(tmp_path / "bare.csv").columns) == ["id", "input_label", "input_score", "text", "label",
                                                               "score"]
    assert "rows_read 7 = scored 6 + rejected 1" in bare.stdout


def test_run_writes_provenance_unless_the_job_turns_it_off_and_reports_renames(tmp_path, head_dir):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    write_rows(incoming / "day.csv", ["label", "text"], [["ham", "see you at lunch"], ["spam", "WIN a prize"]])
    for name, extra in (("with", ""), ("without", "provenance = false\n")):
        job = tmp_path / f"{name}.toml"
        job.write_text(f'[job]\nname = "{name}"\ninputs = ["incoming/*.csv"]\noutput = "{name}"\n'
                       f'model = "{FIXTURE}"\nhead = "{head_dir}"\ncache_dir = "cache"\n{extra}')
        result = invoke("run", job, "--date", "2026-01-01")
        assert "input column(s) 'label' written as 'input_label'" in result.stderr
        partition = tmp_path / name / "date=2026-01-01"
        scored = pd.read_parquet(next(partition.glob("day-*.parquet")))
        provenance = ["source_file", "row_number"] if name == "with" else []
        assert list(scored.columns) == ["input_label", "text", *provenance, "label", "score"]
        report = json.loads(next(partition.glob("_run-*.json")).read_text())
        assert report["files"][0]["renamed_columns"] == {"label": "input_label"}
        assert json.loads(pq.read_schema(next(partition.glob("day-*.parquet"))).metadata[b"elmobatch"])["head"]


# ---- the evaluation report --------------------------------------------------------------------


def test_report_has_precision_recall_fingerprints_date_and_escaped_misclassified_rows(tmp_path, head_dir):
    from elmobatch.training.head import load_head

    hostile = "<script>alert('x')</script> & see you"
    path = write_rows(tmp_path / "labelled.csv", ["v1", "v2"],
                      [["ham", hostile], ["ham", "lunch at noon?"], ["spam", "WIN a prize now, call 0906"]])
    # --threshold 0 calls every row spam: both ham rows are misclassified.
    invoke("evaluate", path, "--label-column", "v1", "--head", head_dir, "--model", FIXTURE,
           "--cache-dir", tmp_path / "cache", "--threshold", "0", "--out", tmp_path / "report")
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert (tmp_path / "report" / "precision_recall.png").read_bytes()[:4] == b"\x89PNG"
    assert 'alt="precision_recall.png"' in page
    assert load_head(head_dir).fingerprint in page and "model fingerprint" in page
    assert datetime.now(UTC).date().isoformat() in page
    assert "Misclassified rows (2)" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; see you" in page and "<script>" not in page
    assert "lunch at noon?" in page and "WIN a prize" not in page  # the spam row was called spam
