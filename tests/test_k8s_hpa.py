"""Policy kubernetes-hpa end to end on the local cluster (marker `k8s`): `harness run` with
the cluster's own HorizontalPodAutoscaler controller scaling a Deployment from the run's
Prometheus values, served by the harness's custom metrics adapter through the aggregation
layer (an APIService), not the legacy heapster path.

The module sets the controller's sync period to 2 s (`scripts/k8s-local.sh hpa-sync`,
restoring the earlier setting after), brings the cluster up when it is down (and down
again after), runs one spike, and checks: the real controller scaled up under the spike;
every sync is a row of decisions.csv with the values it was served; the harness's own HPA
port agrees on nearly every sync; run.json states the controller's settings; the report
shows both lines; nothing is left on the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from harness.platforms.kubernetes.cleanup import leftovers
from harness.platforms.kubernetes.client import KubeApiError, KubeClient, kube_client
from harness.platforms.kubernetes.hpa_objects import APISERVICE_PATH

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "k8s-local.sh"
STATE = Path(os.environ.get("HARNESS_K8S_STATE", "/var/lib/harness-k8s"))
SYNC = "2s"

SCENARIO = """\
name: k8s-hpa
seed: 3
platform: kubernetes
kubernetes: {{node_address: 127.0.0.1, image_pull_policy: Never}}
output: {out}
app:
  env: {{WORKERS: 4, SERVICE_MS: 50, SERVICE_DIST: exponential, QUEUE_LIMIT: 20,
         STARTUP_S: 1}}
load:
  warmup_s: 3
  warmup_rps: 60
  timeout_s: 3
  stages:
    - {{name: base, duration_s: 10, rps: 60}}
    - {{name: spike, duration_s: 35, rps: 240, ramp_s: 2}}
    - {{name: after, duration_s: 25, rps: 60, ramp_s: 2}}
slo: {{p95_ms: 300, error_rate: 0.01, stable_s: 3}}
strategies:
  - name: real
    kind: orchestrated
    replicas: 2
    autoscaler:
      policy: kubernetes-hpa
      metric: utilization
      target: 0.6
      min_replicas: 2
      max_replicas: 6
      interval_s: 2
      behavior:
        scale_up: {{policies: [{{type: Pods, value: 2, period_s: 2}}]}}
        scale_down: {{stabilization_window_s: 10}}
"""


def _script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout)


def _client() -> KubeClient | None:
    try:
        return kube_client(str(STATE / "kubeconfig"))
    except Exception:
        return None


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeClient]:
    setting = STATE / "hpa-sync-setting"
    before = setting.read_text() if setting.is_file() else None
    started = False
    client = _client()
    try:
        r = _script("hpa-sync", SYNC, timeout=120)  # restarts a running controller-manager
        assert r.returncode == 0, r.stdout + r.stderr
        if client is None:
            b = _script("build", timeout=3600)  # a no-op when cached (cold: ~10 min)
            assert b.returncode == 0, (b.stdout + b.stderr)[-800:]
            u = _script("up")
            started = u.returncode == 0
            client = _client()
            assert client is not None, (u.stdout + u.stderr)[-800:]
        assert (STATE / "hpa-sync-period").read_text().strip() == SYNC
        yield client
    finally:
        if started:
            _script("down", timeout=300)
        if before is None:
            setting.unlink(missing_ok=True)
        else:
            setting.write_text(before)
        if not started and client is not None and before is not None:
            _script("hpa-sync", before.strip(), timeout=120)


def test_the_real_hpa_scales_from_prometheus_values(kube: KubeClient, tmp_path: Path
                                                    ) -> None:
    scenario = tmp_path / "k8s-hpa.yaml"
    scenario.write_text(SCENARIO.format(out=tmp_path / "results"))
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(scenario),
                        "--run-id", "k8s-hpa-e2e"], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    out = r.stdout + r.stderr
    print(out[-3000:])
    assert r.returncode == 0, out[-3000:]
    run_dir = tmp_path / "results" / "k8s-hpa-e2e"
    meta = json.loads((run_dir / "run.json").read_text())
    hpa = meta["kubernetes"]["hpa_controller"]
    assert hpa["sync_period_s"] == 2.0 and hpa["tolerance"] == 0.1
    assert not [w for w in meta["warnings"] if "syncs every" in w]

    dec = pd.read_csv(run_dir / "decisions.csv")
    assert set(dec["policy"]) == {"kubernetes-hpa"}
    # one row per sync of the controller, ~2 s apart, over the ~70 s of load
    assert len(dec) >= 20, dec.to_string()
    gaps = dec["t_s"].diff().dropna()
    assert gaps.median() == pytest.approx(2.0, abs=0.3), gaps.describe()
    # the controller read the values the harness served: pods with milli-unit values
    served = dec[dec["metric_values"].str.contains(r"=\d", na=False)]
    assert len(served) >= 0.8 * len(dec)
    # it scaled up under the spike (2 → more) and said why in its conditions
    assert dec["desired"].max() > 2, dec[["t_s", "current_replicas", "desired"]].to_string()
    assert dec["reason"].str.contains("ValidMetricFound").any()
    ev = pd.read_csv(run_dir / "events.csv")
    applied = ev[(ev["kind"] == "scale_applied")
                 & ev["detail"].str.contains("by=kubernetes-hpa", na=False)]
    assert len(applied) >= 1
    # the harness's port, fed what the controller saw, decides the same nearly always
    line = next(x for x in out.splitlines() if "agrees on" in x)
    agreed, syncs = (int(v) for v in line.split("agrees on ")[1].split(" ")[0].split("/"))
    assert syncs >= 20 and agreed / syncs >= 0.9, line

    from harness.analysis.rundata import load_run
    from harness.report.html import dashboard_data

    model = dashboard_data(load_run(run_dir))
    assert any("agrees on" in c for c in model["controllers"])
    assert any(v is not None for v in model["series"]["real"]["1"]["port"])

    assert leftovers(kube, "k8s-hpa-e2e") == []
    with pytest.raises(KubeApiError) as e:
        kube.get(APISERVICE_PATH)
    assert e.value.status == 404


def test_clean_removes_a_leftover_apiservice(kube: KubeClient) -> None:
    """A run killed before its tear-down leaves the cluster-scoped APIService behind:
    `harness clean RUN` finds it by its labels and deletes it (and refuses nothing else's)."""
    from harness.deploy.base import AppSpec, DeploySpec
    from harness.platforms.kubernetes.cleanup import run_ids, sweep
    from harness.platforms.kubernetes.hpa_objects import apiservice

    rid = "k8s-hpa-leftover"
    spec = DeploySpec(run_id=rid, trial_id="real-1", app=AppSpec(), replicas=1)
    kube.create("/apis/apiregistration.k8s.io/v1/apiservices",
                apiservice(spec, "harness-k8s-hpa-leftover", "madapter", b"not a cert"))
    try:
        assert leftovers(kube, rid) == ["apiservice v1beta1.custom.metrics.k8s.io"]
        assert rid in run_ids(kube)
        assert leftovers(kube, "another-run") == []
        assert sweep(kube, rid) == ["removed apiservice v1beta1.custom.metrics.k8s.io"]
        assert leftovers(kube, rid) == []
    finally:
        kube.delete(APISERVICE_PATH)
