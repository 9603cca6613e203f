"""Policies the harness does not compute (spec.EXTERNAL_POLICIES): a deployer whose
platform has the controller itself (the cluster's HPA, harness/platforms/kubernetes/
real_hpa.py) hands the trial a loop that records that controller's decisions in the same
rows as the harness's own Controller."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from harness.autoscale.controller import DecisionRow
from harness.autoscale.source import MetricSource
from harness.autoscale.spec import AutoscalerSpec
from harness.clock import Clock


class ControlLoop(Protocol):
    """What a trial runs in its autoscaler thread (Controller is one)."""

    def run(self, stop: threading.Event) -> None: ...


@runtime_checkable
class ExternalAutoscaler(Protocol):
    def external_loop(self, spec: AutoscalerSpec, source: MetricSource, clock: Clock,
                      t0: float, on_decision: Callable[[DecisionRow], None]
                      ) -> ControlLoop:
        """The loop that feeds the platform's controller ``source``'s values and records
        its decisions from t0 on."""
        ...
