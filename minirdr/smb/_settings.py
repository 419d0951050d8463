"""What an ``smb://`` mount connects with: the URL, the ``-o`` options, the credentials.

``smb://[user@]host[:port]/share[/path]``. The password never comes from the URL: it is
read from the first line of standard input (``-o password_stdin``) or from a credentials
file in the format mount.cifs reads (``-o credentials=FILE``: ``username=``,
``password=``, ``domain=`` lines), which must not be readable by others. Neither the
password nor the file's contents are ever logged or put into a message.
"""

from __future__ import annotations

import enum
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, unquote

from rxfs.minirdr import (
    NtStatus,
    NtStatusError,
    OptionError,
    option_what,
    parse_flag,
    parse_seconds,
)

__all__ = [
    "DEFAULT_MODES",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "SMB_OPTIONS",
    "Encryption",
    "SmbSettings",
]

DEFAULT_PORT = 445
DEFAULT_TIMEOUT = 30.0
# -o modes: fixed, since acl costs a request per listed file (minirdr/smb/_minirdr.py).
DEFAULT_MODES = "fixed"


class Encryption(enum.Enum):
    """``-o encrypt``: AUTO requires SMB3 encryption whenever the server offers it."""

    AUTO = "auto"
    REQUIRED = "yes"
    OFF = "no"


SMB_OPTIONS = {
    "username": "the user to log in as (default: the URL's user, else the credentials file's)",
    "user": "the same as username= (mount.cifs's name; a bare -o user is mount(8)'s)",
    "domain": "the user's domain or workgroup (default: none)",
    "password_stdin": "read the password from the first line of standard input",
    "credentials": "a file of username=, password= and domain= lines, as mount.cifs reads "
    "(mode 0600 or stricter)",
    "encrypt": "auto (default): encrypt every message when the server offers SMB3 "
    "encryption, else sign; yes: refuse a server without encryption; no: sign only",
    "timeout": f"seconds a request may go unanswered before the connection counts as dead "
    f"(default {DEFAULT_TIMEOUT:g})",
    "leases": "yes (default): ask for SMB3 leases, and cache a file's writes only while "
    "its write lease is held (a break sends them before the other client's open goes on); "
    "no: none (writes are cached until close or fsync, as on sftp://)",
    "modes": "fixed (default): every file 0644 and directory 0755, chmod sets only the "
    "read-only attribute; acl: POSIX permissions as the file's NT ACL (owner, group and "
    "Everyone), as mount.cifs's cifsacl keeps them and Samba maps them to the mode: "
    "create modes and chmod are kept, at a request per listed file",
    "mfsymlinks": "yes (default): symlinks as Minshall-French symlink files, as mount.cifs's "
    "mfsymlinks and macOS make them; no: symlinks are EOPNOTSUPP",
}


def _invalid(message: str) -> NtStatusError:
    return NtStatusError(NtStatus.STATUS_INVALID_PARAMETER, message)


@dataclass
class SmbSettings:
    host: str
    port: int
    share: str
    path: str  # below the share, with backslashes, no leading one ("" is the share root)
    user: str
    domain: str
    encryption: Encryption
    timeout: float
    mf_symlinks: bool = True
    leases: bool = True
    acl_modes: bool = False
    password: str = field(repr=False, default="")

    @property
    def unc(self) -> str:
        return rf"\\{self.host}\{self.share}"

    @classmethod
    def parse(cls, url: SplitResult, options: Mapping[str, str]) -> SmbSettings:
        """Raises NtStatusError(STATUS_INVALID_PARAMETER) with a one-line reason."""
        if url.password is not None:
            raise _invalid(
                "an smb URL must not contain a password: use -o password_stdin or -o credentials"
            )
        if not url.hostname:
            raise _invalid("an smb URL names a server: smb://[user@]host[:port]/share[/path]")
        try:
            port = url.port or DEFAULT_PORT
        except ValueError:
            raise _invalid(f"{url.netloc!r}: the port must be a number from 1 to 65535") from None
        parts = [unquote(p) for p in url.path.split("/") if p]
        if not parts:
            raise _invalid("an smb URL names a share: smb://[user@]host[:port]/share[/path]")
        try:
            encryption = Encryption(options.get("encrypt", "auto").lower())
        except ValueError:
            what = option_what("encrypt", options.get("encrypt"))
            raise _invalid(f"{what}: expected auto, yes or no") from None
        try:
            timeout = parse_seconds(
                options.get("timeout", str(DEFAULT_TIMEOUT)),
                option_what("timeout", options.get("timeout")),
                allow_zero=False,
            )
            mf_symlinks = "mfsymlinks" not in options or parse_flag(
                options["mfsymlinks"], option_what("mfsymlinks", options["mfsymlinks"])
            )
            leases = "leases" not in options or parse_flag(
                options["leases"], option_what("leases", options["leases"])
            )
            from_stdin = parse_flag(
                options.get("password_stdin"),
                option_what("password_stdin", options.get("password_stdin")),
            )
        except OptionError as exc:
            raise _invalid(str(exc)) from None
        modes = options.get("modes", DEFAULT_MODES).lower()
        if modes not in ("acl", "fixed"):
            raise _invalid(f"{option_what('modes', options.get('modes'))}: expected acl or fixed")
        file_values = _read_credentials(options["credentials"]) if "credentials" in options else {}
        user = (
            options.get("username")
            or options.get("user")
            or unquote(url.username or "")
            or file_values.get("username")
        )
        if not user:
            raise _invalid("no user: give smb://user@host/share, -o username= or -o credentials=")
        settings = cls(
            host=url.hostname,
            port=port,
            share=parts[0],
            path="\\".join(parts[1:]),
            user=user,
            domain=options.get("domain") or file_values.get("domain", ""),
            encryption=encryption,
            timeout=timeout,
            mf_symlinks=mf_symlinks,
            leases=leases,
            acl_modes=modes == "acl",
            password=file_values.get("password", ""),
        )
        if from_stdin:
            line = sys.stdin.readline() if sys.stdin is not None else ""
            settings.password = line.removesuffix("\n").removesuffix("\r")
        return settings


def _read_credentials(name: str) -> dict[str, str]:
    """username=/password=/domain= lines (mount.cifs: ``user`` and ``workgroup`` too);
    refuses a file that others may read, since it holds a password."""
    path = Path(name).expanduser()
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _invalid(f"-o credentials: cannot read {name!r}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _invalid(
            f"-o credentials: {name!r} may be read by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): chmod 600 it"
        )
    if info.st_uid not in (os.getuid(), 0):
        raise _invalid(f"-o credentials: {name!r} belongs to another user")
    aliases = {"user": "username", "pass": "password", "workgroup": "domain", "dom": "domain"}
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = aliases.get(key.strip().lower(), key.strip().lower())
        if not sep or key not in ("username", "password", "domain"):
            # The line number only: the line itself may be a password.
            raise _invalid(
                f"-o credentials: {name!r} line {number}: expected username=, password= or domain="
            )
        values[key] = value
    return values
