"""The RDBSS-style core: object tree, RxContext/LowIo, dispatch, buffering.

Never imports pyfuse3: the front end (rxfs.fs) builds IRPs and maps the NTSTATUS it gets
back; backends (rxfs.minirdr) implement the dispatch table.
"""

from ._device import CORE_OPTIONS, CoreOptions, MountError, RxDevice
from ._dispatch import IRP_MN_FLUSH_NO_SYNC, IRP_MN_QUERY_FROM_SERVER
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
from ._options import (
    OptionError,
    option_what,
    parse_flag,
    parse_option_groups,
    parse_port,
    parse_seconds,
    parse_size,
)
from ._readwrite import IRP_MN_PAGING_IO, MAX_FILE_SIZE
from ._reconnect import RETRYABLE, Reconnector, SrvCallState
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
from ._stats import (
    LATENCY_BUCKETS,
    CacheStats,
    OpStats,
    RxStatistics,
    TraceEvent,
    Tracer,
    bucket_upper_ns,
    status_name,
)
from .ntstatus import NtStatus, NtStatusError, nt_success

__all__ = [
    "CORE_OPTIONS",
    "IRP_MN_FLUSH_NO_SYNC",
    "IRP_MN_PAGING_IO",
    "IRP_MN_QUERY_FROM_SERVER",
    "LATENCY_BUCKETS",
    "MAX_FILE_SIZE",
    "RETRYABLE",
    "CacheStats",
    "CancelRoutine",
    "CoreOptions",
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
    "OpStats",
    "OptionError",
    "ReadWriteParams",
    "Reconnector",
    "RxContext",
    "RxContextFlags",
    "RxDevice",
    "RxStatistics",
    "SrvCall",
    "SrvCallState",
    "SrvOpen",
    "SrvOpenFlags",
    "TraceEvent",
    "Tracer",
    "VNetRoot",
    "bucket_upper_ns",
    "normalize_path",
    "nt_success",
    "option_what",
    "parse_flag",
    "parse_option_groups",
    "parse_port",
    "parse_seconds",
    "parse_size",
    "status_name",
]
