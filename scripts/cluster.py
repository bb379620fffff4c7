"""A two-node saturn cluster on one machine: PostgreSQL, Redis and Airflow with the CeleryExecutor.

Started on loopback, every process in its own session and stopped by its PID:
  PostgreSQL (Debian's server binaries; databases `airflow`, Airflow's metadata, and `saturn`, the store)
  Redis (the Celery broker)
  Airflow: api-server, scheduler, dag-processor, triggerer, one worker for the `default` queue and
  one worker per node consuming only that node's queue, with `[saturn] node` / `device_ids` set so
  that two workers on one machine act as two nodes on disjoint devices.

The end-to-end test drives it from Python (tests/e2e/test_celery_e2e.py); `./scripts/demo.sh --cluster`
drives it from the shell:

    python scripts/cluster.py start --home DIR [--nodes node0=0,node1=1] [--port P]   # writes DIR/env.sh, DIR/pids
    python scripts/cluster.py stop --home DIR
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
DEFAULT_QUEUE = "default"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> str:
    """Debian puts the server binaries (initdb, pg_ctl) outside PATH: /usr/lib/postgresql/<v>/bin."""
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found and os.path.exists(os.path.join(os.path.dirname(os.path.realpath(found)), "initdb")):
            return os.path.dirname(os.path.realpath(found))
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not dirs:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install -y postgresql (scripts/setup-cluster.sh)")
    return os.path.dirname(dirs[-1])


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (training ranks run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                data = f.read()
            p = int(stat.split("/")[2])
            ppid = int(data.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(pid: int, sig: int = signal.SIGTERM) -> list[int]:
    """Signal `pid` and all its descendants (found first, so none escapes by re-parenting); return them."""
    pids = [pid] + descendants(pid)
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return pids


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


class Postgres:
    """A PostgreSQL server of our own in `folder`, on 127.0.0.1:`port` (trust auth, loopback only)."""

    def __init__(self, folder: str, port: int):
        self.folder, self.port = os.path.abspath(folder), port
        self.data = os.path.join(self.folder, "data")
        self.sock = os.path.join(self.folder, "sock")
        self.pid: Optional[int] = None
        self._own_folder: Optional[str] = None  # a /tmp folder made because `folder` was out of reach

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd

    def start(self) -> int:
        """initdb (first time), start, wait until it accepts connections; return the server's PID."""
        bindir = pg_bindir()
        os.makedirs(self.sock, exist_ok=True)
        if os.geteuid() == 0:  # initdb refuses root: the data folder belongs to the postgres user
            pw = pwd.getpwnam("postgres")
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
            if subprocess.run(self._as_postgres(["test", "-w", self.folder])).returncode != 0:
                # a parent folder the postgres user cannot enter (e.g. a 0700 temp dir): use /tmp
                self.folder = self._own_folder = tempfile.mkdtemp(prefix="saturn-pg-", dir="/tmp")
                self.data, self.sock = os.path.join(self.folder, "data"), os.path.join(self.folder, "sock")
                os.makedirs(self.sock, exist_ok=True)
            os.makedirs(self.data, exist_ok=True)
            for d in (self.folder, self.sock, self.data):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            subprocess.run(self._as_postgres([f"{bindir}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                                              "-E", "UTF8", "--locale=C.UTF-8"]),
                           check=True, capture_output=True, timeout=120)
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c max_connections=300 -c fsync=off"
        subprocess.run(self._as_postgres([f"{bindir}/pg_ctl", "-D", self.data, "-l",
                                          os.path.join(self.folder, "postgres.log"), "-w", "-t", "60", "-o", opts,
                                          "start"]), check=True, capture_output=True, timeout=120)
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())
        return self.pid

    def psql(self, sql: str) -> str:
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                              "-v", "ON_ERROR_STOP=1", "-tAc", sql], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def create_database(self, name: str) -> str:
        """A role and a database both called `name` (password = name); returns its SQLAlchemy URL."""
        self.psql(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
                  f"CREATE ROLE {name} LOGIN PASSWORD '{name}'; END IF; END $$;")
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip() != "1":
            self.psql(f"CREATE DATABASE {name} OWNER {name}")
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql+psycopg2://{name}:{name}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.pid and alive(self.pid):
            os.kill(self.pid, signal.SIGINT)  # fast shutdown
            if wait_gone([self.pid], 30):
                kill_tree(self.pid, signal.SIGKILL)
        if self._own_folder:
            shutil.rmtree(self._own_folder, ignore_errors=True)


class Cluster:
    """Services + Airflow (Celery) of a one-machine cluster of `nodes` {name: device ids}."""

    def __init__(self, home: str, nodes: dict[str, list[int]], *, port: Optional[int] = None,
                 pg_port: Optional[int] = None, redis_port: Optional[int] = None,
                 dags_folder: Optional[str] = None, parallelism: int = 16, extra_env: Optional[dict] = None,
                 venv_bin: Optional[str] = None, worker_concurrency: Optional[int] = None):
        self.home = os.path.abspath(home)
        self.nodes = {k: list(v) for k, v in nodes.items()}
        self.port = port or free_port()
        self.pg_port = pg_port or free_port()
        self.redis_port = redis_port or free_port()
        self.dags_folder = dags_folder or str(ROOT / "dags")
        self.parallelism = parallelism
        self.extra_env = dict(extra_env or {})
        self.venv_bin = venv_bin or str(Path(sys.executable).parent)
        self.worker_concurrency = worker_concurrency
        self.procs: dict[str, subprocess.Popen] = {}
        self.pids: dict[str, int] = {}
        self.airflow_home = os.path.join(self.home, "airflow")
        self.shared = os.path.join(self.home, "shared")  # the folder every node reaches (checkpoints)
        self.logs = os.path.join(self.home, "logs")
        self.pg_dir = os.path.join(self.home, "pg")

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def db_url(self, db: str) -> str:
        return f"postgresql+psycopg2://{db}:{db}@127.0.0.1:{self.pg_port}/{db}"

    @property
    def store_db(self) -> str:
        return self.db_url("saturn")

    @property
    def checkpoint_url(self) -> str:
        return "file://" + os.path.join(self.shared, "checkpoints")

    def password(self) -> str:
        return json.loads(Path(self.airflow_home, "passwords.json").read_text())["admin"]

    def _secret(self, name: str) -> str:
        path = Path(self.home, f".{name}")
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text()

    def env(self) -> dict[str, str]:
        """Every Airflow process's environment (a node worker adds its node and device ids)."""
        airflow_db = self.db_url("airflow")
        return {
            "PATH": self.venv_bin + os.pathsep + os.environ.get("PATH", ""),
            "AIRFLOW_HOME": self.airflow_home,
            "AIRFLOW__CORE__DAGS_FOLDER": self.dags_folder,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(self.parallelism),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + airflow_db,
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": self._secret("api_secret"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": os.path.join(self.airflow_home, "passwords.json"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "3600",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__TRIGGERER__CAPACITY": "50",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # every Celery task parses its DAG file afresh; on a loaded machine that can pass the 30 s default
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "300",
            # ...and a loaded api-server answers a task's state change in more than the 5 s default
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "PYTHONUNBUFFERED": "1",
            # saturn: records in PostgreSQL, checkpoints in the shared folder (through fsspec), one
            # queue per node
            "AIRFLOW__SATURN__STORE_URL": self.shared,
            "AIRFLOW__SATURN__STORE_DB": self.store_db,
            "AIRFLOW__SATURN__CHECKPOINT_URL": self.checkpoint_url,
            "AIRFLOW__SATURN__NODES": ",".join(self.nodes),
            "AIRFLOW_CONN_SATURN_API": json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port,
                                                   "login": "admin", "password": self.password()}),
            **self.extra_env,
        }

    def full_env(self, extra: Optional[dict] = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        env.pop("SATURN_HOME", None)
        env.update(self.env())
        env.update(extra or {})
        return env

    # ------------------------------------------------------------------ processes
    def _record(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        with open(os.path.join(self.home, "pids"), "a") as f:
            f.write(f"{name} {pid}\n")

    def _start(self, name: str, cmd: list[str], env: dict, cwd: Optional[str] = None) -> subprocess.Popen:
        log = open(os.path.join(self.logs, f"{name}.log"), "ab")
        p = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=cwd or self.home)
        log.close()
        self.procs[name] = p
        self._record(name, p.pid)
        return p

    def start_services(self) -> None:
        for d in (self.home, self.logs, self.shared, self.airflow_home, os.path.join(self.home, "redis")):
            os.makedirs(d, exist_ok=True)
        self.postgres = Postgres(self.pg_dir, self.pg_port)
        self._record("postgres", self.postgres.start())
        for db in ("airflow", "saturn"):
            self.postgres.create_database(db)
        self._start("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--daemonize", "no", "--dir", os.path.join(self.home, "redis"), "--save", "",
                              "--appendonly", "no"], env=dict(os.environ))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"redis did not answer on port {self.redis_port}: {self.log_tail('redis')}")

    def airflow(self, *args: str) -> list[str]:
        return [os.path.join(self.venv_bin, "airflow"), *args]

    def start_airflow(self, timeout_s: float = 300.0) -> None:
        pw_file = Path(self.airflow_home, "passwords.json")
        if not pw_file.exists():  # known before start, so the tasks and the driver can log in
            pw_file.write_text(json.dumps({"admin": secrets.token_urlsafe(12)}) + "\n")
        env = self.full_env()
        out = subprocess.run(self.airflow("db", "migrate"), env=env, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: {out.stderr[-3000:]}")
        for comp in AIRFLOW_COMPONENTS:
            args = {"api-server": ["api-server", "--port", str(self.port), "--host", "127.0.0.1"],
                    "triggerer": ["triggerer", "--skip-serve-logs"]}.get(comp, [comp])
            self._start(comp, self.airflow(*args), env)
        self.start_worker(DEFAULT_QUEUE)
        for node in self.nodes:
            self.start_worker(node)
        self.wait_healthy(timeout_s)

    def worker_name(self, queue: str) -> str:
        return f"worker-{queue}"

    def start_worker(self, queue: str) -> subprocess.Popen:
        """The worker of the default queue, or of node `queue` (its [saturn] node and device_ids set)."""
        extra = {}
        concurrency = self.worker_concurrency or 4
        if queue in self.nodes:
            extra = {"AIRFLOW__SATURN__NODE": queue,
                     "AIRFLOW__SATURN__DEVICE_IDS": ",".join(str(i) for i in self.nodes[queue])}
            concurrency = self.worker_concurrency or len(self.nodes[queue]) + 3
        name = self.worker_name(queue)
        cmd = self.airflow("celery", "worker", "--queues", queue, "--concurrency", str(concurrency),
                           "--celery-hostname", f"{queue}@%h", "--skip-serve-logs")
        return self._start(name, cmd, self.full_env(extra))

    def kill_worker(self, queue: str, sig: int = signal.SIGKILL) -> list[int]:
        """Kill a worker and everything it started (its task processes and their training ranks): a dead node."""
        pid = self.pids[self.worker_name(queue)]
        pids = kill_tree(pid, sig)
        wait_gone(pids, 20)
        p = self.procs.get(self.worker_name(queue))
        if p is not None:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        return pids

    def log_tail(self, name: str, n: int = 3000) -> str:
        try:
            return Path(self.logs, f"{name}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def worker_ready(self, queue: str) -> bool:
        return f"{queue}@" in self.log_tail(self.worker_name(queue), 200000) and \
            " ready." in self.log_tail(self.worker_name(queue), 200000)

    def wait_healthy(self, timeout_s: float) -> None:
        import urllib.request

        deadline = time.time() + timeout_s
        last = None
        while time.time() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None and name != "redis":
                    raise RuntimeError(f"{name} exited with {p.returncode}: {self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as r:
                    h = json.loads(r.read())
                last = h
                if all((h.get(k) or {}).get("status") == "healthy"
                       for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")) and \
                        all(self.worker_ready(q) for q in [DEFAULT_QUEUE, *self.nodes]):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError(f"cluster not healthy after {timeout_s:.0f} s; last health: {last}")

    def wait_worker(self, queue: str, timeout_s: float = 120.0) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.worker_ready(queue):
                return
            p = self.procs.get(self.worker_name(queue))
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"worker {queue} exited: {self.log_tail(self.worker_name(queue))}")
            time.sleep(1)
        raise TimeoutError(f"worker {queue} not ready after {timeout_s:.0f} s")

    def restart_worker(self, queue: str, timeout_s: float = 120.0) -> None:
        log = Path(self.logs, f"{self.worker_name(queue)}.log")
        if log.exists():  # readiness is read from the log: start the new worker's log afresh
            log.rename(log.with_suffix(f".{int(time.time())}.log"))
        self.start_worker(queue)
        self.wait_worker(queue, timeout_s)

    def write_env_sh(self) -> str:
        path = os.path.join(self.home, "env.sh")
        lines = ["# source this file to use the cluster's Airflow from a shell (airflow dags list, saturn show ...)"]
        lines += [f"export {k}={_sh(v)}" for k, v in self.env().items()]
        lines += ["unset SATURN_HOME"]
        Path(path).write_text("\n".join(lines) + "\n")
        Path(self.home, "cluster.json").write_text(json.dumps(
            {"url": self.url, "port": self.port, "pg_port": self.pg_port, "redis_port": self.redis_port,
             "nodes": self.nodes, "store_db": self.store_db, "shared": self.shared}, indent=1))
        return path

    def stop(self, grace_s: float = 25.0) -> None:
        stop_recorded(self.home, grace_s)
        self.procs.clear()
        self.pids.clear()


def _sh(v: str) -> str:
    return "'" + str(v).replace("'", "'\\''") + "'"


def stop_recorded(home: str, grace_s: float = 25.0) -> list[str]:
    """Stop every process recorded in HOME/pids: Airflow first (TERM, then KILL, with descendants),
    then Redis, then PostgreSQL (SIGINT: its fast shutdown). Returns what was stopped."""
    path = os.path.join(home, "pids")
    if not os.path.exists(path):
        return []
    entries = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    latest: dict[str, int] = {}
    for name, pid in entries:
        latest[name] = int(pid)
    every = [(n, int(p)) for n, p in entries]
    airflow = [(n, p) for n, p in every if n not in ("redis", "postgres")]
    stopped = []
    trees: list[int] = []
    for name, pid in airflow:
        if alive(pid):
            trees += kill_tree(pid, signal.SIGTERM)
            stopped.append(name)
    left = wait_gone(trees, grace_s)
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(left, 10)
    if "redis" in latest and alive(latest["redis"]):
        os.kill(latest["redis"], signal.SIGTERM)
        if wait_gone([latest["redis"]], 10):
            os.kill(latest["redis"], signal.SIGKILL)
        stopped.append("redis")
    if "postgres" in latest and alive(latest["postgres"]):
        os.kill(latest["postgres"], signal.SIGINT)
        if wait_gone([latest["postgres"]], 30):
            kill_tree(latest["postgres"], signal.SIGKILL)
        stopped.append("postgres")
    os.unlink(path)
    return stopped


def parse_nodes(spec: str) -> dict[str, list[int]]:
    """"node0=0,node1=1" or "node0=0-3;node1=4-7" -> {node: device ids}."""
    out: dict[str, list[int]] = {}
    for part in spec.replace(";", " ").replace(",node", " node").split():
        name, _, ids = part.partition("=")
        devs: list[int] = []
        for chunk in ids.split(","):
            if "-" in chunk:
                lo, hi = chunk.split("-")
                devs += list(range(int(lo), int(hi) + 1))
            elif chunk:
                devs.append(int(chunk))
        out[name] = devs
    return out


def split_devices(n_devices: int, n_nodes: int = 2) -> dict[str, list[int]]:
    """This machine's devices cut into `n_nodes` disjoint nodes (node0 gets the first ones)."""
    per = max(1, n_devices // n_nodes)
    return {f"node{i}": list(range(i * per, (i + 1) * per)) for i in range(n_nodes)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--home", required=True)
    s.add_argument("--nodes", default="", help="node0=0,node1=1 (default: this machine's devices cut in two)")
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--host", default="127.0.0.1")
    t = sub.add_parser("stop")
    t.add_argument("--home", required=True)
    args = p.parse_args(argv)
    if args.cmd == "stop":
        stopped = stop_recorded(args.home)
        print("stopped " + (", ".join(stopped) if stopped else "nothing (no recorded process alive)"))
        return 0
    if args.nodes:
        nodes = parse_nodes(args.nodes)
    else:
        from saturn_airflow.execution.devices import available_devices

        nodes = split_devices(len(available_devices()))
    c = Cluster(args.home, nodes, port=args.port)
    os.makedirs(c.home, exist_ok=True)
    if os.path.exists(os.path.join(c.home, "pids")):
        print(f"a cluster is already recorded in {c.home}/pids: stop it first (scripts/cluster.py stop --home {c.home})",
              file=sys.stderr)
        return 1
    try:
        c.start_services()
        c.start_airflow()
    except BaseException as e:
        print(f"cluster start failed: {e}", file=sys.stderr)
        c.stop()
        return 1
    env_sh = c.write_env_sh()
    print(json.dumps({"url": c.url, "env": env_sh, "nodes": nodes, "password": c.password(), "pids": c.pids}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
