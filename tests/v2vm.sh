#!/bin/bash
# Runs the cgroup-v2-relevant e2e scenarios inside a pure cgroup v2 QEMU VM
# (../shared/v2vm/run-in-v2-vm.sh), against containerd 1.6 and 2.x.
#
# Everything is built on the host first (the VM emulates the CPU: ~15x slower code, ~50x slower
# fork+exec); the VM only runs the e2e test binaries, with V2VM=1 so the harness scales its
# timeouts.
#
# Knobs (environment):
#   CRT_TEST_RUNTIME   runtime under test (default io.containerd.crt.v1; io.containerd.runc.v2
#                      validates the harness without building crt)
#   V2VM_TESTS         "<test binary>:<filter>" words to run (default: the whole suite)
#   V2VM_THREADS       --test-threads inside the VM (default 1)
#   CRT_SHARED_DIR     the shared kit (default <repo>/../shared)
#   CARGO_TARGET_DIR   as for cargo (default <repo>/target)
#   V2VM_*             passed through to run-in-v2-vm.sh (V2VM_MEM, V2VM_TIMEOUT, ...)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${CRT_SHARED_DIR:-$REPO/../shared}
[ -d "$SHARED" ] || { echo "v2vm.sh: shared kit not found at $SHARED (set CRT_SHARED_DIR)" >&2; exit 2; }
SHARED=$(cd "$SHARED" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
mkdir -p "$TARGET_DIR"
TARGET_DIR=$(cd "$TARGET_DIR" && pwd)
RUNTIME=${CRT_TEST_RUNTIME:-io.containerd.crt.v1}
CARGO=${CARGO:-cargo}
# The whole suite: on v2 every scenario takes the v2 paths (CLONE_INTO_CGROUP, the eBPF device
# filter, memory.max/pids.max, cgroup.kill), and it fits in a few minutes even emulated.
V2VM_TESTS=${V2VM_TESTS:-basic: cgroups: cri: escapes: exec: harness: hooks: hostile: isolation: logging: oom: pause: restart: robustness: seccomp: terminal: userns:}
THREADS=${V2VM_THREADS:-1}

cd "$REPO"
log() { echo "[v2vm.sh] $*" >&2; }

# ---- build on the host ------------------------------------------------------------------------
export CARGO_TARGET_DIR=$TARGET_DIR
if [ "$RUNTIME" = io.containerd.crt.v1 ]; then
  log "building containerd-shim-crt-v1"
  "$CARGO" build --bin containerd-shim-crt-v1
  export CRT_BIN_DIR=${CRT_BIN_DIR:-$TARGET_DIR/debug}
fi
log "building the e2e test binaries"
bins=$("$CARGO" test -p crt-e2e --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
')
[ -n "$bins" ] || { echo "v2vm.sh: cargo test --no-run produced no test binaries" >&2; "$CARGO" test -p crt-e2e --no-run; exit 1; }

# the busybox image, built here (python is slow in the VM) and handed to the harness
export CRT_SHARED_DIR=$SHARED
export CRT_TEST_IMAGE_TAR=$TARGET_DIR/e2e-v2vm/busybox-oci.tar
mkdir -p "$TARGET_DIR/e2e-v2vm"
python3 "$SHARED/containerd2/build-busybox-image.py" busybox -o "$CRT_TEST_IMAGE_TAR" >&2
# and CRI's pause image
export CRT_TEST_PAUSE_TAR=$TARGET_DIR/e2e-v2vm/pause-oci.tar
python3 "$SHARED/containerd2/build-busybox-image.py" pause \
  --pause-bin "${CONTAINERD2_DIR:-/opt/containerd2}/libexec/pause" -o "$CRT_TEST_PAUSE_TAR" >&2
# containerd logs of failed tests land in the shared target dir (the VM's /tmp is thrown away)
export CRT_TEST_LOG_DIR=$TARGET_DIR/e2e-v2vm/logs
export CRT_TEST_RUNTIME=$RUNTIME

# ---- the command run inside the VM ------------------------------------------------------------
runner=$TARGET_DIR/e2e-v2vm/run.sh
{
  echo '#!/bin/bash'
  echo 'set -u'
  echo 'echo "[v2vm] cgroup fs: $(stat -f -c %T /sys/fs/cgroup); controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"'
  echo 'failed=0'
  for spec in $V2VM_TESTS; do
    name=${spec%%:*}; filter=${spec#*:}
    exe=$(awk -v n="$name" '$1 == n {print $2}' <<< "$bins" | tail -n 1)
    [ -n "$exe" ] || { echo "v2vm.sh: no test binary named $name" >&2; exit 2; }
    printf 'echo "[v2vm] %s %s"\n' "$name" "$filter"
    printf '%q --test-threads=%q %s || failed=1\n' "$exe" "$THREADS" "${filter:+$(printf '%q' "$filter")}"
  done
  echo 'exit $failed'
} > "$runner"
chmod +x "$runner"

log "running in the cgroup v2 VM ($RUNTIME): $V2VM_TESTS"
exec bash "$SHARED/v2vm/run-in-v2-vm.sh" "$runner"
