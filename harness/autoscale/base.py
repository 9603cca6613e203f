"""What every policy sees, keeps and returns (docs/architecture.md, "Conventions").

A policy is a pure function of (observation, its own state, ``now``) returning a decision
*and the reason*: no I/O, no clock reads. The state is immutable; the decision carries the
next one, and the controller hands it back on the next call. The controller adds a scale
event to the state (``with_scale``) only after the deployer really scaled, as the HPA's
``storeScaleEvent`` does after a successful update of the scale subresource.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol


@dataclass(frozen=True)
class Observation:
    current_replicas: int  # what the deployer was told to run (the scale's spec.replicas)
    ready_values: Mapping[str, float]  # replica id → metric, ready replicas that reported one
    unready: int  # replicas that exist but are not ready yet (starting, paused)
    missing: int  # ready replicas without a metric sample
    target: float  # target value per replica

    @property
    def ready(self) -> int:
        return len(self.ready_values) + self.missing

    @property
    def metric_mean(self) -> float | None:
        vals = list(self.ready_values.values())
        return sum(vals) / len(vals) if vals else None


@dataclass(frozen=True)
class TimedChange:
    t: float  # controller clock (seconds, monotonic)
    replicas: int  # a recommendation, or the size of a scale event


@dataclass(frozen=True)
class PolicyState:
    recommendations: tuple[TimedChange, ...] = ()  # raw recommendations (stabilization)
    scale_up_events: tuple[TimedChange, ...] = ()  # replicas added per scale (rate limits)
    scale_down_events: tuple[TimedChange, ...] = ()  # replicas removed per scale
    # a policy's own memory beyond the HPA's (e.g. the predictive policy's smoothed level
    # and trend); opaque to everything else, kept as it is by pruned()
    extra: tuple[float, ...] = ()

    def with_scale(self, now: float, before: int, after: int) -> PolicyState:
        """The state after the deployer went from ``before`` to ``after`` replicas."""
        if after > before:
            return replace(self, scale_up_events=(*self.scale_up_events,
                                                  TimedChange(now, after - before)))
        if after < before:
            return replace(self, scale_down_events=(*self.scale_down_events,
                                                    TimedChange(now, before - after)))
        return self

    @property
    def last_scale_t(self) -> float | None:
        ts = [e.t for e in (*self.scale_up_events, *self.scale_down_events)]
        return max(ts) if ts else None

    @property
    def last_scale_up_t(self) -> float | None:
        return max((e.t for e in self.scale_up_events), default=None)

    def pruned(self, now: float, keep_s: float) -> PolicyState:
        """Drop entries no window can see again (older than ``keep_s``): the HPA reuses such
        slots (markScaleEventsOutdated); dropping them keeps the state small the same way."""
        cut = now - keep_s
        return replace(
            self, recommendations=tuple(r for r in self.recommendations if r.t > cut),
            scale_up_events=tuple(e for e in self.scale_up_events if e.t > cut),
            scale_down_events=tuple(e for e in self.scale_down_events if e.t > cut))


@dataclass(frozen=True)
class Decision:
    """The steps in their named order (docs/architecture.md, "Conventions"); None where a step did
    not run."""

    recommended: int | None  # raw recommendation of the replica calculation
    stabilized: int | None  # after the stabilization window
    rate_limited: int | None  # after the scaling policies (rate limits)
    desired: int  # final, after min/max
    reasons: tuple[str, ...]  # HPA vocabulary, one per step that mattered
    state: PolicyState = field(default_factory=PolicyState)
    forecast: float | None = None  # predictive policies: the demand they scaled for

    @property
    def reason(self) -> str:
        return ";".join(self.reasons)


class Policy(Protocol):
    name: str

    def decide(self, obs: Observation, state: PolicyState, now: float) -> Decision:
        """Raise ValueError when the observation cannot support a decision (no metrics)."""
        ...
