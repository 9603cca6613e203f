"""Per-second load statistics: the accumulator each load process keeps, the wire record it
sends, the merge across workers, and the ``SecondStats`` the harness receives.

Pure: no Locust, no clock (times come in as arguments). Why not Locust's stats_history:
its requests/s is a ~10 s moving average, its history percentiles are cumulative, its
response times are rounded to ~2 significant digits and workers report only every 3 s.
Here every request's latency goes into the histogram of the second it completed in, and
seconds from several workers merge exactly (bucket counts add).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.record.histogram import Histogram

CAUSES = ("status", "timeout", "conn", "other")

# A second is "saturated" when the process was above this share of one core, or its event
# loop woke this late, for this many seconds in a row (Locust's own warning is >90% too).
CPU_SATURATED_PCT = 90.0
LAG_SATURATED_MS = 250.0
SATURATED_STREAK_S = 3


@dataclass
class SecondStats:
    """One second of load, as the harness records it (merged over all load workers)."""

    t_s: int  # [t_s, t_s + 1) since load t=0; warm-up seconds are negative
    offered: float  # intended arrivals of the profile in this second (closed model: sent)
    sent: int  # requests started in this second (open model: slots a user took)
    dropped: int  # open model: slots of this second that no free user could take
    ok: int  # requests completed OK in this second
    failed: int  # requests that failed in this second (any cause)
    failed_by_cause: dict[str, int]  # status / timeout / conn / other
    in_flight: int  # requests in flight when the second closed
    histogram: Histogram  # latencies (ms) of requests completed in this second
    loadgen_cpu_pct: float  # CPU of all load processes, % of one core (summed)
    saturated: bool  # a load process was saturated: latencies not trustworthy
    workers_alive: int  # load processes still running (1 without workers)
    failed_by_status: dict[int, int] = field(default_factory=dict)
    loadgen_cpu_max_pct: float = 0.0  # the busiest single load process
    sched_lag_ms: float = 0.0  # how late the open-model scheduler woke, worst process
    users: int = 0  # Locust users running (open model: the pool; closed: the users)
    workers_reporting: int = 1  # how many processes' data this second holds

    @property
    def requests(self) -> int:
        return self.ok + self.failed


def classify_failure(exception: BaseException | None, status_code: int | None) -> str:
    """Why a request failed: ``status`` (an HTTP error answer), ``timeout``, ``conn``
    (refused / reset / closed), or ``other``. Works on geventhttpclient's, requests' and
    the standard library's exceptions by their types' names and messages, so no client is
    imported; wrapped causes count (geventhttpclient reports a read timeout as
    ``RetriesExceeded(..., original=timed out)``, a ConnectionError)."""
    if status_code and not 200 <= status_code < 400:
        return "status"
    if exception is None:
        return "other"
    chain = _causes(exception)
    names = [" ".join(c.__name__.lower() for c in type(e).__mro__) for e in chain]
    texts = [str(e).lower() for e in chain]
    if any("timeout" in n for n in names) or any("timed out" in t or "timeout" in t
                                                 for t in texts):
        return "timeout"
    conn_words = ("connection", "refused", "reset", "closed", "brokenpipe", "broken pipe",
                  "aborted")
    if any(isinstance(e, ConnectionError) for e in chain) or any(
            w in n for n in names for w in conn_words) or any(
            w in t for t in texts for w in conn_words):
        return "conn"
    return "other"


def _causes(exception: BaseException, depth: int = 4) -> list[BaseException]:
    out = [exception]
    e: BaseException | None = exception
    while e is not None and len(out) <= depth:
        nxt = getattr(e, "original", None) or e.__cause__ or e.__context__
        if not isinstance(nxt, BaseException) or nxt in out:
            break
        out.append(nxt)
        e = nxt
    return out


class _Bucket:
    __slots__ = ("causes", "dropped", "failed", "hist", "ok", "sent", "statuses")

    def __init__(self) -> None:
        self.sent = 0
        self.dropped = 0
        self.ok = 0
        self.failed = 0
        self.causes: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.hist = Histogram()


class SecondBook:
    """Counters per second of one load process. Hot path: ``request`` and ``slot``.

    Times are seconds relative to load t=0 (floats); a second is closed once nothing more
    can fall into it, and is removed from the book.
    """

    def __init__(self) -> None:
        self._b: dict[int, _Bucket] = {}
        self.closed_below = -(10**9)  # every second < this was closed
        self.late = 0  # data that arrived for an already closed second (moved forward)

    def _bucket(self, t_rel: float) -> _Bucket:
        s = math.floor(t_rel)
        if s < self.closed_below:
            self.late += 1
            s = self.closed_below
        b = self._b.get(s)
        if b is None:
            b = self._b[s] = _Bucket()
        return b

    def slot(self, t_intended: float, taken: bool) -> None:
        b = self._bucket(t_intended)
        if taken:
            b.sent += 1
        else:
            b.dropped += 1

    def sent(self, t_rel: float) -> None:
        self._bucket(t_rel).sent += 1

    def unsent(self, t_rel: float, dropped: bool = False) -> None:
        b = self._bucket(t_rel)
        b.sent -= 1
        if dropped:
            b.dropped += 1

    def request(self, t_done: float, latency_ms: float, cause: str | None = None,
                status: int | None = None) -> None:
        b = self._bucket(t_done)
        b.hist.record(latency_ms)
        if cause is None:
            b.ok += 1
            return
        b.failed += 1
        b.causes[cause] = b.causes.get(cause, 0) + 1
        if status:
            b.statuses[status] = b.statuses.get(status, 0) + 1

    def seconds(self) -> list[int]:
        return sorted(self._b)

    def close(self, s: int, **gauges: Any) -> dict[str, Any]:
        """Take second ``s`` out of the book as a wire record (gauges: in_flight, cpu,
        cpu_max, lag_ms, saturated, users)."""
        b = self._b.pop(s, None) or _Bucket()
        self.closed_below = max(self.closed_below, s + 1)
        return {
            "t_s": s, "sent": b.sent, "dropped": b.dropped, "ok": b.ok, "failed": b.failed,
            "causes": dict(b.causes), "statuses": {str(k): v for k, v in b.statuses.items()},
            "hist": b.hist.to_dict() if b.hist.total else None,
            "in_flight": int(gauges.get("in_flight", 0)),
            "cpu": float(gauges.get("cpu", 0.0)),
            "cpu_max": float(gauges.get("cpu_max", gauges.get("cpu", 0.0))),
            "lag_ms": float(gauges.get("lag_ms", 0.0)),
            "saturated": bool(gauges.get("saturated", False)),
            "users": int(gauges.get("users", 0)),
            "n": 1,
        }


def empty_record(s: int) -> dict[str, Any]:
    return SecondBook().close(s)


def merge_records(records: Iterable[Mapping[str, Any]], s: int | None = None) -> dict[str, Any]:
    """Exact merge of the same second from several processes: counts add, histograms add,
    CPU adds (and its max is kept), lag takes the worst, saturated is any."""
    out: dict[str, Any] = empty_record(s if s is not None else 0)
    out["n"] = 0
    hist = Histogram()
    first = True
    for r in records:
        if first and s is None:
            out["t_s"] = r["t_s"]
        first = False
        for k in ("sent", "dropped", "ok", "failed", "in_flight", "users", "n"):
            out[k] += int(r.get(k, 0 if k != "n" else 1))
        out["cpu"] += float(r.get("cpu", 0.0))
        out["cpu_max"] = max(out["cpu_max"], float(r.get("cpu_max", 0.0)))
        out["lag_ms"] = max(out["lag_ms"], float(r.get("lag_ms", 0.0)))
        out["saturated"] = out["saturated"] or bool(r.get("saturated"))
        for c, n in (r.get("causes") or {}).items():
            out["causes"][c] = out["causes"].get(c, 0) + int(n)
        for c, n in (r.get("statuses") or {}).items():
            out["statuses"][str(c)] = out["statuses"].get(str(c), 0) + int(n)
        if r.get("hist"):
            hist.merge(Histogram.from_dict(r["hist"]))
    out["hist"] = hist.to_dict() if hist.total else None
    return out


def to_second_stats(rec: Mapping[str, Any], offered: float | None,
                    workers_alive: int) -> SecondStats:
    """The harness's view of a (merged) wire record. ``offered`` None: the closed model,
    where what users attempted (sent) is what was offered."""
    hist = Histogram.from_dict(rec["hist"]) if rec.get("hist") else Histogram()
    causes = {c: 0 for c in CAUSES}
    for c, n in (rec.get("causes") or {}).items():
        causes[c] = causes.get(c, 0) + int(n)
    return SecondStats(
        t_s=int(rec["t_s"]), offered=float(rec["sent"]) if offered is None else offered,
        sent=int(rec["sent"]), dropped=int(rec["dropped"]), ok=int(rec["ok"]),
        failed=int(rec["failed"]), failed_by_cause=causes, in_flight=int(rec["in_flight"]),
        histogram=hist, loadgen_cpu_pct=float(rec["cpu"]), saturated=bool(rec["saturated"]),
        workers_alive=workers_alive,
        failed_by_status={int(k): int(v) for k, v in (rec.get("statuses") or {}).items()},
        loadgen_cpu_max_pct=float(rec.get("cpu_max", rec["cpu"])),
        sched_lag_ms=float(rec.get("lag_ms", 0.0)), users=int(rec.get("users", 0)),
        workers_reporting=int(rec.get("n", 1)),
    )


class SaturationDetector:
    """Is this load process saturated? Fed once per second with how busy it was (% of
    one core: running, or runnable but waiting for a core — see ``harness.load.cpu``),
    the worst lateness of its event loop, and whether Locust's own CPU warning fired.

    Saturated in a second when busy (or the lag) was over the threshold for ``streak_s``
    seconds in a row ending with it, or Locust warned since the last second.
    """

    def __init__(self, cpu_pct: float = CPU_SATURATED_PCT, lag_ms: float = LAG_SATURATED_MS,
                 streak_s: int = SATURATED_STREAK_S) -> None:
        self.cpu_pct, self.lag_ms, self.streak_s = cpu_pct, lag_ms, streak_s
        self._streak = 0
        self.ever = False
        self.reason = ""

    def update(self, cpu_pct: float, lag_ms: float = 0.0, locust_warned: bool = False) -> bool:
        hot = cpu_pct > self.cpu_pct or lag_ms > self.lag_ms
        self._streak = self._streak + 1 if hot else 0
        saturated = locust_warned or self._streak >= self.streak_s
        if saturated and not self.ever:
            self.ever = True
            if locust_warned:
                self.reason = "Locust's CPU warning (>90% of a core)"
            elif cpu_pct > self.cpu_pct:
                self.reason = (f"busy {cpu_pct:.0f}% of a core (running or waiting for one) "
                               f"for {self._streak} s")
            else:
                self.reason = f"event loop {lag_ms:.0f} ms late for {self._streak} s"
        return saturated


class _Node:
    __slots__ = ("done_last", "first_s", "last", "lost")

    def __init__(self, first_s: int) -> None:
        self.first_s = first_s
        self.last = first_s - 1  # last second this node reported
        self.done_last: int | None = None  # set when the node finished: no seconds after it
        self.lost = False


class SecondMerger:
    """Assembles complete seconds from the load processes' records, in order.

    A second is emitted once every node has reported it, or is lost, or finished before it
    (a node that joined later is not waited for before its first second). Pure: the master
    process (or the single load process, with one node) feeds it and passes ``emit``.
    """

    def __init__(self, first_s: int, emit: Any) -> None:
        self.next_s = first_s
        self._emit = emit
        self._nodes: dict[str, _Node] = {}
        self._pending: dict[int, dict[str, Mapping[str, Any]]] = {}
        self.late = 0  # records for seconds already emitted (e.g. a node declared lost)

    def add_node(self, node: str, first_s: int | None = None) -> None:
        if node not in self._nodes:
            self._nodes[node] = _Node(self.next_s if first_s is None else first_s)

    @property
    def nodes(self) -> dict[str, _Node]:
        return self._nodes

    def alive(self) -> list[str]:
        return [n for n, st in self._nodes.items() if not st.lost and st.done_last is None]

    def add(self, node: str, rec: Mapping[str, Any]) -> None:
        self.add_node(node)
        s = int(rec["t_s"])
        if s < self.next_s:
            self.late += 1
            return
        self._pending.setdefault(s, {})[node] = rec
        st = self._nodes[node]
        st.last = max(st.last, s)
        self.pump()

    def done(self, node: str, last_s: int) -> None:
        self.add_node(node)
        st = self._nodes[node]
        st.done_last = last_s
        st.last = max(st.last, last_s)
        self.pump()

    def lost(self, node: str) -> None:
        self.add_node(node)
        self._nodes[node].lost = True
        self.pump()

    def _complete(self, s: int) -> bool:
        got = self._pending.get(s, {})
        for name, st in self._nodes.items():
            if name in got or st.lost or s < st.first_s:
                continue
            if st.done_last is not None and s > st.done_last:
                continue
            return False
        return True

    def _horizon(self) -> int:
        # Never run past the last second anyone reported (all nodes done: nothing to wait for).
        h = max((st.last for st in self._nodes.values()), default=self.next_s - 1)
        return max(h, max(self._pending, default=h))

    def pump(self) -> None:
        while self.next_s <= self._horizon() and self._complete(self.next_s):
            self._emit_one(self.next_s)

    def flush(self) -> None:
        """Emit everything up to the horizon, complete or not (the run is over)."""
        while self.next_s <= self._horizon():
            self._emit_one(self.next_s)

    def _emit_one(self, s: int) -> None:
        recs = list(self._pending.pop(s, {}).values())
        merged = merge_records(recs, s)
        merged["n"] = len(recs)
        self.next_s = s + 1
        self._emit(merged)
