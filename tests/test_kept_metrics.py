"""`harness run --keep-metrics` and `harness metrics serve`: a finished run re-opened.

Pure parts: the harness's own series come from the live definitions (every name the
/metrics endpoint exposes, and nothing else), promtool turns them into real blocks, and
a live TSDB folder is reduced to its blocks.

Docker: a short two-strategy run (compose, and Swarm with the HPA) keeps its metrics;
after tear-down nothing of the run is left in Docker, the trial folders hold only blocks,
and a Prometheus over them answers every PromQL query of the Grafana dashboard with the
trial's series. `harness clean --volumes` then removes the kept data (and only then).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness.platforms.docker.kept_tsdb import blocks, finalize
from harness.record.kept_metrics import create_blocks, openmetrics
from harness.report.loadgen_metrics import exposed_names

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboards" / "grafana" / "dashboards" / "harness.json"


def _row(t_s: int, strategy: str = "s", trial: int = 1, ok: int = 10) -> dict[str, Any]:
    return {"strategy": strategy, "trial": trial, "t_s": t_s, "offered_rps": 12.0,
            "sent_rps": 12, "ok_rps": ok, "failed_rps": 2, "dropped_rps": 0,
            "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": 11.0, "in_flight": 1,
            "replicas_desired": 2, "replicas_running": 2, "replicas_ready": 2,
            "autoscaler_metric": 0.5, "autoscaler_target": 0.6, "loadgen_saturated": False,
            "loadgen_cpu_pct": 3.0}


def _names(text: str) -> set[str]:
    return {ln.split("{")[0].split(" ")[0] for ln in text.splitlines()
            if ln and not ln.startswith("#")}


def test_harness_series_come_from_the_live_definitions() -> None:
    text = openmetrics([(1_700_000_000.0 + i, _row(i)) for i in range(5)])
    assert text.endswith("# EOF\n")
    names = _names(text)
    # every series the row feeds (faults and load stages come from events, not rows)
    assert names <= exposed_names()
    assert "harness_offered_requests_per_second" in names
    assert any(n.startswith("harness_request_duration_seconds") for n in names)
    assert any(n.startswith("harness_requests") for n in names)
    # counters add up row by row, as on the live endpoint
    ok = [ln for ln in text.splitlines() if ln.startswith("harness_requests")
          and 'outcome="ok"' in ln]
    assert [float(ln.split()[1]) for ln in ok] == [10.0, 20.0, 30.0, 40.0, 50.0]
    assert ok[0].split()[2] == "1700000000.000"


def test_openmetrics_drops_duplicate_timestamps_and_sorts() -> None:
    text = openmetrics([(2.0, _row(1)), (1.0, _row(0)), (2.0, _row(2))])
    ts = [ln.split()[2] for ln in text.splitlines()
          if ln.startswith("harness_offered_requests_per_second")]
    assert ts == ["1.000", "2.000"]


def test_promtool_makes_blocks(tmp_path: Path) -> None:
    text = openmetrics([(1_700_000_000.0 + i, _row(i)) for i in range(30)])
    names = create_blocks(text, tmp_path)
    assert names and [b.name for b in blocks(tmp_path)] == sorted(names)
    meta = json.loads((tmp_path / names[0] / "meta.json").read_text())
    assert meta["stats"]["numSamples"] > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_finalize_keeps_only_blocks(tmp_path: Path) -> None:
    block = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    snap = tmp_path / "snapshots" / "20260101T000000Z-abc" / block
    snap.mkdir(parents=True)
    (snap / "meta.json").write_text("{}")
    for d in ("wal", "chunks_head", "01H0000000000000000000000A.tmp-for-creation"):
        (tmp_path / d).mkdir()
    (tmp_path / "lock").write_text("")
    (tmp_path / "queries.active").write_text("")
    assert finalize(tmp_path, "20260101T000000Z-abc") == [block]
    assert sorted(p.name for p in tmp_path.iterdir()) == [block]


# ── a real run, re-opened ─────────────────────────────────────────────────────────────

SCENARIO = """\
name: kept
seed: 1
output: {out}
app:
  env: {{WORKERS: 4, SERVICE_MS: 20, STARTUP_S: 0}}
load:
  warmup_s: 2
  warmup_rps: 20
  timeout_s: 2
  stages:
    - {{name: base, duration_s: 6, rps: 30}}
    - {{name: up, duration_s: 12, rps: 90}}
faults:
  - {{at_s: 8, action: crash, count: 1}}
strategies:
  - {{name: fixed, kind: compose, replicas: 2}}
  - name: hpa
    kind: orchestrated
    replicas: 1
    autoscaler: {{policy: hpa, metric: utilization, target: 0.5, min_replicas: 1,
                 max_replicas: 3, interval_s: 2}}
"""


def _panel_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())

    def walk(panels: list[dict[str, Any]]) -> Any:
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    return [t["expr"] for p in walk(doc["panels"]) for t in p.get("targets", [])
            if t.get("expr")]


def _query_range(url: str, expr: str, start: float, end: float) -> list[Any]:
    qs = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}",
                                 "end": f"{end:.3f}", "step": "1"})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{qs}", timeout=30) as resp:
        doc = json.loads(resp.read())
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


@pytest.mark.docker
@pytest.mark.slow
def test_a_kept_run_reopens_with_every_dashboard_query(tmp_path: Path,
                                                       new_run_id: Any,
                                                       docker_client: Any) -> None:
    from harness.platforms.docker.cleanup import leftovers
    from harness.report.metrics_serve import kept_blocks, start, time_range_ms

    run_id = new_run_id("kept")
    sc = tmp_path / "kept.yaml"
    sc.write_text(SCENARIO.format(out=tmp_path / "results"))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(sc), "--platform",
                        "docker", "--keep-metrics", "--run-id", run_id],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = tmp_path / "results" / run_id
    assert "kept metrics:" in r.stdout and "kept MB" in r.stdout
    meta = json.loads((run_dir / "run.json").read_text())
    kept = meta["kept_metrics"]
    assert set(kept["bytes"]) == {"fixed-1", "hpa-1"}
    assert all(b > 0 for b in kept["bytes"].values())
    assert kept["total_bytes"] == sum(kept["bytes"].values())
    assert all(t["kept_metrics_bytes"] > 0 for t in meta["trials"])
    # the trials are gone, their data is not
    assert leftovers(docker_client, run_id) == []
    found = kept_blocks(run_dir)
    assert set(found) == {"fixed-1", "hpa-1"}
    for trial in found:
        # only immutable blocks: no WAL, head chunks, lock or snapshot folder
        assert all(p.name in {b.name for b in found[trial]}
                   for p in (run_dir / "metrics" / trial).iterdir())

    ts = pd.read_csv(run_dir / "timeseries.csv")
    assert ts[ts.strategy == "hpa"].autoscaler_target.notna().any()
    with start(run_dir, port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        for trial, strategy in (("fixed-1", "fixed"), ("hpa-1", "hpa")):
            lo, hi = time_range_ms(found[trial])
            empty = []
            # the autoscaler's series exist for the seconds it had a metric (none for a
            # fixed strategy; a busy host can delay the first scrapes of a short trial)
            measured = ts[ts.strategy == strategy]
            has_metric = bool(measured.autoscaler_metric.notna().any())
            for expr in _panel_queries():
                if "harness_autoscaler_metric" in expr and not has_metric:
                    continue
                if "harness_autoscaler_target" in expr and strategy == "fixed":
                    continue
                q = expr.replace("$strategy", strategy)
                if not _query_range(server.url, q, lo / 1000, hi / 1000):
                    empty.append(q)
            assert not empty, f"{trial}: dashboard queries without data: {empty}"
            # the harness series carry the trial's strategy label, and the trial running is
            # the level harness_trial (the other trial's may linger into this window for
            # the lookback: Prometheus' staleness)
            got = _query_range(server.url, 'harness_offered_requests_per_second', lo / 1000,
                               hi / 1000)
            assert strategy in {s["metric"]["strategy"] for s in got}
            level = _query_range(server.url, f'harness_trial{{strategy="{strategy}"}}',
                                 lo / 1000, hi / 1000)
            assert level and {v for s in level for _, v in s["values"]} == {"1"}
    assert not server.data_dir.exists()  # the copy went with the server

    # kept data stays through a plain clean, and goes with --volumes
    clean = [sys.executable, "-m", "harness.cli", "clean", "--run", run_id,
             "--results", str(tmp_path / "results")]
    assert subprocess.run(clean, capture_output=True, timeout=120).returncode == 0
    assert (run_dir / "metrics").is_dir()
    r = subprocess.run([*clean, "--volumes"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "removed kept metrics" in r.stdout, r.stdout + r.stderr
    assert not (run_dir / "metrics").exists()
    assert (run_dir / "run.json").is_file() and (run_dir / "timeseries.csv").is_file()
