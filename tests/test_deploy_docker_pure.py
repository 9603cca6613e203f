"""The Docker deployers' pure parts: configs (checked by the real haproxy / promtool /
docker-compose binaries where installed), names, Docker state → replica state, Swarm's
task selection, the watcher's transitions and discovery-lag trackers, the registry."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.clock import FakeClock
from harness.deploy import haproxy, prometheus
from harness.deploy.base import AppSpec, DeployEvent, DeploySpec, Replica, ReplicaState
from harness.deploy.registry import DEPLOYERS, create
from harness.deploy.watch import LbFirstTraffic, ReplicaWatcher, first_scrapes, transitions
from harness.errors import UsageError
from harness.platforms.docker.compose import COMPOSE_FILE, DEFAULTS_DIR, project_name, write_configs
from harness.platforms.docker.docker_common import parse_docker_time, replica_state, safe_name
from harness.platforms.docker.docker_objects import published_port
from harness.platforms.docker.readiness import (
    Probe,
    describe_last,
    describe_replica,
    first_ready_at,
)
from harness.platforms.docker.swarm import TaskView, select_replicas
from tests.promtool import check_config

RS = ReplicaState


# ── HAProxy and Prometheus configs ─────────────────────────────────────────────────

@pytest.mark.parametrize("servers", [
    haproxy.StaticServers(["172.18.0.2:8000", "172.18.0.3:8000"]),
    haproxy.StaticServers([], spare_slots=5),
    haproxy.DnsServers("app", 8000),
    haproxy.DnsServers("tasks.harness-x-app", 8000, slots=50),
], ids=["static", "static-empty", "dns-compose", "dns-swarm"])
def test_haproxy_config_is_valid(servers: Any, tmp_path: Path) -> None:
    text = haproxy.render_config(servers)
    assert "option httpchk GET /readyz" in text
    assert "check inter 1000ms fastinter 500ms fall 2 rise 1" in text  # not the ~6 s defaults
    if isinstance(servers, haproxy.DnsServers):
        assert "accepted_payload_size 8192" in text  # Docker's answers exceed 512 bytes
        assert "hold valid 1000ms" in text
        assert f"{servers.name}:8000 resolvers docker init-addr none" in text
    else:
        n = len(servers.addresses)
        assert f"server-template app- {n + 1}-{n + servers.spare_slots} 127.0.0.1:1 " \
               "disabled" in text
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip("haproxy not installed")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    r = subprocess.run([binary, "-c", "-f", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    text = prometheus.render_config(app_dns_name="tasks.svc", app_port=8000,
                                    lb_target="lb:8404", scrape_interval_s=1.0)
    doc = yaml.safe_load(text)
    app = doc["scrape_configs"][0]
    assert app["job_name"] == "app"
    assert app["dns_sd_configs"] == [{"names": ["tasks.svc"], "type": "A", "port": 8000,
                                      "refresh_interval": "1000ms"}]  # not dns_sd's 30 s
    assert doc["global"]["scrape_interval"] == "1000ms"
    assert doc["scrape_configs"][1]["static_configs"] == [{"targets": ["lb:8404"]}]
    check_config(tmp_path, text)


STATS = """\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,status,addr,
lb,FRONTEND,,,0,1,4096,12,0,0,OPEN,,
app,app-1,0,0,0,1,,7,0,0,UP,172.20.0.3:8000,
app,app-2,0,0,0,0,,0,0,0,MAINT (resolution),,
app,app-3,0,0,0,0,,3,0,0,DOWN 1/2,172.20.0.5:8000,
app,app-4,0,0,0,0,,3,0,0,UP 1/2,172.20.0.6:8000,
app,BACKEND,0,0,0,1,,10,0,0,UP,,
"""


def test_parse_stats() -> None:
    got = haproxy.parse_stats(STATS)
    assert [(s.name, s.addr, s.sessions_total, s.routable) for s in got] == [
        ("app-1", "172.20.0.3:8000", 7, True),
        ("app-2", None, 0, False),
        ("app-3", "172.20.0.5:8000", 3, False),
        ("app-4", "172.20.0.6:8000", 3, True),  # going down, still routed
    ]
    assert haproxy.parse_stats("") == []


# ── names, timestamps, Docker state ────────────────────────────────────────────────

@pytest.mark.parametrize(("parts", "expected"), [
    (("harness", "Run_1", "A.B"), "harness-run-1-a-b"),
    (("--x--",), "x"),
    (("harness", "r" * 80), None),  # too long: truncated, hash kept
], ids=["sanitised", "stripped", "long"])
def test_safe_name(parts: tuple[str, ...], expected: str | None) -> None:
    name = safe_name(*parts, max_len=63)
    assert len(name) <= 63
    assert all(c.isalnum() or c == "-" for c in name) and name[0].isalnum()
    if expected is not None:
        assert name == expected
    else:
        assert name != safe_name("harness", "r" * 81, max_len=63)


def test_project_name_is_compose_safe() -> None:
    p = project_name("spike-20250101-120000", "autoscale-1")
    assert p == "harness-spike-20250101-120000-autoscale-1"


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-05-01T10:00:00.5Z", 1714557600.5),
    ("2024-05-01T10:00:00.123456789Z", 1714557600.123456789),
    ("2024-05-01T12:00:00+02:00", 1714557600.0),
    ("0001-01-01T00:00:00Z", None),
    ("", None),
    (None, None),
])
def test_parse_docker_time(value: str | None, expected: float | None) -> None:
    got = parse_docker_time(value)
    assert got == pytest.approx(expected, abs=1e-6) if expected is not None else got is None


@pytest.mark.parametrize(("state", "ready", "expected"), [
    ({"Status": "running"}, False, RS.STARTING),  # up, no probe answered this life yet
    ({"Status": "running"}, True, RS.READY),
    ({"Status": "paused", "Paused": True}, True, RS.PAUSED),
    ({"Status": "paused", "Paused": True}, False, RS.PAUSED),
    ({"Status": "restarting"}, True, RS.EXITED),  # in Docker's back-off
    ({"Status": "exited", "ExitCode": 137}, True, RS.EXITED),
    ({"Status": "created"}, False, RS.STARTING),
], ids=["starting", "ready", "paused-ready", "paused-unready", "restarting", "exited",
        "created"])
def test_replica_state(state: dict[str, Any], ready: bool, expected: ReplicaState) -> None:
    assert replica_state(state, ready) == expected


def test_first_ready_at_ignores_probes_of_the_previous_life() -> None:
    probes = [Probe(100.0, 100.1, True, "http 200"),  # the previous life answered
              Probe(105.0, 105.1, False, "refused"),
              Probe(104.4, 106.2, True, "http 200"),  # started before the restart
              Probe(106.0, 106.3, True, "http 200"),
              Probe(107.0, 107.2, True, "http 200")]
    assert first_ready_at(probes, 104.5) == pytest.approx(106.3)
    assert first_ready_at(probes, None) == pytest.approx(100.1)
    assert first_ready_at([], 104.5) is None
    assert first_ready_at(probes[:3], 104.5) is None


@pytest.mark.parametrize(("outcomes", "expected"), [
    ([], "no probe answered yet"),
    (["refused", "refused", "http 503"], "last probe: http 503 (3 probes: 2 refused, 1 http 503)"),
    (["timeout"], "last probe: timeout (1 probes: 1 timeout)"),
])
def test_describe_last(outcomes: list[str], expected: str) -> None:
    probes = [Probe(float(i), i + 0.1, False, o) for i, o in enumerate(outcomes)]
    assert describe_last(probes).startswith(expected)


def test_describe_replica_names_state_exit_code_oom_probes_and_logs() -> None:
    r = Replica(id="abc", name="x", state=RS.EXITED, restarts=2)
    text = describe_replica(r, {"Status": "exited", "ExitCode": 137, "OOMKilled": True},
                            [Probe(1.0, 1.1, False, "refused")], "boom | bye")
    assert text == ("replica abc: container exited, exit_code=137, OOM-killed, restarts=2; "
                    "last probe: refused (1 probes: 1 refused); last log lines: boom | bye.")
    running = describe_replica(Replica(id="d", name="d", state=RS.STARTING),
                               {"Status": "running"}, [], "")
    assert "exit_code" not in running and running.endswith("; no log output.")


def test_published_port_only_on_loopback() -> None:
    attrs = {"NetworkSettings": {"Ports": {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}],
        "8404/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49154"}]}}}
    assert published_port(attrs, 8080) == 49153
    assert published_port(attrs, 8404) is None  # never trust an all-interfaces binding
    assert published_port(attrs, 9090) is None


# ── Swarm: which task containers are replicas ──────────────────────────────────────

def _tv(rid: str, slot: int, desired: str, task_state: str, rs: ReplicaState,
        created: str = "2024-01-01T00:00:00Z") -> TaskView:
    return TaskView(Replica(rid, rid, rs), slot, desired, task_state, created)


@pytest.mark.parametrize(("views", "expected"), [
    ([_tv("a", 1, "running", "running", RS.READY), _tv("b", 2, "running", "starting",
                                                     RS.STARTING)],
     [("a", RS.READY), ("b", RS.STARTING)]),
    # crashed task, replacement still starting: both listed, the old one as exited
    ([_tv("old", 1, "shutdown", "failed", RS.EXITED, "2024-01-01T00:00:00Z"),
      _tv("new", 1, "running", "starting", RS.STARTING, "2024-01-01T00:00:05Z")],
     [("new", RS.STARTING), ("old", RS.EXITED)]),
    # replacement ready: the crash is history
    ([_tv("old", 1, "shutdown", "failed", RS.EXITED), _tv("new", 1, "running", "running",
                                                         RS.READY)],
     [("new", RS.READY)]),
    # scaled down: the shut-down task is gone, not "exited"
    ([_tv("a", 1, "running", "running", RS.READY), _tv("b", 2, "remove", "shutdown",
                                                     RS.EXITED)],
     [("a", RS.READY)]),
    # two crashes in a row: only the newest failed task is listed
    ([_tv("f1", 1, "shutdown", "failed", RS.EXITED, "2024-01-01T00:00:00Z"),
      _tv("f2", 1, "shutdown", "failed", RS.EXITED, "2024-01-01T00:00:03Z"),
      _tv("n", 1, "ready", "ready", RS.STARTING, "2024-01-01T00:00:04Z")],
     [("n", RS.STARTING), ("f2", RS.EXITED)]),
], ids=["steady", "replacing", "replaced", "scaled-down", "repeated-crash"])
def test_select_replicas(views: list[TaskView],
                         expected: list[tuple[str, ReplicaState]]) -> None:
    assert [(r.id, r.state) for r in select_replicas(views)] == expected


# ── the watcher ────────────────────────────────────────────────────────────────────

def R(rid: str, state: ReplicaState, restarts: int = 0, started: float | None = 100.0,
      ready: float | None = None, addr: str | None = None,
      exit_code: int | None = None) -> Replica:
    return Replica(rid, rid, state, restarts, started_at=started, ready_at=ready,
                   exit_code=exit_code, address=addr)


@pytest.mark.parametrize(("prev", "cur", "expected"), [
    ({}, [R("a", RS.STARTING)], [("replica_started", "a")]),
    ({}, [R("a", RS.READY, ready=101.5)],
     [("replica_started", "a"), ("replica_ready", "a")]),
    ({"a": R("a", RS.STARTING)}, [R("a", RS.READY, ready=100.8)], [("replica_ready", "a")]),
    ({"a": R("a", RS.READY)}, [R("a", RS.EXITED, exit_code=137)], [("replica_exited", "a")]),
    # compose restarted it between two polls: exit implied, then restarted
    ({"a": R("a", RS.READY)}, [R("a", RS.STARTING, restarts=1, started=105.0)],
     [("replica_exited", "a"), ("replica_restarted", "a")]),
    ({"a": R("a", RS.EXITED)}, [R("a", RS.STARTING, restarts=1, started=105.0)],
     [("replica_restarted", "a")]),
    ({"a": R("a", RS.STARTING, restarts=1, started=105.0)},
     [R("a", RS.READY, restarts=1, started=105.0, ready=105.9)], [("replica_ready", "a")]),
    ({"a": R("a", RS.READY)}, [R("a", RS.PAUSED)], [("replica_paused", "a")]),
    ({"a": R("a", RS.PAUSED)}, [R("a", RS.READY)], [("replica_resumed", "a")]),
    ({"a": R("a", RS.READY)}, [], [("replica_removed", "a")]),
    ({"a": R("a", RS.READY)}, [R("a", RS.READY)], []),
], ids=["new-starting", "new-ready", "ready", "exited", "restart-unseen", "restarted",
        "ready-again", "paused", "resumed", "removed", "nothing"])
def test_transitions(prev: dict[str, Replica], cur: list[Replica],
                     expected: list[tuple[str, str]]) -> None:
    assert [(c.kind, c.replica) for c in transitions(prev, cur)] == expected


def test_ready_change_carries_start_to_ready() -> None:
    (ch,) = transitions({"a": R("a", RS.STARTING)}, [R("a", RS.READY, ready=100.75)])
    assert ch.detail == "start_to_ready_s=0.750" and ch.at_wall == 100.75


@dataclass
class S:  # a ServerStat stand-in
    name: str
    addr: str | None
    sessions_total: int
    status: str = "UP"


def test_lb_first_traffic_rebases_reused_slots() -> None:
    t = LbFirstTraffic()
    a = R("a", RS.READY, addr="10.0.0.2:8000")
    # first poll: slot app-1 carried 50 requests of someone before we looked
    assert t.update([S("app-1", "10.0.0.2:8000", 50)], [a]) == []
    assert t.update([S("app-1", "10.0.0.2:8000", 51)], [a]) == [("a", 100.0)]
    # slot app-2 held a replica that is gone; a new replica gets its address
    b = R("b", RS.STARTING, addr="10.0.0.3:8000", started=110.0)
    assert t.update([S("app-1", "10.0.0.2:8000", 60), S("app-2", "10.0.0.9:8000", 30)],
                    [a, b]) == []
    assert t.update([S("app-2", "10.0.0.3:8000", 30)], [a, b]) == []  # rebased at 30
    assert t.update([S("app-2", "10.0.0.3:8000", 31)], [a, b]) == [("b", 110.0)]
    # b restarts on the same address: its new life needs new traffic
    b2 = R("b", RS.READY, restarts=1, addr="10.0.0.3:8000", started=120.0)
    assert t.update([S("app-2", "10.0.0.3:8000", 40)], [a, b2]) == []
    assert t.update([S("app-2", "10.0.0.3:8000", 41)], [a, b2]) == [("b", 120.0)]


def test_first_scrapes() -> None:
    reps = [R("a", RS.READY, addr="10.0.0.2:8000", started=100.0),
            R("b", RS.READY, addr="10.0.0.3:8000", started=100.0)]
    up = {"10.0.0.2:8000": 101.0, "10.0.0.3:8000": 99.0}  # b's is from a previous life
    assert first_scrapes(up, reps, set()) == [(("a", 100.0), 101.0)]
    assert first_scrapes(up, reps, {("a", 100.0)}) == []


class _ScriptedDeployer:
    """Replays replica snapshots (a fake implementing the protocol's read side)."""

    kind = "fake"

    def __init__(self, snapshots: list[list[Replica]]) -> None:
        self.snapshots = snapshots

    def replicas(self) -> list[Replica]:
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]

    def prometheus_url(self) -> None:
        return None


def test_watcher_emits_events_with_platform_times() -> None:
    clock = FakeClock(start=1000.0, wall_offset=0.0)  # wall == now: `at` is easy to read
    events: list[DeployEvent] = []
    dep = _ScriptedDeployer([
        [R("a", RS.STARTING, started=999.0)],
        [R("a", RS.READY, started=999.0, ready=999.6)],
        [R("a", RS.EXITED, started=999.0, ready=999.6, exit_code=137)],
    ])
    w = ReplicaWatcher(dep, events.append, clock)  # type: ignore[arg-type]
    for _ in range(3):
        w.poll()
        clock.advance(0.5)
    assert [(e.kind, e.at) for e in events] == [
        ("replica_started", 999.0), ("replica_ready", 999.6), ("replica_exited", None)]
    assert w.start_to_ready_s == [0.6]
    assert w.lag_table()[0]["start_to_ready_s"] == 0.6


# ── registry and the compose file ──────────────────────────────────────────────────

def test_registry_knows_the_three_docker_kinds() -> None:
    assert {k for p, k in DEPLOYERS if p == "docker"} == {"manual", "compose",
                                                          "orchestrated"}
    with pytest.raises(UsageError):
        create("docker", "kubernetes", spec=None, on_event=lambda e: None,  # type: ignore[arg-type]
               clock=FakeClock())


def test_registry_drops_options_a_deployer_does_not_take() -> None:
    spec = DeploySpec(run_id="r", trial_id="t-1", app=AppSpec(), replicas=1)
    client = object()  # never used before deploy()
    d = create("docker", "compose", client=client, spec=spec, on_event=lambda e: None,
               clock=FakeClock(), restart_delay_s=3.0, unknown_option=1)
    assert d.kind == "compose"
    s = create("docker", "orchestrated", client=client, spec=spec, on_event=lambda e: None,
               clock=FakeClock(), restart_delay_s=3.0)
    assert s.restart_delay_s == 3.0  # type: ignore[attr-defined]
    # each registration declares what it takes: compose has no restart delay of its own
    assert "restart_delay_s" not in DEPLOYERS[("docker", "compose")].options
    assert "restart_delay_s" in DEPLOYERS[("docker", "orchestrated")].options


def test_compose_defaults_match_the_generators(tmp_path: Path) -> None:
    """The configs a person gets with a plain `docker-compose up` are the harness's own."""
    write_configs(tmp_path, DeploySpec(run_id="by-hand", trial_id="compose", app=AppSpec(),
                                       replicas=1))
    for rel in ("app.env", "haproxy/haproxy.cfg", "prometheus/prometheus.yml"):
        # the admin socket's owner is whoever runs the harness; by hand it is HAProxy's
        made = re.sub(r" uid \d+ gid \d+ ", " ", (tmp_path / rel).read_text())
        assert made == (DEFAULTS_DIR / rel).read_text(), rel


def test_compose_file_is_valid_and_publishes_on_loopback_only() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (v1) not installed")
    env = {"PATH": "/usr/bin:/bin", "HARNESS_LB_PORT": "", "HARNESS_STATS_PORT": "",
           "HARNESS_PROMETHEUS_PORT": "", "HARNESS_RUN_ID": "r1"}
    r = subprocess.run([binary, "-f", str(COMPOSE_FILE), "config"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    # a trial runs the services without a profile; grafana is the opt-in live view
    trial = {n: s for n, s in doc["services"].items() if not s.get("profiles")}
    assert set(trial) == {"app", "lb", "prometheus"}
    grafana = doc["services"]["grafana"]
    assert grafana["profiles"] == ["observability"] and "ports" not in grafana
    assert grafana["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert doc["services"]["app"]["restart"] == "always"
    for name, svc in trial.items():
        assert svc["labels"]["harness.managed"] == "true"
        assert svc["labels"]["harness.run"] == "r1"
        for p in svc.get("ports", []):
            assert str(p).startswith("127.0.0.1::"), (name, p)
    assert doc["networks"]["default"]["labels"]["harness.run"] == "r1"
