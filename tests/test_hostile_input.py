"""Hostile rows: CSV outputs that read back exactly, unterminated quotes, token-dense messages,
duplicate ids, compressed files named .csv, and messages made only of invisible characters."""

import csv
import gzip
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from elmobatch.caching import EmbeddingCache
from elmobatch.cli import main
from elmobatch.encoding.tokens import DEFAULT_MAX_TOKENS, tokenize
from elmobatch.reading import ReadError, ReadOptions, read_messages
from elmobatch.scheduling.run import run_job
from elmobatch.scheduling.spec import JobSpecError, load_job
from elmobatch.scoring.score import ScoreError, load_head_and_model, score_file
from elmobatch.embedding.vectors import file_vectors
from tests.conftest import FIXTURE

ROOT = Path(__file__).resolve().parents[1]
PIECES = ["\r", "\n", "\r\n", '"', ",", "=", "+", "-", "@", " ", "\t", ";", "'", "x", "é", "1", "\u200b"]


def hostile_strings(n: int, seed: int = 0) -> list[str]:
    """Strings built from the characters that break CSV and spreadsheets, plus a few fixed ones."""
    rng = random.Random(seed)
    fixed = ["hello\rworld", "=1+2", "+SUM(A1)", "-3", "@cmd", "007", "", " ", "\r", '"', 'a "quoted" b', "1,5"]
    return fixed + ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8))) for _ in range(n - len(fixed))]


def write_csv_input(path: Path, header: list[str], rows: list[list[str]], extra_lines: str = "") -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows([header, *rows])
    path.write_text(buffer.getvalue() + extra_lines, encoding="utf-8")
    return path


def read_back(path: Path) -> tuple[list[list[str]], pd.DataFrame]:
    """The file through Python's csv module (rows after the header) and through pandas, as text."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return rows, pd.read_csv(path, dtype=str, keep_default_na=False)


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ---- every CSV written reads back as written --------------------------------------------------


@pytest.fixture(scope="module")
def hostile_input(tmp_path_factory):
    """`text,id` rows with hostile values, plus one rejected record whose raw holds a bare CR."""
    texts = hostile_strings(60)
    ids = [f"{t}#{i}" for i, t in enumerate(hostile_strings(60, seed=1))]
    bad = '"bad\rraw =1",x,"extra\n,field",y\n'  # four fields for two columns: a column_count reject
    path = write_csv_input(tmp_path_factory.mktemp("hostile") / "hostile.csv", ["text", "id"],
                           [[t, i] for t, i in zip(texts, ids, strict=True)], extra_lines=bad)
    return path, texts, ids, bad.rstrip("\n")


def check_round_trip(scored: Path, rejects: Path, texts, ids, bad_raw):
    rows, frame = read_back(scored)
    assert [r[:2] for r in rows] == [[t, i] for t, i in zip(texts, ids, strict=True)]
    assert frame["text"].tolist() == texts and frame["id"].tolist() == ids
    assert list(frame.columns) == ["text", "id", "source_file", "row_number", "label", "score"]
    assert set(frame["label"]) <= {"ham", "spam"} and frame["score"].astype(float).between(0, 1).all()
    rows, frame = read_back(rejects)
    assert [r[2:] for r in rows] == [["column_count", "4 field(s); the header has 2 columns", bad_raw]]
    assert frame["raw"].tolist() == [bad_raw] and frame["row_number"].tolist() == [str(len(texts))]


def test_scored_and_rejects_csv_read_back_exactly(tmp_path, hostile_input):
    path, texts, ids, bad_raw = hostile_input
    head, encoder = load_head_and_model()
    summary = score_file(path, tmp_path / "out.csv", head=head, encoder=encoder,
                         cache=EmbeddingCache(tmp_path / "cache"), read=ReadOptions(text_column="text"))
    assert (summary.rows_read, summary.rows_scored, summary.rows_rejected) == (len(texts) + 1, len(texts), 1)
    check_round_trip(tmp_path / "out.csv", tmp_path / "out.rejects.csv", texts, ids, bad_raw)


def test_the_reported_bare_cr_case_keeps_its_rows(tmp_path):
    path = tmp_path / "cr.csv"
    path.write_bytes(b'id,text\nr1,"hello\rworld"\nr2,plain\n')
    result = cli("score", path, "--out", tmp_path / "cr.scored.csv", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(tmp_path / "cr.scored.csv", dtype=str, keep_default_na=False)
    assert scored["text"].tolist() == ["hello\rworld", "plain"] and (scored["label"] != "").all()


def test_run_csv_output_reads_back_exactly(tmp_path, hostile_input):
    path, texts, ids, bad_raw = hostile_input
    (tmp_path / "incoming").mkdir()
    (tmp_path / "incoming" / "day.csv").write_bytes(path.read_bytes())
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "hostile"\ninputs = ["incoming/*.csv"]\noutput = "scored"\n'
                   'cache_dir = "cache"\ntext_column = "text"\noutput_format = "csv"\n')
    report = run_job(load_job(job), log=lambda line: None)
    assert report.exit_code == 3, report.error  # ok, with the one rejected row
    [scored] = (tmp_path / "scored").glob("date=*/day-*.csv")
    check_round_trip(scored, scored.parent / "_rejects" / scored.name, texts, ids, bad_raw)


def test_run_scores_inputs_alike_in_name_and_bytes_into_a_file_each(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        (tmp_path / "in" / folder / "x.csv").write_text("text\nhello\nthere\n")
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "twins"\ninputs = ["in/*/x.csv"]\noutput = "scored"\ncache_dir = "cache"\n')
    report = run_job(load_job(job), log=lambda line: None)
    assert report.exit_code == 0, report.error
    outputs = sorted((tmp_path / "scored").glob("date=*/x-*.parquet"))
    assert len(outputs) == 2 and sum(len(pd.read_parquet(p)) for p in outputs) == report.rows_scored == 4


def score_into(tmp_path: Path, path: Path, out_name: str, **kwargs):
    """`path` scored by the bundled head into tmp_path/out_name; returns the summary."""
    head, encoder = load_head_and_model()
    return score_file(path, tmp_path / out_name, head=head, encoder=encoder,
                      cache=EmbeddingCache(tmp_path / "cache"), **kwargs)


def test_a_json_key_first_seen_late_is_a_column_of_every_row(tmp_path):
    path = tmp_path / "late.jsonl"
    records = [{"text": f"message {i}"} for i in range(250)] + [{"text": "the last", "extra": "EXTRA"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = score_into(tmp_path, path, "late.scored.csv", chunk_rows=100)
    rows, frame = read_back(tmp_path / "late.scored.csv")
    assert list(frame.columns) == ["text", "extra", "source_file", "row_number", "label", "score"]
    assert {len(r) for r in rows} == {6} and frame["extra"].tolist() == [""] * 250 + ["EXTRA"]
    assert summary.rows_scored == len(frame) == 251
    big = 2**53 + 1  # a float64 cannot hold it
    late = [{"text": "a number", "n": big, "tags": ["news"]}, {"text": "empty", "tags": []}]
    path.write_text(path.read_text() + "".join(json.dumps(r) + "\n" for r in late))
    score_into(tmp_path, path, "late.scored.parquet", chunk_rows=100)  # no value for "n" in the first chunks
    scored = pq.read_table(tmp_path / "late.scored.parquet")
    assert scored["extra"].to_pylist() == [None] * 250 + ["EXTRA", None, None]
    assert scored["n"].to_pylist() == [None] * 251 + [big, None] and scored.schema.field("n").type == pa.int64()
    assert scored["tags"].to_pylist() == [None] * 251 + [["news"], []]
    assert scored.column_names[-2:] == ["label", "score"] and len(scored) == 253  # every row, once
    assert pd.read_parquet(tmp_path / "late.scored.parquet")["n"].iloc[251] == big  # as Int64, not float64
    assert not (tmp_path / "_tmp").exists()  # no temporary left behind by the rewrite
    records = [{"text": "first", "tags": []}, {"text": "b", "tags": ["a"]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    score_into(tmp_path, path, "lists.scored.parquet", chunk_rows=1)  # a list of nothing says no type yet
    assert pq.read_table(tmp_path / "lists.scored.parquet")["tags"].to_pylist() == [[], ["a"]]


def test_values_keep_their_value_and_type(tmp_path):
    big, huge = 2**53 + 1, 2**63 + 5  # a float64 cannot hold the first, an int64 not the second
    path = tmp_path / "ids.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [{"uid": big, "h": huge, "text": "a"}, {"text": "b"}]))
    score_into(tmp_path, path, "ids.scored.csv")
    frame = read_back(tmp_path / "ids.scored.csv")[1]
    assert frame["uid"].tolist() == [str(big), ""] and frame["h"].tolist() == [str(huge), ""]
    score_into(tmp_path, path, "ids.scored.parquet")
    scored = pq.read_table(tmp_path / "ids.scored.parquet")
    assert scored["uid"].to_pylist() == [big, None] and scored["h"].to_pylist() == [huge, None]
    long_list = list(range(2000))
    table = pa.table({"uid": pa.array([big, None], pa.int64()), "h": pa.array([huge, 7], pa.uint64()),
                      "t": pa.array([1_000_000_001, None], pa.timestamp("ns")),
                      "later": pa.array([None, 5], pa.int64()), "v": pa.array([long_list, None], pa.list_(pa.int64())),
                      "d": pa.array([19725, None], pa.date32()), "f": pa.array([float("nan"), None]),
                      "m": pa.array([[("k", 1)], None], pa.map_(pa.string(), pa.int64())),
                      "s": pa.array(["x", None]), "st": pa.array([{"a": 1}, None]), "text": ["a", "b"],
                      "ends": pa.array([[19723, 2932896], None], pa.list_(pa.date32()))})  # 2024-01-01, 9999-12-31
    pq.write_table(table, tmp_path / "typed.parquet")
    score_into(tmp_path, tmp_path / "typed.parquet", "typed.scored.parquet")  # a value and a null in each column
    scored = pq.read_table(tmp_path / "typed.scored.parquet")
    given = pq.read_table(tmp_path / "typed.parquet")
    others = [c for c in table.column_names if c != "f"]
    assert scored.select(others).equals(given.select(others))  # every type as the input's, values exact
    assert scored.schema.field("f").type == pa.float64()
    nan, null = scored["f"].to_pylist()
    assert nan != nan and null is None  # NaN stays NaN, beside a null
    score_into(tmp_path, tmp_path / "typed.parquet", "typed.scored.csv")
    frame = read_back(tmp_path / "typed.scored.csv")[1]
    assert frame["v"].tolist() == [json.dumps(long_list), ""] and frame["d"].tolist() == ["2024-01-03", ""]
    assert frame["st"].tolist() == ['{"a": 1}', ""] and frame["m"].tolist() == ['[["k", 1]]', ""]  # JSON, not repr
    assert frame["ends"].tolist() == ["[1704067200000, 253402214400000]", ""]  # epoch ms, past pandas' years too
    stdout = cli("score", tmp_path / "typed.parquet", "--out", "-", "--out-format", "jsonl",
                 "--cache-dir", tmp_path / "cache")
    assert stdout.exit_code == 0, stdout.output
    lines = [json.loads(line) for line in stdout.stdout.splitlines()]
    assert [r["v"] for r in lines] == [long_list, None] and [r["uid"] for r in lines] == [big, None]
    assert [r["d"] for r in lines] == [1704240000000, None] and [r["t"] for r in lines] == [1000, None]  # epoch ms
    assert [r["f"] for r in lines] == [None, None] and lines[0]["m"] == [["k", 1]] and lines[0]["st"] == {"a": 1}
    assert lines[0]["ends"] == [1704067200000, 253402214400000]


def test_json_lines_on_stdout_keep_every_digit(tmp_path):
    values = {"tiny": 1.2345678901234e-10, "long": 0.12345678901234568, "huge": 2**63 + 5, "nested": [0.1, 1e-300]}
    path = tmp_path / "floats.jsonl"
    path.write_text(json.dumps({"text": "win a prize now", **values}) + "\n" + json.dumps({"text": "hello"}) + "\n")
    stdout = cli("score", path, "--out", "-", "--out-format", "jsonl", "--cache-dir", tmp_path / "cache")
    assert stdout.exit_code == 0, stdout.output
    first, second = (json.loads(line) for line in stdout.stdout.splitlines())
    assert {k: first[k] for k in values} == values and second["tiny"] is None  # was 0.000000000123457
    score_into(tmp_path, path, "floats.scored.parquet")
    scores = pq.read_table(tmp_path / "floats.scored.parquet")["score"].to_pylist()
    assert [first["score"], second["score"]] == scores
    floats = pa.array([[1.5, float("nan"), float("inf")]])
    pq.write_table(pa.table({"text": ["a"], "fs": floats}), tmp_path / "n.parquet")
    stdout = cli("score", tmp_path / "n.parquet", "--out", "-", "--out-format", "jsonl",
                 "--cache-dir", tmp_path / "cache")
    assert json.loads(stdout.stdout)["fs"] == [1.5, None, None]  # JSON has no NaN: null, as pandas wrote it


def test_binary_values_read_the_same_in_csv_and_json_lines(tmp_path):
    pq.write_table(pa.table({"raw": pa.array([b"\xff\x00", b"ok", None], pa.binary()), "text": ["a", "b", "c"],
                             "nested": pa.array([[b"\xfe"], None, []], pa.list_(pa.binary()))}),
                   tmp_path / "raw.parquet")
    score_into(tmp_path, tmp_path / "raw.parquet", "raw.scored.csv")
    assert read_back(tmp_path / "raw.scored.csv")[1]["raw"].tolist() == ["b'\\xff\\x00'", "b'ok'", ""]
    assert [json.loads(v) if v else None for v in read_back(tmp_path / "raw.scored.csv")[1]["nested"]] == \
        [["b'\\xfe'"], None, []]  # as JSON Lines gives them
    stdout = cli("score", tmp_path / "raw.parquet", "--out", "-", "--out-format", "jsonl",
                 "--cache-dir", tmp_path / "cache")
    assert stdout.exit_code == 0, stdout.output  # was UnicodeDecodeError: JSON has no bytes
    assert [json.loads(line)["raw"] for line in stdout.stdout.splitlines()] == ["b'\\xff\\x00'", "b'ok'", None]
    assert [json.loads(line)["nested"] for line in stdout.stdout.splitlines()] == [["b'\\xfe'"], None, []]
    score_into(tmp_path, tmp_path / "raw.parquet", "raw.scored.parquet")
    assert pq.read_table(tmp_path / "raw.scored.parquet")["raw"].to_pylist() == [b"\xff\x00", b"ok", None]
    deep = tmp_path / "deep.jsonl"  # no bytes in JSON: its nesting is not walked (600 levels, as json reads them)
    deep.write_text('{"text": "hello there", "meta": ' + "[" * 600 + "]" * 600 + "}\n")
    stdout = cli("score", deep, "--out", "-", "--out-format", "jsonl", "--cache-dir", tmp_path / "cache")
    assert stdout.exit_code == 0, stdout.output


@pytest.mark.parametrize("values", [[1, 2, 1.5, None], [1, 2, "x", None], ["a", "b", 5, None], ["a", None, [1], 2],
                                    [None, None, True, None, 5, 0], [None, None, 5, None, True, None]])
def test_a_json_column_whose_type_changes_is_a_clear_error_for_parquet(tmp_path, values):
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps({"text": f"m{i}", "n": v}) + "\n" for i, v in enumerate(values)))
    with pytest.raises(ScoreError, match="a column changed type between chunks or mixes types"):
        score_into(tmp_path, path, "mixed.scored.parquet", chunk_rows=2)  # 1.5 into int64, 5 into text: no cast
    assert not (tmp_path / "mixed.scored.parquet").exists()


def test_a_json_file_of_ever_new_keys_is_refused_naming_the_limit(tmp_path):
    path = tmp_path / "keys.jsonl"
    path.write_text("".join(json.dumps({"text": "m", f"k{i}": 1}) + "\n" for i in range(1_000)))
    with pytest.raises(ReadError, match="record 1000 brings the distinct keys past 1,000"):
        read_messages(path)


def test_text_spilled_past_the_last_column_is_written_whole(tmp_path):
    path = tmp_path / "spill.csv"
    path.write_text("id,text\n1,hello, world\n2,plain,\n3,one, two,, three\n")
    summary = score_into(tmp_path, path, "spill.scored.csv")
    frame = read_back(tmp_path / "spill.scored.csv")[1]
    assert frame["text"].tolist() == ["hello, world", "plain", "one, two,, three"] and summary.rows_rejected == 0


def test_an_input_column_named_row_number_is_kept(tmp_path):
    path = tmp_path / "numbered.csv"
    path.write_text("row_number,input_row_number,text\n1001,a,hello\n1002,b,there\n")
    summary = score_into(tmp_path, path, "numbered.scored.csv")
    frame = read_back(tmp_path / "numbered.scored.csv")[1]
    assert list(frame.columns[:4]) == ["input_input_row_number", "input_row_number", "text", "source_file"]
    assert frame["input_input_row_number"].tolist() == ["1001", "1002"] and frame["row_number"].tolist() == ["0", "1"]
    assert frame["input_row_number"].tolist() == ["a", "b"]
    assert summary.renamed_columns == {"row_number": "input_input_row_number"}


# ---- an unterminated quote costs one row -----------------------------------------------------


def test_unterminated_quote_costs_one_reject_and_reading_resumes(tmp_path):
    lines = ["id,text", *[f"r{i},good {i}" for i in range(5)], 'r5,"oops, never closed',
             *[f"r{i},later {i}" for i in range(6, 1006)]]
    path = tmp_path / "quote.csv"
    path.write_text("\n".join(lines) + "\n")
    chunks = list(read_messages(path, chunk_rows=300))
    rejects = pd.concat([c.rejects for c in chunks])
    assert sum(c.rows_read for c in chunks) == 1006 and sum(len(c.rows) for c in chunks) == 1005
    assert rejects[["row_number", "reason", "raw"]].values.tolist() == [
        [5, "unterminated_quote", 'r5,"oops, never closed']]
    assert "end of the file" in rejects["detail"].iloc[0] and "resumed on the next line" in rejects["detail"].iloc[0]
    texts = [t for c in chunks for t in c.texts]
    assert texts[5] == "later 6" and texts[-1] == "later 1005"


def test_a_stray_quote_running_into_a_parse_error_costs_one_line(tmp_path):
    """The quote opened on r1 is closed by the one on r5, whose next character is no comma."""
    lines = ["id,text", "r0,fine", 'r1,"stray quote', "r2,fine", "r3,fine", "r4,fine", 'r5,she said "hi" twice',
             "r6,fine"]
    path = tmp_path / "stray.csv"
    path.write_text("\n".join(lines) + "\n")
    [chunk] = read_messages(path)
    assert chunk.rejects[["row_number", "reason", "raw"]].values.tolist() == [
        [1, "unterminated_quote", 'r1,"stray quote']]
    assert "runs 4 line(s) on into a CSV error" in chunk.rejects["detail"].iloc[0]
    assert chunk.texts == ["fine"] * 4 + ['she said "hi" twice', "fine"]


def test_a_quote_left_open_is_cut_at_the_record_limit(tmp_path):
    """A quote that a later line would close is still cut after 2 x --max-text-chars + 64 KiB."""
    filler = [f"r{i},{'x' * 99}" for i in range(1, 2001)]  # about 200 kB after the open quote
    path = tmp_path / "far.csv"
    path.write_text("\n".join(["id,text", 'r0,"opens here', *filler, 'r9,closes" late']) + "\n")
    chunks = list(read_messages(path, max_text_chars=1000))
    rejects = pd.concat([c.rejects for c in chunks])
    assert sum(c.rows_read for c in chunks) == 2002
    assert rejects["reason"].tolist()[0] == "unterminated_quote" and rejects["raw"].tolist()[0] == 'r0,"opens here'
    assert "67,536" in rejects["detail"].iloc[0]  # 2 x 1,000 + 65,536
    assert [t for c in chunks for t in c.texts][:2] == ["x" * 99] * 2  # the filler lines are rows again


def test_a_line_longer_than_any_record_is_cut_and_rejected(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("first\n" + "y" * 300_000 + "\nlast\n")
    chunks = list(read_messages(path, max_text_chars=1000))
    [reject] = pd.concat([c.rejects for c in chunks]).itertuples()
    assert chunks[0].texts == ["first", "last"] and reject.reason == "too_long"
    assert reject.raw == "y" * 1000 and "300,001 bytes" in reject.detail


PEAK_RSS = """
import json, resource, sys
from elmobatch.reading import read_messages

def read(path):
    n, longest = 0, 0
    for chunk in read_messages(path):
        n += chunk.rows_read
        longest = max([longest, *chunk.rejects["raw"].str.len()])
    return n, longest, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

print(json.dumps([read(sys.argv[1]), read(sys.argv[2])]))
"""


@pytest.mark.slow  # a subprocess importing TensorFlow
def test_memory_stays_bounded_with_an_early_unterminated_quote(tmp_path):
    """Peak memory of a real process reading a 12 MB file whose second line opens a quote that
    never closes: no higher than reading the same file without that quote (the old reader held
    the whole rest of the file as one field, several times over)."""
    body = [f"r{i},{'word ' * 19}{i}" for i in range(1, 130_001)]
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("\n".join(["id,text", "r0,no quote here", *body]) + "\n")
    bad.write_text("\n".join(["id,text", 'r0,"a quote that never closes', *body]) + "\n")
    assert bad.stat().st_size > 12 << 20
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(good), str(bad)], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True).stdout
    (n_good, _, peak_good), (n_bad, longest, peak_bad) = json.loads(out)
    assert (peak_bad - peak_good) * 1024 < 10 << 20  # ru_maxrss is in KiB
    assert n_good == n_bad == 130_001 and longest < 100


# ---- token-dense messages are rejected, not encoded for minutes ---------------------------------


def test_token_dense_messages_are_rejected_before_encoding(tmp_path, fixture_encoder):
    at_limit = " ".join(["w"] * DEFAULT_MAX_TOKENS)
    path = write_csv_input(tmp_path / "dense.csv", ["id", "text"],
                           [["a", "!?" * 10_000], ["b", "?!" * 10_000], ["c", at_limit], ["d", at_limit + " one"]])
    cache = EmbeddingCache(tmp_path / "cache")
    [(chunk, layers)] = list(file_vectors(path, fixture_encoder, cache))
    assert cache.computed == 1 and len(layers) == 1  # only the message at the limit reached the encoder
    assert len(tokenize(at_limit)) == DEFAULT_MAX_TOKENS and chunk.texts == [at_limit]
    rejects = chunk.rejects
    assert rejects["reason"].tolist() == ["too_many_tokens"] * 3 and rejects["row_number"].tolist() == [0, 1, 3]
    assert "--max-tokens 4,000" in rejects["detail"].iloc[0]


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_max_tokens_option_on_embed_and_score_and_the_job_key(tmp_path):
    path = write_csv_input(tmp_path / "m.csv", ["id", "text"],
                           [["a", "!?" * 200], ["b", " ".join(["word"] * 30)], ["c", "short one"]])
    result = cli("embed", path, "--out", tmp_path / "emb", "--model", FIXTURE, "--cache-dir", tmp_path / "cache",
                 "--max-tokens", 30)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "emb" / "_manifest.json").read_text())
    assert manifest["reject_reasons"] == {"too_many_tokens": 1} and manifest["options"]["max_tokens"] == 30
    table = pq.read_table(tmp_path / "emb" / "part-00000-000000.parquet")
    assert table.column("n_tokens").to_pylist() == [30, 2]  # exactly at the limit is embedded
    result = cli("score", path, "--out", tmp_path / "s.csv", "--cache-dir", tmp_path / "cache", "--max-tokens", 2)
    assert result.exit_code == 0, result.output
    assert pd.read_csv(tmp_path / "s.rejects.csv")["reason"].tolist() == ["too_many_tokens"] * 2
    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "j"\ninputs = ["m.csv"]\noutput = "out"\nmax_tokens = 0\n')
    with pytest.raises(JobSpecError, match=r"\[job\].max_tokens must be a positive whole number"):
        load_job(job)
    job.write_text('[job]\nname = "j"\ninputs = ["m.csv"]\noutput = "out"\ncache_dir = "cache"\nmax_tokens = 2\n')
    report = run_job(load_job(job), log=lambda line: None)
    assert (report.rows_scored, report.rows_rejected) == (1, 2)


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_max_tokens_reaches_train_evaluate_and_pretrain(tmp_path):
    rows = [["ham" if i % 2 else "spam", f"message number {i} " + "!" * (i % 3)] for i in range(40)]
    rows.append(["ham", "!?" * 50])
    path = write_csv_input(tmp_path / "l.csv", ["label", "text"], rows)
    common = ["--model", FIXTURE, "--cache-dir", tmp_path / "cache", "--max-tokens", 20]
    result = cli("train", path, "--label-column", "label", "--out", tmp_path / "head", "--epochs", 2, *common)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "head" / "head.json").read_text())["data"]["rows_rejected"] == 1
    result = cli("evaluate", path, "--label-column", "label", "--head", tmp_path / "head", "--out",
                 tmp_path / "report", *common[2:])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["rows_rejected"] == 1
    from elmobatch.training.corpus import read_corpus

    [info] = read_corpus([path], ReadOptions(text_column="text", max_tokens=20)).files
    assert info["rejected"] == {"too_many_tokens": 1} and info["messages"] == 40
    assert "--max-tokens" in cli("pretrain", "--help").output


# ---- duplicate ids, compressed files, invisible messages ----------------------------------------


def test_duplicate_ids_are_counted_and_warned_about(tmp_path):
    path = write_csv_input(tmp_path / "d.csv", ["id", "text"],
                           [["a", "one"], ["b", "two"], ["a", "three"], ["c", "four"], ["a", "five"]])
    result = cli("embed", path, "--out", tmp_path / "out", "--model", FIXTURE, "--cache-dir", tmp_path / "cache",
                 "--id-column", "id")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    assert manifest["counts"]["duplicate_ids"] == 2 and manifest["counts"]["rows_embedded"] == 5
    assert "warning: 2 row(s) repeat an id" in result.stderr and "'id'" in result.stderr
    result = cli("embed", path, "--out", tmp_path / "out2", "--model", FIXTURE, "--cache-dir", tmp_path / "cache")
    assert json.loads((tmp_path / "out2" / "_manifest.json").read_text())["counts"]["duplicate_ids"] == 0
    assert "warning" not in result.stderr


def test_duplicate_ids_counted_in_buckets_on_disk_match_in_memory(tmp_path):
    """Past `bucket_rows` the id hashes go to bucket files (memory bounded); the count is the same, across parts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from elmobatch.embedding.job import count_duplicate_ids

    parts = []
    for k in range(3):  # ids 0..999 in each part, plus 50 repeated inside part 2: 2,000 + 50 duplicates
        ids = [f"id{i}" for i in range(1000)] + ([f"id{i}" for i in range(50)] if k == 2 else [])
        parts.append(tmp_path / f"part-{k}.parquet")
        pq.write_table(pa.table({"id": ids}), parts[-1])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert count_duplicate_ids(parts) == 2050  # one bucket, in memory
    assert count_duplicate_ids(parts, scratch, bucket_rows=100) == 2050  # 31 buckets on disk
    assert list(scratch.iterdir()) == []  # bucket files removed


def test_gzip_bytes_named_csv_are_called_gzip(tmp_path):
    path = tmp_path / "day.csv"
    path.write_bytes(gzip.compress(b"id,text\n1,hello\n"))
    with pytest.raises(ReadError, match=r"day\.csv: the file is gzip-compressed .*1f 8b.*decompress it first"):
        read_messages(path)
    result = cli("embed", path, "--out", tmp_path / "out", "--model", FIXTURE, "--cache-dir", tmp_path / "cache")
    assert result.exit_code != 0 and "gzip-compressed" in result.output


def test_zero_width_messages_are_empty(tmp_path, fixture_encoder):
    invisible = ["\u200b\u200b", "\ufeff \u2060", "\u200c\u200d\t"]
    path = write_csv_input(tmp_path / "z.csv", ["id", "text"],
                           [[str(i), t] for i, t in enumerate([*invisible, "hi\u200b there"])])
    chunks = list(read_messages(path, reject_empty=True))
    assert chunks[0].texts == ["hi\u200b there"] and chunks[0].rejects["reason"].tolist() == ["empty_text"] * 3
    layers, n_tokens = EmbeddingCache(tmp_path / "cache").embed(fixture_encoder, [*invisible, "hi\u200b there"])
    assert n_tokens.tolist() == [0, 0, 0, 2]
    assert not layers[:3].any() and layers[3].any()
    assert tokenize("a \u200b b", "whitespace") == ["a", "b"]
