#!/usr/bin/env bash
# One idempotent setup for a Debian 12 machine (run as root, or with sudo at hand), safe to
# run every session and in CI; a second run on a ready machine takes a few seconds.
#
#   1. system packages that are missing: haproxy, prometheus, debootstrap, docker-registry,
#      chromium, the Docker engine + docker-compose (only when no engine answers),
#      python3-venv
#   2. a Docker engine that answers (started in the background when none does: there is
#      no systemd on these machines)
#   3. .venv with `pip install -e '.[dev]'` (skipped while pyproject.toml is unchanged)
#   4. the images a Docker run needs (`python -m harness.platforms.docker.images build`, cached)
#
# Environment: HARNESS_SKIP_IMAGES=1 skips step 4; HARNESS_DOCKER_WAIT_S (default 60),
# HARNESS_DOCKERD_LOG (default /var/log/dockerd.log) for a dockerd this script starts.
set -euo pipefail
cd "$(dirname "$0")/.."

t_start=$SECONDS
say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "run as root (or install sudo)"
    SUDO=(sudo)
fi
as_root() { "${SUDO[@]}" "$@"; }

# ---------------------------------------------------------------- 1. system packages
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/sbin/$1" ]]; }
have haproxy || missing+=(haproxy)
have prometheus || missing+=(prometheus)
have debootstrap || missing+=(debootstrap)
# the local image registry (Docker Distribution 2.8) for `harness registry up`
have docker-registry || missing+=(docker-registry)
have chromium || have chromium-browser || missing+=(chromium)
# a static busybox: tests build a 2 MB image without python from it (tests/test_foreign_image.py)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
    missing+=(busybox-static)
engine_answers() { docker info >/dev/null 2>&1; }
if ! engine_answers; then
    have dockerd || missing+=(docker.io)
    have docker || missing+=(docker.io)
fi
if ! docker compose version >/dev/null 2>&1 && ! have docker-compose; then
    missing+=(docker-compose)
fi

# A Python 3.11+ that can make virtualenvs (Debian splits venv/ensurepip into python3-venv).
PYTHON=""
for c in python3 python3.13 python3.12 python3.11; do
    if command -v "$c" >/dev/null 2>&1 &&
        "$c" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
        PYTHON=$c
        break
    fi
done
if [[ ! -x .venv/bin/python ]]; then
    if [[ -z $PYTHON ]]; then
        missing+=(python3 python3-venv)
    elif ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        missing+=(python3-venv)
    fi
fi

if ((${#missing[@]})); then
    # de-duplicate, keep order
    readarray -t missing < <(printf '%s\n' "${missing[@]}" | awk '!seen[$0]++')
    say "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a
    # Package scripts must not start haproxy/prometheus/docker-registry as services (they
    # would hold ports the harness uses); policy-rc.d is Debian's switch for that. Ours only while
    # we install, and only when the machine has none of its own.
    policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    trap '[[ $policy_added == 1 ]] && as_root rm -f /usr/sbin/policy-rc.d' EXIT
    say "apt-get update"
    as_root apt-get update -qq
    # Recommends would add e.g. prometheus-node-exporter (another daemon); chromium keeps
    # its recommended fonts so screenshots have text.
    lean=()
    full=()
    for p in "${missing[@]}"; do
        if [[ $p == chromium ]]; then full+=("$p"); else lean+=("$p"); fi
    done
    if ((${#lean[@]})); then
        as_root apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
    fi
    if ((${#full[@]})); then
        as_root apt-get install -y -qq "${full[@]}" >/dev/null
    fi
    if [[ $policy_added == 1 ]]; then
        as_root rm -f /usr/sbin/policy-rc.d
        policy_added=0
    fi
    trap - EXIT
    # Belt and braces: a machine with its own policy could still have let a package start
    # its service; stop the ones we just installed.
    for svc in haproxy prometheus docker-registry; do
        if printf '%s\n' "${missing[@]}" | grep -qx "$svc" && [[ -x /etc/init.d/$svc ]] &&
            as_root /etc/init.d/"$svc" status >/dev/null 2>&1; then
            say "stopping the $svc service the package started"
            as_root /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
        fi
    done
else
    say "system packages: present"
fi

# Debian's default services listen on these ports; say so if something does (we did
# not start it, so we leave it alone).
if command -v ss >/dev/null 2>&1; then
    hogs=$(ss -Hltnp 2>/dev/null | grep -E ':(9090|9100) ' || true)
    [[ -z $hogs ]] || say "warning: ports 9090/9100 are in use (a packaged service?): $hogs"
fi

# ---------------------------------------------------------------- 2. Docker engine
if engine_answers; then
    say "docker engine: answers"
else
    wait_s=${HARNESS_DOCKER_WAIT_S:-60}
    dockerd_log=${HARNESS_DOCKERD_LOG:-/var/log/dockerd.log}
    if pgrep -x dockerd >/dev/null 2>&1; then
        say "dockerd is running but not answering yet; waiting up to ${wait_s}s"
    else
        say "starting dockerd in the background (log $dockerd_log)"
        # setsid + nohup: the engine must outlive this script (no systemd here).
        as_root sh -c 'setsid nohup dockerd >"$1" 2>&1 </dev/null &' sh "$dockerd_log"
    fi
    deadline=$((SECONDS + wait_s))
    until engine_answers; do
        ((SECONDS < deadline)) ||
            die "no Docker engine answered within ${wait_s}s (see $dockerd_log)"
        sleep 1
    done
    say "docker engine: answers after $((SECONDS - deadline + wait_s))s"
fi

# ---------------------------------------------------------------- 3. virtualenv
stamp=.venv/.harness-setup
want=$(sha256sum <pyproject.toml | cut -d' ' -f1)
if [[ ! -x .venv/bin/python ]]; then
    [[ -n $PYTHON ]] || PYTHON=python3
    say "creating .venv with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv .venv
fi
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]] ||
    ! .venv/bin/python -c 'import harness, sample_app' 2>/dev/null; then
    say "pip install -e '.[dev]' (pyproject.toml changed or package missing)"
    .venv/bin/python -m pip install -q -e '.[dev]'
    printf '%s\n' "$want" >"$stamp"
else
    say ".venv: up to date"
fi

# ---------------------------------------------------------------- 4. images
if [[ ${HARNESS_SKIP_IMAGES:-0} == 1 ]]; then
    say "images: skipped (HARNESS_SKIP_IMAGES=1)"
else
    .venv/bin/python -m harness.platforms.docker.images build
fi

say "done in $((SECONDS - t_start))s"
