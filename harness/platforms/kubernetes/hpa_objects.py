"""The objects of the ``kubernetes-hpa`` policy, as plain dicts (pure): the
HorizontalPodAutoscaler made from the scenario's ``autoscaler:`` block, and the custom
metrics adapter it reads (metrics_adapter.py) — Secret, ConfigMap, Pod, Service and the
cluster-scoped APIService that registers it with the aggregation layer.

Every object carries the run's labels (manifests.trial_labels) like the app's; the
APIService is the only cluster-scoped one, so `harness clean` looks for it by label too
(cleanup.py).
"""

from __future__ import annotations

import base64
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from harness.autoscale.spec import AutoscalerSpec, Rules
from harness.deploy.base import DeploySpec
from harness.platforms.kubernetes import manifests
from harness.platforms.kubernetes.client import path_of
from harness.platforms.kubernetes.metrics_adapter import GROUP, VERSION

ADAPTER_ROLE = "metrics-adapter"
ADAPTER_PORT = 6443
SERVICE_PORT = 443
APISERVICE_NAME = f"{VERSION}.{GROUP}"
APISERVICE_PATH = f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE_NAME}"
SCRIPT = Path(__file__).with_name("metrics_adapter.py")
MOUNT_CODE, MOUNT_TLS = "/adapter", "/tls"


def quantity(value: float) -> str:
    """A resource.Quantity in milli-units ('600m'): the precision the HPA computes with."""
    m = round(value * 1000)
    if m <= 0 or abs(m - value * 1000) > 1e-6 * max(1.0, abs(value * 1000)):
        raise ValueError(f"{value} is not a whole number of milli-units (the HPA's "
                         "precision)")
    return f"{m}m"


def _rules(r: Rules) -> dict[str, Any]:
    return {"stabilizationWindowSeconds": int(r.stabilization_window_s),
            "selectPolicy": r.select_policy,
            "policies": [{"type": p.type, "value": p.value, "periodSeconds": int(p.period_s)}
                         for p in r.policies]}


def hpa(spec: DeploySpec, name: str, deployment: str, a: AutoscalerSpec,
        api_version: str = "autoscaling/v2beta2") -> dict[str, Any]:
    """The HPA for the trial's Deployment: one Pods metric with an AverageValue target,
    min/max, and the behavior block written out in full (the harness's defaults are the
    HPA's own, so what the cluster would default is stated, not implied)."""
    return {
        "apiVersion": api_version, "kind": "HorizontalPodAutoscaler",
        "metadata": manifests.meta(name, manifests.trial_labels(spec, "hpa"), spec.run_id),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                               "name": deployment},
            "minReplicas": a.min_replicas, "maxReplicas": a.max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": a.metric_name},
                "target": {"type": "AverageValue", "averageValue": quantity(a.target)}}}],
            "behavior": {"scaleUp": _rules(a.behavior.scale_up),
                         "scaleDown": _rules(a.behavior.scale_down)},
        },
    }


def adapter_names(spec: DeploySpec) -> dict[str, str]:
    base = manifests.object_name(spec, "madapter")
    return {"pod": base, "service": base, "secret": base, "config": base}


def service_hosts(service: str, namespace: str) -> list[str]:
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def adapter_objects(spec: DeploySpec, namespace: str, metric: str, cert_pem: bytes,
                    key_pem: bytes, token: str, image: str,
                    pull_policy: manifests.PullPolicy = "Never", api_host: str = ""
                    ) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) in creation order: Secret, ConfigMap, Pod, Service.
    ``image``: one with python3 (the harness's base image: RealHpa resolves it).
    ``api_host``: the API server's host name as the harness addresses it (its pod proxy
    passes that Host header on with the harness's pushes)."""
    n = adapter_names(spec)
    labels = manifests.trial_labels(spec, ADAPTER_ROLE)
    meta = lambda name: manifests.meta(name, labels, spec.run_id)  # noqa: E731
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    hosts = service_hosts(n["service"], namespace) + ([api_host] if api_host else [])
    args = ["python3", f"{MOUNT_CODE}/metrics_adapter.py", "--port", str(ADAPTER_PORT),
            "--cert", f"{MOUNT_TLS}/tls.crt", "--key", f"{MOUNT_TLS}/tls.key",
            "--token-file", f"{MOUNT_TLS}/token", "--metric", metric,
            *[a for h in hosts for a in ("--host", h)]]
    ns = lambda *rest: path_of("api", "v1", "namespaces", namespace, *rest)  # noqa: E731
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta(n["pod"]),
        "spec": {
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
            "enableServiceLinks": False, "automountServiceAccountToken": False,
            "containers": [{
                "name": "adapter", "image": image, "imagePullPolicy": pull_policy,
                "command": args,
                "env": [{"name": "POD_IP",
                         "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
                "ports": [{"name": "https", "containerPort": ADAPTER_PORT}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": ADAPTER_PORT,
                                               "scheme": "HTTPS"},
                                   "periodSeconds": 1, "failureThreshold": 3},
                "volumeMounts": [{"name": "code", "mountPath": MOUNT_CODE, "readOnly": True},
                                 {"name": "tls", "mountPath": MOUNT_TLS, "readOnly": True}],
            }],
            "volumes": [{"name": "code", "configMap": {"name": n["config"]}},
                        {"name": "tls", "secret": {"secretName": n["secret"],
                                                   "defaultMode": 0o400}}],
        },
    }
    return [
        (ns("secrets"), {"apiVersion": "v1", "kind": "Secret", "metadata": meta(n["secret"]),
                         "type": "Opaque",
                         "data": {"tls.crt": b64(cert_pem), "tls.key": b64(key_pem),
                                  "token": b64(token.encode())}}),
        (ns("configmaps"), {"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": meta(n["config"]),
                            "data": {"metrics_adapter.py": SCRIPT.read_text()}}),
        (ns("pods"), pod),
        (ns("services"), {"apiVersion": "v1", "kind": "Service", "metadata": meta(n["service"]),
                          "spec": {"type": "ClusterIP",
                                   "selector": {k: labels[k] for k in
                                                (manifests.TRIAL_LABEL, manifests.ROLE_LABEL)},
                                   "ports": [{"name": "https", "port": SERVICE_PORT,
                                              "targetPort": ADAPTER_PORT}]}}),
    ]


def apiservice(spec: DeploySpec, namespace: str, service: str, ca_pem: bytes
               ) -> dict[str, Any]:
    """Registers the adapter as custom.metrics.k8s.io/v1beta1 with the aggregation layer;
    the API server checks the adapter's certificate against ``caBundle``."""
    return {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": manifests.meta(APISERVICE_NAME, manifests.trial_labels(spec, "apiservice"),
                                    spec.run_id),
        "spec": {"group": GROUP, "version": VERSION,
                 "service": {"namespace": namespace, "name": service, "port": SERVICE_PORT},
                 "caBundle": base64.b64encode(ca_pem).decode(),
                 "groupPriorityMinimum": 100, "versionPriority": 100},
    }


def serving_cert(hosts: list[str], days: int = 2) -> tuple[bytes, bytes]:
    """A self-signed P-256 certificate for ``hosts`` (its own CA: it is the caBundle) and
    its key, made with the openssl command (Debian's openssl; no Python crypto package)."""
    with tempfile.TemporaryDirectory(prefix="harness-adapter-tls-") as d:
        crt, key = Path(d) / "tls.crt", Path(d) / "tls.key"
        san = ",".join(f"DNS:{h}" for h in hosts)
        try:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:prime256v1", "-nodes", "-days", str(days),
                 "-subj", f"/CN={hosts[0]}", "-addext", f"subjectAltName={san}",
                 "-keyout", str(key), "-out", str(crt)],
                check=True, capture_output=True, timeout=30)
        except FileNotFoundError:
            raise RuntimeError("the openssl command is needed for the metrics adapter's "
                               "certificate (apt-get install openssl)") from None
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"openssl failed: {e.stderr.decode(errors='replace')[-300:]}") \
                from None
        return crt.read_bytes(), key.read_bytes()
