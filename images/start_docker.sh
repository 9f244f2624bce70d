#!/usr/bin/env bash
# Make a Docker engine reachable: nothing to do when `docker info` answers; otherwise install Debian's
# docker.io if dockerd is missing and start dockerd as root in the background. Idempotent (CI calls it).
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
START_TIMEOUT_S="${DOCKERD_START_TIMEOUT_S:-60}"

if docker info >/dev/null 2>&1; then
    echo "docker engine already reachable"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "start_docker.sh: no Docker engine reachable and not root: cannot install or start dockerd" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! pgrep -x dockerd >/dev/null; then
    nohup dockerd >"$DOCKERD_LOG" 2>&1 &
fi
for _ in $(seq "$START_TIMEOUT_S"); do
    if docker info >/dev/null 2>&1; then
        echo "docker engine started (log: $DOCKERD_LOG)"
        exit 0
    fi
    sleep 1
done
echo "start_docker.sh: dockerd did not answer within ${START_TIMEOUT_S}s; last lines of $DOCKERD_LOG:" >&2
tail -n 20 "$DOCKERD_LOG" >&2
exit 1
