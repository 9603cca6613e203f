"""List-then-watch of one collection (a trial's pods), in a thread, bounded and stoppable.

The informer pattern of client-go, reduced: LIST (the objects and a resourceVersion),
then WATCH from that version (`?watch=1&resourceVersion=`), one JSON event per line;
when the server ends the watch (its timeoutSeconds) watch again from the last version
seen; when that version is too old (410 Gone) list again. Every object goes to
`on_object(kind, obj, seen_wall, live)` — kind ADDED / MODIFIED / DELETED, `seen_wall`
the wall-clock time the event arrived, `live` False for objects of a (re)list, which may
describe changes made before anyone watched.

`stop()` closes the open stream from the calling thread (the reader's readline() returns
at once) and joins the thread within a bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from harness.errors import DeployError
from harness.platforms.kubernetes.client import KubeApiError, KubeClient, WatchStream

OnObject = Callable[[str, dict[str, Any], float, bool], None]
RETRY_S = 0.5


class ResourceWatch:
    def __init__(self, client: KubeClient, path: str, on_object: OnObject, *,
                 label_selector: str | None = None, field_selector: str | None = None,
                 name: str = "kube-watch",
                 wall: Callable[[], float] = time.time, watch_timeout_s: int = 240) -> None:
        self.client, self.path, self.on_object = client, path, on_object
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.name = name
        self._wall = wall
        self.watch_timeout_s = watch_timeout_s
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()  # the first list was delivered
        self.last_error: str | None = None
        self.relists = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _list(self) -> str:
        doc = self.client.get(self.path, labelSelector=self.label_selector,
                              fieldSelector=self.field_selector)
        seen = self._wall()
        for obj in (doc or {}).get("items") or []:
            self.on_object("ADDED", obj, seen, False)
        self.synced.set()
        return str(((doc or {}).get("metadata") or {}).get("resourceVersion") or "")

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                    self.relists += 1
                version = self._watch(version)
            except KubeApiError as e:
                self.last_error = str(e)
                version = "" if e.status == 410 else version
                self._stop.wait(RETRY_S)
            except DeployError as e:  # the API did not answer: try again shortly
                self.last_error = str(e)
                self._stop.wait(RETRY_S)
            except Exception as e:  # a watch must never kill the trial
                self.last_error = f"{type(e).__name__}: {e}"
                self._stop.wait(RETRY_S)

    def _watch(self, version: str) -> str:
        stream = self.client.watch(self.path, resource_version=version,
                                   timeout_s=self.watch_timeout_s,
                                   labelSelector=self.label_selector,
                                   fieldSelector=self.field_selector)
        with self._lock:
            if self._stop.is_set():
                stream.close()
                return version
            self._stream = stream
        try:
            for ev in stream:
                kind = str(ev.get("type", ""))
                obj = ev.get("object") or {}
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                if kind == "ERROR":
                    code = int(obj.get("code") or 0)
                    if code == 410:  # our version is too old: list again
                        return ""
                    raise KubeApiError(code, str(obj.get("reason", "")),
                                       str(obj.get("message", "")), self.path)
                if rv:
                    version = rv
                if kind == "BOOKMARK":
                    continue
                try:
                    self.on_object(kind, obj, self._wall(), True)
                except Exception as e:  # a broken handler never stops the watch
                    self.last_error = f"handler: {type(e).__name__}: {e}"

        finally:
            with self._lock:
                self._stream = None
            stream.close()
        return version
