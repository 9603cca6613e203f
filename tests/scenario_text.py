"""The spike scenario the sim and replay tests share, as YAML text: one header (the
sample app's settings, warm-up, SLO), the stages and strategies each test varies."""

from __future__ import annotations

from collections.abc import Sequence

Stage = tuple[str, int, int, int | None]  # name, duration_s, rps, ramp_s


def spike_yaml(name: str, seed: int, stages: Sequence[Stage], rest: str) -> str:
    """A whole scenario: the shared header, `stages`, then `rest` (faults, strategies)
    as unindented YAML."""
    lines = [f"name: {name}", f"seed: {seed}",
             "app:",
             "  env: {WORKERS: 4, SERVICE_MS: 50, QUEUE_LIMIT: 20, STARTUP_S: 1}",
             "load:", "  warmup_s: 2", "  warmup_rps: 100", "  timeout_s: 3", "  stages:"]
    for stage, duration_s, rps, ramp_s in stages:
        ramp = "" if ramp_s is None else f", ramp_s: {ramp_s}"
        lines.append(f"    - {{name: {stage}, duration_s: {duration_s}, rps: {rps}{ramp}}}")
    lines.append("slo: {p95_ms: 300, error_rate: 0.01, stable_s: 3}")
    return "\n".join(lines) + "\n" + rest.lstrip("\n")
