"""The autoscaler's configuration, declared once (docs/architecture.md, "Conventions"): a
strategy's ``autoscaler:`` block.

Field names mirror the Kubernetes HorizontalPodAutoscaler (autoscaling/v2) in snake_case with
units in the name: ``behavior.scaleDown.stabilizationWindowSeconds`` is
``behavior.scale_down.stabilization_window_s`` here, ``policies[].periodSeconds`` is
``policies[].period_s``. Every field the scenario leaves out takes the HPA's default, per
direction (k8s.io/kubernetes pkg/apis/autoscaling/v2/defaults.go ``GenerateHPAScaleUpRules`` /
``GenerateHPAScaleDownRules``): scale-up has no stabilization window and may add
max(4 pods, 100 %) per 15 s; scale-down uses a 300 s window and may remove 100 % per 15 s.

    autoscaler:
      policy: hpa                # hpa | predictive | step | target-tracking
      metric: utilization        # preset, or {promql: "...", scrape: {...}}
      target: 0.6                # per-replica target of that metric
      min_replicas: 2
      max_replicas: 12
      interval_s: 2              # the HPA's --horizontal-pod-autoscaler-sync-period (15 s)
      behavior:
        scale_down: {stabilization_window_s: 20}
"""

from __future__ import annotations

import itertools
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from harness.bounds import MAX_REPLICAS

# = sorted(registry.POLICIES + EXTERNAL_POLICIES), tested
PolicyName = Literal["hpa", "kubernetes-hpa", "predictive", "step", "target-tracking"]
# policies the harness does not compute: the cluster's own controller decides
# (harness/platforms/kubernetes/real_hpa.py); their rows are checked against "hpa"
EXTERNAL_POLICIES = ("kubernetes-hpa",)
# = sorted(metrics.PRESETS), tested
MetricPreset = Literal["cpu", "latency_p95_ms", "lb_queue", "lb_rps", "rps", "utilization"]
# the presets computed as a rate of counters over window_s (harness/autoscale/metrics.py)
RATE_PRESETS = ("cpu", "latency_p95_ms", "lb_rps", "rps")
# every platform's Prometheus scrapes at this interval unless scrape_interval_s says
DEFAULT_SCRAPE_INTERVAL_S = 1.0
# model_validate(..., context=RECORDED): a block a run already ran with (run.json), read
# back for replay and analysis — the checks that only protect a new run are skipped, so
# a run made before them stays readable
RECORDED = {"recorded": True}


class _Strict(BaseModel):
    # NaN/inf pass every bound check (NaN compares false): refused like in the scenario
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- metric -------------------------------------------------------------------------------


class ScrapeRule(_Strict):
    """How to compute a per-replica value from the replica's own /metrics page, for
    platforms without a Prometheus server (the ``local`` platform)."""

    kind: Literal["gauge", "rate", "quantile"] = Field(
        description="gauge: the value as exposed (summed over matching series); rate: "
                    "per-second increase of a counter between two scrapes; quantile: "
                    "histogram quantile of the observations between two scrapes")
    metric: str = Field(min_length=1, max_length=200, pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
                        description="sample name (gauge, counter incl. _total) or histogram "
                                    "base name (quantile)")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="only series carrying these label values")
    quantile: float = Field(0.95, gt=0, lt=1, description="quantile kind only")
    scale: float = Field(1.0, gt=0, description="multiplier, e.g. 1000 for seconds → ms")


class CustomMetric(_Strict):
    """A metric of your own: PromQL returning one series per replica, told apart by the
    ``instance`` label (``sum by (instance) (...)``)."""

    name: str = Field("custom", min_length=1, max_length=40)
    promql: str = Field(min_length=1, max_length=2000,
                        description="instant-query expression; '{window}' is replaced by "
                                    "window_s (e.g. rate(x[{window}]))")
    scrape: ScrapeRule | None = Field(
        None, description="the same metric read straight from each replica's /metrics "
                          "where there is no Prometheus server")


# --- behaviour (HPAScalingRules) ----------------------------------------------------------


class ScalingPolicy(_Strict):
    """HPAScalingPolicy: at most ``value`` pods (Pods) or ``value`` percent of the replicas at
    the start of the period (Percent) may be added/removed within any ``period_s``."""

    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0, le=10_000)
    period_s: float = Field(gt=0, le=1800)


class Rules(_Strict):
    """HPAScalingRules for one direction."""

    stabilization_window_s: float = Field(ge=0, le=3600)
    select_policy: Literal["Max", "Min", "Disabled"] = Field(
        "Max", description="Max: the policy allowing the biggest change wins; Min: the "
                           "smallest; Disabled: never scale in this direction")
    policies: list[ScalingPolicy] = Field(min_length=1, max_length=10)


class ScaleUpRules(Rules):
    stabilization_window_s: float = Field(0, ge=0, le=3600)
    policies: list[ScalingPolicy] = Field(
        default_factory=lambda: [ScalingPolicy(type="Pods", value=4, period_s=15),
                                 ScalingPolicy(type="Percent", value=100, period_s=15)],
        min_length=1, max_length=10)


class ScaleDownRules(Rules):
    stabilization_window_s: float = Field(300, ge=0, le=3600)
    policies: list[ScalingPolicy] = Field(
        default_factory=lambda: [ScalingPolicy(type="Percent", value=100, period_s=15)],
        min_length=1, max_length=10)


class Behavior(_Strict):
    scale_up: ScaleUpRules = Field(default_factory=ScaleUpRules)
    scale_down: ScaleDownRules = Field(default_factory=ScaleDownRules)

    @property
    def longest_period_s(self) -> float:
        return max(p.period_s for p in (*self.scale_up.policies, *self.scale_down.policies))


# --- other policies' options --------------------------------------------------------------


class StepAdjustment(_Strict):
    """One step: when lower ≤ (metric/target − 1) < upper, change the replica count by
    ``change`` (AWS step scaling's MetricIntervalLower/UpperBound and ScalingAdjustment,
    with bounds relative to the target instead of absolute)."""

    lower: float | None = Field(None, ge=-1, description="None: unbounded below")
    upper: float | None = Field(None, ge=-1, description="None: unbounded above")
    change: int = Field(ge=-MAX_REPLICAS, le=MAX_REPLICAS)

    @model_validator(mode="after")
    def _ordered(self) -> StepAdjustment:
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


def _default_steps() -> list[StepAdjustment]:
    return [StepAdjustment(upper=-0.3, change=-1),
            StepAdjustment(lower=0.1, upper=0.5, change=1),
            StepAdjustment(lower=0.5, upper=1.0, change=2),
            StepAdjustment(lower=1.0, change=4)]


class StepSpec(_Strict):
    steps: list[StepAdjustment] = Field(default_factory=_default_steps, min_length=1,
                                        max_length=20)
    cooldown_s: float = Field(60, ge=0, le=3600,
                              description="no further step after a scale for this long")

    @model_validator(mode="after")
    def _disjoint(self) -> StepSpec:
        spans = sorted((s.lower if s.lower is not None else float("-inf"),
                        s.upper if s.upper is not None else float("inf")) for s in self.steps)
        for (_, hi), (lo, _) in itertools.pairwise(spans):
            if lo < hi:
                raise ValueError("step intervals overlap")
        return self


class TargetTrackingSpec(_Strict):
    """AWS-style target tracking: replicas = ceil(sum of values / target), gated by cooldowns."""

    scale_out_cooldown_s: float = Field(60, ge=0, le=3600)
    scale_in_cooldown_s: float = Field(300, ge=0, le=3600)


class PredictiveSpec(_Strict):
    """Holt's linear trend forecast of the total demand (see harness/autoscale/predictive.py)."""

    alpha: float = Field(0.5, gt=0, le=1, description="level smoothing (Holt's α): 1 follows "
                                                       "the newest value only")
    beta: float = Field(0.3, gt=0, le=1, description="trend smoothing (Holt's β*)")
    lead_s: float | None = Field(
        None, ge=0, le=3600,
        description="how far ahead to forecast, s: the provisioning lag. Default: measured "
                    "in the run (scale-up decision → the new replicas ready), starting "
                    "from initial_lead_s until a first scale-up was seen through")
    initial_lead_s: float = Field(10, ge=0, le=3600, description="lead until one was "
                                                                 "measured")


# policies that read the HPA's behavior block (stabilization windows, rate limits)
BEHAVIOR_POLICIES = ("hpa", "kubernetes-hpa", "predictive")


# --- the block ----------------------------------------------------------------------------


class AutoscalerSpec(_Strict):
    policy: PolicyName = Field(
        "hpa", description="hpa: the harness's port of the Kubernetes HPA; kubernetes-hpa: "
                           "the cluster's own HPA controller (platform kubernetes, kind "
                           "orchestrated; reads the metric through a custom metrics API "
                           "adapter the run sets up); predictive: scales for a forecast of "
                           "the total demand (metric × ready replicas) one provisioning lag "
                           "ahead, by Holt's linear trend method (Holt 1957; Hyndman & "
                           "Athanasopoulos, Forecasting: Principles and Practice, §8.2), "
                           "then the HPA's behavior; step; target-tracking")
    metric: MetricPreset | CustomMetric = Field(
        "utilization",
        description="utilization (in-flight / worker slots, e.g. target 0.6), rps (requests "
                    "per second per replica), latency_p95_ms, cpu (cores per replica), "
                    "lb_rps (requests/s arriving at the load balancer ÷ ready replicas), "
                    "lb_queue (LB queue + sessions ÷ ready replicas), or a custom PromQL")
    target: float = Field(gt=0, le=1e9, description="target value per replica (HPA "
                                                    "AverageValue)")
    min_replicas: int = Field(1, ge=1, le=MAX_REPLICAS)
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    interval_s: float = Field(15, ge=0.5, le=600, description="control loop period (the "
                                                              "HPA's sync period, 15 s)")
    tolerance: float = Field(0.1, ge=0, lt=1, description="no change while |metric/target "
                                                           "− 1| ≤ tolerance")
    window_s: float = Field(10, ge=1, le=600, description="rate / quantile window of the "
                                                          "metric presets; the rates (rps, "
                                                          "lb_rps, cpu, latency_p95_ms) need "
                                                          "two scrapes in it: ≥ 2 × "
                                                          "scrape_interval_s")
    scrape_interval_s: float | None = Field(
        None, ge=0.1, le=60,
        description="how often Prometheus scrapes what the metric reads: HAProxy's exporter "
                    "for lb_rps / lb_queue, every replica for the other presets, both for a "
                    "custom PromQL (default: the platform's 1 s). Scraping the one load "
                    "balancer 4× a second costs little and lets a 1 s window_s see a spike "
                    "about a second sooner")
    behavior: Behavior = Field(default_factory=Behavior, description="hpa and predictive "
                                                                     "policies only")
    step: StepSpec | None = Field(None, description="step policy options")
    target_tracking: TargetTrackingSpec | None = Field(None, description="target-tracking "
                                                                         "policy options")
    predictive: PredictiveSpec | None = Field(None, description="predictive policy options "
                                                                "(Holt's α, β, lead)")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> AutoscalerSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas "
                             f"({self.max_replicas})")
        if "behavior" in self.model_fields_set and self.policy not in BEHAVIOR_POLICIES:
            raise ValueError(f"'behavior' applies to policies hpa and predictive, not "
                             f"{self.policy}")
        if self.policy == "kubernetes-hpa":
            self._fits_the_hpa_object()
        recorded = bool(info.context and info.context.get("recorded"))
        scrape = self.scrape_interval_s or DEFAULT_SCRAPE_INTERVAL_S
        if not recorded and self.metric in RATE_PRESETS and self.window_s < 2 * scrape - 1e-9:
            # rate() and histogram_quantile(rate()) need two samples inside the window;
            # with one the metric is missing at every sync and the autoscaler never acts
            raise ValueError(f"window_s {self.window_s:g} holds fewer than two scrapes "
                             f"{scrape:g} s apart; metric {self.metric} is a rate over the "
                             f"window: make window_s ≥ {2 * scrape:g} or scrape_interval_s "
                             f"≤ {self.window_s / 2:g}")
        if self.predictive is not None and self.policy != "predictive":
            raise ValueError(f"'predictive' options given but policy is {self.policy}")
        if self.step is not None and self.policy != "step":
            raise ValueError(f"'step' options given but policy is {self.policy}")
        if self.target_tracking is not None and self.policy != "target-tracking":
            raise ValueError(f"'target_tracking' options given but policy is {self.policy}")
        return self

    def _fits_the_hpa_object(self) -> None:
        """What an autoscaling/v2beta2 HPA object can say: whole seconds, milli-unit
        targets, and no tolerance field (a kube-controller-manager flag, 0.1 by default)."""
        if abs(self.tolerance - 0.1) > 1e-12:
            raise ValueError("tolerance: the real HPA's is the cluster's "
                             "--horizontal-pod-autoscaler-tolerance (0.1), not a field of "
                             "the HPA object; leave it out with policy kubernetes-hpa")
        if abs(self.target * 1000 - round(self.target * 1000)) > 1e-6 or self.target < 0.001:
            raise ValueError(f"target {self.target}: the HPA's quantities are milli-units "
                             "(at most 3 decimals) with policy kubernetes-hpa")
        for rules in (self.behavior.scale_up, self.behavior.scale_down):
            times = [rules.stabilization_window_s, *(p.period_s for p in rules.policies)]
            if any(t != int(t) for t in times) or any(p.period_s < 1
                                                      for p in rules.policies):
                raise ValueError("behavior: the HPA object takes whole seconds "
                                 "(stabilization_window_s, period_s ≥ 1) with policy "
                                 "kubernetes-hpa")
        if not isinstance(self.metric, str) and not re.fullmatch(
                r"[a-z0-9]([-a-z0-9_.]*[a-z0-9])?", self.metric.name):
            raise ValueError(f"metric name {self.metric.name!r}: the custom metrics API "
                             "names it in a URL path (lower-case letters, digits, '-', '_', "
                             "'.') with policy kubernetes-hpa")

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else self.metric.name
