#!/usr/bin/env bash
# rxfs quick start on a fresh Debian 12 (run as root): install what rxfs needs, mount an
# SFTP share on $RXFS_DEMO_DIR (default /tmp/rxfs-demo), write files through the mount
# into a new directory of their own (rxfs-demo-DATE-PID; nothing else in the share is
# touched), check they arrived on the server, and leave the mount up for you to explore.
#
#   bash examples/quickstart.sh                                  # a private loopback sshd
#   RXFS_DEMO_URL=sftp://me@host/path bash examples/quickstart.sh   # a server of yours
#   .venv/bin/rxfs umount /tmp/rxfs-demo                         # when you are done
#
# Without RXFS_DEMO_URL it starts OpenSSH's sshd on 127.0.0.1 with throwaway keys,
# serving /tmp/rxfs-demo-share. Running it again unmounts the previous demo first.
set -euo pipefail

cd "$(dirname "$0")/.."
MOUNTPOINT=${RXFS_DEMO_DIR:-/tmp/rxfs-demo}
RXFS=.venv/bin/rxfs
PACKAGES=(fuse3 libfuse3-dev pkg-config gcc libc6-dev python3-dev python3-venv
    openssh-server openssh-client sshfs)

say() { printf '\n==> %s\n' "$*"; }

install_system_packages() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
            missing+=("$package")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ $(id -u) -ne 0 ]]; then
        echo "quickstart: missing Debian packages: ${missing[*]} (run as root)" >&2
        exit 1
    fi
    say "Installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

install_rxfs() {
    say "Installing rxfs into .venv (the same command README.md documents)"
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    .venv/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=strict
}

# What to mount: sets SHARE_URL, SHARE_OPTIONS (the -o list, may be empty) and
# SERVER_DIR (where the server keeps the files, when we run the server).
SSHD_INFO=/tmp/rxfs-demo-sshd.txt
SSHD_PID_FILE=/tmp/rxfs-demo-sshd.pid
SERVER_DIR=/tmp/rxfs-demo-share
choose_share() {
    SHARE_OPTIONS=()
    if [[ -n ${RXFS_DEMO_URL:-} ]]; then
        SHARE_URL=$RXFS_DEMO_URL
        SERVER_DIR=
        return
    fi
    start_loopback_sshd
    SHARE_URL=$(sed -n 's/^sftp URL: //p' "$SSHD_INFO")
    local options
    options=$(sed -n 's/^mount: .* -o //p' "$SSHD_INFO")
    IFS=, read -r -a SHARE_OPTIONS <<<"$options"
}

start_loopback_sshd() {
    if [[ -f $SSHD_PID_FILE ]] && kill -0 "$(cat "$SSHD_PID_FILE")" 2>/dev/null; then
        say "Stopping the previous demo sshd"
        kill "$(cat "$SSHD_PID_FILE")"
        sleep 1
    fi
    mkdir -p "$SERVER_DIR"
    say "Starting a private OpenSSH sshd on 127.0.0.1 (throwaway keys) serving $SERVER_DIR"
    setsid .venv/bin/python -m rxfs.minirdr.sftp.loopback --root "$SERVER_DIR" \
        >"$SSHD_INFO" 2>&1 </dev/null &
    echo $! >"$SSHD_PID_FILE"
    for _ in $(seq 100); do
        grep -q '^host key:' "$SSHD_INFO" && return
        kill -0 "$(cat "$SSHD_PID_FILE")" 2>/dev/null || break
        sleep 0.1
    done
    echo "quickstart: the loopback sshd did not start:" >&2
    cat "$SSHD_INFO" >&2
    exit 1
}

unmount_previous() {
    # mountinfo, not stat: a mount whose process died answers stat with ENOTCONN.
    if awk -v m="$MOUNTPOINT" '$5 == m {found = 1} END {exit !found}' /proc/self/mountinfo; then
        say "Unmounting the previous demo at $MOUNTPOINT"
        "$RXFS" umount "$MOUNTPOINT"
    fi
}

mount_share() {
    mkdir -p "$MOUNTPOINT"
    local options=()
    [[ ${#SHARE_OPTIONS[@]} -eq 0 ]] || options=(-o "$(IFS=,; echo "${SHARE_OPTIONS[*]}")")
    say "$RXFS mount $SHARE_URL $MOUNTPOINT ${options[*]}"
    # Returns once the mount is ready; the mount process keeps serving in the background.
    "$RXFS" mount "$SHARE_URL" "$MOUNTPOINT" "${options[@]}"
}

# A directory of its own for what the demo writes: a share of yours keeps its files.
DEMO_NAME=rxfs-demo-$(date -u +%Y%m%dT%H%M%SZ)-$$

warn_about_writes() {
    [[ -n ${RXFS_DEMO_URL:-} ]] || return 0
    say "The demo writes a few files into $RXFS_DEMO_URL, in a new directory $DEMO_NAME"
    echo "    (nothing else there is touched; remove it when you are done)"
}

use_share() {
    local demo=$MOUNTPOINT/$DEMO_NAME
    say "Writing, reading back and listing through the mount, in $demo"
    mkdir "$demo" "$demo/docs"
    echo "hello from rxfs, $(date -u +%FT%TZ)" >"$demo/hello.txt"
    cp README.md "$demo/docs/"
    cat "$demo/hello.txt"
    cmp README.md "$demo/docs/README.md" && echo "$DEMO_NAME/docs/README.md matches README.md"
    ls -lR "$demo"
    df -h "$MOUNTPOINT"
    if [[ -n $SERVER_DIR ]]; then
        # close() returned, so the bytes are on the server: look at them there.
        cmp README.md "$SERVER_DIR/$DEMO_NAME/docs/README.md" &&
            echo "the server's copy in $SERVER_DIR/$DEMO_NAME/docs/README.md matches too"
    fi
}

install_system_packages
install_rxfs
"$RXFS" --version
warn_about_writes
unmount_previous
choose_share
mount_share
use_share
say "$SHARE_URL is mounted on $MOUNTPOINT. Unmount with:"
echo "    $PWD/$RXFS umount $MOUNTPOINT"
if [[ -n $SERVER_DIR ]]; then
    echo "and stop the demo sshd with:"
    echo "    kill $(cat "$SSHD_PID_FILE")"
fi
echo "The mount process logs to $("$PWD/.venv/bin/python" -c 'from rxfs.fs.cli import state_dir; print(state_dir())')/$(echo "${MOUNTPOINT#/}" | tr / _).log"
echo "To mount a server of yours (keys, agent and ~/.ssh/config work as with ssh):"
echo "    $PWD/$RXFS mount sftp://USER@HOST/PATH /mnt/somewhere"
echo "rxfs is not on PATH: run it as $PWD/$RXFS, or export PATH=\"$PWD/.venv/bin:\$PATH\"."
echo "For mount -t rxfs and /etc/fstab: $PWD/$RXFS install-mount-helper (README, Usage)."
