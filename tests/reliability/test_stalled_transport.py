"""An ssh client that stops (SIGSTOP) under the mount: every request keeps its deadline.

The default transport runs the system's ssh as a child process of the mount. A stopped
ssh neither answers nor exits, so nothing but the request deadline (``-o timeout``) can
tell that its connection is gone. Issue 12: a create (OPEN with O_CREAT, sent with a
STAT) waited for its reply past any deadline, 625 s with not one log line, while a stat
timed out and reconnected. Here each kind of request runs in a child process with a
time limit while the mount's ssh processes are stopped: it must succeed on a new
connection or fail with EIO within the deadlines, and the log must name it. The same
holds for paramiko's connection when the fault proxy stops forwarding.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rxfs.minirdr.sftp.loopback import LoopbackSshd, child_pids

from tests.conftest import MountFactory

from .conftest import FAST_OPTIONS, Rig, RigFactory
from .test_bad_server import FILTER, SFTP_SERVER
from .test_bad_server import OPTIONS as BAD_SERVER_OPTIONS

# What the stall makes the mount say, on purpose: the stuck request by name, the
# connection found dead, the reconnect.
pytestmark = pytest.mark.expect_log(
    r"no answer within",
    r"no reply for .* counting the connection as lost",
    r"lost; reconnecting",
    r"^reconnected to",
)

TIMEOUT = float(FAST_OPTIONS["timeout"])
RECONNECT_TIMEOUT = float(FAST_OPTIONS["reconnect_timeout"])
# A request's deadline, a reconnect and its replay; seconds on top for a busy CI box.
BOUND = TIMEOUT + RECONNECT_TIMEOUT + 5.0
# The child is killed after this long: a hang fails the test instead of hanging it.
CHILD_LIMIT = 60.0


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def stopped_ssh(mount_pid: int) -> Iterator[list[int]]:
    """SIGSTOP the mount's ssh children (by PID, none other); SIGCONT them after."""
    pids = [pid for pid in child_pids(mount_pid) if _command_name(pid) == "ssh"]
    assert pids, f"no ssh child of the mount process {mount_pid}"
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield pids
    finally:
        # Only those still there: the mount reaps the ssh it replaced, and its PID may
        # then name another process.
        for pid in set(pids) & set(child_pids(mount_pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


_TIMED = """
    import errno, json, os, sys, time

    def timed(call):
        start = time.monotonic()
        try:
            call()
            code = 0
        except OSError as exc:
            code = exc.errno
        return code, time.monotonic() - start
"""


class _Child:
    """``python -c code`` (with ``timed`` defined) that prints one JSON object, killed
    after CHILD_LIMIT.

    A process killed while its request is with the mount stays in the kernel until the
    mount answers it (FUSE waits for the answer to a request already sent), so the
    child is reaped only after the ssh processes are continued: :meth:`finish` kills,
    the caller continues ssh, then :meth:`result` waits."""

    def __init__(self, code: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_TIMED) + textwrap.dedent(code)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out = self.err = ""
        self.hung = False

    def readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def finish(self, stdin: str = "") -> None:
        try:
            self.out, self.err = self.process.communicate(stdin, timeout=CHILD_LIMIT)
        except subprocess.TimeoutExpired:
            self.hung = True
            self.process.kill()

    def result(self) -> dict[str, float]:
        if self.hung:
            self.process.communicate(timeout=CHILD_LIMIT)
        assert not self.hung, f"still blocked after {CHILD_LIMIT} s"
        assert self.process.returncode == 0, self.err
        result: dict[str, float] = json.loads(self.out.splitlines()[-1])
        return result


def _in_child(mount_pid: int, code: str) -> dict[str, float]:
    """Run ``code`` in a child while the mount's ssh processes are stopped."""
    with stopped_ssh(mount_pid):
        child = _Child(code)
        child.finish()
    return child.result()


def _mount(rig_factory: RigFactory) -> Rig:
    # Two connections (two ssh processes), both stopped: no live session to fall back on.
    return rig_factory(transport="openssh", max_conns="2")


def _assert_within_deadlines(rig: Rig, what: str, code: float, seconds: float) -> None:
    assert code in (0, errno.EIO), f"{what}: {errno.errorcode.get(int(code), code)}"
    assert seconds < BOUND, f"{what} took {seconds:.1f} s\n{rig.mount.stderr()}"


def test_create_under_stopped_ssh_ends_within_the_deadlines(rig_factory: RigFactory) -> None:
    rig = _mount(rig_factory)
    target = rig.mnt / "newfile"
    (rig.mnt / "warmup").write_bytes(b"x")  # the sessions are up and have been used
    # A fresh listing answers the kernel's lookup of the new name (absent) without a
    # request, so the OPEN of the create is the first request to meet the stall.
    assert "newfile" not in os.listdir(rig.mnt)
    code = f"""
    def create():
        fd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
    result, seconds = timed(create)
    print(json.dumps({{"errno": result, "seconds": seconds}}))
    """
    outcome = _in_child(rig.mount.pid, code)
    _assert_within_deadlines(rig, "create", outcome["errno"], outcome["seconds"])
    log = rig.mount.stderr()
    assert "WARNING" in log and "IRP_MJ_CREATE '/newfile'" in log, log
    # After the reconnect the mount serves again without a remount.
    (rig.mnt / "after").write_bytes(b"after")
    assert (rig.server / "after").read_bytes() == b"after"


def test_mkdir_under_stopped_ssh_ends_within_the_deadlines(rig_factory: RigFactory) -> None:
    rig = _mount(rig_factory)
    target = rig.mnt / "newdir"
    (rig.mnt / "warmup").write_bytes(b"x")
    assert "newdir" not in os.listdir(rig.mnt)  # the lookup is answered from the listing
    code = f"""
    result, seconds = timed(lambda: os.mkdir({str(target)!r}))
    print(json.dumps({{"errno": result, "seconds": seconds}}))
    """
    outcome = _in_child(rig.mount.pid, code)
    _assert_within_deadlines(rig, "mkdir", outcome["errno"], outcome["seconds"])
    assert "IRP_MJ_CREATE '/newdir'" in rig.mount.stderr(), rig.mount.stderr()


def test_write_and_close_of_an_open_file_under_stopped_ssh_end_within_the_deadlines(
    rig_factory: RigFactory,
) -> None:
    rig = _mount(rig_factory)
    target = rig.mnt / "open"
    target.write_bytes(b"before")
    # The child opens the file before the stall and writes and closes it during it.
    code = f"""
    fd = os.open({str(target)!r}, os.O_WRONLY)
    print("opened", flush=True)
    sys.stdin.readline()
    written, write_seconds = timed(lambda: os.write(fd, b"during" * 1000))
    closed, close_seconds = timed(lambda: os.close(fd))
    print(json.dumps({{"write": written, "close": closed,
                       "seconds": write_seconds + close_seconds}}))
    """
    child = _Child(code)
    try:
        assert child.readline().strip() == "opened"
        with stopped_ssh(rig.mount.pid):
            child.finish("go\n")
        outcome = child.result()
    finally:
        if child.process.poll() is None:
            child.process.kill()
            child.process.wait(CHILD_LIMIT)
    assert outcome["write"] == 0, outcome
    _assert_within_deadlines(rig, "write+close", outcome["close"], outcome["seconds"])
    if outcome["close"] == 0:
        # close() returned 0: every byte is on the server (DESIGN §4).
        assert (rig.server / "open").read_bytes() == b"during" * 1000


def test_lookup_under_stopped_ssh_ends_within_the_deadlines(rig_factory: RigFactory) -> None:
    # Timed out before the fix too, but the reconnect then waited 10 s for each stopped
    # ssh to die (SIGTERM stays pending in a stopped process): 25 s in all.
    rig = _mount(rig_factory)
    (rig.mnt / "warmup").write_bytes(b"x")
    code = f"""
    result, seconds = timed(lambda: os.stat({str(rig.mnt / "missing")!r}))
    print(json.dumps({{"errno": result, "seconds": seconds}}))
    """
    outcome = _in_child(rig.mount.pid, code)
    assert outcome["errno"] in (errno.ENOENT, errno.EIO), outcome
    assert outcome["seconds"] < BOUND, f"took {outcome['seconds']:.1f} s\n{rig.mount.stderr()}"
    assert "IRP_MJ_QUERY_INFORMATION '/missing'" in rig.mount.stderr(), rig.mount.stderr()


@pytest.mark.expect_log(r"unreachable .*; failing what waits for it")
def test_create_on_a_stalled_paramiko_connection_ends_within_the_deadlines(
    rig_factory: RigFactory,
) -> None:
    # paramiko's threads wait on a socket; the proxy stops forwarding (new connections
    # too), so the reconnect cannot succeed: EIO once reconnect_timeout has passed.
    rig = rig_factory(transport="paramiko", max_conns="2")
    target = rig.mnt / "newfile"
    (rig.mnt / "warmup").write_bytes(b"x")
    assert "newfile" not in os.listdir(rig.mnt)
    code = f"""
    result, seconds = timed(lambda: os.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)))
    print(json.dumps({{"errno": result, "seconds": seconds}}))
    """
    rig.proxy.stall()
    try:
        child = _Child(code)
        child.finish()
    finally:
        rig.proxy.resume()
    outcome = child.result()
    connect_timeout = float(FAST_OPTIONS["ConnectTimeout"])
    assert outcome["errno"] == errno.EIO, outcome
    assert outcome["seconds"] < BOUND + connect_timeout, rig.mount.stderr()
    assert "IRP_MJ_CREATE '/newfile'" in rig.mount.stderr(), rig.mount.stderr()


@pytest.fixture
def stuck_server(tmp_path: Path) -> Iterator[tuple[LoopbackSshd, Path]]:
    """sshd whose sftp-server swallows one reply about a ``stuck*`` file while
    ``control/stuck-armed`` exists (see bad_sftp_server.py), and answers all others."""
    control = tmp_path / "control"
    control.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    subsystem = f"{sys.executable} {FILTER} {SFTP_SERVER} {control}"
    with LoopbackSshd(root=root, sftp_subsystem=subsystem) as server:
        yield server, control


def test_create_whose_reply_never_comes_ends_while_other_replies_flow(
    stuck_server: tuple[LoopbackSshd, Path], mount: MountFactory
) -> None:
    # One session, busy with other requests the whole time, so that replies keep
    # coming: only the create's OPEN is never answered (its STAT is).
    server, control = stuck_server
    options = {**server.mount_options(), **BAD_SERVER_OPTIONS, "max_conns": "1"}
    # No attribute cache (every fstat asks the server); the listing answers lookups.
    mounted = mount(server.url(), {**options, "attr_timeout": "0", "dir_timeout": "60"})
    (mounted.path / "sub").mkdir()
    (mounted.path / "sub" / "busy").write_bytes(b"busy")
    assert "stuck-new" not in os.listdir(mounted.path)
    busy_fd = os.open(mounted.path / "sub" / "busy", os.O_RDONLY)
    busy_until = time.monotonic() + CHILD_LIMIT

    def keep_busy() -> None:
        # fstat of an open file: a request by handle (attr_timeout=0), no directory lock.
        with contextlib.suppress(OSError):
            while time.monotonic() < busy_until:
                os.fstat(busy_fd)
                time.sleep(0.05)

    busy = threading.Thread(target=keep_busy, daemon=True)
    try:
        (control / "stuck-armed").touch()
        busy.start()
        child = _Child(f"""
        path = {str(mounted.path / "stuck-new")!r}
        result, seconds = timed(lambda: os.close(os.open(path, os.O_WRONLY | os.O_CREAT)))
        print(json.dumps({{"errno": result, "seconds": seconds}}))
        """)
        child.finish()
        outcome = child.result()
    finally:
        busy_until = 0.0
        busy.join(CHILD_LIMIT)
        os.close(busy_fd)
    assert not (control / "stuck-armed").exists(), "the OPEN never reached the server"
    timeout = float(BAD_SERVER_OPTIONS["timeout"])
    bound = timeout + float(BAD_SERVER_OPTIONS["reconnect_timeout"]) + 5.0
    assert outcome["errno"] in (0, errno.EIO), outcome
    assert timeout <= outcome["seconds"] < bound, mounted.stderr()
    assert "IRP_MJ_CREATE '/stuck-new'" in mounted.stderr(), mounted.stderr()
