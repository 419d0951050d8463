"""Ordinary tools on the mount: cp -r, dd, tar, git, an editor's save, concurrent appends.

After each, the bytes in the server's directory must be the bytes written, by hash.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import random
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.integration_support import MIB, run, sha256_file, tree_digest

if TYPE_CHECKING:
    from tests.integration.integration_support import Target

TREE_FILES = 1100
# The heavy workloads run on the real servers only: memory:// adds time, not coverage.
# cp -r, dd and tar are ordinary-tool tests of issue 15: smb:// runs them too.
real_servers = pytest.mark.parametrize("target", ["sftp", "smb"], indirect=True)
sftp_only = pytest.mark.parametrize("target", ["sftp"], indirect=True)
TREE_MAX_SIZE = 64 * 1024


def make_tree(root: Path, files: int, seed: int) -> None:
    """``files`` files of random sizes (0..64 KiB) spread over nested directories."""
    rng = random.Random(seed)
    dirs = [root]
    root.mkdir(parents=True)
    for index in range(files):
        if index % 40 == 0:
            parent = rng.choice(dirs)
            fresh = parent / f"d{index}"
            fresh.mkdir()
            dirs.append(fresh)
        size = rng.choice([0, rng.randrange(1, 512), rng.randrange(0, TREE_MAX_SIZE + 1)])
        (rng.choice(dirs) / f"f{index}.bin").write_bytes(rng.randbytes(size))


@real_servers
def test_cp_r_of_1100_files_lands_byte_for_byte(target: Target, tmp_path: Path) -> None:
    source = tmp_path / "src"
    make_tree(source, TREE_FILES, seed=1)
    run(["cp", "-r", str(source), str(target.mnt / "copy")], timeout=180)

    run(["diff", "-r", str(source), str(target.mnt / "copy")], timeout=120)
    expected = tree_digest(source)
    assert len(expected) > TREE_FILES
    assert target.landed_tree("copy") == expected


@real_servers
@pytest.mark.parametrize(("block", "mib"), [("4K", 16), ("1M", 64)])
def test_dd_with_conv_fsync_lands_every_byte(
    target: Target, tmp_path: Path, block: str, mib: int
) -> None:
    source = tmp_path / "source"
    source.write_bytes(random.Random(block).randbytes(mib * MIB))
    command = ["dd", f"if={source}", f"of={target.mnt / 'big'}", f"bs={block}", "conv=fsync"]
    run([*command, "status=none"], timeout=300)

    assert (target.mnt / "big").stat().st_size == mib * MIB
    assert target.landed("big").stat().st_size == mib * MIB
    assert sha256_file(target.landed("big")) == sha256_file(source)
    assert sha256_file(target.mnt / "big") == sha256_file(source)


@real_servers
def test_tar_extracts_a_seeded_tree(target: Target, tmp_path: Path) -> None:
    source = tmp_path / "tree"
    make_tree(source, 300, seed=2)
    (source / "private.bin").write_bytes(b"secret")
    os.chmod(source / "private.bin", 0o600)
    os.symlink("private.bin", source / "link-to-private")
    tarball = tmp_path / "tree.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(source, arcname="tree")
    run(["tar", "-xf", str(tarball), "-C", str(target.mnt)], timeout=180)

    expected = tree_digest(source)
    assert tree_digest(target.mnt / "tree") == expected
    assert target.landed_tree("tree") == expected
    if target.keeps_modes:
        assert os.stat(target.landed("tree/private.bin")).st_mode & 0o777 == 0o600


@pytest.mark.ordinary_tool
def test_git_init_add_commit_and_fsck(target: Target) -> None:
    repo = target.mnt / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=rxfs", "-c", "user.email=rxfs@example.invalid"]
    git += ["-c", "init.defaultBranch=main", "-c", "safe.directory=*"]
    run([*git, "init", "-q"], cwd=repo)
    rng = random.Random(3)
    for index in range(30):
        (repo / f"file{index}.txt").write_bytes(rng.randbytes(rng.randrange(0, 8192)))
    run([*git, "add", "-A"], cwd=repo)
    run([*git, "commit", "-q", "-m", "first"], cwd=repo)
    (repo / "file0.txt").write_text("changed\n")
    run([*git, "commit", "-q", "-am", "second"], cwd=repo)

    run([*git, "fsck", "--full", "--strict"], cwd=repo)
    assert run([*git, "log", "--format=%s"], cwd=repo).split() == ["second", "first"]
    assert run([*git, "status", "--porcelain"], cwd=repo) == ""
    if target.server is not None:
        # The server's copy holds the same bytes and is a valid repository by itself.
        server_repo = target.server_path("repo")
        assert target.landed_tree("repo") == tree_digest(repo)
        run([*git, "fsck", "--full", "--strict"], cwd=server_repo)
        head = run([*git, "rev-parse", "HEAD"], cwd=repo)
        assert run([*git, "rev-parse", "HEAD"], cwd=server_repo) == head


@pytest.mark.ordinary_tool
def test_editor_save_writes_temp_fsyncs_and_renames_over(target: Target) -> None:
    original = target.mnt / "notes.txt"
    original.write_bytes(b"first version\n" * 100)
    old_inode = original.stat().st_ino
    new_content = b"second version\n" * 333

    temp = target.mnt / ".notes.txt.swp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        assert os.write(fd, new_content) == len(new_content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temp, original)

    assert original.read_bytes() == new_content
    assert not temp.exists()
    assert sorted(os.listdir(target.mnt)) == ["notes.txt"]
    assert original.stat().st_ino != old_inode
    assert target.landed("notes.txt").read_bytes() == new_content
    if target.server is not None:
        assert sorted(os.listdir(target.server)) == ["notes.txt"]


@pytest.mark.ordinary_tool
def test_two_processes_append_and_no_line_is_lost(target: Target) -> None:
    log = target.mnt / "log"
    log.touch()
    lines = 300
    script = f'for i in $(seq 1 {lines}); do echo "$0 line $i" >> "$1"; done'
    writers = [
        subprocess.Popen(["sh", "-c", script, name, str(log)], stderr=subprocess.PIPE)
        for name in ("alpha", "bravo")
    ]
    for writer in writers:
        _, stderr = writer.communicate(timeout=180)
        assert writer.returncode == 0, stderr.decode()

    expected = sorted(f"{name} line {i}" for name in ("alpha", "bravo") for i in range(1, 301))
    for path in (log, target.landed("log")):
        content = path.read_text()
        assert content.endswith("\n")
        assert sorted(content.splitlines()) == expected
        assert len(content) == sum(len(line) + 1 for line in expected)


@pytest.mark.ordinary_tool
def test_python_o_append_writers_interleave_whole_records(target: Target) -> None:
    path = target.mnt / "records"
    records = 200
    code = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)\n"
        "for i in range(int(sys.argv[3])):\n"
        "    os.write(fd, f'{sys.argv[2]}:{i:05d}:'.encode() + b'x' * 100 + b'\\n')\n"
        "os.close(fd)\n"
    )
    writers = [
        subprocess.Popen(
            ["python3", "-c", code, str(path), tag, str(records)], stderr=subprocess.PIPE
        )
        for tag in ("A", "B")
    ]
    for writer in writers:
        _, stderr = writer.communicate(timeout=180)
        assert writer.returncode == 0, stderr.decode()

    expected = sorted(f"{tag}:{i:05d}:" + "x" * 100 for tag in "AB" for i in range(records))
    for where in (path, target.landed("records")):
        assert sorted(where.read_text().splitlines()) == expected


@sftp_only
def test_threads_write_interleaved_blocks_through_their_own_descriptors(
    target: Target,
) -> None:
    block = 256 * 1024
    writers = 4
    blocks = 64  # 16 MiB in all, each writer every 4th block
    data = random.Random(8).randbytes(block * blocks)
    path = target.mnt / "interleaved"
    path.write_bytes(b"")

    def write_share(index: int) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            for number in range(index, blocks, writers):
                chunk = data[number * block : (number + 1) * block]
                assert os.pwrite(fd, chunk, number * block) == block
        finally:
            os.close(fd)

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write_share, range(writers)))

    assert path.stat().st_size == len(data)
    assert sha256_file(target.landed("interleaved")) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_shared_mmap_writes_reach_the_server_after_msync(target: Target) -> None:
    path = target.mnt / "mapped"
    path.write_bytes(bytes(3 * 4096 + 100))
    with path.open("r+b") as file, mmap.mmap(file.fileno(), 0) as mapped:
        mapped[100:105] = b"hello"
        mapped[8190:8200] = b"0123456789"  # straddles a page boundary
        mapped.flush()
    expected = bytearray(3 * 4096 + 100)
    expected[100:105] = b"hello"
    expected[8190:8200] = b"0123456789"
    assert target.landed("mapped").read_bytes() == expected
    assert path.read_bytes() == expected
