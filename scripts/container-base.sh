#!/usr/bin/env bash
# The local base image for containers on a machine without a registry:
# Debian 12 (bookworm) from Debian's mirror through debootstrap, imported into
# podman as localhost/debian:12. Idempotent: the rootfs is cached outside the
# repository (TELEGEN_ROOTFS_CACHE, default /var/cache/telegen-test/debian-12-rootfs,
# apart from the agent's own /var/cache/telegen) and the image is imported
# only when podman does not have it. Needs root.
set -euo pipefail

IMAGE=${TELEGEN_BASE_IMAGE:-localhost/debian:12}
CACHE=${TELEGEN_ROOTFS_CACHE:-/var/cache/telegen-test/debian-12-rootfs}
SUITE=bookworm

log() { printf 'container-base: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "not root: skipping (podman's rootful storage and debootstrap need root)"
  exit 0
fi
for tool in podman debootstrap; do
  command -v "$tool" >/dev/null || { log "$tool is not installed (scripts/setup-host.sh)"; exit 1; }
done

if podman image exists "$IMAGE"; then
  exit 0
fi

# A finished rootfs has the marker; a half-built one (interrupted run) is redone.
if [ ! -e "$CACHE/.telegen-complete" ]; then
  start=$(date +%s)
  rm -rf "$CACHE.partial"
  mkdir -p "$(dirname "$CACHE")"
  log "debootstrap --variant=minbase $SUITE into $CACHE (a few minutes, once)"
  debootstrap --variant=minbase "$SUITE" "$CACHE.partial" >&2
  # apt in a container reaches the mirror through the host's /etc/apt, mounted
  # read-only at run or build time; the image keeps no package lists.
  rm -rf "$CACHE.partial"/var/lib/apt/lists/* "$CACHE.partial"/var/cache/apt/archives/*.deb
  rm -rf "$CACHE"
  mv "$CACHE.partial" "$CACHE"
  touch "$CACHE/.telegen-complete"
  log "rootfs built in $(( $(date +%s) - start )) s"
fi

log "importing $CACHE as $IMAGE"
tar -C "$CACHE" --exclude=./.telegen-complete -c . \
  | podman import --quiet --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
log "imported $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes)"
