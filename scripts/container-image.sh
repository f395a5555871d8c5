#!/usr/bin/env bash
# Build the project's image with podman from the local Debian base
# (scripts/container-base.sh), on a machine where no registry is reachable:
#   scripts/container-image.sh [TAG]        (default telegen:latest)
# apt reaches Debian's mirror through the host's network and apt configuration;
# pip gets the host's CA bundle (for a TLS-intercepting proxy). podman's layer
# cache keeps the packages and the Python dependencies: after a code change a
# rebuild takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-telegen:latest}
BASE=${TELEGEN_BASE_IMAGE:-localhost/debian:12}
CA=/etc/ssl/certs/ca-certificates.crt

bash scripts/container-base.sh
lend_ca=()
[ -f "$CA" ] && lend_ca=(--volume "$CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
previous=$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
# runc + cgroupfs and explicit ulimits: shared/MACHINE.md, "Real containers"
podman --runtime runc --cgroup-manager cgroupfs build \
  --network=host --volume /etc/apt:/etc/apt:ro "${lend_ca[@]}" \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  --build-arg "BASE=$BASE" -t "$TAG" -f Dockerfile .
# the image this build replaced, left untagged (kept while a container uses it)
now=$(podman image inspect --format '{{.Id}}' "$TAG")
if [ -n "$previous" ] && [ "$previous" != "$now" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi
