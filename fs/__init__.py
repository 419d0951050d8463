"""The FUSE front end: pyfuse3 Operations that turn requests into IRPs, and the CLI."""

from ._errors import ERRNO_OF, errno_for
from ._operations import FsOptions, RxOperations

__all__ = ["ERRNO_OF", "FsOptions", "RxOperations", "errno_for"]
