"""LoopbackSshd: the throwaway server the sftp tests and the quick start rely on."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys

import paramiko
import pytest
from rxfs.minirdr.sftp import loopback
from rxfs.minirdr.sftp.loopback import LoopbackSshd, SshdError, SshdNotFoundError


def _ssh_run(server: LoopbackSshd, command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` through the real OpenSSH client with strict host key checking."""
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(server.client_key_path),
            "-o",
            f"UserKnownHostsFile={server.known_hosts_path}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-p",
            str(server.port),
            f"{server.user}@{server.host}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _paramiko_client(server: LoopbackSshd, **auth: str) -> paramiko.SSHClient:
    """A paramiko client logged in to ``server`` with ``auth`` only (no agent, no keys of
    the user's own), trusting the server's host key from its known_hosts."""
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(server.known_hosts_path))
        client.connect(
            server.host,
            server.port,
            server.user,
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
            **auth,
        )
    except BaseException:
        client.close()
        raise
    return client


def test_openssh_client_logs_in_with_the_throwaway_key_and_trusts_the_host(
    sshd: LoopbackSshd,
) -> None:
    result = _ssh_run(sshd, "echo hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"


def test_host_key_fingerprint_matches_ssh_keygen(sshd: LoopbackSshd) -> None:
    listing = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(sshd.known_hosts_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sshd.host_key_fingerprint.startswith("SHA256:")
    assert sshd.host_key_fingerprint in listing.stdout
    assert f"[127.0.0.1]:{sshd.port}" in listing.stdout


def test_url_and_mount_options_point_at_the_served_root(sshd: LoopbackSshd) -> None:
    assert sshd.host == "127.0.0.1"
    assert sshd.url() == f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{sshd.root}"
    assert sshd.url("/a/b") == f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{sshd.root}/a/b"
    assert sshd.mount_options() == {
        "IdentityFile": str(sshd.client_key_path),
        "UserKnownHostsFile": str(sshd.known_hosts_path),
    }
    assert sshd.mount_option_args() == [
        "-o",
        f"IdentityFile={sshd.client_key_path},UserKnownHostsFile={sshd.known_hosts_path}",
    ]


def test_sftp_subsystem_serves_the_root_directory(sshd: LoopbackSshd) -> None:
    (sshd.root / "seen-by-sftp").write_bytes(b"payload")
    with (
        _paramiko_client(sshd, key_filename=str(sshd.client_key_path)) as client,
        client.open_sftp() as sftp,
        sftp.open(f"{sshd.root}/seen-by-sftp") as f,
    ):
        assert f.read() == b"payload"


def test_non_root_account_logs_in_by_key_and_owns_its_root(sshd_user: LoopbackSshd) -> None:
    result = _ssh_run(sshd_user, "id -un && touch " + str(sshd_user.root / "made-by-user"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{sshd_user.user}\n"
    assert (sshd_user.root / "made-by-user").stat().st_uid == sshd_user.root.stat().st_uid
    assert sshd_user.root.stat().st_uid != 0


def test_non_root_account_logs_in_by_password(sshd_user: LoopbackSshd) -> None:
    assert sshd_user.password is not None
    with _paramiko_client(sshd_user, password=sshd_user.password) as client:
        assert client.get_transport() is not None
        with pytest.raises(paramiko.AuthenticationException):
            _paramiko_client(sshd_user, password=sshd_user.password + "-wrong")


def test_root_password_login_is_refused_by_the_default_server(sshd: LoopbackSshd) -> None:
    with paramiko.Transport((sshd.host, sshd.port)) as transport:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password(sshd.user, "anything")
    assert "password" not in refused.value.allowed_types


def test_drop_connections_cuts_sessions_but_keeps_listening(sshd: LoopbackSshd) -> None:
    with _paramiko_client(sshd, key_filename=str(sshd.client_key_path)) as client:
        transport = client.get_transport()
        assert transport is not None
        assert sshd.drop_connections() >= 1
        transport.join(timeout=10)
        assert not transport.is_active()
    assert _ssh_run(sshd, "true").returncode == 0


def test_stop_kills_sshd_and_removes_its_files() -> None:
    server = LoopbackSshd()
    server.start()
    pid, state, root, port = server.pid, server.state_dir, server.root, server.port
    server.stop()
    assert not state.exists()
    assert not root.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=5),
    ):
        pass


def test_start_failure_shows_sshd_stderr() -> None:
    server = LoopbackSshd(extra_config=("NoSuchKeyword yes",))
    with pytest.raises(SshdError, match="NoSuchKeyword"):
        server.start()
    assert server._state_dir is None


def test_unknown_account_is_a_clear_error() -> None:
    with pytest.raises(SshdError, match="no account 'rxfs-no-such-user'"):
        LoopbackSshd("rxfs-no-such-user").start()


def test_missing_sshd_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setattr(loopback, "SSHD_PATH", str(tmp_path / "sshd"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SshdNotFoundError, match=r"apt-get install openssh-server"):
        LoopbackSshd().start()


def test_command_line_server_prints_how_to_mount_and_cleans_up_on_sigterm() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "rxfs.minirdr.sftp.loopback"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url_line = server.stdout.readline()
        mount_line = server.stdout.readline()
        assert url_line.startswith("sftp URL: sftp://")
        assert "rxfs mount sftp://" in mount_line
        assert "-o IdentityFile=" in mount_line
        state_dir = pathlib.Path(mount_line.split("IdentityFile=")[1].split(",")[0]).parent
        assert state_dir.is_dir()
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=15) == 0
        if server.stdout is not None:
            server.stdout.close()
    assert not state_dir.exists()


def test_shared_password_is_stable_and_root_only() -> None:
    first = loopback.shared_password("rxfs-test")
    assert first == loopback.shared_password("rxfs-test")
    assert len(first) >= 16
    stored = loopback._PASSWORD_DIR / "rxfs-test.password"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(loopback._PASSWORD_DIR.stat().st_mode) == 0o700
    try:
        assert loopback.shared_password("rxfs-other") != first
    finally:
        (loopback._PASSWORD_DIR / "rxfs-other.password").unlink()
