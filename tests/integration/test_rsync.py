"""rsync -a into the mount: one pass leaves every directory with the source's times on
the server, and a second pass has nothing to do (rsync sets a directory's times after
filling it; a mount that answered its own changes from a stale cache left them wrong
on the server: all 40 of 40 directories here)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.integration_support import Target


def _tree(root: Path) -> None:
    rng = random.Random(1)
    for d in range(20):
        directory = root / f"d{d}" / f"e{d % 3}"
        directory.mkdir(parents=True)
        for f in range(4):
            (directory / f"f{f}").write_bytes(rng.randbytes(rng.randrange(1, 5000)))


def _rsync(source: Path, destination: Path) -> list[str]:
    done = subprocess.run(
        ["rsync", "-a", "-i", f"{source}/", f"{destination}/"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_rsync_a_settles_in_one_pass(target: Target, tmp_path: Path) -> None:
    if shutil.which("rsync") is None:
        pytest.fail("rsync is missing: apt-get install rsync (.ci/run installs it)")
    source = tmp_path / "src"
    _tree(source)
    assert _rsync(source, target.mnt / "dst")
    assert _rsync(source, target.mnt / "dst") == [], "a second pass still had work"
    landed = target.landed("dst")
    for directory in [source, *(d for d in source.rglob("*") if d.is_dir())]:
        copy = landed / directory.relative_to(source)
        # SFTP v3 carries whole seconds.
        assert int(os.stat(copy).st_mtime) == int(directory.stat().st_mtime), copy
