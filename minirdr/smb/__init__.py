"""``smb://``: SMB 2/3 servers (Samba, Windows) through smbprotocol.

Modules: ``_settings`` (URL, -o options, credentials), ``_client`` (one session on one
share, blocking, with the identity NTSTATUS mapping), ``_wire`` (the information buffers
it packs and parses), ``_minirdr`` (the dispatch entries, on worker threads).
"""

from ._minirdr import SmbMiniRdr

__all__ = ["SmbMiniRdr"]
