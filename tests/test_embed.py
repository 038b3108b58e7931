"""`elmobatch embed` end to end with the tiny fixture model: reference file, broken file, SIGKILL, cache."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.embedding import read_embedding, read_layers
from elmobatch.reading import read_messages
from tests.conftest import FIXTURE, SMS, kill_when

ROOT = Path(__file__).resolve().parents[1]


def embed(*args, cache, expect_ok=True):
    result = CliRunner().invoke(main, ["embed", *map(str, args), "--model", str(FIXTURE), "--cache-dir", str(cache)])
    if expect_ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def manifest(out) -> dict:
    return json.loads((Path(out) / "_manifest.json").read_text())


def dataset(out) -> pa.Table:
    return ds.dataset(str(out), format="parquet", exclude_invalid_files=False).to_table().sort_by("id")


def rejects(out) -> pd.DataFrame:
    return ds.dataset(str(Path(out) / "_rejects"), format="parquet").to_table().to_pandas()


@pytest.fixture(scope="module")
def sms_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("sms")
    result = embed(SMS, "--out", base / "out", "--keep-text", "--vectors", "layers", cache=base / "cache")
    return base, result


@pytest.mark.slow  # embeds the whole 5,572-row reference file
def test_reference_file(sms_run, fixture_encoder):
    base, result = sms_run
    out = base / "out"
    counts = manifest(out)["counts"]
    assert counts["rows_read"] == counts["rows_embedded"] == 5572 and counts["rows_rejected"] == 0
    assert "rows_read 5,572 = rows_embedded 5,572 + rows_rejected 0" in result.output
    assert (out / "_SUCCESS").exists()
    assert sorted(p.name for p in out.iterdir()) == [".lock", "_SUCCESS", "_manifest.json", "_rejects",
                                                     "part-00000-000000.parquet"]
    dim = fixture_encoder.dim
    # pyarrow: the contract's types
    table = dataset(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), dim)
    assert table.schema.field("layers").type == pa.list_(pa.list_(pa.float32(), dim), 3)
    assert table.schema.field("row_number").type == pa.int64()
    assert table.num_rows == 5572 and len(set(table.column("id").to_pylist())) == 5572
    # the spilled row 95, rejoined with commas
    row = table.filter(pa.compute.equal(table["row_number"], 95)).to_pylist()[0]
    assert row["id"] == "sms_spam.csv:95" and row["source_file"] == "sms_spam.csv"
    assert row["text"] == ('Your free ringtone is waiting to be collected. Simply text the password \\MIX\\" to '
                           '85069 to verify. Get Usher and Britney. FML, PO Box 5249, MK17 92H. 450Ppw 16"')
    # vectors: embedding is the mean of the layers and matches the encoder directly
    layers, embedding = read_layers(table), read_embedding(table)
    np.testing.assert_allclose(embedding, layers.mean(axis=1), atol=1e-6)
    some = table.slice(0, 20)
    np.testing.assert_allclose(read_layers(some), fixture_encoder.embed_texts(some["text"].to_pylist(), layers=True),
                               atol=1e-5)
    # pandas, as a consumer would
    frame = pd.read_parquet(out)
    assert len(frame) == 5572
    first = frame["embedding"].iloc[0]
    assert isinstance(first, np.ndarray) and first.dtype == np.float32 and first.shape == (dim,)
    # DuckDB, as a consumer would
    con = duckdb.connect()
    glob = str(out / "*.parquet")
    n, ids, lengths, fps = con.execute(
        f"SELECT count(*), count(DISTINCT id), min(len(embedding)), count(DISTINCT model_fingerprint) "
        f"FROM read_parquet('{glob}')").fetchone()
    assert (n, ids, lengths, fps) == (5572, 5572, dim, 1)
    assert con.execute(f"SELECT count(*) FROM read_parquet('{out / '_rejects' / '*.parquet'}')").fetchone() == (0,)


@pytest.mark.slow  # the reference file twice more, from the cache
def test_second_run_computes_nothing(sms_run):
    base, _ = sms_run
    for out in (base / "again", base / "out"):  # a new directory, and rewriting a completed one
        embed(SMS, "--out", out, "--keep-text", "--vectors", "layers", cache=base / "cache")
        counts = manifest(out)["counts"]
        assert counts["computed"] == 0 and counts["cache_hits"] == counts["rows_embedded"] == 5572
    assert dataset(base / "again").equals(dataset(base / "out"))


BROKEN_LINES = [
    b"id,text,label",
    "1,caf\u00e9 au lait,ham".encode(),
    "2,na\u00efve r\u00e9sum\u00e9 \U0001F600,ham".encode(),
    b"3,bad bytes \xff\xfe here,spam",
    b"4,has a NUL \x00 inside,ham",
    b"5," + b"x" * 1_000_000 + b",spam",
    b"",
    b"6,only two fields",
    b"7,far,too,many,fields",
    b"8,,ham",
    "9,\u00fcber gut,ham".encode(),
    b"10,\"an unterminated quote,spam",
]


def test_broken_file_keeps_the_invariant(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_bytes(b"\n".join(BROKEN_LINES) + b"\n")
    result = embed(path, "--out", tmp_path / "out", "--id-column", "id", "--keep-text", "--chunk-rows", "4",
                   cache=tmp_path / "cache")
    m = manifest(tmp_path / "out")
    counts = m["counts"]
    assert counts == {"rows_read": 11, "rows_embedded": 4, "rows_rejected": 7, "cache_hits": 0, "computed": 4,
                      "duplicate_ids": 0}
    assert "rows_read 11 = rows_embedded 4 + rows_rejected 7" in result.output
    assert m["inputs"][0]["decisions"]["encoding"] == "utf-8"
    table = dataset(tmp_path / "out")
    assert table["id"].to_pylist() == ["1", "2", "8", "9"]
    assert table["text"].to_pylist() == ["caf\u00e9 au lait", "na\u00efve r\u00e9sum\u00e9 \U0001F600", "",
                                         "\u00fcber gut"]
    bad = rejects(tmp_path / "out").sort_values("row_number")
    assert dict(zip(bad["row_number"], bad["reason"], strict=True)) == {
        2: "undecodable", 3: "nul_byte", 4: "too_long", 5: "blank_line", 6: "column_count", 7: "column_count",
        10: "unterminated_quote"}
    raw = dict(zip(bad["row_number"], bad["raw"], strict=True))
    assert raw[2] == "3,bad bytes \\xff\\xfe here,spam" and raw[6] == "6,only two fields"
    assert raw[4] == "5," + "x" * 998 and raw[10] == '10,"an unterminated quote,spam'  # the long line: cut
    assert "1,000,008 bytes" in dict(zip(bad["row_number"], bad["detail"], strict=True))[4]
    assert (bad["source_file"] == "broken.csv").all() and (bad["detail"] != "").all()


def test_empty_messages_rejected_on_request(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("hello\n\nworld\n")
    embed(path, "--out", tmp_path / "a", cache=tmp_path / "cache")
    assert manifest(tmp_path / "a")["counts"]["rows_embedded"] == 3
    zero = dataset(tmp_path / "a").filter(pa.compute.equal(dataset(tmp_path / "a")["row_number"], 1))
    assert zero["n_tokens"].to_pylist() == [0] and not read_embedding(zero).any()
    embed(path, "--out", tmp_path / "b", "--reject-empty", cache=tmp_path / "cache")
    assert manifest(tmp_path / "b")["reject_reasons"] == {"empty_text": 1}


def test_clear_errors(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.me").write_text("x")
    result = embed(SMS, "--out", foreign, cache=tmp_path / "cache", expect_ok=False)
    assert result.exit_code != 0 and "not an elmobatch output directory" in result.output
    assert (foreign / "keep.me").exists()
    (tmp_path / "two.csv").write_text("subject,notes\nhi,there\n")
    result = embed(tmp_path / "two.csv", "--out", tmp_path / "o", cache=tmp_path / "cache", expect_ok=False)
    assert result.exit_code != 0 and "pass --text-column" in result.output and "subject, notes" in result.output


@pytest.mark.slow  # two CLI subprocesses, each importing TensorFlow
def test_sigkill_then_rerun_equals_clean_run(tmp_path):
    # 1,200 reference messages (UTF-8 now), 12 chunks of 100: killed after 3 chunks are recorded
    path = tmp_path / "part.csv"
    texts = [t for c in read_messages(SMS, chunk_rows=1200) for t in c.texts][:1200]
    pd.DataFrame({"label": "x", "text": texts}).to_csv(path, index=False)
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["embed", str(path), "--out", str(out), "--model", str(FIXTURE), "--cache-dir", str(cache),
            "--chunk-rows", "100"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "elmobatch.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: len(list((out / "_state").glob("part-*.json"))) >= 3)
    assert proc.returncode == -signal.SIGKILL and not (out / "_SUCCESS").exists()
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")
                if (out / "_state" / p.name.replace(".parquet", ".json")).exists()}
    assert len(finished) >= 3

    embed(*args[1:4], "--chunk-rows", "100", cache=cache)  # the same command again
    m = manifest(out)
    assert m["timings"]["chunks_resumed"] >= len(finished)
    assert m["timings"]["chunks_resumed"] + m["timings"]["chunks_written"] == 12
    for name, mtime in finished.items():  # finished chunks were not rewritten
        assert (out / name).stat().st_mtime_ns == mtime

    clean = tmp_path / "clean"
    embed(path, "--out", clean, "--chunk-rows", "100", cache=tmp_path / "fresh-cache")
    resumed, fresh = dataset(out), dataset(clean)
    assert resumed.num_rows == 1200 and len(set(resumed["id"].to_pylist())) == 1200
    assert resumed["id"].equals(fresh["id"]) and resumed["text_hash"].equals(fresh["text_hash"])
    assert resumed["n_tokens"].equals(fresh["n_tokens"])
    np.testing.assert_allclose(read_embedding(resumed), read_embedding(fresh), atol=1e-6)
    assert manifest(out)["counts"]["rows_embedded"] == manifest(clean)["counts"]["rows_embedded"] == 1200


def test_several_inputs_and_formats(tmp_path):
    (tmp_path / "a.csv").write_text("message,n\nhello there,1\nsecond one,2\n")
    (tmp_path / "b.jsonl").write_text('{"text": "from json", "n": 3}\n{"text": "hello there"}\n')
    (tmp_path / "c.txt").write_text("")  # an empty file: no rows, still a (empty) part
    result = embed(tmp_path / "a.csv", tmp_path / "b.jsonl", tmp_path / "c.txt", "--out", tmp_path / "out",
                   cache=tmp_path / "cache")
    m = manifest(tmp_path / "out")
    assert m["counts"] == {"rows_read": 4, "rows_embedded": 4, "rows_rejected": 0, "cache_hits": 1, "computed": 3,
                           "duplicate_ids": 0}
    assert [p["file"] for p in m["parts"]] == [f"part-0000{i}-000000.parquet" for i in range(3)]
    assert [i["decisions"]["text_column"] for i in m["inputs"]] == ["message", "text", "text"]
    assert dataset(tmp_path / "out")["id"].to_pylist() == ["a.csv:0", "a.csv:1", "b.jsonl:0", "b.jsonl:1"]
    assert "3 file(s)" in result.output
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.csv").write_text("text\nx\n")
    result = embed(tmp_path / "a.csv", tmp_path / "sub" / "a.csv", "--out", tmp_path / "o2", cache=tmp_path / "cache",
                   expect_ok=False)
    assert result.exit_code != 0 and "share the file name 'a.csv'" in result.output


def test_progress_lines():
    import io

    from elmobatch.embedding import Progress

    log, bar = io.StringIO(), io.StringIO()
    plain, tty = Progress(log, tty=False, every_s=0), Progress(bar, tty=True)
    for progress in (plain, tty):
        progress.update(500, 0.25)
        progress.update(2000, 1.0)
        progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "500 rows" in lines[0] and "25.0%" in lines[0] and "rows/s" in lines[0]
    assert "ETA" in lines[0] and "\r" not in log.getvalue()
    assert bar.getvalue().count("\r") == 2 and "[######" in bar.getvalue() and bar.getvalue().endswith("\n")
