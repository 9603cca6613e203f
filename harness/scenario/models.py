"""The scenario, declared once (docs/architecture.md, "Conventions"): these pydantic models are the
only definition.

Bounds are deliberate: a typo must not start 10,000 containers or a week-long run.
`harness validate FILE` prints the resolved model; `scenario_json_schema()` gives the schema.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.autoscale.spec import AutoscalerSpec
from harness.bounds import MAX_REPLICAS

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MAX_RUN_S = 4 * 3600
MAX_RPS = 50_000
URL_PATH_RE = re.compile(r"^/[A-Za-z0-9\-._~/%=&?+,;:@!]{0,199}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_VARS = 100
MAX_ENV_VALUE = 4096

Name = Annotated[str, Field(description="lower-case letters, digits, '-' and '_', ≤ 40 chars")]


class At(ValueError):
    """A cross-field error that knows which key it is about (relative to its model), so
    the loader can point at that key's line instead of the model's first line."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class Strict(BaseModel):
    # NaN/inf pass every bound check (NaN compares false) and would reach the run
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} must match {NAME_RE.pattern} "
                         "(it becomes part of file and container names)")
    return value


class App(Strict):
    """The app under test: our sample app by default, or a user's own image."""

    image: str = Field("harness-app:latest", min_length=1, max_length=200)
    port: int = Field(8000, ge=1, le=65535)
    path: str = Field("/work", description="the request the default load sends")
    health_path: str = "/healthz"
    ready_path: str = "/readyz"
    metrics_path: str = "/metrics"
    env: dict[str, str] = Field(default_factory=dict,
                                description="environment of every replica (sample app: "
                                            "WORKERS, SERVICE_MS, SERVICE_DIST, QUEUE_LIMIT…)")
    command: list[str] | None = Field(
        None, description="local platform: the command that starts one replica "
                          "(default: python -m sample_app); PORT is set in its environment")

    @field_validator("path", "health_path", "ready_path", "metrics_path")
    @classmethod
    def _abs_path(cls, v: str) -> str:
        # the paths are pasted into generated configs and probe code: URL path characters
        # only, so none can close a quote or start a new line there
        if not URL_PATH_RE.match(v):
            raise ValueError(f"{v[:60]!r} must be an absolute URL path like /work "
                             "(letters, digits and - . _ ~ / % = & ? + , ; : @ ! only, "
                             "≤ 200 chars)")
        return v

    @field_validator("env")
    @classmethod
    def _env_valid(cls, v: dict[str, str]) -> dict[str, str]:
        # compose's env file, docker's API and the local platform's environment must all
        # read the same variables: no '=' or odd characters in keys, no newline in values
        if len(v) > MAX_ENV_VARS:
            raise ValueError(f"{len(v)} variables; at most {MAX_ENV_VARS}")
        for key, value in v.items():
            if not ENV_KEY_RE.match(key):
                raise At((key,), f"variable name {key[:60]!r} must match "
                                 f"{ENV_KEY_RE.pattern}")
            if key == "PORT":
                raise At((key,), "PORT is set by the harness (app.port); it cannot be given "
                                 "in app.env")
            if any(c in value for c in "\x00\r\n"):
                raise At((key,), "the value contains a NUL, CR or LF")
            if len(value) > MAX_ENV_VALUE:
                raise At((key,), f"the value is {len(value)} characters; at most "
                                 f"{MAX_ENV_VALUE}")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, v: Any) -> Any:
        # YAML reads WORKERS: 4 as an int; environment values are strings.
        if isinstance(v, dict):
            return {k: v2 if isinstance(v2, str) else str(v2).lower() if isinstance(v2, bool)
                    else str(v2) for k, v2 in v.items()}
        return v


class Images(Strict):
    """Where the Docker deployers take the harness's own images from."""

    registry: str | None = Field(
        None, description="REGISTRY[/PREFIX] the images were pushed to with `harness images "
                          "push` (e.g. 127.0.0.1:5000/harness); deployers then run and pull "
                          "the registry's names (null: the local images)")

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from harness.platforms.docker.registry_images import check_registry

        return check_registry(v)


class Kubernetes(Strict):
    """The kubernetes platform's cluster and how pods get their image."""

    kubeconfig: str | None = Field(
        None, max_length=1000, description="kubeconfig file (default: --kubeconfig, "
                                           "KUBECONFIG, ~/.kube/config, the local cluster's)")
    node_address: str = Field(
        "127.0.0.1", description="the node address the NodePort Service is reached on "
                                 "(127.0.0.1 on the local cluster; another for a remote one)")
    image_pull_policy: Literal["Never", "IfNotPresent"] = Field(
        "Never", description="Never: the image must be on the node (the local cluster "
                             "shares this host's Docker images); IfNotPresent for a remote "
                             "cluster pulling from a registry")

    @field_validator("node_address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$", v):
            raise ValueError(f"{v[:60]!r} must be a host name or an IPv4 address")
        return v


class Stage(Strict):
    """Ramp linearly to the target over ramp_s, then hold until duration_s has passed."""

    duration_s: float = Field(gt=0, le=MAX_RUN_S)
    rps: float | None = Field(None, ge=0, le=MAX_RPS, description="open model: target rate")
    users: int | None = Field(None, ge=0, le=10_000, description="closed model: users")
    ramp_s: float = Field(0, ge=0, le=MAX_RUN_S)
    name: str | None = Field(None, max_length=40)

    @model_validator(mode="after")
    def _one_target(self) -> Stage:
        if (self.rps is None) == (self.users is None):
            raise ValueError("a stage sets exactly one of 'rps' (open model) or 'users' "
                             "(closed model)")
        if self.ramp_s > self.duration_s:
            raise ValueError(f"ramp_s ({self.ramp_s}) is longer than duration_s "
                             f"({self.duration_s})")
        return self


class Load(Strict):
    model: Literal["open", "closed"] = "open"
    stages: list[Stage] = Field(default_factory=list, max_length=200)
    trace: str | None = Field(None, description="CSV with columns t_s,rps replayed instead "
                                                "of stages (relative to the scenario file)")
    warmup_s: float = Field(5, ge=0, le=600)
    warmup_rps: float | None = Field(None, ge=0, le=MAX_RPS,
                                     description="default: the first stage's rate")
    think_time_s: float = Field(1.0, ge=0, le=60, description="closed model")
    timeout_s: float = Field(5.0, gt=0, le=120, description="per request")
    max_in_flight: int = Field(1000, ge=1, le=20_000)
    workers: int = Field(0, ge=0, le=32, description="0: one load process; N: master + N")
    requests_per_connection: int | None = Field(
        None, ge=1, le=1_000_000,
        description="close each load connection after this many requests (default: "
                    "keep-alive without limit; 10 on kubernetes, whose Service balances "
                    "connections, not requests)")
    locustfile: str | None = None
    remote_workers: int = Field(
        0, ge=0, le=64, description="workers started elsewhere with `harness worker --master "
                                    "HOST:PORT` that the load waits for before t=0")
    remote_workers_timeout_s: float = Field(
        60, gt=0, le=3600, description="how long to wait for the remote workers")
    master_bind: str = Field(
        "127.0.0.1", description="IPv4 address the Locust master listens on for workers; "
                                 "anything but loopback must be given here explicitly")
    master_port: int | None = Field(
        None, ge=1024, le=65535, description="the master's port (default: a free one, "
                                             "printed with the command for the workers)")

    @field_validator("master_bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        try:
            ipaddress.IPv4Address(v)  # Locust's master binds IPv4 (tcp://HOST:PORT)
        except ValueError:
            raise ValueError(f"{v[:60]!r} must be an IPv4 address such as 127.0.0.1 or "
                             "0.0.0.0 (all interfaces)") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Load:
        if not self.stages and not self.trace:
            raise ValueError("give 'stages' or a 'trace' file")
        if self.stages and self.trace:
            raise ValueError("give either 'stages' or 'trace', not both")
        for i, s in enumerate(self.stages):
            if self.model == "open" and s.rps is None:
                raise At(("stages", i), "needs 'rps' in the open model")
            if self.model == "closed" and s.users is None:
                raise At(("stages", i), "needs 'users' in the closed model")
        if self.duration_s > MAX_RUN_S:
            raise ValueError(f"stages last {self.duration_s:.0f} s, over {MAX_RUN_S} s")
        if self.max_in_flight < self.workers + self.remote_workers:
            raise At(("max_in_flight",), f"{self.max_in_flight} gives fewer than one user to "
                                         f"each of the {self.workers + self.remote_workers} "
                                         "workers")
        return self

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.stages)


class Fault(Strict):
    at_s: float = Field(ge=0, le=MAX_RUN_S, description="seconds after load start")
    action: Literal["crash", "kill", "pause"] = "crash"
    count: int = Field(1, ge=1, le=100, description="replicas hit at once")
    duration_s: float | None = Field(None, gt=0, le=3600, description="pause only")
    strategies: list[str] | None = Field(None, description="default: every strategy")

    @model_validator(mode="after")
    def _pause_duration(self) -> Fault:
        if self.action == "pause" and self.duration_s is None:
            raise ValueError("a pause fault needs duration_s")
        if self.action != "pause" and self.duration_s is not None:
            raise ValueError(f"duration_s only applies to pause, not {self.action}")
        return self


class Surge(Strict):
    """A surge: the offered rate rises by `rise` (a fraction of its value before) and by at
    least `min_rise_rps` within `within_s` seconds (harness/analysis/surges.py)."""

    rise: float = Field(0.5, gt=0, le=1000,
                        description="fraction the rate must rise by, e.g. 0.5 = +50 %")
    within_s: float = Field(30, gt=0, le=3600, description="seconds the rise may take")
    min_rise_rps: float = Field(5, ge=0, le=MAX_RPS,
                                description="smallest rise in req/s (or users) that counts")


class Mark(Strict):
    name: str = Field(description="the disturbance's name in summary columns, e.g. deploy")
    at_s: float = Field(ge=0, le=MAX_RUN_S, description="seconds after load start")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "mark name")


class Disturbances(Strict):
    """Disturbances besides load steps between stages and faults (README "Definitions")."""

    surge: Surge | None = Field(default_factory=Surge,
                                description="surges found in the offered rate; null: off")
    marks: list[Mark] = Field(default_factory=list, max_length=100,
                              description="disturbances named by hand at a time")

    @model_validator(mode="after")
    def _unique(self) -> Disturbances:
        names = [m.name for m in self.marks]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise At(("marks", i, "name"), f"mark names must be unique: {n!r}")
        return self


class Slo(Strict):
    p95_ms: float = Field(300, gt=0, le=600_000)
    error_rate: float = Field(0.01, ge=0, le=1)
    stable_s: int = Field(5, ge=1, le=600)


class Strategy(Strict):
    name: str
    kind: Literal["manual", "compose", "orchestrated"]
    replicas: int = Field(ge=1, le=MAX_REPLICAS, description="initial (and fixed, "
                                                              "without an autoscaler)")
    autoscaler: AutoscalerSpec | None = None
    restart_delay_s: float = Field(1.0, ge=0, le=600,
                                   description="orchestrated: the orchestrator's delay before "
                                               "it replaces a crashed replica (Swarm's "
                                               "restart delay; local/sim emulate it)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "strategy name")

    @model_validator(mode="after")
    def _autoscaler_bounds(self) -> Strategy:
        a = self.autoscaler
        if a is not None and not a.min_replicas <= self.replicas <= a.max_replicas:
            raise ValueError(f"replicas ({self.replicas}) must lie within the autoscaler's "
                             f"min_replicas..max_replicas ({a.min_replicas}..{a.max_replicas})")
        if a is not None and self.kind == "manual":
            raise ValueError("a manual strategy cannot autoscale (nobody runs a controller "
                             "for hand-started containers); use compose or orchestrated")
        if a is not None and a.policy == "kubernetes-hpa" and self.kind != "orchestrated":
            raise ValueError("policy kubernetes-hpa scales an orchestrated strategy's "
                             f"Deployment (kind: orchestrated), not a {self.kind} one")
        return self

    @property
    def max_replicas(self) -> int:
        return self.autoscaler.max_replicas if self.autoscaler else self.replicas


class Scenario(Strict):
    name: str
    description: str = Field("", max_length=2000)
    seed: int = Field(1, ge=0, le=2**32 - 1)
    repetitions: int = Field(1, ge=1, le=50)
    output: str = Field("results", description="results folder; each run gets a "
                                               "sub-folder named after its run id")
    platform: Literal["auto", "docker", "local", "sim", "kubernetes"] = "auto"
    app: App = Field(default_factory=App)
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    images: Images = Field(default_factory=Images)
    load: Load
    faults: list[Fault] = Field(default_factory=list, max_length=100)
    slo: Slo = Field(default_factory=Slo)
    disturbances: Disturbances = Field(default_factory=Disturbances)
    strategies: list[Strategy] = Field(min_length=1, max_length=10)
    thresholds: list[str] = Field(default_factory=list, max_length=100,
                                  description="k6-style gates, e.g. 'autoscale.p95_ms < 300'")
    calibration: dict[str, float] | None = Field(
        None, description="capacity_rps_per_replica from `harness calibrate`")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "scenario name")

    @field_validator("output")
    @classmethod
    def _output(cls, v: str) -> str:
        p = PurePath(v)
        if not v or ".." in p.parts or "\x00" in v:
            raise ValueError(f"output folder {v!r} must not be empty or contain '..'")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        names = [s.name for s in self.strategies]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            i = max(i for i, n in enumerate(names) if n in dup)
            raise At(("strategies", i, "name"), f"strategy names must be unique: {sorted(dup)}")
        for i, f in enumerate(self.faults):
            if self.load.stages and f.at_s >= self.load.duration_s:
                raise At(("faults", i, "at_s"), f"at_s={f.at_s:g} is after the load ends "
                                                f"({self.load.duration_s:g} s)")
            for s in f.strategies or []:
                if s not in names:
                    raise At(("faults", i, "strategies"), f"unknown strategy {s!r}")
        for i, m in enumerate(self.disturbances.marks):
            if self.load.stages and m.at_s >= self.load.duration_s:
                raise At(("disturbances", "marks", i, "at_s"),
                         f"at_s={m.at_s:g} is after the load ends ({self.load.duration_s:g} s)")
        return self

    def strategy(self, name: str) -> Strategy:
        for s in self.strategies:
            if s.name == name:
                return s
        raise KeyError(name)
