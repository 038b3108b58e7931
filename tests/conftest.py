import json
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURE = SHARED / "fixtures" / "bilm_tiny"
SMS = SHARED / "data" / "sms_spam.csv"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not FIXTURE.is_dir():
        pytest.fail(f"{FIXTURE} is missing: tests need ../shared beside the checkout")
    return FIXTURE


@pytest.fixture(scope="session")
def fixture_sentences(fixture_dir) -> list[list[str]]:
    return [s.split() for s in json.loads((fixture_dir / "sentences.json").read_text())]


@pytest.fixture(scope="session")
def reference(fixture_dir):
    return np.load(fixture_dir / "reference.npz")


@pytest.fixture(scope="session")
def fixture_encoder(fixture_dir):
    from elmobatch import load_encoder

    return load_encoder(str(fixture_dir))


def tiny_options(**changes) -> dict:
    """Options of a small random biLM; keyword arguments override lstm or char_cnn keys."""
    options = {
        "char_cnn": {"activation": "relu", "embedding": {"dim": 4}, "filters": [[1, 4], [2, 8], [3, 8]],
                     "max_characters_per_token": 50, "n_characters": 262, "n_highway": 1},
        "lstm": {"cell_clip": 3, "dim": 24, "n_layers": 2, "proj_clip": 3, "projection_dim": 8,
                 "use_skip_connections": False},
    }
    for key, value in changes.items():
        section = "lstm" if key in options["lstm"] else "char_cnn"
        options[section][key] = value
    return options


def write_random_model(directory: Path, options: dict, seed: int = 0) -> Path:
    from elmobatch.encoding.bilm import BiLM, BiLMConfig

    bilm = BiLM(BiLMConfig.from_options(options), seed=seed)
    # Random weights large enough that every gate and clip is exercised.
    for var in bilm.variables_by_name.values():
        var.assign(var * 2.0 + 0.1)
    bilm.save(directory)
    return directory


@contextmanager
def mounted_tmpfs(mount_point: Path, size: str = "1m"):
    """A tmpfs of `size` mounted at `mount_point` for disk-full tests (the machine's tests run as
    root); the test is skipped where mounting is refused."""
    mount_point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs at tmp_path/scored, for an output that fills its disk."""
    with mounted_tmpfs(tmp_path / "scored") as mount_point:
        yield mount_point


def write_messages(path: Path, start: int, stop: int) -> Path:
    """Records start..stop of the reference file (one record per line there), with its header."""
    lines = SMS.read_bytes().split(b"\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join([lines[0]] + lines[1 + start : 1 + stop]) + b"\n")
    return path


@pytest.fixture(scope="module")
def head_dir(tmp_path_factory):
    """A head trained for 2 epochs on the first 400 reference rows with the fixture model."""
    from click.testing import CliRunner

    from elmobatch.cli import main

    out = tmp_path_factory.mktemp("head") / "head"
    train_file = write_messages(out.parent / "train.csv", 0, 400)
    result = CliRunner().invoke(main, ["train", str(train_file), "--label-column", "v1", "--model", str(FIXTURE),
                                       "--out", str(out), "--epochs", "2", "--cache-dir", str(out.parent / "cache")])
    assert result.exit_code == 0, result.output
    return out


def kill_after_placements(writer, count: int) -> list[str]:
    """Read a pausing writer's "placed NAME" lines (its stdout) and SIGKILL it once `count` files are
    in place; fail if it placed fewer. Returns the names placed."""
    import signal

    placed: list[str] = []
    try:
        for line in writer.stdout:
            placed += [line.split()[1]] if line.startswith("placed") else []
            if len(placed) == count:
                writer.send_signal(signal.SIGKILL)
                break
    finally:
        writer.kill()
        writer.wait()
    assert len(placed) == count, f"the writer renamed only {placed}"
    return placed


def kill_when(proc, ready, timeout: float = 240) -> None:
    """SIGKILL the running `proc` as soon as `ready()` is true (polled); fail if it ended first or
    `ready()` stays false for `timeout` seconds. The kill lands mid-run: check proc.returncode."""
    import signal
    import time

    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run did not get far enough in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    """A real Spark standalone cluster for the module: a master and two one-core, 1 GiB workers on
    127.0.0.1 (tests/spark_cluster.py; about 20-30 s to start), stopped with all its processes after."""
    pytest.importorskip("pyspark", reason="the Spark engine is an optional extra: pip install 'elmobatch[spark]'")
    from tests.spark_cluster import standalone_cluster

    with standalone_cluster(tmp_path_factory.mktemp("spark-cluster"), workers=2) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3 server (moto, on 127.0.0.1) with the bucket tests.s3_server.BUCKET, for the module;
    AWS_ENDPOINT_URL and dummy credentials are set meanwhile. Yields its pyarrow file system."""
    from tests.s3_server import moto_server

    with moto_server(tmp_path_factory.mktemp("moto")) as fs:
        yield fs


LONGEST_FILES = ("test_spark_cluster.py",)  # minutes on one process: a real cluster, started per file


def pytest_collection_modifyitems(config, items):
    """The longest test files first: `make test` hands whole files to 2 processes in collection
    order, so the other process works through the rest meanwhile instead of idling at the end."""
    items.sort(key=lambda item: item.path.name not in LONGEST_FILES)
