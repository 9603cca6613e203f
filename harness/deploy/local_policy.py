"""What the local platform does when a replica exits or the replica count changes.

Pure functions of the replica's history and the strategy kind (docs/architecture.md,
"Conventions"): no processes,
no clock reads. `harness/platforms/local/local.py` observes exits, asks `on_exit`, and acts.

The three kinds emulate their Docker counterparts (docs/architecture.md, "Strategies"):

- manual: nobody restarts a crashed replica (`docker run` with `restart: no`).
- compose: Docker's restart policy `always` restarts the *same* container after Docker's
  own back-off: 100 ms, doubling per consecutive restart up to 1 min, reset once the
  container ran for 10 s (moby `restartmanager/restartmanager.go`, `ShouldRestart`).
- orchestrated: Swarm replaces the failed task by a *new* task (new id) after the
  strategy's `restart_delay_s` (Swarm's own default restart delay is 5 s; the scenario
  chooses, and the measured Swarm replacement on this project's machines was ~1.2 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["manual", "compose", "orchestrated"]
KINDS: tuple[Kind, ...] = ("manual", "compose", "orchestrated")

# moby restartmanager: defaultTimeout, maxRestartTimeout, backoffMultiplier, and the 10 s
# of running after which the back-off starts over.
DOCKER_BACKOFF_START_S = 0.1
DOCKER_BACKOFF_MAX_S = 60.0
DOCKER_BACKOFF_MULTIPLIER = 2.0
DOCKER_BACKOFF_RESET_AFTER_S = 10.0


def docker_restart_delay(prev_delay_s: float, ran_s: float) -> float:
    """The delay before Docker restarts a container that exited after running `ran_s`.

    `prev_delay_s` is the delay used for the previous restart (0 before the first one).
    Follows moby's `ShouldRestart`: reset when the run lasted ≥ 10 s, start at 100 ms,
    double while below the 1 min cap, clamp to the cap.
    """
    delay = 0.0 if ran_s >= DOCKER_BACKOFF_RESET_AFTER_S else prev_delay_s
    if delay <= 0:
        delay = DOCKER_BACKOFF_START_S
    elif delay < DOCKER_BACKOFF_MAX_S:
        delay *= DOCKER_BACKOFF_MULTIPLIER
    return min(delay, DOCKER_BACKOFF_MAX_S)


Action = Literal["stay_dead", "restart_same", "replace_new"]


@dataclass(frozen=True)
class ExitDecision:
    action: Action
    delay_s: float  # how long after the exit the action happens (0 for stay_dead)
    backoff_s: float  # the back-off state to remember for the replica's next exit
    reason: str  # goes into the replica_exited event's detail


def on_exit(kind: Kind, *, stopped_for_good: bool, prev_backoff_s: float, ran_s: float,
            restart_delay_s: float) -> ExitDecision:
    """Decide what happens to a replica whose process just exited, in a named order."""
    if stopped_for_good:
        # A `kill` fault or a scale-down: a manual stop, which no restart policy undoes.
        return ExitDecision("stay_dead", 0.0, prev_backoff_s, "StoppedForGood")
    if kind == "manual":
        return ExitDecision("stay_dead", 0.0, prev_backoff_s, "ManualNoRestart")
    if kind == "compose":
        delay = docker_restart_delay(prev_backoff_s, ran_s)
        return ExitDecision("restart_same", delay, delay, "ComposeRestartAlways")
    if kind == "orchestrated":
        return ExitDecision("replace_new", max(0.0, restart_delay_s), 0.0,
                            "OrchestratorReplacesTask")
    raise ValueError(f"unknown strategy kind {kind!r}")


@dataclass(frozen=True)
class ScalePlan:
    add: int
    remove: tuple[str, ...]  # replica ids, newest first


def plan_scale(members: Sequence[str], target: int) -> ScalePlan:
    """Bring `members` (the replicas that count, oldest first) to `target`.

    Which replicas count is the caller's per-kind rule (`counts_toward_scale`); removals
    take the newest first, as `docker-compose --scale` does with the highest numbers.
    """
    if target < 0:
        raise ValueError(f"replicas must be ≥ 0, not {target}")
    n = len(members)
    if target >= n:
        return ScalePlan(add=target - n, remove=())
    return ScalePlan(add=0, remove=tuple(reversed(members[target:])))


def counts_toward_scale(kind: Kind, *, alive: bool, stopped_for_good: bool) -> bool:
    """Does a replica count against the desired number when scaling?

    manual: only live processes (a person running `docker run` counts what runs);
    compose/orchestrated: every replica the platform still keeps alive, including one
    waiting for its restart — but never one stopped for good.
    """
    if stopped_for_good:
        return False
    if kind == "manual":
        return alive
    return True
