"""`load.requests_per_connection`: the default request closes its connection after N
requests (an L4 balancer such as kube-proxy then spreads the load over replicas added
since); without it the load keeps its few connections. A real load process against an
HTTP/1.1 server on 127.0.0.1 that counts the connections it accepted."""

from __future__ import annotations

import pytest

from harness.load.profile import Profile, StageSpec
from harness.load.runner import LoadSpec, requests_per_connection
from tests.test_load_run import run_load
from tests.test_readiness import keepalive_server


@pytest.mark.parametrize("per_connection", [None, 5])
def test_connections_are_closed_after_n_requests(per_connection: int | None) -> None:
    with keepalive_server(drop_after_answer=False) as srv:
        spec = LoadSpec(base_url=f"http://127.0.0.1:{srv.server_address[1]}", path="/",
                        profile=Profile.from_stages([StageSpec(3, 100)], start_value=100),
                        timeout_s=3, max_in_flight=50,
                        requests_per_connection=per_connection)
        run, _ = run_load(spec)
        connections = srv.connections  # type: ignore[attr-defined]
    totals = run.totals()
    ok = totals.requests_all - totals.failed_all
    assert totals.failed_all == 0
    assert ok >= 250, ok
    if per_connection is None:
        assert connections <= 50, connections  # at most one per user, most never used
    else:
        # every user's Nth request closes its connection: about ok / N, plus the users'
        # partly used last connections
        assert ok / per_connection <= connections <= ok / per_connection + 50, connections


def test_the_platform_default_and_the_scenario_value() -> None:
    assert requests_per_connection(None, "kubernetes") == 10
    assert requests_per_connection(None, "docker") is None
    assert requests_per_connection(3, "kubernetes") == 3
    assert requests_per_connection(7, "docker") == 7
