"""What ``rxfs --version`` and the option help print: versions of rxfs and what it runs
on, and every ``-o`` name with its meaning, per backend."""

from __future__ import annotations

import ctypes
import importlib.metadata
import platform
import shutil
import subprocess
import textwrap
from collections.abc import Mapping

from rxfs.minirdr import available_backends
from rxfs.rdbss import CORE_OPTIONS

from ._mounthelper import IGNORED_OPTIONS, KERNEL_FLAGS
from ._operations import FsOptions

__all__ = ["MOUNT8_OPTIONS", "options_help", "versions"]

# What mount(8), fstab and systemd pass, as rxfs takes it.
MOUNT8_OPTIONS = {
    "ro": "read-only (above)",
    ", ".join(sorted(KERNEL_FLAGS)): "mount flags, for the kernel",
    ", ".join([*sorted(IGNORED_OPTIONS), "x-*"]): "for mount(8), systemd and fstab: ignored",
}


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _libfuse_version() -> str:
    """libfuse's own version, as the loaded library reports it (pyfuse3 links it)."""
    try:
        library = ctypes.CDLL("libfuse3.so.3")
        pkgversion = library.fuse_pkgversion
    except (OSError, AttributeError):
        return "not found (libfuse3.so.3)"
    pkgversion.restype = ctypes.c_char_p
    version: bytes = pkgversion()
    return version.decode()


def _openssh_version() -> str:
    ssh = shutil.which("ssh")
    if ssh is None:
        return "not found (no ssh on PATH: sftp:// logs in through paramiko)"
    try:
        done = subprocess.run([ssh, "-V"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{ssh}: {exc}"
    return (done.stderr or done.stdout).strip() or f"{ssh}: no version"


def versions() -> list[tuple[str, str]]:
    """(component, version) for rxfs and everything a mount runs on."""
    return [
        ("rxfs", _distribution_version("rxfs")),
        ("python", platform.python_version()),
        ("pyfuse3", _distribution_version("pyfuse3")),
        ("libfuse", _libfuse_version()),
        ("trio", _distribution_version("trio")),
        ("paramiko", _distribution_version("paramiko")),
        ("openssh", _openssh_version()),
    ]


def _table(options: Mapping[str, str], indent: int = 2) -> list[str]:
    lines = []
    for name, meaning in options.items():
        lines += textwrap.wrap(
            name, width=88, initial_indent=" " * indent, subsequent_indent=" " * indent
        )
        lines += textwrap.wrap(
            meaning,
            width=88,
            initial_indent=" " * (indent + 6),
            subsequent_indent=" " * (indent + 6),
        )
    return lines


def options_help() -> str:
    """Every ``-o`` name: those of every mount, then each installed backend's own."""
    lines = ["mount options (-o name[=value],...), for every backend:"]
    lines += _table({**FsOptions.NAMES, **CORE_OPTIONS})
    lines += ["", "taken as mount(8) passes them (fstab, systemd, mount -t rxfs):"]
    lines += _table(MOUNT8_OPTIONS)
    for scheme, info in available_backends().items():
        try:
            names = info.load().option_names
        except Exception as exc:  # a broken plugin must not hide the others
            lines += ["", f"{scheme}:// cannot load: {exc}"]
            continue
        lines += ["", f"{scheme}:// options:"]
        lines += _table(names) if names else ["  (none)"]
    return "\n".join(lines)
