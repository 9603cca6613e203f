"""What a run checks and states before it creates anything on the kubernetes platform:
metrics the platform cannot serve, the node address, and — for ``policy: kubernetes-hpa`` —
the HPA controller's sync period, a setting of the cluster rather than of the HPA object.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.platform import Platform
from harness.platforms.kubernetes.kubeconfig import LOCAL_STATE
from harness.scenario.models import Scenario

# the local cluster's apiserver (scripts/k8s-local.sh)
LOCAL_SERVER = "https://127.0.0.1:6443"
# the HPA controller's own defaults (kube-controller-manager flags), stated when a remote
# cluster's cannot be read
DEFAULT_SYNC_S = 15.0
HPA_TOLERANCE = 0.1


def deploy_options(sc: Scenario, node_address_opt: str | None) -> dict[str, Any]:
    """The kubernetes deployers' options; UsageError for what the platform cannot do."""
    from harness.autoscale.metrics import backend_level

    for s in sc.strategies:
        if s.autoscaler is not None and backend_level(s.autoscaler):
            raise UsageError(f"strategy {s.name!r}: metric {s.autoscaler.metric_name!r} "
                             "reads HAProxy's exporter; the kubernetes platform balances "
                             "with kube-proxy (use utilization, rps, cpu or latency_p95_ms)")
    address = sc.kubernetes.node_address
    if node_address_opt:
        from pydantic import ValidationError

        from harness.scenario.models import Kubernetes

        try:
            address = Kubernetes(node_address=node_address_opt).node_address
        except ValidationError:
            raise UsageError(f"--k8s-node-address {node_address_opt[:60]!r}: a host "
                             "name or an IPv4 address") from None
    return {"node_address": address, "image_pull_policy": sc.kubernetes.image_pull_policy}


def parse_duration_s(text: str) -> float | None:
    """A Go duration as the flag takes it ('15s', '2s', '500ms', '1m', '1m30s')."""
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", text.strip())
    if not parts or "".join(a + b for a, b in parts) != text.strip():
        return None
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(a) * unit[b] for a, b in parts)


def local_state() -> Path:
    return Path(os.environ.get("HARNESS_K8S_STATE") or LOCAL_STATE)


def hpa_sync_period(plat: Platform) -> dict[str, Any]:
    """The sync period the cluster's HPA controller runs with, and where that came from."""
    path = local_state() / "hpa-sync-period"
    if plat.kube is not None and plat.kube.cfg.server.rstrip("/") == LOCAL_SERVER \
            and path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        seconds = parse_duration_s(text)
        if seconds is not None:
            return {"sync_period_s": seconds, "source": f"{path} (scripts/k8s-local.sh)"}
    return {"sync_period_s": None,
            "source": "unknown: the cluster's kube-controller-manager "
                      f"--horizontal-pod-autoscaler-sync-period (default {DEFAULT_SYNC_S:g} s)"}


def real_hpa_statement(sc: Scenario, plat: Platform, names: list[str]) -> tuple[
        dict[str, Any] | None, list[str]]:
    """For run.json: the HPA controller's settings when a chosen strategy uses the real
    HPA, and warnings where they differ from the scenario's ``interval_s``."""
    real = [s for s in sc.strategies if s.name in names and s.autoscaler is not None
            and s.autoscaler.policy == "kubernetes-hpa"]
    if not real:
        return None, []
    sync = hpa_sync_period(plat)
    warnings = []
    for s in real:
        a = s.autoscaler
        assert a is not None
        if sync["sync_period_s"] is not None and abs(sync["sync_period_s"] - a.interval_s) > 1e-9:
            warnings.append(
                f"strategy {s.name!r}: the cluster's HPA controller syncs every "
                f"{sync['sync_period_s']:g} s, not the interval_s {a.interval_s:g} s the "
                f"scenario asks (a cluster setting: scripts/k8s-local.sh hpa-sync "
                f"{a.interval_s:g}s)")
    return {**sync, "tolerance": HPA_TOLERANCE, "api": "autoscaling/v2beta2",
            "metrics_api": "custom.metrics.k8s.io/v1beta1"}, warnings
