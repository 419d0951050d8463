"""Ordinary command-line tools on a real memory:// mount: what a user types, what they get."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest

TOOL_TIMEOUT = 120


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stderr}"
    return done.stdout


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 for files, "dir" for directories."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = sha256(path)
    return found


def make_tree(root: Path) -> Path:
    sizes = [0, 1, 4095, 4096, 4097, 70_000, 1 << 20, (1 << 20) + 17]
    for depth, size in enumerate(sizes):
        directory = root.joinpath(*[f"d{i}" for i in range(depth % 4)])
        directory.mkdir(parents=True, exist_ok=True)
        random_file(directory / f"f{size}", size, seed=size)
    (root / "empty-dir").mkdir()
    return root


def test_cp_copies_a_file_in_and_out_byte_for_byte(mnt: Path, tmp_path: Path) -> None:
    source = random_file(tmp_path / "source", 3 * (1 << 20) + 123)
    run("cp", source, mnt / "copy")
    assert (mnt / "copy").stat().st_size == source.stat().st_size
    assert sha256(mnt / "copy") == sha256(source)
    run("cp", mnt / "copy", tmp_path / "back")
    assert sha256(tmp_path / "back") == sha256(source)


def test_cp_r_copies_a_tree_and_diff_finds_no_difference(mnt: Path, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    run("cp", "-r", tree, mnt / "tree")
    assert tree_digest(mnt / "tree") == tree_digest(tree)
    run("diff", "-r", tree, mnt / "tree")
    listed = run("find", ".", "-type", "f", cwd=mnt / "tree").split()
    assert sorted(listed) == sorted(
        f"./{p}" for p, digest in tree_digest(tree).items() if digest != "dir"
    )


@pytest.mark.parametrize("block_size", ["4K", "1M"])
def test_dd_writes_and_reads_back_the_same_bytes(
    mnt: Path, tmp_path: Path, block_size: str
) -> None:
    source = random_file(tmp_path / "source", 8 * (1 << 20) + 1000)
    run("dd", f"if={source}", f"of={mnt / 'f'}", f"bs={block_size}", "status=none")
    run("dd", f"if={mnt / 'f'}", f"of={tmp_path / 'back'}", f"bs={block_size}", "status=none")
    assert (mnt / "f").stat().st_size == source.stat().st_size
    assert sha256(tmp_path / "back") == sha256(source)


def test_dd_conv_notrunc_overwrites_the_middle_in_place(mnt: Path, tmp_path: Path) -> None:
    source = random_file(tmp_path / "source", 1 << 20)
    patch = random_file(tmp_path / "patch", 3 * 4096, seed=1)
    run("cp", source, mnt / "f")
    args = [f"if={patch}", "bs=4K", "seek=10", "conv=notrunc", "status=none"]
    run("dd", *args, f"of={mnt / 'f'}")
    run("dd", *args, f"of={source}")
    assert sha256(mnt / "f") == sha256(source)


def test_mv_renames_inside_the_mount_and_moves_files_in(mnt: Path, tmp_path: Path) -> None:
    random_file(mnt / "a", 5000)
    expected = sha256(mnt / "a")
    (mnt / "dir").mkdir()
    run("mv", mnt / "a", mnt / "dir" / "b")
    assert not (mnt / "a").exists()
    assert sha256(mnt / "dir" / "b") == expected
    run("mv", mnt / "dir", mnt / "renamed-dir")
    assert sorted(os.listdir(mnt)) == ["renamed-dir"]
    assert sha256(mnt / "renamed-dir" / "b") == expected
    outside = random_file(tmp_path / "outside", 70_000, seed=2)
    expected_outside = sha256(outside)
    run("mv", outside, mnt / "moved-in")
    assert not outside.exists()
    assert sha256(mnt / "moved-in") == expected_outside


def test_mv_n_keeps_an_existing_target(mnt: Path) -> None:
    (mnt / "a").write_bytes(b"new")
    (mnt / "b").write_bytes(b"old")
    run("mv", "-n", mnt / "a", mnt / "b")
    assert (mnt / "b").read_bytes() == b"old"
    assert (mnt / "a").read_bytes() == b"new"


def test_rm_r_removes_a_whole_tree(mnt: Path, tmp_path: Path) -> None:
    run("cp", "-r", make_tree(tmp_path / "tree"), mnt / "tree")
    (mnt / "keep").write_bytes(b"keep")
    run("rm", "-r", mnt / "tree")
    assert not (mnt / "tree").exists()
    assert os.listdir(mnt) == ["keep"]


def test_mkdir_p_creates_every_level_and_tolerates_existing(mnt: Path) -> None:
    run("mkdir", "-p", mnt / "a" / "b" / "c")
    run("mkdir", "-p", mnt / "a" / "b" / "c")
    assert stat.S_ISDIR((mnt / "a" / "b" / "c").stat().st_mode)
    assert os.listdir(mnt / "a") == ["b"]
    assert os.listdir(mnt / "a" / "b" / "c") == []


def test_ln_s_makes_a_symlink_that_readlink_returns_verbatim(mnt: Path) -> None:
    (mnt / "target").write_bytes(b"through the link")
    (mnt / "d").mkdir()
    run("ln", "-s", "../target", mnt / "d" / "link")
    assert run("readlink", mnt / "d" / "link") == "../target\n"
    assert stat.S_ISLNK(os.lstat(mnt / "d" / "link").st_mode)
    assert (mnt / "d" / "link").read_bytes() == b"through the link"
    run("ln", "-s", "/nowhere/at/all", mnt / "dangling")
    assert os.readlink(mnt / "dangling") == "/nowhere/at/all"
    assert not (mnt / "dangling").exists()
    assert os.path.lexists(mnt / "dangling")


def test_ln_makes_a_hard_link_sharing_bytes_and_link_count(mnt: Path) -> None:
    (mnt / "a").write_bytes(b"shared")
    run("ln", mnt / "a", mnt / "b")
    assert os.stat(mnt / "a").st_nlink == os.stat(mnt / "b").st_nlink == 2
    with (mnt / "b").open("ab") as file:
        file.write(b" bytes")
    assert (mnt / "a").read_bytes() == b"shared bytes"
    run("rm", mnt / "a")
    assert (mnt / "b").read_bytes() == b"shared bytes"
    assert os.stat(mnt / "b").st_nlink == 1


def test_hard_links_have_one_inode_number(mnt: Path) -> None:
    # tar, rsync -H, cp -a and du find hard links by (st_dev, st_ino).
    (mnt / "a").write_bytes(b"")
    run("ln", mnt / "a", mnt / "b")
    assert os.stat(mnt / "a").st_ino == os.stat(mnt / "b").st_ino
    assert run("find", mnt, "-samefile", mnt / "a").split() == sorted(
        [str(mnt / "a"), str(mnt / "b")]
    )


def test_truncate_grows_with_zeros_and_shrinks_keeping_the_prefix(mnt: Path) -> None:
    data = random.Random(3).randbytes(5000)
    (mnt / "f").write_bytes(data)
    run("truncate", "-s", "20000", mnt / "f")
    assert (mnt / "f").stat().st_size == 20000
    assert (mnt / "f").read_bytes() == data + bytes(15000)
    run("truncate", "-s", "100", mnt / "f")
    assert (mnt / "f").stat().st_size == 100
    assert (mnt / "f").read_bytes() == data[:100]
    run("truncate", "-s", "0", mnt / "f")
    assert (mnt / "f").read_bytes() == b""


def test_shell_append_redirection_adds_at_the_end(mnt: Path) -> None:
    run("sh", "-c", "echo one > f && echo two >> f && printf three >> f", cwd=mnt)
    assert (mnt / "f").read_bytes() == b"one\ntwo\nthree"


def test_ls_and_stat_show_what_was_created(mnt: Path) -> None:
    (mnt / "dir").mkdir()
    (mnt / "file").write_bytes(b"x" * 1234)
    assert run("ls", "-1", mnt).split() == ["dir", "file"]
    assert run("stat", "-c", "%s %F", mnt / "file") == "1234 regular file\n"
    assert run("stat", "-c", "%F", mnt / "dir") == "directory\n"
