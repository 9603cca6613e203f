"""Build a ready-to-run Controller for one trial from the scenario's ``autoscaler:`` block.

The one place that decides which metric source a deployer gets:

1. the deployer has a Prometheus server (``prometheus_url()`` is not None) and implements
   ``PrometheusTargets.instance_of`` → ``PrometheusSource`` (preset or custom PromQL);
2. else it implements ``ScrapeTargets.metrics_url_of`` and the metric has a scrape rule →
   ``ScrapeSource`` (local platform without a Prometheus binary);
3. else a deployer may build its own source: ``metric_source(spec) -> MetricSource``
   (e.g. the simulator reading its model) — checked first, so it wins when present;
4. otherwise DeployError: the strategy cannot autoscale on this platform.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from harness.autoscale.controller import Controller, DecisionRow
from harness.autoscale.external import ControlLoop, ExternalAutoscaler
from harness.autoscale.metrics import backend_level, promql_for, scrape_rule_for
from harness.autoscale.registry import make_policy
from harness.autoscale.source import (
    MetricSource,
    OwnMetricSource,
    PrometheusSource,
    PrometheusTargets,
    ScrapeSource,
    ScrapeTargets,
)
from harness.autoscale.spec import EXTERNAL_POLICIES, AutoscalerSpec
from harness.clock import Clock
from harness.deploy.base import Deployer
from harness.errors import DeployError


def build_source(spec: AutoscalerSpec, deployer: Deployer, clock: Clock) -> MetricSource:
    if isinstance(deployer, OwnMetricSource):
        src = deployer.metric_source(spec)
        if src is not None:
            return src
    prom = deployer.prometheus_url()
    if prom and isinstance(deployer, PrometheusTargets):
        return PrometheusSource(prom, promql_for(spec), deployer.instance_of,
                                per_ready=backend_level(spec))
    rule = scrape_rule_for(spec)
    if isinstance(deployer, ScrapeTargets) and rule is not None:
        return ScrapeSource(deployer.metrics_url_of, rule, clock, window_s=spec.window_s)
    if isinstance(deployer, ScrapeTargets):
        raise DeployError(f"metric {spec.metric_name!r} cannot be read from a replica's "
                          f"/metrics (custom PromQL without a 'scrape' rule, or a load-"
                          f"balancer metric), and the {deployer.kind} deployer has no "
                          f"Prometheus server")
    raise DeployError(f"the {deployer.kind} deployer offers no way to read per-replica "
                      "metrics (instance_of / metrics_url_of / metric_source)")


def build_controller(spec: AutoscalerSpec, deployer: Deployer, clock: Clock, t0: float,
                     on_decision: Callable[[DecisionRow], None],
                     rng: random.Random | None = None, *,
                     source: MetricSource | None = None) -> ControlLoop:
    """Policy from the registry, metric source for this deployer, a Controller whose
    ``run(stop_event)`` is the autoscaler thread's target. ``rng`` is for policies that
    draw random numbers (the built-in ones are deterministic and ignore it)."""
    del rng  # reserved: no registered policy is stochastic yet
    src = source if source is not None else build_source(spec, deployer, clock)
    if spec.policy in EXTERNAL_POLICIES:
        if not isinstance(deployer, ExternalAutoscaler):
            raise DeployError(f"policy {spec.policy} is a platform's own controller; the "
                              f"{deployer.kind} deployer has none")
        return deployer.external_loop(spec, src, clock, t0, on_decision)
    return Controller(deployer, src, make_policy(spec), spec, clock, on_decision, t0=t0)
