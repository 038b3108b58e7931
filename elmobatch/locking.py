"""One writer per output at a time: an exclusive `flock` on a lock file in the output
(`elmobatch run`: OUTPUT/.lock; `elmobatch embed`: DIR/.lock).

The kernel releases a flock when its process dies, however it dies (SIGKILL included), so a lock
left by a killed run is free for the next run. The lock file keeps the holder's pid and start time,
so a refused run can say who holds the lock, and a run that takes over from a killed one can say so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path

from elmobatch.errors import ElmobatchError
from elmobatch.storage import StoredPath


class LockHeld(ElmobatchError, RuntimeError):
    """Another live process holds the lock; `holder` is its record (pid, started)."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder

    def __reduce__(self):  # pickled (e.g. from a worker process) with its holder
        return type(self), (str(self), self.holder)


class JobLock:
    """Context manager: `with JobLock(path) as lock:`; `lock.took_over` names a dead holder, if any."""

    def __init__(self, path: str | Path, *, remove_on_exit: bool = False):
        self.path = Path(path)
        self.remove_on_exit = remove_on_exit  # drop the lock file on release (e.g. so its folder can go)
        self.took_over: dict | None = None
        self._fd: int | None = None

    def renew(self) -> None:
        """Nothing to do: a flock is held until released (ObjectLease's renew, for either lock)."""

    def holder(self) -> dict:
        """The lock file's record: {pid, started[, released]}; {} when absent, empty, unreadable or not ours."""
        try:
            return _read_record(self.path)
        except OSError:
            return {}

    def __enter__(self) -> JobLock:
        fd = self._lock_current_file()
        holder = self.holder()
        if holder.get("pid") and holder["pid"] != os.getpid() and not holder.get("released"):
            self.took_over = holder  # its process died without releasing: the kernel freed the flock
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
            os.fsync(fd)
        except BaseException:  # e.g. the disk is full: not held after all
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _lock_current_file(self) -> int:
        """flock the file at `path` now: a holder that removes its lock file on release may do so
        between our open and our flock, so the locked file must still be the one at `path`."""
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed between mkdir and open
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self.holder()
                raise LockHeld(f"{self.path}: another run holds the lock (pid {holder.get('pid', '?')}, "
                               f"started {holder.get('started', '?')})", holder) from None
            if self._is_current(fd):
                return fd
            os.close(fd)  # we locked a file its holder had just removed: try the new one

    def _is_current(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        if self.remove_on_exit:  # while still locked, so nobody takes a file about to vanish
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            return
        holder = self.holder()
        holder["released"] = True
        with contextlib.suppress(OSError):  # e.g. the disk is full: the next run then says it took over
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, json.dumps(holder).encode())
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def output_lock(path: Path | StoredPath) -> JobLock | ObjectLease:
    """One writer per output: a flock on a local lock file, a lease object on an object store (no locks there)."""
    return ObjectLease(path) if isinstance(path, StoredPath) else JobLock(path)


def _read_record(path, *, retries: int = 0) -> dict:
    """A lock's or lease's JSON record (path: a Path or a StoredPath); {} when absent, empty or not a
    record. A record that is not JSON is read again up to `retries` times first (0.2 s apart): an
    object store's reader can catch the end of one version after the size of another. Other read
    errors (OSError) are raised."""
    for attempt in range(retries + 1):
        try:
            text = path.read_text()
        except FileNotFoundError:
            return {}
        try:
            record = json.loads(text or "{}")
        except ValueError:
            if attempt < retries:
                time.sleep(TORN_READ_PAUSE)
                continue
            return {}
        return record if isinstance(record, dict) else {}
    return {}  # not reached: the last attempt returns


TORN_READ_RETRIES, TORN_READ_PAUSE = 5, 0.2
LEASE_SECONDS = 900  # how long a writer on another host counts as alive after its last renewal


class ObjectLease:
    """One writer per output prefix on an object store, which has no locks: a lease object.

    `with ObjectLease(out / ".lock") as lease:` reads the lease object; a holder still alive (on this
    host: its pid runs; elsewhere: renewed within LEASE_SECONDS) refuses this run with LockHeld.
    Else this run writes its own record {id, host, pid, started, renewed}, and reads it back.
    `renew()` (before each chunk) and `check()` (before the manifest) raise LockHeld when another
    run has since written its record: that run took over, and this one stops before committing.
    Two runs starting in the same instant can both pass the first check; the one whose record is
    overwritten finds out at its next renew or check, so it never writes the manifest or _SUCCESS.
    """

    def __init__(self, path, *, lease_seconds: float = LEASE_SECONDS):
        self.path = path  # a StoredPath
        self.lease_seconds = lease_seconds
        self.id = uuid.uuid4().hex
        self.took_over: dict | None = None
        self.record = {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def holder(self) -> dict:
        """The lease object's record; {} when absent. A store that cannot be read (network, access)
        raises: taking over a lease nobody could read would let two writers in. A record torn by a
        renewal read at the same moment is read again, not taken for "no holder"."""
        return _read_record(self.path, retries=TORN_READ_RETRIES)

    def __enter__(self) -> ObjectLease:
        holder = self.holder()
        if holder.get("id") and self._alive(holder):
            raise LockHeld(f"{self.path}: held by pid {holder.get('pid')} on {holder.get('host')}", holder)
        self.took_over = holder or None
        self.renew(first=True)
        return self

    def _alive(self, holder: dict) -> bool:
        """Renewed within the lease and, on this host, by a process still running (not this one:
        a restarted container can be given its dead predecessor's pid)."""
        if time.time() - float(holder.get("renewed", 0)) >= self.lease_seconds:
            return False
        if holder.get("host") == socket.gethostname():
            return holder.get("pid") != os.getpid() and _pid_alive(holder.get("pid"))
        return True

    def renew(self, first: bool = False) -> None:
        """Write this run's record with the time now, after checking it is still the holder."""
        if not first:
            self.check()
        self.path.write_text(json.dumps({**self.record, "renewed": time.time()}))
        self.check()

    def check(self) -> None:
        """Raise LockHeld when the lease object no longer names this run."""
        holder = self.holder()
        if holder.get("id") != self.id:
            raise LockHeld(f"{self.path}: another run took over this output (pid {holder.get('pid')} on "
                           f"{holder.get('host')})", holder)

    def __exit__(self, *exc) -> None:
        if self.holder().get("id") == self.id:
            self.path.unlink(missing_ok=True)


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
