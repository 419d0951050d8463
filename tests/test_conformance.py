"""The conformance kit against every backend we ship, the way a plugin author runs it.

``rxfs conformance URL`` runs as a subprocess (it runs pytest itself): memory://,
localdir:// (examples/localdir, installed into the venv) and sftp:// on the loopback
sshd must pass with at least 30 tests each; a backend that cannot do anything (null://)
must fail it, with its undeclared features reported as skips. localdir's own tests run
the same suite through the pytest plugin.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.support.smbd import LoopbackSmbd

if TYPE_CHECKING:
    from conftest import Rxfs

REPO = Path(__file__).resolve().parents[1]
# The whole kit for one backend; it takes 5 to 30 s here.
KIT_TIMEOUT = 240
MIN_TESTS = 30

pytestmark = pytest.mark.fuse


def _require(scheme: str, example: str) -> None:
    if scheme not in {ep.name for ep in entry_points(group="rxfs.minirdr")}:
        pytest.fail(f"{scheme}:// is not installed: pip install -e examples/{example}")


def conformance(url: str, *options: str) -> tuple[int, dict[str, int], str]:
    """Exit status, outcome counts from pytest's summary line, and the whole output."""
    argv = [str(Path(sys.executable).with_name("rxfs")), "conformance", url]
    for group in options:
        argv += ["-o", group]
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=KIT_TIMEOUT,
        check=False,
        # From the repository: the kit must not pick up the pytest settings or the
        # conftest.py of wherever it is run.
        cwd=REPO,
    )
    output = done.stdout + done.stderr
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", summary)}
    return done.returncode, counts, output


def assert_passes(url: str, *options: str) -> tuple[dict[str, int], str]:
    code, counts, output = conformance(url, *options)
    assert code == 0, output
    assert counts.get("passed", 0) >= MIN_TESTS, output
    assert "failed" not in counts and "errors" not in counts, output
    return counts, output


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    with LoopbackSshd(root=tmp_path_factory.mktemp("conformance-sftp")) as server:
        yield server


def test_memory_passes_the_kit() -> None:
    counts, output = assert_passes("memory://", "size=1073741824")
    # memory:// does not declare it: its tests are skipped, and say why.
    assert "memory:// does not declare Capability.PERSISTENT" in output
    assert counts.get("skipped") == 3


def test_localdir_passes_the_kit(tmp_path: Path) -> None:
    _require("localdir", "localdir")
    share = tmp_path / "share"
    share.mkdir()
    (share / "kept").write_bytes(b"not the kit's")
    counts, _ = assert_passes(f"localdir://{share}")
    assert "skipped" not in counts
    # The kit cleans up after itself and leaves the share's other files alone.
    assert sorted(p.name for p in share.iterdir()) == ["kept"]
    assert (share / "kept").read_bytes() == b"not the kit's"


@pytest.mark.sshd
def test_sftp_passes_the_kit(sshd: LoopbackSshd) -> None:
    (sshd.root / "kit").mkdir()
    options = ",".join(f"{k}={v}" for k, v in sshd.mount_options().items())
    counts, _ = assert_passes(sshd.url("kit"), options)
    assert "skipped" not in counts
    assert list((sshd.root / "kit").iterdir()) == []


def test_smb_passes_the_kit(smbd: LoopbackSmbd) -> None:
    kit = smbd.root / "kit"
    kit.mkdir()
    counts, output = assert_passes(smbd.url("kit"), smbd.options())
    # Plain SMB2 has no mode (-o modes=fixed, the default), no uid <-> SID mapping
    # (chown) and no atomic append (Samba refuses SMB2's write-at-end offset): those
    # are undeclared, skipped, and say why.
    assert counts.get("skipped") == 5, output
    for missing in ("CHMOD", "CHOWN", "APPEND"):
        assert f"smb:// does not declare Capability.{missing}" in output
    assert list(kit.iterdir()) == []


def test_smb_with_acl_modes_passes_the_mode_tests_too(smbd: LoopbackSmbd) -> None:
    kit = smbd.root / "kit-acl"
    kit.mkdir()
    counts, output = assert_passes(smbd.url("kit-acl"), f"{smbd.options()},modes=acl")
    assert counts.get("skipped") == 3, output
    assert "Capability.CHMOD" not in output
    assert list(kit.iterdir()) == []


def test_a_backend_that_does_nothing_fails_the_kit() -> None:
    _require("null", "null")
    code, counts, output = conformance("null://")
    assert code == 1, output
    assert counts.get("errors", 0) + counts.get("failed", 0) >= MIN_TESTS, output
    assert "null:// does not declare Capability.SYMLINKS" in output
    assert "Function not implemented" in output


def test_localdir_own_tests_run_the_kit_through_the_plugin() -> None:
    _require("localdir", "localdir")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=REPO / "examples" / "localdir",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=KIT_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed is not None and int(passed.group(1)) >= MIN_TESTS, done.stdout


def test_backends_lists_each_installed_mini_redirector(rxfs: Rxfs) -> None:
    _require("localdir", "localdir")
    done = rxfs("backends")
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("\n\n")[0]  # the option help follows a blank line
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert rows["memory://"][1:3] == ["rxfs", "0.1.0"]
    assert rows["sftp://"][1:3] == ["rxfs", "0.1.0"]
    assert rows["smb://"][1:3] == ["rxfs", "0.1.0"]
    assert rows["localdir://"][1:3] == ["rxfs-localdir", "0.1.0"]
    assert "persistent" in rows["localdir://"][3].split(",")
    assert "persistent" not in rows["memory://"][3].split(",")
