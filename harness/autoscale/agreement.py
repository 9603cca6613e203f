"""The agreement check of policy ``kubernetes-hpa`` (pure): at every sync of the cluster's
HPA controller, what the harness's own port (policy ``hpa``, hpa.py) decides from the same
inputs — the metric values the controller was served, its replica count, and the history
of its own scale events (replay.py with ``recorded_history``) — against what the
controller decided.

A disagreement is named by what differs (docs/kubernetes.md, "The real HPA"): the harness
records the status after each sync, so a status the controller had not yet written, a pod
list that changed between the controller's look and the harness's, or the port's
stabilization/rate-limit history all show up here as a different desired count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.autoscale.controller import DecisionRow
from harness.autoscale.hpa import HpaPolicy
from harness.autoscale.replay import cell_int, replay_rows, spec_for
from harness.autoscale.spec import AutoscalerSpec

REAL_POLICY = "kubernetes-hpa"


@dataclass(frozen=True)
class Disagreement:
    t_s: float
    real: int | None
    port: int | None
    real_reason: str
    port_reason: str
    metric_values: str


@dataclass(frozen=True)
class Agreement:
    syncs: int  # syncs of the real controller with a desired count
    agreed: int
    disagreements: tuple[Disagreement, ...]
    port_rows: tuple[DecisionRow, ...]  # the port's decisions, one per recorded row

    @property
    def ratio(self) -> float | None:
        return self.agreed / self.syncs if self.syncs else None

    def text(self, label: str) -> str:
        if not self.syncs:
            return f"{label}: no sync of the real HPA controller was recorded"
        pct = 100.0 * self.agreed / self.syncs
        line = (f"{label}: the harness's hpa policy, fed what the real HPA controller saw, "
                f"agrees on {self.agreed}/{self.syncs} syncs ({pct:.1f} %)")
        if self.disagreements:
            line += "; differs at " + ", ".join(
                f"t={d.t_s:.1f} s (real {d.real}, port {d.port})"
                for d in self.disagreements[:6]) + (" …" if len(self.disagreements) > 6
                                                     else "")
        return line


def check(rows: Sequence[Mapping[str, Any]], spec: AutoscalerSpec) -> Agreement:
    """``rows``: one trial's decisions.csv rows of policy kubernetes-hpa, in time order."""
    rows = sorted(rows, key=lambda r: float(r["t_s"]))
    port_spec = spec_for(spec, "hpa")
    port = replay_rows(rows, HpaPolicy(port_spec), port_spec, recorded_history=True)
    syncs = agreed = 0
    out: list[Disagreement] = []
    for rec, mine in zip(rows, port, strict=True):
        real = cell_int(rec.get("desired"))
        if real is None:
            continue
        syncs += 1
        if mine["desired"] == real:
            agreed += 1
        else:
            out.append(Disagreement(float(rec["t_s"]), real, mine["desired"],
                                    str(rec.get("reason") or ""), mine["reason"],
                                    str(rec.get("metric_values") or "")))
    return Agreement(syncs, agreed, tuple(out), tuple(port))
