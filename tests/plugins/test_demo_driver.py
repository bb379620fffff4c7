"""scripts/demo.py against a fake Airflow REST API: login, pools, trigger, wait, summary (seconds, not
the real 5-15 minutes; tests/e2e and a real ./scripts/demo.sh run cover the real thing)."""

from __future__ import annotations

import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from saturn_airflow.store.records import ProgressStore

from . import sample

ROOT = Path(__file__).resolve().parents[2]


def fake_airflow(store_url: str):
    calls = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code, obj=None):
            body = json.dumps(obj or {}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self, method):
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            path = self.path.split("?")[0]
            calls.append((method, path, body))
            if path == "/api/v2/monitor/health":
                return self._send(200, {k: {"status": "healthy"} for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")})
            if path == "/auth/token":
                ok = body == {"username": "admin", "password": "pw"}
                return self._send(201 if ok else 401, {"access_token": "jwt"} if ok else {})
            if self.headers.get("Authorization") != "Bearer jwt":
                return self._send(401)
            if path.startswith("/api/v2/pools/") and method == "GET":
                return self._send(404)
            if method == "POST" and path == "/api/v2/dags/saturn_plan/dagRuns":
                st = sample.publish(store_url)
                for job in "abcdef":
                    ProgressStore(st, sweep=sample.SWEEP).put("demo", job, {
                        "plan_id": "demo-v1" if job in "ae" else "demo-v2", "state": "done", "step": 10, "total": 10,
                        "started_at": sample.T0, "finished_at": sample.T0 + 200})
                return self._send(200, {"dag_run_id": "r1"})
            if path == "/api/v2/dags/saturn_plan" and method == "GET":
                return self._send(200, {"dag_id": "saturn_plan", "is_paused": True})
            if path.endswith("/taskInstances"):
                return self._send(200, {"task_instances": [{"task_id": "solve", "map_index": -1, "state": "success"}]})
            if path == "/api/v2/dags/saturn_plan/dagRuns":  # active planning runs
                return self._send(200, {"dag_runs": [], "total_entries": 0})
            if path.startswith("/api/v2/dags/") and "/dagRuns" in path:
                return self._send(200, {"dag_runs": [{"dag_run_id": "x", "state": "success"}], "state": "success",
                                        "total_entries": 1})
            return self._send(200, {})

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_PATCH(self):
            self._route("PATCH")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, calls


def test_demo_driver_end_to_end(tmp_path, monkeypatch, capsys):
    url = str(tmp_path / "store")
    monkeypatch.setenv("SATURN_HOME", url)
    spec = importlib.util.spec_from_file_location("demo_driver", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    (tmp_path / "passwords.json").write_text(json.dumps({"admin": "pw"}))
    srv, calls = fake_airflow(url)
    try:
        rc = demo.main([f"http://127.0.0.1:{srv.server_port}", str(ROOT / "saturn_airflow/examples/tiny.yaml"),
                        "--password-file", str(tmp_path / "passwords.json"), "--timeout", "60",
                        "--html", str(tmp_path / "plan.html")])
    finally:
        srv.shutdown()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert ("POST", "/api/v2/pools") in [(m, p) for m, p, _ in calls]
    trigger = [b for m, p, b in calls if m == "POST" and p == "/api/v2/dags/saturn_plan/dagRuns"]
    assert trigger[0]["conf"]["workload"].endswith("tiny.yaml")
    assert "6/6 jobs done, 1 re-plan(s)" in out and "current practice" in out and "planned makespan" in out
    assert 'class="bar planned"' in (tmp_path / "plan.html").read_text()
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["plan_id"] == "demo-v2" and res["dag_id"] == "saturn_run__demo-v2"
