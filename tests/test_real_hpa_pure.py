"""Policy kubernetes-hpa without a cluster: the custom metrics adapter over real TLS on
127.0.0.1 (discovery, reads with label selectors, the push token, stale values, the Host
check, the read log), the HPA object made from an autoscaler block, the rows made from an
HPA status, the scenario's checks, and the agreement check against the harness's port."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.autoscale.agreement import check
from harness.autoscale.hpa import HpaPolicy
from harness.autoscale.replay import replay_rows
from harness.autoscale.spec import AutoscalerSpec
from harness.deploy.base import AppSpec, DeploySpec
from harness.platforms.kubernetes import hpa_objects, metrics_adapter
from harness.platforms.kubernetes.metrics_adapter import Store, matches, parse_selector
from harness.platforms.kubernetes.real_hpa import (
    PodSeen,
    classify,
    parse_quantity,
    served_mean_milli,
    sync_row,
)
from harness.platforms.kubernetes.run_options import parse_duration_s

SEL = "harness.role=app,harness.run=r1,harness.trial=real-1"
LABELS = {"harness.role": "app", "harness.run": "r1", "harness.trial": "real-1",
          "harness.managed": "true"}


# ── label selectors ───────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("selector,labels,ok", [
    ("", {}, True),
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "b"}, True),
    ("a=b", {"a": "c"}, False),
    ("a!=b", {}, True),
    ("a!=b", {"a": "b"}, False),
    ("a in (x, y),b", {"a": "y", "b": "1"}, True),
    ("a in (x,y)", {"a": "z"}, False),
    ("a notin (x,y)", {"a": "z"}, True),
    ("!a", {"a": "1"}, False),
    ("!a", {}, True),
    (SEL, LABELS, True),
    (SEL, {**LABELS, "harness.trial": "port-1"}, False),
])
def test_label_selector(selector: str, labels: dict[str, str], ok: bool) -> None:
    assert matches(labels, parse_selector(selector)) is ok


@pytest.mark.parametrize("bad", ["a in (x", "a)", "a=b=c", "a in x"])
def test_label_selector_refuses_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_selector(bad)


# ── the store ─────────────────────────────────────────────────────────────────────────────

class Tick:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _push(store: Store, values: dict[str, float] | None, since: int = 0,
          token: str = "tok") -> dict[str, Any]:
    doc: dict[str, Any] = {"token": token, "namespace": "ns", "metric": "utilization",
                           "since": since, "window_s": 10}
    if values is not None:
        doc["values"] = [{"pod": p, "labels": LABELS, "value": v} for p, v in values.items()]
    return store.push(doc)


def test_store_serves_milli_values_logs_reads_and_forgets_stale_ones() -> None:
    clock = Tick()
    store = Store("tok", max_age_s=5, clock=clock)
    _push(store, {"a": 0.6, "b": 0.2345, "c": 1.0})
    items = store.read("ns", "*", "utilization", SEL, "", "system:serviceaccount:"
                       "kube-system:horizontal-pod-autoscaler")
    assert {i["describedObject"]["name"]: i["value"] for i in items} == {
        "a": "600m", "b": "235m", "c": "1000m"}  # 0.2345 → 234.5 m rounds half up
    assert store.read("ns", "a", "utilization", SEL, "", "")[0]["value"] == "600m"
    assert store.read("ns", "*", "utilization", "harness.trial=other", "", "") == []
    assert store.read("ns", "*", "rps", SEL, "", "") == []  # never pushed
    clock.t += 6  # older than max_age_s: the HPA must see missing pods, not stale ones
    assert store.read("ns", "*", "utilization", SEL, "", "") == []
    # a push without values only collects reads: it leaves the values (and their age)
    reply = _push(store, None, since=1)
    assert [r["seq"] for r in reply["reads"]] == [2, 3, 4, 5]
    assert reply["reads"][-1]["served"] == {}
    first = _push(store, None)["reads"][0]
    assert first["served"] == {"a": 600, "b": 235, "c": 1000}
    assert first["user"].endswith("horizontal-pod-autoscaler")
    assert first["selector"] == SEL


def test_store_refuses_a_bad_token_and_bad_values() -> None:
    store = Store("tok", max_age_s=5)
    with pytest.raises(PermissionError):
        _push(store, {"a": 1.0}, token="nope")
    with pytest.raises(ValueError):
        _push(store, {"a": float("nan")})
    with pytest.raises(ValueError):
        store.push({"token": "tok", "namespace": "ns", "metric": "a/b"})


# ── the adapter over TLS ──────────────────────────────────────────────────────────────────

@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    d = tmp_path_factory.mktemp("adapter")
    cert, key = hpa_objects.serving_cert(["madapter.ns.svc", "madapter.ns.svc.cluster.local"])
    (d / "tls.crt").write_bytes(cert)
    (d / "tls.key").write_bytes(key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store("tok", max_age_s=30, metrics=("utilization",))
    httpd = metrics_adapter.serve("127.0.0.1", port, str(d / "tls.crt"), str(d / "tls.key"),
                                  store, frozenset({"127.0.0.1", "madapter.ns.svc"}))
    try:
        yield port, d / "tls.crt"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _call(port: int, ca: Path, method: str, path: str, body: Any = None,
          host: str = "madapter.ns.svc") -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False  # we connect to 127.0.0.1; the SAN is checked below
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Host": host,
                                                        "Content-Type": "application/json"})
        r = conn.getresponse()
        text = r.read().decode()
        return r.status, (json.loads(text) if text.startswith("{") else text)
    finally:
        conn.close()


def test_adapter_speaks_the_custom_metrics_api_over_tls(adapter: tuple[int, Path]) -> None:
    port, ca = adapter
    # the certificate names the Service's DNS names (what the API server verifies)
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            ctx.wrap_socket(raw, server_hostname="madapter.ns.svc") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    status, doc = _call(port, ca, "GET", "/apis/custom.metrics.k8s.io/v1beta1")
    assert status == 200 and doc["kind"] == "APIResourceList"
    assert doc["groupVersion"] == "custom.metrics.k8s.io/v1beta1"
    assert [r["name"] for r in doc["resources"]] == ["pods/utilization"]
    status, doc = _call(port, ca, "POST", "/harness/values", {
        "token": "tok", "namespace": "ns", "metric": "utilization", "since": 0,
        "values": [{"pod": "p1", "labels": LABELS, "value": 0.75}]})
    assert status == 200 and doc["reads"] == []
    q = "labelSelector=" + SEL.replace("=", "%3D").replace(",", "%2C")
    status, doc = _call(port, ca, "GET", "/apis/custom.metrics.k8s.io/v1beta1/namespaces/"
                        f"ns/pods/%2A/utilization?{q}")  # '*' as the HPA sends it
    assert status == 200 and doc["kind"] == "MetricValueList"
    item = doc["items"][0]
    assert item["describedObject"] == {"kind": "Pod", "namespace": "ns", "name": "p1",
                                       "apiVersion": "/v1"}
    assert item["value"] == "750m" and item["metricName"] == "utilization"
    status, doc = _call(port, ca, "GET", "/apis/custom.metrics.k8s.io/v1beta1/namespaces/"
                        "ns/pods/p9/utilization")
    assert status == 404
    status, doc = _call(port, ca, "POST", "/harness/values", {"token": "bad", "namespace":
                                                              "ns", "metric": "utilization"})
    assert status == 403
    status, _ = _call(port, ca, "GET", "/apis/custom.metrics.k8s.io/v1beta1", host="evil.test")
    assert status == 421  # a name this server does not serve (DNS rebinding)
    status, doc = _call(port, ca, "GET", "/readyz", host="127.0.0.1:1")
    assert (status, doc) == (200, "ok")


# ── the objects ───────────────────────────────────────────────────────────────────────────

SPEC = DeploySpec(run_id="r1", trial_id="real-1", app=AppSpec(image="harness-app:latest"),
                  replicas=2)


def test_hpa_object_states_the_whole_autoscaler_block() -> None:
    a = AutoscalerSpec.model_validate({
        "policy": "kubernetes-hpa", "target": 0.6, "min_replicas": 2, "max_replicas": 6,
        "interval_s": 2, "behavior": {"scale_up": {"policies": [
            {"type": "Pods", "value": 1, "period_s": 2}]},
            "scale_down": {"stabilization_window_s": 15}}})
    h = hpa_objects.hpa(SPEC, "real-1-hpa", "real-1-app", a)
    assert h["apiVersion"] == "autoscaling/v2beta2"
    s = h["spec"]
    assert s["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                   "name": "real-1-app"}
    assert (s["minReplicas"], s["maxReplicas"]) == (2, 6)
    assert s["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "utilization"},
        "target": {"type": "AverageValue", "averageValue": "600m"}}}]
    assert s["behavior"]["scaleUp"] == {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                        "policies": [{"type": "Pods", "value": 1,
                                                      "periodSeconds": 2}]}
    assert s["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 15,
                                          "selectPolicy": "Max", "policies": [
                                              {"type": "Percent", "value": 100,
                                               "periodSeconds": 15}]}
    assert h["metadata"]["labels"]["harness.managed"] == "true"


def test_adapter_objects_and_apiservice() -> None:
    objs = hpa_objects.adapter_objects(SPEC, "harness-r1", "utilization", b"C", b"K", "tok",
                                       "harness-base:bookworm")
    kinds = [o["kind"] for _, o in objs]
    assert kinds == ["Secret", "ConfigMap", "Pod", "Service"]
    assert all(o["metadata"]["labels"]["harness.run"] == "r1" for _, o in objs)
    pod = objs[2][1]["spec"]
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "--host" in pod["containers"][0]["command"]
    assert objs[1][1]["data"]["metrics_adapter.py"].startswith('"""A custom metrics API')
    api = hpa_objects.apiservice(SPEC, "harness-r1", "madapter", b"CA")
    assert api["metadata"]["name"] == "v1beta1.custom.metrics.k8s.io"
    assert api["spec"]["service"] == {"namespace": "harness-r1", "name": "madapter",
                                      "port": 443}
    assert "insecureSkipTLSVerify" not in api["spec"] and api["spec"]["caBundle"]


@pytest.mark.parametrize("value,text", [(0.6, "600m"), (250, "250000m"), (0.001, "1m")])
def test_quantity(value: float, text: str) -> None:
    assert hpa_objects.quantity(value) == text


@pytest.mark.parametrize("text,value", [("612m", 0.612), ("3", 3.0), ("1.5k", 1500.0),
                                        ("2Ki", 2048.0), ("1e3", 1000.0), ("", None),
                                        ("12x", None), (None, None)])
def test_parse_quantity(text: str | None, value: float | None) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text,seconds", [("15s", 15.0), ("2s", 2.0), ("500ms", 0.5),
                                          ("1m30s", 90.0), ("x", None), ("15", None)])
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration_s(text) == seconds


# ── rows from the HPA's status ────────────────────────────────────────────────────────────

def test_sync_row_from_status() -> None:
    status = {"currentReplicas": 2, "desiredReplicas": 4,
              "currentMetrics": [{"type": "Pods", "pods": {
                  "metric": {"name": "utilization"}, "current": {"averageValue": "1050m"}}}],
              "conditions": [
                  {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"},
                  {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound"},
                  {"type": "ScalingLimited", "status": "True", "reason": "ScaleUpLimit"}]}
    pods = [PodSeen("a", "Running", False), PodSeen("b", "Running", False),
            PodSeen("c", "Running", False), PodSeen("d", "Pending", False),
            PodSeen("e", "Running", True)]
    read = {"t": 5.0, "served": {"a": 1100, "b": 1000}}
    row = sync_row(read, 12.5, status, pods, 0.6, ["SuccessfulRescale: New size: 4"])
    assert row["metric_values"] == "a=1.1;b=1.0;c=missing;d=unready"
    assert (row["current_replicas"], row["desired"], row["action"]) == (2, 4, "scale")
    assert (row["ready"], row["missing"], row["unready"]) == (2, 1, 1)
    assert row["metric_mean"] == 1.05 and row["policy"] == "kubernetes-hpa"
    assert row["reason"] == ("ValidMetricFound;SucceededRescale;ScaleUpLimit;"
                             "SuccessfulRescale: New size: 4")
    failed = {"currentReplicas": 2, "desiredReplicas": 0, "conditions": [
        {"type": "ScalingActive", "status": "False", "reason": "FailedGetPodsMetric",
         "message": "unable to get metric utilization"}]}
    row = sync_row({"t": 1.0, "served": {}}, 1.0, failed, pods[:2], 0.6, [])
    assert row["action"] == "error" and "FailedGetPodsMetric" in row["reason"]
    assert row["desired"] == 2  # the controller keeps the scale; the status's 0 is stale
    assert row["metric_values"] == "a=missing;b=missing"


def test_classify_and_integer_mean() -> None:
    assert classify([PodSeen("x", "Failed", False)], {}) == {}
    assert served_mean_milli({"a": 601, "b": 600}) == 600  # int64 division, as the HPA
    assert served_mean_milli({}) is None


# ── the scenario's checks ─────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("extra,why", [
    ({"tolerance": 0.2}, "tolerance"),
    ({"target": 0.0005}, "milli-units"),
    ({"behavior": {"scale_up": {"policies": [{"type": "Pods", "value": 1,
                                              "period_s": 1.5}]}}}, "whole seconds"),
    ({"metric": {"name": "My Metric", "promql": "x"}}, "metric name"),
])
def test_kubernetes_hpa_refuses_what_an_hpa_object_cannot_say(extra: dict[str, Any],
                                                               why: str) -> None:
    with pytest.raises(ValueError, match=why):
        AutoscalerSpec.model_validate({"policy": "kubernetes-hpa", "target": 0.6,
                                       "max_replicas": 4, **extra})


def test_kubernetes_hpa_needs_an_orchestrated_strategy() -> None:
    from harness.scenario.models import Strategy

    with pytest.raises(ValueError, match="orchestrated"):
        Strategy.model_validate({"name": "x", "kind": "compose", "replicas": 2,
                                 "autoscaler": {"policy": "kubernetes-hpa", "target": 0.6,
                                                "max_replicas": 4}})


# ── agreement ─────────────────────────────────────────────────────────────────────────────

AUTOSCALER = AutoscalerSpec.model_validate({
    "policy": "kubernetes-hpa", "target": 0.6, "min_replicas": 2, "max_replicas": 8,
    "interval_s": 2, "behavior": {"scale_up": {"policies": [
        {"type": "Pods", "value": 2, "period_s": 4}]},
        "scale_down": {"stabilization_window_s": 10}}})


def _real_rows() -> list[dict[str, Any]]:
    """A plausible controller trace: the port's own decisions (on inputs that follow
    them), then written as the real controller's rows."""
    rows: list[dict[str, Any]] = []
    current = 2
    load = [1.2] * 6 + [0.9] * 4 + [0.2] * 12  # total demand in 'busy replicas'
    port = HpaPolicy(AutoscalerSpec.model_validate(
        {**AUTOSCALER.model_dump(), "policy": "hpa"}))
    from harness.autoscale.base import Observation, PolicyState

    state = PolicyState()
    for i, per in enumerate(load):
        t = 2.0 * i
        values = {f"p{k}": per * 2 / current for k in range(current)}
        d = port.decide(Observation(current, values, 0, 0, 0.6), state, t)
        state = d.state
        if d.desired != current:
            state = state.with_scale(t, current, d.desired)
        rows.append({"t_s": t, "policy": "kubernetes-hpa", "current_replicas": current,
                     "metric_values": ";".join(f"{k}={v!r}" for k, v in values.items()),
                     "desired": d.desired, "reason": "ValidMetricFound",
                     "action": "scale" if d.desired != current else "none"})
        current = d.desired
    return rows


def test_agreement_is_total_on_the_ports_own_trace_and_names_a_difference() -> None:
    rows = _real_rows()
    assert max(r["desired"] for r in rows) > 2  # it scaled up, and back down
    assert rows[-1]["desired"] < max(r["desired"] for r in rows)
    ag = check(rows, AUTOSCALER)
    assert (ag.syncs, ag.agreed, ag.disagreements) == (len(rows), len(rows), ())
    rows[3] = {**rows[3], "desired": rows[3]["desired"] + 1}
    ag = check(rows, AUTOSCALER)
    assert ag.agreed == len(rows) - 1
    assert [d.t_s for d in ag.disagreements] == [rows[3]["t_s"]]
    assert "differs at t=6.0 s" in ag.text("real #1")


def test_recorded_history_follows_the_real_controllers_scale_events() -> None:
    # the real controller scaled 2 → 4 at t=0; at t=2 the metric asks for 8: with its
    # scale event in the history the port's rate limit (2 pods per 4 s) allows nothing
    # more yet; with its own (no scale at t=0: it saw 'within tolerance') it would add 2
    rows = [{"t_s": 0.0, "current_replicas": 2, "metric_values": "a=0.6;b=0.6",
             "desired": 4, "action": "scale"},
            {"t_s": 2.0, "current_replicas": 4, "metric_values": "a=1.2;b=1.2;c=1.2;d=1.2",
             "desired": 4, "action": "none"}]
    spec = AutoscalerSpec.model_validate({**AUTOSCALER.model_dump(), "policy": "hpa"})
    own = replay_rows(rows, HpaPolicy(spec), spec)
    real = replay_rows(rows, HpaPolicy(spec), spec, recorded_history=True)
    assert own[1]["desired"] == 6 and real[1]["desired"] == 4


def test_replay_of_a_real_hpa_run_uses_its_port(tmp_path: Path) -> None:
    from harness.errors import HarnessError
    from harness.record.schema import DECISIONS, names
    from harness.replay import replay_run

    rows = _real_rows()
    (tmp_path / "run.json").write_text(json.dumps({"scenario": {"strategies": [
        {"name": "real", "kind": "orchestrated", "replicas": 2,
         "autoscaler": AUTOSCALER.model_dump(mode="json")}]}}))
    cols = names(DECISIONS)
    lines = [",".join(cols)]
    for r in rows:
        full = {"run_id": "r", "strategy": "real", "trial": 1, **r}
        lines.append(",".join(str(full.get(c, "")) for c in cols))
    (tmp_path / "decisions.csv").write_text("\n".join(lines) + "\n")
    said: list[str] = []
    tracks = replay_run(tmp_path, out=tmp_path / "replay", echo=said.append)
    assert list(tracks[0].replayed) == ["hpa"]
    assert any(f"hpa: {len(rows)}/{len(rows)} decisions equal" in s for s in said)
    with pytest.raises(HarnessError, match="cannot run offline"):
        replay_run(tmp_path, policies=["kubernetes-hpa"], echo=said.append)


def test_a_run_on_another_platform_refuses_the_real_hpa(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = tmp_path / "s.yaml"
    p.write_text("name: x\nload: {stages: [{name: a, duration_s: 5, rps: 10}]}\n"
                 "strategies:\n  - name: real\n    kind: orchestrated\n    replicas: 2\n"
                 "    autoscaler: {policy: kubernetes-hpa, target: 0.6, max_replicas: 4}\n")
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(p), "--platform",
                        "sim", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "kubernetes-hpa" in r.stderr and "--platform kubernetes" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
