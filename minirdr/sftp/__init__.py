"""``sftp://``: files on an SSH server through paramiko, with our own SFTP request engine.

The modules, from the core's side down (their imports form a tree, no cycles):

- :mod:`._minirdr`: the dispatch entries, URL paths and options; :mod:`._convert` the
  NT <-> SFTP conversions, :mod:`._status` SFTP failures -> NTSTATUS (with probes).
- :mod:`._pool`: the mount's connections (``-o`` tuning, transport choice, reconnect)
  and the session pool; :mod:`._spread` a bulk write over several sessions.
- :mod:`._remotefile`: an open file, its write batches and read-ahead.
- :mod:`._engine`: a session's request queue, flow control and reply watchdog, moved by
  a carrier: :mod:`._channel` (paramiko, two threads) or :mod:`._pipes` (ssh's pipes).
- Connecting: :mod:`._settings` (URL, ``-o``, ~/.ssh/config), :mod:`._known_hosts`
  (host key trust), :mod:`._connect` (socket, handshake, login), :mod:`._openssh`
  (the ssh client as transport); :mod:`._wire` the SFTP v3 codec.
"""

from ._minirdr import SftpMiniRdr

__all__ = ["SftpMiniRdr"]
