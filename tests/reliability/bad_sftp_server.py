"""A misbehaving SFTP server for tests: OpenSSH's sftp-server with a filter in front.

sshd runs this as its sftp subsystem (``Subsystem sftp python bad_sftp_server.py
SFTP_SERVER CONTROL_DIR``). It passes every request to the real sftp-server and every
reply back, except replies to requests about a file whose name says what to do:

- ``short*``: the reply loses all but its first field (a truncated ATTRS or DATA);
- ``garbled*``: the reply is replaced by bytes whose length field is impossible, so the
  stream is out of step from there on;
- ``reorder*``: each reply is held back and sent after the next one;
- ``stuck*``: one reply is never sent, while CONTROL_DIR/stuck-armed exists (the file
  is removed when it happens, so the request succeeds when it is sent again).

Requests by handle count for the file the handle was opened on. The script uses only
the standard library: it runs under sshd, outside pytest.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

# SFTP v3 packet types (draft-ietf-secsh-filexfer-02).
OPEN, CLOSE, READ, WRITE, FSTAT, FSETSTAT, OPENDIR, READDIR = 3, 4, 5, 6, 8, 10, 11, 12
HANDLE = 102
BY_PATH = {7, 9, 11, 13, 14, 15, 16, 17, 18, 19, 20, 3}  # LSTAT ... READLINK, OPEN
BY_HANDLE = {CLOSE, READ, WRITE, FSTAT, FSETSTAT, READDIR}
MODES = ("short", "garbled", "reorder", "stuck")


def read_exact(stream: object, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))  # type: ignore[attr-defined]
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_packet(stream: object) -> bytes:
    length = struct.unpack(">I", read_exact(stream, 4))[0]
    return read_exact(stream, length)


def first_string(body: bytes) -> bytes:
    (n,) = struct.unpack(">I", body[:4])
    return body[4 : 4 + n]


class Filter:
    def __init__(self, control: Path) -> None:
        self.control = control
        self.lock = threading.Lock()
        self.mode_of_request: dict[int, str] = {}
        self.open_requests: dict[int, str] = {}  # OPEN/OPENDIR id -> mode of its path
        self.mode_of_handle: dict[bytes, str] = {}
        self.held: bytes | None = None

    @staticmethod
    def mode_of_name(name: bytes) -> str:
        base = os.path.basename(name.decode(errors="replace"))
        return next((mode for mode in MODES if base.startswith(mode)), "")

    def note_request(self, packet: bytes) -> None:
        kind, body = packet[0], packet[1:]
        if len(body) < 8:
            return
        request_id = struct.unpack(">I", body[:4])[0]
        field = first_string(body[4:])
        if kind in BY_HANDLE:
            mode = self.mode_of_handle.get(field, "")
        elif kind in BY_PATH:
            mode = self.mode_of_name(field)
        else:
            mode = ""
        with self.lock:
            if kind in (OPEN, OPENDIR):
                self.open_requests[request_id] = mode
            if mode:
                self.mode_of_request[request_id] = mode

    def replies_for(self, packet: bytes) -> list[bytes]:
        """What to send the client for one reply of the real server."""
        kind, body = packet[0], packet[1:]
        request_id = struct.unpack(">I", body[:4])[0] if len(body) >= 4 else -1
        with self.lock:
            opened = self.open_requests.pop(request_id, None)
            mode = self.mode_of_request.pop(request_id, "")
        if opened and kind == HANDLE:
            self.mode_of_handle[first_string(body[4:])] = opened
        with self.lock:
            return self._replies(kind, body, packet, mode)

    def _replies(self, kind: int, body: bytes, packet: bytes, mode: str) -> list[bytes]:
        out = []
        if self.held is not None and mode != "reorder":
            out.append(self.held)
            self.held = None
        if mode == "short":
            return [*out, frame(bytes([kind]) + body[:4])]
        if mode == "garbled":
            return [*out, b"\xff\xff\xff\xff" + bytes([kind]) + body[:8]]
        if mode == "stuck" and self.disarm():
            return out
        if mode == "reorder":
            if self.held is None:
                self.held = frame(packet)
                return out
            out.append(frame(packet))
            out.append(self.held)
            self.held = None
            return out
        return [*out, frame(packet)]

    def disarm(self) -> bool:
        try:
            (self.control / "stuck-armed").unlink()
        except FileNotFoundError:
            return False
        return True


def frame(packet: bytes) -> bytes:
    return struct.pack(">I", len(packet)) + packet


def main() -> int:
    server, control = sys.argv[1], Path(sys.argv[2])
    child = subprocess.Popen([server], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    flt = Filter(control)
    client_in, client_out = sys.stdin.buffer, sys.stdout.buffer

    def requests() -> None:
        try:
            while True:
                packet = read_packet(client_in)
                flt.note_request(packet)
                child.stdin.write(frame(packet))  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
        except (EOFError, OSError):
            child.stdin.close()  # type: ignore[union-attr]

    send_lock = threading.Lock()

    def send(replies: list[bytes]) -> None:
        with send_lock:
            for reply in replies:
                client_out.write(reply)
            client_out.flush()

    def release_held() -> None:
        # A reply held back with nothing after it goes out late rather than never.
        while True:
            time.sleep(0.2)
            with flt.lock:
                held, flt.held = flt.held, None
            if held is not None:
                send([held])

    threading.Thread(target=requests, daemon=True).start()
    threading.Thread(target=release_held, daemon=True).start()
    try:
        while True:
            packet = read_packet(child.stdout)
            send(flt.replies_for(packet))
    except (EOFError, OSError):
        pass
    child.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
