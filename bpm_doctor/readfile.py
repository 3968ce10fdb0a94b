"""Read a file named by the host without blocking on it or reading it whole.

The collectors open files that the host names: a manager's
`--settings-file`, a unit's `EnvironmentFile=`, the entries of a drop-in
directory, crontabs. Any of them may be a FIFO (open(2) blocks until a
writer appears), a device (opening /dev/watchdog arms the watchdog), a
socket or a file of gigabytes. `read_regular_file` checks the type before it
opens anything and reads at most `limit` bytes.
"""

from __future__ import annotations

import errno
import os
import stat


class NotRegularFileError(OSError):
    """The path is a FIFO, socket, device or directory, so it was not opened or not read."""


def read_regular_file(path: str, limit: int) -> bytes:
    """Return at most `limit` bytes from the start of a regular file.

    Symlinks are followed. Raises NotRegularFileError for anything but a
    regular file, PermissionError when access is denied, and other OSErrors
    (ENOENT, ELOOP, EIO) as open(2) and read(2) report them.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotRegularFileError(errno.EINVAL, "not a regular file", path)
    # The path may have been replaced by a FIFO since the stat above. With
    # O_NONBLOCK, open then returns at once instead of waiting for a writer, and fstat rejects it.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", path)
        chunks = []
        remaining = limit
        while remaining > 0:
            chunk = os.read(descriptor, min(remaining, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)
