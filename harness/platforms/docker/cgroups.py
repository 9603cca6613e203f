"""CPU used by Docker containers, from their cgroups (no `docker stats` round trips).

Docker puts every container in a cgroup named after its full id; its cumulative CPU time
is one small file there. The paths differ by cgroup version and driver, so each is tried:

- v1, cgroupfs driver: /sys/fs/cgroup/cpuacct/docker/<id>/cpuacct.usage (ns)
- v1, systemd driver:  /sys/fs/cgroup/cpuacct/system.slice/docker-<id>.scope/cpuacct.usage
- v2, systemd driver:  /sys/fs/cgroup/system.slice/docker-<id>.scope/cpu.stat (usage_usec)
- v2, cgroupfs driver: /sys/fs/cgroup/docker/<id>/cpu.stat

`ContainerCpu` turns successive readings into "percent of one core" over an interval; a
container that started in the interval counts from zero, one that vanished is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.clock import Clock

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _v1_candidates(root: Path, cid: str) -> list[Path]:
    out = []
    for ctl in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
        out += [root / ctl / "docker" / cid / "cpuacct.usage",
                root / ctl / "system.slice" / f"docker-{cid}.scope" / "cpuacct.usage"]
    return out


def _v2_candidates(root: Path, cid: str) -> list[Path]:
    return [root / "system.slice" / f"docker-{cid}.scope" / "cpu.stat",
            root / "docker" / cid / "cpu.stat"]


def _kubepods_candidates(root: Path, cid: str) -> list[Path]:
    """A Kubernetes pod's container on this engine (dockershim, the kubelet's cgroupfs
    driver): kubepods/[<qos>/]pod<uid>/<id> — the QoS level is absent for Guaranteed."""
    out: list[Path] = []
    for base, leaf in ([(root / ctl / "kubepods", "cpuacct.usage")
                        for ctl in ("cpuacct", "cpu,cpuacct")]
                       + [(root / "kubepods", "cpu.stat")]):
        if base.is_dir():
            out += sorted(base.glob(f"pod*/{cid}/{leaf}")) \
                + sorted(base.glob(f"*/pod*/{cid}/{leaf}"))
    return out


def parse_cpu_stat_usec(text: str) -> int | None:
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == "usage_usec":
            return int(v)
    return None


def container_cpu_ns(cid: str, root: Path = CGROUP_ROOT) -> int | None:
    """Cumulative CPU time of a container (its full id), in ns; None if not found."""
    for p in _v1_candidates(root, cid):
        try:
            return int(p.read_text().strip())
        except (OSError, ValueError):
            continue
    for p in _v2_candidates(root, cid):
        try:
            usec = parse_cpu_stat_usec(p.read_text())
        except OSError:
            continue
        if usec is not None:
            return usec * 1000
    for p in _kubepods_candidates(root, cid):
        try:
            text = p.read_text()
            usec = parse_cpu_stat_usec(text) if p.name == "cpu.stat" else None
            value = usec * 1000 if usec is not None else int(text.strip())
        except (OSError, ValueError):
            continue
        return value
    return None


class ContainerCpu:
    """Percent of one core used by a changing set of containers since the last sample."""

    def __init__(self, clock: Clock, root: Path = CGROUP_ROOT) -> None:
        self.clock, self.root = clock, root
        self._prev: dict[str, int] = {}
        self._t: float | None = None

    def sample(self, container_ids: Iterable[str]) -> float | None:
        now = self.clock.now()
        cur: dict[str, int] = {}
        for cid in container_ids:
            ns = container_cpu_ns(cid, self.root)
            if ns is not None:
                cur[cid] = ns
        prev, t0 = self._prev, self._t
        self._prev, self._t = cur, now
        if t0 is None or now <= t0 or not cur:
            return None
        used = sum(max(0, ns - prev.get(cid, 0)) for cid, ns in cur.items())
        return round(100.0 * used / 1e9 / (now - t0), 1)
