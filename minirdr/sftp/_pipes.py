"""The pipes of one ``ssh -s ... sftp`` process, as the link of an SFTP session."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import threading
from collections.abc import Sequence
from typing import IO

__all__ = ["PipeLink"]

# Big pipes: a 256 KiB WRITE leaves in one or two system calls, and the reader thread
# wakes once per reply rather than once per 64 KiB.
_PIPE_SIZE = 1024 * 1024
_READ_BUFFER = 1024 * 1024


class PipeLink:
    """The standard input and output of one ``ssh -s ... sftp`` process."""

    def __init__(self, process: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._reader = open(  # noqa: SIM115  (closed by wait_closed)
            process.stdout.fileno(), "rb", buffering=_READ_BUFFER, closefd=False
        )
        self._stderr = stderr
        self._stderr_lock = threading.Lock()
        for pipe in (self._stdin, self._stdout):
            with contextlib.suppress(OSError):  # an older kernel, or a lower limit
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)

    def send_all(self, pieces: Sequence[bytes | memoryview]) -> None:
        """Gathered writes (no copy into one buffer), resumed after a partial one."""
        fd = self._stdin.fileno()
        views = [memoryview(piece) for piece in pieces]
        while views:
            sent = os.writev(fd, views)
            while views and sent >= len(views[0]):
                sent -= len(views.pop(0))
            if sent:
                views[0] = views[0][sent:]

    def recv_exact(self, n: int) -> bytes:
        data = self._reader.read(n)
        if len(data) < n:
            raise EOFError(self.why_closed())
        return data

    def close(self) -> None:
        """Stop ssh; the reader then sees the end of its output, the sender EPIPE.
        The pipes stay open until :meth:`wait_closed`: another thread may be using them."""
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()

    def wait_closed(self, timeout: float = 5.0) -> None:
        """Blocking: reap ssh and close the pipes."""
        self.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.close()
        self._stdout.close()
        self._stdin.close()
        with self._stderr_lock:
            self._stderr.close()

    def why_closed(self) -> str:
        """ssh's last line on standard error, once it has exited (or a generic text)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)
        with self._stderr_lock:
            if self._stderr.closed:
                return "ssh exited"
            self._stderr.seek(0)
            lines = self._stderr.read()[-4096:].decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"ssh exited with status {self.process.returncode}"
