"""Per-second books, the exact merge across workers, failure causes, saturation: pure."""

from __future__ import annotations

import random
from typing import Any

import pytest

from harness.load.cpu import CpuSampler
from harness.load.stats import (
    SaturationDetector,
    SecondBook,
    SecondMerger,
    classify_failure,
    merge_records,
    to_second_stats,
)
from harness.record.histogram import Histogram


def test_book_attributes_requests_to_the_second_they_completed_in() -> None:
    b = SecondBook()
    b.slot(0.99, taken=True)        # scheduled in second 0 ...
    b.request(1.02, 30.0)           # ... completed in second 1
    b.slot(1.5, taken=False)
    b.request(1.7, 12.0, cause="status", status=503)
    r0, r1 = b.close(0), b.close(1)
    assert (r0["sent"], r0["ok"], r0["hist"]) == (1, 0, None)
    assert (r1["sent"], r1["dropped"], r1["ok"], r1["failed"]) == (0, 1, 1, 1)
    assert r1["causes"] == {"status": 1} and r1["statuses"] == {"503": 1}
    assert Histogram.from_dict(r1["hist"]).total == 2


def test_data_for_a_closed_second_moves_forward_and_is_counted() -> None:
    b = SecondBook()
    b.close(0)
    b.request(0.5, 1.0)  # second 0 is closed: goes to second 1
    assert b.late == 1 and b.close(1)["ok"] == 1


def test_unsent_takes_a_request_back() -> None:
    b = SecondBook()
    b.sent(2.1)
    b.sent(2.2)
    b.unsent(2.2)
    b.slot(2.3, taken=True)
    b.unsent(2.3, dropped=True)  # a slot handed to a user killed before it ran
    r = b.close(2)
    assert (r["sent"], r["dropped"]) == (1, 1)


def _rec(s: int, latencies: list[float], **kw: Any) -> dict[str, Any]:
    b = SecondBook()
    for v in latencies:
        b.request(s + 0.5, v)
    return b.close(s, **kw)


def test_merge_is_exact_counts_add_histograms_add() -> None:
    rng = random.Random(1)
    a = [rng.lognormvariate(2, 1) for _ in range(3000)]
    c = [rng.lognormvariate(3, 0.5) for _ in range(2000)]
    m = merge_records([_rec(4, a, cpu=40, in_flight=3), _rec(4, c, cpu=70, in_flight=5,
                                                          saturated=True)], 4)
    assert m["ok"] == 5000 and m["in_flight"] == 8
    assert m["cpu"] == 110 and m["cpu_max"] == 70 and m["saturated"] is True
    h = Histogram.from_dict(m["hist"])
    raw = sorted(a + c)
    exact_p95 = raw[int(0.95 * len(raw)) - 1]
    assert h.percentile(95) == pytest.approx(exact_p95, rel=0.01)
    assert h.max_ms == max(raw)


@pytest.mark.parametrize(("exc", "status", "cause"), [
    (None, 503, "status"),
    (RuntimeError("HTTP 404"), 404, "status"),
    (TimeoutError("timed out"), 0, "timeout"),
    (TimeoutError(), None, "timeout"),
    (ConnectionRefusedError(111, "Connection refused"), 0, "conn"),
    (ConnectionResetError(104, "Connection reset by peer"), None, "conn"),
    (BrokenPipeError(), None, "conn"),
    (OSError("[Errno 111] Connection refused"), 0, "conn"),
    (ValueError("bad body"), 200, "other"),  # catch_response marked a 200 as failed
    (RuntimeError("something"), None, "other"),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_classify_failure(exc: BaseException | None, status: int | None, cause: str) -> None:
    assert classify_failure(exc, status) == cause


def test_classify_by_type_name_without_importing_clients() -> None:
    class ConnectTimeout(Exception):  # requests' name, also a ConnectionError there
        pass

    class HTTPConnectionClosed(Exception):  # geventhttpclient's
        pass

    class RetriesExceeded(ConnectionError):  # geventhttpclient wraps the real cause
        def __init__(self, url: str, original: BaseException) -> None:
            super().__init__(url)
            self.original = original

    assert classify_failure(ConnectTimeout(), None) == "timeout"
    assert classify_failure(HTTPConnectionClosed(), None) == "conn"
    assert classify_failure(RetriesExceeded("/work", TimeoutError("timed out")), 0) == "timeout"
    assert classify_failure(RetriesExceeded("/work", ConnectionRefusedError(111)), 0) == "conn"
    try:
        try:
            raise TimeoutError("read")
        except TimeoutError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert classify_failure(outer, None) == "timeout"


# -- the merger -----------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.out: list[dict[str, Any]] = []

    def __call__(self, rec: dict[str, Any]) -> None:
        self.out.append(rec)

    @property
    def seconds(self) -> list[int]:
        return [r["t_s"] for r in self.out]


def test_merger_waits_for_every_worker_then_emits_in_order() -> None:
    sink = Sink()
    m = SecondMerger(-2, sink)
    m.add_node("a")
    m.add_node("b")
    m.add("a", _rec(-2, [1.0]))
    m.add("a", _rec(-1, [1.0]))
    assert sink.seconds == []  # b has not reported -2
    m.add("b", _rec(-1, [2.0]))
    assert sink.seconds == []
    m.add("b", _rec(-2, [2.0, 3.0]))
    assert sink.seconds == [-2, -1]
    assert sink.out[0]["ok"] == 3 and sink.out[0]["n"] == 2


def test_merger_stops_waiting_for_a_lost_worker() -> None:
    sink = Sink()
    m = SecondMerger(0, sink)
    m.add_node("a")
    m.add_node("b")
    for s in range(3):
        m.add("a", _rec(s, [1.0]))
    m.add("b", _rec(0, [1.0]))
    assert sink.seconds == [0]
    m.lost("b")
    assert sink.seconds == [0, 1, 2]
    assert [r["n"] for r in sink.out] == [2, 1, 1]
    assert m.alive() == ["a"]


def test_merger_done_workers_are_not_waited_for_after_their_last_second() -> None:
    sink = Sink()
    m = SecondMerger(0, sink)
    m.add_node("a")
    m.add_node("b")
    m.add("a", _rec(0, [1.0]))
    m.done("a", 0)
    m.add("b", _rec(0, [1.0]))
    m.add("b", _rec(1, [1.0]))
    assert sink.seconds == [0, 1]
    m.done("b", 1)
    assert sink.seconds == [0, 1]  # nothing past the last reported second
    assert m.alive() == []


def test_merger_late_joiner_not_waited_before_its_first_second() -> None:
    sink = Sink()
    m = SecondMerger(0, sink)
    m.add_node("a")
    m.add_node("late", first_s=3)
    for s in range(3):
        m.add("a", _rec(s, [1.0]))
    assert sink.seconds == [0, 1, 2]
    m.add("a", _rec(3, [1.0]))
    assert sink.seconds == [0, 1, 2]  # second 3 waits for the joiner
    m.add("late", _rec(3, [1.0]))
    assert sink.seconds == [0, 1, 2, 3]


def test_merger_flush_and_late_records() -> None:
    sink = Sink()
    m = SecondMerger(0, sink)
    m.add_node("a")
    m.add_node("b")
    m.add("a", _rec(0, [1.0]))
    m.add("a", _rec(1, [1.0]))
    m.flush()
    assert sink.seconds == [0, 1]
    m.add("b", _rec(0, [1.0]))  # too late: second 0 is out
    assert m.late == 1


def test_to_second_stats_fills_every_cause() -> None:
    s = to_second_stats(_rec(3, [5.0]), offered=100.0, workers_alive=2)
    assert s.t_s == 3 and s.offered == 100 and s.ok == 1 and s.requests == 1
    assert s.failed_by_cause == {"status": 0, "timeout": 0, "conn": 0, "other": 0}
    closed = to_second_stats({**_rec(3, []), "sent": 7}, offered=None, workers_alive=1)
    assert closed.offered == 7  # closed model: offered is what the users sent


# -- saturation -----------------------------------------------------------------------------


@pytest.mark.parametrize(("busy", "lag", "warned", "expected"), [
    ([95, 95, 95], [0, 0, 0], [False] * 3, [False, False, True]),   # 3 s over 90%
    ([95, 50, 95], [0, 0, 0], [False] * 3, [False, False, False]),  # the streak broke
    ([10, 10, 10], [300, 300, 300], [False] * 3, [False, False, True]),  # loop always late
    ([10, 10], [0, 0], [False, True], [False, True]),  # Locust's own CPU warning
], ids=["busy", "broken-streak", "lag", "locust-warning"])
def test_saturation_detector(busy: list[float], lag: list[float], warned: list[bool],
                             expected: list[bool]) -> None:
    d = SaturationDetector()
    got = [d.update(b, g, w) for b, g, w in zip(busy, lag, warned, strict=True)]
    assert got == expected
    assert d.ever == any(expected) and (d.reason != "") == any(expected)


def test_cpu_sampler_counts_waiting_for_a_core(tmp_path: Any) -> None:
    f = tmp_path / "schedstat"
    f.write_text("0 0 0\n")
    s = CpuSampler(f)
    s._last = (s._last[0] - 1.0, s._last[1], 0.0, s._last[3])  # one second ago
    f.write_text("100 600000000 5\n")  # waited 0.6 s for a core meanwhile
    cpu, busy = s.sample()
    assert busy - cpu == pytest.approx(60, abs=1)
    missing = CpuSampler(tmp_path / "nope")
    missing._last = (missing._last[0] - 1.0, *missing._last[1:])
    cpu, busy = missing.sample()
    assert busy == cpu
