#!/bin/bash
# Regenerates src/text-order.txt, the link order of the functions a shim runs (`make text-order`).
#
# Why: the kernel maps a binary's page cache into a process in 64 KiB blocks around each fault,
# so a shim's RSS follows how many blocks its code is spread over, not how much code it runs.
# A container's life touches about 1 MB of crt's 3.2 MB of code; linked first, in one run
# (lld --symbol-ordering-file, Makefile), it takes about 1.2 MiB of RSS instead of 2.5.
#
# How: the end-to-end suites run crt through a wrapper that starts every shim under
# scripts/text-order/trace.c, which records each function of our binary that the shim and its
# daemon enter (int3 at each function start, one trap each). The init helpers are not traced:
# they are short-lived; nor is the zygote that forks them (a traced zygote's forks would inherit
# its breakpoints); its start-up is the daemon's, traced there.
#
# A stale file only costs memory: names no longer in the binary are skipped by the linker.
# Usage: scripts/text-order.sh BINARY   (a release build of containerd-shim-crt-v1; needs root)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$(readlink -f "$1")
W=$(mktemp -d /tmp/crtorder.XXXXXX)
cleanup() {
  pkill -KILL -f "$W/funcs" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/bin" "$W/hits"
${CC:-cc} -O2 -Wall -o "$W/trace" "$REPO/scripts/text-order/trace.c"
nm -S "$BIN" | awk '$3 ~ /^[tTwW]$/ {print $1}' | sort -u > "$W/funcs"
cat > "$W/bin/containerd-shim-crt-v1" <<EOS
#!/bin/sh
exec "$W/trace" "$W/hits/\$\$" "$W/funcs" "$BIN" -- "$BIN" "\$@"
EOS
chmod +x "$W/bin/containerd-shim-crt-v1"
# The workload: the end-to-end suites of what users run most (ctr, CRI pods, exec, terminals,
# logs, hooks, limits, pause, OOM), on containerd 1.6 and 2.x, with the traced shim as crt.
# A test may fail under the tracer (one counts the shim's threads or fds): its paths still ran.
(cd "$REPO" && CRT_BIN_DIR="$W/bin" CRT_TEST_RUNTIME=io.containerd.crt.v1 \
  cargo test -p crt-e2e --test basic --test exec --test cri --test logging --test terminal \
    --test hooks --test cgroups --test pause --test oom -- --test-threads=2) > "$W/tests.log" 2>&1 || true
grep -E '^test result' "$W/tests.log" || true
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
# The zygote is not traced (above), yet it sleeps between requests in its loop, which it runs
# again after each release of its code pages: linked last among the hot functions, that loop
# sits in 64 KiB blocks the daemon maps too, not in blocks of its own.
nm "$BIN" | awk '$2 ~ /^[tTwW]$/ {print $3}' \
  | grep -E '^_ZN11crt_runtime(6zygote4main|6zygote18release_code_pages|8affinity8add_back)|^(dl_iterate_phdr|madvise|__syscall_cp_asm)$' \
  | grep -vxF -f "$REPO/src/text-order.txt" >> "$REPO/src/text-order.txt" || true
echo "text-order: $(wc -l < "$W/hit") functions hit, $(wc -l < "$REPO/src/text-order.txt") names in src/text-order.txt"
