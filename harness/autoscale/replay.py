"""``harness replay``'s core: run a policy offline over the inputs a run recorded (pure).

Each row of decisions.csv holds what the controller saw at that decision: the scale's
count (``current_replicas``), the ready replicas' metric values (``metric_values``, written
losslessly), and how many were unready or missing. Replay rebuilds the ``Observation`` of
every recorded decision, calls the policy at the recorded time and threads the policy's
state from one decision to the next, adding a scale event wherever the replayed decision
differs from the recorded count — as the controller does after a successful scale. With the
policy and settings a run used, that rebuilds the same stabilization windows and rate-limit
history and so the same ``desired`` column (tests/test_replay.py).

A what-if, and only that: the inputs stay the recorded ones. A different policy would have
changed the replica counts, and so the metric values, that came after its first different
decision; replay cannot know how the system would have responded. For that, run the policy
in a closed loop on the sim platform (``harness run --platform sim``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from harness.autoscale.base import Observation, Policy, PolicyState
from harness.autoscale.controller import DecisionRow
from harness.autoscale.spec import BEHAVIOR_POLICIES, RECORDED, AutoscalerSpec

CAVEAT = ("replay is a what-if on recorded inputs: each decision sees the metric values and "
          "replica counts the run recorded, so it cannot show how the system would have "
          "responded to different decisions (run the policy on --platform sim for that)")


def parse_values(text: str) -> tuple[dict[str, float], int, int]:
    """'r1=0.62;r2=missing;r3=unready' → ({r1: 0.62}, missing=1, unready=1)."""
    values: dict[str, float] = {}
    missing = unready = 0
    for part in filter(None, (p.strip() for p in text.split(";"))):
        rid, _, val = part.rpartition("=")
        if val == "missing":
            missing += 1
        elif val == "unready":
            unready += 1
        else:
            v = float(val)
            if math.isfinite(v):
                values[rid] = v
            else:
                missing += 1
    return values, missing, unready


def cell_int(v: Any) -> int | None:
    """A count from a CSV cell or a row: None for empty, NaN or not a number."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else int(f)


def replay_rows(rows: Iterable[Mapping[str, Any]], policy: Policy, spec: AutoscalerSpec,
                *, recorded_history: bool = False) -> list[DecisionRow]:
    """The decisions ``policy`` would have made on these recorded rows (in time order).

    ``recorded_history``: the scale events in the policy's state are the recorded
    controller's (where its ``desired`` differed from ``current_replicas``), not the
    replayed ones — what another controller "would have decided next" given everything that
    really happened; the agreement check of policy kubernetes-hpa uses it."""
    state = PolicyState()
    out: list[DecisionRow] = []
    for rec in rows:
        t = float(rec["t_s"])
        current = cell_int(rec.get("current_replicas"))
        row = DecisionRow(t_s=t, policy=policy.name, current_replicas=current,
                          ready=cell_int(rec.get("ready")), unready=cell_int(rec.get("unready")),
                          missing=cell_int(rec.get("missing")),
                          metric_values=str(rec.get("metric_values") or ""),
                          metric_mean=None, target=spec.target, recommended=None,
                          stabilized=None, rate_limited=None, desired=None, reason="",
                          action="none", forecast=None)
        if current is None:  # the controller could not even read the scale
            row.update(action="error", reason=str(rec.get("reason") or "FailedGetScale"))
            out.append(row)
            continue
        values, missing, unready = parse_values(row["metric_values"])
        obs = Observation(current_replicas=current, ready_values=values, unready=unready,
                          missing=missing, target=spec.target)
        row["metric_mean"] = obs.metric_mean
        try:
            d = policy.decide(obs, state, t)
        except ValueError as e:
            row.update(desired=current, action="error",
                       reason=f"FailedComputeMetricsReplicas: {e}")
            out.append(row)
            continue
        state = d.state
        row.update(recommended=d.recommended, stabilized=d.stabilized,
                   rate_limited=d.rate_limited, desired=d.desired, forecast=d.forecast,
                   reason=d.reason, action="none" if d.desired == current else "scale")
        # the recorded run failed to rescale here: the scale event never happened
        failed = "FailedRescale" in str(rec.get("reason") or "")
        if recorded_history:
            real = cell_int(rec.get("desired"))
            if real is not None and real != current and not failed \
                    and rec.get("action") != "error":
                state = state.with_scale(t, current, real)
        elif d.desired != current and not failed:
            state = state.with_scale(t, current, d.desired)
        out.append(row)
    return out


def spec_for(recorded: AutoscalerSpec, policy: str | None = None,
             target: float | None = None) -> AutoscalerSpec:
    """The recorded autoscaler block with another policy and/or target. Options that belong
    to the recorded policy only (behavior, step, target_tracking, predictive) are dropped
    when they do not fit the new one, so each takes its own defaults."""
    data = recorded.model_dump(mode="json", exclude_none=True)
    if policy is not None and policy != recorded.policy:
        data["policy"] = policy
        for key in ("step", "target_tracking", "predictive"):
            data.pop(key, None)
        if policy not in BEHAVIOR_POLICIES:
            data.pop("behavior", None)
    if target is not None:
        data["target"] = target
    return AutoscalerSpec.model_validate(data, context=RECORDED)
