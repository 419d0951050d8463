"""``rxfs umount``'s progress line (fs/_statuscli.py UmountProgress) against a status
socket that answers as a mount process does while its held bytes land: redrawn in place
on a terminal, with the rate; plain lines, spaced out, when stderr is a file; nothing
once the socket is gone (the mount process finished flushing)."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rxfs.fs._statuscli import UmountProgress

MIB = 1 << 20


@contextmanager
def status_server(path: Path, held: list[int]) -> Iterator[None]:
    """Answers each status request with the next of ``held`` (bytes in flight)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    answers = iter(held)

    def serve() -> None:
        for left in answers:
            client, _ = listener.accept()
            with client, client.makefile("rb") as request:
                assert json.loads(request.readline())["request"] == "status"
                document = {
                    "write_behind": {"dirty_bytes": 0, "in_flight_bytes": left, "files_held": 1}
                }
                client.sendall(json.dumps(document).encode() + b"\n")
        listener.close()
        path.unlink()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(10)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(progress: UmountProgress, polls: int) -> None:
    for _ in range(polls):
        progress._next_poll = 0.0  # every call polls: the test does not wait 0.5 s
        progress.poll()
    progress.done()


def test_progress_is_redrawn_in_place_on_a_terminal(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    out = Terminal()
    with status_server(sock, [4 * MIB, 3 * MIB, 1 * MIB]):
        _run(UmountProgress(sock, out), 4)
    text = out.getvalue()
    assert text.startswith("\rrxfs: 4.0 MiB in 1 file(s) left, 0 B/s\x1b[K")
    assert "\rrxfs: 3.0 MiB in 1 file(s) left, " in text
    assert "\rrxfs: 1.0 MiB in 1 file(s) left, " in text
    assert text.endswith("\n") and text.count("\n") == 1, "one line, drawn over"


def test_progress_is_plain_spaced_lines_in_a_log(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    out = io.StringIO()
    with status_server(sock, [4 * MIB, 3 * MIB, 2 * MIB]):
        _run(UmountProgress(sock, out), 4)
    lines = out.getvalue().splitlines()
    # The first at once; the next only PLAIN_EVERY seconds later (not within the test).
    assert lines == ["rxfs: 4.0 MiB in 1 file(s) left, 0 B/s"]


def test_no_progress_without_a_socket(tmp_path: Path) -> None:
    out = Terminal()
    _run(UmountProgress(tmp_path / "none.sock", out), 3)
    assert out.getvalue() == ""
