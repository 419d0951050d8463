"""The RDBSS-style core: object tree, RxContext/LowIo, dispatch, buffering.

Never imports pyfuse3: the front end (rxfs.fs) builds IRPs and maps the NTSTATUS it gets
back; backends (rxfs.minirdr) implement the dispatch table.
"""

from ._device import MountError, RxDevice
from ._dispatch import IRP_MN_FLUSH_NO_SYNC
from ._objects import (
    Fcb,
    FcbState,
    Fobx,
    NetRoot,
    NodeType,
    SrvCall,
    SrvOpen,
    SrvOpenFlags,
    VNetRoot,
    normalize_path,
)
from ._readwrite import MAX_FILE_SIZE
from ._resource import FcbResource
from ._rxcontext import (
    CancelRoutine,
    LowIoContext,
    LowIoOp,
    LowIoReadWriteFlags,
    ReadWriteParams,
    RxContext,
    RxContextFlags,
)
from .ntstatus import NtStatus, NtStatusError, nt_success

__all__ = [
    "IRP_MN_FLUSH_NO_SYNC",
    "MAX_FILE_SIZE",
    "CancelRoutine",
    "Fcb",
    "FcbResource",
    "FcbState",
    "Fobx",
    "LowIoContext",
    "LowIoOp",
    "LowIoReadWriteFlags",
    "MountError",
    "NetRoot",
    "NodeType",
    "NtStatus",
    "NtStatusError",
    "ReadWriteParams",
    "RxContext",
    "RxContextFlags",
    "RxDevice",
    "SrvCall",
    "SrvOpen",
    "SrvOpenFlags",
    "VNetRoot",
    "normalize_path",
    "nt_success",
]
