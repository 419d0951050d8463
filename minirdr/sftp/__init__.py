"""``sftp://``: files on an SSH server through paramiko, with our own SFTP request engine.

See :mod:`._minirdr` for URL paths and options, :mod:`._engine` for how requests travel
and :mod:`._status` for how SFTP failures become NTSTATUS values.
"""

from ._minirdr import SftpMiniRdr

__all__ = ["SftpMiniRdr"]
