#!/bin/bash
# The one-command demo (Debian 12, root): install the packages, build and install
# containerd-shim-crt-v1, start a private containerd 1.6 (or use $CONTAINERD_ADDRESS), import a
# busybox image built locally (no registry), and run
#   ctr run --rm --runtime io.containerd.crt.v1 docker.io/library/busybox:latest demo echo hello
# then stop the private containerd again.
#
# Knobs (environment):
#   CONTAINERD_ADDRESS  use this running containerd instead of a private one
#   RUNTIME             runtime to run with (default io.containerd.crt.v1; io.containerd.runc.v2
#                       checks the demo itself, and then nothing is built)
#   PREFIX              install prefix (default /usr/local; the shim goes to $PREFIX/bin)
#   SKIP_APT=1          do not apt-get install anything
#   SKIP_INSTALL=1      do not build/install crt (use the containerd-shim-crt-v1 on PATH)
#   CRT_SHARED_DIR      the shared kit with build-busybox-image.py (default <repo>/../shared)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${CRT_SHARED_DIR:-$REPO/../shared}
RUNTIME=${RUNTIME:-io.containerd.crt.v1}
PREFIX=${PREFIX:-/usr/local}
IMAGE=docker.io/library/busybox:latest
log() { echo "[demo] $*" >&2; }

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }

# ---- packages -------------------------------------------------------------------------------------
if [ "${SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  need=()
  for p in containerd runc busybox-static python3 make gcc pkg-config libseccomp-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
  fi
fi

# ---- build + install the shim ---------------------------------------------------------------------
if [ "$RUNTIME" = io.containerd.crt.v1 ] && [ "${SKIP_INSTALL:-0}" != 1 ]; then
  # The release build links musl when rustup has its target (faster start-up on VMs; README,
  # Performance), else glibc.
  if command -v rustup >/dev/null; then
    rustup target add "$(uname -m)-unknown-linux-musl" >/dev/null 2>&1 || log "no musl target: glibc build"
  fi
  log "make install PREFIX=$PREFIX"
  make -C "$REPO" install PREFIX="$PREFIX"
fi

# ---- containerd -----------------------------------------------------------------------------------
W=$(mktemp -d /tmp/crtdemo.XXXXXX)
CTRD_PID=
cleanup() {
  set +e
  if [ -n "$CTRD_PID" ]; then
    ctr -a "$ADDRESS" -n default task kill -s SIGKILL demo >/dev/null 2>&1
    ctr -a "$ADDRESS" -n default task delete -f demo >/dev/null 2>&1
    ctr -a "$ADDRESS" -n default containers rm demo >/dev/null 2>&1
    kill -TERM "$CTRD_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$CTRD_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$CTRD_PID" 2>/dev/null
    wait "$CTRD_PID" 2>/dev/null
    # anything mounted below the private dir, deepest first
    findmnt -rn -o TARGET | awk -v w="$W/" 'index($0, w) == 1' | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m"
    done
  fi
  rm -rf "$W"
}
trap cleanup EXIT

if [ -n "${CONTAINERD_ADDRESS:-}" ]; then
  ADDRESS=$CONTAINERD_ADDRESS
  log "using the containerd at $ADDRESS"
else
  ADDRESS=$W/state/containerd.sock
  mkdir -p "$W/root" "$W/state"
  cat > "$W/config.toml" <<EOF
version = 2
root = "$W/root"
state = "$W/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ADDRESS"
[ttrpc]
  address = "$ADDRESS.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$W/opt"
EOF
  log "starting a private containerd ($(containerd --version | awk '{print $3}')) in $W"
  # the installed shim's directory first: containerd finds containerd-shim-crt-v1 on its PATH
  (cd "$W" && PATH="$PREFIX/bin:$PATH" exec containerd --config "$W/config.toml") > "$W/containerd.log" 2>&1 &
  CTRD_PID=$!
  for _ in $(seq 100); do ctr -a "$ADDRESS" version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr -a "$ADDRESS" version >/dev/null || { tail -20 "$W/containerd.log" >&2; exit 1; }
fi

# ---- image ----------------------------------------------------------------------------------------
[ -f "$SHARED/containerd2/build-busybox-image.py" ] || { echo "demo.sh: $SHARED/containerd2/build-busybox-image.py not found (set CRT_SHARED_DIR)" >&2; exit 1; }
python3 "$SHARED/containerd2/build-busybox-image.py" busybox -o "$W/busybox-oci.tar" >/dev/null
ctr -a "$ADDRESS" -n default images import "$W/busybox-oci.tar" >/dev/null

# ---- run ------------------------------------------------------------------------------------------
extra=()
[ "$RUNTIME" = io.containerd.runc.v2 ] && extra=(--runc-root "$W/state/runc")
log "ctr run --rm --runtime $RUNTIME $IMAGE demo echo hello"
ctr -a "$ADDRESS" -n default run --rm --runtime "$RUNTIME" "${extra[@]}" "$IMAGE" demo echo hello
