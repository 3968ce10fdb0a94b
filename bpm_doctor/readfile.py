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


def write_text_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Replace a regular file's content atomically: a temporary file beside it, then rename(2).

    A symlink is followed, so the file it points at is replaced and the link
    stays. A FIFO, device or socket is never replaced by a rename (that
    would turn `/dev/null` into a regular file); it is written in place,
    without waiting for a reader of a FIFO. A directory raises
    IsADirectoryError. Other failures raise OSError, and no temporary file
    is left behind.
    """
    import tempfile

    target = os.path.realpath(path)
    try:
        status = os.stat(target)
    except FileNotFoundError:
        status = None
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    if status is not None and not stat.S_ISREG(status.st_mode):
        descriptor = os.open(target, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            os.write(descriptor, text.encode("utf-8", "surrogateescape"))
        finally:
            os.close(descriptor)
        return
    directory = os.path.dirname(target) or "."
    descriptor, temporary = tempfile.mkstemp(prefix=".bpm-doctor-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", errors="surrogateescape") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
