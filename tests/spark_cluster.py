"""A real Spark standalone cluster on 127.0.0.1 for tests: one master and N workers, started with
pyspark's own launcher (`bin/spark-class`), each worker offering one core and 1 GiB.

    with standalone_cluster(tmp_dir, workers=2) as cluster:
        ... --master cluster.url ...

Every daemon runs with its working directory under `tmp_dir` and writes its log there; the
workers' executors (and their Python workers) run in `tmp_dir/work/<app-id>/<executor-id>`. Ports are
picked free at start. At the end every process whose working directory is under `tmp_dir` is
stopped (SIGTERM, then SIGKILL), and the exit fails if one is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pyspark

SPARK_HOME = Path(pyspark.__file__).parent  # the pip package carries bin/spark-class and the jars
REPO = Path(__file__).resolve().parents[1]  # the checkout under test: what executors' Python imports
HOST = "127.0.0.1"
START_TIMEOUT_S = 120  # measured: about 20 s on the 2-core development machine
STOP_TIMEOUT_S = 20


class ClusterError(RuntimeError):
    """The cluster did not come up (or did not go away): the message has the daemons' log tails."""


@dataclass
class Cluster:
    url: str  # spark://127.0.0.1:PORT
    ui: str  # the master's web UI, http://127.0.0.1:PORT
    base: Path
    work_dir: Path  # executors run in work_dir/<app-id>/<executor-id>
    daemons: list[subprocess.Popen]
    logs: list[Path]

    def state(self) -> dict:
        """The master's JSON status: workers, activeapps, completedapps, ..."""
        with urllib.request.urlopen(f"{self.ui}/json/", timeout=5) as response:
            return json.load(response)

    def alive_workers(self) -> int:
        return sum(w.get("state") == "ALIVE" for w in self.state().get("workers", []))

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(f"--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                         for log in self.logs if log.exists())


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports, all held until all are picked (the daemons bind theirs later)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def daemon_env(base: Path) -> dict[str, str]:
    """The daemons' environment (executors inherit it): loopback only, no stray Spark config, this
    checkout on the Python path, this interpreter for Python workers."""
    conf_dir = base / "conf"
    conf_dir.mkdir(exist_ok=True)
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_CONF_DIR": str(conf_dir), "SPARK_LOCAL_IP": HOST,
           "SPARK_LOCAL_DIRS": str(base / "local"), "SPARK_DAEMON_MEMORY": "256m", "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # a relative PYTHONPATH entry (the usual PYTHONPATH=.) would be read in an executor's own directory
    env["PYTHONPATH"] = os.pathsep.join(str(Path(p).absolute()) for p in env["PYTHONPATH"].split(os.pathsep))
    return env


def start_daemon(base: Path, name: str, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    log = base / f"{name}.log"
    with open(log, "wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], cwd=base, env=env,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own group: executors it starts are in it
    return process, log


@contextmanager
def standalone_cluster(base: Path, workers: int = 2, memory: str = "1g"):
    """Start a master and `workers` one-core workers under `base`; yield a Cluster once all are
    registered with the master; stop every process of theirs at the end."""
    base.mkdir(parents=True, exist_ok=True)
    base = base.resolve()  # compared with /proc/PID/cwd, which is resolved
    env = daemon_env(base)
    port, ui_port, *worker_ui_ports = free_ports(2 + workers)
    cluster = Cluster(url=f"spark://{HOST}:{port}", ui=f"http://{HOST}:{ui_port}", base=base,
                      work_dir=base / "work", daemons=[], logs=[])
    try:
        master = ["org.apache.spark.deploy.master.Master", "--host", HOST, "--port", str(port),
                  "--webui-port", str(ui_port)]
        _add(cluster, start_daemon(base, "master", master, env))
        for index, worker_ui_port in enumerate(worker_ui_ports):
            worker = ["org.apache.spark.deploy.worker.Worker", cluster.url, "--cores", "1", "--memory", memory,
                      "--host", HOST, "--webui-port", str(worker_ui_port), "--work-dir", str(cluster.work_dir)]
            _add(cluster, start_daemon(base, f"worker-{index}", worker, env))
        wait_for_workers(cluster, workers)
        yield cluster
    finally:
        stop_cluster(cluster)


def _add(cluster: Cluster, started: tuple[subprocess.Popen, Path]) -> None:
    cluster.daemons.append(started[0])
    cluster.logs.append(started[1])


def wait_for_workers(cluster: Cluster, count: int, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    alive = 0
    while time.monotonic() < deadline:
        dead = [p.args[1] for p in cluster.daemons if p.poll() is not None]
        if dead:
            raise ClusterError(f"Spark daemon {dead[0]} exited while starting\n{cluster.log_tails()}")
        try:
            alive = cluster.alive_workers()
        except (OSError, ValueError):  # the master's web UI is not up yet (or a page that is not its JSON)
            alive = 0
        if alive == count:
            return
        time.sleep(0.5)
    raise ClusterError(f"{alive} of {count} Spark workers registered with {cluster.url} after {timeout_s:.0f} s\n"
                       f"{cluster.log_tails()}")


# ---- processes, by /proc -----------------------------------------------------------------------


def processes_under(directory: Path) -> list[int]:
    """Pids of the processes whose working directory is `directory` or below it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone, or not ours to read
            continue
        if cwd == directory or directory in cwd.parents:
            found.append(int(entry.name))
    return found


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def executors(app_id: str) -> list[int]:
    """Pids of the executor JVMs of application `app_id`."""
    return [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in (line := command_line(pid))
            and app_id in line]


def signal_all(pids: list[int], sig: int) -> None:
    """Send `sig` to each pid that still exists."""
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop_cluster(cluster: Cluster) -> None:
    """SIGTERM the daemons (workers first: they stop their executors), then SIGKILL whatever of
    theirs is left, by working directory; fail if a process survives."""
    for process in reversed(cluster.daemons):
        signal_all([process.pid], signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in reversed(cluster.daemons):
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_all([process.pid], signal.SIGKILL)
            process.wait()
    while processes_under(cluster.base) and time.monotonic() < deadline:
        time.sleep(0.2)  # executors and Python workers notice their parent is gone
    signal_all(processes_under(cluster.base), signal.SIGKILL)
    time.sleep(0.5)
    left = [(pid, " ".join(command_line(pid))[:200]) for pid in processes_under(cluster.base)]
    if left:
        raise ClusterError(f"Spark processes left after stopping the cluster: {left}")
