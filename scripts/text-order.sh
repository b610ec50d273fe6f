#!/bin/bash
# Regenerates src/text-order.txt, the link order of the functions a shim runs (`make text-order`).
#
# Why: the kernel maps a binary's page cache into a process in 64 KiB blocks around each fault,
# so a shim's RSS follows how many blocks its code is spread over, not how much code it runs.
# A container's life touches about 1 MB of crt's 3.2 MB of code; linked first, in one run
# (lld --symbol-ordering-file, Makefile), it takes about 1.2 MiB of RSS instead of 2.5.
#
# How: a private containerd 1.6 runs crt through a wrapper that starts every shim under
# scripts/text-order/trace.c, which records each function of our binary that the shim and its
# daemon enter (int3 at each function start, one trap each); the workload below is the ctr
# surface (run, exec, ps, metrics, pause/resume, kill, delete, logs, seccomp, limits).
# The init helpers are not traced: they are short-lived.
#
# A stale file only costs memory: names no longer in the binary are skipped by the linker.
# Usage: scripts/text-order.sh BINARY   (a release build of containerd-shim-crt-v1; needs root)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${CRT_SHARED_DIR:-$REPO/../shared}
BIN=$(readlink -f "$1")
W=$(mktemp -d /tmp/crtorder.XXXXXX)
CP=
cleanup() {
  set +e
  [ -n "$CP" ] && kill "$CP" 2>/dev/null && wait "$CP" 2>/dev/null
  pkill -KILL -f "$W/funcs" 2>/dev/null
  findmnt -rn -o TARGET | awk -v w="$W/" 'index($0, w) == 1' | sort -r | xargs -r umount -l
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/bin" "$W/root" "$W/state" "$W/hits"
${CC:-cc} -O2 -Wall -o "$W/trace" "$REPO/scripts/text-order/trace.c"
nm -S "$BIN" | awk '$3 ~ /^[tTwW]$/ {print $1}' | sort -u > "$W/funcs"
cat > "$W/bin/containerd-shim-crt-v1" <<EOS
#!/bin/sh
exec "$W/trace" "$W/hits/\$\$" "$W/funcs" "$BIN" -- "$BIN" "\$@"
EOS
chmod +x "$W/bin/containerd-shim-crt-v1"
A=$W/state/containerd.sock
cat > "$W/config.toml" <<EOC
version = 2
root = "$W/root"
state = "$W/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$A"
[ttrpc]
  address = "$A.ttrpc"
EOC
(cd "$W" && PATH="$W/bin:$PATH" exec containerd --config "$W/config.toml") > "$W/containerd.log" 2>&1 &
CP=$!
for _ in $(seq 100); do ctr -a "$A" version >/dev/null 2>&1 && break; sleep 0.1; done
python3 "$SHARED/containerd2/build-busybox-image.py" busybox -o "$W/bb.tar" >/dev/null
C=(ctr -a "$A" -n default)
R=(--runtime io.containerd.crt.v1)
I=docker.io/library/busybox:latest
# Each step may fail (an exit code, a missing binary): its error path is profiled too.
step() { timeout 300 "$@" >/dev/null 2>&1 || true; }
step "${C[@]}" images import "$W/bb.tar"
step "${C[@]}" run --rm "${R[@]}" $I o1 true
step "${C[@]}" run --rm "${R[@]}" --seccomp --memory-limit 67108864 $I o2 sh -c 'echo hi; exit 3'
step "${C[@]}" run -d "${R[@]}" --log-uri "file://$W/o3.log" $I o3 sleep 1000
step "${C[@]}" task exec --exec-id e1 o3 sh -c 'echo out; echo err >&2'
step "${C[@]}" task exec --exec-id e2 o3 nosuch
step "${C[@]}" task ps o3
step "${C[@]}" task metrics o3
step "${C[@]}" task pause o3
step "${C[@]}" task resume o3
step "${C[@]}" task ls
step "${C[@]}" task kill -s SIGKILL o3
sleep 1
step "${C[@]}" task delete o3
step "${C[@]}" containers rm o3
step "${C[@]}" run --rm "${R[@]}" $I o4 nosuch
# The shims exit after their last Delete; their tracers with them.
for _ in $(seq 50); do pgrep -f "$W/funcs" >/dev/null || break; sleep 0.2; done
cat "$W"/hits/* 2>/dev/null | sort -u > "$W/hit"
# Hit addresses to the names lld orders by (every alias of an address), in address order.
nm -S "$BIN" | awk '$3 ~ /^[tTwW]$/' | python3 -c '
import sys
hit = set(int(l, 16) for l in open(sys.argv[1]))
names = sorted((int(p[0], 16), p[3]) for p in (l.split() for l in sys.stdin) if int(p[0], 16) in hit)
sys.stdout.write("".join(n + "\n" for _, n in names))
' "$W/hit" > "$REPO/src/text-order.txt"
echo "text-order: $(wc -l < "$W/hit") functions hit, $(wc -l < "$REPO/src/text-order.txt") names in src/text-order.txt"
