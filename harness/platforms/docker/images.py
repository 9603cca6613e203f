"""The images a Docker run needs, built locally without a container registry.

``harness images build`` (or ``python -m harness.platforms.docker.images build [--force]``) builds,
labels and caches four images:

- ``harness-base:bookworm``: ``debootstrap --variant=minbase
  --include=python3,ca-certificates bookworm`` from the host's Debian mirror, then
  ``tar | docker import`` (no registry involved).
- ``harness-app:latest``: FROM the base, plus ``prometheus-client`` from a wheelhouse built
  on the host (``.cache/wheelhouse``, pinned to this virtualenv's version) and
  ``sample_app/``; runs ``python3 -m sample_app`` as PID 1 on port 8000 (env ``PORT``).
- ``harness-haproxy:latest``: FROM the base plus Debian's ``haproxy``; runs
  ``haproxy -W -db -f /usr/local/etc/haproxy/haproxy.cfg`` (the arguments after
  ``haproxy -W -db`` are the CMD: pass ``-f PATH`` to use another config).
- ``harness-prometheus:latest``: a builder stage installs Debian's ``prometheus``, the
  final stage copies only the binary onto the base (a fraction of the ~720 MB image the
  package makes); entrypoint ``/bin/prometheus``, default arguments
  ``--config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus
  --web.listen-address=:9090``.

Every image carries ``harness.managed=true``, ``harness.run=images``,
``harness.image=<name>`` and ``harness.hash=<sha256>``: the hash of its recipe (base) or
of its whole build context plus its parent image id (the others). A build whose hash
matches the existing image's label is skipped, so a second ``build`` takes seconds; a
change to ``sample_app/``, the wheelhouse, a Dockerfile or the base rebuilds exactly the
images it affects. ``--force`` rebuilds everything. The HAProxy and Prometheus versions
found in the images are stored in a ``harness.version`` label at build time.

Nothing inside a build talks to a package index other than the Debian mirror (the
sandbox's pip cannot verify certificates inside containers); Python packages go in from
the host-built wheelhouse.

Using official images instead (a machine with registry access)
--------------------------------------------------------------
Set any of these; each replaces the image that would be built (it is pulled if absent)::

    HARNESS_BASE_IMAGE=python:3.11-slim       # the app image is built FROM it; no debootstrap
    HARNESS_HAPROXY_IMAGE=haproxy:2.8         # used as is: same config path and arguments
    HARNESS_PROMETHEUS_IMAGE=prom/prometheus  # used as is: same entrypoint, args, config

A base override must be Debian-based when the HAProxy or Prometheus image is still built
from it (they use apt-get). Deployers ask ``image_refs()`` which reference to run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from harness.errors import HarnessError, PrerequisiteError
from harness.platforms.docker.image_build import (
    _build_lock,
    _Builder,
    _docker_client,
    _get_image,
    _long_timeout,
    _run_once,
    ensure_wheelhouse,
)
from harness.platforms.docker.image_recipe import (
    DEFAULT_REFS,
    DOCKER_DIR,
    FALLBACK_MIRROR,
    HASH_LABEL,
    IMAGE_LABEL,
    IMAGES_RUN_ID,
    OVERRIDE_VARS,
    ROLES,
    SAMPLE_APP_DIR,
    VERSION_LABEL,
    BaseRecipe,
    BuiltImage,
    Progress,
    context_hash,
    context_tar,
    debian_mirrors,
    dir_files,
    image_ref,
    image_refs,
    is_override,
    parse_apt_sources,
    parse_version,
    wheel_prefix,
)

# what callers and tests use from here (the split files are details)
__all__ = [
    "DEFAULT_REFS",
    "FALLBACK_MIRROR",
    "HASH_LABEL",
    "IMAGES_RUN_ID",
    "IMAGE_LABEL",
    "ROLES",
    "BaseRecipe",
    "BuiltImage",
    "_docker_client",
    "app_context",
    "build_images",
    "context_hash",
    "context_tar",
    "debian_mirrors",
    "dir_files",
    "ensure_images",
    "image_ref",
    "image_refs",
    "image_versions",
    "is_override",
    "list_images",
    "main",
    "parse_apt_sources",
    "parse_version",
    "wheel_prefix",
]


def app_context(progress: Progress = print) -> dict[str, tuple[bytes, int]]:
    if not (SAMPLE_APP_DIR / "__main__.py").is_file():
        raise PrerequisiteError(f"{SAMPLE_APP_DIR}/__main__.py is missing: the sample app "
                                "is not there to build")
    return {**dir_files(DOCKER_DIR / "app", ""), **dir_files(SAMPLE_APP_DIR, "sample_app/"),
            **ensure_wheelhouse(progress)}


def build_images(force: bool = False, progress: Progress = print, client: Any = None,
                 environ: Mapping[str, str] | None = None,
                 report_cached: bool = True) -> list[BuiltImage]:
    """Build (or find current) every image a Docker run needs, in dependency order.

    Raises PrerequisiteError (one line) when the engine, debootstrap, the Dockerfiles or
    a build fail."""
    env = os.environ if environ is None else environ
    if not DOCKER_DIR.is_dir():
        raise PrerequisiteError(f"{DOCKER_DIR} is missing: images are built from a "
                                "checkout of the harness repository")
    client = client if client is not None else _docker_client()
    with _long_timeout(client), _build_lock(progress):
        b = _Builder(client, force, progress, env, report_cached=report_cached)
        base = b.base()
        results = [base]
        results.append(b.from_context("app", app_context(progress), base))
        for role in ("haproxy", "prometheus"):
            results.append(b.from_context(role, dir_files(DOCKER_DIR / role, ""), base))
        b.cleanup_replaced()
    return results


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_images(client: Any, progress: Progress = _stderr) -> dict[str, str]:
    """role (base, app, haproxy, prometheus) → image id, building whatever is missing or
    stale (about a second when everything is current; only builds are reported). Run the
    references of ``image_refs()`` (or these ids)."""
    results = build_images(progress=progress, client=client, report_cached=False)
    return {r.role: r.image_id for r in results}


def image_versions(client: Any = None,
                   environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """HAProxy and Prometheus versions of the images a run uses, from the labels cached at
    build time (an override image without our label is asked once by running it)."""
    client = client if client is not None else _docker_client(timeout_s=30)
    out: dict[str, str | None] = {}
    for role in ("haproxy", "prometheus"):
        image = _get_image(client, image_ref(role, environ))
        if image is None:
            out[role] = None
            continue
        version = (image.attrs.get("Config", {}).get("Labels") or {}).get(VERSION_LABEL)
        if not version:
            argv = {"haproxy": ["haproxy", "-v"], "prometheus": ["prometheus", "--version"]}
            with contextlib.suppress(Exception):
                version = parse_version(role, _run_once(client, image.id, argv[role]))
        out[role] = version
    return out


def list_images(client: Any = None) -> list[str]:
    """One line per image a run uses: reference, id, size, version, created."""
    client = client if client is not None else _docker_client(timeout_s=30)
    lines = []
    for role, ref in image_refs().items():
        image = _get_image(client, ref)
        if image is None:
            lines.append(f"{ref:<28} missing (harness images build)")
            continue
        labels = image.attrs.get("Config", {}).get("Labels") or {}
        version = labels.get(VERSION_LABEL, "")
        origin = "" if labels.get(HASH_LABEL) else f"  (from {OVERRIDE_VARS.get(role, '')})"
        lines.append(f"{ref:<28} {image.short_id.removeprefix('sha256:'):<12} "
                     f"{int(image.attrs.get('Size', 0)) / 1e6:>6.0f} MB  "
                     f"{image.attrs.get('Created', '')[:19]}  {version}{origin}".rstrip())
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.platforms.docker.images",
                                     description="Build or list the harness's images.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the images (cached)")
    p_build.add_argument("--force", action="store_true", help="rebuild even when current")
    sub.add_parser("list", help="list the images a run uses")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            t0 = time.monotonic()
            results = build_images(force=args.force, progress=print)
            built = sum(r.action == "built" for r in results)
            print(f"images: {built} built, {len(results) - built} current, "
                  f"{time.monotonic() - t0:.1f} s")
        else:
            for line in list_images():
                print(line)
    except HarnessError as e:
        print(f"harness: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
