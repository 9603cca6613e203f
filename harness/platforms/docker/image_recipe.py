"""What an image is made of, as data: the base recipe (debootstrap from the host's Debian
mirror), build contexts as reproducible tars, and the content hashes that decide whether an
image is current. Pure apart from reading files; harness/platforms/docker/image_build.py builds,
harness/platforms/docker/images.py is the command and what deployers ask."""


import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the source checkout, when run from one
# build contexts ship inside the package, so an installed harness builds the same images
DOCKER_DIR = Path(__file__).resolve().parents[2] / "assets" / "docker"


def _sample_app_dir() -> Path:
    """The sample app's package folder (installed next to harness, or in the checkout)."""
    spec = importlib.util.find_spec("sample_app")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return ROOT / "sample_app"


def _cache_dir() -> Path:
    """Wheelhouse and build logs: the checkout's .cache (scripts/setup.sh), else the
    user's cache folder (an installed harness must not write into site-packages)."""
    if env := os.environ.get("HARNESS_CACHE_DIR"):
        return Path(env)
    if (ROOT / "pyproject.toml").is_file():
        return ROOT / ".cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "harness"


SAMPLE_APP_DIR = _sample_app_dir()
CACHE_DIR = _cache_dir()
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
