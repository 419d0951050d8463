"""User and group id mapping between the server and this machine, as sshfs does it.

``-o idmap=none`` (default): ids are shown as the server has them. ``idmap=user``: the
login's uid and gid on the server (the owner of its login directory, as sshfs detects
them) are shown as the uid and gid of the local user who mounted, and a chown to the
local ids sets the login's on the server. ``idmap=file``: ``-o uidfile=FILE`` and
``-o gidfile=FILE`` list ``name:id`` lines (or passwd/group lines: name, x, id), where
``name`` is a local user or group and ``id`` its id on the server; names unknown here are
skipped. A line with a name alone (our addition) maps that name on the server to the same
name here: the server's names for the ids it shows come from its
users-groups-by-id@openssh.com, asked once per id (a server without it refuses the
mount). ``-o nomap=error`` (default, with idmap=file) answers EACCES for a file whose
owner the files do not map (sshfs: EPERM), ``nomap=ignore`` shows the server's id as it is.

A mapping file must belong to the user who mounts and must not be writable by others
(sshfs's rule: it decides who owns what on the mount).
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from rxfs.minirdr import NtStatus, NtStatusError, OptionError, option_what

__all__ = ["IDMAP_OPTIONS", "IdMap", "IdMapMode", "parse_idmap"]

IDMAP_OPTIONS: dict[str, str] = {
    "idmap": "user/group id mapping, as sshfs: none (default): the server's ids; user: the "
    "login's uid/gid on the server are shown as the mounting user's; file: as uidfile and "
    "gidfile say",
    "uidfile": "with idmap=file: lines name:id, a local user name and its uid on the server "
    "(a name alone: the same name there, as the server names its ids)",
    "gidfile": "with idmap=file: lines name:id, a local group name and its gid on the server "
    "(a name alone: the same name there)",
    "nomap": "with idmap=file, an id the files do not map: error (default): EACCES; "
    "ignore: shown as the server has it",
}


class IdMapMode(enum.Enum):
    NONE = "none"
    USER = "user"
    FILE = "file"


@dataclass(slots=True)
class IdMap:
    """Server id -> local id (and back, for chown and new files' owners), per kind.

    ``strict``: an id missing from the table is refused (nomap=error), else kept; only
    for the kinds a file was given for (``strict_kinds``: "uid", "gid"), as sshfs."""

    mode: IdMapMode = IdMapMode.NONE
    uids: dict[int, int] = field(default_factory=dict)
    gids: dict[int, int] = field(default_factory=dict)
    strict: bool = False
    strict_kinds: frozenset[str] = frozenset({"uid", "gid"})
    # Name-only lines: local ids by name, for server ids whose server names match.
    uid_names: dict[str, int] = field(default_factory=dict)
    gid_names: dict[str, int] = field(default_factory=dict)
    # Where in its file the first name-only line is, for the message if the server
    # cannot name its ids.
    name_line: str = ""
    _server_uids: dict[int, int] = field(default_factory=dict)
    _server_gids: dict[int, int] = field(default_factory=dict)
    _asked_uids: set[int] = field(default_factory=set)
    _asked_gids: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._server_uids = {local: server for server, local in self.uids.items()}
        self._server_gids = {local: server for server, local in self.gids.items()}

    @property
    def active(self) -> bool:
        return self.mode is not IdMapMode.NONE

    @property
    def by_name(self) -> bool:
        """Some ids are mapped by the server's names (name-only lines)."""
        return bool(self.uid_names or self.gid_names)

    def unnamed(self, uids: set[int], gids: set[int]) -> tuple[list[int], list[int]]:
        """Of these server ids, those whose server names the name-only lines need and
        nobody has asked for yet."""
        return (
            sorted(uids - self.uids.keys() - self._asked_uids) if self.uid_names else [],
            sorted(gids - self.gids.keys() - self._asked_gids) if self.gid_names else [],
        )

    def named(self, uids: dict[int, str], gids: dict[int, str]) -> None:
        """The server's names of ids: those the name-only lines list are mapped now."""
        for server_ids, names, table, back, asked in (
            (uids, self.uid_names, self.uids, self._server_uids, self._asked_uids),
            (gids, self.gid_names, self.gids, self._server_gids, self._asked_gids),
        ):
            for server_id, name in server_ids.items():
                asked.add(server_id)
                local = names.get(name) if name else None
                if local is not None:
                    table[server_id] = local
                    back.setdefault(local, server_id)

    def detected_login(self, uid: int, gid: int) -> IdMap:
        """idmap=user, once the login's ids on the server are known."""
        return IdMap(self.mode, {uid: os.getuid()}, {gid: os.getgid()})

    def uid_to_local(self, uid: int) -> int:
        return _look_up(self.uids, uid, self._strict("uid"), "uid")

    def gid_to_local(self, gid: int) -> int:
        return _look_up(self.gids, gid, self._strict("gid"), "gid")

    def uid_to_server(self, uid: int) -> int:
        return _look_up(self._server_uids, uid, self._strict("uid"), "local uid")

    def gid_to_server(self, gid: int) -> int:
        return _look_up(self._server_gids, gid, self._strict("gid"), "local gid")

    def _strict(self, kind: str) -> bool:
        return self.strict and kind in self.strict_kinds


def _look_up(table: dict[int, int], key: int, strict: bool, what: str) -> int:
    if key in table:
        return table[key]
    if strict:
        raise NtStatusError(
            NtStatus.STATUS_ACCESS_DENIED, f"{what} {key} is not in the idmap files (nomap=error)"
        )
    return key


def parse_idmap(options: dict[str, str]) -> IdMap:
    """The mapping the ``-o`` options ask for (idmap=user: before the login's ids are
    known). Raises OptionError with a one-line message for a bad value or file."""
    text = options.get("idmap", "none")
    try:
        mode = IdMapMode(text)
    except ValueError:
        raise OptionError(f"{option_what('idmap', text)}: expected none, user or file") from None
    nomap = options.get("nomap", "error")
    if nomap not in ("error", "ignore"):
        raise OptionError(f"{option_what('nomap', nomap)}: expected error or ignore")
    files = {name: options[name] for name in ("uidfile", "gidfile") if name in options}
    if mode is not IdMapMode.FILE:
        if files or "nomap" in options:
            given = ", ".join(f"-o {name}" for name in [*files, "nomap"] if name in options)
            raise OptionError(f"{given}: only with -o idmap=file")
        return IdMap(mode)
    if not files:
        raise OptionError("-o idmap=file needs -o uidfile=FILE or -o gidfile=FILE (or both)")
    uids, uid_names, uid_line = (
        _read_map(files["uidfile"], "uidfile", _local_uid) if "uidfile" in files else ({}, {}, "")
    )
    gids, gid_names, gid_line = (
        _read_map(files["gidfile"], "gidfile", _local_gid) if "gidfile" in files else ({}, {}, "")
    )
    return IdMap(
        mode,
        uids,
        gids,
        strict=nomap == "error",
        strict_kinds=frozenset(name[:3] for name in files),
        uid_names=uid_names,
        gid_names=gid_names,
        name_line=uid_line or gid_line,
    )


def _local_uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _local_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _read_map(
    path: str, option: str, local_id: Callable[[str], int | None]
) -> tuple[dict[int, int], dict[str, int], str]:
    """{server id: local id} from ``name:id`` (or passwd-style ``name:x:id:...``) lines;
    {name: local id} from lines of a name alone; where the first of those is."""
    what = option_what(option, path)
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as file:
            info = os.fstat(file.fileno())
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise OptionError(f"{what}: cannot read it ({reason})") from None
    if info.st_uid != os.getuid():
        raise OptionError(f"{what}: the file must belong to uid {os.getuid()}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OptionError(f"{what}: the file must not be writable by other users")
    table: dict[int, int] = {}
    by_name: dict[str, int] = {}
    first_name_line = ""
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [field.strip() for field in line.split(":")]
        name = fields[0]
        id_text = fields[1] if len(fields) == 2 else fields[2] if len(fields) > 2 else None
        if not name or not (
            id_text is None or (id_text.isascii() and id_text.isdigit() and int(id_text) < 2**32)
        ):
            raise OptionError(f"{what}: line {number}: expected name:id or a name, got {line!r}")
        local = local_id(name)
        if local is None:  # a name unknown here maps nothing (as sshfs)
            continue
        if id_text is None:
            by_name[name] = local
            first_name_line = first_name_line or f"{what}: line {number} ({name})"
        else:
            table[int(id_text)] = local
    return table, by_name, first_name_line
