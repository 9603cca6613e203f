"""Shared fixtures: a Docker client, unique run ids, and a session-end check that no
Docker object labelled with one of this session's run ids is left behind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_RUN_IDS: list[str] = []


@pytest.fixture(scope="session")
def docker_client() -> Any:
    """A client of the local engine; the test is skipped when none answers."""
    from harness.errors import PrerequisiteError
    from harness.platform import docker_client as make

    try:
        return make(timeout_s=30)
    except PrerequisiteError as e:
        pytest.skip(str(e))


@pytest.fixture
def new_run_id() -> Callable[[str], str]:
    """new_run_id("compose") → "t-compose-<pid>-<hex>", remembered for the final check."""

    def make(tag: str = "t") -> str:
        rid = f"t-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _RUN_IDS.append(rid)
        return rid

    return make


@pytest.fixture
def run_id(new_run_id: Callable[[str], str]) -> str:
    return new_run_id("t")


@pytest.fixture(scope="session", autouse=True)
def _no_labelled_leftovers() -> Iterator[None]:
    yield
    if not _RUN_IDS:
        return
    from harness.platform import docker_client as make
    from harness.platforms.docker.cleanup import leftovers, sweep

    client = make(timeout_s=30)
    left = {rid: leftovers(client, rid) for rid in _RUN_IDS}
    left = {rid: objs for rid, objs in left.items() if objs}
    for rid in left:
        sweep(client, rid)  # do not leak into the next session, whatever happened
    assert not left, f"labelled Docker objects left after the session: {left}"


# In CI (and wherever HARNESS_NO_SKIP=1) a skip is a failure: a test skipped for a missing
# engine, image or binary would hide a missing install step in scripts/setup.sh. The one
# tolerated skip is a load test that finds the shared machine too busy to judge (its
# generator reported saturation), which is a measurement, not a missing component.
_TOLERATED_SKIPS = ("saturated",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    rep = outcome.get_result()
    strict = os.environ.get("HARNESS_CI") == "1" or os.environ.get("HARNESS_NO_SKIP") == "1"
    if strict and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = str(rep.longrepr[-1]) if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if not any(t in reason for t in _TOLERATED_SKIPS):
            rep.outcome = "failed"
            rep.longrepr = f"skipped under HARNESS_CI (a missing install step?): {reason}"
