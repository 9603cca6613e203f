"""dashboards/: the Grafana dashboard queries only metrics that really exist.

Exported names come from the real things: HAProxy 2.6's built-in Prometheus exporter
(the host's haproxy binary, scraped), the harness's own load-generator metrics
(harness.report.loadgen_metrics on a fresh registry) and the sample app (started as a
process and scraped; until it exists, its names are checked against the contract the
issue states). PromQL syntax is checked with the real `promtool`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from harness.record.histogram import Histogram
from harness.report.loadgen_metrics import HARNESS_METRICS, exposed_names, make_loadgen_metrics

ROOT = Path(__file__).resolve().parent.parent
DASH = ROOT / "dashboards"
DASHBOARD = DASH / "grafana" / "dashboards" / "harness.json"

# The sample app's metrics as the issue declares them (the contract the panels rely on).
APP_CONTRACT = {
    "app_requests_total", "app_request_duration_seconds_bucket",
    "app_request_duration_seconds_sum", "app_request_duration_seconds_count",
    "app_in_flight", "app_queue_depth", "app_capacity_workers", "app_service_time_seconds",
    "app_ready", "app_utilization",
}
PROMQL_WORDS = {
    # functions and aggregations used (or plausible) in the dashboard
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "changes", "delta",
    "histogram_quantile", "clamp_min", "clamp_max", "abs", "label_values", "topk",
    "bottomk", "quantile", "stddev", "avg_over_time", "max_over_time", "min_over_time",
    "sum_over_time", "vector", "scalar", "time", "absent",
    # keywords
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exposition_names(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (labels, functions, ranges stripped)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if word in PROMQL_WORDS or rest.startswith("(") or re.fullmatch(r"e\d*", word):
            continue
        if re.match(r"\d", e[max(0, m.start() - 1):m.start()] or " "):
            continue  # the exponent of a number like 1e-9
        names.add(word)
    return names


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[tuple[str, str]]:
    """(where, expr) of every panel target and annotation."""
    d = dashboard()
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for a in d["annotations"]["list"]:
        if a.get("expr"):
            out.append((f"annotation {a['name']!r}", a["expr"]))
    return out


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(x_bucket{a="b"}[10s])))') \
        == {"x_bucket"}
    assert metric_names("sum(a) / clamp_min(sum(rate(b_count[10s])), 1e-9)") == {"a", "b_count"}
    assert metric_names('100 * f{strategy=~"$strategy"} / clamp_min(o + f, 1)') == {"f", "o"}


# ---------- where the names come from ----------

@pytest.fixture(scope="module")
def haproxy_names() -> Iterator[set[str]]:
    exe = shutil.which("haproxy")
    if exe is None:
        pytest.skip("haproxy is not installed (apt install haproxy)")
    port, backend = free_port(), free_port()
    cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
    cfg.write(f"""
global
    log stderr local0 emerg
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend stats
    bind 127.0.0.1:{port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend fe
    bind 127.0.0.1:{free_port()}
    default_backend app
backend app
    server app-1 127.0.0.1:{backend} check inter 1s
""")
    cfg.close()
    proc = subprocess.Popen([exe, "-db", "-f", cfg.name], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        text = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert text, "HAProxy's exporter did not answer"
        yield exposition_names(text)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.unlink(cfg.name)


def harness_exposition() -> str:
    reg = CollectorRegistry()
    m = make_loadgen_metrics(reg)
    h = Histogram()
    for v in (3.0, 30.0, 300.0, 3000.0):
        h.record(v)
    m.observe_second({"strategy": "a", "trial": 1, "ok_rps": 3, "failed_rps": 1,
                      "sent_rps": 4, "dropped_rps": 0, "offered_rps": 4, "in_flight": 2,
                      "replicas_desired": 2, "replicas_running": 2, "replicas_ready": 1,
                      "autoscaler_metric": 0.5, "autoscaler_target": 0.6,
                      "loadgen_saturated": 0, "loadgen_cpu_pct": 50.0,
                      "latency_hist": h.encode()})
    m.observe_event({"strategy": "a", "trial": 1, "kind": "fault", "action": "crash",
                     "outcome": "ok"})
    m.observe_event({"strategy": "a", "trial": 1, "kind": "load_stage", "stage": "1",
                     "rps": 10, "t_s": 0})
    m.observe_second({"strategy": "a", "trial": 1, "t_s": 0})
    return generate_latest(reg).decode()


def harness_names() -> set[str]:
    return exposition_names(harness_exposition())


def test_loadgen_metrics_are_declared_once_and_all_exported() -> None:
    names = harness_names()
    assert exposed_names() <= names
    assert all(n.startswith("harness_") for n in exposed_names())


def _sample(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert m, f"{series} not in the exposition"
    return float(m.group(1))


def test_loadgen_metrics_follow_prometheus_conventions() -> None:
    """Counters end in _total, the histogram is in seconds, gauges are levels only."""
    for m in HARNESS_METRICS:
        assert (m.type == "counter") == m.name.endswith("_total"), m.name
        assert not re.search(r"_(ms|pct|rps)$|_ms_", m.name), f"{m.name}: not a base unit"
        if m.type == "gauge":
            assert not re.search(r"_(total|sum|count|bucket)$", m.name), m.name
    text = harness_exposition()
    assert _sample(text, 'harness_requests_total{outcome="ok",strategy="a"}') == 3
    assert _sample(text, 'harness_loadgen_cpu_seconds_total{strategy="a"}') == 0.5
    assert _sample(text, 'harness_faults_total{action="crash",strategy="a"}') == 1
    # the other actions exist at 0 from the start: a first fault is an increase
    assert _sample(text, 'harness_faults_total{action="kill",strategy="a"}') == 0
    assert _sample(text, 'harness_load_stage{strategy="a"}') == 1
    # 3 ms, 30 ms, 300 ms, 3 s: the histogram's buckets are seconds
    assert _sample(text, 'harness_request_duration_seconds_bucket{le="0.005",strategy="a"}') \
        == 1
    assert _sample(text, 'harness_request_duration_seconds_bucket{le="0.5",strategy="a"}') == 3
    assert _sample(text, 'harness_request_duration_seconds_count{strategy="a"}') == 4
    assert _sample(text, 'harness_request_duration_seconds_sum{strategy="a"}') == \
        pytest.approx(3.333, rel=0.02)
    assert _sample(text, 'harness_replicas{state="ready",strategy="a"}') == 1


def test_every_query_names_an_exported_metric(haproxy_names: set[str]) -> None:
    known = haproxy_names | harness_names() | APP_CONTRACT
    problems = []
    for where, expr in queries():
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric in {expr!r}")
        for n in sorted(names - known):
            problems.append(f"{where}: {n!r} is exported by neither the app, HAProxy nor "
                            "the harness")
    assert problems == []
    # the three sources are all on the dashboard
    used = set().union(*(metric_names(e) for _, e in queries()))
    assert used & haproxy_names and used & APP_CONTRACT and used & harness_names()


def test_sample_app_exports_the_contract() -> None:
    if importlib.util.find_spec("sample_app.__main__") is None:
        pytest.skip("sample_app is not built yet; its names are checked against the contract")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "STARTUP_S": "0",
           "WORKERS": "2", "SERVICE_MS": "5"}
    proc = subprocess.Popen([sys.executable, "-m", "sample_app"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not text:
            try:
                # one request so labelled series (requests by code) exist
                urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=5).read()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                time.sleep(0.2)
        assert text, "the sample app did not answer /metrics"
        missing = APP_CONTRACT - exposition_names(text)
        assert missing == set()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt install prometheus)")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:q{i}", "expr": expr.replace("$strategy", ".*")}
        for i, (_, expr) in enumerate(queries())]}]}
    f = tmp_path / "rules.yml"
    f.write_text(yaml.safe_dump(rules))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------- dashboard, provisioning, compose snippet ----------

def test_dashboard_json_shape() -> None:
    d = dashboard()
    assert d["uid"] == "harness-run" and d["refresh"]
    panels = [p for p in d["panels"] if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    for must in ("Offered vs served rate", "Latency p95 / p99 (client side)", "Error rate",
                 "Replicas: desired vs ready", "Autoscaler metric vs target"):
        assert must in titles
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["datasource"]["uid"] == "harness-prometheus"
        assert p["targets"], p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
    var = d["templating"]["list"][0]
    assert var["name"] == "strategy" and "harness_" in var["definition"]


def test_provisioning_points_at_the_mounted_dashboards() -> None:
    ds = yaml.safe_load((DASH / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == "harness-prometheus" and source["type"] == "prometheus"
    assert source["url"] == "${PROMETHEUS_URL}"
    prov = yaml.safe_load((DASH / "grafana/provisioning/dashboards/harness.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "harness" / "assets" / "docker-compose.yml").read_text())
    g = compose["services"]["grafana"]
    assert g["profiles"] == ["observability"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in g["volumes"]}
    # relative to the compose file's folder (it ships in the package: harness/assets/)
    assert mounts[path] == "../../dashboards/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "../../dashboards/grafana/provisioning"
    for host_dir in mounts.values():
        assert (ROOT / "harness" / "assets" / host_dir).resolve().is_dir()
    env = g["environment"]
    assert env["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"  # loopback only
    assert "PROMETHEUS_URL" in env
    assert g["labels"]["harness.managed"] == "true"


def test_compose_file_with_observability_profile_is_valid() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed")
    r = subprocess.run([exe, "-f", str(ROOT / "harness" / "assets" / "docker-compose.yml"),
                        "--project-directory", str(ROOT / "harness" / "assets"),
                        "--profile", "observability",
                        "config", "--services"], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "grafana" in r.stdout.split()


def test_grafana_has_no_default_admin_login() -> None:
    """Grafana's image creates admin/admin unless told otherwise: anyone on the machine
    could then log in and change dashboards or data sources. Checked in the config only
    (there is no Grafana image here); the keys are Grafana's documented settings."""
    doc = yaml.safe_load((Path(__file__).resolve().parent.parent / "harness" / "assets"
                          / "docker-compose.yml")
                         .read_text())
    env = doc["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_DISABLE_INITIAL_ADMIN_CREATION"] == "true"
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true"
    assert env["GF_AUTH_BASIC_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"  # read-only is all there is
# ---------- a real Prometheus scraping a real run ----------

SCRAPE_SCENARIO = """\
name: scrape
seed: 1
output: {out}
app:
  env: {{WORKERS: 4, SERVICE_MS: 20, SERVICE_DIST: exponential, QUEUE_LIMIT: 20}}
load:
  warmup_s: 2
  stages:
    - {{name: low, duration_s: 10, rps: 40}}
    - {{name: high, duration_s: 12, rps: 120}}
faults:
  - {{at_s: 12, action: crash, count: 1}}
strategies:
  - name: auto
    kind: orchestrated
    replicas: 2
    autoscaler: {{policy: hpa, metric: utilization, target: 0.5, min_replicas: 2,
                 max_replicas: 4, interval_s: 2}}
"""


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read().decode())


@pytest.mark.slow
def test_prometheus_scrapes_a_run_and_the_panels_are_not_empty(tmp_path: Path) -> None:
    """dashboards/prometheus/prometheus.yml as documented, the real `prometheus` binary
    scraping `harness run --metrics-port` (local platform: real replicas and HAProxy),
    then every harness_* query of the dashboard evaluated over the run: none is empty."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("prometheus is not installed (apt install prometheus)")
    metrics_port, prom_port = free_port(), free_port()
    cfg = yaml.safe_load((DASH / "prometheus" / "prometheus.yml").read_text())
    # the documented file, only its target moved to a free port
    assert cfg["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    cfg["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{metrics_port}"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "scrape.yaml").write_text(SCRAPE_SCENARIO.format(out=tmp_path / "results"))
    prom = subprocess.Popen(
        [exe, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--web.listen-address=127.0.0.1:{prom_port}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get_json(f"{api}/status/buildinfo")
                break
            except OSError:
                assert time.monotonic() < deadline, "Prometheus did not start"
                time.sleep(0.5)
        start = time.time()
        r = subprocess.run([sys.executable, "-m", "harness.cli", "run",
                            str(tmp_path / "scrape.yaml"), "--platform", "local",
                            "--metrics-port", str(metrics_port)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        # the last scrape of the run's final seconds: one more scrape interval and a margin
        time.sleep(3)
        end = time.time()
        targets = _get_json(f"{api}/targets")["data"]["activeTargets"]
        assert [t["labels"]["job"] for t in targets] == ["harness"]
        empty = []
        for where, expr in queries():
            if not any(n.startswith("harness_") for n in metric_names(expr)):
                continue  # app_* and haproxy_* come from the run's own Prometheus
            q = urllib.parse.urlencode({"query": expr.replace("$strategy", ".*"),
                                        "start": f"{start:.3f}", "end": f"{end:.3f}",
                                        "step": "1"})
            res = _get_json(f"{api}/query_range?{q}")
            assert res["status"] == "success", (where, res)
            if not any(s["values"] for s in res["data"]["result"]):
                empty.append(f"{where}: {expr}")
        assert empty == []
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(timeout=10)
