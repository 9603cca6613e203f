"""Load generation on Locust, used as a library.

- ``profile``: load profiles (stages, ramps, steps, spikes, CSV traces) and the open
  model's slot schedule. Pure.
- ``stats``: per-second books, the exact merge across workers, ``SecondStats``. Pure.
- ``runner``: the harness's side — ``LoadSpec``, ``LoadRun`` (starts and stops the load
  child process group, reads its per-second stream). No Locust.
- ``child`` and ``users``: the load process itself (single, master, worker). They import
  Locust, which monkey-patches the interpreter with gevent: only ever imported in the
  child processes, never from here.
"""
