"""Load profiles: a rate (or a user count) as a piecewise-linear function of time.

Pure: no Locust, no clock. One shape covers every profile the scenario can ask for:

- constant:     one stage, ``ramp_s=0``
- step:         stages with ``ramp_s=0`` (two points at the same t make a jump)
- linear ramp:  a stage with ``ramp_s == duration_s``
- spike:        up fast (short ramp), hold, down fast
- a trace:      ``Profile.from_csv`` replays a user's own ``t_s,rps`` file, linearly
                interpolated between rows

The open model schedules requests from the integral of the rate (``cumulative`` and its
inverse ``time_at``), so the number of arrivals in any window is the profile's area
there, whatever the shape. The closed model reads the same kind of profile with users as
the value (``users_at``).
"""

from __future__ import annotations

import bisect
import csv
import math
import os
import random
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_TRACE_ROWS = 200_000
MAX_TRACE_BYTES = 16 * 1024 * 1024


class ProfileError(ValueError):
    """A profile that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class StageSpec:
    """Ramp linearly to ``target`` over ``ramp_s``, then hold until ``duration_s`` passed."""

    duration_s: float
    target: float
    ramp_s: float = 0.0


class Profile:
    """Piecewise-linear value over time, given as points ``(t_s, value)``.

    Times never decrease; two points at the same time make a jump (the later one holds from
    that instant on). Outside ``[start_s, end_s]`` the value is 0.
    """

    __slots__ = ("_a", "_seg_end_a", "_t", "_v")

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        if len(points) < 2:
            raise ProfileError("a profile needs at least two points (t_s, value)")
        ts: list[float] = []
        vs: list[float] = []
        for i, (t, v) in enumerate(points):
            t, v = float(t), float(v)
            if not (math.isfinite(t) and math.isfinite(v)):
                raise ProfileError(f"point {i}: t_s and value must be finite numbers")
            if v < 0:
                raise ProfileError(f"point {i}: value {v:g} is negative")
            if ts and t < ts[-1]:
                raise ProfileError(f"point {i}: t_s={t:g} goes back in time (previous "
                                   f"{ts[-1]:g}); times must not decrease")
            ts.append(t)
            vs.append(v)
        if ts[-1] <= ts[0]:
            raise ProfileError("a profile must last longer than 0 s")
        self._t = ts
        self._v = vs
        # Cumulative area at each point: arrivals since start_s (open model).
        a = [0.0]
        for i in range(1, len(ts)):
            a.append(a[-1] + (ts[i] - ts[i - 1]) * (vs[i] + vs[i - 1]) / 2.0)
        self._a = a
        self._seg_end_a = a[1:]

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def from_stages(cls, stages: Iterable[StageSpec | tuple[float, float, float]],
                    start_value: float = 0.0, start_s: float = 0.0) -> Profile:
        """Each stage ramps from the previous value to its target over ramp_s, then holds.

        ``start_value`` is where the first stage's ramp starts (0, or the warm-up rate).
        """
        pts: list[tuple[float, float]] = [(start_s, start_value)]
        t, v = start_s, start_value
        n = 0
        for i, st in enumerate(stages):
            s = st if isinstance(st, StageSpec) else StageSpec(*st)
            if not s.duration_s > 0:
                raise ProfileError(f"stage {i}: duration_s must be > 0 (got {s.duration_s:g})")
            if s.target < 0:
                raise ProfileError(f"stage {i}: target {s.target:g} is negative")
            if not 0 <= s.ramp_s <= s.duration_s:
                raise ProfileError(f"stage {i}: ramp_s ({s.ramp_s:g}) must be within "
                                   f"0..duration_s ({s.duration_s:g})")
            # ramp_s == 0 is a step: a second point at the same instant.
            pts.append((t + s.ramp_s, s.target))
            t += s.duration_s
            v = s.target
            pts.append((t, v))
            n += 1
        if n == 0:
            raise ProfileError("no stages given")
        return cls(pts)

    @classmethod
    def constant(cls, value: float, duration_s: float, start_s: float = 0.0) -> Profile:
        return cls([(start_s, value), (start_s + duration_s, value)])

    @classmethod
    def from_csv(cls, path: str | Path) -> Profile:
        """A trace with a header row ``t_s,rps`` (a ``users`` column works for the closed
        model); rows sorted by time; values are interpolated linearly between rows."""
        p = Path(path)
        try:
            st = os.stat(p)
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block, a device never end
                raise ProfileError(f"{p}: not a regular file")
            if st.st_size > MAX_TRACE_BYTES:
                raise ProfileError(f"{p}: {st.st_size} bytes, over the limit of "
                                   f"{MAX_TRACE_BYTES}")
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ProfileError(f"{p}: not a UTF-8 text file") from None
        except OSError as e:
            raise ProfileError(f"{p}: cannot read the trace: {e.strerror or e}") from e
        # Errors below never quote the file's content: the path could name any file the
        # user can read (a secret), and an error line ends up in terminals and CI logs.
        rows = list(csv.reader(line for line in text.splitlines()
                               if line.strip() and not line.lstrip().startswith("#")))
        if not rows:
            raise ProfileError(f"{p}: empty trace; expected a header 't_s,rps' and rows")
        header = [h.strip().lower() for h in rows[0]]
        if "t_s" not in header:
            raise ProfileError(f"{p}:1: header must name the columns 't_s' and 'rps' "
                               f"(got {len(rows[0])} columns, none named t_s)")
        value_col = next((c for c in ("rps", "users", "value") if c in header), None)
        if value_col is None:
            raise ProfileError(f"{p}:1: header has no 'rps' column (nor 'users')")
        it, iv = header.index("t_s"), header.index(value_col)
        if len(rows) - 1 > MAX_TRACE_ROWS:
            raise ProfileError(f"{p}: {len(rows) - 1} rows, over the limit of {MAX_TRACE_ROWS}")
        pts: list[tuple[float, float]] = []
        for n, row in enumerate(rows[1:], start=2):
            if len(row) <= max(it, iv):
                raise ProfileError(f"{p}:{n}: expected {len(header)} columns, got {len(row)}")
            try:
                t, v = float(row[it]), float(row[iv])
            except ValueError:
                raise ProfileError(f"{p}:{n}: not a number (t_s or {value_col})") from None
            if not (math.isfinite(t) and math.isfinite(v)):
                raise ProfileError(f"{p}:{n}: values must be finite")
            if v < 0:
                raise ProfileError(f"{p}:{n}: {value_col}={v:g} is negative")
            if pts and t <= pts[-1][0]:
                raise ProfileError(f"{p}:{n}: t_s={t:g} is not after the previous row "
                                   f"({pts[-1][0]:g}); rows must be sorted by time")
            pts.append((t, v))
        if len(pts) < 2:
            raise ProfileError(f"{p}: a trace needs at least two rows")
        if pts[0][0] != 0:
            raise ProfileError(f"{p}:2: the first row must be at t_s=0 (got {pts[0][0]:g})")
        return cls(pts)

    # -- reading --------------------------------------------------------------------------

    @property
    def points(self) -> list[tuple[float, float]]:
        return list(zip(self._t, self._v, strict=True))

    @property
    def start_s(self) -> float:
        return self._t[0]

    @property
    def end_s(self) -> float:
        return self._t[-1]

    @property
    def duration_s(self) -> float:
        return self._t[-1] - self._t[0]

    @property
    def total(self) -> float:
        """Area under the whole profile (total arrivals, open model)."""
        return self._a[-1]

    @property
    def peak(self) -> float:
        return max(self._v)

    def rate_at(self, t: float) -> float:
        ts = self._t
        if t < ts[0] or t > ts[-1]:
            return 0.0
        # Right-continuous at jumps: the last point at or before t decides.
        i = bisect.bisect_right(ts, t) - 1
        if i >= len(ts) - 1:
            return self._v[-1]
        t0, t1 = ts[i], ts[i + 1]
        v0, v1 = self._v[i], self._v[i + 1]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    users_at = rate_at

    def cumulative(self, t: float) -> float:
        """Area from start_s to t (arrivals scheduled before t)."""
        ts = self._t
        if t <= ts[0]:
            return 0.0
        if t >= ts[-1]:
            return self._a[-1]
        i = bisect.bisect_right(ts, t) - 1
        t0 = ts[i]
        v0 = self._v[i]
        vt = self.rate_at(t)
        return self._a[i] + (t - t0) * (v0 + vt) / 2.0

    def arrivals_between(self, t0: float, t1: float) -> float:
        """Integral of the rate over [t0, t1): the intended arrivals in that window."""
        if t1 <= t0:
            return 0.0
        return self.cumulative(t1) - self.cumulative(t0)

    def time_at(self, area: float) -> float | None:
        """Inverse of ``cumulative``: the first t with cumulative(t) == area (None past the
        end). Used to place the k-th arrival at the profile's rate, whatever its shape."""
        if area <= 0:
            return self._t[0]
        if area > self._a[-1]:
            return None
        # First segment whose end area reaches `area`; its start area is below it, so the
        # segment has positive area and the quadratic below has a solution in it.
        i = bisect.bisect_left(self._seg_end_a, area)
        t0, t1 = self._t[i], self._t[i + 1]
        r0, r1 = self._v[i], self._v[i + 1]
        need = area - self._a[i]
        k = (r1 - r0) / (t1 - t0)
        # r0*tau + k*tau^2/2 = need; this form is stable for k == 0 and for k < 0.
        disc = max(0.0, r0 * r0 + 2.0 * k * need)
        denom = r0 + math.sqrt(disc)
        tau = (t1 - t0) if denom <= 0 else 2.0 * need / denom
        return min(t1, t0 + tau)

    # -- combining ------------------------------------------------------------------------

    def with_warmup(self, warmup_s: float, warmup_value: float) -> Profile:
        """This profile (starting at 0) preceded by ``warmup_s`` seconds at a constant
        ``warmup_value``; warm-up times are negative."""
        if warmup_s <= 0:
            return self
        if self.start_s != 0:
            raise ProfileError(f"a warm-up goes before a profile that starts at t=0 "
                               f"(this one starts at {self.start_s:g})")
        if warmup_value < 0:
            raise ProfileError(f"warm-up rate {warmup_value:g} is negative")
        pts = [(-warmup_s, warmup_value), (0.0, warmup_value), *self.points]
        return Profile(pts)

    def shifted(self, dt: float) -> Profile:
        return Profile([(t + dt, v) for t, v in self.points])

    def to_dict(self) -> dict[str, list[list[float]]]:
        return {"points": [[t, v] for t, v in self.points]}

    @classmethod
    def from_dict(cls, d: dict[str, list[list[float]]]) -> Profile:
        return cls([(float(t), float(v)) for t, v in d["points"]])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Profile) and self.points == other.points

    def __hash__(self) -> int:
        return hash(tuple(self.points))

    def __repr__(self) -> str:
        return f"Profile({self.points!r})"


class SlotSchedule:
    """Intended send times of the open model for one load process, in profile time.

    The run's k-th arrival (counted from the profile's start) is due when the profile's area
    reaches k + 0.5 ("uniform": deterministic spacing, so a constant 100 rps puts exactly
    100 arrivals in every second), or at the points of a Poisson process whose intensity is
    the profile ("poisson", seeded). A process that is worker ``index`` of ``of`` takes
    every ``of``-th arrival (uniform) or an independent Poisson stream at 1/``of`` of the
    rate; together the workers produce the profile. ``reassign`` changes the share from a
    given time on (a worker was lost, the survivors take over its share).
    """

    def __init__(self, profile: Profile, *, index: int = 0, of: int = 1,
                 mode: str = "uniform", seed: int = 0, start_s: float | None = None) -> None:
        if mode not in ("uniform", "poisson"):
            raise ProfileError(f"arrival mode {mode!r}: use 'uniform' or 'poisson'")
        self.profile = profile
        self.mode = mode
        self._seed = seed
        self._rng = random.Random()
        self._next: float | None = None
        self._switch: tuple[float, int, int] | None = None
        self._set_share(index, of, profile.start_s if start_s is None else start_s)

    def _set_share(self, index: int, of: int, from_t: float) -> None:
        if not (of >= 1 and 0 <= index < of):
            raise ProfileError(f"share {index} of {of} is not valid")
        self.index, self.of = index, of
        a_from = self.profile.cumulative(from_t)
        if self.mode == "uniform":
            # First global arrival k with (k + 0.5) >= a_from, then the first k of our share.
            k = max(0, math.ceil(a_from - 0.5))
            k += (index - k) % of
            self._k = k
            self._next = self.profile.time_at(k + 0.5)
        else:
            self._rng.seed(f"{self._seed}:{index}:{of}:{from_t!r}")
            self._area = a_from
            self._advance_poisson()

    def _advance_poisson(self) -> None:
        # Time-rescaling: unit-rate exponential gaps on the area axis; 1/of of the intensity
        # means gaps `of` times longer.
        self._area += self._rng.expovariate(1.0) * self.of
        self._next = self.profile.time_at(self._area)

    def peek(self) -> float | None:
        """The next intended send time, None when the profile is over."""
        return self._next

    def advance(self) -> None:
        if self._next is None:
            return
        if self.mode == "uniform":
            self._k += self.of
            self._next = self.profile.time_at(self._k + 0.5)
        else:
            self._advance_poisson()
        sw = self._switch
        if sw is not None and (self._next is None or self._next >= sw[0]):
            self._switch = None
            self._set_share(sw[1], sw[2], sw[0])

    def reassign(self, from_t: float, index: int, of: int) -> None:
        """From ``from_t`` on, this process is worker ``index`` of ``of``; arrivals before
        ``from_t`` keep the old share, so the workers' union stays exactly the profile."""
        if self._next is None or self._next >= from_t:
            self._set_share(index, of, from_t)
        else:
            self._switch = (from_t, index, of)

    def __iter__(self) -> SlotSchedule:
        return self

    def __next__(self) -> float:
        t = self.peek()
        if t is None:
            raise StopIteration
        self.advance()
        return t
