"""The dashboard server on a free 127.0.0.1 port, in a thread, for the tests that talk
to it (HTTP, security, the browser)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.report.server import DashboardServer, make_server


@contextlib.contextmanager
def serving(results: Path, **options: Any) -> Iterator[DashboardServer]:
    srv = make_server(results, port=0, **options)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                          daemon=True)
    th.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(timeout=10)
