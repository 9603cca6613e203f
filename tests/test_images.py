"""Images built without a registry (harness/platforms/docker/images.py).

Pure parts (apt sources, context hashing, version parsing, overrides) run everywhere; the
rest builds (or finds current) the real images and runs real containers, which carry
this module's own run id and are removed afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness.deploy.base import MANAGED_LABEL, RUN_LABEL, labels_for
from harness.errors import PrerequisiteError
from harness.platforms.docker import images

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------- pure parts

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


@pytest.mark.parametrize(("text", "expected"), [
    (DEB822, ("http://mirror.example/debian", "http://mirror.example/debian-security")),
    ("deb [signed-by=/k.gpg] http://one.example/debian/ bookworm main\n"
     "# deb http://commented.example/debian bookworm main\n"
     "deb http://one.example/debian-security bookworm-security main\n",
     ("http://one.example/debian", "http://one.example/debian-security")),
    ("deb http://stable.example/debian stable main\n",  # suite named by alias
     ("http://stable.example/debian", None)),
    ("Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n",
     (images.FALLBACK_MIRROR, None)),
    ("", (images.FALLBACK_MIRROR, None)),
], ids=["deb822-with-security", "one-line-with-options", "alias-suite", "disabled", "none"])
def test_debian_mirrors_from_apt_sources(text: str, expected: tuple[str, str | None]) -> None:
    assert images.debian_mirrors(images.parse_apt_sources(text)) == expected


def test_base_recipe_hash_follows_what_goes_into_the_image() -> None:
    a = images.BaseRecipe(mirror="http://m/debian", security_mirror="http://m/sec")
    assert a.hash() == images.BaseRecipe(mirror="http://m/debian",
                                         security_mirror="http://m/sec").hash()
    assert a.hash() != images.BaseRecipe(mirror="http://m/debian").hash()  # sources.list
    assert a.hash() != images.BaseRecipe(mirror="http://m/debian", security_mirror="http://m/sec",
                                         includes=("python3",)).hash()
    args = a.debootstrap_args(Path("/x"))
    assert args == ["debootstrap", "--variant=minbase", "--include=python3,ca-certificates",
                    "bookworm", "/x", "http://m/debian"]
    assert "deb http://m/sec bookworm-security main" in a.sources_list()


def test_context_hash_is_deterministic_and_covers_every_input() -> None:
    files = {"Dockerfile": (b"FROM x\n", 0o644), "sample_app/a.py": (b"print(1)\n", 0o644)}
    t1, t2 = images.context_tar(files), images.context_tar(dict(reversed(files.items())))
    assert t1 == t2  # order and time of the call do not matter
    h = images.context_hash(t1, {"BASE": "b"}, "sha256:parent")
    changed_file = {**files, "sample_app/a.py": (b"print(2)\n", 0o644)}
    changed_mode = {**files, "sample_app/a.py": (b"print(1)\n", 0o755)}
    assert images.context_hash(images.context_tar(changed_file), {"BASE": "b"},
                               "sha256:parent") != h
    assert images.context_hash(images.context_tar(changed_mode), {"BASE": "b"},
                               "sha256:parent") != h
    assert images.context_hash(t1, {"BASE": "c"}, "sha256:parent") != h
    assert images.context_hash(t1, {"BASE": "b"}, "sha256:other") != h  # base rebuilt


def test_app_context_changes_with_the_sample_app(tmp_path: Path) -> None:
    """The app image's hash label covers sample_app/: an edit means a rebuild."""
    app = tmp_path / "sample_app"
    shutil.copytree(ROOT / "sample_app", app,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    before = images.context_tar(images.dir_files(app, "sample_app/"))
    (app / "__pycache__").mkdir(exist_ok=True)
    (app / "__pycache__" / "junk.cpython-311.pyc").write_bytes(b"\0")  # ignored
    assert images.context_tar(images.dir_files(app, "sample_app/")) == before
    (app / "__main__.py").write_text((app / "__main__.py").read_text() + "\n# edit\n")
    assert images.context_tar(images.dir_files(app, "sample_app/")) != before


@pytest.mark.parametrize(("role", "output", "version"), [
    ("haproxy", "HAProxy version 2.6.12-1+deb12u4 2025/04/22 - https://haproxy.org/\n",
     "2.6.12-1+deb12u4"),
    ("haproxy", "HA-Proxy version 2.0.33 2023/08/18\n", "2.0.33"),  # old spelling
    ("prometheus", "prometheus, version 2.42.0+ds (branch: debian/sid, revision: 2.42)\n",
     "2.42.0+ds"),
    ("prometheus", "exec format error\n", None),
], ids=["haproxy-2.6", "haproxy-old", "prometheus", "garbage"])
def test_parse_version(role: str, output: str, version: str | None) -> None:
    assert images.parse_version(role, output) == version


def test_overrides_replace_only_what_they_name() -> None:
    refs = images.image_refs({"HARNESS_HAPROXY_IMAGE": "haproxy:2.8",
                              "HARNESS_PROMETHEUS_IMAGE": " ", "PATH": "/bin"})
    assert refs == {**images.DEFAULT_REFS, "haproxy": "haproxy:2.8"}
    assert images.image_refs({}) == images.DEFAULT_REFS
    assert images.is_override("base", {"HARNESS_BASE_IMAGE": "python:3.11-slim"})


def test_wheel_prefix_escapes_the_distribution_name() -> None:
    assert images.wheel_prefix("prometheus-client", "0.26.0") == "prometheus_client-0.26.0-"


def test_no_engine_is_one_clear_prerequisite_error(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(PrerequisiteError, match="no Docker engine answers") as e:
        images.build_images(progress=lambda _m: None)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------- real images, Docker


@pytest.fixture(scope="module")
def client() -> Any:
    try:
        return images._docker_client(timeout_s=60)
    except PrerequisiteError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def built(client: Any) -> list[images.BuiltImage]:
    """Whatever a run would find: built now when missing or stale (cold: ~2 minutes)."""
    return images.build_images(progress=lambda _m: None, client=client, environ={})


@pytest.fixture
def run_id(client: Any) -> Iterator[str]:
    rid = f"test-images-{uuid.uuid4().hex[:8]}"
    yield rid
    for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={rid}"}):
        c.remove(force=True)


def _labels(client: Any, ref: str) -> dict[str, str]:
    return client.images.get(ref).attrs["Config"]["Labels"] or {}


@pytest.mark.docker
def test_every_image_exists_with_its_labels(client: Any, built: list[images.BuiltImage]) -> None:
    assert [b.role for b in built] == list(images.ROLES)
    for b in built:
        assert b.ref == images.DEFAULT_REFS[b.role]
        image = client.images.get(b.ref)
        assert image.id == b.image_id
        labels = _labels(client, b.ref)
        assert labels[MANAGED_LABEL] == "true"
        assert labels[RUN_LABEL] == images.IMAGES_RUN_ID
        assert labels[images.IMAGE_LABEL] == b.ref.split(":")[0]
        assert len(labels[images.HASH_LABEL]) == 64
    versions = {b.role: b.version for b in built}
    assert versions["haproxy"] and versions["haproxy"].startswith("2.")
    assert versions["prometheus"] and versions["prometheus"].startswith("2.")
    assert images.image_versions(client) == {"haproxy": versions["haproxy"],
                                             "prometheus": versions["prometheus"]}


@pytest.mark.docker
def test_a_second_build_is_a_cache_hit(client: Any, built: list[images.BuiltImage]) -> None:
    again = images.build_images(progress=lambda _m: None, client=client, environ={})
    assert [(b.role, b.action) for b in again] == [(r, "cached") for r in images.ROLES]
    assert [b.image_id for b in again] == [b.image_id for b in built]
    assert images.ensure_images(client) == {b.role: b.image_id for b in built}


@pytest.mark.docker
def test_cli_entry_point_lists_and_builds_warm(built: list[images.BuiltImage]) -> None:
    out = subprocess.run([sys.executable, "-m", "harness.platforms.docker.images", "list"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    for b in built:
        assert b.ref in out and b.image_id.removeprefix("sha256:")[:12] in out
    r = subprocess.run([sys.executable, "-m", "harness.platforms.docker.images", "build"],
                       capture_output=True, text=True, timeout=300, check=True)
    assert "0 built, 4 current" in r.stdout


@pytest.mark.docker
def test_debootstrap_missing_is_one_clear_error(client: Any, built: list[images.BuiltImage],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name, *a, **k: None if name == "debootstrap"
                        else real_which(name, *a, **k))
    with pytest.raises(PrerequisiteError, match="debootstrap is not installed"):
        images.build_images(force=True, progress=lambda _m: None, client=client, environ={})
    # nothing was replaced on the way
    assert client.images.get(images.DEFAULT_REFS["base"]).id == built[0].image_id


def _wait_http(url: str, deadline_s: float) -> requests.Response:
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200:
                return r
            last = RuntimeError(f"HTTP {r.status_code}")
        except requests.RequestException as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {deadline_s} s: {last}")


def _host_port(container: Any, port: str) -> int:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        container.reload()
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(port)
        if bindings:
            return int(bindings[0]["HostPort"])
        time.sleep(0.1)
    raise AssertionError(f"{port} was not published")


@pytest.mark.docker
def test_app_container_serves_and_stops_on_sigterm(client: Any,
                                                   built: list[images.BuiltImage],
                                                   run_id: str) -> None:
    c = client.containers.run(images.DEFAULT_REFS["app"], detach=True,
                              labels=labels_for(run_id),
                              ports={"8000/tcp": ("127.0.0.1", None)})
    port = _host_port(c, "8000/tcp")
    t0 = time.monotonic()
    _wait_http(f"http://127.0.0.1:{port}/readyz", deadline_s=20)
    ready_s = time.monotonic() - t0
    work = _wait_http(f"http://127.0.0.1:{port}/work", deadline_s=10)
    assert work.status_code == 200
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "# TYPE" in metrics  # prometheus_client from the wheelhouse is there and used

    t0 = time.monotonic()
    c.stop(timeout=10)  # SIGTERM, then SIGKILL after 10 s if it were ignored
    stop_s = time.monotonic() - t0
    c.reload()
    assert c.attrs["State"]["ExitCode"] != 137, "killed: SIGTERM was not handled"
    assert stop_s < 3, f"docker stop took {stop_s:.1f} s"
    assert c.attrs["Config"]["User"] == "nobody"
    print(f"app ready after {ready_s:.2f} s, stopped in {stop_s:.2f} s")


@pytest.mark.docker
def test_haproxy_image_runs_its_binary(client: Any, built: list[images.BuiltImage],
                                       run_id: str) -> None:
    ref = images.DEFAULT_REFS["haproxy"]
    out = client.containers.run(ref, entrypoint=["haproxy"], command=["-v"],
                                labels=labels_for(run_id), network_mode="none",
                                remove=True).decode()
    assert "HAProxy version" in out
    cfg = "/usr/local/etc/haproxy/haproxy.cfg"
    out = client.containers.run(ref, entrypoint=["haproxy"], command=["-c", "-f", cfg],
                                labels=labels_for(run_id), network_mode="none",
                                remove=True, stderr=True).decode()
    assert "valid" in out.lower()
    config = client.images.get(ref).attrs["Config"]
    assert config["Entrypoint"] == ["haproxy", "-W", "-db"]
    assert config["Cmd"] == ["-f", cfg]


@pytest.mark.docker
def test_prometheus_image_is_lean_and_serves(client: Any, built: list[images.BuiltImage],
                                             run_id: str) -> None:
    ref = images.DEFAULT_REFS["prometheus"]
    out = client.containers.run(ref, command=["--version"], labels=labels_for(run_id),
                                network_mode="none", remove=True, stderr=True).decode()
    assert "prometheus, version" in out
    size = client.images.get(ref).attrs["Size"]
    base = client.images.get(images.DEFAULT_REFS["base"]).attrs["Size"]
    assert size - base < 150e6, "more than the binary was copied"
    assert not client.images.list(all=True, filters={"label": "harness.stage"}), \
        "the builder stage was left behind"
    c = client.containers.run(ref, detach=True, labels=labels_for(run_id),
                              ports={"9090/tcp": ("127.0.0.1", None)})
    port = _host_port(c, "9090/tcp")
    _wait_http(f"http://127.0.0.1:{port}/-/ready", deadline_s=30)
    q = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"},
                     timeout=5).json()
    assert q["status"] == "success"
    c.stop(timeout=10)


@pytest.mark.docker
def test_an_override_is_used_as_is_and_a_missing_one_is_a_clear_error(
        client: Any, built: list[images.BuiltImage], run_id: str) -> None:
    haproxy = client.images.get(images.DEFAULT_REFS["haproxy"])
    alias = f"harness-test-override:{run_id}"  # stands in for haproxy:2.8 (no registry)
    haproxy.tag("harness-test-override", tag=run_id)
    try:
        env = {"HARNESS_HAPROXY_IMAGE": alias}
        got = {b.role: b for b in images.build_images(progress=lambda _m: None,
                                                      client=client, environ=env)}
        assert (got["haproxy"].ref, got["haproxy"].action) == (alias, "external")
        assert got["haproxy"].image_id == haproxy.id
        assert {r: got[r].action for r in ("base", "app", "prometheus")} == \
            dict.fromkeys(("base", "app", "prometheus"), "cached")
        assert images.image_versions(client, env)["haproxy"] == got["haproxy"].version
    finally:
        client.images.remove(alias)
    missing = {"HARNESS_PROMETHEUS_IMAGE": f"harness-test-missing/prom:{run_id}"}
    with pytest.raises(PrerequisiteError, match=r"HARNESS_PROMETHEUS_IMAGE=.*cannot pull") as e:
        images.build_images(progress=lambda _m: None, client=client, environ=missing)
    assert "\n" not in str(e.value)


def _app_container(client: Any, run_id: str, **env: object) -> tuple[Any, int]:
    c = client.containers.run(images.DEFAULT_REFS["app"], detach=True,
                              labels=labels_for(run_id),
                              environment={k: str(v) for k, v in env.items()},
                              ports={"8000/tcp": ("127.0.0.1", None)})
    port = _host_port(c, "8000/tcp")
    _wait_http(f"http://127.0.0.1:{port}/readyz", deadline_s=20)
    return c, port


@pytest.mark.docker
def test_capacity_model_holds_in_a_container(client: Any, built: list[images.BuiltImage],
                                             run_id: str) -> None:
    """The same capacity figures as the process tests, through the image: WORKERS=2,
    SERVICE_MS=100 → about 20 req/s with p50 about 100 ms; past the queue limit, 503 fast."""
    import http.client
    import threading
    from concurrent.futures import ThreadPoolExecutor

    c, port = _app_container(client, run_id, WORKERS=2, SERVICE_MS=100,
                             SERVICE_DIST="constant", QUEUE_LIMIT=50)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        alone = []
        for _ in range(6):
            t0 = time.monotonic()
            conn.request("GET", "/work")
            conn.getresponse().read()
            alone.append(time.monotonic() - t0)
        conn.close()
        p50 = sorted(alone)[len(alone) // 2]
        assert 0.095 <= p50 <= 0.2, p50
        done: list[float] = []
        lock = threading.Lock()
        stop = time.monotonic() + 4.0

        def client_loop() -> None:
            k = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while time.monotonic() < stop:
                k.request("GET", "/work")
                r = k.getresponse()
                r.read()
                assert r.status == 200
                with lock:
                    done.append(time.monotonic())
            k.close()

        threads = [threading.Thread(target=client_loop) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        # [stop-3, stop): skip the first second, and the requests still finishing after it
        window = [x for x in done if stop - 3.0 <= x < stop]
        rate = len(window) / 3.0
        print(f"container: p50 {p50 * 1000:.0f} ms, {rate:.1f} req/s")
        assert 17 <= rate <= 23, rate
    finally:
        c.remove(force=True)

    c, port = _app_container(client, run_id, WORKERS=1, SERVICE_MS=500,
                             SERVICE_DIST="constant", QUEUE_LIMIT=2)
    try:
        def one(_: int) -> tuple[int, float]:
            k = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            t0 = time.monotonic()
            k.request("GET", "/work")
            r = k.getresponse()
            r.read()
            k.close()
            return r.status, time.monotonic() - t0

        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(one, range(10)))
        ok = [t for s, t in results if s == 200]
        rejected = [t for s, t in results if s == 503]
        assert len(ok) == 3 and len(rejected) == 7, results
        assert max(rejected) < 0.3, results  # refused at once, not after waiting
    finally:
        c.remove(force=True)
