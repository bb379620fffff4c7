"""A real Airflow for end-to-end tests: scheduler, dag-processor, triggerer and api-server.

LocalExecutor on SQLite, small parallelism, a temporary AIRFLOW_HOME, the repo's dags folder and a
FREE port chosen at start (several harnesses may run side by side). Every process is started in its
own session and stopped by its PID (its process group: the LocalExecutor workers are the scheduler's
children): SIGTERM, a grace period, then SIGKILL.

    with AirflowHarness() as af:            # or: af = AirflowHarness(); af.start(); ...; af.stop()
        run_id = af.trigger("saturn_plan", {"workload": "/path/w.yaml"})
        assert af.wait_run("saturn_plan", run_id) == "success"

Also a manual tool: `python tests/e2e/airflow_harness.py` starts one, prints URL/login, stops on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import httpx

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
FINISHED = ("success", "failed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_bin() -> str:
    return str(Path(sys.executable).parent)


class AirflowHarness:
    def __init__(self, *, home: Optional[str] = None, dags_folder: Optional[str] = None, parallelism: int = 4,
                 env: Optional[dict[str, str]] = None, port: Optional[int] = None, keep_home: bool = False):
        self.home = home or tempfile.mkdtemp(prefix="saturn-airflow-e2e-")
        self.dags_folder = dags_folder or str(ROOT / "dags")
        self.parallelism = parallelism
        self.extra_env = dict(env or {})
        self.port = port
        self.keep_home = keep_home
        self.procs: dict[str, subprocess.Popen] = {}
        self.retired: list[subprocess.Popen] = []  # components restarted: their old processes
        self._token: Optional[str] = None
        self._token_at = 0.0
        self.saturn_home = os.path.join(self.home, "saturn")

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "PATH": venv_bin() + os.pathsep + env.get("PATH", ""),
            "AIRFLOW_HOME": self.home,
            "SATURN_HOME": self.saturn_home,
            "AIRFLOW__CORE__DAGS_FOLDER": self.dags_folder,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max(self.parallelism, 4)),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt"),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "3600",
            "AIRFLOW__TRIGGERER__CAPACITY": "50",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # the planning DAG creates the GPU pools through the REST API with this connection
            "AIRFLOW_CONN_SATURN_API": json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port,
                                                   "login": "admin", "password": self.password()}),
        })
        env.update(self.extra_env)
        return env

    def _secret(self, name: str) -> str:
        path = Path(self.home) / f".{name}_secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text()

    def _airflow(self, *args: str) -> list[str]:
        return [os.path.join(venv_bin(), "airflow"), *args]

    def start(self, timeout_s: float = 300.0) -> "AirflowHarness":
        if self.port is None:
            self.port = free_port()
        os.makedirs(self.home, exist_ok=True)
        os.makedirs(self.saturn_home, exist_ok=True)
        pw_file = Path(self.home, "simple_auth_manager_passwords.json.generated")
        if not pw_file.exists():  # known before start, so tasks can log in (SimpleAuthManager keeps it)
            pw_file.write_text(json.dumps({"admin": secrets.token_urlsafe(12)}) + "\n")
        env = self.env()
        t0 = time.time()
        out = subprocess.run(self._airflow("db", "migrate"), env=env, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed: {out.stderr[-3000:]}")
        self.migrate_s = time.time() - t0
        try:
            for comp in COMPONENTS:
                self._spawn(comp, env)
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        self.start_s = time.time() - t0
        return self

    def _spawn(self, comp: str, env: Optional[dict] = None) -> subprocess.Popen:
        args = ["api-server", "--port", str(self.port), "--host", "127.0.0.1"] if comp == "api-server" else [comp]
        log = open(os.path.join(self.home, f"{comp}.log"), "ab")
        proc = subprocess.Popen(self._airflow(*args), env=env or self.env(), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.home)
        log.close()
        old = self.procs.get(comp)
        if old is not None:
            self.retired.append(old)  # its process group may still hold children: stop() ends them
        self.procs[comp] = proc
        return proc

    def kill(self, comp: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to one component's main process (by its PID, not its group: a crash, not a stop)."""
        proc = self.procs[comp]
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        return proc.pid

    def restart(self, comp: str, sig: int = signal.SIGKILL, wait: bool = True) -> tuple[int, int]:
        """Kill a component by its PID and start it again: (old pid, new pid)."""
        old = self.kill(comp, sig)
        new = self._spawn(comp).pid
        if wait:
            self.wait_healthy(300)
        return old, new

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        last = None
        while time.time() < deadline:
            for comp, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"airflow {comp} exited with {p.returncode}: {self.log_tail(comp)}")
            try:
                r = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5)
                last = r.text
                if r.status_code == 200:
                    h = r.json()
                    if all((h.get(k) or {}).get("status") == "healthy" for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")):
                        return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError(f"airflow not healthy after {timeout_s:.0f} s; last health: {last}")

    def log_tail(self, comp: str, n: int = 4000) -> str:
        try:
            return Path(self.home, f"{comp}.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def pids(self) -> dict[str, int]:
        return {c: p.pid for c, p in self.procs.items()}

    def stop(self, grace_s: float = 25.0) -> None:
        """SIGTERM each component's process group (by its PID), wait, then SIGKILL what is left."""
        for p in self.retired:  # groups of components killed and restarted: orphans of the old process
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.retired.clear()
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace_s
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the group: leftover workers/children too
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        if not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "AirflowHarness":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ REST
    def password(self) -> str:
        data = json.loads(Path(self.home, "simple_auth_manager_passwords.json.generated").read_text())
        return data["admin"]

    def token(self) -> str:
        """A JWT for the REST API (SimpleAuthManager admin), refreshed every 10 minutes."""
        if self._token is None or time.time() - self._token_at > 600:
            r = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password()}, timeout=30)
            r.raise_for_status()
            self._token, self._token_at = r.json()["access_token"], time.time()
        return self._token

    def api(self, method: str, path: str, **kw) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}", **kw.pop("headers", {})}
        for attempt in range(5):
            try:
                r = httpx.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=60, **kw)
                break
            except httpx.TransportError:
                if attempt == 4:
                    raise
                time.sleep(2)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:1000]}")
        ctype = r.headers.get("content-type", "")
        return r.json() if "json" in ctype else r.text

    def dag(self, dag_id: str) -> Optional[dict]:
        try:
            return self.api("GET", f"/dags/{dag_id}")
        except RuntimeError as e:
            if " 404 " in str(e):
                return None
            raise

    def wait_dag(self, dag_id: str, timeout_s: float = 180) -> dict:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            d = self.dag(dag_id)
            if d is not None:
                return d
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} did not appear within {timeout_s:.0f} s; import errors: {self.import_errors()}")

    def import_errors(self) -> list:
        return self.api("GET", "/importErrors").get("import_errors", [])

    def trigger(self, dag_id: str, conf: Optional[dict] = None) -> str:
        r = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return r["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "run_after"})["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float = 600, poll_s: float = 3, on_poll=None) -> str:
        deadline = time.time() + timeout_s
        state = None
        while time.time() < deadline:
            state = self.run(dag_id, run_id)["state"]
            if on_poll is not None:
                on_poll()
            if state in FINISHED:
                return state
            time.sleep(poll_s)
        raise TimeoutError(f"run {dag_id}/{run_id} still {state} after {timeout_s:.0f} s")

    def wait_first_run(self, dag_id: str, timeout_s: float = 180) -> dict:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.dag(dag_id) is not None:
                runs = self.runs(dag_id)
                if runs:
                    return runs[0]
            time.sleep(2)
        raise TimeoutError(f"no run of {dag_id} within {timeout_s:.0f} s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        out = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                       params={"full_content": "true", "map_index": map_index}, headers={"Accept": "application/json"})
        if isinstance(out, dict):
            content = out.get("content")
            if isinstance(content, list):
                return "\n".join(c.get("event", "") if isinstance(c, dict) else str(c) for c in content)
            return str(content)
        return str(out)

    def pools(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.api("GET", "/pools", params={"limit": 100})["pools"]}


def main() -> None:  # pragma: no cover - manual use
    af = AirflowHarness(keep_home=True)
    af.start()
    print(f"Airflow up at {af.url} (user admin, password {af.password()}), home {af.home}, pids {af.pids()}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        af.stop()


if __name__ == "__main__":
    main()
