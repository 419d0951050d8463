"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rxfs.minirdr.smb._wire import MF_SYMLINK_SIZE, parse_mf_symlink

if TYPE_CHECKING:
    from tests.conftest import Mount

MIB = 1 << 20


@dataclass
class Target:
    """One mounted test directory: ``mnt`` through rxfs, ``server`` on the server side."""

    backend: str
    mnt: Path
    mount: Mount
    server: Path | None  # None for memory://: no server directory to look at

    def landed(self, relative: str) -> Path:
        """Where to check the bytes of ``relative``: on the server, else through the mount."""
        base = self.server if self.server is not None else self.mnt
        return base / relative

    def server_path(self, relative: str) -> Path:
        assert self.server is not None, f"{self.backend}:// has no server directory"
        return self.server / relative

    @property
    def keeps_modes(self) -> bool:
        """False on smb:// (mounted with its default -o modes=fixed): plain SMB2 stores
        no POSIX mode (README.md, "### smb://")."""
        return self.backend != "smb"

    def landed_tree(self, relative: str) -> dict[str, tuple[str, int, str]]:
        """``tree_digest`` of what landed: on smb:// a symlink is a Minshall-French
        symlink file on the server (README.md, "### smb://"), read as the link it is."""
        return tree_digest(self.landed(relative), mf_symlinks=self.backend == "smb")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(root: Path, *, mf_symlinks: bool = False) -> dict[str, tuple[str, int, str]]:
    """{relative path: (kind, size, sha256 or link target)} for every entry under root;
    with ``mf_symlinks``, a Minshall-French symlink file counts as its link."""
    result: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                result[relative] = ("link", 0, os.readlink(path))
            elif path.is_dir():
                result[relative] = ("dir", 0, "")
            elif mf_symlinks and (link := _mf_symlink(path)) is not None:
                result[relative] = ("link", 0, link)
            else:
                result[relative] = ("file", path.stat().st_size, sha256_file(path))
    return result


def _mf_symlink(path: Path) -> str | None:
    if path.stat().st_size != MF_SYMLINK_SIZE:
        return None
    return parse_mf_symlink(path.read_bytes())


def run(argv: list[str], *, cwd: Path | None = None, timeout: float = 120) -> str:
    """Run a command that must succeed; return its stdout."""
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stderr}"
    return done.stdout
