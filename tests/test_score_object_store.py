"""`elmobatch score` reading s3:// inputs and writing --out s3://, against a real S3 server (moto's
server mode on 127.0.0.1, fixture `s3`), with the tiny fixture model and a head trained with it."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from tests.conftest import FIXTURE, write_messages
from tests.s3_server import BUCKET, listing, put


def score(*args, cache: Path, head_dir: Path | None = None):
    head = ["--head", str(head_dir)] if head_dir else []
    return CliRunner().invoke(main, ["score", *map(str, args), *head, "--model", str(FIXTURE),
                                     "--cache-dir", str(cache)])


def scored(table):
    """A scored Parquet file's rows without its schema metadata (which records when it was written)."""
    return table.replace_schema_metadata(None)


def assert_same_scores(mine: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """The same rows, columns and labels; scores equal to float32 precision."""
    np.testing.assert_allclose(mine["score"].to_numpy(), theirs["score"].to_numpy(), atol=1e-6)
    pd.testing.assert_frame_equal(mine.drop(columns=["score"]), theirs.drop(columns=["score"]))


@pytest.mark.slow  # two scores through the model
def test_score_from_an_s3_object_to_an_s3_object_equals_the_local_score(s3, tmp_path, head_dir):
    day = write_messages(tmp_path / "day.csv", 0, 60)
    day.write_bytes(day.read_bytes() + b"ham,a NUL \x00 here,,,\n")  # a rejected row
    source = put(s3, "score-in/day.csv", day.read_bytes())

    local = score(day, "--out", tmp_path / "local" / "day.scored.parquet", head_dir=head_dir, cache=tmp_path / "c1")
    stored = score(source, "--out", f"s3://{BUCKET}/score-out/day.scored.parquet", head_dir=head_dir,
                   cache=tmp_path / "c2")
    assert local.exit_code == stored.exit_code == 0, stored.output + repr(stored.exception)
    assert (f"{source}: rows_read 61 = scored 60 + rejected 1 -> s3://{BUCKET}/score-out/day.scored.parquet"
            in stored.output), stored.output
    assert f"rejects -> s3://{BUCKET}/score-out/day.scored.rejects.parquet" in stored.output
    assert sorted(listing(s3, "score-out")) == ["day.scored.parquet", "day.scored.rejects.parquet"]
    mine = scored(pq.read_table(f"{BUCKET}/score-out/day.scored.parquet", filesystem=s3)).to_pandas()
    theirs = scored(pq.read_table(tmp_path / "local" / "day.scored.parquet")).to_pandas()
    assert len(mine) == 60 and set(mine["source_file"]) == {"day.csv"}
    assert_same_scores(mine, theirs)
    rejects = scored(pq.read_table(f"{BUCKET}/score-out/day.scored.rejects.parquet", filesystem=s3))
    assert rejects.equals(scored(pq.read_table(tmp_path / "local" / "day.scored.rejects.parquet")))
    assert rejects.num_rows == 1


@pytest.mark.slow  # two scores of two files through the model
def test_score_an_s3_prefix_of_two_objects_into_an_s3_prefix_as_a_local_directory(s3, tmp_path, head_dir):
    for name, (start, stop) in {"a.csv": (0, 30), "b.csv": (30, 70)}.items():
        put(s3, f"score-prefix-in/{name}", write_messages(tmp_path / "local-in" / name, start, stop).read_bytes())
    put(s3, "score-prefix-in/_skipped.csv", b"v1,v2\nham,not an input\n")

    local = score(tmp_path / "local-in", "--out", tmp_path / "local-out", head_dir=head_dir, cache=tmp_path / "c1")
    stored = score(f"s3://{BUCKET}/score-prefix-in/", "--out", f"s3://{BUCKET}/score-prefix-out", head_dir=head_dir,
                   cache=tmp_path / "c2")
    assert local.exit_code == stored.exit_code == 0, stored.output + repr(stored.exception)
    objects = listing(s3, "score-prefix-out")
    assert sorted(objects) == ["a.scored.csv", "a.scored.rejects.csv", "b.scored.csv", "b.scored.rejects.csv"]
    for name, rows in {"a": 30, "b": 40}.items():
        mine = pd.read_csv(io.BytesIO(objects[f"{name}.scored.csv"]), keep_default_na=False)
        theirs = pd.read_csv(tmp_path / "local-out" / f"{name}.scored.csv", keep_default_na=False)
        assert len(mine) == rows and set(mine["source_file"]) == {f"{name}.csv"}
        assert_same_scores(mine, theirs)
        rejects = f"{name}.scored.rejects.csv"
        assert objects[rejects] == (tmp_path / "local-out" / rejects).read_bytes()


def test_a_missing_object_or_bucket_is_one_clear_line(s3, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the current directory either
    source = write_messages(tmp_path / "m.csv", 0, 5)
    other = write_messages(tmp_path / "n.csv", 5, 10)
    cases = [([f"s3://{BUCKET}/score-in/missing.csv"], 2, f"s3://{BUCKET}/score-in/missing.csv: no such object"),
             (["s3://no-such-bucket/in.csv"], 2, "s3://no-such-bucket/in.csv: no such bucket 'no-such-bucket'"),
             ([f"s3://{BUCKET}/score-in/*.nothing"], 2, "matches no objects"),
             ([source, "--out", "s3://no-such-bucket/out"], 1,
              "--out s3://no-such-bucket/out: no such bucket 'no-such-bucket'"),
             ([source, other, "--out", f"s3://{BUCKET}/one.csv"], 2, "one output file for 2 inputs")]
    for args, code, message in cases:
        result = score(*args, cache=tmp_path / "c")  # refused before a head or model loads
        assert result.exit_code == code, result.output
        error = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(error) == 1 and message in error[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "n.csv"]
    assert s3.get_file_info(f"{BUCKET}/one.csv").type == pafs.FileType.NotFound


class _Interrupted(Exception):
    """Raised by a local file half-way through its upload (as Ctrl-C would be)."""


def test_an_upload_stopped_half_way_leaves_no_object_under_its_name(s3, tmp_path, monkeypatch):
    from elmobatch import storage
    from elmobatch.files import upload

    local = tmp_path / "big.csv"
    local.write_bytes(b"x" * (3 * storage.READ_BUFFER))
    class HalfRead(io.FileIO):
        """The local file, whose second block of reading raises."""

        reads = 0

        def read(self, size=-1):
            self.reads += 1
            if self.reads == 2:
                raise _Interrupted("stopped after the first block")
            return super().read(size)

    monkeypatch.setattr(storage, "open", lambda path, mode: HalfRead(path, mode), raising=False)
    target = storage.as_path(f"s3://{BUCKET}/scored/big.csv")
    with pytest.raises(_Interrupted):
        upload(local, target)
    assert listing(s3, "scored") == {}  # neither a cut-short big.csv nor the temporary object
    monkeypatch.undo()
    upload(local, target)
    assert listing(s3, "scored") == {"big.csv": local.read_bytes()}
    entries = s3.get_file_info(pafs.FileSelector(f"{BUCKET}/scored", recursive=True))
    assert [e.base_name for e in entries] == ["big.csv"]  # no empty marker of a temporaries' prefix either
