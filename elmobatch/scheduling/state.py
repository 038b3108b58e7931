"""Which input files a job has processed: path and checksum, in `_state.json` next to the output.

A file is new when its path is not in the state, and changed when its checksum differs; both are
processed. The checksum is recomputed only when size or mtime changed since it was recorded.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from elmobatch.files import file_sha256
from elmobatch.files import staging, write_atomically


def write_json_atomically(path: Path, data) -> None:
    """A reader sees the old file or the new one, never part of one (written in `_tmp/` beside it)."""
    with staging(path) as tmp_dir:
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)), tmp_dir)


class JobState:
    def __init__(self, path: str | Path):
        self.path = Path(path)
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

    def _fingerprint(self, path: str) -> dict:
        stat = os.stat(path)
        known = self.files.get(path)
        unchanged = known and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns
        sha = known["sha256"] if known and unchanged else file_sha256(Path(path))
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}

    def pending(self, patterns: tuple[str, ...]) -> list[tuple[str, dict]]:
        """Files matching the globs that are new or changed, sorted, with their fingerprints."""
        paths = sorted({os.path.abspath(p) for pattern in patterns for p in glob.glob(pattern) if os.path.isfile(p)})
        out = []
        for path in paths:
            fp = self._fingerprint(path)
            if self.files.get(path, {}).get("sha256") != fp["sha256"]:
                out.append((path, fp))
        return out

    def mark_done(self, path: str, fingerprint: dict, **details) -> None:
        """Record one processed file; written at once so a killed run keeps what it finished."""
        self.files[path] = {**fingerprint, **details}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.path, {"files": self.files})
