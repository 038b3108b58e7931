"""write_atomically: the old file or the whole new one, never part of one; no temporary left."""

import pytest

from elmobatch.files import write_atomically


def test_replaces_whole_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    write_atomically(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_failed_write_keeps_old_file_and_removes_temporary(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")

    def half_write(tmp):
        tmp.write_text("ne")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(target, half_write)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_temporary_goes_to_tmp_dir(tmp_path):
    staging, seen = tmp_path / "_tmp", []
    staging.mkdir()
    write_atomically(tmp_path / "part.parquet", lambda tmp: seen.append(tmp) or tmp.write_bytes(b"x"), staging)
    assert seen[0].parent == staging and seen[0].name.startswith(".tmp-")
    assert (tmp_path / "part.parquet").read_bytes() == b"x"
