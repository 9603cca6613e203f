"""Mergeable latency histogram with fixed logarithmic buckets (≤ 1% relative error).

Every request's latency goes in; per-second histograms are merged exactly (bucket counts
add), so p50/p95/p99 over any window and across load workers come from all requests,
never from averages of percentiles.

Bucket ``i`` holds values in (GAMMA**(i-1), GAMMA**i] microseconds and is reported as
``2 * GAMMA**i / (GAMMA + 1)``, whose distance to any value in the bucket is at most
``(GAMMA - 1) / (GAMMA + 1)`` ≈ 0.99% of it (the DDSketch construction). The maximum is
kept exactly. No numpy: this runs on the load generator's per-request path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

GAMMA = 1.02
_LOG_GAMMA = math.log(GAMMA)
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)


def bucket_of(value_ms: float) -> int:
    us = value_ms * 1000.0
    if us <= 1.0:
        return 0
    return math.ceil(math.log(us) / _LOG_GAMMA)


def bucket_value_ms(index: int) -> float:
    if index <= 0:
        return 0.001
    return 2.0 * GAMMA**index / (GAMMA + 1.0) / 1000.0


class CorruptHistogram(ValueError):
    """A stored histogram cell that does not decode; names no content (docs/columns.md)."""


class Histogram:
    __slots__ = ("counts", "max_ms", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.max_ms = 0.0

    def record(self, value_ms: float) -> None:
        i = bucket_of(value_ms)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.total += 1
        if value_ms > self.max_ms:
            self.max_ms = value_ms

    def merge(self, other: Histogram) -> Histogram:
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.total += other.total
        self.max_ms = max(self.max_ms, other.max_ms)
        return self

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile, q in [0, 100]; None when empty."""
        if self.total == 0:
            return None
        if q >= 100:
            return self.max_ms
        rank = max(1, math.ceil(q / 100.0 * self.total))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                # Never report above the exact maximum (the top bucket's midpoint may be).
                return min(bucket_value_ms(i), self.max_ms)
        return self.max_ms  # unreachable: counts sum to total

    # A compact text form for CSV cells: "max_ms|i:c,i:c,...". Sparse, exact, mergeable.
    def encode(self) -> str:
        if self.total == 0:
            return ""
        body = ",".join(f"{i}:{c}" for i, c in sorted(self.counts.items()))
        return f"{self.max_ms:.3f}|{body}"

    @classmethod
    def decode(cls, text: str | float | None) -> Histogram:
        h = cls()
        if not isinstance(text, str) or not text:
            return h
        try:
            max_part, _, body = text.partition("|")
            h.max_ms = float(max_part)
            for pair in body.split(","):
                i, _, c = pair.partition(":")
                n = int(c)
                if n < 0:
                    raise ValueError
                h.counts[int(i)] = h.counts.get(int(i), 0) + n
                h.total += n
        except ValueError:
            raise CorruptHistogram("a latency_hist cell is not '<max_ms>|<bucket>:<count>,…' "
                                   "(a damaged or hand-edited timeseries.csv)") from None
        if not math.isfinite(h.max_ms) or h.max_ms < 0:
            raise CorruptHistogram("a latency_hist cell has a non-finite or negative maximum")
        return h

    def to_dict(self) -> dict[str, object]:
        return {"max_ms": self.max_ms, "counts": {str(k): v for k, v in self.counts.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Histogram:
        h = cls()
        h.max_ms = float(d.get("max_ms", 0.0))  # type: ignore[arg-type]
        counts = d.get("counts", {})
        assert isinstance(counts, Mapping)
        for k, v in counts.items():
            h.counts[int(k)] = int(v)
        h.total = sum(h.counts.values())
        return h


def merged(histograms: Iterable[Histogram]) -> Histogram:
    out = Histogram()
    for h in histograms:
        out.merge(h)
    return out
