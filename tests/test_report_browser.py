"""report.html and `harness dashboard` in headless Chromium (Debian's chromium package).

Chromium is driven over the DevTools protocol (websocket-client): every console error and
uncaught exception is collected, each panel must report that it drew data, zoom and the
tooltip are exercised with real mouse events, and screenshots are kept under
test-artifacts/ (look at them). The browser may resolve no host but 127.0.0.1 — which
also proves the page needs no network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.report.html import write_report
from tests.dashboard_server import serving
from tests.synthetic_run import make_synthetic_run

websocket = pytest.importorskip("websocket", reason="websocket-client (dev dependency)")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PANELS = ("rate", "latency", "errors", "replicas", "autoscaler", "host")
TIMEOUT_S = 30.0

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="chromium is not installed (apt install chromium)")


class Cdp:
    """The smallest DevTools-protocol client that does the job: call + collect events."""

    def __init__(self, ws_url: str) -> None:
        # suppress_origin: Chromium refuses DevTools websockets that carry an Origin
        # unless --remote-allow-origins opens it up; we would rather not.
        self.ws = websocket.create_connection(ws_url, timeout=TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expr: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout_s: float = TIMEOUT_S) -> Any:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expr}")

    def errors(self) -> list[str]:
        self.eval("1")  # flush pending events into self.events
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails", {}))[:400])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", "")))
                                    for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out

    def mouse(self, kind: str, x: float, y: float, **extra: Any) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    def screenshot(self, path: Path) -> None:
        import base64

        r = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r["data"]))

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[str]:
    """A headless Chromium; yields the DevTools HTTP endpoint (127.0.0.1:port)."""
    profile = tempfile.mkdtemp(prefix="harness-chromium-")
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-sync",
         "--disable-background-networking", "--disable-component-update",
         "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
         "--disable-client-side-phishing-detection", "--mute-audio",
         "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
         # no traffic leaves the machine: every name but 127.0.0.1 fails to resolve
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--window-size=1400,1800", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    endpoint = None
    assert proc.stderr is not None
    deadline = time.monotonic() + TIMEOUT_S
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        m = re.search(r"DevTools listening on ws://([\d.]+:\d+)/", line)
        if m:
            endpoint = m.group(1)
            break
    if endpoint is None:
        proc.kill()
        pytest.fail("chromium did not start: " + "".join(lines[-20:]))
    # keep draining stderr so chromium never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    try:
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        shutil.rmtree(profile, ignore_errors=True)


def open_page(endpoint: str, url: str) -> Cdp:
    req = urllib.request.Request(f"http://{endpoint}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:
        target = json.loads(r.read())
    cdp = Cdp(target["webSocketDebuggerUrl"])
    cdp.target_id = target["id"]  # type: ignore[attr-defined]
    cdp.endpoint = endpoint  # type: ignore[attr-defined]
    for domain in ("Runtime", "Log", "Page"):
        cdp.call(f"{domain}.enable")
    cdp.call("Emulation.setDeviceMetricsOverride", width=1400, height=1800,
             deviceScaleFactor=1, mobile=False)
    cdp.call("Page.navigate", url=url)
    cdp.wait_for("document.readyState === 'complete' && document.body && "
                 "document.body.dataset.renderState !== 'loading'")
    return cdp


def close_page(cdp: Cdp) -> None:
    ep, tid = cdp.endpoint, cdp.target_id  # type: ignore[attr-defined]
    cdp.close()
    with urllib.request.urlopen(f"http://{ep}/json/close/{tid}", timeout=TIMEOUT_S):
        pass


def panel_points(cdp: Cdp) -> dict[str, int]:
    return cdp.eval("Object.fromEntries([...document.querySelectorAll('[data-panel]')]"
                    ".map(p => [p.dataset.panel, +p.dataset.points]))")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    make_synthetic_run(root, run_id="synthetic", thresholds=["autoscale.recovery_s < 30"])
    make_synthetic_run(root, run_id="running", status="running", duration_s=60)
    return root


def test_report_renders_every_panel_without_errors(browser: str, results: Path) -> None:
    report = write_report(results / "synthetic")
    cdp = open_page(browser, report.as_uri())
    try:
        assert cdp.eval("document.body.dataset.renderState") == "done"
        points = panel_points(cdp)
        assert set(points) == set(PANELS)
        for name in PANELS:
            assert points[name] > 50, (name, points)
        assert cdp.eval("document.querySelectorAll('#summary tbody tr').length") == 3
        assert cdp.eval("document.body.dataset.jsErrors") == "0"
        cdp.screenshot(ARTIFACTS / "report.png")

        # drag-zoom on the rate panel: x from ~25% to ~50% of the plot
        rect = cdp.eval("JSON.stringify(document.querySelector('[data-panel=rate] canvas')"
                        ".getBoundingClientRect())")
        r = json.loads(rect)
        y = r["y"] + r["height"] / 2
        x1, x2 = r["x"] + r["width"] * 0.25, r["x"] + r["width"] * 0.5
        cdp.mouse("mouseMoved", x1, y)
        cdp.mouse("mousePressed", x1, y, button="left", clickCount=1)
        cdp.mouse("mouseMoved", x2, y, button="left", buttons=1)
        cdp.mouse("mouseReleased", x2, y, button="left", clickCount=1)
        zoomed = cdp.wait_for("(() => { const p = +document.querySelector("
                              "'[data-panel=latency]').dataset.points; "
                              "return p > 0 && p < 200 ? p : 0; })()")
        # the zoom is shared: every panel shows the narrower window
        assert 0 < zoomed < points["latency"]
        # the crosshair tooltip lists the strategies at the hovered second
        cdp.mouse("mouseMoved", (x1 + x2) / 2, y)
        tip = cdp.wait_for("(() => { const t = document.querySelector("
                           "'[data-panel=rate] .tip'); return t.style.display === 'block' "
                           "&& t.textContent; })()")
        assert "autoscale" in tip and "t = " in tip
        cdp.screenshot(ARTIFACTS / "report-zoomed.png")
        cdp.eval("document.getElementById('reset-zoom').click()")
        cdp.wait_for(f"+document.querySelector('[data-panel=latency]').dataset.points "
                     f"=== {points['latency']}")
        # hiding a strategy in the legend removes its lines
        cdp.eval("document.querySelector('.chip[data-strategy=manual]').click()")
        cdp.wait_for(f"+document.querySelector('[data-panel=rate]').dataset.points "
                     f"< {points['rate']}")
        assert cdp.errors() == []
    finally:
        close_page(cdp)


def test_dashboard_server_refreshes_a_running_run(browser: str, results: Path) -> None:
    with serving(results, live_interval_ms=500) as srv:
        host, port = srv.server_address[:2]
        cdp = open_page(browser, f"http://{host}:{port}/")
        try:
            links = cdp.eval("[...document.querySelectorAll('a')].map(a => a.textContent)")
            assert "synthetic" in links and "running" in links
            cdp.call("Page.navigate", url=f"http://{host}:{port}/run/running/")
            cdp.wait_for("document.body && document.body.dataset.renderState === 'done'")
            before = panel_points(cdp)
            assert all(before[p] > 0 for p in PANELS), before
            # the run keeps writing: 20 more seconds arrive, the page picks them up in place
            ts = results / "running" / "timeseries.csv"
            last = [x for x in ts.read_text().splitlines()
                    if x.startswith("running,manual,1,")][-1]
            extra = [re.sub(r"^(running,manual,1,)(\d+)",
                            lambda m, k=k: f"{m.group(1)}{60 + k}", last) for k in range(20)]
            assert extra[-1].startswith("running,manual,1,79,")
            with ts.open("a") as fh:
                fh.write("\n".join(extra) + "\n")
            cdp.wait_for("+document.body.dataset.refreshes >= 1")
            cdp.wait_for(f"+document.querySelector('[data-panel=rate]').dataset.points > "
                         f"{before['rate']}")
            # the time axis grew to the new seconds
            assert cdp.eval("window.__harness.data().series.manual['1'].t.length") == 65 + 20
            assert cdp.eval("Math.max(...window.__harness.fullRange())") == 80
            cdp.screenshot(ARTIFACTS / "dashboard-live.png")
            assert cdp.eval("document.body.dataset.jsErrors") == "0"
            assert cdp.errors() == []
        finally:
            close_page(cdp)
