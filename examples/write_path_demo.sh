#!/usr/bin/env bash
# Ordinary file writes through an rxfs mount, and the road each takes, from rxfs's own
# --debug log: the kernel's FUSE_WRITE becomes an IRP_MJ_WRITE; the core either keeps the
# bytes in the file's write-behind buffer (the IRP completes at once) and sends them later
# as a paging write, or hands them straight to the backend: MRxLowIOSubmit[LOWIO_OP_WRITE].
#
#   bash examples/write_path_demo.sh [URL]        # default memory://, e.g. localdir:///tmp/x
set -euo pipefail

cd "$(dirname "$0")/.."
URL=${1:-memory://}
RXFS=${RXFS:-.venv/bin/rxfs}
work=$(mktemp -d)
mnt=$work/mnt
log=$work/debug.log
mkdir "$mnt"

"$RXFS" mount -f --debug "$URL" "$mnt" 2>"$log" &
pid=$!
cleanup() {
    fusermount3 -u "$mnt" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do
    grep -q " $mnt " /proc/self/mountinfo && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done

step() { printf '\n==> %s\n' "$*"; : >"$log.mark"; wc -l <"$log" >"$log.mark"; }
show() {
    sleep 0.2  # let the mount process write its log lines
    tail -n +"$(($(cat "$log.mark") + 1))" "$log" |
        grep -E 'IRP_MJ_(CREATE|WRITE|FLUSH_BUFFERS|CLOSE)|MRxLowIOSubmit' |
        sed -E 's/^[0-9-]+ [0-9:,]+ DEBUG rxfs\.rdbss\.//'
}

step "echo hello > f   (buffered: IRP_MJ_WRITE completes from the write-behind buffer;"
echo "    close(2) flushes it as a PAGING_IO write)"
echo hello >"$mnt/f"
show

step "dd 3 x 64 KiB with oflag=sync   (write-through: each IRP_MJ_WRITE goes to LOWIO_OP_WRITE)"
dd if=/dev/zero of="$mnt/g" bs=64k count=3 oflag=sync status=none
show

step "python: write 1 MiB, fsync, close"
.venv/bin/python - "$mnt/h" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, b"x" * (1 << 20))
os.fsync(fd)
os.close(fd)
PY
show
