"""smb:// URLs, -o options and credentials files: parsed, or refused in one line that
never carries the password; names, symlink files and statuses as they travel."""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from rxfs.minirdr import NtStatus, NtStatusError
from rxfs.minirdr.smb._client import nt_status_of
from rxfs.minirdr.smb._settings import Encryption, SmbSettings
from rxfs.minirdr.smb._wire import (
    MF_SYMLINK_SIZE,
    name_from_server,
    name_to_server,
    pack_mf_symlink,
    parse_mf_symlink,
)

SECRET = "s3cret=with=equals"


def _credentials(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "creds"
    path.write_text(text)
    path.chmod(mode)
    return path


def _parse(url: str, **options: str) -> SmbSettings:
    return SmbSettings.parse(urlsplit(url), options)


def _refused(url: str, **options: str) -> str:
    with pytest.raises(NtStatusError) as caught:
        _parse(url, **options)
    assert caught.value.status == NtStatus.STATUS_INVALID_PARAMETER
    assert "\n" not in caught.value.message and SECRET not in caught.value.message
    return caught.value.message


def test_url_and_credentials_file(tmp_path: Path) -> None:
    creds = _credentials(tmp_path, f"# mount.cifs format\nusername=alice\npassword={SECRET}\n")
    settings = _parse("smb://srv:4455/data/a/b%20c", credentials=str(creds))
    assert (settings.host, settings.port, settings.share) == ("srv", 4455, "data")
    assert settings.path == "a\\b c" and settings.unc == r"\\srv\data"
    assert (settings.user, settings.password) == ("alice", SECRET)
    assert settings.encryption is Encryption.AUTO
    assert SECRET not in repr(settings)


def test_url_user_and_username_option_win_over_the_file(tmp_path: Path) -> None:
    creds = _credentials(tmp_path, f"user=alice\npass={SECRET}\nworkgroup=CORP\n")
    assert _parse("smb://bob@srv/data", credentials=str(creds)).user == "bob"
    settings = _parse("smb://bob@srv/data", credentials=str(creds), username="carol")
    assert (settings.user, settings.domain, settings.port) == ("carol", "CORP", 445)


def test_password_stdin_reads_the_first_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{SECRET}\nsecond line\n"))
    settings = _parse("smb://bob@srv/data", password_stdin="")
    assert settings.password == SECRET


def test_a_credentials_file_others_may_read_is_refused(tmp_path: Path) -> None:
    creds = _credentials(tmp_path, f"username=alice\npassword={SECRET}\n", mode=0o644)
    assert "chmod 600" in _refused("smb://srv/data", credentials=str(creds))


def test_a_bad_credentials_line_is_named_by_number_only(tmp_path: Path) -> None:
    creds = _credentials(tmp_path, f"username=alice\n{SECRET}\n")
    assert "line 2" in _refused("smb://srv/data", credentials=str(creds))


@pytest.mark.parametrize(
    ("url", "options", "words"),
    [
        ("smb://bob:pw@srv/data", {}, "must not contain a password"),
        ("smb://srv", {"username": "bob"}, "names a share"),
        ("smb:///data", {"username": "bob"}, "names a server"),
        ("smb://srv/data", {}, "no user"),
        ("smb://bob@srv/data", {"encrypt": "maybe"}, "expected auto, yes or no"),
        ("smb://bob@srv/data", {"timeout": "soon"}, "-o timeout=soon"),
        ("smb://bob@srv/data", {"credentials": "/nonexistent/creds"}, "cannot read"),
    ],
)
def test_bad_input_is_refused_in_one_line(url: str, options: dict[str, str], words: str) -> None:
    assert words in _refused(url, **options)


def test_names_smb_forbids_travel_in_the_private_use_area() -> None:
    name = 'a\nb\\c:d*e?f"g<h>i|j'
    sent = name_to_server(name)
    assert not set(sent) & set('\n\\:*?"<>|')
    assert name_from_server(sent) == name
    assert name_to_server("plain name.txt") == "plain name.txt"


def test_minshall_french_symlink_files() -> None:
    data = pack_mf_symlink("../target")
    assert len(data) == MF_SYMLINK_SIZE == 1067
    # The layout Linux's cifs (fs/smb/client/link.c) and macOS write and read.
    assert data[:43] == b"XSym\n0009\n8c4677b0297d2b698195c5b038b6dfe5\n"
    assert data[43:53] == b"../target\n" and set(data[53:]) == {ord(" ")}
    assert parse_mf_symlink(data) == "../target"
    assert parse_mf_symlink(data.replace(b"../target", b"../targex")) is None  # checksum
    assert parse_mf_symlink(data[:-1]) is None
    with pytest.raises(ValueError):
        pack_mf_symlink("x" * 1025)


def test_the_servers_ntstatus_is_the_answer() -> None:
    """The identity for every code the core knows; a lost session is a lost connection
    (the core reconnects); anything else is EIO."""
    for status in (
        NtStatus.STATUS_ACCESS_DENIED,
        NtStatus.STATUS_OBJECT_NAME_COLLISION,
        NtStatus.STATUS_DIRECTORY_NOT_EMPTY,
        NtStatus.STATUS_DISK_FULL,
        NtStatus.STATUS_SHARING_VIOLATION,
        NtStatus.STATUS_OBJECT_PATH_NOT_FOUND,
    ):
        assert nt_status_of(int(status)) is status
    for session_gone in (0xC0000203, 0xC000035C):
        assert nt_status_of(session_gone) == NtStatus.STATUS_CONNECTION_DISCONNECTED
    assert nt_status_of(0xC0000121) == NtStatus.STATUS_IO_DEVICE_ERROR  # CANNOT_DELETE
