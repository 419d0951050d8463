"""SSH connection and trust: settings, host key checking and login against a real sshd."""

from __future__ import annotations

import io
import logging
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paramiko
import pytest
from rxfs.minirdr.sftp._connect import Credentials, open_transport
from rxfs.minirdr.sftp._settings import (
    CONNECT_OPTIONS,
    ConnectSettings,
    HostKeyPolicy,
    resolve_settings,
)
from rxfs.minirdr.sftp.loopback import LoopbackSshd
from rxfs.rdbss import NtStatus, NtStatusError

from tests.support.sshd import impostor_line, keygen


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the real ~/.ssh and any ssh agent out of every test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def _settings(server: LoopbackSshd, path: str = "", **options: str) -> ConnectSettings:
    merged = {**server.mount_options(), **options}
    return resolve_settings(urllib.parse.urlsplit(server.url(path)), merged)


@contextmanager
def _connected(settings: ConnectSettings, **kwargs: Any) -> Iterator[paramiko.Transport]:
    transport = open_transport(settings, **kwargs)
    try:
        yield transport
    finally:
        transport.close()


def _refused(settings: ConnectSettings, **kwargs: Any) -> NtStatusError:
    with pytest.raises(NtStatusError) as refused, _connected(settings, **kwargs):
        pass
    return refused.value


@contextmanager
def _authorized(server: LoopbackSshd, key: Path) -> Iterator[None]:
    """Let ``key`` log in to ``server`` for the duration of the block."""
    authorized_keys = server.state_dir / "authorized_keys"
    before = authorized_keys.read_text()
    authorized_keys.write_text(before + key.with_suffix(".pub").read_text())
    try:
        yield
    finally:
        authorized_keys.write_text(before)


def _no_prompt(prompt: str) -> str:
    raise AssertionError(f"unexpected prompt {prompt!r}")


# -- logging in ----------------------------------------------------------------------


def test_key_login_gives_a_working_sftp_session(sshd: LoopbackSshd) -> None:
    (sshd.root / "hello.txt").write_bytes(b"hello")
    settings = _settings(sshd)
    assert settings.remote_path == str(sshd.root)
    with _connected(settings, password_prompt=_no_prompt) as transport:
        assert transport.is_authenticated()
        with paramiko.SFTPClient.from_transport(transport) as sftp:
            assert "hello.txt" in sftp.listdir(settings.remote_path)


def test_default_key_in_home_ssh_dir_is_used(sshd: LoopbackSshd, private_home: Path) -> None:
    ssh_dir = private_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "id_ed25519").write_bytes(sshd.client_key_path.read_bytes())
    settings = resolve_settings(
        urllib.parse.urlsplit(sshd.url()), {"UserKnownHostsFile": str(sshd.known_hosts_path)}
    )
    assert settings.identity_files == ()
    with _connected(settings) as transport:
        assert transport.is_authenticated()


def test_agent_key_is_used(
    sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(agent_socket)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not agent_socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        env = {**os.environ, "SSH_AUTH_SOCK": str(agent_socket)}
        subprocess.run(
            ["ssh-add", "-q", str(sshd.client_key_path)], env=env, check=True, timeout=10
        )
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent_socket))
        settings = resolve_settings(
            urllib.parse.urlsplit(sshd.url()),
            {"UserKnownHostsFile": str(sshd.known_hosts_path)},
        )
        with _connected(settings) as transport:
            assert transport.is_authenticated()
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_wrong_key_is_a_logon_failure_naming_the_keys_tried(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    stranger = keygen(tmp_path / "stranger")
    error = _refused(_settings(sshd, IdentityFile=str(stranger)))
    assert error.status == NtStatus.STATUS_LOGON_FAILURE
    assert f"authentication failed for {sshd.user}@127.0.0.1" in error.message
    assert f"publickey ({stranger})" in error.message
    assert "\n" not in error.message


def test_encrypted_key_asks_for_its_passphrase(sshd: LoopbackSshd, tmp_path: Path) -> None:
    passphrase = "correct horse battery"
    locked = keygen(tmp_path / "locked", passphrase)
    settings = _settings(sshd, IdentityFile=str(locked))
    assert settings.identity_files == (str(locked),)
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return passphrase

    with _authorized(sshd, locked):
        credentials = Credentials()
        with _connected(settings, passphrase_prompt=ask, credentials=credentials) as transport:
            assert transport.is_authenticated()
        assert prompts == [f"Enter passphrase for key '{locked}': "]
        # A second connection of the same mount does not ask again.
        with _connected(settings, passphrase_prompt=_no_prompt, credentials=credentials):
            pass

        error = _refused(settings, passphrase_prompt=lambda _prompt: "wrong guess")
        assert error.status == NtStatus.STATUS_LOGON_FAILURE
        assert f"{locked} (wrong passphrase)" in error.message
        assert "wrong guess" not in error.message

        # Under pytest stdin is no terminal: nobody to ask, so the key is skipped.
        error = _refused(settings)
        assert f"{locked} (encrypted, no terminal" in error.message


def test_password_login_with_a_prompt(sshd_user: LoopbackSshd) -> None:
    password = sshd_user.password
    assert password is not None
    settings = resolve_settings(
        urllib.parse.urlsplit(sshd_user.url()),
        {"UserKnownHostsFile": str(sshd_user.known_hosts_path)},
    )
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return password

    credentials = Credentials()
    with _connected(settings, password_prompt=ask, credentials=credentials) as transport:
        assert transport.is_authenticated()
        assert transport.get_username() == sshd_user.user
    assert prompts == [f"{sshd_user.user}@127.0.0.1's password: "]
    assert password not in repr(credentials)
    with _connected(settings, password_prompt=_no_prompt, credentials=credentials):
        pass


def test_password_stdin_reads_the_first_line(
    sshd_user: LoopbackSshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sshd_user.password is not None
    monkeypatch.setattr(sys, "stdin", io.StringIO(sshd_user.password + "\nnot read\n"))
    settings = resolve_settings(
        urllib.parse.urlsplit(sshd_user.url()),
        {"UserKnownHostsFile": str(sshd_user.known_hosts_path), "password_stdin": ""},
    )
    assert settings.password_stdin
    with _connected(settings) as transport:
        assert transport.is_authenticated()
    assert sys.stdin.read() == "not read\n"


def test_wrong_password_is_a_logon_failure(sshd_user: LoopbackSshd) -> None:
    settings = resolve_settings(
        urllib.parse.urlsplit(sshd_user.url()),
        {"UserKnownHostsFile": str(sshd_user.known_hosts_path)},
    )
    error = _refused(settings, password_prompt=lambda _prompt: "not-the-password")
    assert error.status == NtStatus.STATUS_LOGON_FAILURE
    assert error.message.startswith(f"authentication failed for {sshd_user.user}@127.0.0.1")
    assert "password" in error.message
    assert "not-the-password" not in error.message


def test_no_password_source_is_a_logon_failure_that_says_so(sshd_user: LoopbackSshd) -> None:
    settings = resolve_settings(
        urllib.parse.urlsplit(sshd_user.url()),
        {"UserKnownHostsFile": str(sshd_user.known_hosts_path)},
    )
    error = _refused(settings)
    assert error.status == NtStatus.STATUS_LOGON_FAILURE
    assert "no key or password to try" in error.message


def test_password_never_reaches_a_log_or_a_message(
    sshd_user: LoopbackSshd, caplog: pytest.LogCaptureFixture
) -> None:
    password = sshd_user.password
    assert password is not None
    settings = resolve_settings(
        urllib.parse.urlsplit(sshd_user.url()),
        {"UserKnownHostsFile": str(sshd_user.known_hosts_path)},
    )
    wrong = password + "-but-wrong"
    caplog.set_level(logging.DEBUG)
    with _connected(settings, password_prompt=lambda _prompt: password):
        pass
    error = _refused(settings, password_prompt=lambda _prompt: wrong)
    assert any(r.name.startswith("paramiko") for r in caplog.records)  # DEBUG was on
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + str(record.exc_info)
        assert password not in text
    assert password not in str(error)
    assert wrong not in str(error)


# -- host keys -----------------------------------------------------------------------


def test_unknown_host_key_is_refused_naming_host_and_fingerprint(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    error = _refused(_settings(sshd, UserKnownHostsFile=str(tmp_path / "known_hosts")))
    assert error.status == NtStatus.STATUS_ACCESS_DENIED
    assert f"[127.0.0.1]:{sshd.port}" in error.message
    assert sshd.host_key_fingerprint in error.message
    assert "-o StrictHostKeyChecking=accept-new" in error.message
    assert not (tmp_path / "known_hosts").exists()


def test_accept_new_adds_the_key_and_later_connections_trust_it(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "new-dir" / "known_hosts"
    with _connected(
        _settings(sshd, UserKnownHostsFile=str(known_hosts), StrictHostKeyChecking="accept-new")
    ):
        pass
    assert known_hosts.read_text() == sshd.known_hosts_path.read_text()
    assert stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
    with _connected(_settings(sshd, UserKnownHostsFile=str(known_hosts))):
        pass
    with _connected(
        _settings(sshd, UserKnownHostsFile=str(known_hosts), StrictHostKeyChecking="accept-new")
    ):
        pass
    assert len(known_hosts.read_text().splitlines()) == 1


def test_strict_no_accepts_an_unknown_key_without_recording_it(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    with _connected(
        _settings(sshd, UserKnownHostsFile=str(known_hosts), StrictHostKeyChecking="no")
    ):
        pass
    assert not known_hosts.exists()


@pytest.mark.parametrize("policy", ["yes", "accept-new", "no"])
def test_changed_host_key_is_always_refused(
    sshd: LoopbackSshd, tmp_path: Path, policy: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(impostor_line(sshd, tmp_path))
    before = known_hosts.read_text()
    error = _refused(
        _settings(sshd, UserKnownHostsFile=str(known_hosts), StrictHostKeyChecking=policy)
    )
    assert error.status == NtStatus.STATUS_ACCESS_DENIED
    assert "HAS CHANGED" in error.message
    assert sshd.host_key_fingerprint in error.message
    assert f"{known_hosts}:1" in error.message
    assert known_hosts.read_text() == before


def test_a_match_in_any_known_hosts_file_is_enough(
    sshd: LoopbackSshd, tmp_path: Path, private_home: Path
) -> None:
    # A match in any known_hosts file is enough, as with ssh: a stale line in
    # ~/.ssh/known_hosts does not block a host the configured file knows.
    (private_home / ".ssh").mkdir()
    (private_home / ".ssh" / "known_hosts").write_text(impostor_line(sshd, tmp_path))
    with _connected(_settings(sshd)):
        pass


def test_hashed_known_hosts_entries_are_understood(sshd: LoopbackSshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_path.read_text())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known_hosts)], check=True)
    assert known_hosts.read_text().startswith("|1|")
    with _connected(_settings(sshd, UserKnownHostsFile=str(known_hosts))):
        pass

    impostor = tmp_path / "impostor_known_hosts"
    impostor.write_text(impostor_line(sshd, tmp_path))
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(impostor)], check=True)
    error = _refused(_settings(sshd, UserKnownHostsFile=str(impostor)))
    assert "HAS CHANGED" in error.message


def test_wildcard_and_negated_patterns(sshd: LoopbackSshd, tmp_path: Path) -> None:
    key = sshd.known_hosts_path.read_text().split(" ", 1)[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.*]:{sshd.port} {key}")
    with _connected(_settings(sshd, UserKnownHostsFile=str(known_hosts))):
        pass
    known_hosts.write_text(f"[127.0.0.*]:{sshd.port},![127.0.0.1]:{sshd.port} {key}")
    error = _refused(_settings(sshd, UserKnownHostsFile=str(known_hosts)))
    assert "is unknown" in error.message


def test_revoked_host_key_is_refused(sshd: LoopbackSshd, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    line = sshd.known_hosts_path.read_text()
    known_hosts.write_text(f"@revoked * {line.split(' ', 1)[1]}{line}")
    error = _refused(_settings(sshd, UserKnownHostsFile=str(known_hosts)))
    assert error.status == NtStatus.STATUS_ACCESS_DENIED
    assert "@revoked" in error.message


# -- reaching the server -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_closed_port_is_connection_refused(sshd: LoopbackSshd) -> None:
    port = _free_port()
    settings = resolve_settings(
        urllib.parse.urlsplit(f"sftp://root@127.0.0.1:{port}/"), sshd.mount_options()
    )
    error = _refused(settings)
    assert error.status == NtStatus.STATUS_CONNECTION_REFUSED
    assert f"127.0.0.1:{port}" in error.message


def test_silent_server_times_out_within_connect_timeout(sshd: LoopbackSshd) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel completes the handshake; nobody ever speaks SSH
        port = silent.getsockname()[1]
        settings = resolve_settings(
            urllib.parse.urlsplit(f"sftp://root@127.0.0.1:{port}/"),
            {**sshd.mount_options(), "ConnectTimeout": "1"},
        )
        started = time.monotonic()
        error = _refused(settings)
        elapsed = time.monotonic() - started
    assert error.status == NtStatus.STATUS_IO_TIMEOUT
    assert f"cannot reach 127.0.0.1:{port} within 1s" in error.message
    assert elapsed < 3


# -- settings ------------------------------------------------------------------------


def _write_config(tmp_path: Path, text: str) -> str:
    config = tmp_path / "ssh_config"
    config.write_text(text)
    return str(config)


def test_ssh_config_alias_is_honoured(sshd: LoopbackSshd, tmp_path: Path) -> None:
    config = _write_config(
        tmp_path,
        f"Host myserver\n"
        f"  HostName 127.0.0.1\n"
        f"  User {sshd.user}\n"
        f"  Port {sshd.port}\n"
        f"  IdentityFile {sshd.client_key_path}\n"
        f"  UserKnownHostsFile {sshd.known_hosts_path}\n"
        f"  ServerAliveInterval 5\n",
    )
    settings = resolve_settings(urllib.parse.urlsplit("sftp://myserver/srv/data"), {}, config)
    assert settings.host == "myserver"
    assert settings.hostname == "127.0.0.1"
    assert settings.user == sshd.user
    assert settings.port == sshd.port
    assert settings.identity_files == (str(sshd.client_key_path),)
    assert settings.known_hosts_files == (str(sshd.known_hosts_path),)
    assert settings.server_alive_interval == 5
    assert settings.remote_path == "/srv/data"
    with _connected(settings) as transport:
        assert transport.is_authenticated()


def test_home_ssh_config_is_read_by_default(private_home: Path) -> None:
    (private_home / ".ssh").mkdir()
    (private_home / ".ssh" / "config").write_text("Host box\n  HostName 127.0.0.9\n  Port 2222\n")
    settings = resolve_settings(urllib.parse.urlsplit("sftp://box"), {})
    assert (settings.hostname, settings.port) == ("127.0.0.9", 2222)
    assert settings.known_hosts_name == "[127.0.0.9]:2222"
    assert settings.known_hosts_files == (str(private_home / ".ssh" / "known_hosts"),)


def test_url_beats_options_beat_ssh_config(tmp_path: Path) -> None:
    config = _write_config(
        tmp_path,
        "Host box\n  User config-user\n  Port 2200\n  ConnectTimeout 7\n"
        "  StrictHostKeyChecking accept-new\n",
    )
    options = {"User": "option-user", "Port": "2201", "ConnectTimeout": "3"}
    settings = resolve_settings(urllib.parse.urlsplit("sftp://box/x"), options, config)
    assert (settings.user, settings.port, settings.connect_timeout) == ("option-user", 2201, 3)
    assert settings.strict_host_key_checking is HostKeyPolicy.ACCEPT_NEW
    settings = resolve_settings(
        urllib.parse.urlsplit("sftp://url-user@box:2202/x"), options, config
    )
    assert (settings.user, settings.port) == ("url-user", 2202)
    settings = resolve_settings(urllib.parse.urlsplit("sftp://box/x"), {}, config)
    assert (settings.user, settings.port, settings.connect_timeout) == ("config-user", 2200, 7)


def test_defaults_and_option_names_are_case_insensitive() -> None:
    settings = resolve_settings(urllib.parse.urlsplit("sftp://127.0.0.1"), {})
    assert settings.port == 22
    assert settings.known_hosts_name == "127.0.0.1"
    assert settings.remote_path == "."
    assert settings.strict_host_key_checking is HostKeyPolicy.YES
    assert (settings.connect_timeout, settings.server_alive_interval) == (15, 15)
    assert settings.proxy_command is None
    assert not settings.password_stdin
    settings = resolve_settings(
        urllib.parse.urlsplit("sftp://127.0.0.1/~/sub%20dir"),
        {"stricthostkeychecking": "no", "serveraliveinterval": "0", "unrelated": "x"},
    )
    assert settings.strict_host_key_checking is HostKeyPolicy.NO
    assert settings.server_alive_interval == 0
    assert settings.remote_path == "sub dir"


def test_every_connect_option_is_understood(tmp_path: Path) -> None:
    key = keygen(tmp_path / "key")
    values = {
        "IdentityFile": str(key),
        "UserKnownHostsFile": str(tmp_path / "kh"),
        "StrictHostKeyChecking": "accept-new",
        "ConnectTimeout": "2.5",
        "ServerAliveInterval": "4",
        "Port": "2022",
        "User": "someone",
        "password_stdin": "yes",
    }
    assert set(values) == set(CONNECT_OPTIONS)
    settings = resolve_settings(urllib.parse.urlsplit("sftp://127.0.0.1/"), values)
    assert settings == ConnectSettings(
        host="127.0.0.1",
        hostname="127.0.0.1",
        port=2022,
        user="someone",
        remote_path="/",
        identity_files=(str(key),),
        known_hosts_files=(str(tmp_path / "kh"),),
        strict_host_key_checking=HostKeyPolicy.ACCEPT_NEW,
        connect_timeout=2.5,
        server_alive_interval=4,
        password_stdin=True,
    )


@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        ("sftp://h/", {"Port": "abc"}, "-o Port=abc: expected a port number from 1 to 65535"),
        ("sftp://h/", {"Port": "70000"}, "-o Port=70000: expected a port number"),
        ("sftp://h/", {"Port": "²"}, "-o Port=²: expected a port number"),
        ("sftp://h/", {"User": "a b"}, "-o User=a b: expected a login name"),
        ("sftp://h/", {"StrictHostKeyChecking": "maybe"}, "expected yes, accept-new or no"),
        ("sftp://h/", {"ConnectTimeout": "-1"}, "-o ConnectTimeout=-1: expected a number"),
        ("sftp://h/", {"ConnectTimeout": "soon"}, "-o ConnectTimeout=soon: expected"),
        ("sftp://h/", {"ServerAliveInterval": "-5"}, "-o ServerAliveInterval=-5: expected"),
        ("sftp://h/", {"password_stdin": "maybe"}, "-o password_stdin=maybe: expected"),
        ("sftp://h/", {"IdentityFile": "/no/such/key"}, "-o IdentityFile=/no/such/key: no such"),
        ("sftp://h/", {"User": "x\ny"}, "-o User: the value must be on one line"),
        ("sftp://h:0/", {}, "the port must be a number from 1 to 65535"),
        ("sftp://h:99999/", {}, "the port must be a number from 1 to 65535"),
        ("sftp:///path", {}, "sftp URL needs a host"),
        ("sftp://u:hunter2@h/", {}, "sftp URL must not contain a password"),
    ],
)
def test_bad_values_are_invalid_parameter_with_a_readable_message(
    url: str, options: dict[str, str], expected: str
) -> None:
    with pytest.raises(NtStatusError) as bad:
        resolve_settings(urllib.parse.urlsplit(url), options)
    assert bad.value.status == NtStatus.STATUS_INVALID_PARAMETER
    assert expected in bad.value.message
    assert "hunter2" not in bad.value.message
    assert "\n" not in bad.value.message


def test_bad_ssh_config_value_names_the_file(tmp_path: Path) -> None:
    config = _write_config(tmp_path, "Host h\n  Port twenty-two\n")
    with pytest.raises(NtStatusError) as bad:
        resolve_settings(urllib.parse.urlsplit("sftp://h/"), {}, config)
    assert bad.value.status == NtStatus.STATUS_INVALID_PARAMETER
    assert f"Port twenty-two in {config}: expected a port number" in bad.value.message


def test_proxy_command_from_ssh_config(sshd: LoopbackSshd, tmp_path: Path) -> None:
    # The proxy is OpenSSH's own client forwarding through the same loopback sshd.
    config = _write_config(
        tmp_path,
        f"Host viaproxy\n"
        f"  HostName 127.0.0.1\n"
        f"  Port {sshd.port}\n"
        f"  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key_path}\n"
        f"  UserKnownHostsFile {sshd.known_hosts_path}\n"
        f"  ProxyCommand ssh -F /dev/null -i {sshd.client_key_path} -o BatchMode=yes"
        f" -o UserKnownHostsFile={sshd.known_hosts_path} -p {sshd.port} -W %h:%p"
        f" {sshd.user}@127.0.0.1\n",
    )
    settings = resolve_settings(urllib.parse.urlsplit("sftp://viaproxy/"), {}, config)
    assert settings.proxy_command is not None
    assert f"-W 127.0.0.1:{sshd.port}" in settings.proxy_command
    with _connected(settings) as transport:
        assert transport.is_authenticated()


def test_failing_proxy_command_reports_what_it_said(sshd: LoopbackSshd, tmp_path: Path) -> None:
    config = _write_config(
        tmp_path, "Host broken\n  ProxyCommand echo proxy is down >&2; exit 1\n"
    )
    settings = resolve_settings(urllib.parse.urlsplit("sftp://broken/"), {}, config)
    error = _refused(settings)
    assert error.status == NtStatus.STATUS_UNEXPECTED_NETWORK_ERROR
    assert "proxy is down" in error.message


def test_proxy_jump_goes_through_the_jump_host(sshd: LoopbackSshd, tmp_path: Path) -> None:
    common = (
        f"  HostName 127.0.0.1\n"
        f"  Port {sshd.port}\n"
        f"  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key_path}\n"
        f"  UserKnownHostsFile {sshd.known_hosts_path}\n"
        f"  BatchMode yes\n"
    )
    config = _write_config(
        tmp_path, f"Host jumpbox\n{common}Host behind\n{common}  ProxyJump jumpbox\n"
    )
    settings = resolve_settings(urllib.parse.urlsplit("sftp://behind/"), {}, config)
    assert settings.proxy_command is not None
    assert "ssh://jumpbox" in settings.proxy_command
    with _connected(settings) as transport:
        assert transport.is_authenticated()


def test_keepalive_follows_server_alive_interval(sshd: LoopbackSshd) -> None:
    with _connected(_settings(sshd, ServerAliveInterval="7")) as transport:
        assert transport.packetizer._Packetizer__keepalive_interval == 7
    with _connected(_settings(sshd, ServerAliveInterval="0")) as transport:
        assert transport.packetizer._Packetizer__keepalive_interval == 0
