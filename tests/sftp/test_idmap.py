"""-o idmap, uidfile, gidfile, nomap: parsed as sshfs reads them, refused in one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rxfs.minirdr import NtStatusError, OptionError
from rxfs.minirdr.sftp._idmap import IdMap, IdMapMode, parse_idmap

NOBODY = 65534


def map_file(tmp_path: Path, text: str, mode: int = 0o644) -> str:
    path = tmp_path / "map"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_none_is_the_default_and_maps_nothing() -> None:
    idmap = parse_idmap({})
    assert idmap.mode is IdMapMode.NONE and not idmap.active
    assert idmap.uid_to_local(4321) == 4321


def test_user_maps_the_login_to_the_mounting_user_both_ways() -> None:
    idmap = parse_idmap({"idmap": "user"}).detected_login(1001, 1002)
    assert (idmap.uid_to_local(1001), idmap.gid_to_local(1002)) == (os.getuid(), os.getgid())
    assert idmap.uid_to_local(7) == 7  # others are shown as they are
    assert (idmap.uid_to_server(os.getuid()), idmap.gid_to_server(os.getgid())) == (1001, 1002)


def test_file_reads_name_id_and_passwd_lines_skipping_unknown_names(tmp_path: Path) -> None:
    text = "nobody:4321\n\n# a comment\nno-such-user-here:77\nroot:x:5:5:root:/root:/bin/sh\n"
    idmap = parse_idmap({"idmap": "file", "uidfile": map_file(tmp_path, text)})
    assert idmap.uids == {4321: NOBODY, 5: 0}
    assert idmap.uid_to_local(4321) == NOBODY
    assert idmap.uid_to_server(NOBODY) == 4321
    with pytest.raises(NtStatusError):  # nomap=error is the default
        idmap.uid_to_local(77)
    assert idmap.gid_to_local(77) == 77  # no gidfile: groups are not mapped


def test_file_nomap_ignore_keeps_unmapped_ids(tmp_path: Path) -> None:
    options = {"idmap": "file", "uidfile": map_file(tmp_path, "nobody:4321\n")}
    idmap = parse_idmap({**options, "nomap": "ignore"})
    assert idmap.uid_to_local(77) == 77


def test_a_name_alone_maps_once_the_server_names_the_id(tmp_path: Path) -> None:
    idmap = parse_idmap({"idmap": "file", "gidfile": map_file(tmp_path, "root\n")})
    assert idmap.by_name and "line 1 (root)" in idmap.name_line
    assert idmap.unnamed({5}, {0, 9}) == ([], [0, 9])  # only groups are asked for
    idmap.named({}, {0: "root", 9: ""})
    assert idmap.gid_to_local(0) == 0
    assert idmap.unnamed(set(), {0, 9}) == ([], [])  # asked once each
    with pytest.raises(NtStatusError):
        idmap.gid_to_local(9)


@pytest.mark.parametrize(
    ("options", "text", "mode", "message"),
    [
        ({"idmap": "users"}, "", 0o644, "-o idmap=users: expected none, user or file"),
        ({"idmap": "file"}, "", 0o644, "needs -o uidfile=FILE or -o gidfile=FILE"),
        ({"idmap": "file", "nomap": "no"}, "", 0o644, "-o nomap=no: expected error or ignore"),
        ({"idmap": "user", "uidfile": "F"}, "", 0o644, "-o uidfile: only with -o idmap=file"),
        ({"nomap": "ignore"}, "", 0o644, "-o nomap: only with -o idmap=file"),
        ({"idmap": "file", "uidfile": "F"}, "a:1\nb:c\n", 0o644, "line 2: expected name:id"),
        ({"idmap": "file", "uidfile": "F"}, ":5\n", 0o644, "line 1: expected name:id"),
        ({"idmap": "file", "uidfile": "F"}, "a:99999999999\n", 0o644, "line 1:"),
        ({"idmap": "file", "uidfile": "F"}, "a:1\n", 0o666, "must not be writable by other"),
        ({"idmap": "file", "uidfile": "/no/such"}, "", 0o644, "cannot read it (No such file"),
    ],
)
def test_bad_values_are_one_line(
    tmp_path: Path, options: dict[str, str], text: str, mode: int, message: str
) -> None:
    path = map_file(tmp_path, text, mode)
    given = {name: path if value == "F" else value for name, value in options.items()}
    with pytest.raises(OptionError) as raised:
        parse_idmap(given)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_map_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = map_file(tmp_path, "nobody:4321\n")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(OptionError, match=f"must belong to uid {os.getuid()}"):
        parse_idmap({"idmap": "file", "uidfile": path})


def test_idmap_default_is_inactive() -> None:
    assert not IdMap().active
