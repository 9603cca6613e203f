"""Load profiles and the open model's slot schedule: pure, hand-checkable arithmetic."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from harness.load.profile import Profile, ProfileError, SlotSchedule, StageSpec


def spike() -> Profile:
    # 100 rps for 5 s, up to 600 over 1 s and hold to t=10, down to 100 over 1 s, hold to 15
    return Profile.from_stages([StageSpec(5, 100), StageSpec(5, 600, 1), StageSpec(5, 100, 1)],
                               start_value=100)


@pytest.mark.parametrize(("t", "rate"), [
    (0.0, 100), (4.99, 100),
    (5.0, 100),      # the ramp starts at the previous target
    (5.5, 350),      # halfway up: 100 + (600 - 100) / 2
    (6.0, 600), (9.9, 600),
    (10.5, 350), (11.0, 100), (15.0, 100),
    (15.01, 0), (-1.0, 0),  # outside the profile
], ids=lambda v: str(v))
def test_spike_rate_at(t: float, rate: float) -> None:
    assert spike().rate_at(t) == pytest.approx(rate)


def test_step_is_a_jump_and_right_continuous() -> None:
    p = Profile.from_stages([(2, 10, 0), (2, 50, 0)], start_value=10)
    assert p.rate_at(1.999) == 10
    assert p.rate_at(2.0) == 50  # the later point at the same instant holds from it on
    assert p.arrivals_between(0, 4) == pytest.approx(2 * 10 + 2 * 50)


def test_linear_ramp_from_zero() -> None:
    p = Profile.from_stages([(10, 100, 10)])
    assert p.rate_at(5) == pytest.approx(50)
    assert p.total == pytest.approx(500)  # triangle: 10 s * 100 / 2
    assert p.arrivals_between(0, 1) == pytest.approx(5)  # 1 s * (0 + 10) / 2


@pytest.mark.parametrize(("t0", "t1", "expected"), [
    (0, 5, 500),             # 5 s at 100
    (5, 6, 350),             # the ramp's trapezoid: (100 + 600) / 2
    (6, 10, 2400),           # 4 s at 600
    (0, 15, 500 + 350 + 2400 + 350 + 400),
    (3, 3, 0), (4, 2, 0),    # empty and reversed windows
    (14, 20, 100),           # clipped at the end
])
def test_arrivals_between_is_the_integral(t0: float, t1: float, expected: float) -> None:
    assert spike().arrivals_between(t0, t1) == pytest.approx(expected)


def test_time_at_inverts_cumulative_on_every_segment_kind() -> None:
    p = spike().with_warmup(2, 50)
    for area in (0.25, 1, 99.5, 100, 350.7, 1000, 2500.5, 3800, p.total):
        t = p.time_at(area)
        assert t is not None
        assert p.cumulative(t) == pytest.approx(area, abs=1e-6)
    assert p.time_at(p.total + 1) is None


def test_with_warmup_has_negative_times() -> None:
    p = Profile.constant(100, 10).with_warmup(3, 20)
    assert (p.start_s, p.end_s) == (-3, 10)
    assert p.rate_at(-2) == 20 and p.rate_at(0) == 100
    assert p.arrivals_between(-3, 0) == pytest.approx(60)


@pytest.mark.parametrize(("points", "message"), [
    ([(0, 1)], "at least two points"),
    ([(0, 1), (0, 2)], "longer than 0 s"),
    ([(0, 1), (2, -1)], "negative"),
    ([(0, 1), (2, 1), (1, 1)], "goes back in time"),
    ([(0, float("nan")), (1, 1)], "finite"),
])
def test_bad_points_are_refused(points: list[tuple[float, float]], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        Profile(points)


@pytest.mark.parametrize(("stages", "message"), [
    ([], "no stages"),
    ([(0, 10, 0)], "duration_s must be > 0"),
    ([(5, 10, 6)], "ramp_s"),
    ([(5, -1, 0)], "negative"),
])
def test_bad_stages_are_refused(stages: list[tuple[float, float, float]], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        Profile.from_stages(stages)


# -- CSV traces -------------------------------------------------------------------------------


def test_csv_trace_is_interpolated(tmp_path: Path) -> None:
    f = tmp_path / "trace.csv"
    f.write_text("# my traffic\nt_s,rps\n0,10\n10,110\n20,110\n")
    p = Profile.from_csv(f)
    assert p.rate_at(5) == pytest.approx(60)
    assert p.duration_s == 20
    assert p.total == pytest.approx(600 + 1100)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty trace"),
    ("time,rps\n0,1\n1,1\n", "header must name"),
    ("t_s,load\n0,1\n1,1\n", "no 'rps' column"),
    ("t_s,rps\n0,1\n", "at least two rows"),
    ("t_s,rps\n0,1\n1,x\n", r"trace.csv:3: not a number"),
    ("t_s,rps\n0,1\n1,-5\n", r"trace.csv:3: rps=-5 is negative"),
    ("t_s,rps\n0,1\n2,1\n1,1\n", r"trace.csv:4: t_s=1 is not after"),
    ("t_s,rps\n1,1\n2,1\n", r"trace.csv:2: the first row must be at t_s=0"),
    ("t_s,rps\n0\n1,1\n", "expected 2 columns"),
])
def test_csv_trace_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "trace.csv"
    f.write_text(text)
    with pytest.raises(ProfileError, match=message):
        Profile.from_csv(f)


def test_csv_trace_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        Profile.from_csv(tmp_path / "nope.csv")


def test_users_column_for_the_closed_model(tmp_path: Path) -> None:
    f = tmp_path / "users.csv"
    f.write_text("t_s,users\n0,5\n10,5\n")
    assert Profile.from_csv(f).users_at(3) == 5


# -- the slot schedule ------------------------------------------------------------------------


def per_second(times: list[float]) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in times:
        out[math.floor(t)] = out.get(math.floor(t), 0) + 1
    return out


def test_uniform_slots_give_the_exact_rate_each_second() -> None:
    times = list(SlotSchedule(spike()))
    counts = per_second(times)
    assert counts[0] == 100 and counts[7] == 600 and counts[14] == 100
    assert len(times) == round(spike().total)
    assert times == sorted(times)
    # deterministic spacing: 10 ms apart at 100 rps
    assert times[1] - times[0] == pytest.approx(0.01)


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_worker_shares_partition_the_schedule(workers: int) -> None:
    p = spike()
    whole = list(SlotSchedule(p))
    parts = [list(SlotSchedule(p, index=i, of=workers)) for i in range(workers)]
    assert sorted(t for part in parts for t in part) == whole
    sizes = [len(x) for x in parts]
    assert max(sizes) - min(sizes) <= 1


def test_reassign_after_a_lost_worker_keeps_the_union_exact() -> None:
    # Two workers; worker 1 dies after t=4; from t=6 worker 0 takes everything.
    p = Profile.constant(100, 10)
    w0 = SlotSchedule(p, index=0, of=2)
    w1 = SlotSchedule(p, index=1, of=2)
    got0 = []
    while (t := w0.peek()) is not None and t < 5:
        got0.append(t)
        w0.advance()
    w0.reassign(6.0, 0, 1)  # announced at t=5, effective at t=6
    got0 += list(w0)
    got1 = [t for t in w1 if t < 4]
    counts = per_second(got0)
    assert counts[4] == 50 and counts[5] == 50  # still its half until the switch
    assert counts[6] == 100 and counts[9] == 100  # the whole rate after it
    assert not set(got0) & set(got1)
    # nothing lost or doubled from 6 s on
    assert [t for t in got0 if t >= 6] == [t for t in SlotSchedule(p) if t >= 6]


def test_poisson_slots_follow_the_rate_and_are_seeded() -> None:
    p = Profile.constant(500, 20)
    a = list(SlotSchedule(p, mode="poisson", seed=7))
    b = list(SlotSchedule(p, mode="poisson", seed=7))
    c = list(SlotSchedule(p, mode="poisson", seed=8))
    assert a == b and a != c
    assert len(a) == pytest.approx(10_000, rel=0.05)  # sd of a Poisson(10000) is 100
    gaps = [y - x for x, y in itertools.pairwise(a)]
    cv = (sum((g - 1 / 500) ** 2 for g in gaps) / len(gaps)) ** 0.5 * 500
    assert cv == pytest.approx(1.0, abs=0.1)  # exponential gaps: sd == mean


def test_bad_share_and_mode() -> None:
    with pytest.raises(ProfileError):
        SlotSchedule(spike(), index=2, of=2)
    with pytest.raises(ProfileError):
        SlotSchedule(spike(), mode="bursty")


def test_profile_dict_round_trip() -> None:
    p = spike().with_warmup(2, 30)
    assert Profile.from_dict(p.to_dict()) == p


def test_warmup_needs_a_profile_starting_at_zero() -> None:
    with pytest.raises(ProfileError, match="starts at 2"):
        Profile.constant(10, 5, start_s=2).with_warmup(1, 10)
