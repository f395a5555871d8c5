#!/usr/bin/env bash
# Host prerequisites for telegen: Debian packages, kernel-header links for BCC,
# tracefs. Idempotent: every step checks before it acts. Needs root.
set -euo pipefail

# --runtime: only what the agent needs (the Docker image); default: also what
# the test suite and benchmarks use (Go, compilers, debuginfod, perf, podman).
RUNTIME_PKGS=(bpfcc-tools python3-bpfcc libbpfcc bpftool linux-headers-amd64
              elfutils binutils python3-venv libc6-dbg)
DEV_PKGS=(linux-perf golang-go debuginfod gcc g++ make chromium openjdk-17-jdk-headless
          podman runc debootstrap gdb llvm-14)
PKGS=("${RUNTIME_PKGS[@]}")
[ "${1:-}" = "--runtime" ] || PKGS+=("${DEV_PKGS[@]}")

log() { printf 'setup-host: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  log "not root: skipping system set-up (BPF features need root anyway)"
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# BCC compiles against /lib/modules/$(uname -r)/build. Debian ships headers for
# its own kernels only; the newest one compiles fine for this kernel (MACHINE.md).
KREL=$(uname -r)
if [ ! -e "/lib/modules/$KREL/build/Makefile" ]; then
  H=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$H" ]; then
    # In the container /lib/modules is the host's, mounted read-only: the link
    # is then the host's to make (this script run there), not a reason to stop.
    if mkdir -p "/lib/modules/$KREL" 2>/dev/null \
        && ln -sfn "$H" "/lib/modules/$KREL/build" 2>/dev/null; then
      ln -sfn "${H%-amd64}-common" "/lib/modules/$KREL/source"
      log "linked kernel headers $H for $KREL"
    else
      log "WARNING: cannot link $H as /lib/modules/$KREL/build (read-only?): run" \
          "scripts/setup-host.sh on the host, or mount /lib/modules read-write"
    fi
  else
    log "WARNING: no linux-headers found; BCC will not compile"
  fi
fi

if ! mountpoint -q /sys/kernel/tracing; then
  if mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; then
    log "mounted tracefs"
  else
    log "WARNING: could not mount tracefs at /sys/kernel/tracing (off-CPU needs it)"
  fi
fi
if [ -d /sys/kernel/debug ] && ! mountpoint -q /sys/kernel/debug; then
  mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi

# The container tests' base image (debootstrap, cached; no registry here).
if [ "${1:-}" != "--runtime" ]; then
  bash "$(dirname "$0")/container-base.sh" || log "WARNING: no container base image (container tests will fail)"
fi
exit 0
