"""How the load balancer spreads one tick's arrivals over its servers. Pure.

HAProxy's two policies the harness uses (harness/deploy/haproxy.py: ``leastconn`` by
default; ``roundrobin`` is HAProxy's own default):

- ``roundrobin``: server after server, in the order of the server list; the position
  carries over from one tick to the next.
- ``leastconn``: every request goes to the server with the fewest active connections.
  Within a tick the connections are the ones at its start plus the tick's arrivals so far
  (completions inside the tick are not seen: with ticks shorter than a service time that
  is close to what HAProxy sees). Greedy over the arrivals in time order is a water
  filling: the servers with the fewest connections are brought up level by level; ties go
  round robin, as HAProxy breaks them.
"""

from __future__ import annotations

import numpy as np

POLICIES = ("leastconn", "roundrobin")


class Balancer:
    def __init__(self, policy: str = "leastconn") -> None:
        if policy not in POLICIES:
            raise ValueError(f"load balancer policy {policy!r}: use one of {POLICIES}")
        self.policy = policy
        self._rr = 0

    def assign(self, k: int, conns: np.ndarray) -> np.ndarray:
        """Positions (into the server list) of k arrivals in time order. ``conns``: each
        server's active connections at the tick's start (ignored by round robin)."""
        n = conns.size
        if k == 0 or n == 0:
            return np.zeros(0, np.int64)
        if self.policy == "roundrobin":
            pos = (self._rr + np.arange(k)) % n
            self._rr = int((self._rr + k) % n)
            return pos
        return self._leastconn(k, conns.astype(np.int64))

    def _leastconn(self, k: int, conns: np.ndarray) -> np.ndarray:
        n = conns.size
        order = np.argsort(conns, kind="stable")
        cs = conns[order]
        cum = np.cumsum(cs)
        # Filling the j+1 emptiest servers to level L costs (j+1)·L − cum[j]; find the
        # smallest level that takes all k arrivals, using as many servers as lie below it.
        j = np.arange(n)
        level = -(-(k + cum) // (j + 1))  # ceil
        nxt = np.append(cs[1:], np.iinfo(np.int64).max)
        fits = level <= nxt
        jj = int(np.argmax(fits))
        top = int(level[jj])
        extra = np.maximum(top - conns, 0)  # arrivals each server gets at most
        servers = np.flatnonzero(extra)
        cnt = extra[servers]
        total = int(cnt.sum())
        rep = np.repeat(servers, cnt)
        offs = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        lev = np.repeat(conns[servers], cnt) + offs
        tie = (rep - self._rr) % n
        seq = rep[np.lexsort((tie, lev))][:k]
        self._rr = int((self._rr + k) % n)
        return seq
