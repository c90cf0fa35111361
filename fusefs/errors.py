"""The one error type of fusefs.

Every layer below `fuse_ops` raises `FsError` (or a subclass) carrying an errno; `fuse_ops` is the
single place that turns it into `pyfuse3.FUSEError`. Anything else that escapes a handler is a bug,
logged with its traceback and answered with EIO.
"""

from __future__ import annotations

import errno


class FsError(Exception):
    """An error with an errno and a message a person can act on."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or errno.errorcode.get(err, str(err)))
        self.errno = err
        self.message = message or errno.errorcode.get(err, str(err))


class UserError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 1."""


class RemoteError(FsError):
    """A remote could not deliver an object (unreachable, missing, failed, timed out)."""

    def __init__(self, message: str, err: int = errno.EIO) -> None:
        super().__init__(err, message)


class IntegrityError(FsError):
    """Bytes did not hash to the name they were stored under."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)
