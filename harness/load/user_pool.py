"""The open model's pool of idle users (in a load process; gevent, no Locust)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gevent.hub import Waiter, get_hub


class Pool:
    """The open model's users: idle ones wait for a slot; the scheduler hands slots out.

    Last-in first-out, so the fewest users (and keep-alive connections) carry the load.
    The hand-over is gevent's lightest: a ``Waiter`` per wait, woken by a hub callback
    (an ``Event`` costs several times more per request at thousands of requests/s).
    """

    def __init__(self, on_abandoned: Callable[[float], None]) -> None:
        self.idle: list[Any] = []
        self.busy = 0
        self.on_abandoned = on_abandoned
        self._run_callback = get_hub().loop.run_callback

    def take(self, user: Any) -> float:
        waiter = Waiter()
        user._h_waiter = waiter
        user._h_slot = None
        self.idle.append(user)
        try:
            return waiter.get()  # type: ignore[no-any-return]
        except BaseException:
            # Killed while idle (the run stops): leave the pool cleanly.
            if user._h_slot is None:
                try:
                    self.idle.remove(user)
                except ValueError:
                    pass
            else:  # handed a slot, killed before it ran
                self.busy -= 1
                self.on_abandoned(user._h_slot)
            raise

    def offer(self, t_intended: float) -> bool:
        if not self.idle:
            return False
        user = self.idle.pop()
        user._h_slot = t_intended
        self.busy += 1
        self._run_callback(user._h_waiter.switch, t_intended)
        return True

    def release(self) -> None:
        self.busy -= 1
