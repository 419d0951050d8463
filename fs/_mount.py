"""Running one mount: start the device, mount FUSE, serve, and tear down in order.

Order matters both ways: the backend connects (and may refuse) before anything is
mounted, so a failed connect leaves no mount behind; at the end every open file is
flushed and closed before the FUSE mount goes and the backend disconnects.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyfuse3
import trio
from rxfs.minirdr import MiniRdrDispatch
from rxfs.rdbss import CoreOptions, MountError, NtStatus, RxDevice

from ._mounttable import mount_device
from ._operations import FsOptions, RxOperations
from ._status import serve_status

__all__ = ["MountRequest", "serve"]

log = logging.getLogger(__name__)

# Called once: with None when the mount is ready, or with a one-line error.
ReadyCallback = Callable[[str | None], None]

# The kernel asks for at most the mount's read-ahead per FUSE READ: 128 KiB unless raised,
# and every READ costs the loop the same ~100-300 us whatever its size. 1 MiB (the most
# FUSE sends in one request) cut the front end's CPU for a sequential read about in half
# (memory:// here: 420 -> 900 MB/s). Random reads are not affected: the kernel's window
# starts small and grows only while reads stay sequential.
READ_AHEAD_KB = 1024
# The background requests (writeback WRITEs, read-ahead READs) the kernel keeps
# outstanding at once: 12 unless lowered. Once the dirty limit is reached every one of
# them is a WRITE waiting for room, and each pins 2 MiB (pyfuse3's request buffer and
# the bytes of the write): 24 MiB of a 2 GiB copy's ~50 MiB above idle. Two keep one
# WRITE waiting while the next is copied (the same throughput); the kernel's page cache
# holds the rest. Read-ahead is one 1 MiB READ at a time anyway (READ_AHEAD_KB).
MAX_BACKGROUND = 2
# glibc's mallopt(M_MMAP_THRESHOLD). By default the threshold follows the largest block
# freed, so after the first 1 MiB WRITE every later one is carved from the heap, which
# keeps its high-water mark (and its holes) for the life of the mount. Fixed below 1 MiB,
# every held write is a mapping of its own, returned to the kernel when it lands:
# 2.5 MiB less at the peak of a 2 GiB copy, at no measurable cost in throughput.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 * 1024


@dataclass(slots=True)
class MountRequest:
    url: str
    mountpoint: str
    fs_options: FsOptions = field(default_factory=FsOptions)
    core_options: CoreOptions = field(default_factory=CoreOptions)
    backend_options: dict[str, str] = field(default_factory=dict)
    # Where the lines about data that could not be flushed at unmount go.
    report_path: Path | None = None
    # Where rxfs status, rxfs trace and rxfs umount ask this mount (fs/_status.py).
    status_path: Path | None = None
    # mount(8)'s generic flags given with -o (ro, nosuid, noexec ...), for the kernel.
    kernel_flags: set[str] = field(default_factory=set)


class MountFailedError(Exception):
    """The mount did not come up; the message is for the user, exit_code for the shell."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _fuse_options(request: MountRequest) -> set[str]:
    # fsname shows in /proc/mounts and df; commas would split the option string.
    fsname = request.url.replace(",", "%2C")
    options = {f"fsname={fsname}", "subtype=rxfs", *request.kernel_flags}
    if request.fs_options.allow_other:
        options.add("allow_other")
    if request.fs_options.kernel_checks_permissions:
        options.add("default_permissions")
    return options


async def serve(request: MountRequest, minirdr: MiniRdrDispatch, ready: ReadyCallback) -> int:
    """Mount and serve until unmounted or signalled; returns the exit status.

    ``ready`` hears None once the mount is usable, or the reason it never will be.
    """
    device = RxDevice(minirdr, request.url, request.backend_options, request.core_options)
    operations = RxOperations(device, request.fs_options)
    failure: MountFailedError | None = None
    async with trio.open_nursery() as nursery:
        failure = await _observe(request, device, nursery)
        if failure is None:
            failure = await _attach(request, device, operations, nursery)
        if failure is None:
            ready(None)
            shutdown = _Shutdown(operations, device, request.report_path)
            nursery.start_soon(_watch_signals, shutdown, nursery)
            nursery.start_soon(_tune_connection, request.mountpoint, operations.initialized)
            try:
                with shutdown.fuse_scope:
                    await pyfuse3.main()
            finally:
                with trio.CancelScope(shield=True):
                    await shutdown.teardown()
        nursery.cancel_scope.cancel()
    if failure is not None:
        ready(str(failure))
        return failure.exit_code
    return 0


async def _observe(
    request: MountRequest, device: RxDevice, nursery: trio.Nursery
) -> MountFailedError | None:
    """The status socket and, with -o metrics, the metrics endpoint: before the mount,
    so that a port in use fails it, and until the process has flushed everything, so
    that rxfs umount can show what is left."""
    if request.status_path is not None:
        try:
            await nursery.start(serve_status, request.status_path, device, request.mountpoint)
        except OSError as exc:
            return MountFailedError(f"cannot listen on {request.status_path}: {exc}", 1)
    address = request.fs_options.metrics
    if address is not None:
        from ._metrics import serve_metrics  # noqa: PLC0415 - prometheus_client on demand

        try:
            await nursery.start(serve_metrics, address, device, request.mountpoint)
        except OSError as exc:
            where = f"{address.host}:{address.port}"
            return MountFailedError(f"cannot serve metrics on {where}: {exc.strerror}", 1)
    return None


async def _attach(
    request: MountRequest, device: RxDevice, operations: RxOperations, nursery: trio.Nursery
) -> MountFailedError | None:
    """Connect the backend, then mount FUSE; on failure nothing stays behind."""
    try:
        await device.start(nursery)
    except MountError as exc:
        await device.stop()
        code = 2 if exc.status == NtStatus.STATUS_INVALID_PARAMETER else 1
        return MountFailedError(str(exc), code)
    try:
        pyfuse3.init(operations, request.mountpoint, _fuse_options(request))
    except RuntimeError as exc:
        await device.stop()
        return MountFailedError(f"cannot mount on {request.mountpoint}: {exc}", 1)
    log.info("mounted %s on %s", request.url, request.mountpoint)
    return None


async def _tune_connection(mountpoint: str, initialized: trio.Event) -> None:
    """Raise the mount's read-ahead to READ_AHEAD_KB and lower its background requests to
    MAX_BACKGROUND where we may (root owns sysfs).

    Not before the kernel has handled FUSE INIT: its reply sets both back to what the
    INIT request proposed. ``initialized`` is set by the INIT handler, and the kernel has
    applied the reply by the time another task runs (libfuse writes it before pyfuse3
    reads the next request). The device number comes from mountinfo, not from a stat of
    the mount point: this process never makes a request to its own mount (a kill -9
    during one wedges it, DESIGN §11)."""
    await initialized.wait()

    def tune() -> None:
        device = mount_device(mountpoint)
        if device is None:
            return
        major, minor = (int(part) for part in device.split(":"))
        # The connection's directory is named by the kernel's own dev_t encoding.
        connection = f"/sys/fs/fuse/connections/{major << 20 | minor}"
        _set_limit(f"/sys/class/bdi/{device}/read_ahead_kb", READ_AHEAD_KB, raise_it=True)
        _set_limit(f"{connection}/max_background", MAX_BACKGROUND, raise_it=False)

    await trio.to_thread.run_sync(tune, abandon_on_cancel=True)


def _set_limit(path: str, value: int, *, raise_it: bool) -> None:
    """Write ``value`` to a sysfs setting if that raises (or lowers) it."""
    try:
        with open(path, encoding="ascii") as setting:
            now = int(setting.read())
        if now < value if raise_it else now > value:
            # Opened again: the fusectl files do not seek.
            with open(path, "w", encoding="ascii") as setting:
                setting.write(str(value))
    except (OSError, ValueError) as exc:  # not root, or no sysfs: the kernel's default
        log.debug("%s left as the kernel set it: %s", path, exc)


class _Shutdown:
    """Unmount in order: flush every open file and every held byte, then end the FUSE
    loop, unmount and disconnect. A second signal stops waiting for the flush; what did
    not land is logged and written to the report ``rxfs umount`` prints."""

    def __init__(
        self, operations: RxOperations, device: RxDevice, report_path: Path | None
    ) -> None:
        self.operations = operations
        self.device = device
        self.report_path = report_path
        self.unflushed: list[str] = []
        self.forced = False
        self._flush_scope: trio.CancelScope | None = None
        # Around the FUSE loop: pyfuse3.terminate() lets the loop end only once every
        # request in progress has been answered, and a close(2) waiting on a server
        # that stopped answering is one. A forced unmount cancels them; their callers
        # get ECONNABORTED when the session closes.
        self.fuse_scope = trio.CancelScope()

    async def flush(self) -> None:
        with trio.CancelScope() as self._flush_scope:
            self.unflushed += await self.operations.close_all()
            await self.device.lazy_writer.flush_all()
        if self._flush_scope.cancelled_caught:
            self.unflushed += [
                f"{path}: bytes {start}-{end} (unmount forced)"
                for path, start, end in self.device.lazy_writer.held()
            ]

    async def flush_then_unmount(self) -> None:
        await self.flush()
        pyfuse3.terminate()

    def force(self) -> None:
        self.forced = True
        if self._flush_scope is not None:
            self._flush_scope.cancel()
        self.fuse_scope.cancel()
        pyfuse3.terminate()

    async def teardown(self) -> None:
        if not self.forced:
            await self.flush()
        pyfuse3.close(unmount=True)
        await self.device.stop(flush=not self.forced)
        for line in self.unflushed:
            log.error("not flushed: %s", line)
        if self.report_path is not None and self.unflushed:
            self.report_path.write_text("".join(f"{line}\n" for line in self.unflushed))
        log.info("unmounted")


async def _watch_signals(shutdown: _Shutdown, nursery: trio.Nursery) -> None:
    """First SIGINT/SIGTERM: flush, then unmount. A second one: unmount now."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        first = True
        async for signum in signals:
            name = signal.Signals(signum).name
            if first:
                log.info("%s: flushing, then unmounting (send it again to force)", name)
                nursery.start_soon(shutdown.flush_then_unmount)
                first = False
            else:
                log.warning("%s again: unmounting without waiting for the flush", name)
                shutdown.force()


def run(request: MountRequest, minirdr: MiniRdrDispatch, ready: ReadyCallback) -> int:
    """Serve in this process; returns the exit status."""
    # Every request crosses threads (the trio loop, a backend's connection threads).
    # With CPython's default 5 ms GIL switch interval each crossing can wait that long
    # behind a busy thread; measured here, 0.5 ms made small-file creates ~1.6x faster.
    sys.setswitchinterval(0.0005)
    _map_large_blocks()
    return trio.run(serve, request, minirdr, ready)


def _map_large_blocks() -> None:
    """Fix glibc's mmap threshold (see MMAP_THRESHOLD); nothing where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: their own malloc, left alone
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        log.debug("mallopt(M_MMAP_THRESHOLD) refused: the heap keeps its default")
