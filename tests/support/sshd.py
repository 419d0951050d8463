"""Session-wide loopback OpenSSH servers, shared by the conftest.py files that need them.

Also key helpers for tests about logins and host keys.

A conftest.py imports these fixtures to make them visible in its directory; each such
directory gets servers of its own. LoopbackSshd raises when sshd is missing, so the tests
fail (never skip): CI must not pass without it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd, ensure_test_account, shared_password


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """sshd on 127.0.0.1 logging in the current user (root here) by key; root is a tmp dir."""
    with LoopbackSshd(root=tmp_path_factory.mktemp("sftp-root")) as server:
        yield server


@pytest.fixture(scope="session")
def sshd_user() -> Iterator[LoopbackSshd]:
    """sshd for the non-root test account, by key or by ``sshd_user.password``.

    Its root is a fresh dir owned by that account (pytest's tmp dirs are private to root).
    """
    account = ensure_test_account()
    with LoopbackSshd(account.pw_name, password=shared_password(account.pw_name)) as server:
        yield server


def keygen(path: Path, passphrase: str = "") -> Path:
    """A new ed25519 key pair at ``path`` and ``path``.pub."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", str(path)],
        check=True,
        timeout=30,
    )
    return path


def impostor_line(server: LoopbackSshd, directory: Path) -> str:
    """A known_hosts line filing a key that is not ``server``'s under its name."""
    key_type, blob = keygen(directory / "impostor").with_suffix(".pub").read_text().split()[:2]
    return f"[127.0.0.1]:{server.port} {key_type} {blob}\n"
