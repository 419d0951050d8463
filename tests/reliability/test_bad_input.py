"""Bad input gets a clear answer: one line, no traceback, exit status 2 from the command
line; NtStatusError(STATUS_INVALID_PARAMETER) with a message from the sftp backend."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rxfs.fs import cli
from rxfs.minirdr.sftp._pool import Tuning
from rxfs.minirdr.sftp._settings import resolve_settings
from rxfs.rdbss import NtStatus, NtStatusError

from tests.conftest import Rxfs

OPTION_NAMES = [
    "timeout",
    "reconnect_timeout",
    "dirty_limit",
    "max_conns",
    "channels",
    "attr_timeout",
    "entry_timeout",
    "ConnectTimeout",
    "ServerAliveInterval",
    "Port",
    "User",
    "IdentityFile",
    "StrictHostKeyChecking",
    "password_stdin",
    "allow_other",
    "no_such_option",
]
# Values chosen to reach the edges of the parsers: signs, exponents, NaN, infinities,
# suffixes, separators that split option strings, non-ASCII digits.
TRICKY = st.sampled_from(
    ["", "0", "-1", "1e9", "nan", "inf", "-inf", "1,2", "=", "64M", "0.5", "٣", "yes", "x"]
)
VALUES = st.one_of(TRICKY, st.text(max_size=12))
OPTIONS = st.dictionaries(st.sampled_from(OPTION_NAMES), VALUES, max_size=4)
URL_PIECES = st.sampled_from(
    [
        *["sftp://", "memory://", "ftp://", "sftp:", "//", "[", "]", "::1", "@", ":", "%"],
        *["%zz", "99999", "-1", "h", "/", "~", "?q", "#f", " ", "\x00", "é", "user@", ":22"],
    ]
)
URLS = st.lists(URL_PIECES, min_size=1, max_size=6).map("".join) | st.text(max_size=30)


def _run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, bool]:
    """Run ``rxfs`` in this process with the serving step stubbed out: (exit status,
    stderr, whether it got as far as serving)."""
    served: list[bool] = []

    def serve(*_args: object) -> int:
        served.append(True)
        return 0

    monkeypatch.setattr(cli, "_serve_foreground", serve)
    monkeypatch.setattr(cli, "_serve_background", serve)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, err.getvalue(), bool(served)


def _assert_clear(code: int, stderr: str, served: bool) -> None:
    if served:
        assert code == 0 and stderr == ""
        return
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("rxfs: ") and stderr.count("\n") == 1, repr(stderr)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(url=URLS)
def test_any_url_is_mounted_or_refused_in_one_line(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "--": a URL that starts with "-" is argparse's business, not ours.
    _assert_clear(*_run_cli(["mount", "--", url, str(tmp_path)], monkeypatch))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(options=OPTIONS)
def test_any_options_are_taken_or_refused_in_one_line(
    options: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    joined = ",".join(f"{k}={v}" for k, v in options.items())
    _assert_clear(*_run_cli(["mount", "memory://", str(tmp_path), "-o", joined], monkeypatch))


@settings(max_examples=300, deadline=None)
@given(url=URLS, options=OPTIONS)
def test_sftp_backend_takes_or_refuses_any_url_and_options(
    url: str, options: dict[str, str]
) -> None:
    """What the mount process does with them before connecting."""
    try:
        split = urlsplit(url)
    except ValueError:
        # urlsplit itself refuses it: the command line must (test above), not the backend.
        assume(False)
    try:
        Tuning.from_options(options)
        resolve_settings(split, options, ssh_config_path="/dev/null")
    except NtStatusError as exc:
        assert exc.status == NtStatus.STATUS_INVALID_PARAMETER, exc
        assert exc.message and "\n" not in exc.message


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("sftp://127.0.0.1:99999/x", ""),
        ("sftp://127.0.0.1:22/x", "timeout=0"),
        ("sftp://127.0.0.1:22/x", "max_conns=65"),
        ("sftp://127.0.0.1:22/x", "ConnectTimeout=-1"),
        ("sftp://127.0.0.1:22/x", "IdentityFile=/nonexistent"),
    ],
)
def test_mount_command_refuses_bad_sftp_input_in_one_line(
    url: str, options: str, tmp_path: Path, rxfs: Rxfs
) -> None:
    """Through the real entry point: the backend checks these in the mount process."""
    done = rxfs("mount", "-f", url, str(tmp_path), *(["-o", options] if options else []))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("rxfs: ") and done.stderr.count("\n") == 1, done.stderr


def test_deadlines_and_keepalives_are_on_by_default() -> None:
    """A request unanswered for 30 s counts as a dead connection; keepalives run."""
    assert Tuning().timeout == 30
    settings = resolve_settings(urlsplit("sftp://h/x"), {}, ssh_config_path="/dev/null")
    assert settings.server_alive_interval > 0
