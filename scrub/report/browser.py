"""Look at a report in headless Chromium, through the DevTools protocol on a pipe.

Used by the browser tests (``tests/test_report_browser.py``) and by ``scripts/make_reports.py``
for screenshots; it needs the Debian package ``chromium`` (``make browser``), nothing from PyPI.

``--remote-debugging-pipe`` makes Chromium read protocol commands from file descriptor 3 and
write replies and events to descriptor 4, each a JSON message ended by a NUL byte: no websocket
library, no port, no network. :func:`inspect_page` loads a file, collects console messages,
uncaught exceptions and failed loads, asks the page for every element a selector names (is it
there, is it visible: non-zero size, not hidden), and saves a full-page screenshot.

Pitfall: Chromium needs its own empty profile folder (``--user-data-dir``) per run, or it tries
to reuse a running instance's.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
]

_PROBE = """
(() => {
  const out = {};
  for (const sel of %s) {
    const els = [...document.querySelectorAll(sel)];
    out[sel] = els.map(el => {
      const r = el.getBoundingClientRect();
      const s = getComputedStyle(el);
      return {w: r.width, h: r.height,
              visible: r.width > 0 && r.height > 0 && s.visibility !== 'hidden' &&
                       s.display !== 'none' && parseFloat(s.opacity) > 0};
    });
  }
  return JSON.stringify(out);
})()
"""


__all__ = ["CHROMIUM", "PageReport", "available", "inspect_page"]


def available() -> bool:
    """Whether the Chromium executable is installed."""
    return Path(CHROMIUM).exists()


@dataclass
class PageReport:
    """What the browser saw.

    Attributes:
        console: console messages of level warning or error, and uncaught exceptions.
        failed: URLs that failed to load.
        elements: selector → one ``{w, h, visible}`` per matching element.
        title: the document's title.
        height: the page's full height in CSS pixels.
    """

    console: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    elements: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    title: str = ""
    height: int = 0


class _Pipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read())
        raise TimeoutError(f"no {method} within {timeout} s")

    def _read(self) -> dict:
        while b"\0" not in self.buffer:
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)


def inspect_page(
    html_file: Path,
    *,
    selectors: list[str],
    screenshot: Path | None = None,
    width: int = 1100,
    timeout: float = 60.0,
) -> PageReport:
    """Load ``html_file`` in headless Chromium and report what it saw (see :class:`PageReport`)."""
    report = PageReport()
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="scrub-chromium-") as profile:

        def child_fds() -> None:  # runs in the child, before exec: the protocol's fds 3 and 4
            high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)  # dup2 makes them inheritable
            os.dup2(high_w, 4)
            os.close(high_r)
            os.close(high_w)

        proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900"],
            preexec_fn=child_fds,
            close_fds=False,  # keeps fds 3 and 4; Python's own fds are not inheritable anyway
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        pipe = _Pipe(proc, to_browser_w, from_browser_r)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            pipe.send("Page.navigate", {"url": html_file.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired", timeout)
            probe = _PROBE % json.dumps(selectors)
            result = pipe.send(
                "Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=session
            )
            report.elements = json.loads(result["result"]["value"])
            report.title = pipe.send(
                "Runtime.evaluate",
                {"expression": "document.title", "returnByValue": True},
                session=session,
            )["result"]["value"]
            metrics = pipe.send("Page.getLayoutMetrics", session=session)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            report.height = int(size["height"])
            if screenshot is not None:
                shot = pipe.send(
                    "Page.captureScreenshot",
                    {
                        "format": "png",
                        "captureBeyondViewport": True,
                        "clip": {
                            "x": 0,
                            "y": 0,
                            "width": width,
                            "height": report.height,
                            "scale": 1,
                        },
                    },
                    session=session,
                )
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            for event in pipe.events:
                method, params = event.get("method"), event.get("params", {})
                if method == "Runtime.consoleAPICalled" and params.get("type") in (
                    "error",
                    "warning",
                    "assert",
                ):
                    args = " ".join(
                        str(a.get("value", a.get("description"))) for a in params["args"]
                    )
                    report.console.append(f"console.{params['type']}: {args}")
                elif method == "Runtime.exceptionThrown":
                    report.console.append(f"exception: {params['exceptionDetails'].get('text')}")
                elif method == "Log.entryAdded" and params["entry"].get("level") in (
                    "error",
                    "warning",
                ):
                    report.console.append(f"log: {params['entry'].get('text')}")
                elif method == "Network.loadingFailed":
                    report.failed.append(str(params.get("errorText")))
        finally:
            with contextlib.suppress(RuntimeError, OSError):
                pipe.send("Browser.close")
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_browser_w)
            os.close(from_browser_r)
    return report
