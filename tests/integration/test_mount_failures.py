"""Mounts that must be refused, through the command line a user runs.

Each failure is one line on stderr (no traceback), a non-zero exit, nothing left mounted
and no process left behind, in the background mode (the default) and with -f alike.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd

from tests.support.sshd import impostor_line, keygen

if TYPE_CHECKING:
    from tests.conftest import Rxfs

pytestmark = [pytest.mark.sshd, pytest.mark.fuse]
MODES = {"background": (), "foreground": ("-f",)}


def refused_mount(
    rxfs: Rxfs, tmp_path: Path, url: str, options: dict[str, str], mode: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    option_arg = ",".join(f"{k}={v}" for k, v in options.items())
    started = time.monotonic()
    done = rxfs("mount", url, str(mnt), "-o", option_arg, *MODES[mode], timeout=60)
    elapsed = time.monotonic() - started
    if rxfs.is_mounted(mnt):  # a failing test must not leave a mount behind
        subprocess.run(["fusermount3", "-u", str(mnt)], timeout=30, check=False)
        pytest.fail(f"the mount succeeded: {done.stderr}")
    assert rxfs.pids_serving(mnt) == []
    assert "Traceback" not in done.stderr
    return done, elapsed


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    return lines[0]


@pytest.mark.parametrize("mode", MODES)
def test_unknown_host_key_is_refused_naming_host_and_fingerprint(
    sshd: LoopbackSshd, rxfs: Rxfs, tmp_path: Path, mode: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")  # exists, lists nothing
    options = {**sshd.mount_options(), "UserKnownHostsFile": str(known_hosts)}
    done, _ = refused_mount(rxfs, tmp_path, sshd.url(), options, mode)

    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith(f"rxfs: host key of [127.0.0.1]:{sshd.port} is unknown"), line
    assert sshd.host_key_fingerprint in line
    assert "-o StrictHostKeyChecking=accept-new" in line
    assert known_hosts.read_text() == "", "an unknown key was added without accept-new"


@pytest.mark.parametrize("mode", MODES)
def test_changed_host_key_is_refused_naming_the_new_fingerprint(
    sshd: LoopbackSshd, rxfs: Rxfs, tmp_path: Path, mode: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(impostor_line(sshd, tmp_path))
    before = known_hosts.read_text()
    # StrictHostKeyChecking=no too: a changed key is refused whatever the policy.
    options = {
        **sshd.mount_options(),
        "UserKnownHostsFile": str(known_hosts),
        "StrictHostKeyChecking": "no",
    }
    done, _ = refused_mount(rxfs, tmp_path, sshd.url(), options, mode)

    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith(f"rxfs: WARNING: HOST KEY OF [127.0.0.1]:{sshd.port} HAS CHANGED"), line
    assert sshd.host_key_fingerprint in line
    assert f"{known_hosts}:1" in line
    assert known_hosts.read_text() == before


@pytest.mark.parametrize("mode", MODES)
def test_wrong_key_is_one_line_authentication_error(
    sshd: LoopbackSshd, rxfs: Rxfs, tmp_path: Path, mode: str
) -> None:
    wrong_key = keygen(tmp_path / "wrong_ed25519")
    options = {**sshd.mount_options(), "IdentityFile": str(wrong_key)}
    done, _ = refused_mount(rxfs, tmp_path, sshd.url(), options, mode)

    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "authenticat" in line.lower(), line
    assert sshd.user in line


@pytest.mark.parametrize("mode", MODES)
def test_unreachable_host_fails_within_connect_timeout(
    sshd: LoopbackSshd, rxfs: Rxfs, tmp_path: Path, mode: str
) -> None:
    with socket.socket() as probe:  # a port nobody listens on once this socket closes
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"sftp://{sshd.user}@127.0.0.1:{closed_port}/tmp"
    options = {**sshd.mount_options(), "ConnectTimeout": "2"}
    done, elapsed = refused_mount(rxfs, tmp_path, url, options, mode)

    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "127.0.0.1" in line
    assert str(closed_port) in line
    assert elapsed < 2 + 6, f"took {elapsed:.1f} s with ConnectTimeout=2"


def test_silent_server_fails_within_connect_timeout(
    sshd: LoopbackSshd, rxfs: Rxfs, tmp_path: Path
) -> None:
    # A listener that accepts and never speaks: the SSH handshake must time out too.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"sftp://{sshd.user}@127.0.0.1:{silent.getsockname()[1]}/tmp"
        options = {**sshd.mount_options(), "ConnectTimeout": "2"}
        done, elapsed = refused_mount(rxfs, tmp_path, url, options, "background")

    assert done.returncode == 1
    one_line(done.stderr)
    assert 1.5 < elapsed < 2 + 6, f"took {elapsed:.1f} s with ConnectTimeout=2"
