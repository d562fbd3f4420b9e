"""The one exception type whose message is meant for a person, and OS errors said plainly."""

from __future__ import annotations

import errno
from pathlib import Path


class UserFacingError(Exception):
    """A problem the user can fix: bad input, a missing file, no network.

    Its message is for a person, not a developer: one line that says what went wrong *and*
    what to do about it, without the names of library exceptions. Programs that use this
    package show it as it is (a traceback would add nothing).
    """


# What each operating-system failure means for the person at the keyboard.
_OS_ERROR_HINTS = {
    errno.EROFS: "the disk is read-only",
    getattr(errno, "EDQUOT", errno.ENOSPC): "the disk quota is used up",
    errno.ENOSPC: "the disk is full",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EEXIST: "a file is in the way where a folder should be",
    errno.EISDIR: "this is a folder, not a file",
    errno.ENOENT: "no such file or folder",
}


def describe_os_error(error: OSError, path: str | Path | None = None) -> str:
    """One line for an ``OSError``: the path it concerns, then what went wrong.

    ``path`` names the file or folder when the error itself does not.
    """
    where = error.filename if error.filename is not None else path
    reason = _OS_ERROR_HINTS.get(error.errno or 0) or error.strerror or str(error)
    return f"{where}: {reason}" if where is not None else reason
