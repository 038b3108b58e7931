"""write_atomically and write_file_set: the old file(s) or the whole new ones, never part; no temporary left."""

import json
import os
from pathlib import Path

import pytest

from elmobatch.files import file_sha256, mismatched_files, write_atomically, write_file_set


def test_replaces_whole_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    write_atomically(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_the_rename_is_synced_after_the_file(tmp_path, monkeypatch):
    """A power cut after the commit keeps the new name: the folder holding it is fsynced after the rename."""
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append((Path(os.readlink(f"/proc/self/fd/{fd}")), (tmp_path / "state.json").exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    (tmp_path / "_tmp").mkdir()
    write_atomically(tmp_path / "state.json", lambda tmp: tmp.write_text("new"), tmp_dir=tmp_path / "_tmp")
    (tmp_file, _), (folder, renamed) = synced
    assert tmp_file.parent == tmp_path / "_tmp" and folder == tmp_path and renamed


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


def test_file_set_failing_before_its_manifest_keeps_the_old_set_and_no_temporaries(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old a")
    (tmp_path / "list.json").write_text('{"a.bin": "old"}')

    def fail(tmp):
        tmp.write_bytes(b"part")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_file_set(tmp_path, {"a.bin": lambda tmp: tmp.write_bytes(b"new a"), "b.bin": fail},
                       lambda shas: (tmp_path / "list.json").write_text(json.dumps(shas)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "list.json"]
    assert (tmp_path / "a.bin").read_bytes() == b"old a"

    recorded = {}
    write_file_set(tmp_path, {"a.bin": lambda tmp: tmp.write_bytes(b"new a")}, recorded.update)
    assert recorded == {"a.bin": file_sha256(tmp_path / "a.bin")} and mismatched_files(tmp_path, recorded) == []
    (tmp_path / "a.bin").write_bytes(b"other")
    assert mismatched_files(tmp_path, {**recorded, "../list.json": "x", "gone.bin": "y"}) == \
        ["a.bin", "../list.json", "gone.bin"]
