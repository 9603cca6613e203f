"""The kubernetes platform's pure parts, without a cluster: kubeconfig parsing, names and
labels, manifests, pod states and events from pod objects (tests/data/k8s/, recorded
from the local 1.20 cluster), the Prometheus config (checked by the real promtool)."""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from harness.deploy.base import AppSpec, DeploySpec, ReplicaState
from harness.errors import PrerequisiteError
from harness.platforms.kubernetes import kube_prometheus, manifests
from harness.platforms.kubernetes.diagnostics import last_probe_failure, one_line
from harness.platforms.kubernetes.kubeconfig import (
    KubeConfig,
    find_kubeconfig,
    parse_kubeconfig,
)
from harness.platforms.kubernetes.node_runtime import docker_id
from harness.platforms.kubernetes.pods import (
    has_started,
    parse_pod,
    parse_time,
    pod_events,
    replica_state,
)
from tests.promtool import check_config

DATA = Path(__file__).resolve().parent / "data" / "k8s"
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _kubeconfig(user: dict[str, Any], cluster: dict[str, Any] | None = None) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "c", "cluster": cluster or {
            "server": "https://127.0.0.1:6443",
            "certificate-authority-data": base64.b64encode(PEM).decode()}}],
        "contexts": [{"name": "other", "context": {"cluster": "nope", "user": "u"}},
                     {"name": "local", "context": {"cluster": "c", "user": "u",
                                                   "namespace": "ns1"}}],
        "users": [{"name": "u", "user": user}]})


def test_kubeconfig_token_and_ca_data() -> None:
    cfg = parse_kubeconfig(_kubeconfig({"token": "abc"}), "k")
    assert (cfg.server, cfg.token, cfg.ca_data, cfg.namespace, cfg.insecure) == \
        ("https://127.0.0.1:6443", "abc", PEM, "ns1", False)
    assert "token" in cfg.describe() and "TLS verified" in cfg.describe()


def test_kubeconfig_files_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(PEM)
    (tmp_path / "u.crt").write_bytes(b"CERT")
    (tmp_path / "u.key").write_bytes(b"KEY")
    (tmp_path / "tok").write_text("t0k\n")
    text = _kubeconfig({"client-certificate": "u.crt", "client-key": "u.key",
                        "tokenFile": "tok"},
                       {"server": "https://10.0.0.1:6443/", "certificate-authority": "ca.crt"})
    cfg = parse_kubeconfig(text, "k", tmp_path)
    assert (cfg.server, cfg.ca_data, cfg.client_cert_data, cfg.client_key_data, cfg.token) \
        == ("https://10.0.0.1:6443", PEM, b"CERT", b"KEY", "t0k")


def test_kubeconfig_insecure_and_named_context() -> None:
    text = _kubeconfig({"token": "x"}, {"server": "https://h:1",
                                        "insecure-skip-tls-verify": True})
    assert parse_kubeconfig(text).insecure
    with pytest.raises(PrerequisiteError, match="no cluster named 'nope'"):
        parse_kubeconfig(text, context="other")


@pytest.mark.parametrize(("user", "cluster", "message"), [
    ({"exec": {"command": "aws"}}, None, "exec/auth-provider plugin"),
    ({"auth-provider": {"name": "gcp"}}, None, "exec/auth-provider plugin"),
    ({"token": "x"}, {"server": "ftp://h"}, "no https:// server"),
    ({"token": "x"}, {"server": "https://h", "certificate-authority-data": "@@"},
     "not base64"),
], ids=["exec", "auth-provider", "no-server", "bad-ca"])
def test_kubeconfig_refusals(user: dict[str, Any], cluster: dict[str, Any] | None,
                             message: str) -> None:
    with pytest.raises(PrerequisiteError, match=re.escape(message)):
        parse_kubeconfig(_kubeconfig(user, cluster), "k")


def test_find_kubeconfig_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("x")
    env_file = tmp_path / "env.yaml"
    env_file.write_text("x")
    assert find_kubeconfig(None, {}, home) == home / ".kube" / "config"
    assert find_kubeconfig(None, {"KUBECONFIG": f"{tmp_path}/missing:{env_file}"},
                           home) == env_file
    assert find_kubeconfig(env_file, {}, home) == env_file
    no_state = {"HARNESS_K8S_STATE": str(tmp_path / "no-state")}
    assert find_kubeconfig(None, no_state, tmp_path) is None  # no cluster configured
    # last, the local cluster's (scripts/k8s-local.sh up writes it)
    state = tmp_path / "state"
    state.mkdir()
    (state / "kubeconfig").write_text("x")
    local = {"HARNESS_K8S_STATE": str(state)}
    assert find_kubeconfig(None, local, tmp_path) == state / "kubeconfig"
    assert find_kubeconfig(None, local, home) == home / ".kube" / "config"
    with pytest.raises(PrerequisiteError, match="no such file"):
        find_kubeconfig(tmp_path / "nope", {}, home)


@pytest.mark.parametrize(("run_id", "expected"), [
    ("spike-demo-20261207-013000", "harness-spike-demo-20261207-013000"),
    ("t-k8s-123-ab12cd34", "harness-t-k8s-123-ab12cd34"),
    ("Spike_Demo.1", None),  # changed characters: a hash keeps it unique
    ("a" * 128, None),  # too long: shortened with a hash
], ids=["plain", "test-id", "upper-and-dots", "long"])
def test_namespace_name(run_id: str, expected: str | None) -> None:
    ns = manifests.namespace_name(run_id)
    assert DNS_1123.match(ns) and len(ns) <= 63, ns
    if expected is not None:
        assert ns == expected
    else:
        assert ns.startswith("harness-") and re.search(r"-[0-9a-f]{8}$", ns)


def test_names_that_differ_stay_different() -> None:
    ids = ["Run-1", "run-1", "run_1", "run.1", "a" * 100 + "x", "a" * 100 + "y"]
    assert len({manifests.namespace_name(i) for i in ids}) == len(ids)
    assert len({manifests.label_value(i) for i in ids}) == len(ids)


@pytest.mark.parametrize("value", ["run-1", "Run_1.a", "x" * 63, "x" * 64, "a" * 128,
                                   "-starts-with-dash", "t-k8s-1-ab"])
def test_label_values_are_valid(value: str) -> None:
    v = manifests.label_value(value)
    assert LABEL_VALUE.match(v), v
    if LABEL_VALUE.match(value):
        assert v == value  # a valid id is kept as it is: selectors by hand still work


SPEC = DeploySpec(run_id="r-1", trial_id="autoscale-1", replicas=2,
                  app=AppSpec(image="harness-app:latest", port=8000, ready_path="/readyz",
                              env={"WORKERS": "4", "SERVICE_MS": "50"}))


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"]["labels"])


def test_every_object_carries_the_run_labels() -> None:
    objs = [manifests.namespace("r-1"), manifests.bare_pod(SPEC, "p"),
            manifests.deployment(SPEC, "d", 2), manifests.service(SPEC, "s")]
    for o in objs:
        assert _labels(o)["harness.managed"] == "true"
        assert _labels(o)["harness.run"] == "r-1"
        assert o["metadata"]["annotations"]["harness.run-id"] == "r-1"
    tmpl = manifests.deployment(SPEC, "d", 2)["spec"]["template"]["metadata"]["labels"]
    assert tmpl["harness.managed"] == "true" and tmpl["harness.run"] == "r-1"


def test_pod_spec_as_the_docker_platform_runs_the_app() -> None:
    pod = manifests.bare_pod(SPEC, "p")
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert spec["restartPolicy"] == "Never"
    assert (c["image"], c["imagePullPolicy"]) == ("harness-app:latest", "Never")
    assert {e["name"]: e["value"] for e in c["env"]} == \
        {"PORT": "8000", "WORKERS": "4", "SERVICE_MS": "50"}
    assert c["ports"][0]["containerPort"] == 8000
    probe = c["readinessProbe"]
    assert probe["httpGet"] == {"path": "/readyz", "port": 8000}
    assert probe["periodSeconds"] == 1
    assert "livenessProbe" not in c  # readiness is not liveness
    assert "command" not in c and "args" not in c  # the image's own entry point


def test_deployment_and_service_select_the_trial_app_pods() -> None:
    dep = manifests.deployment(SPEC, "d", 3, pull_policy="IfNotPresent")
    sel = dep["spec"]["selector"]["matchLabels"]
    tmpl = dep["spec"]["template"]
    assert dep["spec"]["replicas"] == 3
    assert all(tmpl["metadata"]["labels"][k] == v for k, v in sel.items())
    assert tmpl["spec"]["restartPolicy"] == "Always"
    assert tmpl["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    svc = manifests.service(SPEC, "s")
    assert svc["spec"]["type"] == "NodePort" and svc["spec"]["selector"] == sel
    svc["spec"]["ports"][0]["nodePort"] = 31234
    assert manifests.node_port(svc) == 31234
    assert sel["harness.role"] == "app" and sel["harness.trial"] == "autoscale-1"


# ── pods: recorded objects ────────────────────────────────────────────────────────────


def _pod(name: str) -> dict[str, Any]:
    return dict(json.loads((DATA / f"{name}.json").read_text()))


@pytest.mark.parametrize(("name", "state", "restarts", "exit_code"), [
    ("pending", ReplicaState.STARTING, 0, None),
    ("running-unready", ReplicaState.STARTING, 0, None),
    ("running-ready", ReplicaState.READY, 0, None),
    ("crashloop", ReplicaState.EXITED, 0, 137),  # the first crash, before its restart
    ("crashloop-backoff", ReplicaState.EXITED, 1, 137),  # the second, backing off
    ("restarted-ready", ReplicaState.READY, 1, 137),
    ("manual-crashed", ReplicaState.EXITED, 0, 137),
    ("never-pull", ReplicaState.STARTING, 0, None),
], ids=lambda v: v if isinstance(v, str) else None)
def test_replica_state_of_recorded_pods(name: str, state: ReplicaState, restarts: int,
                                        exit_code: int | None) -> None:
    p = parse_pod(_pod(name))
    assert replica_state(p) == state
    assert p.restarts == restarts
    assert p.exit_code == exit_code


@pytest.mark.parametrize(("name", "started"), [
    ("pending", False), ("never-pull", False), ("running-unready", True),
    ("crashloop", True), ("crashloop-backoff", True), ("manual-crashed", True)])
def test_only_started_pods_are_replicas(name: str, started: bool) -> None:
    assert has_started(parse_pod(_pod(name))) == started


def test_recorded_pod_details() -> None:
    ready = parse_pod(_pod("running-ready"))
    assert ready.ready and ready.started_at is not None and ready.ready_since is not None
    assert ready.ready_since >= ready.started_at
    assert ready.pod_ip and docker_id(ready.container_id)
    assert replica_state(ready, paused=True) == ReplicaState.PAUSED
    never = parse_pod(_pod("never-pull"))
    assert never.reason == "ErrImageNeverPull"


@pytest.mark.parametrize(("stamp", "seen", "expected"), [
    (None, 5.0, 5.0),       # no stamp: when the watch saw it
    (10.0, 10.3, 10.3),     # seen within the stamp's second: the watch's time
    (10.0, 11.0, 11.0),     # the bounds meet
    (10.0, 40.0, 11.0),     # listed later: the end of the stamp's second
])
def test_a_whole_second_stamp_is_dated_by_its_tightest_bound(
        stamp: float | None, seen: float, expected: float) -> None:
    from harness.platforms.kubernetes.pods import dated

    assert dated(stamp, seen) == expected


def test_pod_events_over_a_pod_life() -> None:
    pending, running = parse_pod(_pod("pending")), parse_pod(_pod("running-ready"))
    assert pending.created_at is not None
    # seen as it happened (the stamp's second): the watch's time, milliseconds late
    first = pod_events(None, pending, pending.created_at + 0.25)
    assert [e.kind for e in first][:1] == ["pod_created"]
    assert first[0].at_wall == pending.created_at + 0.25
    # listed long after: the end of the stamp's second, never the listing's time
    assert pod_events(None, pending, pending.created_at + 30)[0].at_wall == \
        pending.created_at + 1.0
    later = pod_events(pending, running, 101.0)
    assert "pod_created" not in [e.kind for e in later]
    if pending.scheduled_at is None:
        assert [e.kind for e in later] == ["pod_scheduled"]
    assert pod_events(running, running, 102.0) == []
    gone = pod_events(running, None, 103.0)
    assert [(e.kind, e.at_wall) for e in gone] == [("pod_deleted", 103.0)]
    crash = parse_pod(_pod("crashloop-backoff"))
    assert [e.kind for e in pod_events(running, crash, 104.0)] == ["pod_backoff"]
    assert [e.kind for e in pod_events(running, parse_pod(_pod("crashloop")), 104.0)] == []


def test_endpoints_changes() -> None:
    from harness.platforms.kubernetes.endpoints import changes, ready_pods

    ep = {"subsets": [{"addresses": [{"ip": "172.17.0.5", "targetRef": {"name": "a"}},
                                     {"ip": "172.17.0.6", "targetRef": {"name": "b"}}],
                       "notReadyAddresses": [{"ip": "172.17.0.7",
                                              "targetRef": {"name": "c"}}]}]}
    assert ready_pods(ep) == {"a", "b"}  # not-ready addresses get no traffic
    assert ready_pods({}) == set()
    assert changes({"a", "x"}, {"a", "b"}) == (["b"], ["x"])


def test_parse_time() -> None:
    assert parse_time("1970-01-01T00:00:10Z") == 10.0
    assert parse_time("1970-01-01T00:00:10.250000Z") == 10.25
    assert parse_time(None) is None and parse_time("garbage") is None


def test_diagnostics_helpers() -> None:
    events = [{"reason": "Scheduled", "message": "ok"},
              {"reason": "Unhealthy", "message": "Readiness probe failed: HTTP 503",
               "count": 4}]
    assert last_probe_failure(events) == "Readiness probe failed: HTTP 503 (×4)"
    assert one_line("a\n\nb\nc\n", 2) == "b | c"


# ── Prometheus through the API server ────────────────────────────────────────────────


def test_prometheus_config_scrapes_through_the_api_server(tmp_path: Path) -> None:
    cfg = KubeConfig(server="https://127.0.0.1:6443", source="k", token="secret",
                     ca_data=PEM)
    auth = kube_prometheus.write_credentials(tmp_path, cfg)
    token = Path(auth["authorization"]["credentials_file"])
    assert token.read_text() == "secret"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert Path(auth["tls_config"]["ca_file"]).read_bytes() == PEM
    groups = kube_prometheus.targets_document(
        [("p-2", "10.0.0.2"), ("p-1", "10.0.0.1"), ("p-3", "")], namespace="harness-r-1",
        app_port=8000, api_host_port="127.0.0.1:6443")
    assert groups == [
        {"targets": ["127.0.0.1:6443"],
         "labels": {"instance": f"10.0.0.{i}:8000", "pod": f"p-{i}",
                    "__metrics_path__": f"/api/v1/namespaces/harness-r-1/pods/p-{i}:8000"
                                        "/proxy/metrics"}} for i in (1, 2)]
    targets = tmp_path / "targets.json"
    kube_prometheus.write_targets(targets, groups)
    assert json.loads(targets.read_text()) == groups
    text = kube_prometheus.render_config(targets_file=targets, auth=auth)
    assert "secret" not in text  # the token is in its 0600 file only
    assert "scheme: https" in text and str(targets) in text
    check_config(tmp_path, text)


def test_insecure_kubeconfig_skips_verification_in_prometheus(tmp_path: Path) -> None:
    cfg = KubeConfig(server="https://h:6443", source="k", token="t", insecure=True)
    auth = kube_prometheus.write_credentials(tmp_path, cfg)
    assert auth["tls_config"] == {"insecure_skip_verify": True}


# ── registry, scenario ──────────────────────────────────────────────────────────────


def test_registered_for_every_kind() -> None:
    from harness.deploy import registry

    for kind in ("manual", "compose", "orchestrated"):
        reg = registry.DEPLOYERS[("kubernetes", kind)]
        assert {"node_address", "image_pull_policy"} <= reg.options
    with pytest.raises(PrerequisiteError, match="Kubernetes API client"):
        registry.create("kubernetes", "manual", spec=SPEC, on_event=lambda e: None,
                        clock=None, client=object())


def test_scenario_kubernetes_block(tmp_path: Path) -> None:
    from harness.errors import ScenarioError
    from harness.scenario.loader import load_scenario

    base = ("name: k\nplatform: kubernetes\nload: {stages: [{duration_s: 5, rps: 5}]}\n"
            "strategies: [{name: m, kind: manual, replicas: 1}]\n")
    f = tmp_path / "k.yaml"
    f.write_text(base + "kubernetes: {node_address: 10.0.0.5, image_pull_policy: "
                        "IfNotPresent}\n")
    sc = load_scenario(f).scenario
    assert (sc.platform, sc.kubernetes.node_address, sc.kubernetes.image_pull_policy) == \
        ("kubernetes", "10.0.0.5", "IfNotPresent")
    f.write_text(base + "kubernetes: {node_address: 'a b'}\n")
    with pytest.raises(ScenarioError, match=r"kubernetes\.node_address"):
        load_scenario(f)
