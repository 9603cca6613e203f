"""`harness` command line: a thin layer over the library (docs/architecture.md, "Conventions").

Exit codes: 0 success · 1 a run finished but a threshold/SLO gate failed · 2 bad input or a
missing prerequisite (one line on stderr, no traceback) · 130 interrupted (Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from harness import __version__
from harness.errors import HarnessError, NotBuiltError

EXIT_INTERRUPTED = 130


def _not_built(what: str, issue: str) -> NotBuiltError:
    return NotBuiltError(f"{what} is not built yet ({issue}); nothing was run")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="harness")
def cli() -> None:
    """Load-test a web app under traffic spikes and crashes, and compare deployment
    strategies (manual docker run, docker compose, orchestrated autoscaling) with real
    measurements: per-second CSVs, a dashboard and a comparison table.

    Start with `harness run spike.yaml`; results land in results/<run-id>/.
    """


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--platform", type=click.Choice(["auto", "docker", "local", "sim",
                                               "kubernetes"]),
              default=None, help="Where replicas run (default: the scenario's, else docker "
                                 "when an engine answers, else local).")
@click.option("--strategies", default=None, metavar="A,B",
              help="Only these strategies (comma-separated names from the scenario).")
@click.option("--repetitions", type=click.IntRange(1, 50), default=None,
              help="Override the scenario's repetitions.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Results folder (default: the scenario's `output`).")
@click.option("--workers", type=click.IntRange(0, 32), default=None,
              help="Locust worker processes (0: one load process).")
@click.option("--run-id", default=None, help="Name of the run folder (default: generated).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve the load generator's live figures on 127.0.0.1:PORT/metrics "
                   "(for Grafana; 0: any free port).")
@click.option("--registry", default=None, metavar="REGISTRY[/PREFIX]",
              help="Run the harness's images from this registry (pushed with `harness "
                   "images push`); overrides the scenario's images.registry.")
@click.option("--keep-metrics", is_flag=True,
              help="Keep each trial's Prometheus data in RUN/metrics/<trial>/ (docker; "
                   "serve it later with `harness metrics serve RUN`).")
@click.option("--kubeconfig", default=None, metavar="PATH",
              help="kubernetes: the cluster's kubeconfig (default: the scenario's "
                   "kubernetes.kubeconfig, KUBECONFIG, ~/.kube/config).")
@click.option("--k8s-node-address", default=None, metavar="ADDRESS",
              help="kubernetes: the node address NodePorts are reached on (default: the "
                   "scenario's kubernetes.node_address, 127.0.0.1).")
def run(scenario: Path, platform: str | None, strategies: str | None,
        repetitions: int | None, out: Path | None, workers: int | None,
        run_id: str | None, metrics_port: int | None, registry: str | None,
        keep_metrics: bool, kubeconfig: str | None, k8s_node_address: str | None) -> None:
    """Run every strategy × repetition of SCENARIO as a trial and record the results.

    Each trial: deploy, wait until ready, warm up, drive the load profile, inject faults,
    run the autoscaler, record one row per second, tear down. Ctrl-C stops cleanly (what
    was measured is kept, marked incomplete; exit 130); a second Ctrl-C tears down at once.
    """
    from harness.run import RunOptions, run_scenario

    code = run_scenario(scenario, RunOptions(
        platform=platform, strategies=strategies.split(",") if strategies else None,
        repetitions=repetitions, out=out, workers=workers, run_id=run_id,
        metrics_port=metrics_port, registry=registry, keep_metrics=keep_metrics,
        kubeconfig=kubeconfig, k8s_node_address=k8s_node_address))
    sys.exit(code)


@cli.command()
@click.option("--master", required=True, metavar="HOST:PORT",
              help="The trial's Locust master, as the waiting trial prints it.")
@click.argument("scenario", required=False, default=None,
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1, max=3600), default=60,
              show_default=True,
              help="Give up when no master answers, or it falls silent, for this long (s).")
@click.option("--runs", type=click.IntRange(0, 10_000), default=1, show_default=True,
              help="Trials to serve (0: trial after trial until no master answers; give "
                   "the scenario a fixed load.master_port).")
@click.option("--base-url", default=None, metavar="URL",
              help="Where this machine reaches the app under test (default: the master's "
                   "URL, e.g. http://127.0.0.1:PORT).")
@click.option("-v", "--verbose", is_flag=True, help="Show Locust's log.")
def worker(master: str, scenario: Path | None, timeout_s: float, runs: int,
           base_url: str | None, verbose: bool) -> None:
    """Join a running trial's load as a Locust worker (from this or another machine).

    The trial waits for `load.remote_workers` of these and prints the command to run.
    The worker gets the load profile from the master; when the scenario uses its own
    locustfile, give SCENARIO (this machine's copy: a worker never runs code sent over
    the network). Exits when the run is over; Ctrl-C leaves the run cleanly (exit 130).
    """
    from harness.load.remote import WorkerOptions, serve

    sys.exit(serve(WorkerOptions(master=master, scenario=scenario, timeout_s=timeout_s,
                                 runs=runs, base_url=base_url, verbose=verbose), click.echo))


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
def validate(scenario: Path, as_json: bool) -> None:
    """Check SCENARIO and print it resolved (every default filled in).

    Errors name the file, line and key: `spike.yaml:12: load.stages[1].rps: ...`.
    """
    import yaml

    from harness.scenario.loader import load_scenario

    sc = load_scenario(scenario).scenario  # thresholds, trace and locustfile checked too
    data = sc.model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(f"# {scenario}: valid")
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@cli.command()
def schema() -> None:
    """Print the JSON schema of scenario files (generated from the models)."""
    from harness.scenario.models import Scenario

    click.echo(json.dumps(Scenario.model_json_schema(), indent=2))


@cli.group()
def images() -> None:
    """Build and list the images a run needs (no registry needed)."""


@images.command("build")
@click.option("--force", is_flag=True, help="Rebuild even when the cache is current.")
def images_build(force: bool) -> None:
    """Build the base, sample-app, HAProxy and Prometheus images (cached)."""
    from harness.platforms.docker.images import build_images

    build_images(force=force, progress=click.echo)


@images.command("push")
@click.argument("registry")
def images_push(registry: str) -> None:
    """Tag and push the app, HAProxy, Prometheus and base images to REGISTRY[/PREFIX]
    as :<content hash, 12 digits> and :latest (e.g. 127.0.0.1:5000/harness)."""
    import time

    from harness.platform import docker_client
    from harness.platforms.docker.registry_images import parse_push_target, push_images

    target = parse_push_target(registry)
    t0 = time.monotonic()
    results = push_images(target, docker_client(timeout_s=300), progress=click.echo)
    click.echo(f"pushed {len(results)} images to {target} in {time.monotonic() - t0:.1f} s")


@cli.group("registry")
def registry_group() -> None:
    """A local image registry (Debian's docker-registry) on 127.0.0.1."""


_port_option = click.option("--port", type=click.IntRange(1, 65535), default=5000,
                            show_default=True)


@registry_group.command("up")
@_port_option
def registry_up(port: int) -> None:
    """Start it (idempotent); storage in /var/tmp/harness-registry/PORT/."""
    from harness.platforms.docker.local_registry import up

    click.echo(up(port).line())


@registry_group.command("down")
@_port_option
@click.option("--keep-data", is_flag=True, help="Stop it but keep the pushed images.")
def registry_down(port: int, keep_data: bool) -> None:
    """Stop it and remove its storage."""
    from harness.platforms.docker.local_registry import down

    for line in down(port, keep_data=keep_data) or ["no registry there"]:
        click.echo(line)


@registry_group.command("status")
@_port_option
def registry_status(port: int) -> None:
    """Whether it answers, its pid and the size of its storage (exit 1 when down)."""
    from harness.platforms.docker.local_registry import status

    st = status(port)
    click.echo(st.line())
    if not st.answers:
        sys.exit(1)


@cli.group("metrics")
def metrics_group() -> None:
    """A finished run's kept Prometheus data (`harness run --keep-metrics`)."""


@metrics_group.command("serve")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=9090, show_default=True,
              help="127.0.0.1:PORT (the provisioned Grafana datasource's default).")
def metrics_serve(run_dir: Path, port: int) -> None:
    """Serve RUN_DIR's kept metrics with Prometheus on 127.0.0.1 for the Grafana
    dashboards (dashboards/README.md) until Ctrl-C."""
    from harness.report.metrics_serve import serve

    serve(run_dir, port, echo=click.echo)


@images.command("list")
def images_list() -> None:
    """List the images the harness built."""
    from harness.platforms.docker.images import list_images

    for line in list_images():
        click.echo(line)


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--view", type=click.Choice(["within", "ab"]), default=None,
              help="within: strategies of a run against a baseline strategy; ab: each "
                   "strategy against itself in the first run (default with 2+ runs).")
@click.option("--baseline", default=None, metavar="STRATEGY",
              help="The baseline strategy of --view within (default: the first).")
@click.option("--pool", is_flag=True,
              help="Pool all RUNS (one scenario) as repetitions of one run.")
@click.option("--force", is_flag=True,
              help="Compare runs of different scenarios anyway (the differences are "
                   "printed above the table).")
@click.option("--strategies", default=None, metavar="A,B", help="Only these strategies.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write comparison.csv (and comparison.html) here.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the compare page (panels + table) to this file "
                                 "(default: comparison.html next to comparison.csv).")
def compare(runs: tuple[str, ...], view: str | None, baseline: str | None, pool: bool,
            force: bool, strategies: str | None, out: Path | None,
            html_file: Path | None) -> None:
    """Compare strategies within a run, or the same strategy across runs (A/B).

    RUNS are run folders; RUN1+RUN2 pools those runs as repetitions of one. One run (or
    --view within): every strategy against a baseline strategy. Two or more: each strategy
    in run B against itself in run A, Δ = B − A, significant when Welch's t-test over the
    trials gives p < 0.05. Runs of different scenarios are refused (exit 2) unless --force.
    The scenario's thresholds are evaluated too: a failed one exits with code 1.
    """
    from harness.analysis.compare import compare as do_compare
    from harness.report.compare_view import write_compare_page

    result = do_compare(list(runs), out_dir=out, echo=click.echo, view=view,
                        baseline=baseline, pool=pool, force=force,
                        strategies=strategies.split(",") if strategies else None)
    page = write_compare_page(result, html_file or Path(
        result.csv_path or out or ".").with_name("comparison.html"))
    click.echo(f"wrote {page}")
    result.raise_for_gates()


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def report(run_dir: Path) -> None:
    """Write RUN_DIR/summary.csv and RUN_DIR/report.html (a self-contained dashboard)."""
    from harness.report.html import write_report

    click.echo(str(write_report(run_dir)))


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--strategy", default=None, help="Only this autoscaled strategy.")
@click.option("--policy", "policies", multiple=True, metavar="P",
              help="Policy to replay (repeatable; default: the one the run used).")
@click.option("--target", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Another per-replica target than the recorded one.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write decisions.csv and replay.svg (default: RUN_DIR/replay).")
def replay(run_dir: Path, strategy: str | None, policies: tuple[str, ...],
           target: float | None, out: Path | None) -> None:
    """What would policy P have decided? Re-runs policies offline, on each recorded
    decision time, on the metric values and replica counts RUN_DIR recorded.

    A what-if on recorded inputs: it cannot know how the system would have responded to
    different decisions (for that, run the policy on --platform sim).
    """
    from harness.replay import replay_run

    replay_run(run_dir, strategy, policies, out, target, echo=click.echo)


@cli.command()
@click.argument("results_dir", required=False, default="results",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8642, show_default=True,
              help="Port on 127.0.0.1 (not Locust's 8089, which its users have open).")
def dashboard(results_dir: Path, port: int) -> None:
    """Serve RESULTS_DIR on http://127.0.0.1:PORT: every run's dashboard, live while a
    run is still writing."""
    from harness.report.server import serve

    serve(results_dir, host="127.0.0.1", port=port, echo=click.echo)


@cli.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--platform", type=click.Choice(["auto", "docker", "local"]), default=None)
def calibrate(scenario: Path, platform: str | None) -> None:
    """Measure the rate one replica sustains within the SLO and store it for SCENARIO."""
    from harness.calibrate import calibrate as do_calibrate

    do_calibrate(scenario, platform=platform, echo=click.echo)


@cli.command()
@click.option("--run", "run_id", default=None, help="Only objects of this run id.")
@click.option("--all", "include_live", is_flag=True,
              help="Also runs still in progress (skipped by default).")
@click.option("--volumes", is_flag=True,
              help="Also remove kept data: every run's metrics/ folder under --results "
                   "and the local registries (their processes and stored images).")
@click.option("--results", "results_dir", default="results", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where --volumes looks for kept metrics.")
def clean(run_id: str | None, include_live: bool, volumes: bool, results_dir: Path) -> None:
    """Remove every Docker object (and local process) labelled harness.managed=true —
    leftovers of a run that was killed with SIGKILL. Runs still in progress are skipped
    unless --all is given; kept data goes only with --volumes."""
    from harness.cleanup import sweep_everything, sweep_volumes

    lines = sweep_everything(run_id, include_live=include_live)
    if volumes:
        lines += sweep_volumes(results_dir, run_id)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("nothing to clean")


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="harness", standalone_mode=False)
    except HarnessError as e:
        click.echo(f"harness: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("harness: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        e.show()
        return 2
    except KeyboardInterrupt:
        click.echo("harness: interrupted", err=True)
        return EXIT_INTERRUPTED
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
