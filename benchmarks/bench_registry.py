"""Push and pull times through the local registry (figures, not pass/fail).

Starts Debian's docker-registry on a free 127.0.0.1 port (its own storage folder), pushes
the four images into it (empty registry: every layer is uploaded), then measures a cold
pull: every tag of the four images is removed so the engine deletes them (the base goes
once its last child is gone), each image is pulled by its registry name, and the local
tags are put back on the pulled images (same ids: the content survived). The registry
is removed at the end.

    .venv/bin/python benchmarks/bench_registry.py
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from harness.platform import docker_client
from harness.platforms.docker import local_registry
from harness.platforms.docker.images import DEFAULT_REFS, ROLES, build_images
from harness.platforms.docker.registry_images import pull, push_images, registry_refs
from harness.platforms.local.local_procs import free_port


def _untag_all(client: Any, image_id: str) -> None:
    import docker.errors

    attrs = client.images.get(image_id).attrs
    for ref in attrs.get("RepoTags") or []:
        try:
            client.images.remove(ref)
        except docker.errors.APIError as e:
            print(f"  {ref}: {e}", file=sys.stderr)


def main() -> int:
    client = docker_client(timeout_s=600)
    build_images(client=client, progress=print, report_cached=False)
    port = free_port()
    status = local_registry.up(port)
    prefix = f"127.0.0.1:{port}/harness"
    ids = {role: client.images.get(ref).id for role, ref in DEFAULT_REFS.items()}
    out: dict[str, Any] = {"registry": prefix}
    try:
        t0 = time.monotonic()
        pushed = push_images(prefix, client, progress=print)
        out["push_total_s"] = round(time.monotonic() - t0, 2)
        out["push_s"] = {p.role: p.seconds for p in pushed}
        out["registry_bytes"] = local_registry.status(port).size_bytes
        # children first, the base last: then the engine can delete every image
        for role in ("app", "haproxy", "prometheus", "base"):
            _untag_all(client, ids[role])
        left = [r for r in ROLES if any(i.id == ids[r] for i in client.images.list(all=True))]
        out["still_local_after_untag"] = left
        out["pull_s"] = {}
        t0 = time.monotonic()
        for role in ROLES:
            out["pull_s"][role] = round(pull(client, registry_refs(prefix)[role]), 2)
        out["pull_total_s"] = round(time.monotonic() - t0, 2)
        out["same_ids"] = all(client.images.get(registry_refs(prefix)[r]).id == ids[r]
                              for r in ROLES)
    finally:
        for role in ROLES:
            ref = registry_refs(prefix)[role]
            try:
                image = client.images.get(ref)
            except Exception:
                pull(client, ref)
                image = client.images.get(ref)
            repo, tag = DEFAULT_REFS[role].split(":")
            image.tag(repo, tag)
            for t in client.images.get(image.id).attrs.get("RepoTags") or []:
                if t.startswith(prefix):
                    client.images.remove(t, noprune=True)
        local_registry.down(port)
    print(json.dumps(out, indent=1))
    print(f"registry was {status.address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
