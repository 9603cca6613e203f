"""`harness run`: every strategy × repetition as a trial, recorded as it goes.

Data flow (docs/architecture.md, "Data flow"): Scenario → for each trial: Deployer.deploy → Load
(Locust child
process) + FaultTimeline + Controller → Recorder rows every second → Deployer.teardown
(always) → analysis → summary.csv, report.html.
"""

from __future__ import annotations

import datetime as dt
import os
import platform as pyplatform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from harness import __version__, runlock
from harness.bounds import REAL_PLATFORM_MAX_REPLICAS
from harness.clock import RealClock
from harness.errors import GateFailed, HarnessError, UsageError
from harness.fsutil import RUN_ID_RE
from harness.load.runner import requests_per_connection
from harness.platform import Platform, resolve
from harness.record.schema import SCHEMA_VERSION
from harness.record.writer import write_json_atomic
from harness.scenario.loader import LoadedScenario, load_scenario
from harness.scenario.models import Scenario, Strategy
from harness.trial import Recorder, TrialResult, TrialRuntime, run_trial

EXIT_INTERRUPTED = 130


@dataclass
class RunOptions:
    platform: str | None = None
    strategies: list[str] | None = None
    repetitions: int | None = None
    out: Path | None = None
    workers: int | None = None
    run_id: str | None = None
    metrics_port: int | None = None  # the harness's own /metrics on 127.0.0.1; 0: any port
    registry: str | None = None  # REGISTRY[/PREFIX] to run the images from (else scenario's)
    keep_metrics: bool = False  # keep each trial's Prometheus data in RUN/metrics/<trial>/
    kubeconfig: str | None = None  # kubernetes: the cluster (else the scenario's, env, ~)
    k8s_node_address: str | None = None  # kubernetes: where NodePorts answer
    echo: Callable[[str], None] = print


class Stopper:
    """First SIGINT/SIGTERM: stop gracefully (tear down the current trial, keep the data).
    Second: sweep every object of this run and exit at once."""

    def __init__(self, on_second: Callable[[], None]) -> None:
        self.event = threading.Event()
        self.signal_name = ""
        self._on_second = on_second
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.event.is_set():
            self._on_second()
            os._exit(EXIT_INTERRUPTED)
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    @property
    def stopped(self) -> bool:
        return self.event.is_set()


_RowSink = Callable[[dict[str, Any]], None]


def _serve_metrics(port: int | None) -> tuple[_RowSink | None, _RowSink | None, str | None]:
    """The harness's metrics (harness/report/loadgen_metrics.py) on 127.0.0.1:port, for
    Prometheus and Grafana (dashboards/); off unless a port is given. Returns the
    (timeseries row, events row) sinks that feed them and the URL. Bound before the run
    folder exists, so a busy port is bad input (exit 2) and leaves nothing behind."""
    if port is None:
        return None, None, None
    from prometheus_client import CollectorRegistry, start_http_server

    from harness.report.loadgen_metrics import make_loadgen_metrics

    registry = CollectorRegistry()
    metrics = make_loadgen_metrics(registry)
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as e:
        raise UsageError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port} "
                         f"({e.strerror})") from None
    bound = server.server_address[1]
    return metrics.observe_second, metrics.observe_event, f"http://127.0.0.1:{bound}/metrics"


def check_out_dir(out: Path) -> None:
    """`--out` (or the scenario's `output`) must be a folder we can create and write in,
    checked before anything is created: the nearest existing ancestor decides."""
    p = out.absolute()
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise UsageError(f"--out {out}: {p} is not a folder")
    try:  # a real probe: os.access says yes to root on a read-only file system
        os.rmdir(tempfile.mkdtemp(prefix=".harness-probe-", dir=p))
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create folders in {p} ({e.strerror})") \
            from None


def check_run_id(run_id: str) -> None:
    if not RUN_ID_RE.match(run_id):
        shown = run_id if len(run_id) <= 40 else run_id[:40] + "…"
        raise UsageError(f"--run-id {shown!r}: 1-128 ASCII letters, digits, '-', '_' and "
                         "'.', starting with a letter or digit")


def new_run_id(name: str, now: dt.datetime) -> str:
    return f"{name}-{now.strftime('%Y%m%d-%H%M%S')}"


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                           timeout=5, cwd=Path(__file__).resolve().parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _host() -> dict[str, Any]:
    mem = None
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cores": os.cpu_count(), "memory_bytes": mem, "os": pyplatform.platform(),
            "hostname": pyplatform.node()}


def _versions(plat: Platform) -> dict[str, Any]:
    v: dict[str, Any] = {"harness": __version__, "python": pyplatform.python_version()}
    try:
        from importlib.metadata import version
        v["locust"] = version("locust")
    except Exception:
        v["locust"] = None
    if plat.kube is not None:
        try:
            v["kubernetes"] = plat.kube.version().get("gitVersion")
        except Exception:
            v["kubernetes"] = None
    if plat.docker is not None:
        try:
            v["docker_engine"] = plat.docker.version().get("Version")
        except Exception:
            v["docker_engine"] = None
        try:
            from harness.platforms.docker.images import image_versions
            v.update(image_versions())
        except Exception:
            pass
    return v


def trial_order(strategies: list[str], repetition: int) -> list[str]:
    """Rotate the order between repetitions so machine drift does not always hit the
    same strategy (repetition is 1-based)."""
    k = (repetition - 1) % len(strategies)
    return strategies[k:] + strategies[:k]


def _check_platform_bounds(sc: Scenario, plat: Platform) -> None:
    if plat.name in ("docker", "local", "kubernetes"):
        for s in sc.strategies:
            if s.max_replicas > REAL_PLATFORM_MAX_REPLICAS:
                raise UsageError(f"strategy {s.name!r} may run {s.max_replicas} replicas; "
                                 f"the {plat.name} platform allows at most "
                                 f"{REAL_PLATFORM_MAX_REPLICAS} (use --platform sim)")
    for s in sc.strategies:
        if s.autoscaler is not None and s.autoscaler.policy == "kubernetes-hpa" \
                and plat.name != "kubernetes":
            raise UsageError(f"strategy {s.name!r}: policy kubernetes-hpa is the cluster's "
                             f"own HPA controller; it runs on --platform kubernetes, not "
                             f"{plat.name} (policy hpa is the harness's port of it)")


# how each platform's load balancer picks a replica: comparisons across platforms say so
LOAD_BALANCERS = {"docker": "HAProxy leastconn", "local": "HAProxy leastconn",
                  "sim": "modelled leastconn",
                  "kubernetes": "kube-proxy iptables NodePort (random)"}


def runtime_for(plat: Platform, loaded: LoadedScenario, strategy: Strategy, trial: int,
                workers: int | None) -> TrialRuntime:
    """The platform side of one trial (harness/trial.py runs it the same way on all)."""
    if plat.name == "sim":
        from harness.platforms.sim.runtime import SimRuntime

        return SimRuntime(loaded, strategy, trial)
    from harness.realtime import RealRuntime

    return RealRuntime(plat, loaded, trial, workers=workers)


def _registry_of(opts: RunOptions, sc: Scenario, plat: Platform) -> str | None:
    """--registry, else the scenario's images.registry; docker only."""
    from harness.platforms.docker.registry_images import parse_push_target

    registry = parse_push_target(opts.registry) if opts.registry else sc.images.registry
    if registry and plat.name != "docker":
        raise UsageError(f"an image registry ({registry}) is for the docker platform, "
                         f"not {plat.name}")
    return registry


def _check_registry_has_images(plat: Platform, registry: str) -> None:
    """Every image the deployers will pull is in the registry (one line, exit 2, before
    the run folder exists)."""
    from harness.errors import DeployError, PrerequisiteError
    from harness.platforms.docker.registry_images import registry_digest, run_ref

    for role in ("app", "haproxy", "prometheus"):
        ref = run_ref(role, registry)
        try:
            registry_digest(plat.docker, ref)
        except DeployError:
            raise PrerequisiteError(f"{ref} is not in the registry (run `harness images "
                                    f"push {registry}`)") from None


def run_scenario(path: Path, opts: RunOptions) -> int:
    loaded = load_scenario(path)
    sc = loaded.scenario
    echo = opts.echo
    plat = resolve(opts.platform or sc.platform,
                   kubeconfig=opts.kubeconfig or sc.kubernetes.kubeconfig)
    echo(f"harness {__version__}: platform {plat.name} ({plat.why})")
    _check_platform_bounds(sc, plat)
    if plat.name == "kubernetes":
        from harness.platforms.kubernetes.run_options import deploy_options

        plat.deploy_options = deploy_options(sc, opts.k8s_node_address)
    if plat.name == "sim":
        for s in sc.strategies:
            if s.autoscaler is not None and not isinstance(s.autoscaler.metric, str):
                raise UsageError(f"strategy {s.name!r}: the sim platform models only the "
                                 "metric presets; a custom PromQL metric needs a real "
                                 "Prometheus (--platform docker or local)")
    names = [s.name for s in sc.strategies]
    if opts.strategies:
        unknown = [n for n in opts.strategies if n not in names]
        if unknown:
            raise UsageError(f"--strategies: unknown {unknown}; the scenario has {names}")
        names = [n for n in names if n in opts.strategies]
    repetitions = opts.repetitions or sc.repetitions
    run_id = opts.run_id or new_run_id(sc.name, dt.datetime.now())
    check_run_id(run_id)
    out = opts.out or Path(sc.output)
    check_out_dir(out)
    run_dir = out / run_id
    if run_dir.exists() or run_dir.is_symlink():
        raise UsageError(f"{run_dir} exists already; results are never overwritten")
    registry = _registry_of(opts, sc, plat)
    if opts.keep_metrics and plat.name != "docker":
        raise UsageError(f"--keep-metrics keeps the trials' Prometheus containers' data: "
                         f"it needs the docker platform, not {plat.name}")
    if opts.keep_metrics:
        from harness.record.kept_metrics import promtool

        promtool()  # before any trial: the harness series need it at the end of each
    if registry:
        _check_registry_has_images(plat, registry)
        plat.registry = registry
    elif plat.name == "docker":
        from harness.platforms.docker.images import ensure_images
        ensure_images(plat.docker)
    on_row, on_event, metrics_url = _serve_metrics(opts.metrics_port)
    try:
        lock_fd = runlock.hold(run_id)
    except BlockingIOError:
        raise UsageError(f"--run-id {run_id}: a run with this id is in progress") from None
    try:
        run_dir.mkdir(parents=True)
        return _run(loaded, path, opts, plat, names, repetitions, run_id, run_dir,
                    (on_row, on_event), metrics_url)
    finally:
        runlock.release(lock_fd, run_id)


def _run(loaded: LoadedScenario, path: Path, opts: RunOptions, plat: Platform,
         names: list[str], repetitions: int,
         run_id: str, run_dir: Path, sinks: tuple[_RowSink | None, _RowSink | None],
         metrics_url: str | None) -> int:
    sc = loaded.scenario
    echo = opts.echo
    kept = None
    if opts.keep_metrics:
        from harness.record.kept_metrics import KeptMetrics

        kept = KeptMetrics(run_dir)
    registry = plat.registry

    resolved = sc.model_dump(mode="json")
    if resolved.get("calibration") is None:
        from harness.calibrate import stored_capacity
        resolved["calibration"] = stored_capacity(loaded.path)
    meta: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "status": "running",
        "scenario_file": str(path), "scenario": resolved,
        "platform": plat.name, "strategies": names, "repetitions": repetitions,
        "seed": sc.seed, "versions": _versions(plat), "git_commit": _git_commit(),
        "host": _host(), "started": dt.datetime.now(dt.UTC).isoformat(), "ended": None,
        "warnings": [], "loadgen_saturated": False, "host_saturated": False,
        "trials": [],
        # who writes this run: a `running` run.json whose pid is gone was killed
        "pid": os.getpid(),
        "images_registry": registry,
        # load processes: local Locust workers (0: one process) and remote ones that joined
        "load_workers": {"local": sc.load.workers if opts.workers is None else opts.workers,
                         "remote": 0 if plat.name == "sim" else sc.load.remote_workers},
        "load_balancer": LOAD_BALANCERS.get(plat.name, ""),
        # None: keep-alive without limit (harness/load/runner.py)
        "load_requests_per_connection": requests_per_connection(
            sc.load.requests_per_connection, plat.name),
    }
    if plat.name == "kubernetes":
        from harness.platforms.kubernetes.run_options import real_hpa_statement

        meta["kubernetes"] = {"server": plat.kube.cfg.server, **plat.deploy_options}
        hpa, hpa_warnings = real_hpa_statement(sc, plat, names)
        if hpa is not None:
            meta["kubernetes"]["hpa_controller"] = hpa
        for w in hpa_warnings:
            echo(f"warning: {w}")
            meta["warnings"].append(w)
    if metrics_url:
        meta["metrics_url"] = metrics_url
        echo(f"harness metrics: {metrics_url}")
    write_json_atomic(run_dir / "run.json", meta)
    echo(f"run {run_id} → {run_dir}")

    def sweep_now() -> None:
        # run.json first: the sweep may hang on dockerd and the user may SIGKILL us then
        try:
            meta.update(status="incomplete", ended=dt.datetime.now(dt.UTC).isoformat(),
                        interrupted_by=stopper.signal_name or "SIGINT")
            write_json_atomic(run_dir / "run.json", meta)
        except Exception:  # nothing may keep the second Ctrl-C from exiting
            pass
        from harness.cleanup import sweep_everything

        sweep_everything(run_id, docker_timeout_s=4)
        runlock.forget(run_id)

    stopper = Stopper(sweep_now)
    stopper.install()
    recorder = Recorder(run_dir, run_id, on_row=sinks[0], on_event=sinks[1], kept=kept)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = RealClock().now()
    results: list[TrialResult] = []
    status = "complete"
    try:
        for rep in range(1, repetitions + 1):
            for name in trial_order(names, rep):
                if stopper.stopped:
                    break
                strategy = sc.strategy(name)
                res = run_trial(loaded, strategy, rep,
                                runtime_for(plat, loaded, strategy, rep, opts.workers),
                                recorder, stopper.event, echo=echo)
                results.append(res)
                meta["trials"].append(res.as_dict())
                meta["warnings"].extend(res.warnings)
                meta["loadgen_saturated"] = meta["loadgen_saturated"] or res.loadgen_saturated
                meta["host_saturated"] = meta["host_saturated"] or res.host_saturated
                if kept is not None:
                    meta["kept_metrics"] = kept.summary()
                write_json_atomic(run_dir / "run.json", meta)
        if stopper.stopped:
            status = "incomplete"
        elif results and not any(r.status == "complete" for r in results):
            status = "failed"  # nothing was measured to the end: not a complete run
    except HarnessError:
        status = "failed"
        raise
    except BaseException:
        status = "incomplete" if stopper.stopped else "failed"
        raise
    finally:
        recorder.close()
        usage1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = RealClock().now() - wall0
        cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
        meta.update(status=status, ended=dt.datetime.now(dt.UTC).isoformat(),
                    wall_s=round(wall, 1), harness_cpu_s=round(cpu, 2),
                    harness_cpu_share=round(cpu / wall, 4) if wall > 0 else None)
        if stopper.stopped:
            meta["interrupted_by"] = stopper.signal_name
        write_json_atomic(run_dir / "run.json", meta)
        stopper.restore()

    if kept is not None:
        echo(f"kept metrics: {kept.root} ({sum(kept.sizes.values()) / 1e6:.1f} MB); "
             f"serve them with `harness metrics serve {run_dir}`")
    code = _finish(run_dir, loaded, results, echo, interrupted=stopper.stopped)
    if stopper.stopped:
        echo(f"interrupted by {stopper.signal_name}: measured data kept in {run_dir}")
        return EXIT_INTERRUPTED
    return code


def _finish(run_dir: Path, loaded: LoadedScenario, results: list[TrialResult],
            echo: Callable[[str], None], *, interrupted: bool) -> int:
    """Summary table, report and threshold gates after the trials."""
    _print_summary(results, echo)
    from harness.report.html import write_report

    # write_report writes summary.csv too: the page and the table come from one computation
    echo(f"report: {write_report(run_dir)}")
    if not loaded.thresholds or not results:
        return 0
    if interrupted:
        echo("thresholds not evaluated: the run was interrupted")
        return 0
    from harness.analysis.rundata import load_run
    from harness.analysis.summary import summarize_run
    from harness.analysis.thresholds import evaluate_thresholds

    ran = {r.strategy for r in results}
    parsed = loaded.thresholds  # parsed and checked when the scenario loaded
    for th in parsed:
        if th.strategy is not None and th.strategy not in ran:
            echo(f"- {th.text}: skipped ({th.strategy!r} did not run)")
    active = [th for th in parsed if th.strategy is None or th.strategy in ran]
    gates = evaluate_thresholds(active, summarize_run(load_run(run_dir)).trials)
    for line in gates.lines():
        echo(line)
    try:
        gates.raise_if_failed()
    except GateFailed as e:
        echo(f"threshold failed: {e}")
        return e.exit_code
    return 0


def _print_summary(results: list[TrialResult], echo: Callable[[str], None]) -> None:
    if not results:
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="per trial (measured window, warm-up excluded)")
    kept = any(r.kept_metrics_bytes is not None for r in results)
    for col in ("strategy", "trial", "requests", "ok rps", "p95 ms", "error rate",
                "replicas min..max", "host sat s", *(("kept MB",) if kept else ()),
                "status"):
        table.add_column(col, justify="right" if col not in ("strategy", "status") else "left")
    for r in results:
        kept_cell = ("-" if r.kept_metrics_bytes is None
                     else f"{r.kept_metrics_bytes / 1e6:.1f}",) if kept else ()
        table.add_row(r.strategy, str(r.trial), f"{r.requests}", f"{r.throughput_rps:.1f}",
                      "-" if r.p95_ms is None else f"{r.p95_ms:.0f}",
                      f"{r.error_rate:.2%}", f"{r.replicas_min}..{r.replicas_max}",
                      f"{r.host_saturated_s}{' !' if r.host_saturated else ''}",
                      *kept_cell, r.status)
    Console(file=sys.stdout, width=120).print(table)
    flagged = [f"{r.strategy} #{r.trial}" for r in results if r.host_saturated]
    if flagged:
        from harness.record.host import machine

        echo(f"WARNING: the host {machine()} was saturated during {', '.join(flagged)}: "
             "compare those trials with care (timeseries.csv host_cpu_pct)")
