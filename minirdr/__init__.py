"""Mini-redirectors: the one module a backend plugin imports.

Everything a backend implements, receives or returns is named here: the dispatch table it
subclasses and the capabilities it declares, the registry that finds backends by URL
scheme, the core's objects it is handed (RxDevice, SrvCall, NetRoot, VNetRoot, Fcb,
SrvOpen, Fobx, RxContext with its LowIoContext), the IRP and its parameter and
information types, the NTSTATUS codes it answers with, and the helpers that parse its
``-o`` mount options. A plugin imports these from ``rxfs.minirdr`` only, never from
``rxfs.rdbss``, ``rxfs.fs``, pyfuse3 or a private module (``tests/unit/test_plugin_face.py``
holds the built-in backends and examples/ to that); its tests add ``rxfs.testing``.

The names are re-exported from the core, whose own modules stay free to move. Dependencies
still point one way: the core never imports this package at run time (only for type
checking), so importing ``rxfs.minirdr`` first or ``rxfs.rdbss`` first both work.
"""

from rxfs.rdbss import (
    CancelRoutine,
    Fcb,
    Fobx,
    LowIoContext,
    LowIoOp,
    LowIoReadWriteFlags,
    NetRoot,
    NtStatus,
    NtStatusError,
    OptionError,
    ReadWriteParams,
    RxContext,
    RxDevice,
    SrvCall,
    SrvOpen,
    SrvOpenFlags,
    VNetRoot,
    nt_success,
    option_what,
    parse_flag,
    parse_port,
    parse_seconds,
    parse_size,
)
from rxfs.rdbss.irp import (
    AccessMask,
    CreateDisposition,
    CreateOptions,
    CreateParameters,
    DirEntry,
    FileAttributes,
    FileBasicInformation,
    FileDispositionInformation,
    FileEndOfFileInformation,
    FileInformationClass,
    FileLinkInformation,
    FileRenameInformation,
    FsControlCode,
    FsControlParameters,
    IoStatusBlock,
    Irp,
    IrpMj,
    QueryDirectoryParameters,
    QueryInformationParameters,
    ReadParameters,
    SetInformationParameters,
    VolumeInfo,
    WriteParameters,
)

from ._protocol import Capability, MiniRdrDispatch
from ._registry import BackendInfo, UnknownSchemeError, available_backends, load_backend

__all__ = [
    "AccessMask",
    "BackendInfo",
    "CancelRoutine",
    "Capability",
    "CreateDisposition",
    "CreateOptions",
    "CreateParameters",
    "DirEntry",
    "Fcb",
    "FileAttributes",
    "FileBasicInformation",
    "FileDispositionInformation",
    "FileEndOfFileInformation",
    "FileInformationClass",
    "FileLinkInformation",
    "FileRenameInformation",
    "Fobx",
    "FsControlCode",
    "FsControlParameters",
    "IoStatusBlock",
    "Irp",
    "IrpMj",
    "LowIoContext",
    "LowIoOp",
    "LowIoReadWriteFlags",
    "MiniRdrDispatch",
    "NetRoot",
    "NtStatus",
    "NtStatusError",
    "OptionError",
    "QueryDirectoryParameters",
    "QueryInformationParameters",
    "ReadParameters",
    "ReadWriteParams",
    "RxContext",
    "RxDevice",
    "SetInformationParameters",
    "SrvCall",
    "SrvOpen",
    "SrvOpenFlags",
    "UnknownSchemeError",
    "VNetRoot",
    "VolumeInfo",
    "WriteParameters",
    "available_backends",
    "load_backend",
    "nt_success",
    "option_what",
    "parse_flag",
    "parse_port",
    "parse_seconds",
    "parse_size",
]
