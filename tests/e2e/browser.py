"""A headless Chromium driven over the DevTools protocol (CDP), enough for the UI e2e test.

Why not Selenium/Playwright: the Debian `chromium` package and the `websockets` client Airflow already
installs are all it needs (no driver download, nothing from a CDN). The browser is started with its
own profile folder and stopped by PID.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

from websockets.sync.client import connect


def chromium_path() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page; `evaluate` runs JS in the page and returns its value."""

    def __init__(self, width: int = 1400, height: int = 1000, timeout_s: float = 60.0):
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("no chromium on PATH (run scripts/setup-browser.sh)")
        self.profile = tempfile.mkdtemp(prefix="saturn-chromium-")
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", "--no-default-browser-check",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + timeout_s
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = []
        while not targets:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = [t for t in json.load(r) if t.get("type") == "page"]
            if not targets:
                time.sleep(0.1)
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(targets[0]["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=timeout_s))
        self._ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Network.enable")

    def send(self, method: str, **params: Any) -> dict:
        """Call a CDP method and wait for its reply (events in between are dropped)."""
        mid = next(self._ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expr: str, await_promise: bool = False) -> Any:
        res = self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=await_promise)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def wait_for(self, expr: str, timeout_s: float = 60.0, what: str = "") -> Any:
        """Poll a JS expression until it is truthy; return its value."""
        deadline = time.time() + timeout_s
        last_err = None
        while time.time() < deadline:
            try:
                v = self.evaluate(expr)
                if v:
                    return v
            except RuntimeError as e:  # page in the middle of a navigation
                last_err = e
            time.sleep(0.25)
        raise TimeoutError(f"timed out waiting for {what or expr} (last error: {last_err}); "
                           f"url={self.evaluate('location.href')}")

    def type_text(self, text: str) -> None:
        """Type into the focused element the way a user does (React sees the input events)."""
        self.send("Input.insertText", text=text)

    def press_enter(self) -> None:
        for t in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=t, key="Enter", code="Enter", windowsVirtualKeyCode=13,
                      **({"text": "\r"} if t == "keyDown" else {}))

    def screenshot(self, path: os.PathLike | str, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            m = self.send("Page.getLayoutMetrics")
            size = m.get("cssContentSize") or m["contentSize"]
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": size["width"],
                                                            "height": min(size["height"], 6000), "scale": 1})
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if getattr(self, "_stack", None) is not None:
                self._stack.close()
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: chromium and its helpers only
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
