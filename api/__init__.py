"""rxfs: a user-space file system redirector (FUSE front end, RDBSS-style core,
pluggable mini-redirectors).

For programs and tests, :func:`mount` mounts a URL for the length of a ``with`` block::

    import rxfs

    with rxfs.mount("sftp://me@host/srv/data", "/mnt/data", IdentityFile="~/.ssh/id_ed25519"):
        ...

It runs ``rxfs mount`` and ``rxfs umount``, so it behaves exactly as the command does.
This module imports nothing beyond the standard library: a backend plugin imports
``rxfs.minirdr`` without pulling in the front end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["MountError", "UnmountError", "mount"]

OptionValue = str | int | float | bool


class MountError(RuntimeError):
    """The mount did not come up; ``str()`` is rxfs's one-line reason, ``exit_status``
    that of ``rxfs mount`` (2: bad input, 1: failed at run time)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class UnmountError(RuntimeError):
    """The unmount did not land everything: ``str()`` names the files and byte ranges
    that did not reach the server (what ``rxfs umount`` printed)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


def _option_text(options: dict[str, OptionValue]) -> str:
    """``{"ro": True, "attr_timeout": 0}`` -> ``ro,attr_timeout=0``; False leaves a flag
    out."""
    items = []
    for name, value in options.items():
        if value is True:
            items.append(name)
        elif value is not False:
            items.append(f"{name}={value}")
    return ",".join(items)


def _rxfs(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    # This interpreter's rxfs, whatever is on PATH.
    return subprocess.run(
        [sys.executable, "-m", "rxfs.fs.cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _said(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line.removeprefix("rxfs: ") for line in done.stderr.strip().splitlines()]
    return "; ".join(lines) or f"exit status {done.returncode}"


@contextlib.contextmanager
def mount(
    url: str,
    mountpoint: str | os.PathLike[str],
    *,
    umount_timeout: float = 30.0,
    **options: OptionValue,
) -> Iterator[Path]:
    """Mount ``url`` on ``mountpoint`` (an existing directory) as ``rxfs mount URL
    MOUNTPOINT -o ...`` does, and unmount at the end of the ``with`` block as ``rxfs
    umount`` does. Yields the mount point.

    ``options`` are the ``-o`` options: ``attr_timeout=0``, ``ro=True``,
    ``IdentityFile="/root/.ssh/id_ed25519"`` (True: the flag alone; False: left out).
    The mount is ready (answering) when the block starts; it is served by a background
    process, which logs where ``rxfs mount --help`` says.

    Raises :class:`MountError` when the mount does not come up, and
    :class:`UnmountError` when the unmount could not land every byte written through
    the mount (or not within ``umount_timeout`` seconds): the message says which."""
    path = Path(mountpoint).resolve()
    argv = ["mount", url, str(path)]
    if options:
        argv += ["-o", _option_text(options)]
    done = _rxfs(*argv)
    if done.returncode != 0:
        raise MountError(_said(done), done.returncode)
    try:
        yield path
    finally:
        # rxfs umount bounds itself by --timeout; the margin covers its own start.
        done = _rxfs(
            "umount", str(path), f"--timeout={umount_timeout:g}", timeout=umount_timeout + 30
        )
        if done.returncode != 0:
            raise UnmountError(_said(done), done.returncode)
