"""localdir:// against the whole conformance kit, plus what only a passthrough can show:
the bytes written through the mount are the bytes in the served directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rxfs.testing import ConformanceSuite, MountedBackend


@pytest.fixture(scope="class")
def share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("share")


@pytest.fixture(scope="class")
def rxfs_url(share: Path) -> str:
    return f"localdir://{share}"


class TestLocalDirConformance(ConformanceSuite):
    """Every test of the kit, against a fresh local directory."""

    def test_bytes_land_in_the_served_directory(
        self, rxfs_dir: Path, rxfs_mount: MountedBackend, share: Path
    ) -> None:
        with open(rxfs_dir / "f", "wb") as file:
            file.write(b"landed")
        served = share / rxfs_dir.relative_to(rxfs_mount.path) / "f"
        assert served.read_bytes() == b"landed"

    def test_files_made_beside_the_mount_show_through_it(
        self, rxfs_dir: Path, rxfs_mount: MountedBackend, share: Path
    ) -> None:
        served = share / rxfs_dir.relative_to(rxfs_mount.path)
        (served / "made-locally").write_bytes(b"local")
        os.symlink("/etc/hostname", served / "outside")
        assert sorted(os.listdir(rxfs_dir)) == ["made-locally", "outside"]
        assert (rxfs_dir / "made-locally").read_bytes() == b"local"
        # A link out of the share is shown as it is, never resolved by the backend.
        assert os.readlink(rxfs_dir / "outside") == "/etc/hostname"
