"""A real S3 server for the tests: moto's server mode as a subprocess on a free port of 127.0.0.1,
with the bucket BUCKET (fixture `s3` in conftest.py), and helpers to put and list its objects."""

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs
import pytest

BUCKET = "elmobatch-test"
# what a process (or a Spark executor) needs to reach the server: set while the server runs
AWS_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(log_dir: Path) -> Iterator[pafs.S3FileSystem]:
    """A moto S3 server with the bucket BUCKET; AWS_ENDPOINT_URL and dummy credentials set meanwhile.
    Yields the pyarrow file system for it."""
    port = _free_port()
    with open(log_dir / "moto.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            endpoint = f"http://127.0.0.1:{port}"
            _wait_until_up(server, endpoint)
            with pytest.MonkeyPatch.context() as env:
                env.setenv("AWS_ENDPOINT_URL", endpoint)
                env.setenv("AWS_ACCESS_KEY_ID", "testing")
                env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
                env.setenv("AWS_REGION", "us-east-1")
                env.setenv("AWS_CONFIG_FILE", "/nonexistent")  # no ~/.aws settings of this machine
                env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
                fs = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", allow_bucket_creation=True)
                fs.create_dir(BUCKET)
                yield fs
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_until_up(server: subprocess.Popen, endpoint: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.2)


def put(fs, key: str, data: bytes) -> str:
    """Upload `data` as BUCKET/key; returns its s3:// URI."""
    with fs.open_output_stream(f"{BUCKET}/{key}", compression=None) as f:
        f.write(data)
    return f"s3://{BUCKET}/{key}"


def keys(fs, prefix: str) -> list[str]:
    """The keys of every object under the prefix, relative to it (no object is read: safe while a
    writer replaces and deletes objects)."""
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return [i.path.removeprefix(f"{BUCKET}/{prefix}/") for i in infos if i.type == pafs.FileType.File]


def listing(fs, prefix: str) -> dict[str, bytes]:
    """Every object under the prefix: {key: bytes}. One deleted between the listing and its reading (a
    live writer's temporary, copied to its name) is left out."""
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    found = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            try:
                with fs.open_input_stream(info.path, compression=None) as f:
                    found[info.path.removeprefix(f"{BUCKET}/{prefix}/")] = f.read()
            except FileNotFoundError:
                continue
    return found
