"""Policy kind (the scenario's ``autoscaler.policy``) → factory, one registry
(docs/architecture.md, "Conventions").

To add a policy, see harness/autoscale/README.md.
"""

from __future__ import annotations

from collections.abc import Callable

from harness.autoscale.base import Policy
from harness.autoscale.hpa import HpaPolicy
from harness.autoscale.predictive import PredictivePolicy
from harness.autoscale.simple import StepPolicy, TargetTrackingPolicy
from harness.autoscale.spec import AutoscalerSpec

PolicyFactory = Callable[[AutoscalerSpec], Policy]

# alphabetical, like KEDA's builder switch; spec.PolicyName lists the same names (tested)
POLICIES: dict[str, PolicyFactory] = {
    "hpa": HpaPolicy,
    "predictive": PredictivePolicy,
    "step": StepPolicy,
    "target-tracking": TargetTrackingPolicy,
}


def make_policy(spec: AutoscalerSpec) -> Policy:
    try:
        factory = POLICIES[spec.policy]
    except KeyError:
        raise ValueError(f"unknown autoscaler policy {spec.policy!r}; known: "
                         f"{', '.join(POLICIES)}") from None
    return factory(spec)
