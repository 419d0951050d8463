"""``rxfs status``, ``rxfs trace`` and ``-o metrics`` on a real memory:// mount
(docs/status.md): the counters move as requests are made, the JSON has its documented
keys, only the mounting user reaches the socket, the trace shows a request's whole
chain and the metrics endpoint serves the same counters."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rxfs.fs._status import SCHEMA_VERSION

from tests.conftest import rxfs_argv

if TYPE_CHECKING:
    from tests.conftest import MountFactory, Rxfs

OP_KEYS = {"count", "in_flight", "errors", "latency_us"}
MOUNT_KEYS = {
    "version",
    "mountpoint",
    "url",
    "backend",
    "pid",
    "started",
    "uptime_s",
    "transport",
    "write_behind",
    "irp",
    "lowio",
    "errors",
    "caches",
}


def status_of(rxfs: Rxfs, path: Path) -> dict[str, Any]:
    done = rxfs("status", "--json", str(path), timeout=20)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["version"] == SCHEMA_VERSION
    (mount,) = document["mounts"]
    return mount  # type: ignore[no-any-return]


def socket_path(path: Path) -> Path:
    """Where the mount at ``path`` listens: the pid file's name with .sock."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "rxfs" if runtime else Path(f"/tmp/rxfs-{os.getuid()}")
    name = str(path).strip("/").replace("/", "_")
    sock = base / f"{name}.sock"
    assert len(os.fsencode(sock)) <= 100, "the test's mount point is short enough"
    return sock


def test_status_counts_requests_and_errors_with_the_documented_keys(
    mount: MountFactory, rxfs: Rxfs
) -> None:
    memory = mount("memory://")
    (memory.path / "here").write_bytes(b"x" * 10)
    before = status_of(rxfs, memory.path)
    assert before.keys() >= MOUNT_KEYS
    assert before["mountpoint"] == str(memory.path)
    assert before["backend"] == "memory"
    assert before["pid"] == memory.pid
    assert {"transport", "connections", "state", "reconnects", "last_error"} <= set(
        before["transport"]
    )
    assert {"dirty_bytes", "in_flight_bytes", "dirty_limit", "files_held", "files"} <= set(
        before["write_behind"]
    )
    for major in ("IRP_MJ_CREATE", "IRP_MJ_WRITE", "IRP_MJ_QUERY_INFORMATION"):
        assert before["irp"][major].keys() >= OP_KEYS
    assert before["irp"]["IRP_MJ_CREATE"]["count"] >= 1
    assert before["lowio"]["LOWIO_OP_WRITE"]["count"] >= 1
    assert before["irp"]["IRP_MJ_WRITE"]["latency_us"]["p50"] > 0
    assert {"attributes", "negative_lookups"} == set(before["caches"])

    with pytest.raises(FileNotFoundError):
        os.open(memory.path / "missing-once", os.O_RDONLY)
    after = status_of(rxfs, memory.path)
    name = "STATUS_OBJECT_NAME_NOT_FOUND"
    query = "IRP_MJ_QUERY_INFORMATION"
    assert after["errors"].get(name, 0) == before["errors"].get(name, 0) + 1
    assert (
        after["irp"][query]["errors"].get(name, 0)
        == before["irp"][query]["errors"].get(name, 0) + 1
    )
    assert after["irp"][query]["count"] > before["irp"][query]["count"]
    assert after["irp"]["IRP_MJ_CREATE"]["count"] == before["irp"]["IRP_MJ_CREATE"]["count"]

    with (memory.path / "here").open("rb") as opened:
        assert opened.read() == b"x" * 10
    read = status_of(rxfs, memory.path)
    assert read["irp"]["IRP_MJ_READ"]["count"] >= 1
    assert read["irp"]["IRP_MJ_CREATE"]["count"] == after["irp"]["IRP_MJ_CREATE"]["count"] + 1


def test_status_human_output_and_bad_input(
    mount: MountFactory, rxfs: Rxfs, tmp_path: Path
) -> None:
    memory = mount("memory://")
    (memory.path / "f").write_bytes(b"data")
    done = rxfs("status", str(memory.path))
    assert done.returncode == 0, done.stderr
    assert str(memory.path) in done.stdout
    assert "memory://" in done.stdout
    assert "IRP_MJ_CREATE" in done.stdout
    assert "LOWIO_OP_WRITE" in done.stdout
    every = rxfs("status")
    assert every.returncode == 0, every.stderr
    assert str(memory.path) in every.stdout, "lists every mount of this user"
    plain = tmp_path / "plain"
    plain.mkdir()
    refused = rxfs("status", str(plain))
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"rxfs: {plain} is not mounted"
    assert "Traceback" not in refused.stderr


def _ask_as_nobody(sock: Path) -> str:
    """Connect to ``sock`` as uid 65534 and ask for the status: the answer, or the
    errno of the connect."""
    code = (
        "import os, socket\n"
        "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(sock)!r})\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
        "else:\n"
        "    try:\n"  # a refused peer is answered (and closed) before it asks
        '        s.sendall(b\'{"request": "status"}\\n\')\n'
        "    except BrokenPipeError:\n"
        "        pass\n"
        "    print(s.makefile('rb').readline().decode().strip())\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False
    )
    assert other.returncode == 0, other.stderr
    return other.stdout.strip()


def test_status_socket_is_the_mounting_users_only(mount: MountFactory, rxfs: Rxfs) -> None:
    memory = mount("memory://")
    sock = socket_path(memory.path)
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert _ask_as_nobody(sock) == str(errno.EACCES)
    # Even with the directory searchable, the socket's mode keeps another user out.
    os.chmod(sock.parent, 0o711)
    try:
        assert _ask_as_nobody(sock) == str(errno.EACCES)
        # And past the modes (a socket made reachable by mistake), the mount process
        # asks the kernel who is at the other end and refuses anyone else.
        os.chmod(sock, 0o666)
        assert json.loads(_ask_as_nobody(sock)) == {"error": "permission denied"}
    finally:
        os.chmod(sock, 0o600)
        os.chmod(sock.parent, 0o700)
    assert status_of(rxfs, memory.path)["pid"] == memory.pid, "the owner still gets in"


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _events_until(
    lines: queue.Queue[str], found: Any, timeout: float = 15.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while not found(events):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not in the trace within {timeout}s: {events}")
        with contextlib.suppress(queue.Empty):
            events.append(json.loads(lines.get(timeout=min(left, 0.5))))
    return events


def test_trace_shows_each_request_from_fuse_to_errno(mount: MountFactory) -> None:
    memory = mount("memory://")
    with subprocess.Popen(
        rxfs_argv("trace", "--json", str(memory.path)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            lines = _lines(process)
            _events_until(lines, lambda events: any(e.get("trace") == "started" for e in events))
            with (memory.path / "traced").open("wb") as out:
                out.write(b"y" * 5000)
            with pytest.raises(FileNotFoundError):
                (memory.path / "absent").stat()
            events = _events_until(
                lines,
                lambda events: (
                    {"write", "flush"} <= {e.get("op") for e in events}
                    and any(_absent(e) for e in events)
                    and _paging_write(events) is not None
                ),
            )
        finally:
            process.terminate()
            process.wait(10)
    write = next(e for e in events if e.get("op") == "write")
    assert write["errno"] == 0 and write["us"] > 0
    (irp,) = write["irps"]
    assert irp["irp"] == "IRP_MJ_WRITE" and irp["path"] == "/traced"
    assert irp["status"] == "STATUS_SUCCESS" and irp["us"] > 0
    flush = next(e for e in events if e.get("op") == "flush")
    (flush_irp,) = flush["irps"]
    assert flush_irp["irp"] == "IRP_MJ_FLUSH_BUFFERS" and flush_irp["minor"] == 2
    # The paging write the backend served: sent by the lazy writer as soon as the
    # kernel's page cache handed the bytes over (writeback cache), else by the flush.
    low = _paging_write(events)
    assert low is not None
    assert low["op"] == "LOWIO_OP_WRITE" and low["count"] == 5000 and low["paging"]
    assert low["backend"].endswith("lowio_write") and low["status"] == "STATUS_SUCCESS"
    missing = next(e for e in events if _absent(e))
    assert missing["irps"][0]["status"] == "STATUS_OBJECT_NAME_NOT_FOUND"


def _paging_write(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The LOWIO_OP_WRITE of /traced, whichever event carried it."""
    for event in events:
        carried = [irp["lowio"] for irp in event.get("irps", [])]
        lowio = [*event.get("lowio", []), *(low for each in carried for low in each)]
        for low in lowio:
            if low.get("op") == "LOWIO_OP_WRITE" and low.get("count") == 5000:
                return low  # type: ignore[no-any-return]
    return None


def _absent(event: dict[str, Any]) -> bool:
    """The lookup of /absent, answered ENOENT."""
    irps = event.get("irps") or [{}]
    return (
        event.get("op") == "lookup"
        and event.get("errno") == errno.ENOENT
        and irps[0].get("path") == "/absent"
    )


def _sample_key(name: str, labels: dict[str, str]) -> str:
    """A sample as the exposition text writes it: name{label="value",...}."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_endpoint_serves_the_counters_on_loopback(mount: MountFactory, rxfs: Rxfs) -> None:
    port = _free_port()
    memory = mount("memory://", {"metrics": str(port)})
    (memory.path / "m").write_bytes(b"metrics")
    with pytest.raises(FileNotFoundError):
        (memory.path / "nothing").stat()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples = {
        _sample_key(sample.name, sample.labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples['rxfs_irp_requests_total{major="IRP_MJ_CREATE"}'] >= 1
    assert samples['rxfs_lowio_requests_total{op="LOWIO_OP_WRITE"}'] >= 1
    key = (
        'rxfs_irp_errors_total{major="IRP_MJ_QUERY_INFORMATION",'
        'status="STATUS_OBJECT_NAME_NOT_FOUND"}'
    )
    assert samples[key] >= 1
    assert samples['rxfs_irp_latency_seconds_count{major="IRP_MJ_WRITE"}'] >= 1
    assert samples["rxfs_write_behind_dirty_bytes"] == 0
    assert 'rxfs_connection_state{state="active"}' in samples
    # The same counters as rxfs status.
    status = status_of(rxfs, memory.path)
    assert (
        samples[key]
        <= status["irp"]["IRP_MJ_QUERY_INFORMATION"]["errors"]["STATUS_OBJECT_NAME_NOT_FOUND"]
    )
    listening = [
        line.split()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[3] == "0A" and line.split()[1].endswith(f":{port:04X}")
    ]
    assert listening == [f"0100007F:{port:04X}"], "loopback only"


def test_bad_metrics_option_is_one_line(rxfs: Rxfs, tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    done = rxfs("mount", "memory://", str(tmp_path / "mnt"), "-o", "metrics=99999")
    assert done.returncode == 2
    assert "metrics" in done.stderr and "port" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_status_of_a_dead_mount_process_is_one_line_and_umount_cleans_up(
    mount: MountFactory, rxfs: Rxfs
) -> None:
    memory = mount("memory://")
    sock = socket_path(memory.path)
    memory.kill()  # kill -9: nothing removes the socket file
    assert sock.exists()
    done = rxfs("status", str(memory.path))
    assert done.returncode == 1
    assert done.stderr.startswith(f"rxfs: {memory.path}: cannot reach the mount process")
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    umount = rxfs("umount", str(memory.path), timeout=30)
    assert umount.returncode == 1 and "had died" in umount.stderr
    assert not sock.exists(), "rxfs umount removes what the dead process left"
