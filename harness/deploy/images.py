"""The images a Docker run needs, built locally without a container registry.

``harness images build`` (or ``python -m harness.deploy.images build [--force]``) builds,
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
import fcntl
import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.deploy.base import RUN_LABEL, labels_for
from harness.errors import HarnessError, PrerequisiteError

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
SAMPLE_APP_DIR = ROOT / "sample_app"
CACHE_DIR = ROOT / ".cache"
WHEELHOUSE = CACHE_DIR / "wheelhouse"
WORK_DIR = CACHE_DIR / "images"  # build logs, the lock, the temporary rootfs

# The run id images carry: they belong to no trial, and `harness clean --run X` never
# matches it.
IMAGES_RUN_ID = "images"
IMAGE_LABEL = "harness.image"
HASH_LABEL = "harness.hash"
VERSION_LABEL = "harness.version"
BUILDER_STAGE_LABEL = "harness.stage"

ROLES = ("base", "app", "haproxy", "prometheus")
DEFAULT_REFS: dict[str, str] = {
    "base": "harness-base:bookworm",
    "app": "harness-app:latest",
    "haproxy": "harness-haproxy:latest",
    "prometheus": "harness-prometheus:latest",
}
OVERRIDE_VARS: dict[str, str] = {
    "base": "HARNESS_BASE_IMAGE",
    "haproxy": "HARNESS_HAPROXY_IMAGE",
    "prometheus": "HARNESS_PROMETHEUS_IMAGE",
}
# Python distributions the app image needs, pinned to the versions in this virtualenv.
APP_REQUIREMENTS = ("prometheus-client",)
FALLBACK_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# Bumped when the base recipe changes in a way the fields below do not show.
BASE_RECIPE_VERSION = "1"
BUILD_TIMEOUT_S = 1800
DEBOOTSTRAP_TIMEOUT_S = 1200
# Fixed metadata in the build-context tar so equal files give an equal hash.
_CONTEXT_MTIME = 1_600_000_000

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltImage:
    role: str
    ref: str
    image_id: str
    action: str  # built | cached | external (an override, not built here)
    seconds: float
    size_bytes: int
    version: str | None = None


# --------------------------------------------------------------------------- pure parts


def image_refs(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """role → the image reference to run: an override from the environment or ours."""
    env = os.environ if environ is None else environ
    refs = dict(DEFAULT_REFS)
    for role, var in OVERRIDE_VARS.items():
        if env.get(var, "").strip():
            refs[role] = env[var].strip()
    return refs


def image_ref(role: str, environ: Mapping[str, str] | None = None) -> str:
    return image_refs(environ)[role]


def is_override(role: str, environ: Mapping[str, str] | None = None) -> bool:
    return image_ref(role, environ) != DEFAULT_REFS[role]


def parse_apt_sources(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """(uri, suites) of every enabled binary source in a deb822 ``.sources`` or a
    one-line ``.list`` text."""
    out: list[tuple[str, tuple[str, ...]]] = []
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    if any(re.match(r"^(Types|URIs|Suites)\s*:", ln) for ln in lines):
        for para in re.split(r"\n\s*\n", "\n".join(lines)):
            fields: dict[str, str] = {}
            key = ""
            for ln in para.splitlines():
                if ln[:1].isspace() and key:  # a folded continuation line
                    fields[key] += " " + ln.strip()
                elif ":" in ln:
                    key, _, value = ln.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            suites = tuple(fields.get("suites", "").split())
            out.extend((uri, suites) for uri in fields.get("uris", "").split())
        return out
    for ln in lines:
        ln = re.sub(r"\[[^\]]*\]", " ", ln)  # [signed-by=...] options
        parts = ln.split()
        if len(parts) >= 3 and parts[0] == "deb":
            out.append((parts[1], (parts[2],)))
    return out


def debian_mirrors(entries: list[tuple[str, tuple[str, ...]]],
                   suite: str = SUITE) -> tuple[str, str | None]:
    """(main mirror, security mirror or None) for ``suite`` among apt source entries."""
    main = next((u for u, s in entries if suite in s and "security" not in u), None)
    security = next((u for u, s in entries if f"{suite}-security" in s), None)
    if main is None:  # e.g. sources naming only "stable": take any non-security Debian URI
        main = next((u for u, _ in entries if "/debian" in u and "security" not in u),
                    FALLBACK_MIRROR)
    return main.rstrip("/"), security.rstrip("/") if security else None


@dataclass(frozen=True)
class BaseRecipe:
    """Everything that decides what the base image contains; its hash is the cache key."""

    mirror: str
    security_mirror: str | None = None
    suite: str = SUITE
    variant: str = "minbase"
    includes: tuple[str, ...] = ("python3", "ca-certificates")

    def debootstrap_args(self, rootfs: Path) -> list[str]:
        return ["debootstrap", f"--variant={self.variant}",
                f"--include={','.join(self.includes)}", self.suite, str(rootfs), self.mirror]

    def sources_list(self) -> str:
        lines = [f"deb {self.mirror} {self.suite} main",
                 f"deb {self.mirror} {self.suite}-updates main"]
        if self.security_mirror:
            lines.append(f"deb {self.security_mirror} {self.suite}-security main")
        return "\n".join(lines) + "\n"

    def rootfs_files(self) -> dict[str, tuple[str, int]]:
        """Files written into the rootfs after debootstrap (path → text, mode): the same
        tweaks Debian's official images get from debuerreotype."""
        return {
            # Package postinst scripts must not start services during a build.
            "usr/sbin/policy-rc.d": ("#!/bin/sh\nexit 101\n", 0o755),
            "etc/apt/sources.list": (self.sources_list(), 0o644),
            "etc/apt/apt.conf.d/docker-clean": (
                'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
                '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
                'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n', 0o644),
            "etc/apt/apt.conf.d/docker-no-recommends": (
                'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n', 0o644),
            "etc/apt/apt.conf.d/docker-no-languages": ('Acquire::Languages "none";\n', 0o644),
            # Docs, man pages and translations never help inside a container.
            "etc/dpkg/dpkg.cfg.d/docker-excludes": (
                "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
                "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
                "path-exclude /usr/share/locale/*\n"
                "path-include /usr/share/locale/locale.alias\n", 0o644),
        }

    def changes(self) -> list[str]:
        """``docker import --change`` instructions, labels excepted."""
        return ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8", 'CMD ["bash"]']

    def hash(self) -> str:
        doc = {"v": BASE_RECIPE_VERSION, "args": self.debootstrap_args(Path("ROOTFS")),
               "files": self.rootfs_files(), "changes": self.changes(),
               "prune": _ROOTFS_PRUNE}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# Removed from the rootfs after debootstrap (the dpkg excludes cover later installs).
_ROOTFS_PRUNE = ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/man/*",
                 "usr/share/info/*", "usr/share/locale/*", "var/log/*.log", "var/log/apt/*",
                 "etc/hostname")


def context_tar(files: Mapping[str, bytes | tuple[bytes, int]]) -> bytes:
    """A deterministic tar of ``arcname → content`` (or (content, mode)): sorted, fixed
    owner and mtime, so equal files always give equal bytes (and an equal hash)."""
    buf = io.BytesIO()
    dirs: set[str] = set()
    for name in files:
        parts = name.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _CONTEXT_MTIME
            tar.addfile(info)
        for name in sorted(files):
            value = files[name]
            data, mode = value if isinstance(value, tuple) else (value, 0o644)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, _CONTEXT_MTIME
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def context_hash(tar_bytes: bytes, buildargs: Mapping[str, str], parent_id: str) -> str:
    h = hashlib.sha256()
    h.update(tar_bytes)
    h.update(json.dumps(dict(sorted(buildargs.items()))).encode())
    h.update(parent_id.encode())
    return h.hexdigest()


def parse_version(role: str, output: str) -> str | None:
    """The version in ``haproxy -v`` / ``prometheus --version`` output."""
    pattern = {"haproxy": r"HA-?Proxy version (\S+)",
               "prometheus": r"prometheus, version (\S+)"}[role]
    m = re.search(pattern, output)
    return m.group(1) if m else None


def wheel_prefix(distribution: str, version: str) -> str:
    """File-name prefix of a wheel (PEP 427 escapes '-' and '.' in the name as '_')."""
    return f"{re.sub(r'[-_.]+', '_', distribution)}-{version}-"


def dir_files(root: Path, prefix: str) -> dict[str, tuple[bytes, int]]:
    """Files under ``root`` as context entries under ``prefix`` (bytecode and caches
    left out: they would change the hash without changing the app)."""
    out: dict[str, tuple[bytes, int]] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_dir() or any(part in ("__pycache__", ".pytest_cache") for part in rel.parts):
            continue
        if p.suffix in (".pyc", ".pyo") or p.name.startswith(".#"):
            continue
        mode = 0o755 if os.access(p, os.X_OK) else 0o644
        out[f"{prefix}{rel.as_posix()}"] = (p.read_bytes(), mode)
    return out


# --------------------------------------------------------------------------- host side


def host_base_recipe(apt_root: Path = Path("/etc/apt")) -> BaseRecipe:
    texts: list[str] = []
    for path in [apt_root / "sources.list", *sorted((apt_root / "sources.list.d").glob("*"))]:
        if path.is_file() and path.suffix in (".list", ".sources"):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace"))
    entries = [e for t in texts for e in parse_apt_sources(t)]
    mirror, security = debian_mirrors(entries)
    return BaseRecipe(mirror=mirror, security_mirror=security)


def ensure_wheelhouse(progress: Progress = print,
                      wheelhouse: Path = WHEELHOUSE) -> dict[str, tuple[bytes, int]]:
    """The app's wheels (pinned to this virtualenv's versions) as context entries under
    ``wheels/``; downloads with the host's pip only when a wheel is missing."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[bytes, int]] = {}
    for dist in APP_REQUIREMENTS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            raise PrerequisiteError(f"{dist} is not installed in this Python "
                                    "(pip install -e '.[dev]')") from None
        prefix = wheel_prefix(dist, version)
        found = sorted(wheelhouse.glob(f"{prefix}*-none-any.whl"))
        if not found:
            progress(f"wheelhouse: downloading {dist}=={version} into {wheelhouse}")
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--only-binary=:all:", "--dest", str(wheelhouse), f"{dist}=={version}"]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.TimeoutExpired) as e:
                raise PrerequisiteError(f"pip download {dist}=={version} failed: {e}") from None
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["?"])[-1]
                raise PrerequisiteError(f"pip download {dist}=={version} failed: {last}")
            found = sorted(wheelhouse.glob(f"{prefix}*-none-any.whl"))
            if not found:
                raise PrerequisiteError(f"no pure-python wheel of {dist}=={version} in "
                                        f"{wheelhouse}")
        out[f"wheels/{found[0].name}"] = (found[0].read_bytes(), 0o644)
    return out


def _unmount_below(root: Path) -> None:
    """debootstrap mounts /proc (and more) inside the rootfs; an interrupted run can leave
    them mounted, and rmtree would then walk into the host's /proc or /sys."""
    try:
        mounts = [ln.split()[1].replace("\\040", " ") for ln in
                  Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return
    prefix = str(root).rstrip("/") + "/"
    for m in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True, check=False)


def _remove_rootfs(root: Path) -> None:
    _unmount_below(root)
    mounts = Path("/proc/mounts").read_text() if Path("/proc/mounts").exists() else ""
    if f" {str(root).rstrip('/')}/" in mounts:
        raise PrerequisiteError(f"{root} still has mounts below it; unmount them and delete "
                                "it by hand")
    shutil.rmtree(root, ignore_errors=True)


def _docker_client(timeout_s: int = BUILD_TIMEOUT_S) -> Any:
    try:
        import docker
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise PrerequisiteError(f"the docker Python SDK is missing: {e}") from None
    try:
        client = docker.from_env(timeout=timeout_s)
        client.ping()
    except Exception as e:
        raise PrerequisiteError("no Docker engine answers (is dockerd running? run "
                                f"scripts/setup.sh): {type(e).__name__}") from None
    return client


@contextlib.contextmanager
def _long_timeout(client: Any, timeout_s: int = BUILD_TIMEOUT_S) -> Iterator[Any]:
    """A caller's client may have a short timeout (pings); builds and imports need more."""
    old = client.api.timeout
    client.api.timeout = max(old or 0, timeout_s)
    try:
        yield client
    finally:
        client.api.timeout = old


@contextlib.contextmanager
def _build_lock(progress: Progress) -> Iterator[None]:
    """One builder at a time on this machine: the images are the engine's, shared by every
    checkout, and parallel test sessions call ensure_images."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "harness-images-build.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("images: another build is running; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _get_image(client: Any, ref: str) -> Any | None:
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _labels(role: str, content_hash: str) -> dict[str, str]:
    return labels_for(IMAGES_RUN_ID, **{IMAGE_LABEL: DEFAULT_REFS[role].split(":")[0],
                                        HASH_LABEL: content_hash})


def _label_line(labels: Mapping[str, str]) -> bytes:
    pairs = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return f"\nLABEL {pairs}\n".encode()


def _split_ref(ref: str) -> tuple[str, str]:
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        return ref, "latest"
    return repo, tag


def _remove_quietly(client: Any, image_id: str) -> bool:
    import docker.errors

    try:
        client.images.remove(image_id, noprune=False)
        return True
    except docker.errors.APIError:  # in use by a container, or already gone
        return False


class _Builder:
    def __init__(self, client: Any, force: bool, progress: Progress,
                 environ: Mapping[str, str], report_cached: bool = True) -> None:
        self.client, self.force, self.progress = client, force, progress
        self.report_cached = report_cached
        self.refs = image_refs(environ)
        self.overridden = {r for r in ROLES if self.refs[r] != DEFAULT_REFS[r]}
        self.replaced: list[str] = []  # old image ids to remove once every build is done

    def result(self, role: str, image: Any, action: str, t0: float) -> BuiltImage:
        labels = image.attrs.get("Config", {}).get("Labels") or {}
        res = BuiltImage(role, self.refs[role], image.id, action, time.monotonic() - t0,
                         int(image.attrs.get("Size", 0)), labels.get(VERSION_LABEL))
        if action in ("cached", "external") and not self.report_cached:
            return res
        size = f"{res.size_bytes / 1e6:.0f} MB"
        ver = f", {res.version}" if res.version else ""
        self.progress(f"{res.ref}: {action} ({image.short_id.removeprefix('sha256:')}, "
                      f"{size}{ver}) in {res.seconds:.1f} s")
        return res

    def external(self, role: str) -> BuiltImage:
        """An override from the environment: use it, pulling it when it is not here."""
        t0 = time.monotonic()
        ref = self.refs[role]
        image = _get_image(self.client, ref)
        if image is None:
            self.progress(f"{ref}: pulling (set by {OVERRIDE_VARS[role]})")
            try:  # the SDK parses name, tag and digest out of the reference itself
                image = self.client.images.pull(ref)
            except Exception as e:
                raise PrerequisiteError(f"{OVERRIDE_VARS[role]}={ref}: cannot pull it: "
                                        f"{type(e).__name__}: {str(e)[:200]}") from None
        return self.result(role, image, "external", t0)

    def current(self, role: str, want_hash: str) -> Any | None:
        image = _get_image(self.client, self.refs[role])
        if image is None:
            return None
        labels = image.attrs.get("Config", {}).get("Labels") or {}
        if not self.force and labels.get(HASH_LABEL) == want_hash:
            return image
        self.replaced.append(image.id)
        return None

    # ---- base: debootstrap → docker import
    def base(self) -> BuiltImage:
        if "base" in self.overridden:
            return self.external("base")
        t0 = time.monotonic()
        recipe = host_base_recipe()
        want = recipe.hash()
        image = self.current("base", want)
        if image is not None:
            return self.result("base", image, "cached", t0)
        if shutil.which("debootstrap") is None:
            raise PrerequisiteError("debootstrap is not installed (apt-get install debootstrap,"
                                    " or run scripts/setup.sh; or set HARNESS_BASE_IMAGE)")
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        for stale in WORK_DIR.glob("rootfs-*"):  # left by an interrupted build
            _remove_rootfs(stale)
        log_path = WORK_DIR / "base.log"
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=WORK_DIR))
        try:
            self.progress(f"{self.refs['base']}: debootstrap {recipe.suite} from "
                          f"{recipe.mirror} (about a minute; log {log_path})")
            with open(log_path, "w") as log:
                try:
                    r = subprocess.run(recipe.debootstrap_args(rootfs), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       timeout=DEBOOTSTRAP_TIMEOUT_S, check=False)
                except subprocess.TimeoutExpired:
                    raise PrerequisiteError(f"debootstrap took over {DEBOOTSTRAP_TIMEOUT_S} s"
                                            f" (log: {log_path})") from None
            if r.returncode != 0:
                raise PrerequisiteError(f"debootstrap failed with exit code {r.returncode}: "
                                        f"{_last_line(log_path)} (log: {log_path})")
            _unmount_below(rootfs)
            self.customise_rootfs(rootfs, recipe)
            self.progress(f"{self.refs['base']}: docker import")
            image = self.import_rootfs(rootfs, recipe, want, log_path)
        finally:
            _remove_rootfs(rootfs)
        return self.result("base", image, "built", t0)

    @staticmethod
    def customise_rootfs(rootfs: Path, recipe: BaseRecipe) -> None:
        for pattern in _ROOTFS_PRUNE:
            for p in rootfs.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
        # Keep the licences, as Debian's slim images do.
        for p in (rootfs / "usr/share/doc").glob("*/*"):
            if p.name != "copyright":
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for name, (text, mode) in recipe.rootfs_files().items():
            path = rootfs / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(mode)
        for p in (rootfs / "etc/apt/sources.list.d").glob("*"):
            p.unlink()

    def import_rootfs(self, rootfs: Path, recipe: BaseRecipe, want: str,
                      log_path: Path) -> Any:
        ref = self.refs["base"]
        repo, tag = _split_ref(ref)
        changes = recipe.changes() + [f'LABEL {k}="{v}"'
                                      for k, v in _labels("base", want).items()]
        # The container runtime provides /dev, /proc and /sys; device nodes in a layer
        # would only trouble storage drivers such as fuse-overlayfs.
        cmd = ["tar", "--numeric-owner", "-C", str(rootfs), "--exclude=./dev/*",
               "--exclude=./proc/*", "--exclude=./sys/*", "-c", "."]
        with open(log_path, "a") as log:
            tar = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
            assert tar.stdout is not None

            def chunks() -> Iterator[bytes]:
                while block := tar.stdout.read(1 << 20):  # type: ignore[union-attr]
                    yield block

            try:
                out = self.client.api.import_image(src=chunks(), repository=repo, tag=tag,
                                                   changes=changes, stream_src=True)
            finally:
                tar.stdout.close()
                rc = tar.wait()
        if rc != 0:
            raise PrerequisiteError(f"tar of the rootfs failed with exit code {rc} "
                                    f"(log: {log_path})")
        image = _get_image(self.client, ref)
        if image is None:
            raise PrerequisiteError(f"docker import did not create {ref}: {str(out)[:200]}")
        return image

    # ---- images built from a context
    def from_context(self, role: str, files: dict[str, tuple[bytes, int]],
                     parent: BuiltImage) -> BuiltImage:
        if role in self.overridden:
            return self.external(role)
        t0 = time.monotonic()
        buildargs = {"BASE": parent.ref}
        tar_bytes = context_tar(files)
        want = context_hash(tar_bytes, buildargs, parent.image_id)
        image = self.current(role, want)
        if image is not None:
            return self.result(role, image, "cached", t0)
        ref = self.refs[role]
        log_path = WORK_DIR / f"{role}.log"
        self.progress(f"{ref}: building ({len(tar_bytes) / 1024:.0f} KiB context; "
                      f"log {log_path})")
        # Labels as one LABEL line of our own: the builder's labels parameter costs one
        # step (one container) per label.
        dockerfile, mode = files["Dockerfile"]
        labelled = {**files, "Dockerfile": (dockerfile + _label_line(_labels(role, want)),
                                            mode)}
        image_id = self.docker_build(io.BytesIO(context_tar(labelled)), buildargs, log_path,
                                     custom_context=True,
                                     tag=None if role in ("haproxy", "prometheus") else ref)
        if role in ("haproxy", "prometheus"):
            # Cache the version in a label now, so image_versions() never runs a container.
            version = self.probe_version(role, image_id) or "unknown"
            dockerfile = f"FROM {image_id}\n".encode() + _label_line({VERSION_LABEL: version})
            image_id = self.docker_build(io.BytesIO(dockerfile), {}, log_path,
                                         custom_context=False, tag=ref, append_log=True)
        if role == "prometheus":
            self.remove_builder_stage()
        image = _get_image(self.client, ref)
        if image is None or image.id != image_id:
            raise PrerequisiteError(f"building {ref} did not tag it (log: {log_path})")
        return self.result(role, image, "built", t0)

    def docker_build(self, fileobj: io.BytesIO, buildargs: Mapping[str, str],
                     log_path: Path, *, custom_context: bool,
                     tag: str | None, append_log: bool = False) -> str:
        image_id: str | None = None
        error: str | None = None
        with open(log_path, "a" if append_log else "w") as log:
            stream = self.client.api.build(
                fileobj=fileobj, custom_context=custom_context, tag=tag,
                buildargs=dict(buildargs), rm=True, forcerm=True,
                pull=False, nocache=self.force, decode=True)
            for chunk in stream:
                if "stream" in chunk:
                    log.write(chunk["stream"])
                    m = re.match(r"Successfully built ([0-9a-f]+)", chunk["stream"])
                    if m and image_id is None:
                        image_id = m.group(1)
                if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                if "error" in chunk:
                    error = str(chunk["error"]).strip()
                    log.write(f"ERROR: {error}\n")
        if error or image_id is None:
            what = tag or "an image"
            raise PrerequisiteError(f"building {what} failed: "
                                    f"{(error or 'no image id').splitlines()[-1][:300]} "
                                    f"(log: {log_path})")
        return self.client.images.get(image_id).id

    def probe_version(self, role: str, image_id: str) -> str | None:
        argv = {"haproxy": ["haproxy", "-v"], "prometheus": ["/bin/prometheus", "--version"]}
        return parse_version(role, _run_once(self.client, image_id, argv[role]))

    def remove_builder_stage(self) -> None:
        """The classic builder keeps the builder stage's ~700 MB image; it is no use to us."""
        for _ in range(3):  # a child must go before its parent
            left = self.client.images.list(
                all=True, filters={"label": f"{BUILDER_STAGE_LABEL}=prometheus-builder"})
            if not left:
                return
            for image in left:
                _remove_quietly(self.client, image.id)

    def cleanup_replaced(self) -> None:
        # Newest first: an old app image is a child of an old base image.
        for image_id in reversed(self.replaced):
            image = _get_image(self.client, image_id)
            if image is None or image.tags:  # gone, or still someone's tag
                continue
            if (image.attrs.get("Config", {}).get("Labels") or {}).get("harness.managed"):
                _remove_quietly(self.client, image_id)
        # Old images a container still used at the last build: untagged, ours, free now?
        for image in self.client.images.list(
                filters={"dangling": True, "label": f"{RUN_LABEL}={IMAGES_RUN_ID}"}):
            _remove_quietly(self.client, image.id)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "?"
    return lines[-1][:300] if lines else "?"


def _run_once(client: Any, image: str, argv: list[str]) -> str:
    """Run ``argv`` in a throwaway container (no network) and return its output."""
    container = client.containers.create(image, entrypoint=argv[:1], command=argv[1:],
                                         labels=labels_for(IMAGES_RUN_ID),
                                         network_mode="none")
    try:
        container.start()
        container.wait(timeout=120)
        return container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)


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
    parser = argparse.ArgumentParser(prog="python -m harness.deploy.images",
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
