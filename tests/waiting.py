"""Polling a condition in the tests that watch real processes, containers or pods: one loop,
two faces — `wait_until` for the tests that time the wait and assert with their own words,
`eventually` for those that want the value and a failure that shows the last one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll(fn: Callable[[], Any], timeout_s: float, every_s: float) -> tuple[Any, float | None]:
    """fn() every every_s seconds until it returns something truthy: that value and the
    seconds it took, or fn's last value and None once timeout_s have passed."""
    t0 = time.monotonic()
    last: Any = None
    while time.monotonic() - t0 < timeout_s:
        last = fn()
        if last:
            return last, time.monotonic() - t0
        time.sleep(every_s)
    return last, None


def wait_until(pred: Callable[[], Any], timeout_s: float, every_s: float = 0.1) -> float | None:
    """Seconds until pred() held, or None after timeout_s (the caller's assert says what)."""
    return poll(pred, timeout_s, every_s)[1]


def eventually(fn: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.5) -> Any:
    """fn() until it returns something truthy, or fail with its last value."""
    last, took = poll(fn, timeout_s, every_s)
    if took is None:
        raise AssertionError(f"condition not met within {timeout_s} s; last value {last!r}")
    return last
