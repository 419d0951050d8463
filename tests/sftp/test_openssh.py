"""The openssh transport and ``-o transport=auto`` (the default), against the loopback
sshd: SFTP over the system's ssh client, the fallback to paramiko, and host keys judged
alike by both transports."""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
from rxfs.minirdr.sftp import _pool
from rxfs.minirdr.sftp._engine import SftpSession
from rxfs.minirdr.sftp._openssh import open_openssh_session, ssh_argv
from rxfs.minirdr.sftp._pipes import PipeLink
from rxfs.minirdr.sftp._pool import Transport
from rxfs.minirdr.sftp._remotefile import RemoteFile
from rxfs.minirdr.sftp._settings import ConnectSettings, HostKeyPolicy, resolve_settings
from rxfs.minirdr.sftp._wire import OpenFlags
from rxfs.minirdr.sftp.loopback import LoopbackSshd
from rxfs.rdbss import NtStatus, NtStatusError
from rxfs.rdbss.irp import CreateDisposition

from tests.sftp.test_minirdr import mount_error, mounted, trio_test
from tests.support.checklogs import RECONNECTS
from tests.support.sshd import impostor_line, keygen
from tests.unit._harness import close, open_file, read_bytes, stat_path, write

pytestmark = pytest.mark.sshd

TRANSPORTS = ["paramiko", "openssh"]


async def _session(server: LoopbackSshd, **options: str) -> SftpSession:
    settings = resolve_settings(urlsplit(server.url()), {**server.mount_options(), **options})
    token = trio.lowlevel.current_trio_token()
    return await trio.to_thread.run_sync(lambda: open_openssh_session(settings, token))


@pytest.mark.parametrize(
    ("policy", "ssh_policy"),
    [("yes", "yes"), ("accept-new", "yes"), ("no", "accept-new")],
)
def test_ssh_argv_passes_the_resolved_settings_and_never_prompts(
    sshd: LoopbackSshd, policy: str, ssh_policy: str
) -> None:
    settings = resolve_settings(
        urlsplit(sshd.url()), {**sshd.mount_options(), "StrictHostKeyChecking": policy}
    )
    argv = ssh_argv(settings)
    assert argv[-4:] == ["-s", "--", "127.0.0.1", "sftp"]
    home_known_hosts = os.path.expanduser("~/.ssh/known_hosts")
    known_hosts = f"{sshd.known_hosts_path} {home_known_hosts}"
    if settings.strict_host_key_checking is HostKeyPolicy.NO:
        known_hosts = f"/dev/null {known_hosts}"  # what ssh adds is recorded nowhere
    for option in (
        "-oBatchMode=yes",
        f"-oPort={sshd.port}",
        f"-oUser={sshd.user}",
        f"-oIdentityFile={sshd.client_key_path}",
        f"-oUserKnownHostsFile={known_hosts}",
        f"-oStrictHostKeyChecking={ssh_policy}",
        "-oCheckHostIP=no",
        "-oUpdateHostKeys=no",
    ):
        assert option in argv


@trio_test
async def test_a_session_over_ssh_writes_and_reads_large_files(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    workdir = sshd.root / tmp_path.name
    workdir.mkdir()
    data = os.urandom(5 * 1024 * 1024 + 11)
    session = await _session(sshd)
    try:
        remote, _ = await RemoteFile.open(
            session,
            str(workdir / "f"),
            OpenFlags.SSH_FXF_READ | OpenFlags.SSH_FXF_WRITE | OpenFlags.SSH_FXF_CREAT,
            0o644,
        )
        await remote.write(0, data)
        assert await remote.read(0, len(data) + 10) == data
        await remote.close()
        assert session.stats.largest_write_request == session.max_write > 32768
    finally:
        session.close()
        await trio.to_thread.run_sync(session.join)
    assert (workdir / "f").read_bytes() == data


@trio_test
async def test_a_wrong_key_is_a_logon_failure(sshd: LoopbackSshd, tmp_path: Path) -> None:
    stranger = tmp_path / "id_ed25519"
    await trio.run_process(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)])
    with pytest.raises(NtStatusError) as refused:
        await _session(sshd, IdentityFile=str(stranger))
    assert refused.value.status == NtStatus.STATUS_LOGON_FAILURE


@trio_test
async def test_the_mini_redirector_runs_on_the_openssh_transport(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    share = sshd.root / tmp_path.name
    share.mkdir()
    big = os.urandom(3 * 1024 * 1024 + 5)
    async with mounted(sshd, share, transport="openssh", max_conns="1") as (device, minirdr):
        assert minirdr.pool.transports == []
        fobx = await open_file(device, "/f", CreateDisposition.FILE_CREATE)
        assert (await write(device, fobx, 0, big)).information == len(big)
        assert await read_bytes(device, fobx, 0, len(big)) == big
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
    assert (share / "f").read_bytes() == big


@trio_test
async def test_an_unknown_transport_is_an_invalid_parameter(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    share = sshd.root / tmp_path.name
    share.mkdir()
    failure = await mount_error(sshd, share, transport="telnet")
    assert failure.status == NtStatus.STATUS_INVALID_PARAMETER
    assert str(failure) == "-o transport=telnet: expected auto, openssh or paramiko"
    failure = await mount_error(sshd, share, ssh_command="ssh -o 'unbalanced")
    assert failure.status == NtStatus.STATUS_INVALID_PARAMETER
    assert "-o ssh_command=ssh -o 'unbalanced: expected a command" in str(failure)


@pytest.mark.expect_log(*RECONNECTS)
@trio_test
async def test_a_dropped_ssh_connection_is_reconnected(sshd: LoopbackSshd, tmp_path: Path) -> None:
    share = sshd.root / tmp_path.name
    share.mkdir()
    async with mounted(sshd, share, transport="openssh", max_conns="1") as (device, minirdr):
        lost = minirdr.pool
        assert sshd.drop_connections() >= 1
        status, _ = await stat_path(device, "/")
        assert status == NtStatus.STATUS_SUCCESS
        assert device.reconnector.reconnects == 1
        # The lost connection's ssh processes were reaped, their pipes closed.
        for session in lost.sessions:
            assert isinstance(session.link, PipeLink)
            assert session.link.process.returncode is not None


# -- host keys: one set of rules, one set of words, on both transports ---------------------


@pytest.fixture
def share(sshd: LoopbackSshd, tmp_path: Path) -> Path:
    path = sshd.root / tmp_path.name
    path.mkdir()
    return path


def _unknown_key_message(sshd: LoopbackSshd, name: str | None = None) -> str:
    return (
        f"host key of {name or f'[127.0.0.1]:{sshd.port}'} is unknown (ssh-ed25519 "
        f"{sshd.host_key_fingerprint}): check the fingerprint with the server's admin, then "
        "connect once with -o StrictHostKeyChecking=accept-new to add it to known_hosts"
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test
async def test_an_unknown_host_key_is_refused_in_the_same_words(
    sshd: LoopbackSshd, share: Path, tmp_path: Path, transport: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    failure = await mount_error(
        sshd, share, transport=transport, UserKnownHostsFile=str(known_hosts)
    )
    assert failure.status == NtStatus.STATUS_ACCESS_DENIED
    assert str(failure) == _unknown_key_message(sshd)
    assert known_hosts.read_text() == ""


@pytest.mark.parametrize("policy", ["yes", "accept-new", "no"])
@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test
async def test_a_changed_host_key_is_refused_in_the_same_words_whatever_the_policy(
    sshd: LoopbackSshd, share: Path, tmp_path: Path, transport: str, policy: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(impostor_line(sshd, tmp_path))
    before = known_hosts.read_text()
    failure = await mount_error(
        sshd,
        share,
        transport=transport,
        UserKnownHostsFile=str(known_hosts),
        StrictHostKeyChecking=policy,
    )
    name = f"[127.0.0.1]:{sshd.port}"
    assert failure.status == NtStatus.STATUS_ACCESS_DENIED
    assert str(failure) == (
        f"WARNING: HOST KEY OF {name} HAS CHANGED, now ssh-ed25519 "
        f"{sshd.host_key_fingerprint}, which does not match {known_hosts}:1: someone may be "
        "intercepting the connection; if the server's key really changed, remove the old "
        f"line with: ssh-keygen -R '{name}' -f {known_hosts}"
    )
    assert known_hosts.read_text() == before


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test
async def test_a_revoked_host_key_is_refused_in_the_same_words(
    sshd: LoopbackSshd, share: Path, tmp_path: Path, transport: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    line = sshd.known_hosts_path.read_text()
    known_hosts.write_text(f"@revoked * {line.split(' ', 1)[1]}{line}")
    failure = await mount_error(
        sshd, share, transport=transport, UserKnownHostsFile=str(known_hosts)
    )
    assert failure.status == NtStatus.STATUS_ACCESS_DENIED
    assert str(failure) == (
        f"host key ssh-ed25519 {sshd.host_key_fingerprint} of [127.0.0.1]:{sshd.port} is "
        f"marked @revoked in {known_hosts}:1: refusing to connect"
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test
async def test_accept_new_records_the_key_alike_and_then_trusts_it(
    sshd: LoopbackSshd,
    share: Path,
    tmp_path: Path,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rxfs.minirdr.sftp")
    known_hosts = tmp_path / "new-dir" / "known_hosts"
    options = {"transport": transport, "UserKnownHostsFile": str(known_hosts)}
    async with mounted(sshd, share, StrictHostKeyChecking="accept-new", **options) as (_, rdr):
        assert rdr.transport is Transport(transport)
    # The line, the file's mode and the log are the same whoever connected.
    assert known_hosts.read_text() == sshd.known_hosts_path.read_text()
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    added = [r.getMessage() for r in caplog.records if r.getMessage().startswith("added host")]
    assert added == [
        f"added host key ssh-ed25519 {sshd.host_key_fingerprint} of [127.0.0.1]:{sshd.port} "
        f"to {known_hosts}"
    ]
    async with mounted(sshd, share, **options):
        pass


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test
async def test_strict_no_accepts_an_unknown_key_and_records_it_nowhere(
    sshd: LoopbackSshd, share: Path, tmp_path: Path, transport: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    options = {"UserKnownHostsFile": str(known_hosts), "StrictHostKeyChecking": "no"}
    async with mounted(sshd, share, transport=transport, **options) as (device, _):
        status, _ = await stat_path(device, "/")
        assert status == NtStatus.STATUS_SUCCESS
    assert not known_hosts.exists()


@pytest.mark.parametrize("transport", TRANSPORTS)
@trio_test
async def test_a_host_key_alias_is_looked_up_without_the_port_as_ssh_does(
    sshd: LoopbackSshd,
    share: Path,
    tmp_path: Path,
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host 127.0.0.1\n  HostKeyAlias the-alias\n")
    monkeypatch.setenv("HOME", str(home))
    key = sshd.known_hosts_path.read_text().split(" ", 1)[1]
    known_hosts = tmp_path / "known_hosts"
    options = {"transport": transport, "UserKnownHostsFile": str(known_hosts)}
    known_hosts.write_text(f"the-alias {key}")
    async with mounted(sshd, share, **options):
        pass
    known_hosts.write_text(f"[the-alias]:{sshd.port} {key}")
    failure = await mount_error(sshd, share, **options)
    assert str(failure) == _unknown_key_message(sshd, "the-alias")


# -- transport=auto -----------------------------------------------------------------------


@pytest.fixture
def ssh_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The targets the mini-redirector starts ssh for, one entry per ssh process."""
    runs: list[str] = []

    def counted(settings: ConnectSettings, *args: Any, **kwargs: Any) -> SftpSession:
        runs.append(settings.target)
        return open_openssh_session(settings, *args, **kwargs)

    monkeypatch.setattr(_pool, "open_openssh_session", counted)
    return runs


@pytest.fixture
def stranger_key(tmp_path: Path) -> Path:
    """A key no server authorizes: the login has to be by password."""
    return keygen(tmp_path / "stranger")


class _Terminal(io.StringIO):
    """Standard input as a terminal: the paramiko path may prompt (getpass)."""

    def isatty(self) -> bool:
        return True


@trio_test
async def test_auto_picks_openssh_when_ssh_is_on_path(
    sshd: LoopbackSshd, share: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rxfs.minirdr.sftp")
    async with mounted(sshd, share) as (device, minirdr):
        assert minirdr.transport is Transport.OPENSSH
        assert minirdr.pool.transports == []
        assert all(isinstance(session.link, PipeLink) for session in minirdr.pool.sessions)
        fobx = await open_file(device, "/f", CreateDisposition.FILE_CREATE)
        assert (await write(device, fobx, 0, b"over ssh")).information == 8
        assert await close(device, fobx) == NtStatus.STATUS_SUCCESS
    assert (share / "f").read_bytes() == b"over ssh"
    assert any("through openssh (found /usr/bin/ssh)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("no_ssh", ["PATH", "ssh_command"])
@trio_test
async def test_auto_uses_paramiko_when_there_is_no_ssh_client(
    sshd: LoopbackSshd,
    share: Path,
    no_ssh: str,
    *,
    monkeypatch: pytest.MonkeyPatch,
    ssh_runs: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="rxfs.minirdr.sftp")
    options = {}
    if no_ssh == "PATH":
        monkeypatch.setenv("PATH", str(share))  # a directory without ssh
        reason = "no ssh on PATH"
    else:
        options["ssh_command"] = "/no/such/ssh -v"
        reason = "no /no/such/ssh on PATH"
    async with mounted(sshd, share, **options) as (device, minirdr):
        assert minirdr.transport is Transport.PARAMIKO
        status, _ = await stat_path(device, "/")
        assert status == NtStatus.STATUS_SUCCESS
    assert ssh_runs == []
    assert any(f"through paramiko ({reason})" in r.getMessage() for r in caplog.records)


@trio_test
async def test_auto_with_password_stdin_logs_in_with_paramiko_at_once(
    sshd_user: LoopbackSshd,
    stranger_key: Path,
    monkeypatch: pytest.MonkeyPatch,
    ssh_runs: list[str],
) -> None:
    assert sshd_user.password is not None
    monkeypatch.setattr("sys.stdin", io.StringIO(sshd_user.password + "\n"))
    options = {"password_stdin": "", "IdentityFile": str(stranger_key)}
    async with mounted(sshd_user, sshd_user.root, **options) as (device, minirdr):
        assert minirdr.transport is Transport.PARAMIKO
        status, _ = await stat_path(device, "/")
        assert status == NtStatus.STATUS_SUCCESS
    assert ssh_runs == []


@pytest.mark.expect_log(*RECONNECTS)
@trio_test
async def test_auto_falls_back_to_paramiko_for_a_password_login_and_keeps_it(
    sshd_user: LoopbackSshd,
    stranger_key: Path,
    monkeypatch: pytest.MonkeyPatch,
    ssh_runs: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = sshd_user.password
    assert password is not None
    prompts: list[str] = []

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        return password

    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", getpass)
    caplog.set_level(logging.DEBUG, logger="rxfs.minirdr.sftp")
    options = {"IdentityFile": str(stranger_key), "max_conns": "1"}
    async with mounted(sshd_user, sshd_user.root, **options) as (device, minirdr):
        assert minirdr.transport is Transport.PARAMIKO
        messages = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("ssh could not log in to ") for m in messages), messages
        assert any("through paramiko (ssh could not log in)" in m for m in messages)
        # A reconnect goes straight to paramiko, and the password is not asked again.
        for transport in minirdr.pool.transports:
            transport.close()
        await trio.sleep(0.2)
        status, _ = await stat_path(device, "/not-cached")  # has to ask the server
        assert status == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
        assert device.reconnector.reconnects == 1
        assert minirdr.transport is Transport.PARAMIKO
    assert ssh_runs == [f"{sshd_user.user}@127.0.0.1:{sshd_user.port}"]
    assert prompts == [f"{sshd_user.user}@127.0.0.1's password: "]


@trio_test
async def test_explicit_openssh_never_falls_back(
    sshd_user: LoopbackSshd,
    stranger_key: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", pytest.fail)
    options = {"IdentityFile": str(stranger_key), "transport": "openssh"}
    failure = await mount_error(sshd_user, sshd_user.root, **options)
    assert failure.status == NtStatus.STATUS_LOGON_FAILURE
    assert "Permission denied" in str(failure)


@trio_test
async def test_auto_falls_back_to_paramiko_for_a_key_with_a_passphrase(
    sshd: LoopbackSshd, share: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passphrase = "correct horse battery"
    locked = tmp_path / "locked"
    await trio.run_process(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(locked)]
    )
    prompts: list[str] = []

    def getpass(prompt: str) -> str:
        prompts.append(prompt)
        return passphrase

    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", getpass)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    authorized_keys = sshd.state_dir / "authorized_keys"
    before = authorized_keys.read_text()
    authorized_keys.write_text(before + locked.with_suffix(".pub").read_text())
    try:
        async with mounted(sshd, share, IdentityFile=str(locked)) as (device, minirdr):
            assert minirdr.transport is Transport.PARAMIKO
            status, _ = await stat_path(device, "/")
            assert status == NtStatus.STATUS_SUCCESS
    finally:
        authorized_keys.write_text(before)
    # Asked once for the mount's two connections.
    assert prompts == [f"Enter passphrase for key '{locked}': "]
