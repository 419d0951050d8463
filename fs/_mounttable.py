"""What the kernel's mount table says about a mount point, read from
/proc/self/mountinfo.

Never from a stat of the mount point: a stat goes through the mount, and from the mount
process itself it is a request to its own mount (DESIGN §11); from ``rxfs umount`` it
would hang on a mount whose process no longer answers.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RXFS_FSTYPE", "MountEntry", "mount_device", "mount_entry", "rxfs_mounts"]

# subtype=rxfs makes the kernel list our mounts as fuse.rxfs.
RXFS_FSTYPE = "fuse.rxfs"


@dataclass(frozen=True, slots=True)
class MountEntry:
    mountpoint: str
    fstype: str
    # The super block's device, "major:minor": a FUSE mount's connection is
    # /sys/fs/fuse/connections/<minor>, its read-ahead /sys/class/bdi/<major:minor>.
    device: str
    source: str

    @property
    def connection(self) -> int:
        return int(self.device.split(":")[1])

    @property
    def is_rxfs(self) -> bool:
        return self.fstype == RXFS_FSTYPE


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo (octal).
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def mount_entry(mountpoint: str) -> MountEntry | None:
    """The mount at ``mountpoint`` (an absolute, resolved path) that a lookup of it
    reaches (the last one listed, when mounts are stacked there), or None. Unlike
    os.path.ismount this also sees a FUSE mount whose process died (ENOTCONN)."""
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if _unescape(fields[4]) != mountpoint:
                continue
            sep = fields.index("-")
            found = MountEntry(mountpoint, fields[sep + 1], fields[2], _unescape(fields[sep + 2]))
    return found


def mount_device(mountpoint: str) -> str | None:
    entry = mount_entry(mountpoint)
    return entry.device if entry is not None else None


def rxfs_mounts(uid: int | None = None) -> list[str]:
    """The mount points of every rxfs mount, in mount order; with ``uid``, only those of
    that user (FUSE lists the mounting user as ``user_id=`` in the super options)."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] != RXFS_FSTYPE:
                continue
            options = dict(option.partition("=")[::2] for option in fields[sep + 3].split(","))
            if uid is None or options.get("user_id") == str(uid):
                found.append(_unescape(fields[4]))
    return found
