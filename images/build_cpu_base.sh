#!/usr/bin/env bash
# The CPU starting image for local and CI builds, made from Debian's packages (no registry pull):
# debootstrap --variant=minbase bookworm + python3 + python3-venv, then `docker import`.
# Idempotent: does nothing when the tag already exists. Needs root (debootstrap) and a Docker engine.
#   CPU_BASE_IMAGE  tag to create (default mangadistill-cpu-base:bookworm)
#   DEBIAN_MIRROR   Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

CPU_BASE_IMAGE="${CPU_BASE_IMAGE:-mangadistill-cpu-base:bookworm}"
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$CPU_BASE_IMAGE" >/dev/null 2>&1; then
    echo "$CPU_BASE_IMAGE already exists"
    exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

rootfs="$(mktemp -d /tmp/mangadistill-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR"
# package caches, apt lists, docs and man pages are not needed at run time
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*
tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $DEBIAN_SUITE + python3 python3-venv" \
    - "$CPU_BASE_IMAGE"
echo "created $CPU_BASE_IMAGE"
