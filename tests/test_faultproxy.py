"""The fault proxy's controls, each proven against a tiny echo server on 127.0.0.1."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
import trio

from tests.support.faultproxy import FaultProxy, ProxyStats

# Every socket operation in these tests gives up after this long: a hang is a failure.
SOCKET_TIMEOUT = 5.0


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(SOCKET_TIMEOUT)
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            return  # the proxy reset us: that is what several tests do on purpose


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = _EchoServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(SOCKET_TIMEOUT)


@pytest.fixture
def proxy(echo: tuple[str, int]) -> Iterator[FaultProxy]:
    with FaultProxy(echo) as running:
        yield running


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=SOCKET_TIMEOUT)


def receive_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError(f"connection closed with {size} bytes still expected")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def echo_round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    try:
        return receive_exactly(sock, len(payload))
    finally:
        sender.join(SOCKET_TIMEOUT)


def wait_for_stats(proxy: FaultProxy, want: ProxyStats) -> ProxyStats:
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while (stats := proxy.stats) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return stats


def assert_reset(sock: socket.socket) -> None:
    with pytest.raises(ConnectionResetError):
        sock.recv(1)


def assert_connection_reset(proxy: FaultProxy) -> None:
    """A new connection is reset: on loopback the RST can beat connect() to returning."""
    with pytest.raises(ConnectionResetError), connect(proxy) as sock:
        sock.recv(1)


def test_forwards_bytes_both_ways_and_counts_them(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    with connect(proxy) as sock:
        assert echo_round_trip(sock, payload) == payload
    size = len(payload)
    assert wait_for_stats(proxy, ProxyStats(1, 0, 0, 0, size, size)) == ProxyStats(
        accepted=1,
        refused=0,
        upstream_failures=0,
        active=0,
        bytes_to_target=size,
        bytes_to_client=size,
    )


def test_half_close_is_forwarded_after_the_data(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        assert receive_exactly(sock, 10) == b"last words"
        # The echo server saw our EOF through the proxy and closed its side in turn.
        assert sock.recv(1) == b""


def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    proxy.set_latency(0.1)
    with connect(proxy) as sock:
        started = time.monotonic()
        assert echo_round_trip(sock, b"ping") == b"ping"
        elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0


def test_latency_is_a_delay_line_that_keeps_order(proxy: FaultProxy) -> None:
    # Twenty messages sent 10 ms apart through 100 ms each way arrive about 200 ms after
    # each was sent, in order; a proxy that slept per chunk would take 20 x 200 ms.
    proxy.set_latency(0.1)
    messages = [f"message {n:02}|".encode() for n in range(20)]
    with connect(proxy) as sock:
        started = time.monotonic()
        for message in messages:
            sock.sendall(message)
            time.sleep(0.01)
        echoed = receive_exactly(sock, sum(map(len, messages)))
        elapsed = time.monotonic() - started
    assert echoed == b"".join(messages)
    assert 0.2 + 19 * 0.01 <= elapsed < 1.5


def test_latency_keeps_throughput(proxy: FaultProxy) -> None:
    # 4 MiB in 64 KiB chunks through 250 ms each way: a delay line needs about 0.5 s
    # plus the copying; sleeping 250 ms per chunk and direction would need 32 s.
    proxy.set_latency(0.25)
    payload = b"\xa5" * (4 << 20)
    with connect(proxy) as sock:
        sock.settimeout(30)
        started = time.monotonic()
        assert echo_round_trip(sock, payload) == payload
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 10.0


def test_stall_holds_bytes_and_connection_until_resume(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        assert echo_round_trip(sock, b"before") == b"before"
        before = wait_for_stats(proxy, ProxyStats(1, 0, 0, 1, 6, 6))
        proxy.stall()
        sock.sendall(b"held")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert proxy.stats == before  # nothing reached the server, nothing came back
        assert before.active == 1
        proxy.resume()
        sock.settimeout(SOCKET_TIMEOUT)
        assert receive_exactly(sock, 4) == b"held"


def test_stall_accepts_new_connections_without_forwarding(proxy: FaultProxy) -> None:
    proxy.stall()
    with connect(proxy) as sock:
        sock.sendall(b"queued")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        proxy.resume()
        sock.settimeout(SOCKET_TIMEOUT)
        assert receive_exactly(sock, 6) == b"queued"


def test_cut_all_resets_open_connections_and_accepts_new_ones(proxy: FaultProxy) -> None:
    first, second = connect(proxy), connect(proxy)
    with first, second:
        for sock in (first, second):
            assert echo_round_trip(sock, b"up") == b"up"
        assert proxy.cut_all() == 2
        assert_reset(first)
        assert_reset(second)
    with connect(proxy) as third:
        assert echo_round_trip(third, b"again") == b"again"
    assert proxy.stats.accepted == 3


def test_refuse_resets_new_connections_but_keeps_open_ones(proxy: FaultProxy) -> None:
    with connect(proxy) as kept:
        assert echo_round_trip(kept, b"a") == b"a"
        proxy.refuse(True)
        assert_connection_reset(proxy)
        assert echo_round_trip(kept, b"b") == b"b"
        proxy.refuse(False)
        with connect(proxy) as accepted:
            assert echo_round_trip(accepted, b"c") == b"c"
    stats = proxy.stats
    assert (stats.accepted, stats.refused) == (3, 1)


def test_unreachable_target_resets_the_client() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = placeholder.getsockname()[1]  # bound, never listening
        with FaultProxy(("127.0.0.1", closed_port)) as proxy:
            assert_connection_reset(proxy)
            assert proxy.stats.upstream_failures == 1


def test_stop_resets_connections_and_closes_the_listener(echo: tuple[str, int]) -> None:
    proxy = FaultProxy(echo)
    proxy.start()
    with connect(proxy) as sock:
        assert echo_round_trip(sock, b"x") == b"x"
        proxy.stop()
        assert_reset(sock)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.address, timeout=SOCKET_TIMEOUT).close()


def test_starts_again_after_stop(echo: tuple[str, int]) -> None:
    proxy = FaultProxy(echo)
    proxy.start()
    proxy.stop()
    with proxy, connect(proxy) as sock:
        assert echo_round_trip(sock, b"twice") == b"twice"


def test_controls_work_from_a_thread_running_trio(proxy: FaultProxy) -> None:
    async def drive() -> int:
        proxy.set_latency(0.01)
        proxy.stall()
        proxy.resume()
        await trio.lowlevel.checkpoint()
        return proxy.cut_all()

    assert trio.run(drive) == 0


def test_refuses_a_target_off_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(("192.0.2.1", 22))  # TEST-NET-1: never contacted
