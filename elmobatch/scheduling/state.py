"""Which input files a job has processed: path and checksum, in `_state.json` next to the output.

A file is new when its path is not in the state, and changed when its checksum differs; both are
processed. The checksum is recomputed only when size or mtime changed since it was recorded.
An input on an object store (s3://) is known by its URI, its size and last-modified time; an
output on one keeps `_state.json` as an object there, replaced whole by each upload.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from elmobatch.files import file_sha256, staging, write_atomically
from elmobatch.reading.inputs import stored_matches
from elmobatch.storage import StoredPath, as_path, is_object_uri


def write_json_atomically(path: Path | StoredPath, data) -> None:
    """`data` as JSON, written as write_text_atomically writes."""
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=True))


def write_text_atomically(path: Path | StoredPath, text: str) -> None:
    """A reader sees the old file or the new one, never part of one (written in `_tmp/` beside it;
    a stored object is uploaded whole to its name)."""
    if isinstance(path, StoredPath):
        write_atomically(path, lambda tmp: tmp.write_text(text))
        return
    with staging(path) as tmp_dir:
        write_atomically(path, lambda tmp: tmp.write_text(text), tmp_dir)


def matching_files(pattern: str) -> list[str]:
    """The files a job's input pattern names: local ones made absolute; s3:// ones by URI (an
    object, a prefix's objects, or a pattern in the key's last part; hidden and _ names skipped)."""
    if is_object_uri(pattern):
        path = as_path(pattern)
        assert isinstance(path, StoredPath)
        if not path.bucket_exists():
            raise FileNotFoundError(f"{pattern}: no such bucket {path.bucket!r} (or no access to it)")
        return stored_matches(path)
    return [os.path.abspath(p) for p in glob.glob(pattern) if os.path.isfile(p)]


def file_fingerprint(path: str, known: dict | None = None) -> dict:
    """{size, mtime_ns, sha256} of `path`; the sha256 is `known`'s while size and mtime are too."""
    stat = as_path(path).stat()
    unchanged = known and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns
    sha = known["sha256"] if known and unchanged else file_sha256(as_path(path))
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}


class JobState:
    def __init__(self, path: str | Path | StoredPath):
        self.path = as_path(path)
        try:
            self.files: dict[str, dict] = json.loads(self.path.read_text())["files"]
            if not isinstance(self.files, dict) or not all(isinstance(v, dict) for v in self.files.values()):
                raise TypeError("'files' is not an object of objects")
            unchecked = next((p for p, entry in self.files.items() if not isinstance(entry.get("sha256"), str)), None)
            if unchecked is not None:
                raise TypeError(f"the entry for {unchecked} has no 'sha256' string")
        except FileNotFoundError:
            self.files = {}
        except (ValueError, KeyError, TypeError) as exc:  # ValueError: bad JSON or bytes that are not text
            raise ValueError(f"{self.path}: unreadable job state ({exc}); "
                             "move it away to reprocess every input") from exc

    def pending(self, patterns: tuple[str, ...]) -> list[tuple[str, dict]]:
        """Files matching the globs that are new or changed, sorted, with their fingerprints."""
        paths = sorted({p for pattern in patterns for p in matching_files(pattern)})
        out = []
        for path in paths:
            fp = file_fingerprint(path, self.files.get(path))
            if self.files.get(path, {}).get("sha256") != fp["sha256"]:
                out.append((path, fp))
        return out

    def mark_done(self, path: str, fingerprint: dict, **details) -> None:
        """Record one processed file; written at once so a killed run keeps what it finished."""
        self.files[path] = {**fingerprint, **details}
        self.save()

    def save(self) -> None:
        """Write the state (a job's first run writes it before anything else: it marks the output as the job's)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.path, {"files": self.files})
