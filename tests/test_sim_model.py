"""The sim's queueing model against known queueing results, and its pure parts.

Known results (independent Poisson streams into many replicas at once, so a few seconds of
simulated time give ~10⁵ samples):
- M/M/c: mean wait Wq and the probability of waiting from the Erlang-C formula;
- M/M/c/K: the blocking probability (503s) of the finite queue;
- M/D/1: the Pollaczek–Khinchine mean wait.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.platforms.sim.lb import Balancer
from harness.platforms.sim.model import (
    OK,
    STATUS,
    TIMEOUT,
    AppModel,
    QueueBank,
    SecondBook,
    bucket_indices,
)
from harness.record.histogram import Histogram, bucket_of


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load a = λ/μ (< c)."""
    s = sum(a**k / math.factorial(k) for k in range(c))
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (s + top)


def mmck_blocking(c: int, k: int, a: float) -> float:
    """Blocking probability of M/M/c/K (K = servers + waiting places)."""
    p = [a**n / math.factorial(n) if n <= c else a**n / (math.factorial(c) * c ** (n - c))
         for n in range(k + 1)]
    return p[k] / sum(p)


def simulate(app: AppModel, rate: float, *, replicas: int = 200, seconds: float = 30.0,
             warmup_s: float = 3.0, batch_s: float = 0.5, seed: int = 1
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent Poisson(rate) streams into `replicas` identical queues; returns the
    latencies (s), service times (s) and rejected flags of arrivals after warm-up."""
    rng = np.random.default_rng(seed)
    bank = QueueBank(app, capacity=replicas)
    for s in range(replicas):
        bank.reset(s)
    lats, svcs, rej = [], [], []
    t = 0.0
    while t < seconds:
        n = rng.poisson(rate * batch_s * replicas)
        at = np.sort(t + rng.uniform(0, batch_s, n))
        slot = rng.integers(0, replicas, n)  # thinning a Poisson stream keeps it Poisson
        svc = app.service_times(rng, n)
        r = bank.serve(slot, at, svc, None, overhead_s=0.0, timeout_s=1e9)
        keep = at >= warmup_s
        lats.append(r.lat_ms[keep] / 1000.0)
        svcs.append(svc[keep])
        rej.append(r.code[keep] == STATUS)
        t += batch_s
    return np.concatenate(lats), np.concatenate(svcs), np.concatenate(rej)


@pytest.mark.parametrize(("c", "rho"), [(4, 0.8), (4, 0.6), (1, 0.7), (8, 0.9)],
                         ids=["c4-rho0.8", "c4-rho0.6", "c1-rho0.7", "c8-rho0.9"])
def test_mmc_mean_wait_matches_erlang_c(c: int, rho: float) -> None:
    app = AppModel(workers=c, service_ms=50, service_dist="exponential", queue_limit=100_000)
    mu = 1000.0 / app.service_ms
    lam = rho * c * mu
    lat, svc, rej = simulate(app, lam, seconds=40 if rho < 0.85 else 80)
    assert not rej.any()
    wait = lat - svc
    pw = erlang_c(c, lam / mu)
    wq = pw / (c * mu - lam)
    assert wait.mean() == pytest.approx(wq, rel=0.04), (wait.mean(), wq)
    assert (wait > 1e-12).mean() == pytest.approx(pw, rel=0.03)
    assert lat.mean() == pytest.approx(wq + 1 / mu, rel=0.03)


@pytest.mark.parametrize(("c", "q", "rho"), [(2, 3, 0.9), (4, 20, 1.2), (4, 0, 0.7)],
                         ids=["c2-q3", "c4-q20-overload", "c4-no-queue"])
def test_finite_queue_blocking_matches_mmck(c: int, q: int, rho: float) -> None:
    app = AppModel(workers=c, service_ms=50, queue_limit=q)
    mu = 20.0
    _, _, rej = simulate(app, rho * c * mu, seconds=30)
    assert rej.mean() == pytest.approx(mmck_blocking(c, c + q, rho * c), rel=0.05, abs=0.003)


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    app = AppModel(workers=1, service_ms=50, service_dist="constant", queue_limit=100_000)
    lam, s = 14.0, 0.05
    rho = lam * s
    lat, svc, _ = simulate(app, lam, seconds=60)
    wq = rho * s / (2 * (1 - rho))
    assert (lat - svc).mean() == pytest.approx(wq, rel=0.05)
    assert np.allclose(svc, s)


@pytest.mark.parametrize("dist", ["exponential", "lognormal", "constant"])
def test_service_time_means_are_preserved(dist: str) -> None:
    app = AppModel(service_ms=40, service_dist=dist, sigma=0.8)
    s = app.service_times(np.random.default_rng(3), 400_000)
    assert s.mean() == pytest.approx(0.040, rel=0.01)


def test_app_model_reads_the_sample_apps_env() -> None:
    app = AppModel.from_env({"WORKERS": "8", "SERVICE_MS": "20", "QUEUE_LIMIT": "5",
                             "STARTUP_S": "2"})
    assert (app.workers, app.service_ms, app.queue_limit, app.startup_s) == (8, 20.0, 5, 2.0)
    assert app.capacity_rps == pytest.approx(400.0)
    assert AppModel.from_env({}) == AppModel()  # the sample app's defaults
    with pytest.raises(ValueError, match="WORKERS"):
        AppModel.from_env({"WORKERS": "zero"})


def test_bucket_indices_match_the_histogram() -> None:
    vals = np.concatenate([np.random.default_rng(5).lognormal(3, 2, 20_000),
                           [0.0, 0.0005, 0.001, 1.0, 50.0, 1e5]])
    got = bucket_indices(vals)
    want = [bucket_of(float(v)) for v in vals]
    # float rounding of log() may move a value sitting exactly on a boundary
    assert (got == np.array(want)).mean() > 0.999


def test_second_book_counts_latencies_and_max_exactly() -> None:
    book = SecondBook(first_s=-2, span_s=4, max_latency_ms=5000)
    done = np.array([-0.5, -0.8, 0.3, 0.9, 1.1])
    lat = np.array([10.0, 20.0, 30.0, 3000.0, 5.0])
    code = np.array([OK, STATUS, OK, TIMEOUT, OK], np.int8)
    book.add(done, lat, code)
    s = book.close()  # second -2: nothing
    assert (s.t_s, s.ok, s.failed, s.histogram.total) == (-2, 0, 0, 0)
    s = book.close()
    assert (s.t_s, s.ok, s.failed_by_cause["status"]) == (-1, 1, 1)
    ref = Histogram()
    for v in (10.0, 20.0):
        ref.record(v)
    assert s.histogram.counts == ref.counts and s.histogram.max_ms == 20.0
    s = book.close()
    assert (s.ok, s.failed_by_cause["timeout"], s.histogram.max_ms) == (1, 1, 3000.0)
    assert s.histogram.percentile(50) == pytest.approx(30.0, rel=0.01)
    book.remove(np.array([1.1]), np.array([5.0]), np.array([OK], np.int8))
    s = book.close()
    assert (s.t_s, s.ok, s.histogram.total) == (1, 0, 0)
    with pytest.raises(ValueError, match="beyond"):
        book.add(np.array([100.0]), np.array([1.0]), np.array([OK], np.int8))


def test_queue_limit_and_timeouts_per_request() -> None:
    # one replica, one worker, queue of 1, constant 100 ms: the 3rd simultaneous request is
    # rejected; the 2nd waits 100 ms; timeout 0.15 s fails it as a timeout at 150 ms
    app = AppModel(workers=1, service_ms=100, service_dist="constant", queue_limit=1)
    bank = QueueBank(app, capacity=1)
    bank.reset(0)
    at = np.array([0.0, 0.001, 0.002])
    r = bank.serve(np.zeros(3, np.int64), at, np.full(3, 0.1), None, overhead_s=0.001,
                   timeout_s=0.15)
    assert r.code.tolist() == [OK, TIMEOUT, STATUS]
    assert r.lat_ms == pytest.approx([101.0, 150.0, 1.0])
    assert r.done == pytest.approx([0.101, 0.151, 0.003])
    assert bank.busy(np.array([0]), 0.05).tolist() == [1]
    assert bank.queued(np.array([0]), 0.05).tolist() == [1]
    assert bank.outstanding(np.array([0]), 0.15).tolist() == [1]


def test_crash_returns_what_was_inside_and_empties_the_replica() -> None:
    app = AppModel(workers=2, service_ms=100, service_dist="constant", queue_limit=10)
    bank = QueueBank(app, capacity=2)
    bank.reset(0)
    bank.reset(1)
    at = np.array([0.0, 0.01, 0.02, 0.03, 0.04])
    slots = np.array([0, 0, 0, 1, 0])
    r = bank.serve(slots, at, np.full(5, 0.1), None, overhead_s=0.0, timeout_s=10)
    assert r.done == pytest.approx([0.1, 0.11, 0.2, 0.13, 0.21])
    # at 0.105 the first has finished; two are in service, one waits
    lost = bank.crash(0, 0.105, overhead_s=0.0, timeout_s=10)
    assert sorted(lost.done.tolist()) == pytest.approx([0.11, 0.2, 0.21])
    assert bank.outstanding(np.array([0, 1]), 0.105).tolist() == [0, 1]


@pytest.mark.parametrize(
    ("conns", "k", "expected_counts"),
    [
        ([0, 0, 0], 6, [2, 2, 2]),  # even
        ([3, 0, 1], 4, [0, 3, 1]),  # fill the emptiest up to the others' level: 3,3,2
        ([5, 5], 1, [1, 0]),  # a tie goes round robin (first call starts at 0)
        ([0, 10], 3, [3, 0]),  # the busy one gets nothing
    ],
    ids=["even", "water-fill", "tie", "busy-skipped"],
)
def test_leastconn_water_fills(conns: list[int], k: int, expected_counts: list[int]) -> None:
    pos = Balancer("leastconn").assign(k, np.array(conns))
    assert np.bincount(pos, minlength=len(conns)).tolist() == expected_counts


def test_leastconn_sequence_is_greedy_and_roundrobin_cycles() -> None:
    seq = Balancer("leastconn").assign(5, np.array([2, 0, 1])).tolist()
    assert seq[:3] == [1, 1, 2] or seq[:3] == [1, 2, 1]
    rr = Balancer("roundrobin")
    assert rr.assign(4, np.zeros(3)).tolist() == [0, 1, 2, 0]
    assert rr.assign(2, np.zeros(3)).tolist() == [1, 2]
    with pytest.raises(ValueError, match="policy"):
        Balancer("random")
