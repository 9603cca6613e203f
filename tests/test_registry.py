"""Images through a real registry (Debian's docker-registry on 127.0.0.1).

The pure parts are table tests. The Docker test builds (cached), pushes the four images,
removes every local tag of the app, HAProxy and Prometheus images (so the engine has no
image under those names any more), deploys all three strategies from the registry (Swarm
first, so its engine is the one that pulls the app image, by name and digest), then puts
the local tags back from the pulled images (same ids: content survives the round trip)
and removes the registry with `harness clean --volumes`' own function.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from harness.platforms.docker import local_registry
from harness.platforms.docker.images import DEFAULT_REFS, ROLES
from harness.platforms.docker.registry_images import (
    check_registry,
    pinned,
    registry_refs,
    repository,
    run_ref,
)
from harness.platforms.local.local_procs import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("text", "ok"), [
    ("127.0.0.1:5000", "127.0.0.1:5000"),
    ("127.0.0.1:5000/harness", "127.0.0.1:5000/harness"),
    ("127.0.0.1:5000/a/b-c/", "127.0.0.1:5000/a/b-c"),
    ("localhost/x", "localhost/x"),
    ("registry.example.org/team", "registry.example.org/team"),
    ("harness", None),  # a Docker Hub user, not a registry
    ("127.0.0.1:5000/Upper", None),
    ("127.0.0.1:5000//x", None),
    ("127.0.0.1:5000/x y", None),
    ("", None),
    ("http://127.0.0.1:5000", None),
])
def test_check_registry(text: str, ok: str | None) -> None:
    if ok is None:
        with pytest.raises(ValueError):
            check_registry(text)
    else:
        assert check_registry(text) == ok


def test_names() -> None:
    assert repository("harness-app:latest") == "harness-app"
    assert repository("127.0.0.1:5000/x/harness-app:abc@sha256:00") == "harness-app"
    refs = registry_refs("127.0.0.1:5000/h")
    assert refs["app"] == "127.0.0.1:5000/h/harness-app:latest"
    assert refs["base"] == "127.0.0.1:5000/h/harness-base:latest"
    assert set(refs) == set(ROLES)
    # only our own images are renamed; a user's image is run as given
    assert run_ref("app", "127.0.0.1:5000", "harness-app:latest") == \
        "127.0.0.1:5000/harness-app:latest"
    assert run_ref("app", "127.0.0.1:5000", "example/app:1") == "example/app:1"
    assert run_ref("app", None, "harness-app:latest") == "harness-app:latest"
    assert pinned("r:5/a:latest", "sha256:ab") == "r:5/a:latest@sha256:ab"


def test_registry_config_listens_on_loopback_only(tmp_path: Path) -> None:
    import yaml

    cfg = yaml.safe_load(local_registry.render_config(5123, tmp_path / "data"))
    assert cfg["http"]["addr"] == "127.0.0.1:5123"
    assert cfg["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")


def test_registry_script_up_status_down() -> None:
    """scripts/registry.sh against the real docker-registry: up, status, down, nothing
    left (storage folder, process)."""
    port = free_port()
    folder = local_registry.ROOT / str(port)
    script = str(ROOT / "scripts" / "registry.sh")
    try:
        r = subprocess.run([script, "up", "--port", str(port)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert f"127.0.0.1:{port}: up" in r.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=5) as resp:
            assert resp.status == 200
        marker = json.loads((folder / local_registry.MARKER).read_text())
        assert marker["labels"]["harness.managed"] == "true"
        pid = marker["pid"]
        # idempotent: a second `up` keeps the same process
        r = subprocess.run([script, "up", "--port", str(port)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and f"pid {pid}" in r.stdout
        # bound to loopback only: ss shows 127.0.0.1:port, never 0.0.0.0 / [::]
        ss = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
        listening = [ln.split()[3] for ln in ss.splitlines() if ln.split()[3].endswith(
            f":{port}")]
        assert listening == [f"127.0.0.1:{port}"], listening
    finally:
        r = subprocess.run([script, "down", "--port", str(port)], capture_output=True,
                           text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not folder.exists()
    # the last registry takes the shared parent folder with it
    assert not local_registry.ROOT.exists() or any(local_registry.ROOT.iterdir())
    assert not Path(f"/proc/{pid}").exists() or b"docker-registry" not in Path(
        f"/proc/{pid}/cmdline").read_bytes()
    r = subprocess.run([script, "status", "--port", str(port)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "down" in r.stdout


# ── the Docker round trip ─────────────────────────────────────────────────────────────


def _tags_in_registry(port: int, repo: str) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/{repo}/tags/list",
                                timeout=10) as resp:
        return set(json.loads(resp.read())["tags"] or [])


def _served(lb_url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(lb_url + "/work", timeout=5) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def _remove_tag(client: Any, ref: str) -> None:
    import docker.errors

    try:
        # force: only the name goes (noprune keeps the layers); a container of some other
        # run on this machine may still use the image, which must not stop the test
        client.images.remove(ref, force=True, noprune=True)
    except docker.errors.ImageNotFound:
        pass


def _restore(client: Any, ids: dict[str, str], prefix: str) -> None:
    """Put each local default tag back on its (pulled or kept) image; drop the
    registry-named tags. Pulls what a failed test left missing."""
    import docker.errors

    from harness.platforms.docker.registry_images import pull

    for role, image_id in ids.items():
        try:
            image = client.images.get(image_id)
        except docker.errors.ImageNotFound:
            pull(client, registry_refs(prefix)[role])
            image = client.images.get(registry_refs(prefix)[role])
        repo, tag = DEFAULT_REFS[role].split(":")
        image.tag(repo, tag)
        attrs = client.images.get(image.id).attrs
        # tags, and the digest references a pull by digest leaves (Swarm's)
        for ref in [*(attrs.get("RepoTags") or []), *(attrs.get("RepoDigests") or [])]:
            if ref.startswith(prefix.split("/")[0] + "/"):
                _remove_tag(client, ref)


@pytest.mark.docker
@pytest.mark.slow
def test_push_remove_local_tags_and_deploy_every_strategy_from_the_registry(
        docker_client: Any, new_run_id: Any, tmp_path: Path) -> None:
    import docker.errors

    from harness.cleanup import sweep_volumes
    from harness.clock import RealClock
    from harness.deploy.base import AppSpec, DeploySpec
    from harness.deploy.registry import create
    from harness.platforms.docker.cleanup import leftovers
    from harness.platforms.docker.images import build_images
    from harness.platforms.docker.registry_images import push_images

    build_images(client=docker_client, progress=print, report_cached=False)
    reg_root = tmp_path / "registries"
    port = free_port()
    st = local_registry.up(port, root=reg_root)
    assert st.answers
    prefix = f"127.0.0.1:{port}/harness"
    ids = {role: docker_client.images.get(ref).id for role, ref in DEFAULT_REFS.items()}
    times: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        pushed = push_images(prefix, docker_client, progress=print)
        times["push_all_s"] = round(time.monotonic() - t0, 1)
        times["push_s"] = {p.role: p.seconds for p in pushed}
        assert [p.role for p in pushed] == list(ROLES)
        for p in pushed:
            labels = docker_client.images.get(ids[p.role]).attrs["Config"]["Labels"]
            hash12 = labels["harness.hash"][:12]
            repo = f"harness/{repository(p.local_ref)}"
            assert _tags_in_registry(port, repo) == {hash12, "latest"}
            assert p.digest.startswith("sha256:")

        # every name the deployers could use is gone from the local engine
        for role in ROLES:
            for t in docker_client.images.get(ids[role]).tags:
                if role == "base" and t == DEFAULT_REFS["base"]:
                    continue  # the others' parent: untagging it frees nothing
                _remove_tag(docker_client, t)
        for role in ("app", "haproxy", "prometheus"):
            for ref in (DEFAULT_REFS[role], registry_refs(prefix)[role]):
                with pytest.raises(docker.errors.ImageNotFound):
                    docker_client.images.get(ref)

        clock = RealClock()
        for kind in ("orchestrated", "manual", "compose"):
            run_id = new_run_id(f"reg{kind[:3]}")
            spec = DeploySpec(run_id=run_id, trial_id=f"{kind}-1", replicas=2,
                              app=AppSpec(env={"WORKERS": "4", "SERVICE_MS": "2",
                                               "STARTUP_S": "0"}))
            d = create("docker", kind, client=docker_client, spec=spec,
                       on_event=lambda e: None, clock=clock, restart_delay_s=1.0,
                       registry=prefix)
            try:
                t0 = time.monotonic()
                d.deploy()
                d.wait_ready(2, 90)
                times[f"{kind}_deploy_to_ready_s"] = round(time.monotonic() - t0, 1)
                times[f"{kind}_pull_s"] = dict(d.pull_s)  # type: ignore[attr-defined]
                assert d.spec.app.image == registry_refs(prefix)["app"]  # type: ignore
                # HAProxy routes once its own checks pass (a few seconds on a busy host)
                assert _served(d.lb_url(), timeout_s=60), "the LB never served /work"
                if kind == "orchestrated":
                    svc = docker_client.services.get(d.service_name)  # type: ignore
                    image = svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
                    assert image.startswith(registry_refs(prefix)["app"] + "@sha256:")
                    # the harness did not pull the app image: Swarm's engine did
                    assert registry_refs(prefix)["app"] not in d.pull_s  # type: ignore
                    pulled = docker_client.images.get(image.split(":latest@")[0] + "@"
                                                      + image.split("@")[1])
                    assert pulled.id == ids["app"]
                else:
                    assert registry_refs(prefix)["app"] in d.pull_s  # type: ignore
                for role in ("haproxy", "prometheus"):
                    assert docker_client.images.get(registry_refs(prefix)[role]).id == \
                        ids[role]
            finally:
                d.teardown()
            assert leftovers(docker_client, run_id) == []
    finally:
        _restore(docker_client, ids, prefix)
        lines = sweep_volumes(tmp_path / "no-results", registry_root=reg_root)
        print("\n".join(lines))
        print("registry figures:", json.dumps(times))
        art = ROOT / "test-artifacts"
        art.mkdir(exist_ok=True)
        (art / "registry_times.json").write_text(json.dumps(times, indent=1))
    for role, ref in DEFAULT_REFS.items():
        assert docker_client.images.get(ref).id == ids[role]
        attrs = docker_client.images.get(ref).attrs
        assert not [t for t in [*attrs["RepoTags"], *(attrs.get("RepoDigests") or [])]
                    if t.startswith(prefix)]
    assert not (reg_root / str(port)).exists()
    assert not local_registry.status(port, reg_root).answers


def test_bad_registry_names_exit_2_before_anything(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    assert main(["images", "push", "harness"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("REGISTRY[/PREFIX]" in err[0] or "Docker Hub" in err[0])
    sc = tmp_path / "bad.yaml"
    sc.write_text("name: bad\nimages:\n  registry: 'Not A Registry'\nload:\n  stages:\n"
                  "    - {duration_s: 5, rps: 10}\nstrategies:\n"
                  "  - {name: m, kind: manual, replicas: 1}\n"
                  f"output: {tmp_path / 'results'}\n")
    assert main(["run", str(sc), "--platform", "sim"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml:3" in err[0] and "images.registry" in err[0], err
    assert not (tmp_path / "results").exists()
    good = tmp_path / "good.yaml"
    good.write_text(sc.read_text().replace("'Not A Registry'", "127.0.0.1:5000"))
    # a registry is for the docker platform only
    assert main(["run", str(good), "--platform", "sim"]) == 2
    assert "docker platform" in capsys.readouterr().err
    assert main(["run", str(good), "--platform", "sim", "--keep-metrics"]) == 2
    assert not (tmp_path / "results").exists()
