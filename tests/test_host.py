"""Host saturation (harness/record/host.py): parsing the kernel's counters, per-second
deltas from a fake /proc, the 3-seconds-in-a-row rule, and the real /proc of this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.clock import FakeClock, RealClock
from harness.record.host import (
    CpuCounters,
    HostSampler,
    HostSecond,
    SaturationRun,
    busy_pct,
    is_saturated,
    machine,
    parse_proc_stat,
    parse_psi_some_us,
    pressure_pct,
    warning,
)

STAT = """cpu  100 5 50 800 20 3 2 0 0 0
cpu0 50 2 25 400 10 1 1 0 0 0
intr 12345
"""


def test_parse_proc_stat_sums_all_cores_and_counts_iowait_as_idle() -> None:
    c = parse_proc_stat(STAT)
    assert c.total == 100 + 5 + 50 + 800 + 20 + 3 + 2 + 0
    assert c.busy == 100 + 5 + 50 + 3 + 2
    with pytest.raises(ValueError):
        parse_proc_stat("intr 1\n")


@pytest.mark.parametrize(("text", "expected"), [
    ("some avg10=1.00 avg60=2.00 avg300=3.00 total=72245854\n"
     "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", 72245854),
    ("full avg10=0.00 total=5\n", None),
    ("", None),
])
def test_parse_psi(text: str, expected: int | None) -> None:
    assert parse_psi_some_us(text) == expected


@pytest.mark.parametrize(("prev", "cur", "expected"), [
    (CpuCounters(0, 100), CpuCounters(50, 200), 50.0),
    (CpuCounters(0, 100), CpuCounters(100, 200), 100.0),
    (CpuCounters(10, 100), CpuCounters(10, 100), None),  # no time passed
    (CpuCounters(10, 100), CpuCounters(5, 300), 0.0),  # never negative
])
def test_busy_pct(prev: CpuCounters, cur: CpuCounters, expected: float | None) -> None:
    assert busy_pct(prev, cur) == expected


@pytest.mark.parametrize(("prev", "cur", "elapsed", "expected"), [
    (0, 500_000, 1.0, 50.0), (0, 2_000_000, 1.0, 100.0), (None, 5, 1.0, None),
    (5, None, 1.0, None), (0, 5, 0.0, None),
])
def test_pressure_pct(prev: int | None, cur: int | None, elapsed: float,
                      expected: float | None) -> None:
    assert pressure_pct(prev, cur, elapsed) == expected


def _write_proc(root: Path, busy: int, total: int, psi_us: int | None) -> None:
    idle = total - busy
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n")
    if psi_us is not None:
        (root / "pressure").mkdir(exist_ok=True)
        (root / "pressure" / "cpu").write_text(
            f"some avg10=0 avg60=0 avg300=0 total={psi_us}\nfull avg10=0 total=0\n")


def test_sampler_reports_deltas_since_the_last_sample(tmp_path: Path) -> None:
    clock = FakeClock()
    _write_proc(tmp_path, busy=0, total=0, psi_us=0)
    s = HostSampler(clock, proc_root=tmp_path)
    _write_proc(tmp_path, busy=190, total=200, psi_us=850_000)
    clock.advance(1.0)
    assert s.sample() == HostSecond(95.0, 85.0)
    _write_proc(tmp_path, busy=200, total=400, psi_us=850_000)
    clock.advance(1.0)
    assert s.sample() == HostSecond(5.0, 0.0)


def test_sampler_without_psi_leaves_pressure_empty(tmp_path: Path) -> None:
    clock = FakeClock()
    _write_proc(tmp_path, busy=0, total=0, psi_us=None)
    s = HostSampler(clock, proc_root=tmp_path)
    _write_proc(tmp_path, busy=50, total=100, psi_us=None)
    clock.advance(1.0)
    assert s.sample() == HostSecond(50.0, None)


def test_sampler_on_this_machine() -> None:
    s = HostSampler(RealClock())
    RealClock().sleep(0.3)
    got = s.sample()
    assert got.cpu_pct is not None and 0.0 <= got.cpu_pct <= 100.0
    if Path("/proc/pressure/cpu").exists():
        assert got.pressure_pct is not None and 0.0 <= got.pressure_pct <= 100.0


@pytest.mark.parametrize(("second", "saturated"), [
    (HostSecond(89.9, 79.9), False), (HostSecond(90.0, None), True),
    (HostSecond(10.0, 80.0), True), (HostSecond(None, None), False),
    (HostSecond(None, 95.0), True),
])
def test_is_saturated(second: HostSecond, saturated: bool) -> None:
    assert is_saturated(second) is saturated


@pytest.mark.parametrize(("busy", "flagged_at", "saturated_s"), [
    ([50, 95, 95, 50, 95, 95, 50], None, 4),  # never 3 in a row: start-ups, not a limit
    ([95, 95, 95], 2, 3),
    ([10, 91, 92, 93, 94, 20, 95, 95, 95], 3, 7),  # flagged once, at the first run
    ([], None, 0),
])
def test_saturation_run(busy: list[float], flagged_at: int | None, saturated_s: int) -> None:
    run = SaturationRun()
    for t, b in enumerate(busy):
        assert run.feed(t, HostSecond(b, None)) is (b >= 90)
    assert run.flagged_at == flagged_at and run.flagged is (flagged_at is not None)
    assert run.saturated_s == saturated_s
    assert run.mean_cpu_pct == (round(sum(busy) / len(busy), 1) if busy else None)


def test_warning_names_the_machine_and_the_time() -> None:
    run = SaturationRun()
    for t in range(3):
        run.feed(t, HostSecond(99.0, None))
    text = warning("autoscale #1", run)
    assert text.startswith(f"autoscale #1: host {machine()} saturated")
    assert "at t=2s" in text and "cores)" in text
