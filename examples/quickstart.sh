#!/usr/bin/env bash
# rxfs quick start on a fresh Debian 12 (run as root): install what rxfs needs, mount a
# share on $RXFS_DEMO_DIR (default /tmp/rxfs-demo), write a file through the mount, read
# it back, list the directory, and leave the mount up for you to explore.
#
#   bash examples/quickstart.sh
#   .venv/bin/rxfs umount /tmp/rxfs-demo      # when you are done
#
# Running it again unmounts the previous demo first.
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

# What to mount: sets SHARE_URL and SHARE_OPTIONS (the -o list, may be empty).
# memory:// needs no server: the files live in the mount process and vanish at unmount.
choose_share() {
    SHARE_URL="memory://demo"
    SHARE_OPTIONS=()
}

mount_share() {
    # mountinfo, not stat: a mount whose process died answers stat with ENOTCONN.
    if awk -v m="$MOUNTPOINT" '$5 == m {found = 1} END {exit !found}' /proc/self/mountinfo; then
        say "Unmounting the previous demo at $MOUNTPOINT"
        "$RXFS" umount "$MOUNTPOINT"
    fi
    mkdir -p "$MOUNTPOINT"
    local options=()
    [[ ${#SHARE_OPTIONS[@]} -eq 0 ]] || options=(-o "$(IFS=,; echo "${SHARE_OPTIONS[*]}")")
    say "$RXFS mount $SHARE_URL $MOUNTPOINT ${options[*]}"
    # Returns once the mount is ready; the mount process keeps serving in the background.
    "$RXFS" mount "$SHARE_URL" "$MOUNTPOINT" "${options[@]}"
}

use_share() {
    say "Writing, reading back and listing through the mount"
    echo "hello from rxfs, $(date -u +%FT%TZ)" >"$MOUNTPOINT/hello.txt"
    mkdir -p "$MOUNTPOINT/docs"
    cp README.md "$MOUNTPOINT/docs/"
    cat "$MOUNTPOINT/hello.txt"
    cmp README.md "$MOUNTPOINT/docs/README.md" && echo "docs/README.md matches README.md"
    ls -lR "$MOUNTPOINT"
    df -h "$MOUNTPOINT"
}

install_system_packages
install_rxfs
"$RXFS" backends
choose_share
mount_share
use_share
say "$SHARE_URL is mounted on $MOUNTPOINT. Unmount with:"
echo "    $PWD/$RXFS umount $MOUNTPOINT"
