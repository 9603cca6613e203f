#!/usr/bin/env bash
# The local image registry for tests and `harness images push` (Debian's docker-registry,
# installed by scripts/setup.sh), on 127.0.0.1 only:
#
#   scripts/registry.sh up [--port 5000]     start it (idempotent)
#   scripts/registry.sh status [--port 5000]
#   scripts/registry.sh down [--port 5000]   stop it and remove its storage
#
# Storage: /var/tmp/harness-registry/<port>/ (removed by `harness clean --volumes` too).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/python ]] || { echo "registry.sh: run scripts/setup.sh first" >&2; exit 2; }
exec .venv/bin/python -m harness.cli registry "$@"
