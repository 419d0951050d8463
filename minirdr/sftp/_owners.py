"""Who owns what, between the server and the mount: the id map (``-o idmap``) both ways,
and new files given to the local user who made them (``allow_other``).

OpenSSH's sftp-server ignores the owner in the ATTRS of OPEN and MKDIR, so a file the
mount makes for another local user is given away with an FSETSTAT (LSETSTAT by name)
once the server has made it: only when the server made it someone else's, and only
when the login may chown (root, or the caller's own uid for the group).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rxfs.minirdr import FileAttributes, FileBasicInformation, NtStatus, NtStatusError

from ._convert import file_attributes, is_symlink
from ._engine import EXT_LSETSTAT, EXT_USERS_GROUPS_BY_ID, SftpError, SftpSession
from ._idmap import IdMap, IdMapMode
from ._remotefile import RemoteFile
from ._status import nt_status_of
from ._wire import Attrs, SftpStatusCode

__all__ = ["Owners"]

log = logging.getLogger(__name__)


class Owners:
    def __init__(self) -> None:
        self.idmap = IdMap()
        self.configured = False
        self._told_no_chown = False

    def configure(self, idmap: IdMap) -> None:
        """The map the -o options ask for (idmap=user: the login's ids come at start)."""
        self.idmap = idmap
        self.configured = True

    async def start(self, session: SftpSession) -> None:
        """Once the share root is known: idmap=user finds the login's ids (the owner of
        its login directory, as sshfs does); name-only idmap lines need the server to
        name its ids. The caller bounds the wait."""
        idmap = self.idmap
        if idmap.by_name:
            await self._check_names(session)
        if idmap.mode is not IdMapMode.USER or idmap.uids:
            return
        try:
            home = await session.stat(".")
        except SftpError as exc:
            raise NtStatusError(
                await nt_status_of(exc, session),
                "-o idmap=user: cannot tell the login's uid from its login directory: "
                f"{exc.message or exc.code.name}",
            ) from exc
        if home.uid is None or home.gid is None:
            raise NtStatusError(
                NtStatus.STATUS_NOT_SUPPORTED, "-o idmap=user: the server tells no owners"
            )
        self.idmap = idmap.detected_login(home.uid, home.gid)
        log.debug("idmap=user: server uid %d gid %d are the local user's", home.uid, home.gid)

    async def _check_names(self, session: SftpSession) -> None:
        """The server must name its ids: it offers users-groups-by-id@openssh.com and
        answers it (sftp-server -P may refuse a request it offers)."""
        try:
            if not session.has(EXT_USERS_GROUPS_BY_ID):
                raise SftpError(SftpStatusCode.SSH_FX_OP_UNSUPPORTED, "not offered")
            await session.users_groups_by_id([], [])
        except SftpError as exc:
            raise NtStatusError(
                NtStatus.STATUS_INVALID_PARAMETER,
                f"{self.idmap.name_line}: a name without an id needs the server's "
                f"{EXT_USERS_GROUPS_BY_ID} ({exc.message or exc.code.name}); write name:id",
            ) from None

    async def attributes(
        self, session: SftpSession, found: Sequence[tuple[Attrs, int]]
    ) -> list[FileAttributes]:
        """The server's attributes (with link counts) as the mount shows them: owners
        mapped to local ids. Name-only idmap lines first learn the server's names of
        ids not seen before (one request for all of them)."""
        idmap = self.idmap
        if idmap.by_name:
            await self._learn_names(session, [attrs for attrs, _ in found])
        shown = [file_attributes(attrs, nlink) for attrs, nlink in found]
        if idmap.active:
            for attributes in shown:
                attributes.uid = idmap.uid_to_local(attributes.uid)
                attributes.gid = idmap.gid_to_local(attributes.gid)
        return shown

    async def one(self, session: SftpSession, attrs: Attrs, nlink: int = 1) -> FileAttributes:
        if not self.idmap.active:  # every lookup comes here: the common case stays short
            return file_attributes(attrs, nlink)
        return (await self.attributes(session, [(attrs, nlink)]))[0]

    async def _learn_names(self, session: SftpSession, found: Sequence[Attrs]) -> None:
        uids, gids = self.idmap.unnamed(
            {attrs.uid for attrs in found if attrs.uid is not None},
            {attrs.gid for attrs in found if attrs.gid is not None},
        )
        if uids or gids:
            user_names, group_names = await session.users_groups_by_id(uids, gids)
            self.idmap.named(
                dict(zip(uids, user_names, strict=True)), dict(zip(gids, group_names, strict=True))
            )

    def to_server(self, info: FileBasicInformation) -> FileBasicInformation:
        """A chown's local ids as the server's."""
        idmap = self.idmap
        if not idmap.active:
            return info
        uid = None if info.uid is None else idmap.uid_to_server(info.uid)
        gid = None if info.gid is None else idmap.gid_to_server(info.gid)
        return FileBasicInformation(info.atime_ns, info.mtime_ns, info.mode, uid, gid)

    async def give_to_caller(
        self,
        session: SftpSession,
        path: str,
        attrs: Attrs,
        owner: tuple[int, int],
        remote: RemoteFile | None = None,
    ) -> None:
        """A file this mount just made belongs to ``owner`` (the caller's local ids, on
        a mount shared with other users) when the login may give it away: as root, or
        as the caller's own uid (only the group then changes). One request more, and
        only when the server made it someone else's; ``attrs`` is updated. A symlink
        needs lsetstat@openssh.com (SETSTAT would change its target)."""
        if attrs.uid is None or attrs.gid is None:
            return
        try:
            uid = self.idmap.uid_to_server(owner[0])
            gid = self.idmap.gid_to_server(owner[1])
        except NtStatusError:
            return  # an owner the idmap files do not map (nomap=error): left as it is
        if (uid, gid) == (attrs.uid, attrs.gid):
            return
        if attrs.uid not in (0, uid):
            if not self._told_no_chown:
                self._told_no_chown = True
                log.info(
                    "the login (uid %d on the server) cannot chown: files that other local "
                    "users create through this mount belong to it",
                    attrs.uid,
                )
            return
        if is_symlink(attrs) and not session.has(EXT_LSETSTAT):
            return
        try:
            if remote is not None:
                await remote.fsetstat(Attrs(uid=uid, gid=gid))
            else:
                await session.lsetstat(path, Attrs(uid=uid, gid=gid))
        except SftpError as exc:
            log.debug("%s: giving it to uid %d gid %d: %s", path, uid, gid, exc)
            return
        attrs.uid, attrs.gid = uid, gid
