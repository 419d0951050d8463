"""rxfs under mount(8), fstab and systemd.

mount(8) runs ``/sbin/mount.rxfs URL MOUNTPOINT [-sfnv] [-N NS] -o OPTIONS`` for
``-t rxfs``; for ``-t fuse.rxfs`` it runs ``/sbin/mount.fuse.rxfs`` the same way, or
failing that mount.fuse3, which runs ``rxfs URL MOUNTPOINT -o OPTIONS`` through
``/bin/sh`` and PATH. Either way rxfs mounts in the background and returns once the
mount answers, as sshfs does. Under systemd (``Type=notify``, ``$NOTIFY_SOCKET``) it
says READY=1 at that moment.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HELPER_NAMES",
    "IGNORED_OPTIONS",
    "KERNEL_FLAGS",
    "HelperArgs",
    "ignored_by_rxfs",
    "install_mount_helper",
    "parse_helper_argv",
    "remove_mount_helper",
    "sd_notify",
]

log = logging.getLogger(__name__)

# The names mount(8) looks for in /sbin for -t rxfs and -t fuse.rxfs.
HELPER_NAMES = ("mount.rxfs", "mount.fuse.rxfs")

# mount(8)'s generic options, as fstab, mount(8) and mount.fuse3 pass them on. The
# kernel's mount flags go to the FUSE mount (libfuse knows these; ro is a core option
# that adds the flag). The rest are for mount(8), systemd or other file systems and are
# ignored, as mount.fuse3 ignores them (libfuse 3.14 refuses the atime variants but
# atime and noatime); so is every x-* (x-systemd.automount ...).
KERNEL_FLAGS = frozenset(
    {"rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "sync", "async"}
    | {"dirsync", "atime", "noatime"}
)
IGNORED_OPTIONS = frozenset(
    {"defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "nofail"}
    | {"_netdev", "comment", "diratime", "nodiratime", "relatime", "norelatime", "strictatime"}
    | {"nostrictatime", "lazytime", "nolazytime", "loud", "silent"}
)


def ignored_by_rxfs(name: str) -> bool:
    """Whether ``-o name`` is one rxfs takes and ignores, as mount.fuse3 does."""
    return name in IGNORED_OPTIONS or name.startswith("x-")


def sd_notify(state: str) -> None:
    """Tell systemd (``Type=notify``) ``state``, e.g. ``READY=1``: one datagram to
    ``$NOTIFY_SOCKET``, as sd_notify(3) sends it. Nothing without systemd."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", address.lstrip("\0"), exc)


@dataclass(slots=True)
class HelperArgs:
    url: str
    mountpoint: str
    options: list[str]
    fake: bool  # mount -f: do everything but mount


class _HelperUsageError(Exception):
    pass


class _HelperParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _HelperUsageError(message)


def parse_helper_argv(argv: Sequence[str]) -> HelperArgs:
    """``URL MOUNTPOINT [-sfnv] [-N NS] [-o OPTIONS] [-t TYPE]``, as mount(8) calls a
    helper (mount(8), "External helpers"). Raises ValueError with a one-line message."""
    parser = _HelperParser(prog="mount.rxfs", add_help=False)
    parser.add_argument("url")
    parser.add_argument("mountpoint")
    parser.add_argument("-o", dest="options", action="append", default=[])
    parser.add_argument("-t", dest="type")
    parser.add_argument("-N", dest="namespace")
    parser.add_argument("-f", dest="fake", action="store_true")
    for flag in ("-s", "-n", "-v"):  # sloppy, no mtab, verbose: nothing to do for FUSE
        parser.add_argument(flag, action="store_true")
    try:
        args = parser.parse_args(argv)
    except _HelperUsageError as exc:
        raise ValueError(f"{exc} (usage: mount.rxfs URL MOUNTPOINT [-o opt[=val],...])") from None
    if args.namespace is not None:
        raise ValueError("-N (mount in another namespace) is not supported")
    if args.type not in (None, "rxfs", "fuse.rxfs"):
        raise ValueError(f"-t {args.type}: this helper mounts rxfs only")
    return HelperArgs(args.url, args.mountpoint, args.options, args.fake)


def _script() -> Path:
    """The mount.rxfs console script of this installation (its #! names our python)."""
    return Path(sysconfig.get_path("scripts")) / "mount.rxfs"


def _ours(link: Path) -> bool:
    return link.is_symlink() and os.readlink(link).endswith("/mount.rxfs")


def install_mount_helper(directory: Path) -> list[str]:
    """Link ``directory``/mount.rxfs and mount.fuse.rxfs to this installation's
    mount.rxfs; returns what it did, one line each. A file of that name that is not
    such a link is left alone (ValueError)."""
    script = _script()
    if not script.exists():
        raise ValueError(f"{script} is missing: reinstall rxfs (pip install -e .)")
    done = []
    for name in HELPER_NAMES:
        link = directory / name
        if link.exists() or link.is_symlink():
            if not _ours(link):
                raise ValueError(f"{link} exists and is not an rxfs mount helper: left alone")
            link.unlink()
        link.symlink_to(script)
        done.append(f"{link} -> {script}")
    return done


def remove_mount_helper(directory: Path) -> list[str]:
    """Remove the links install_mount_helper made in ``directory``."""
    done = []
    for name in HELPER_NAMES:
        link = directory / name
        if _ours(link):
            link.unlink()
            done.append(f"removed {link}")
        elif link.exists():
            raise ValueError(f"{link} is not an rxfs mount helper: left alone")
    return done
