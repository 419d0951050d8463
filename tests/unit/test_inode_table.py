"""The front end's inode table: a rename moves a path and everything known below it,
and nothing else (the table finds them by directory, not by scanning every path)."""

from __future__ import annotations

from rxfs.fs._inodes import InodeTable


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
