"""The chunked reader: formats, encodings, text-column choice, repairs and rejects (no model needed)."""

import codecs
import json

import pandas as pd
import pytest

from elmobatch.reading import ReadError, read_messages
from elmobatch.reading.reader import RECORD_SLACK
from tests.conftest import SMS


def read_all(path, **kwargs):
    reader = read_messages(path, **kwargs)
    chunks = list(reader)
    rows = pd.concat([c.rows.set_axis(c.row_numbers) for c in chunks])  # indexed by row number
    texts = [t for c in chunks for t in c.texts]
    rejects = pd.concat([c.rejects for c in chunks], ignore_index=True)
    return reader, rows, texts, rejects


def test_reference_file_latin1_fallback_and_spill_repair():
    reader, rows, texts, rejects = read_all(SMS, chunk_rows=1000)
    d = reader.decisions
    assert (d.encoding, d.text_column) == ("latin-1", "v2")
    assert "not UTF-8" in d.encoding_reason
    assert len(rows) == 5572 and len(rejects) == 0
    assert list(rows.index) == list(range(5572))
    # Row 95's text spilled over unquoted commas into the unnamed columns; rejoined with commas.
    assert texts[95].endswith("Get Usher and Britney. FML, PO Box 5249, MK17 92H. 450Ppw 16\"")
    assert texts[95].count(",") == 2
    # The row holds the text it was scored from, and the pieces are not kept twice.
    assert rows["v2"].tolist() == texts
    assert rows.loc[95, ["Unnamed: 2", "Unnamed: 3", "Unnamed: 4"]].tolist() == [""] * 3


def test_strict_encoding_rejects_undecodable_rows_and_keeps_the_invariant():
    reader, rows, texts, rejects = read_all(SMS, encoding="utf-8", chunk_rows=2000)
    assert reader.decisions.encoding == "utf-8"
    assert len(rows) + len(rejects) == 5572
    assert len(rejects) > 400 and set(rejects["reason"]) == {"undecodable"}
    assert rejects["raw"].str.contains("\\x", regex=False).all()  # the bad bytes stay visible


def test_chunks_are_bounded():
    chunks = list(read_messages(SMS, chunk_rows=500))
    assert [c.rows_read for c in chunks] == [500] * 11 + [72]
    assert [c.index for c in chunks] == list(range(12))
    assert chunks[-1].position == SMS.stat().st_size


def test_ambiguous_and_missing_columns_are_explained(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("subject,notes\nhello there,see you\n")
    with pytest.raises(ReadError, match="cannot tell which column holds the text.*subject, notes"):
        read_messages(path)
    path.write_text("text,message\nhello,there\n")
    with pytest.raises(ReadError, match="more than one column.*text, message"):
        read_messages(path)
    with pytest.raises(ReadError, match="--text-column 'nope' not found; columns are: text, message"):
        read_messages(path, text_column="nope")
    assert read_messages(path, text_column="message").decisions.text_column == "message"


def test_jsonl_rejects(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [json.dumps({"id": 1, "text": "fine"}), "{not json", "[1, 2]", json.dumps({"id": 4}),
             json.dumps({"id": 5, "text": 12}), "", json.dumps({"id": 7, "text": "ok\u00e9", "extra": [1]})]
    path.write_text("\n".join(lines) + "\n")
    reader, rows, texts, rejects = read_all(path, id_column="id")
    assert reader.decisions.text_column == "text"
    assert texts == ["fine", "oké"] and list(rows.index) == [0, 6]
    assert list(rows["id"]) == [1, 7]
    assert dict(zip(rejects["row_number"], rejects["reason"], strict=True)) == {
        1: "unparseable", 2: "unparseable", 3: "missing_text", 4: "not_text", 5: "blank_line"}


def test_a_table_read_as_json_lines_is_refused_saying_no_line_is_json(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("v1,v2\nham,hello\n\nspam,win\n")
    for text_column in (None, "v2"):  # it said "cannot tell which column holds the text; columns are: (none)"
        with pytest.raises(ReadError, match=r"m\.csv: no line is a JSON object \(the first: invalid JSON: .*\); "
                                            r"expected JSON Lines, one object per line; for a table, pass --format"):
            read_messages(path, fmt="jsonl", text_column=text_column)
    path.write_text("\n" + json.dumps({"text": "one object is enough"}) + "\n[1, 2]\n")
    assert read_messages(path, fmt="jsonl").decisions.columns == ["text"]
    path.write_text('{"text": "a lone surrogate \\ud800"}\n')  # an object, refused for another reason
    with pytest.raises(ReadError) as refused:
        read_messages(path, fmt="jsonl")
    assert "no line is a JSON object" not in str(refused.value)


def test_txt_empty_lines_are_messages_unless_rejected(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("first\n\nthird line\n")
    _, rows, texts, rejects = read_all(path)
    assert texts == ["first", "", "third line"] and len(rejects) == 0
    _, rows, texts, rejects = read_all(path, reject_empty=True)
    assert texts == ["first", "third line"] and list(rejects["reason"]) == ["empty_text"]
    assert list(rejects["row_number"]) == [1]


@pytest.mark.parametrize("damage", ["no footer", "cut short", "damaged page"])
def test_a_damaged_parquet_file_is_a_read_error_naming_it(tmp_path, damage):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"hello world {i}" for i in range(5000)]}), tmp_path / "ok.parquet",
                   row_group_size=1000)
    data = (tmp_path / "ok.parquet").read_bytes()
    damaged = {"no footer": b"PAR1garbage", "cut short": data[: len(data) // 2],
               "damaged page": data[:200] + bytes(300) + data[500:]}[damage]  # pyarrow: OSError, no errno
    (tmp_path / "bad.parquet").write_bytes(damaged)
    with pytest.raises(ReadError, match=r"bad\.parquet: not a readable Parquet file"):
        for _ in read_messages(tmp_path / "bad.parquet"):
            pass


def test_parquet_and_tsv(tmp_path):
    frame = pd.DataFrame({"key": ["a", "b", "c"], "body": ["one", None, "three\x00"]})
    frame.to_parquet(tmp_path / "m.parquet")
    _, rows, texts, rejects = read_all(tmp_path / "m.parquet")
    assert texts == ["one"] and list(rows["key"]) == ["a"]
    assert list(rejects["reason"]) == ["missing_text", "nul_byte"]
    (tmp_path / "m.tsv").write_text('sms\tlabel\n"quoted" as is\tham\na\tspam\textra\n')
    _, rows, texts, rejects = read_all(tmp_path / "m.tsv")
    assert texts == ['"quoted" as is'] and list(rejects["reason"]) == ["column_count"]
    (tmp_path / "s.tsv").write_text('label\tsms\nspam\ta\tspilled\n')  # text is last: a spill, rejoined
    _, rows, texts, _ = read_all(tmp_path / "s.tsv")
    assert texts == ["a\tspilled"] and rows["sms"].tolist() == texts  # the row holds the whole text too
    (tmp_path / "u.csv").write_text("label,v2,,\nspam,a,b,c,d\n")  # more pieces than unnamed columns
    _, rows, texts, _ = read_all(tmp_path / "u.csv")
    assert texts == ["a,b,c,d"] and rows.iloc[0].tolist() == ["spam", "a,b,c,d", "", ""]  # as scored


def test_a_byte_order_mark_is_dropped_at_the_start_of_the_file_only(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(codecs.BOM_UTF8 + 'text\n"a\n\ufeffb"\n\ufeffc\n'.encode())
    for given in (None, "utf-8"):
        reader, _, texts, _ = read_all(path, encoding=given)
        assert reader.decisions.columns == ["text"] and texts == ["a\n\ufeffb", "\ufeffc"]
    path.write_bytes(codecs.BOM_UTF8 + b"id,text\n1,caf\xe9\n")  # a mark, then Latin-1: not a column "\xef\xbb\xbfid"
    for given in (None, "latin-1", "utf-8"):
        reader, rows, texts, rejects = read_all(path, encoding=given)
        assert reader.decisions.columns == ["id", "text"] and len(rows) + len(rejects) == 1
    assert rejects["reason"].tolist() == ["undecodable"]  # strict UTF-8
    assert read_all(path)[0].decisions.encoding == "latin-1" and read_all(path)[2] == ["caf\xe9"]
    long_line = b"a" * (2 * 40 + RECORD_SLACK)  # past the most a record may hold, with the mark or without
    lines = tmp_path / "bom.txt"  # one message per line: the first line is a message
    lines.write_bytes(codecs.BOM_UTF8 + long_line + b" tail\nsecond\n")
    _, rows, texts, rejects = read_all(lines, max_text_chars=40)
    assert texts == ["second"] and list(rows.index) == [1] and rejects["reason"].tolist() == ["too_long"]


def test_jsonl_nested_too_deeply_is_an_unparseable_reject(tmp_path):
    path = tmp_path / "deep.jsonl"
    deep = '{"text": "deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path.write_text("\n".join([json.dumps({"text": "before"}), deep, json.dumps({"text": "after"})]) + "\n")
    _, _, texts, rejects = read_all(path, max_text_chars=500_000)
    assert texts == ["before", "after"]
    assert rejects["reason"].tolist() == ["unparseable"] and "nested too deeply" in rejects["detail"].iloc[0]


def test_jsonl_lone_surrogate_outside_the_text_is_an_invalid_unicode_reject(tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"text": "hi", "from": "\\ud83d"}\n{"text": "ok", "from": "me"}\n'
                    '{"text": "key", "\\udc00": 1}\n{"text": "nested", "tags": [{"a": "\\ud800"}]}\n')
    _, rows, texts, rejects = read_all(path)
    assert texts == ["ok"] and rows["from"].tolist() == ["me"]
    assert rejects["reason"].tolist() == ["invalid_unicode"] * 3 and rejects["row_number"].tolist() == [0, 2, 3]


def test_every_reject_keeps_at_most_1000_characters_of_raw(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("text,id\n" + f"{'w' * 5000},a\n" + "fine,b\n" + f"{'x' * 3000},c,extra\n")
    _, _, texts, rejects = read_all(path, max_text_chars=4000)
    assert texts == ["fine"]
    assert rejects["reason"].tolist() == ["too_long", "column_count"]
    assert rejects["raw"].str.len().tolist() == [1000, 1000]
    assert "(raw: its first 1,000 of 5,002 characters)" in rejects["detail"].iloc[0]
    assert "(raw: its first 1,000 of 3,008 characters)" in rejects["detail"].iloc[1]


def test_a_repeated_column_name_keeps_both_columns(tmp_path, caplog):
    """x, x: the second is x_, in a CSV header as in a Parquet schema (a dict per row lost the first),
    with one warning per file naming the renames."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    caplog.set_level("WARNING", logger="elmobatch")
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["hello"]), pa.array(["first"]), pa.array([2])],
                                 names=["id", "text", "x", "x"])
    pq.write_table(table, tmp_path / "twice.parquet")
    reader, rows, texts, _ = read_all(tmp_path / "twice.parquet")
    assert list(rows.columns) == ["id", "text", "x", "x_"] and rows.iloc[0].tolist() == ["a", "hello", "first", 2]
    assert reader.arrow_types["x"] == pa.string() and reader.arrow_types["x_"] == pa.int64() and texts == ["hello"]
    assert f"warning: {tmp_path / 'twice.parquet'}: repeated column name(s) renamed" in caplog.text
    assert "'x' -> 'x_'" in caplog.text
    (tmp_path / "twice.csv").write_text("id,text,x,x,x_\na,hello,first,second,third\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="elmobatch"):
        _, rows, _, _ = read_all(tmp_path / "twice.csv")
    assert list(rows.columns) == ["id", "text", "x", "x__", "x_"]  # the column named x_ keeps its name
    assert caplog.messages == [f"warning: {tmp_path / 'twice.csv'}: repeated column name(s) renamed, so every "
                               "column is kept: 'x' -> 'x__'"]
    assert rows.iloc[0].tolist()[2:] == ["first", "second", "third"]
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"]), pa.array(["c"])], names=["t", "t", "t_"]),
                   tmp_path / "taken.parquet")
    _, rows, texts, _ = read_all(tmp_path / "taken.parquet", text_column="t_")
    assert list(rows.columns) == ["t", "t__", "t_"] and texts == ["c"]



def test_a_file_of_mixed_encodings_read_as_latin1_is_warned_of(tmp_path, caplog):
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"id,text\n1,plain\n2,caf\xc3\xa9 (UTF-8)\n3,caf\xe9 (Latin-1)\n4,na\xefve (Latin-1)\n"
                     b"5,na\xc3\xafve (UTF-8)\n")
    with caplog.at_level("WARNING", logger="elmobatch"):
        reader, _, texts, _ = read_all(path)
    assert reader.decisions.encoding == "latin-1" and texts[1] == "caf\xc3\xa9 (UTF-8)"  # as documented: mojibake
    assert (f"warning: {path}: mixed encodings, read as latin-1: 2 line(s) are not UTF-8, but 2 (first at line 3) "
            "are") in caplog.text and "--encoding utf-8 reads those right" in caplog.text
    assert "--encoding latin-1 keeps this reading without this warning" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="elmobatch"):  # 482 lines not UTF-8, 1 that happens to decode: no warning
        assert read_all(SMS, chunk_rows=5000)[0].decisions.encoding == "latin-1"
    few = tmp_path / "few.csv"  # the same one line among the first 60 rows (1 of 9 non-ASCII lines): no warning
    few.write_bytes(b"".join(SMS.read_bytes().splitlines(keepends=True)[:61]))
    with caplog.at_level("WARNING", logger="elmobatch"):
        assert read_all(few)[0].decisions.encoding == "latin-1"
    marked = tmp_path / "marked.csv"  # a byte-order mark before Latin-1 text: the mark is no UTF-8 text
    marked.write_bytes(codecs.BOM_UTF8 + b"id,text\n1,caf\xe9\n2,na\xefve\n")
    with caplog.at_level("WARNING", logger="elmobatch"):
        assert read_all(marked)[2] == ["caf\xe9", "na\xefve"]
    assert "mixed encodings" not in caplog.text


def test_a_table_read_as_plain_text_says_how_to_read_it_as_a_table(tmp_path, caplog):
    """A CSV whose header names have spaces, named .txt (or piped in: no name), is one message per
    line, as documented; a note names the delimiter its lines share and --format csv."""
    table = tmp_path / "export.txt"
    table.write_text("Message ID,Message text\n1,hello there\n2,see you at 8\n")
    with caplog.at_level("WARNING", logger="elmobatch"):
        reader, _, texts, _ = read_all(table)
    assert reader.decisions.format == "txt" and texts == ["Message ID,Message text", "1,hello there", "2,see you at 8"]
    assert caplog.messages == [f"note: {table}: read as plain text, one message per line (its first line is not a "
                               "header of bare column names), though its lines split alike on comma ',' into 2 "
                               "fields; if it is a table, pass --format csv"]
    caplog.clear()
    prose = tmp_path / "prose.txt"
    prose.write_text("hello there\nsee you at 8, ok?\nfine\n")
    with caplog.at_level("WARNING", logger="elmobatch"):
        assert read_all(prose)[2] == ["hello there", "see you at 8, ok?", "fine"]
    assert caplog.messages == []


def test_an_unknown_extension_names_those_known_and_both_ways_out(tmp_path):
    """Met in a directory of inputs: --format alone would apply to every file, so leaving it out is said too."""
    (tmp_path / "notes.md").write_text("# notes\n")
    with pytest.raises(ReadError, match=r"notes\.md: cannot tell the format from the extension '\.md': expected one "
                                        r"of \.csv, .*\.txt; pass --format \(csv, tsv, jsonl, parquet, txt\) if it is "
                                        r"a message file \(--format applies to every input\), or leave it out"):
        read_messages(tmp_path / "notes.md")
