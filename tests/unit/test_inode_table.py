"""The front end's inode table: a rename moves a path and everything known below it,
and nothing else (the table finds them by directory, not by scanning every path)."""

from __future__ import annotations

import stat

from rxfs.fs._inodes import InodeTable
from rxfs.rdbss.irp import FileAttributes


def test_rename_moves_the_subtree_and_only_it() -> None:
    table = InodeTable()
    paths = ["/a", "/a/b", "/a/b/c", "/a/d", "/ab", "/a0", "/x"]
    inodes = {path: table.inode_of(path) for path in paths}
    table.rename("/a", "/m")
    for old in ["/a", "/a/b", "/a/b/c", "/a/d"]:
        new = "/m" + old[2:]
        assert table.find(old) is None
        assert table.find(new) == inodes[old]
        assert table.path_of(inodes[old]) == new
    for untouched in ["/ab", "/a0", "/x"]:
        assert table.find(untouched) == inodes[untouched]
    # The moved subtree moves again from its new place.
    table.rename("/m/b", "/x2")
    assert table.path_of(inodes["/a/b/c"]) == "/x2/c"
    assert table.find("/m/d") == inodes["/a/d"]


def test_rename_over_a_name_unlinks_the_target_and_forget_drops_the_entry() -> None:
    table = InodeTable()
    source = table.inode_of("/d/f")
    target = table.inode_of("/d/g")
    table.rename("/d/f", "/d/g")
    assert table.find("/d/g") == source
    assert table.path_of(target) is None  # the replaced file lost its name
    table.forget(source, 0)  # no lookups were counted: the entry goes
    assert table.find("/d/g") is None
    table.rename("/d", "/e")  # nothing below /d is left to move
    assert table.find("/e") is None


def test_files_listed_with_links_that_look_alike_are_maybe_one_file() -> None:
    """Names linked on the server are separate inodes here; a chmod through one must
    reach the others: those a listing showed with several links, alike in size and
    mtime (directories never; files listed with one link cost nothing)."""
    table = InodeTable()
    second = 1_700_000_000 * 1_000_000_000
    regular, directory = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755
    a = table.add_lookup("/a", FileAttributes(regular, size=5, mtime_ns=second))
    b = table.add_lookup("/b", FileAttributes(regular, size=5, mtime_ns=second + 5))
    c = table.add_lookup("/c", FileAttributes(regular, size=6, mtime_ns=second))
    d = table.add_lookup("/d", FileAttributes(directory, size=5, mtime_ns=second))
    single = table.add_lookup("/e", FileAttributes(regular, size=5, mtime_ns=second))
    for inode, links in ((a, 2), (b, 2), (c, 2), (d, 3), (single, 1)):
        table.listed(inode, links)
    assert table.maybe_same_file(a) == [b]
    assert sorted(table.maybe_same_file(single)) == [a, b]
    assert table.maybe_same_file(c) == []
    # A stat (no link count under SFTP) keeps what the listing said.
    table.remember(b, FileAttributes(regular, size=7, mtime_ns=second))
    assert table.maybe_same_file(a) == []
    table.remember(c, FileAttributes(regular, size=5, mtime_ns=second))
    assert table.maybe_same_file(a) == [c]
    table.forget(c, 1)
    assert table.maybe_same_file(a) == []
