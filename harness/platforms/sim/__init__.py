"""The ``sim`` platform: the same scenario, controller, policies and CSVs on a queueing model.

- ``model``: the sample app as a queue (WORKERS servers, its service-time distribution, its
  FIFO queue limit), served exactly per request but in numpy batches; per-second books of
  ok/failed counts and exact log-bucket latency histograms. Pure: no clock, no I/O.
- ``lb``: how the load balancer spreads a tick's arrivals (round robin, least connections).
- ``deployer``: ``SimDeployer``, the Deployer protocol over the model: replica life cycles
  (start-up, readiness, LB and Prometheus discovery lags, restart semantics per kind).
- ``metrics``: ``SimMetricSource``, per-replica metrics sampled as Prometheus would.
- ``engine``: the simulated trial loop on a simulated clock (arrivals, faults, controller,
  per-second rows).
- ``params``: ``SimParams``, the platform lags (container start, DNS and Prometheus
  discovery, restart delays…) and model knobs (tick, LB policy, per-request overhead).
- ``calibrate``: fit those lags to a real run's events.csv.
- ``trial``: ``run_sim_trial``, what ``harness run --platform sim`` calls per trial;
  ``run_sim_scenario`` for a whole scenario with explicit ``SimParams``.

README.md in this folder: the model, its tests against queueing theory, speed and the
validation against Docker.
"""
