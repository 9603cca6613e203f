"""Building the images (harness/platforms/docker/images.py says which and why): the host wheelhouse,
debootstrap + ``docker import`` for the base, ``docker build`` of the others from their
contexts, labels, the build lock and cleanup of replaced images."""


import contextlib
import fcntl
import importlib.metadata
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.deploy.base import RUN_LABEL, labels_for
from harness.errors import PrerequisiteError
from harness.platforms.docker.image_recipe import (
    _ROOTFS_PRUNE,
    APP_REQUIREMENTS,
    BUILD_TIMEOUT_S,
    BUILDER_STAGE_LABEL,
    DEBOOTSTRAP_TIMEOUT_S,
    DEFAULT_REFS,
    HASH_LABEL,
    IMAGE_LABEL,
    IMAGES_RUN_ID,
    OVERRIDE_VARS,
    ROLES,
    VERSION_LABEL,
    WHEELHOUSE,
    WORK_DIR,
    BaseRecipe,
    BuiltImage,
    Progress,
    context_hash,
    context_tar,
    host_base_recipe,
    image_refs,
    parse_version,
    wheel_prefix,
)


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
