"""One way to replace a file: write a temporary file in the same folder, fsync it,
rename it over the target, fsync the folder. A crash (even a power cut) leaves the old
file or the new one, never half of one, and never a rename that is lost."""
from __future__ import annotations

import os
import stat
import tempfile
from typing import Callable


def fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_prefix(path: str | os.PathLike) -> str:
    """Prefix of the temporary files a save of ``path`` writes: named after the file, so that
    the holder of its lock knows which leftovers are its own to delete."""
    return f".imret-{os.path.basename(os.fspath(path))}-"


def file_mode(path: str) -> int:
    """The mode a rewritten file gets: the old file's, or what the umask gives a new one
    (``mkstemp`` alone would make every rewritten file 0600)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], prefix: str = ".imret-",
                 suffix: str = ".tmp") -> None:
    """``write(tmp_path)`` fills a temporary file, which then replaces ``path``.
    ``write`` may open the path itself (h5py, torch.save, np.savez); on any error the
    temporary file is removed and ``path`` is untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    mode = file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_folder(folder)
