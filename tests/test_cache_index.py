"""The embedding cache's key index: a lookup touches only the segments holding its keys, the index
is rebuilt when lost or damaged and never trusted over the segments' checksums, several processes
write one cache safely, and compaction and pruning keep every vector they do not remove."""

import pytest
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from elmobatch.caching import EmbeddingCache
from elmobatch.caching.cache import DAY_NS, INDEX_DIR, INDEX_FILE, KeyIndex

FP = "ab" * 32  # a model fingerprint; these tests store synthetic vectors through the public API
ROOT = Path(__file__).resolve().parents[1]


def vectors_for(key: bytes) -> np.ndarray:
    """A key's synthetic vectors, (3 layers, 4 dims), different for every key."""
    return np.frombuffer(key[:12], np.uint8).astype(np.float32).reshape(3, 4)


def store(cache: EmbeddingCache, keys: list[bytes]) -> Path:
    path = cache.store(FP, keys, np.stack([vectors_for(k) for k in keys]), np.arange(len(keys), dtype=np.int32))
    assert path is not None
    return path


def make_keys(prefix: str, n: int) -> list[bytes]:
    import hashlib

    return [hashlib.sha256(f"{prefix}{i}".encode()).digest() for i in range(n)]


def assert_served(found: dict, keys: list[bytes]) -> None:
    assert set(found) == set(keys)
    for key in keys:
        np.testing.assert_array_equal(found[key][0], vectors_for(key))


def index_path(cache: EmbeddingCache) -> Path:
    return cache.model_dir(FP) / INDEX_DIR / INDEX_FILE


def test_a_lookup_reads_only_the_segments_holding_its_keys(tmp_path):
    writer = EmbeddingCache(tmp_path)
    batches = [make_keys(f"batch{b}-", 10) for b in range(30)]
    segments = [store(writer, keys) for keys in batches]
    for segment in segments[1:]:  # every segment but the first made unreadable
        data = bytearray(segment.read_bytes())
        data[:8] = b"DAMAGED!"
        segment.write_bytes(bytes(data))
    reader = EmbeddingCache(tmp_path)
    found = reader.lookup(FP, batches[0] + make_keys("never stored", 5))
    assert_served(found, batches[0])
    assert reader.corrupt == 0  # a scan of every segment would have met (and set aside) 29 damaged ones


def test_index_rebuilt_after_deletion_or_damage(tmp_path):
    cache = EmbeddingCache(tmp_path)
    keys = make_keys("k", 40)
    for start in range(0, 40, 10):
        store(cache, keys[start : start + 10])
    for damage in ("deleted", "garbage"):
        for path in index_path(cache).parent.glob(INDEX_FILE + "*"):
            path.unlink()
        if damage == "garbage":
            index_path(cache).write_bytes(b"not a database at all " * 500)
        fresh = EmbeddingCache(tmp_path)
        assert_served(fresh.lookup(FP, keys + make_keys("new", 3)), keys)
        assert fresh.corrupt == 0
        with sqlite3.connect(index_path(cache)) as db:
            assert db.execute("SELECT count(*) FROM entries").fetchone() == (40,)
            assert db.execute("SELECT count(*) FROM segments").fetchone() == (4,)


def test_a_wrong_index_row_never_serves_another_keys_vectors(tmp_path):
    keys = make_keys("k", 10)
    store(EmbeddingCache(tmp_path), keys)
    with sqlite3.connect(index_path(EmbeddingCache(tmp_path))) as db:
        db.execute("UPDATE entries SET row = (row + 1) % 10")  # every key points at its neighbour
    cache = EmbeddingCache(tmp_path)
    assert_served(cache.lookup(FP, keys), keys)  # the segment's own index row disagreed: checked whole
    assert cache.corrupt == 0
    with sqlite3.connect(index_path(cache)) as db:  # and the index was repaired
        rows = dict(db.execute("SELECT key, row FROM entries"))
    assert [rows[k] for k in keys] == list(range(10))


def test_damaged_data_found_through_the_index_is_set_aside(tmp_path):
    keys = make_keys("k", 10)
    segment = store(EmbeddingCache(tmp_path), keys)
    stat = segment.stat()
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # the last entry's vector, size and mtime kept: only its crc can tell
    segment.write_bytes(bytes(data))
    os.utime(segment, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cache = EmbeddingCache(tmp_path)
    assert cache.lookup(FP, keys) == {} and cache.corrupt == 1
    assert segment.with_name(segment.name + ".corrupt").exists()


def test_a_segment_no_writer_indexed_is_found_on_a_miss(tmp_path):
    cache = EmbeddingCache(tmp_path)
    first, later = make_keys("first", 5), make_keys("later", 5)
    store(cache, first)
    other = EmbeddingCache(tmp_path / "elsewhere")  # written without this directory's index, then moved in
    moved = store(other, later)
    moved.rename(cache.model_dir(FP) / moved.name)
    assert_served(EmbeddingCache(tmp_path).lookup(FP, first + later), first + later)


WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.test_cache_index import make_keys, store, FP, assert_served
from elmobatch.caching import EmbeddingCache
cache = EmbeddingCache(sys.argv[1])
go = Path(sys.argv[1]) / "go"
while not go.exists():
    time.sleep(0.01)
keys = make_keys(sys.argv[2], 400) + make_keys("shared", 200)
for start in range(0, len(keys), 20):
    batch = keys[start : start + 20]
    missing = [k for k in batch if k not in cache.lookup(FP, batch)]
    if missing:
        store(cache, missing)
assert_served(cache.lookup(FP, keys), keys)
print(cache.corrupt)
"""


def test_two_writer_processes_on_one_cache(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, str(ROOT)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("one", "two")]
    time.sleep(1)
    (tmp_path / "go").touch()  # both start writing together, once both have imported
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.strip() == "0"
    keys = make_keys("one", 400) + make_keys("two", 400) + make_keys("shared", 200)
    cache = EmbeddingCache(tmp_path)
    assert_served(cache.lookup(FP, keys), keys)
    with sqlite3.connect(index_path(cache)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM entries").fetchone() == (1000,)
    assert not list(cache.model_dir(FP).glob("*.corrupt"))


def test_compaction_keeps_every_vector_and_each_days_segments_apart(tmp_path):
    cache = EmbeddingCache(tmp_path)
    old, new = make_keys("old", 30), make_keys("new", 30)
    three_days_ago = time.time_ns() - 3 * DAY_NS
    for start in range(0, 30, 10):
        segment = store(cache, old[start : start + 10])
        os.utime(segment, ns=(three_days_ago, three_days_ago))
        store(cache, new[start : start + 10])
    store(cache, new[:5])  # stored twice
    before = EmbeddingCache(tmp_path)
    assert_served(before.lookup(FP, old + new), old + new)  # this object's index knows the old segments
    assert cache.compact() == {"segments_before": 7, "segments_after": 2}
    assert_served(before.lookup(FP, old + new), old + new)  # found again in the merged ones
    after = EmbeddingCache(tmp_path)
    assert_served(after.lookup(FP, old + new), old + new)
    assert after.corrupt == 0 and before.corrupt == 0
    ages = sorted(p.stat().st_mtime_ns for p in cache.segments(FP))
    assert ages[0] == three_days_ago  # a merged segment is as old as the newest it merged
    assert sum(m["vectors"] for m in after.models()) == 60


def test_prune_by_age_and_by_size(tmp_path):
    cache = EmbeddingCache(tmp_path)
    old, mid, new = make_keys("old", 10), make_keys("mid", 10), make_keys("new", 10)
    for keys, days in ((old, 10), (mid, 5), (new, 0)):
        segment = store(cache, keys)
        when = time.time_ns() - days * DAY_NS
        os.utime(segment, ns=(when, when))
    size = segment.stat().st_size
    assert cache.prune(older_than_days=7) == {"segments": 1, "vectors": 10, "bytes": size}
    assert_served(EmbeddingCache(tmp_path).lookup(FP, old + mid + new), mid + new)
    assert cache.prune(max_bytes=size) == {"segments": 1, "vectors": 10, "bytes": size}
    assert_served(EmbeddingCache(tmp_path).lookup(FP, old + mid + new), new)
    assert_served(cache.lookup(FP, old + mid + new), new)  # the pruning object forgot them too


def test_cache_commands_info_compact_prune(tmp_path):
    from click.testing import CliRunner

    from elmobatch.cli import main

    cache = EmbeddingCache(tmp_path)
    old, new = make_keys("old", 10), make_keys("new", 20)
    segment = store(cache, old)
    ten_days_ago = time.time_ns() - 10 * DAY_NS
    os.utime(segment, ns=(ten_days_ago, ten_days_ago))
    store(cache, new[:10])
    store(cache, new[10:])

    def cli(*args: str):
        return CliRunner().invoke(main, ["cache", *args, "--cache-dir", str(tmp_path)])

    info = cli("info")
    assert info.exit_code == 0, info.output
    [_, row, total] = info.output.strip().splitlines()
    assert row.split()[:4] == [FP[:16], "?", "30", "3"]  # no model.json: synthetic vectors, dim unknown
    assert total.startswith("1 model(s), 30 vectors, 3 segments, ") and total.endswith(str(tmp_path))
    compact = cli("compact")
    assert (compact.exit_code, compact.output.split()[:4]) == (0, ["segments", "3", "->", "2"])
    pruned = cli("prune", "--older-than", "7")
    assert pruned.exit_code == 0 and pruned.output.startswith("removed 1 segment(s), 10 vectors, ")
    assert_served(EmbeddingCache(tmp_path).lookup(FP, old + new), new)
    bad = cli("prune", "--max-size", "10Q")
    assert bad.exit_code == 2 and "Invalid value for '--max-size': '10Q': expected a size such as 500M" in bad.output
    assert cli("prune").exit_code == 2
    emptied = cli("prune", "--max-size", "0")
    assert emptied.exit_code == 0 and emptied.output.startswith("removed 1 segment(s), 20 vectors, ")
    assert "0 vectors, 0 segments" in cli("info").output


def test_a_job_file_prunes_the_cache_after_its_run(tmp_path):
    import json

    from click.testing import CliRunner

    from elmobatch.cli import main

    cache = EmbeddingCache(tmp_path / "cache")
    old, new = make_keys("old", 10), make_keys("new", 10)
    segment = store(cache, old)
    ten_days_ago = time.time_ns() - 10 * DAY_NS
    os.utime(segment, ns=(ten_days_ago, ten_days_ago))
    store(cache, new)
    job = tmp_path / "job.toml"
    spec = '[job]\nname = "nightly"\ninputs = ["in/*.csv"]\noutput = "out"\ncache_dir = "cache"\n'
    job.write_text(spec + 'cache_max_size = "ten gigs"\n')
    bad = CliRunner().invoke(main, ["run", str(job)])
    assert bad.exit_code == 2 and "[job].cache_max_size must be a size such as \"500M\"" in bad.output
    job.write_text(spec + "cache_prune_days = 7\n")
    result = CliRunner().invoke(main, ["run", str(job)])
    assert result.exit_code == 4, result.output  # no input files yet: nothing to do, and the cache is pruned
    last = json.loads((tmp_path / "out" / "_last_run.json").read_text())
    assert last["cache_pruned"]["segments"] == 1 and last["cache_pruned"]["vectors"] == 10
    assert_served(EmbeddingCache(tmp_path / "cache").lookup(FP, old + new), new)


KILLED_WRITER = """
import sys
sys.path.insert(0, sys.argv[2])
from tests.test_cache_index import make_keys, store
from elmobatch.caching import EmbeddingCache
cache = EmbeddingCache(sys.argv[1])
for batch in range(10_000):
    store(cache, make_keys(f"batch{batch}-", 50))
    print(batch, flush=True)
"""


def test_a_writer_killed_mid_store_leaves_a_cache_that_serves_every_finished_batch(tmp_path):
    import signal

    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(ROOT)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= 20:  # well into its loop: killed somewhere in a store or an index transaction
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = int(line) + 1
    cache = EmbeddingCache(tmp_path)
    keys = [k for b in range(finished) for k in make_keys(f"batch{b}-", 50)]
    assert_served(cache.lookup(FP, keys), keys)
    assert cache.corrupt == 0
    with sqlite3.connect(index_path(cache)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)



def open_index_when_told(directory: Path) -> None:
    while not (directory / "go").exists():
        pass
    KeyIndex(directory / "model").names()


@pytest.mark.slow  # measured >= 2 s on a quiet 2-core machine
def test_many_processes_open_a_fresh_index_at_once(tmp_path):
    # Switching a new SQLite file to WAL does not wait on the busy timeout; before the setup lock,
    # 6 processes opening one fresh index together failed with "database is locked" in about 1 trial of 8.
    fork = multiprocessing.get_context("fork")
    for trial in range(30):
        trial_dir = tmp_path / str(trial)
        trial_dir.mkdir()
        procs = [fork.Process(target=open_index_when_told, args=(trial_dir,)) for _ in range(6)]
        for proc in procs:
            proc.start()
        time.sleep(0.2)
        (trial_dir / "go").touch()
        for proc in procs:
            proc.join(timeout=120)
        assert [proc.exitcode for proc in procs] == [0] * 6, f"trial {trial}"
