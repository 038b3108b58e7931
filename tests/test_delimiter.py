"""Delimiter detection for CSV, TSV and .txt files with a header (, ; tab |), recorded in the manifest
with its reason; an ambiguous file is refused naming --delimiter; `embed` and `score` take --delimiter."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.reading import ReadError, read_messages
from tests.conftest import FIXTURE, SMS

SEMICOLONS = "id;message;channel\n1;hello there, friend;sms\n"  # the example a new user tried
AMBIGUOUS = "a,b;c,d\n1,2;3,4\n5,6;7,8\n"  # `,` (3 columns) and `;` (2 columns) both fit


def embed(tmp_path, path, *args):
    return CliRunner().invoke(main, ["embed", str(path), "--out", str(tmp_path / "out"), "--model", str(FIXTURE),
                                     "--cache-dir", str(tmp_path / "cache"), "--keep-text", *args])


def test_semicolon_csv_is_split_into_its_columns_and_the_choice_is_in_the_manifest(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(SEMICOLONS)
    result = embed(tmp_path, path)
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(tmp_path / "out")
    assert rows["text"].tolist() == ["hello there, friend"]  # not "1;hello there, friend;sms"
    decisions = json.loads((tmp_path / "out" / "_manifest.json").read_text())["inputs"][0]["decisions"]
    assert decisions["columns"] == ["id", "message", "channel"] and decisions["text_column"] == "message"
    assert decisions["delimiter"] == ";"
    assert decisions["delimiter_reason"].startswith("detected: semicolon ';' splits the header into 3 columns")


def test_an_ambiguous_file_is_refused_naming_delimiter_and_the_option_settles_it(tmp_path):
    path = tmp_path / "amb.csv"
    path.write_text(AMBIGUOUS)
    refused = embed(tmp_path, path)
    assert refused.exit_code == 1
    assert "cannot tell the delimiter: comma ',' (3 columns), semicolon ';' (2 columns)" in refused.output
    assert refused.output.strip().endswith("pass --delimiter")
    assert not (tmp_path / "out").exists()
    given = embed(tmp_path, path, "--delimiter", ",")
    assert given.exit_code == 0, given.output
    assert pd.read_parquet(tmp_path / "out")["text"].tolist() == ["2;3", "6;7"]
    decisions = json.loads((tmp_path / "out" / "_manifest.json").read_text())["inputs"][0]["decisions"]
    assert (decisions["delimiter"], decisions["delimiter_reason"]) == (",", "given (--delimiter)")


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_score_detects_the_semicolons_and_takes_delimiter(tmp_path):
    semicolons, ambiguous = tmp_path / "s.csv", tmp_path / "amb.csv"
    semicolons.write_text(SEMICOLONS)
    ambiguous.write_text(AMBIGUOUS)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(main, ["score", str(semicolons), "--out", str(tmp_path / "s.scored.csv"), *cache])
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(tmp_path / "s.scored.csv", dtype=str)
    assert list(scored.columns[:3]) == ["id", "message", "channel"]
    assert scored["message"].tolist() == ["hello there, friend"] and scored["label"].iloc[0] in ("ham", "spam")
    refused = CliRunner().invoke(main, ["score", str(ambiguous), *cache])
    assert refused.exit_code == 1 and "pass --delimiter" in refused.output
    given = CliRunner().invoke(main, ["score", str(ambiguous), "--delimiter", ",", "--out",
                                      str(tmp_path / "amb.scored.csv"), *cache])
    assert given.exit_code == 0, given.output
    assert pd.read_csv(tmp_path / "amb.scored.csv", dtype=str)["b;c"].tolist() == ["2;3", "6;7"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_each_delimiter_is_detected_in_csv_and_tsv(tmp_path, delimiter):
    for suffix in (".csv", ".tsv"):
        path = tmp_path / f"m{suffix}"
        text = " ".join(f"x{other}y" for other in (",", ";", "\t", "|") if other != delimiter)  # the others
        path.write_text(delimiter.join(["id", "text", "channel"]) + "\n" + delimiter.join(["1", text, "sms"]) + "\n")
        reader = read_messages(path)
        assert reader.decisions.delimiter == delimiter, (suffix, reader.decisions.delimiter_reason)
        assert reader.decisions.columns == ["id", "text", "channel"]
        assert next(iter(reader)).texts == [text]


def test_a_txt_with_a_header_is_delimited_and_plain_text_stays_one_message_per_line(tmp_path):
    with_header = tmp_path / "s.txt"
    with_header.write_text(SEMICOLONS)
    reader = read_messages(with_header)
    assert reader.decisions.format == "csv" and reader.decisions.delimiter == ";"
    assert next(iter(reader)).texts == ["hello there, friend"]
    plain = tmp_path / "plain.txt"
    plain.write_text("Hi, how are you\nOk; see you|later\n")
    reader = read_messages(plain)
    assert (reader.decisions.format, reader.decisions.delimiter) == ("txt", None)
    assert next(iter(reader)).texts == ["Hi, how are you", "Ok; see you|later"]


def test_the_reference_file_stays_comma_separated():
    decisions = read_messages(SMS).decisions
    assert decisions.delimiter == "," and decisions.delimiter_reason.startswith("detected: comma ','")
    assert decisions.columns[:2] == ["v1", "v2"]


def test_a_bad_delimiter_option_is_one_clear_error(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(SEMICOLONS)
    with pytest.raises(ReadError, match=r"--delimiter ';;': expected one character"):
        read_messages(path, delimiter=";;")
