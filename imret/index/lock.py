"""One writer at a time per index, across processes: an OS file lock beside the index.

Every writer (``imret index``/``add``/``remove`` and the service's add/delete) holds an
exclusive ``fcntl.flock`` on ``<index>.lock`` while it reads-modifies-writes the index.
The kernel drops the lock when its holder dies (even by SIGKILL), so a stale lock file
never blocks anyone. A second writer waits up to ``wait_s`` and then fails with one line;
it never overwrites what the first one saved.

``DiskState`` is how a long-lived writer (the service) notices that another process
saved the index since it loaded it: the file's (device, inode, size, mtime) change on
every save, since saves rename a new file into place.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import os
import time
from contextlib import contextmanager
from typing import Iterator, NamedTuple

from ..core.atomic import temp_prefix
from ..core.errors import IndexFileError

DEFAULT_WAIT_S = 10.0
STALE_TMP_S = 3600.0  # old-style temporary files (not named after their index): removed after an hour


def wait_from_env(default: float = DEFAULT_WAIT_S) -> float:
    """How long a command waits for another writer: ``IMRET_LOCK_WAIT_S`` seconds, else ``default``."""
    try:
        return max(0.0, float(os.environ.get("IMRET_LOCK_WAIT_S", default)))
    except ValueError:
        return default


def lock_path(index_path: str | os.PathLike) -> str:
    return os.fspath(index_path) + ".lock"


class LockBusy(IndexFileError):
    """Another process holds the write lock of this index."""


@contextmanager
def writer_lock(index_path: str | os.PathLike, wait_s: float = DEFAULT_WAIT_S, poll_s: float = 0.05) -> Iterator[None]:
    """Hold the exclusive write lock of the index at ``index_path`` (waiting up to ``wait_s``);
    on leaving, stale temporary files of this index are gone too."""
    path = lock_path(index_path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise IndexFileError(path, f"cannot create the write lock ({exc.strerror or exc})") from None
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise IndexFileError(path, f"cannot take the write lock ({exc.strerror or exc})") from None
                if time.monotonic() >= deadline:
                    raise LockBusy(os.fspath(index_path), f"another imret process is changing this index "
                                   f"(lock {path} held; waited {wait_s:g} s); try again when it has finished") \
                        from None
                time.sleep(poll_s)
        remove_stale_temporaries(index_path, folder)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temporaries(index_path: str | os.PathLike, folder: str | None = None) -> list[str]:
    """Delete temporary files a killed save of this index left behind (call with the lock held).
    Returns the files deleted."""
    folder = folder or os.path.dirname(os.path.abspath(os.fspath(index_path)))
    gone = []
    now = time.time()
    own = glob.glob(os.path.join(glob.escape(folder), glob.escape(temp_prefix(index_path)) + "*.tmp"))
    old_style = [p for p in glob.glob(os.path.join(glob.escape(folder), ".imret-*.tmp")) if p not in own]
    for p in own + old_style:
        try:
            if p in own or now - os.path.getmtime(p) > STALE_TMP_S:
                os.unlink(p)
                gone.append(p)
        except OSError:
            pass
    return gone


class DiskState(NamedTuple):
    """What identifies one saved version of a file (None: no file)."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> "DiskState | None":
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
