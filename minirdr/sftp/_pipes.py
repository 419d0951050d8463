"""SFTP sessions on the pipes of an ``ssh -s ... sftp`` process, driven by the trio loop.

With ``-o transport=openssh`` the SSH layer is the ssh client, a process of its own, and
a session is nothing but two pipes. Pipes can be made non-blocking and waited for with
trio's own epoll, so a :class:`PipeCarrier` needs none of the two threads a paramiko
channel needs (:mod:`._channel`): the loop writes a request into ssh's standard
input as soon as it is queued (``writev``, no copy, no thread wakeup) and a task of the
loop reads replies from ssh's standard output and hands each to its request directly.
A round trip then costs the mount two system calls and one epoll wakeup instead of four
thread hand-overs fighting for the GIL, which is most of what a small file used to cost.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import mmap
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO

import trio

from ._engine import Packet, Reply, SftpError, SftpSession, Waiter, packet_length

__all__ = ["PipeCarrier", "PipeLink"]

# Big pipes: a 256 KiB WRITE leaves in one system call, and a burst of replies is taken
# with one read.
_PIPE_SIZE = 1024 * 1024
_READ_SIZE = 1024 * 1024
# writev takes at most IOV_MAX (1024) pieces a call.
_IOV_MAX = 1024


class PipeLink:
    """The standard input and output of one ``ssh -s ... sftp`` process.

    ``send_all`` and ``recv_exact`` block; they serve the INIT/VERSION handshake only,
    before :meth:`make_non_blocking` hands the pipes to the loop."""

    def __init__(self, process: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self.stdin_fd = self._stdin.fileno()
        self.stdout_fd = self._stdout.fileno()
        self._stderr = stderr
        self._stderr_lock = threading.Lock()
        for fd in (self.stdin_fd, self.stdout_fd):
            with contextlib.suppress(OSError):  # an older kernel, or a lower limit
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)

    def send_all(self, pieces: Sequence[bytes | memoryview]) -> None:
        os.writev(self.stdin_fd, pieces)  # a handshake packet is far below PIPE_BUF

    def recv_exact(self, n: int) -> bytes:
        # Unbuffered on purpose: whatever follows belongs to the loop's reader.
        parts: list[bytes] = []
        while n > 0:
            chunk = os.read(self.stdout_fd, n)
            if not chunk:
                raise EOFError(self.why_closed())
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def make_non_blocking(self) -> None:
        os.set_blocking(self.stdin_fd, False)
        os.set_blocking(self.stdout_fd, False)

    def close(self) -> None:
        """Stop ssh: the loop's reader then sees the end of its output, a writer EPIPE.
        The pipes stay open until :meth:`wait_closed`: the loop may still wait on them.
        A stopped ssh (SIGSTOP) would hold the SIGTERM until someone continues it, and
        the reconnect would wait for it (5 s, then SIGKILL): it is continued at once."""
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
            self.process.send_signal(signal.SIGCONT)

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Blocking: reap ssh and close the pipes."""
        self.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stdout.close()
        self._stdin.close()
        with self._stderr_lock:
            self._stderr.close()

    def why_closed(self) -> str:
        """Blocking: ssh's last line on standard error, once it has exited (or a
        generic text)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)
        with self._stderr_lock:
            if self._stderr.closed:
                return "ssh exited"
            self._stderr.seek(0)
            lines = self._stderr.read()[-4096:].decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"ssh exited with status {self.process.returncode}"


class PipeCarrier:
    """The loop moving a session's requests and replies on ssh's pipes itself.

    Requests are written the moment they are flushed; what the pipe cannot take yet
    waits in ``_unsent`` for the sender task (woken only then). The receiver task reads
    whatever ssh has written and completes every whole reply in it, in order. Both tasks
    are trio system tasks: they end when the session dies or the loop ends, and
    :meth:`join` waits for that before the pipes are closed under them."""

    def __init__(self, link: PipeLink) -> None:
        self.link = link
        self._session: SftpSession | None = None
        self._unsent: deque[bytes | memoryview] = deque()
        self._send_error: OSError | None = None
        self._sender_wakeup = trio.Event()
        self._tasks_running = 0
        self._tasks_ended = threading.Event()

    def _owner(self) -> SftpSession:
        assert self._session is not None, "the carrier has not been started"
        return self._session

    def start(self, session: SftpSession) -> None:
        """Called in the worker thread that did the handshake."""
        self._session = session
        self.link.make_non_blocking()
        self._tasks_running = 2
        trio.from_thread.run_sync(self._spawn_tasks, trio_token=session.token)

    def _spawn_tasks(self) -> None:
        spawn = trio.lowlevel.spawn_system_task
        name = self._owner().name
        spawn(self._receive_replies, name=f"{name}-receive")
        spawn(self._send_unsent, name=f"{name}-send")

    def join(self, timeout: float) -> None:
        """Blocking: once ssh is gone and both tasks have ended, close the pipes."""
        self.link.close()
        self._tasks_ended.wait(timeout)
        self.link.wait_closed(timeout)

    def _task_ended(self) -> None:
        self._tasks_running -= 1
        if self._tasks_running == 0:
            self._tasks_ended.set()

    def close(self) -> None:
        self.link.close()
        self._unsent.clear()
        self._sender_wakeup.set()

    def abort(self, end: Callable[[], None]) -> None:
        # Closing the link only signals ssh: no thread needed.
        end()

    # -- replies ----------------------------------------------------------------------

    async def _receive_replies(self) -> None:
        session = self._owner()
        fd = self.link.stdout_fd
        pending = bytearray()
        # Read into one buffer kept for the session: os.read(fd, 1 MiB) would allocate
        # (mmap) and give back a MiB for every reply of a few dozen bytes. An anonymous
        # mapping, not a bytearray (zero-filled, so resident at once): only the pages
        # a burst of replies reaches are, and a writer's short replies reach one.
        buffer = mmap.mmap(-1, _READ_SIZE)
        into = [buffer]
        try:
            while session.alive:
                await trio.lowlevel.wait_readable(fd)
                try:
                    count = os.readv(fd, into)
                except BlockingIOError:
                    continue
                if not count:
                    why = await trio.to_thread.run_sync(self.link.why_closed)
                    session.lose(why)
                    return
                with memoryview(buffer) as view:
                    pending += view[:count]
                del pending[: self._complete_replies(pending)]
        except Exception as exc:  # a broken pipe, or a stream out of step
            session.lose(str(exc))
        finally:
            buffer.close()
            self._task_ended()

    def _complete_replies(self, buffer: bytearray) -> int:
        """Complete every whole reply at the start of ``buffer``; the bytes used."""
        session = self._owner()
        pos, end = 0, len(buffer)
        # A view, so each body is copied once (a bytearray slice would copy it twice);
        # released before the caller shrinks the buffer.
        with memoryview(buffer) as view:
            while end - pos >= 5:
                length = packet_length(view[pos : pos + 4])
                if end - pos - 4 < length:
                    break
                session.on_packet(view[pos + 4], bytes(view[pos + 5 : pos + 4 + length]))
                pos += 4 + length
        return pos

    def deliver(self, waiter: Waiter, result: Reply | SftpError) -> None:
        # Always on the loop here: no inbox, no wakeup.
        self._owner().complete(((waiter, result),))

    # -- requests ---------------------------------------------------------------------

    def send(self, pieces: Packet) -> None:
        self._unsent.extend(pieces)
        self._write_unsent()
        if self._unsent or self._send_error is not None:
            self._sender_wakeup.set()

    def _write_unsent(self) -> None:
        """Write what the pipe takes now, without blocking."""
        unsent = self._unsent
        while unsent and self._send_error is None:
            batch = unsent if len(unsent) <= _IOV_MAX else list(itertools.islice(unsent, _IOV_MAX))
            try:
                sent = os.writev(self.link.stdin_fd, batch)
            except BlockingIOError:
                return
            except OSError as exc:  # EPIPE: ssh is gone; the sender task reports it
                self._send_error = exc
                return
            while sent and sent >= len(unsent[0]):
                sent -= len(unsent.popleft())
            if sent:
                unsent[0] = memoryview(unsent[0])[sent:]  # a view: no copy of the rest
                return  # the pipe is full

    async def _send_unsent(self) -> None:
        session = self._owner()
        fd = self.link.stdin_fd
        try:
            while session.alive:
                if self._send_error is not None:
                    session.lose(str(self._send_error))
                    return
                if not self._unsent:
                    self._sender_wakeup = trio.Event()
                    await self._sender_wakeup.wait()
                    continue
                await trio.lowlevel.wait_writable(fd)
                self._write_unsent()
        finally:
            self._task_ended()
