"""`harness dashboard`: the index's headline figures and pick form, /compare, the default
port and a busy port — over real HTTP on 127.0.0.1, without a browser (the browser test
is tests/test_compare_browser.py)."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.analysis.summary import write_summary
from harness.cli import main
from harness.report.pages import Headlines, duration_text, local_time
from harness.report.server import DEFAULT_PORT, DashboardServer
from tests.dashboard_server import serving
from tests.synthetic_run import make_synthetic_run


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    make_synthetic_run(root, run_id="a", trials=2, seed=1)
    make_synthetic_run(root, run_id="b", trials=2, seed=2, slow_factor=1.5)
    make_synthetic_run(root, run_id="live", status="running", duration_s=60)
    other = make_synthetic_run(root, run_id="other")
    doc = json.loads((other / "run.json").read_text())
    doc["scenario"]["slo"]["p95_ms"] = 250.0
    (other / "run.json").write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def server(results: Path) -> Iterator[DashboardServer]:
    with serving(results) as srv:
        yield srv


def get(srv: DashboardServer, path: str) -> tuple[int, str]:
    host, port = srv.server_address[:2]
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def page_data(page: str) -> dict:
    m = re.search(r"<script type='application/json' id=harness-data>(.*?)</script>", page,
                  re.S)
    assert m, page[:300]
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_index_shows_headline_figures_per_strategy(server: DashboardServer) -> None:
    status, page = get(server, "/")
    assert status == 200
    rows = re.findall(r"<tr data-run='b'[^>]*>(.*?)</tr>", page)
    assert len(rows) == 3  # one row per strategy
    cells = [re.sub(r"<[^>]+>", "|", r) for r in rows]
    # run b, strategy autoscale: 2 trials, error rate, p95, recovery and cost
    auto = [c for c in re.split(r"\|+", cells[2]) if c.strip()]
    assert auto[:2] == ["autoscale", "2"]
    assert re.fullmatch(r"\d+\.\d\d%", auto[2]) and re.fullmatch(r"[\d,]+", auto[3])
    assert re.fullmatch(r"\d+\.\d", auto[4]) and re.fullmatch(r"[\d,]+", auto[5])
    # the first row carries the run: tick box, status, scenario, readable local time
    assert "name=run value='b'" in rows[0] and "badge complete" in rows[0]
    assert local_time("2026-01-01T00:00:00Z") in rows[0] and "10 min 0 s" in rows[0]
    assert "2026-01-01T00:00:00Z" not in re.sub(r"title='[^']*'", "", rows[0])
    # a running run says how long so far; strategies can be ticked; the form goes to /compare
    assert "so far" in page.split("data-run='live'")[1].split("</tr>")[0]
    assert re.search(r"<form method=get action=/compare", page)
    for s in ("manual", "compose", "autoscale"):
        assert f"name=strategy value='{s}'" in page


def test_headline_figures_from_the_aggregate_file_match_the_computed_ones(
        results: Path, tmp_path: Path) -> None:
    computed = Headlines().get(results / "a")
    copy = tmp_path / "a"
    copy.mkdir()
    for f in (results / "a").iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    write_summary(copy)  # summary_aggregate.csv newer than the data: read, not computed
    assert Headlines().get(copy) == computed
    assert [h.strategy for h in computed] == ["manual", "compose", "autoscale"]


def test_local_time_and_duration() -> None:
    assert local_time(None) == "" and local_time("not a time") == "not a time"
    local = datetime(2026, 3, 4, 5, 6, tzinfo=UTC).astimezone()
    assert local_time("2026-03-04T05:06:00Z") == local.strftime("%a %-d %b %Y, %H:%M")
    now = datetime(2026, 1, 1, 1, 2, 3, tzinfo=UTC)
    assert duration_text("2026-01-01T00:00:00Z", "2026-01-01T00:00:42Z", now) == "42 s"
    assert duration_text("2026-01-01T00:00:00Z", None, now) == "1 h 2 min so far"
    assert duration_text(None, None, now) == ""


def test_compare_page_overlays_the_ticked_runs(server: DashboardServer) -> None:
    status, page = get(server, "/compare?run=a&run=b&strategy=manual&strategy=autoscale")
    assert status == 200
    doc = page_data(page)
    assert [s["name"] for s in doc["strategies"]] == [
        "manual · a", "autoscale · a", "manual · b", "autoscale · b"]
    assert doc["compare"]["view"] == "ab"
    assert doc["compare"]["question"].startswith("A/B across runs")
    assert [t["title"] for t in doc["compare"]["tables"]] == [
        "manual — b vs a", "autoscale — b vs a"]
    p95 = next(r for r in doc["compare"]["tables"][1]["rows"] if r["metric"] == "p95_ms")
    assert "[" in p95["cells"][1]["text"]  # 2 trials: an interval
    assert "Student-t" in doc["compare"]["legend"]
    # the same question again is served from the cache, identical
    assert get(server, "/compare?run=a&run=b&strategy=manual&strategy=autoscale")[1] == page


def test_compare_page_within_pooled_and_baseline(server: DashboardServer) -> None:
    status, page = get(server, "/compare?run=a%2Bb&view=within&baseline=autoscale")
    assert status == 200
    doc = page_data(page)
    assert doc["compare"]["view"] == "within"
    assert doc["compare"]["tables"][0]["title"] == "run a+b — baseline autoscale"
    assert set(doc["series"]["manual"]) == {"1", "2", "3", "4"}  # 2 + 2 pooled trials
    status, page = get(server, "/compare?run=a&run=b&pool=1")
    assert status == 200 and page_data(page)["compare"]["view"] == "within"


def test_mismatched_scenarios_are_refused_with_a_link_to_force(
        server: DashboardServer) -> None:
    status, page = get(server, "/compare?run=a&run=other")
    assert status == 400
    assert "not the same scenario: other differs from a in slo" in page
    link = re.search(r"<a id=force href='([^']+)'>", page).group(1).replace("&amp;", "&")
    status, forced = get(server, link)
    assert status == 200
    assert any("compared anyway" in w for w in page_data(forced)["warnings"])


@pytest.mark.parametrize(("query", "code"), [
    ("", 400), ("?run=nosuch", 404), ("?run=..%2Fa", 404), ("?run=a%2B..", 404),
    ("?run=a&strategy=nosuch", 400), ("?run=a&view=sideways", 400),
])
def test_bad_compare_queries(server: DashboardServer, query: str, code: int) -> None:
    status, page = get(server, "/compare" + query)
    assert status == code
    assert "Traceback" not in page


def test_default_port_is_not_locusts(capsys: pytest.CaptureFixture[str]) -> None:
    assert DEFAULT_PORT == 8642
    assert main(["dashboard", "--help"]) == 0
    assert "8642" in capsys.readouterr().out


def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["dashboard", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"harness: port {port} on 127.0.0.1 is busy (another dashboard or "
                   "program uses it); pick another with --port"]
