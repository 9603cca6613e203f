"""The harness's images through a registry: names, push, pull, digests.

`harness images push REGISTRY[/PREFIX]` tags every image a Docker run uses (base, app,
haproxy, prometheus: see images.py) as `REGISTRY[/PREFIX]/<repo>:<hash12>` and `:latest`,
where `<hash12>` is the first 12 hex digits of the image's content-hash label
(`harness.hash`), and pushes both tags. With `--registry REGISTRY[/PREFIX]` on `harness run`
(or the scenario key `images.registry`), the Docker deployers run those names instead of
the local ones: manual and compose pull them first, as a person on a fresh machine
would; Swarm gets `name:latest@sha256:<digest>` and its engine pulls by name, as every
node of a real swarm does.

Only the harness's own images are renamed: an app image the scenario names itself (and
HARNESS_*_IMAGE overrides) is run as given.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.errors import DeployError, PrerequisiteError, UsageError
from harness.platforms.docker.images import DEFAULT_REFS, HASH_LABEL, ROLES, image_ref

Progress = Callable[[str], None]

# Docker's reference grammar, narrowed: a host (with a '.' or ':' or "localhost", so it
# cannot be read as a Docker Hub user) and optional lower-case path components.
_HOST = r"(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9a-fA-F:]+\]|[A-Za-z0-9-]+)"
_PORT = r"(?::[0-9]{1,5})"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REGISTRY_PATTERN = re.compile(rf"^{_HOST}{_PORT}?(?:/{_COMPONENT})*$")


def check_registry(text: str) -> str:
    """`REGISTRY[/PREFIX]` as given, or ValueError saying what is wrong (pure)."""
    value = text.strip().rstrip("/")
    if not value or len(value) > 200 or not REGISTRY_PATTERN.match(value):
        raise ValueError(f"{text!r} is not REGISTRY[/PREFIX] (e.g. 127.0.0.1:5000 or "
                         "127.0.0.1:5000/harness)")
    host = value.split("/", 1)[0]
    if ":" not in host and "." not in host and host != "localhost":
        raise ValueError(f"{text!r}: the registry host needs a port or a dot "
                         "(else Docker reads it as a Docker Hub user)")
    return value


def repository(local_ref: str) -> str:
    """`harness-app:latest` → `harness-app` (the last path component, tag dropped)."""
    name = local_ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def registry_name(registry: str, local_ref: str) -> str:
    return f"{registry}/{repository(local_ref)}"


def registry_refs(registry: str) -> dict[str, str]:
    """role → `REGISTRY[/PREFIX]/<repo>:latest` for the harness's own images."""
    return {role: f"{registry_name(registry, ref)}:latest" for role, ref in DEFAULT_REFS.items()}


def run_ref(role: str, registry: str | None, given: str | None = None) -> str:
    """The reference a deployer runs for a role: the registry's name for our own image,
    anything else (a user's image, an override) unchanged."""
    ref = given or image_ref(role)
    if registry and ref == DEFAULT_REFS[role]:
        return registry_refs(registry)[role]
    return ref


def pinned(ref: str, digest: str) -> str:
    """`name:tag@sha256:…` (a tag for people, the digest for the engine)."""
    return f"{ref.split('@', 1)[0]}@{digest}"


@dataclass(frozen=True)
class PushResult:
    role: str
    local_ref: str
    tags: tuple[str, ...]
    digest: str
    seconds: float
    size_bytes: int

    def line(self) -> str:
        return (f"{self.role:<10} {self.tags[0]} (+ :latest) {self.digest[:19]}… "
                f"{self.size_bytes / 1e6:.0f} MB in {self.seconds:.1f} s")


def _stream_errors(stream: Any) -> tuple[str | None, str | None]:
    """(error, digest) from a push/pull JSON stream."""
    error = digest = None
    for chunk in stream:
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            error = str(chunk["error"]).strip()
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = str(aux["Digest"])
    return error, digest


def push_images(registry: str, client: Any, progress: Progress = print) -> list[PushResult]:
    """Tag and push the four images; PrerequisiteError when one is missing or refused."""
    import docker.errors

    registry = check_registry(registry)
    results = []
    for role in ROLES:
        local = image_ref(role)
        try:
            image = client.images.get(local)
        except docker.errors.ImageNotFound:
            raise PrerequisiteError(f"missing image {local}: run `harness images build`"
                                    ) from None
        labels = image.attrs.get("Config", {}).get("Labels") or {}
        content = str(labels.get(HASH_LABEL) or image.id.removeprefix("sha256:"))
        name = registry_name(registry, local)
        tags = (content[:12], "latest")
        t0 = time.monotonic()
        digest = ""
        for tag in tags:
            image.tag(name, tag)
            try:
                error, got = _stream_errors(client.api.push(name, tag=tag, stream=True,
                                                            decode=True))
            except docker.errors.APIError as e:
                error, got = str(e), None
            if error:
                raise PrerequisiteError(f"pushing {name}:{tag} failed: {error[:300]}")
            digest = got or digest
        res = PushResult(role, local, tuple(f"{name}:{t}" for t in tags), digest,
                         round(time.monotonic() - t0, 2), int(image.attrs.get("Size", 0)))
        progress(res.line())
        results.append(res)
    return results


def registry_digest(client: Any, ref: str) -> str:
    """The manifest digest the registry holds for `ref` (asks the registry, not the
    local store)."""
    import docker.errors

    try:
        return str(client.images.get_registry_data(ref).id)
    except docker.errors.APIError as e:
        raise DeployError(f"the registry does not answer for {ref}: {e}") from None


def pull(client: Any, ref: str) -> float:
    """Pull `ref` (name:tag or name@digest); seconds taken. DeployError when refused."""
    import docker.errors

    name, _, tag = ref.rpartition(":") if "@" not in ref else (ref, "", "")
    if "/" in tag or not name:  # no tag: the colon was the registry's port
        name, tag = ref, "latest"
    t0 = time.monotonic()
    try:
        if "@" in ref:
            error, _ = _stream_errors(client.api.pull(ref, stream=True, decode=True))
        else:
            error, _ = _stream_errors(client.api.pull(name, tag=tag, stream=True,
                                                      decode=True))
    except docker.errors.APIError as e:
        error = str(e)
    if error:
        raise DeployError(f"pulling {ref} failed: {error[:300]}")
    return time.monotonic() - t0


def parse_push_target(text: str) -> str:
    try:
        return check_registry(text)
    except ValueError as e:
        raise UsageError(str(e)) from None
