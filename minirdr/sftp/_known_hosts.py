"""Host key trust for sftp://: known_hosts lookup, the StrictHostKeyChecking policy, adding keys.

The rules are ssh's: user files (UserKnownHostsFile, then ~/.ssh/known_hosts) and the global
ones are read; hashed (``|1|``) and wildcard patterns match, ``!`` negates, ``@revoked``
refuses; a changed key is always refused, an unknown one as the policy says. These are the
only host key rules: the paramiko connection (:mod:`._connect`) calls
:func:`verify_host_key` before any credential is sent, and the openssh transport asks
:func:`._connect.check_host_key` to explain a key ssh refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import paramiko
from rxfs.minirdr import NtStatus, NtStatusError

from ._settings import ConnectSettings, HostKeyPolicy

__all__ = ["prefer_known_key_types", "verify_host_key"]

log = logging.getLogger(__name__)

_KNOWN_HOSTS_LOCK = threading.Lock()
# Host key algorithms paramiko negotiates for each key type a known_hosts line can hold.
_ALGORITHMS_FOR_KEY_TYPE = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256")}


def prefer_known_key_types(transport: paramiko.Transport, settings: ConnectSettings) -> None:
    """Ask first for host key types known_hosts has, so a server offering several keys
    proves the one we know instead of presenting an unknown one (ssh does the same)."""
    known: list[str] = []
    for entry in _known_host_entries(settings):
        if entry.marker is None and entry.matches(settings.known_hosts_name):
            known += _ALGORITHMS_FOR_KEY_TYPE.get(entry.key_type, (entry.key_type,))
    options = transport.get_security_options()
    offered = tuple(options.key_types)
    preferred = [algorithm for algorithm in dict.fromkeys(known) if algorithm in offered]
    if preferred:
        options.key_types = (*preferred, *(a for a in offered if a not in preferred))


@dataclass(frozen=True)
class _KnownHost:
    """One known_hosts line."""

    path: str
    line_number: int
    marker: str | None  # "@revoked", "@cert-authority" or None
    patterns: tuple[str, ...]
    key_type: str
    blob: bytes

    def matches(self, name: str) -> bool:
        """ssh's rules: any pattern matches and no negated (``!``) pattern does."""
        name = name.lower()
        matched = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if _pattern_matches(pattern.removeprefix("!"), name):
                if negated:
                    return False
                matched = True
        return matched


def _pattern_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("|1|"):
        try:
            _, _, salt, digest = pattern.split("|")
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except ValueError:  # binascii.Error is a ValueError
            return False
    # ssh patterns know only * and ?; everything else (the [ ] of [host]:port) is literal.
    regex = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, name) is not None


def _parse_known_hosts_line(path: str, line_number: int, line: str) -> _KnownHost | None:
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = fields.pop(0) if fields[0].startswith("@") else None
    if len(fields) < 3:
        return None
    try:
        blob = base64.b64decode(fields[2], validate=True)
    except ValueError:
        return None
    key_type = _blob_key_type(blob) or fields[1]
    return _KnownHost(path, line_number, marker, tuple(fields[0].split(",")), key_type, blob)


def _blob_key_type(blob: bytes) -> str | None:
    """The key type an SSH public key blob names in its first field."""
    if len(blob) < 4:
        return None
    length = int.from_bytes(blob[:4], "big")
    return blob[4 : 4 + length].decode("ascii", errors="replace") if length < 64 else None


def _known_host_entries(settings: ConnectSettings) -> Iterator[_KnownHost]:
    paths = [*settings.lookup_known_hosts_files, *settings.global_known_hosts_files]
    for path in dict.fromkeys(paths):
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:  # missing or unreadable files are simply empty, as for ssh
            continue
        for number, line in enumerate(lines, start=1):
            entry = _parse_known_hosts_line(path, number, line)
            if entry is not None:
                yield entry


def _fingerprint(blob: bytes) -> str:
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def verify_host_key(key: paramiko.PKey, settings: ConnectSettings) -> None:
    """Check the server's key against known_hosts before any credential is sent."""
    # Serialised so that a mount's parallel first connections add a new key only once.
    with _KNOWN_HOSTS_LOCK:
        _check_known_hosts(key, settings)


def _check_known_hosts(key: paramiko.PKey, settings: ConnectSettings) -> None:
    blob: bytes = key.asbytes()
    key_type = _blob_key_type(blob) or key.get_name()
    name = settings.known_hosts_name
    fingerprint = _fingerprint(blob)
    changed: _KnownHost | None = None
    for entry in _known_host_entries(settings):
        if entry.marker == "@revoked" and entry.blob == blob:
            _refuse_host_key(
                f"host key {key_type} {fingerprint} of {name} is marked @revoked in "
                f"{entry.path}:{entry.line_number}: refusing to connect"
            )
        if entry.marker is not None or not entry.matches(name):
            continue
        if entry.blob == blob:
            log.debug("host key %s of %s found in %s", fingerprint, name, entry.path)
            return
        if entry.key_type == key_type and changed is None:
            changed = entry
    if changed is not None:
        _refuse_host_key(
            f"WARNING: HOST KEY OF {name} HAS CHANGED, now {key_type} {fingerprint}, which "
            f"does not match {changed.path}:{changed.line_number}: someone may be "
            "intercepting the connection; if the server's key really changed, remove the "
            f"old line with: ssh-keygen -R '{name}' -f {changed.path}"
        )
    policy = settings.strict_host_key_checking
    if policy is HostKeyPolicy.YES:
        _refuse_host_key(
            f"host key of {name} is unknown ({key_type} {fingerprint}): check the "
            "fingerprint with the server's admin, then connect once with "
            "-o StrictHostKeyChecking=accept-new to add it to known_hosts"
        )
    if policy is HostKeyPolicy.ACCEPT_NEW:
        _add_known_host(settings.known_hosts_files[0], name, key_type, blob)
        log.info(
            "added host key %s %s of %s to %s",
            key_type,
            fingerprint,
            name,
            settings.known_hosts_files[0],
        )
    else:
        log.info(
            "accepting unknown host key %s %s of %s (StrictHostKeyChecking=no)",
            key_type,
            fingerprint,
            name,
        )


def _refuse_host_key(message: str) -> NoReturn:
    raise NtStatusError(NtStatus.STATUS_ACCESS_DENIED, message)


def _add_known_host(path: str, name: str, key_type: str, blob: bytes) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        needs_newline = (
            target.is_file()
            and not target.read_bytes().endswith(b"\n")
            and (target.stat().st_size > 0)
        )
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as known_hosts:
            if needs_newline:
                known_hosts.write("\n")
            known_hosts.write(f"{name} {key_type} {base64.b64encode(blob).decode()}\n")
    except OSError as error:
        raise NtStatusError(
            NtStatus.STATUS_ACCESS_DENIED,
            f"cannot add the host key of {name} to {path}: {error.strerror}",
        ) from None
