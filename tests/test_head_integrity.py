"""Heads are written as a unit (SIGKILL between their files never leaves a mix of old and new),
and a remote model is fetched only when the user names it: a head or a job file alone never makes
elmobatch send a request (a real HTTP server on 127.0.0.1 counts them)."""

import ctypes
import ctypes.util
import http.server
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from elmobatch.cli import main
from elmobatch.training.head import Head, HeadError, load_head, save_head
from tests.conftest import kill_after_placements, FIXTURE

REPO = Path(__file__).resolve().parents[1]

# Run in a subprocess: save a head over DIR, pausing after the K-th file renamed into place, so the
# test can SIGKILL it there. Every rename is announced on stdout ("placed NAME").
PAUSING_WRITER = """
import json, os, sys, time
import numpy as np
from elmobatch.training.head import Head, save_head

directory, weights_file, meta_file, pause_after = sys.argv[1:5]
real_replace, placed = os.replace, []

def replace_then_maybe_pause(src, dst):
    real_replace(src, dst)
    placed.append(dst)
    print("placed", os.path.basename(dst), flush=True)
    if len(placed) == int(pause_after):
        time.sleep(120)

os.replace = replace_then_maybe_pause
with np.load(weights_file) as npz:
    weights = {name: npz[name] for name in npz.files}
save_head(Head(weights, json.loads(open(meta_file).read())), directory)
print("done", flush=True)
"""


def random_head(seed: int, labels: list[str], threshold: float, spec: str = "default") -> Head:
    """A two-label head over 3 layers of 16 dims, hidden width 8, with random weights."""
    rng = np.random.default_rng(seed)
    shapes = {"layer_logits": (3,), "gamma": (), "mean": (3, 16), "std": (3, 16), "w1": (16, 8), "b1": (8,),
              "w2": (8, 1), "b2": (1,)}
    weights = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    weights["std"] = np.abs(weights["std"]) + 0.5
    return Head(weights, {"labels": labels, "threshold": threshold, "model": {"fingerprint": "ab" * 32, "spec": spec}})


def same_head(loaded: Head, expected: Head) -> bool:
    return (loaded.labels == expected.labels and loaded.threshold == expected.threshold
            and all(np.array_equal(loaded.weights[n], expected.weights[n]) for n in expected.weights))


@pytest.mark.slow  # writer subprocesses importing TensorFlow, SIGKILLed
@pytest.mark.parametrize("kill_after", [1, 2])
def test_head_killed_between_its_files_loads_old_or_new_whole_or_refuses(tmp_path, kill_after):
    old = random_head(0, ["ham", "spam"], 0.3)
    new = random_head(1, ["spam", "ham"], 0.7)  # the labels swapped: a mix would invert every label
    directory = save_head(old, tmp_path / "head")
    np.savez(tmp_path / "new.npz", **new.weights)
    (tmp_path / "new.json").write_text(json.dumps(new.meta))

    writer = subprocess.Popen([sys.executable, "-c", PAUSING_WRITER, str(directory), str(tmp_path / "new.npz"),
                               str(tmp_path / "new.json"), str(kill_after)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    placed = kill_after_placements(writer, kill_after)

    try:
        loaded = load_head(directory)
    except HeadError as exc:
        assert "head.npz" in str(exc) and "written only in part" in str(exc)
        return
    assert same_head(loaded, old) or same_head(loaded, new), \
        f"after a kill following {placed}: labels {loaded.labels} with weights of neither head whole"


def test_head_whose_weights_do_not_match_its_json_is_refused_naming_the_file(tmp_path):
    directory = save_head(random_head(0, ["ham", "spam"], 0.5), tmp_path / "a")
    other = save_head(random_head(1, ["ham", "spam"], 0.5), tmp_path / "b")
    (directory / "head.npz").write_bytes((other / "head.npz").read_bytes())
    with pytest.raises(HeadError, match=r"a/head.npz: missing or not the file whose sha256 head.json records"):
        load_head(directory)


class OpenCounter:
    """Counts how often the kernel sees files opened (inotify IN_OPEN), by any code: Python,
    numpy or the HDF5 C library alike."""

    IN_CLOSE_NOWRITE, IN_OPEN, IN_NONBLOCK = 0x10, 0x20, 0o4000

    def __init__(self, *paths: Path):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_NONBLOCK)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.watches = {self.libc.inotify_add_watch(self.fd, str(p).encode(),
                                                        self.IN_OPEN | self.IN_CLOSE_NOWRITE): p.name for p in paths}
        assert all(w >= 0 for w in self.watches)

    def counts(self) -> dict[str, int]:
        """{file name: opens since the watch began}."""
        found = dict.fromkeys(self.watches.values(), 0)
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            data = b""
        offset = 0
        while offset < len(data):  # struct inotify_event: int wd, u32 mask, u32 cookie, u32 len, name
            wd, mask, _, length = struct.unpack_from("iIII", data, offset)
            # closes are watched only so that two opens in a row are not merged into one event
            found[self.watches[wd]] += bool(mask & self.IN_OPEN)
            offset += 16 + length
        return found

    def close(self) -> None:
        os.close(self.fd)


def test_head_weights_are_read_once_so_the_checked_bytes_are_the_loaded_ones(tmp_path):
    directory = save_head(random_head(0, ["ham", "spam"], 0.5), tmp_path / "a")
    opens = OpenCounter(directory / "head.npz")
    try:
        head = load_head(directory)
        assert opens.counts() == {"head.npz": 1}
    finally:
        opens.close()
    assert head.labels == ["ham", "spam"]


@pytest.mark.slow  # loads a model (imports TensorFlow)
def test_model_files_are_read_once_so_the_checked_bytes_are_the_loaded_ones(tmp_path):
    from elmobatch import load_encoder
    from elmobatch.files import file_sha256

    model = tmp_path / "model"
    model.mkdir()
    for name in ("options.json", "weights.hdf5"):
        (model / name).write_bytes((FIXTURE / name).read_bytes())
    (model / "model.json").write_text(json.dumps({"files": {n: file_sha256(model / n)
                                                            for n in ("options.json", "weights.hdf5")}}))
    opens = OpenCounter(model / "options.json", model / "weights.hdf5")
    try:
        encoder = load_encoder(str(model))
        assert opens.counts() == {"options.json": 1, "weights.hdf5": 1}
    finally:
        opens.close()
    assert encoder.embed_texts(["hello there"]).shape == (1, encoder.dim)


# ---- no implicit network access -------------------------------------------------------------


@pytest.fixture
def http_server(monkeypatch, tmp_path):
    """A real HTTP server on 127.0.0.1 that answers 404 and records each request's path."""
    requests: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    yield f"http://127.0.0.1:{server.server_address[1]}/x.tar.gz", requests
    server.shutdown()
    server.server_close()


def messages_file(tmp_path: Path) -> Path:
    path = tmp_path / "incoming" / "day.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("v1,v2\nham,see you at 8\nspam,WIN a prize now\n")
    return path


def test_a_head_naming_a_url_never_makes_score_fetch_it(tmp_path, http_server):
    url, requests = http_server
    head = save_head(random_head(0, ["ham", "spam"], 0.5, spec=url), tmp_path / "head")
    data = messages_file(tmp_path)
    result = CliRunner().invoke(main, ["score", str(data), "--head", str(head), "--out", str(tmp_path / "out.csv"),
                                       "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 1
    assert f"{head / 'head.json'}: names the remote model '{url}'" in result.output
    assert "pass --model" in result.output
    assert requests == []
    assert not (tmp_path / "out.csv").exists()

    # The server is real: naming the URL on the command line is the opt-in, and it is fetched.
    named = CliRunner().invoke(main, ["score", str(data), "--head", str(head), "--model", url,
                                      "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out.csv")])
    assert named.exit_code == 1 and "404" in named.output
    assert requests == ["/x.tar.gz?tf-hub-format=compressed"]


def test_a_local_model_named_by_the_head_is_still_used(tmp_path):
    from elmobatch.scoring.score import head_model_spec

    head = random_head(0, ["ham", "spam"], 0.5, spec=str(FIXTURE))
    assert head_model_spec(head, tmp_path) == str(FIXTURE)
    assert head_model_spec(random_head(0, ["ham", "spam"], 0.5, spec="default"), tmp_path) == "default"


def write_job(tmp_path: Path, head: Path, model: str, *extra: str) -> Path:
    job = tmp_path / "job.toml"
    job.write_text("\n".join(["[job]", 'name = "remote"', 'inputs = ["incoming/*.csv"]', 'output = "scored"',
                              f'model = "{model}"', f'head = "{head}"', 'cache_dir = "cache"', *extra]) + "\n")
    return job


def test_a_job_file_fetches_a_url_model_only_with_allow_remote_model(tmp_path, http_server):
    url, requests = http_server
    head = save_head(random_head(0, ["ham", "spam"], 0.5), tmp_path / "head")
    messages_file(tmp_path)
    refused = CliRunner().invoke(main, ["run", str(write_job(tmp_path, head, url)), "--date", "2026-05-01"])
    assert refused.exit_code == 2
    assert f"[job].model '{url}' is a URL, fetched only with allow_remote_model = true" in refused.output
    assert requests == []
    assert not (tmp_path / "scored").exists()

    bad_flag = CliRunner().invoke(main, ["run", str(write_job(tmp_path, head, url, 'allow_remote_model = "yes"'))])
    assert bad_flag.exit_code == 2 and "[job].allow_remote_model must be true or false" in bad_flag.output
    assert requests == []

    allowed = CliRunner().invoke(main, ["run", str(write_job(tmp_path, head, url, "allow_remote_model = true")),
                                        "--date", "2026-05-01"])
    assert allowed.exit_code == 1 and "404" in allowed.output
    assert requests == ["/x.tar.gz?tf-hub-format=compressed"]
