"""The control loop: read metrics, ask the policy, tell the deployer — and log why.

The thin I/O half of the HPA (docs/architecture.md, "Conventions"; horizontal.go
``reconcileAutoscaler``): every
``interval_s`` it lists the replicas (readiness), reads the scale (``deployer.desired()``,
the scale subresource's spec.replicas), samples the metric of the ready replicas, calls the
pure policy and, when the desired count differs, ``deployer.scale``. Every iteration writes
one ``DecisionRow`` (columns of harness/record/schema.py DECISIONS without the run key),
including the failed ones: a metric or deployer error gives ``action=error`` with the
reason, the replica count stays as it is, and the loop goes on — as the HPA records a
FailedGetPodsMetric / FailedRescale event and tries again at the next sync.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import TypedDict

from harness.autoscale.base import Decision, Observation, Policy, PolicyState
from harness.autoscale.source import MetricSource
from harness.autoscale.spec import AutoscalerSpec
from harness.clock import Clock
from harness.deploy.base import Deployer, Replica, ReplicaState

log = logging.getLogger(__name__)

# at most this long between looks at the stop event while waiting for the next tick
_STOP_POLL_S = 0.25


class DecisionRow(TypedDict):
    """One row of decisions.csv without run_id/strategy/trial (the recorder adds those)."""

    t_s: float
    policy: str
    current_replicas: int | None
    ready: int | None
    unready: int | None
    missing: int | None
    metric_values: str
    metric_mean: float | None
    target: float
    recommended: int | None
    stabilized: int | None
    rate_limited: int | None
    desired: int | None
    reason: str
    action: str  # scale | none | error
    forecast: float | None  # predictive policies only


def format_values(replicas: list[Replica], values: dict[str, float | None],
                  unready: list[Replica]) -> str:
    """'r1=0.62;r2=missing;r3=unready' — every replica the decision saw, in id order."""
    parts = [f"{r.id}={_num(values.get(r.id))}" for r in replicas]
    parts += [f"{r.id}=unready" for r in unready]
    return ";".join(sorted(parts))


def _num(v: float | None) -> str:
    # repr: the shortest text that reads back as the same float, so `harness replay` can
    # feed a policy exactly what the controller saw (a rounded value can move a ceil())
    return "missing" if v is None else repr(float(v))


class Controller:
    def __init__(self, deployer: Deployer, source: MetricSource, policy: Policy,
                 spec: AutoscalerSpec, clock: Clock,
                 on_decision: Callable[[DecisionRow], None], *, t0: float | None = None
                 ) -> None:
        """``t0``: the clock reading that is t_s = 0 (the trial's load start); default: now."""
        self.deployer = deployer
        self.source = source
        self.policy = policy
        self.spec = spec
        self.clock = clock
        self.on_decision = on_decision
        self.t0 = clock.now() if t0 is None else t0
        self.state = PolicyState()
        self.steps = 0

    # -- one iteration ----------------------------------------------------------------------

    def step(self) -> DecisionRow:
        # The policy decides on t_s, the very time decisions.csv records, not on the clock:
        # `harness replay` then feeds it the same floats. (On the raw clock a window's edge
        # can fall between two readings that round alike: a scale at 39.5024 is inside a
        # 15 s period at 54.5021, but 39.502 is not inside one at 54.502.)
        now = round(self.clock.now() - self.t0, 3)
        row = DecisionRow(t_s=now, policy=self.policy.name,
                          current_replicas=None, ready=None, unready=None, missing=None,
                          metric_values="", metric_mean=None, target=self.spec.target,
                          recommended=None, stabilized=None, rate_limited=None, desired=None,
                          reason="", action="none", forecast=None)
        self.steps += 1
        try:
            current = self.deployer.desired()
            replicas = self.deployer.replicas()
        except Exception as e:  # a deployer hiccup must not end the loop
            return self._emit(row, "error", f"FailedGetScale: {_why(e)}")
        ready = [r for r in replicas if r.state == ReplicaState.READY]
        # paused: alive but not serving, as a pod whose readiness probe fails; exited
        # replicas are gone (the HPA ignores failed pods)
        unready = [r for r in replicas if r.state in (ReplicaState.STARTING, ReplicaState.PAUSED)]
        source_error: str | None = None
        try:
            values = self.source.sample(ready) if ready else {}
            source_error = self.source.last_error
        except Exception as e:  # sources should not raise; if one does, it is missing data
            values, source_error = {}, _why(e)
        ready_values = {r.id: v for r in ready
                        if (v := values.get(r.id)) is not None and math.isfinite(v)}
        obs = Observation(current_replicas=current, ready_values=ready_values,
                          unready=len(unready), missing=len(ready) - len(ready_values),
                          target=self.spec.target)
        row.update(current_replicas=current, ready=len(ready), unready=len(unready),
                   missing=obs.missing, metric_values=format_values(ready, values, unready),
                   metric_mean=obs.metric_mean)
        try:
            decision = self.policy.decide(obs, self.state, now)
        except ValueError as e:
            why = f"FailedComputeMetricsReplicas: {e}"
            if source_error:
                why += f" ({source_error})"
            row["desired"] = current
            return self._emit(row, "error", why)
        self.state = decision.state
        self._fill(row, decision)
        if decision.desired == current:
            return self._emit(row, "none", decision.reason)
        try:
            self.deployer.scale(decision.desired)
        except Exception as e:
            return self._emit(row, "error", f"{decision.reason};FailedRescale: {_why(e)}")
        self.state = self.state.with_scale(now, current, decision.desired)
        return self._emit(row, "scale", decision.reason)

    @staticmethod
    def _fill(row: DecisionRow, d: Decision) -> None:
        row.update(recommended=d.recommended, stabilized=d.stabilized,
                   rate_limited=d.rate_limited, desired=d.desired, forecast=d.forecast)

    def _emit(self, row: DecisionRow, action: str, reason: str) -> DecisionRow:
        row["action"], row["reason"] = action, reason
        if action == "error":
            log.warning("autoscaler: %s", reason)
        elif action == "scale":
            log.info("autoscaler: %s → %s replicas (%s)", row["current_replicas"],
                     row["desired"], reason)
        self.on_decision(row)
        return row

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """step() every interval_s on the clock until ``stop`` is set. Ticks are on a fixed
        grid; a step that overruns skips the ticks it missed instead of bunching up."""
        interval = self.spec.interval_s
        next_t = self.clock.now()
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # e.g. the recorder failed: keep controlling, say so
                log.exception("autoscaler step failed")
            next_t += interval
            now = self.clock.now()
            if next_t < now:
                next_t += math.ceil((now - next_t) / interval) * interval
            self._sleep_until(next_t, stop)

    def _sleep_until(self, t: float, stop: threading.Event) -> None:
        while not stop.is_set():
            remaining = t - self.clock.now()
            if remaining <= 0:
                return
            self.clock.sleep(min(remaining, _STOP_POLL_S))


def _why(e: BaseException) -> str:
    text = str(e).strip().replace("\n", " ")
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
