"""The directory cache (-o dir_timeout) through RxDevice.dispatch and the memory backend:
a lookup of a name a fresh listing lacks is answered here; our own changes keep the
listing true; anything uncertain drops it; it never makes an operation fail.

A second device on the same ``memory://NAME`` tree plays another client changing the
server behind the first one's back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from rxfs.minirdr.memory import MemoryMiniRdr
from rxfs.rdbss import IRP_MN_QUERY_FROM_SERVER, CoreOptions, NtStatus, RxContext, RxDevice
from rxfs.rdbss import _dircache as dircache
from rxfs.rdbss._dircache import DirectoryCache
from rxfs.rdbss._pathmap import PathMap
from rxfs.rdbss.irp import (
    CreateDisposition,
    FileDispositionInformation,
    FileLinkInformation,
    FileRenameInformation,
    FsControlCode,
    FsControlParameters,
    Irp,
    IrpMj,
    QueryDirectoryParameters,
    QueryInformationParameters,
)

from tests.support.checklogs import RECONNECTS

from ._harness import (
    close,
    create,
    file_bytes,
    mkdir,
    mounted,
    open_file,
    set_info,
    trio_test,
    write,
)

NOT_FOUND = NtStatus.STATUS_OBJECT_NAME_NOT_FOUND
SUCCESS = NtStatus.STATUS_SUCCESS
_shares = iter(range(1_000_000))


class CountingMiniRdr(MemoryMiniRdr):
    """The memory backend, counting the requests that reach it by path. A listing can
    be held back (``hold_listings``) until the test lets it go, the server having read
    the directory already."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: Counter[str] = Counter()
        self.listings: Counter[str] = Counter()
        self.hold_listings = False
        self.release = trio.Event()
        self.fail_queries: dict[str, NtStatus] = {}

    async def query_file_info(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        path = rx_context.fcb.path
        if rx_context.srv_open is None:
            self.queries[path] += 1
            if path in self.fail_queries:
                return self.fail_queries[path]
        return await super().query_file_info(rx_context)

    async def query_directory(self, rx_context: RxContext) -> NtStatus:
        assert rx_context.fcb is not None
        self.listings[rx_context.fcb.path] += 1
        status = await super().query_directory(rx_context)
        if self.hold_listings:
            await self.release.wait()
        return status


@asynccontextmanager
async def client(
    share: str, minirdr: MemoryMiniRdr | None = None, **options: str
) -> AsyncIterator[RxDevice]:
    """A started device on ``memory://share`` with core options ``-o key=value``."""
    core = CoreOptions.parse(options)
    async with mounted(minirdr, f"memory://{share}", core=core) as device:
        yield device


def new_share() -> str:
    return f"dircache{next(_shares)}"


async def lookup(device: RxDevice, path: str, *, from_server: bool = False) -> NtStatus:
    irp = Irp(
        IrpMj.IRP_MJ_QUERY_INFORMATION,
        QueryInformationParameters(),
        minor_function=IRP_MN_QUERY_FROM_SERVER if from_server else 0,
        file_name=path,
    )
    return (await device.dispatch(irp)).status


async def list_dir(device: RxDevice, path: str) -> list[str]:
    irp = Irp(IrpMj.IRP_MJ_DIRECTORY_CONTROL, QueryDirectoryParameters(), file_name=path)
    assert (await device.dispatch(irp)).status == SUCCESS
    return sorted(entry.name for entry in irp.entries or [])


async def make_file(device: RxDevice, path: str, data: bytes = b"") -> None:
    fobx = await open_file(device, path, CreateDisposition.FILE_CREATE)
    if data:
        await write(device, fobx, 0, data)
    assert await close(device, fobx) == SUCCESS


async def delete(device: RxDevice, path: str) -> NtStatus:
    return await set_info(device, FileDispositionInformation(), path=path)


# -- answers from the cache ---------------------------------------------------------------


@trio_test
async def test_lookup_of_a_name_a_fresh_listing_lacks_never_reaches_the_server() -> None:
    backend = CountingMiniRdr()
    async with client(new_share(), backend, dir_timeout="30") as device:
        await mkdir(device, "/d")
        await make_file(device, "/d/there", b"x")
        assert await list_dir(device, "/d") == ["there"]
        for _ in range(3):
            assert await lookup(device, "/d/missing") == NOT_FOUND
        assert backend.queries["/d/missing"] == 0


@trio_test
async def test_a_directory_made_here_is_known_empty_and_creates_add_their_names() -> None:
    """The small-files pattern: mkdir, then create with FILE_CREATE after a lookup that
    says "not found", many times. No lookup reaches the server, not even to confirm the
    files created: attr_timeout=0 leaves only the listing to answer."""
    backend = CountingMiniRdr()
    async with client(new_share(), backend, attr_timeout="0", dir_timeout="30") as device:
        await mkdir(device, "/new")
        for index in range(20):
            name = f"/new/f{index}"
            assert await lookup(device, name) == NOT_FOUND
            await make_file(device, name, b"%d" % index)
        assert sum(backend.queries.values()) == 0
        # A created name is in the listing: its lookup asks the server, and finds it.
        assert await lookup(device, "/new/f7") == SUCCESS
        assert backend.queries["/new/f7"] == 1
        assert await file_bytes(device, "/new/f7") == b"7"


@trio_test
async def test_dir_timeout_follows_attr_timeout_unless_given() -> None:
    assert CoreOptions.parse({}).dir_timeout == 1.0
    assert CoreOptions.parse({"attr_timeout": "0"}).dir_timeout == 0.0
    assert CoreOptions.parse({"attr_timeout": "0", "dir_timeout": "5"}).dir_timeout == 5.0
    with pytest.raises(ValueError, match="dir_timeout"):
        CoreOptions.parse({"dir_timeout": "-1"})
    backend = CountingMiniRdr()
    async with client(new_share(), backend, attr_timeout="0") as device:
        await mkdir(device, "/d")
        assert await list_dir(device, "/d") == []
        assert await lookup(device, "/d/missing") == NOT_FOUND
        assert backend.queries["/d/missing"] == 1  # off: asked every time


@trio_test
async def test_a_listing_is_trusted_for_dir_timeout_only() -> None:
    share = new_share()
    async with client(share, dir_timeout="0.2") as device, client(share) as other:
        await mkdir(device, "/d")
        assert await list_dir(device, "/d") == []
        await make_file(other, "/d/theirs", b"t")
        assert await lookup(device, "/d/theirs") == NOT_FOUND  # within dir_timeout
        await trio.sleep(0.25)
        assert await lookup(device, "/d/theirs") == SUCCESS


@trio_test
async def test_a_query_from_the_server_bypasses_both_caches() -> None:
    """What the front end sends when the kernel revalidates a name it holds."""
    share = new_share()
    backend = CountingMiniRdr()
    async with client(share, backend, dir_timeout="30") as device, client(share) as other:
        await mkdir(device, "/d")
        await make_file(device, "/d/f", b"x")
        assert await lookup(device, "/d/f") == SUCCESS  # from the attribute cache
        assert backend.queries["/d/f"] == 0
        await make_file(other, "/d/theirs")
        await delete(other, "/d/f")
        assert await lookup(device, "/d/theirs") == NOT_FOUND
        assert await lookup(device, "/d/theirs", from_server=True) == SUCCESS
        assert await lookup(device, "/d/f", from_server=True) == NOT_FOUND
        assert backend.queries == Counter({"/d/theirs": 1, "/d/f": 1})


# -- our own changes keep it true -----------------------------------------------------------


@trio_test
async def test_delete_rename_link_and_symlink_keep_the_listing_true() -> None:
    backend = CountingMiniRdr()
    async with client(new_share(), backend, attr_timeout="0", dir_timeout="30") as device:
        await mkdir(device, "/d")
        await mkdir(device, "/e")
        await make_file(device, "/d/a", b"a")
        await make_file(device, "/d/gone", b"g")
        assert await delete(device, "/d/gone") == SUCCESS
        assert await set_info(device, FileRenameInformation("/e/b", False), path="/d/a") == (
            SUCCESS
        )
        assert await set_info(device, FileLinkInformation("/d/c"), path="/e/b") == SUCCESS
        link = FsControlParameters(FsControlCode.FSCTL_SET_REPARSE_POINT, "b")
        irp = Irp(IrpMj.IRP_MJ_FILE_SYSTEM_CONTROL, link, file_name="/e/s")
        assert (await device.dispatch(irp)).status == SUCCESS
        backend.queries.clear()

        for gone in ("/d/gone", "/d/a"):
            assert await lookup(device, gone) == NOT_FOUND
        for there in ("/e/b", "/d/c", "/e/s"):
            assert await lookup(device, there) == SUCCESS
        assert set(backend.queries) == {"/e/b", "/d/c", "/e/s"}


@trio_test
async def test_a_renamed_directory_keeps_its_listing_under_the_new_name() -> None:
    backend = CountingMiniRdr()
    async with client(new_share(), backend, attr_timeout="0", dir_timeout="30") as device:
        await mkdir(device, "/old")
        await make_file(device, "/old/f")
        assert await set_info(device, FileRenameInformation("/new", False), path="/old") == (
            SUCCESS
        )
        backend.queries.clear()
        assert await lookup(device, "/new/missing") == NOT_FOUND
        assert await lookup(device, "/new/f") == SUCCESS
        assert backend.queries == Counter({"/new/f": 1})


@trio_test
async def test_a_listing_under_way_keeps_the_changes_made_meanwhile() -> None:
    """The server read the directory before our create and delete landed; the answer
    arrives after them. Both are applied on top of it."""
    backend = CountingMiniRdr()
    async with client(new_share(), backend, attr_timeout="0", dir_timeout="30") as device:
        await mkdir(device, "/d")
        await make_file(device, "/d/old")
        backend.hold_listings = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(list_dir, device, "/d")
            await trio.testing.wait_all_tasks_blocked()
            await make_file(device, "/d/made")
            assert await delete(device, "/d/old") == SUCCESS
            backend.release.set()
        backend.queries.clear()
        assert await lookup(device, "/d/made") == SUCCESS
        assert await lookup(device, "/d/old") == NOT_FOUND
        assert backend.queries == Counter({"/d/made": 1})


# -- anything uncertain drops it ------------------------------------------------------------


@trio_test
async def test_a_failed_create_drops_the_listing() -> None:
    share = new_share()
    backend = CountingMiniRdr()
    async with client(share, backend, dir_timeout="30") as device, client(share) as other:
        await mkdir(device, "/d")
        assert await list_dir(device, "/d") == []
        await make_file(other, "/d/theirs", b"kept")
        await make_file(other, "/d/also")
        irp = await create(device, "/d/theirs", CreateDisposition.FILE_CREATE)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_COLLISION
        # The listing missed a name, so it may miss others: gone.
        assert await lookup(device, "/d/also") == SUCCESS
        assert backend.queries["/d/also"] == 1


@trio_test
async def test_a_failed_create_drops_a_listing_under_way() -> None:
    share = new_share()
    backend = CountingMiniRdr()
    async with client(share, backend, dir_timeout="30") as device, client(share) as other:
        await mkdir(device, "/d")
        await make_file(other, "/d/theirs")
        backend.hold_listings = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(list_dir, device, "/d")
            await trio.testing.wait_all_tasks_blocked()
            await make_file(other, "/d/late")  # after the server read the directory
            irp = await create(device, "/d/theirs", CreateDisposition.FILE_CREATE)
            assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_COLLISION
            backend.release.set()
        assert await lookup(device, "/d/late") == SUCCESS


@trio_test
async def test_an_error_from_the_server_drops_the_listing() -> None:
    share = new_share()
    backend = CountingMiniRdr()
    async with client(share, backend, dir_timeout="30") as device, client(share) as other:
        await mkdir(device, "/d")
        await make_file(device, "/d/f")
        assert await list_dir(device, "/d") == ["f"]
        await make_file(other, "/d/theirs")
        backend.fail_queries["/d/f"] = NtStatus.STATUS_ACCESS_DENIED
        assert await lookup(device, "/d/f", from_server=True) == NtStatus.STATUS_ACCESS_DENIED
        assert await lookup(device, "/d/theirs") == SUCCESS


@pytest.mark.expect_log(*RECONNECTS)
@trio_test
async def test_a_listing_learned_before_a_reconnect_is_not_trusted_after_it() -> None:
    share = new_share()
    async with client(share, dir_timeout="30") as device, client(share) as other:
        await mkdir(device, "/d")
        await make_file(other, "/d/theirs")
        assert await lookup(device, "/d/theirs") == NOT_FOUND
        assert await device.reconnector.recover(device.reconnector.generation)
        assert await lookup(device, "/d/theirs") == SUCCESS


# -- it never makes an operation fail --------------------------------------------------------


@trio_test
async def test_creates_go_to_the_server_whatever_the_listing_says() -> None:
    share = new_share()
    async with client(share, dir_timeout="30") as device, client(share) as other:
        await mkdir(device, "/d")
        await make_file(other, "/d/theirs", b"kept")
        assert await lookup(device, "/d/theirs") == NOT_FOUND  # the listing lacks it
        fobx = await open_file(device, "/d/theirs", CreateDisposition.FILE_OPEN_IF)
        await close(device, fobx)
        assert await file_bytes(other, "/d/theirs") == b"kept"
        irp = await create(device, "/d/theirs", CreateDisposition.FILE_CREATE)
        assert irp.io_status.status == NtStatus.STATUS_OBJECT_NAME_COLLISION


@trio_test
async def test_a_name_the_server_lost_is_forgotten_with_its_attributes() -> None:
    """Deleted by another client while this one had it cached: the open fails with
    "not found", and from then on nothing cached says the name exists; the next create
    makes a new file with a new Fcb, while a handle open on the old one keeps it."""
    share = new_share()
    async with (
        client(share, attr_timeout="30", dir_timeout="30") as device,
        client(share) as other,
    ):
        await make_file(device, "/f", b"old")
        still_open = await open_file(device, "/f", CreateDisposition.FILE_OPEN)
        assert await lookup(device, "/f") == SUCCESS  # cached
        assert await delete(other, "/f") == SUCCESS

        irp = await create(device, "/f", CreateDisposition.FILE_OPEN)
        assert irp.io_status.status == NOT_FOUND
        assert await lookup(device, "/f") == NOT_FOUND
        fobx = await open_file(device, "/f", CreateDisposition.FILE_CREATE)
        assert fobx.fcb is not still_open.fcb
        await write(device, fobx, 0, b"new")
        await close(device, fobx)
        assert await file_bytes(other, "/f") == b"new"
        assert still_open.fcb is not None and still_open.fcb.orphaned
        await close(device, still_open)


# -- renewal and bounds -----------------------------------------------------------------------


@trio_test
async def test_a_listing_that_keeps_saving_lookups_is_renewed_before_it_expires() -> None:
    backend = CountingMiniRdr()
    async with client(new_share(), backend, attr_timeout="0", dir_timeout="1") as device:
        await mkdir(device, "/d")
        for round_ in range(13):  # 1.3 s: past the first listing's expiry
            assert await lookup(device, f"/d/missing{round_}") == NOT_FOUND
            await trio.sleep(0.1)
        assert backend.listings["/d"] >= 1
        assert sum(backend.queries.values()) == 0


def test_renamed_moves_listings_below_and_name_gone_drops_them() -> None:
    cache = DirectoryCache()
    for directory in ("/a", "/a/b", "/a/b/c", "/x"):
        cache.made_directory(directory, since=time.monotonic(), generation=0)
    cache.name_exists("/a/b")
    cache.renamed("/a", "/x")  # replaces the empty /x
    assert cache.lacks("/x/b/c/f", 1e30, 0) is not None
    assert cache.lacks("/x/b", 1e30, 0) is None  # the name moved with its directory
    assert cache.lacks("/a/b/f", 1e30, 0) is None  # nothing known at the old name
    cache.name_gone("/x/b")
    assert cache.lacks("/x/b/c/f", 1e30, 0) is None
    assert cache.lacks("/x/b", 1e30, 0) is not None


def test_the_cache_is_bounded_in_directories_and_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dircache, "_DIRECTORY_CACHE_SIZE", 4)
    monkeypatch.setattr(dircache, "_DIRECTORY_CACHE_NAMES", 10)
    cache = DirectoryCache()
    now = time.monotonic()
    for index in range(6):
        cache.made_directory(f"/d{index}", since=now, generation=0)
    known = [i for i in range(6) if cache.lacks(f"/d{i}/x", 1e30, 0) is not None]
    assert known == [2, 3, 4, 5]  # the oldest went first
    for index in range(8):
        cache.name_exists(f"/d5/n{index}")
    cache.name_exists("/d4/n")
    assert cache.lacks("/d5/x", 1e30, 0) is not None  # 8 + 1 names fit
    for index in range(8, 12):
        cache.name_exists(f"/d5/n{index}")
    # Over 10 names: the oldest directories went until it fit, the growing one last.
    assert [i for i in range(6) if cache.lacks(f"/d{i}/x", 1e30, 0) is not None] == []


def test_path_map_finds_a_path_and_what_is_below_it_only() -> None:
    paths = PathMap[int]()
    for index, path in enumerate(["/a", "/a/b", "/a/b/c", "/ab", "/a0", "/b", "/"]):
        paths[path] = index
    assert paths.under("/a") == ["/a", "/a/b", "/a/b/c"]
    assert paths.under("/a/b") == ["/a/b", "/a/b/c"]
    assert paths.under("/ab") == ["/ab"]
    assert paths.under("/c") == []
    assert sorted(paths.under("/")) == sorted(paths)
    assert paths.pop("/a/b") == 1 and paths.pop("/a/b") is None
    assert paths.under("/a") == ["/a", "/a/b/c"]
    paths.drop_oldest(2)  # "/a" and "/a/b/c" were the oldest left
    assert list(paths) == ["/ab", "/a0", "/b", "/"]
    assert paths.under("/a") == [] and paths.under("/a0") == ["/a0"]
