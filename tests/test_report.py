"""report.html (self-contained) and the `harness dashboard` server, without a browser."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.analysis.rundata import load_run
from harness.report.html import dashboard_data, render_html, write_report
from harness.report.server import DashboardServer
from tests.dashboard_server import serving
from tests.synthetic_run import make_synthetic_run


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    make_synthetic_run(root, run_id="done", thresholds=["autoscale.recovery_s < 30",
                                                        "manual.recovery_s < 30"])
    make_synthetic_run(root, run_id="live", status="running")
    make_synthetic_run(root, run_id="reps", trials=3)
    return root


def test_report_is_one_self_contained_file(results: Path) -> None:
    out = write_report(results / "done")
    assert out == results / "done" / "report.html"
    page = out.read_text()
    # nothing fetched from anywhere: no external scripts, styles, fonts or images
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page
    assert (results / "done" / "summary.csv").exists()
    # the embedded data parses and carries what every panel draws
    blob = re.search(r"<script type='application/json' id=harness-data>(.*?)</script>",
                     page, re.S)
    assert blob
    data = json.loads(blob.group(1))
    assert [s["name"] for s in data["strategies"]] == ["manual", "compose", "autoscale"]
    series = data["series"]["autoscale"]["1"]
    for key in ("offered", "ok", "p95", "p99", "err_pct", "desired", "ready", "demand",
                "metric", "target"):
        assert any(v is not None for v in series[key]), key
    assert [a["name"] for a in data["annotations"]] == ["spike_t30", "crash_t95"]
    assert data["annotations"][0]["end"] == pytest.approx(70.01)
    gates = {g["text"]: g["ok"] for g in data["gates"]}
    assert gates["✗ manual.recovery_s < 30: 39.99"] is False


def test_script_breaking_text_is_escaped(results: Path) -> None:
    data = load_run(results / "done")
    data.run["scenario"]["description"] = "</script><script>alert(1)</script><!--"
    page = render_html(dashboard_data(data))
    assert "</script><script>alert(1)" not in page
    assert page.count("</script>") == 2  # the data block and the code block


def test_summary_table_shows_ci_with_repetitions(results: Path) -> None:
    data = dashboard_data(load_run(results / "reps"))
    row = next(r for r in data["summary"]["rows"] if r["strategy"] == "autoscale")
    assert row["trials"] == 3
    goodput = row["cells"][data["summary"]["metrics"].index("goodput_rps")]
    assert re.fullmatch(r"[\d.,]+ \[[\d.,]+, [\d.,]+\]", goodput), goodput


# ---------- server ----------

@pytest.fixture(scope="module")
def server(results: Path) -> Iterator[DashboardServer]:
    with serving(results, live_interval_ms=500) as srv:
        yield srv


def get(srv: DashboardServer, path: str) -> tuple[int, str, str]:
    host, port = srv.server_address[:2]
    req = urllib.request.Request(f"http://{host}:{port}{path}")
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_server_binds_loopback_only(server: DashboardServer) -> None:
    assert server.server_address[0] == "127.0.0.1"


def test_index_lists_runs_with_status(server: DashboardServer) -> None:
    status, ctype, body = get(server, "/")
    assert status == 200 and ctype.startswith("text/html")
    for run_id, st in (("done", "complete"), ("live", "running"), ("reps", "complete")):
        assert f"href='/run/{run_id}/'" in body
        assert f"class='badge {st}'" in body
    assert "http-equiv=refresh" in body  # a run is still running: the list refreshes


def test_run_dashboard_live_and_static(server: DashboardServer) -> None:
    status, _, live = get(server, "/run/live/")
    assert status == 200
    assert '"live":{"url":"data.json","interval_ms":500}' in live
    status, _, done = get(server, "/run/done/")
    assert status == 200 and '"live":null' in done
    status, ctype, data = get(server, "/run/live/data.json")
    assert status == 200 and ctype == "application/json"
    assert json.loads(data)["run"]["status"] == "running"
    status, _, csv = get(server, "/run/done/timeseries.csv")
    assert status == 200 and csv.startswith("run_id,strategy,trial,t_s")
    assert get(server, "/run/done")[0] == 301  # to the folder URL, so data.json resolves


@pytest.mark.parametrize("path", [
    "/run/../etc/passwd", "/run/%2e%2e/%2e%2e/etc/passwd", "/run/done/../../../etc/passwd",
    "/run/done/%2e%2e/%2e%2e/etc/passwd", "/run/..%2f..%2fetc/passwd", "/run/done/x.csv",
    "/run/done/.%2e/live/run.json", "/run/nosuch/", "/etc/passwd", "/run/outside/run.json",
    "/run/done/%00run.json", "/run/done\\..\\..\\etc\\passwd",
])
def test_path_traversal_is_refused(server: DashboardServer, results: Path, path: str,
                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "run.json").write_text("{}")
    link = results / "outside"
    if not link.exists():
        link.symlink_to(outside, target_is_directory=True)
    status, _, body = get(server, path)
    assert status == 404, (path, status, body[:200])


def test_a_run_without_rows_yet_gets_a_waiting_page(server: DashboardServer,
                                                    results: Path) -> None:
    d = results / "starting"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"run_id": "starting", "status": "running"}))
    (d / "timeseries.csv").write_text("run_id,strategy,trial,t_s\n")
    status, _, body = get(server, "/run/starting/")
    assert status == 200 and "no data yet" in body and "http-equiv=refresh" in body
    assert get(server, "/run/starting/data.json")[0] == 503
