"""Temporary folders for writers: one per writer, owned while the writer lives.

Data is written into a temporary folder and renamed to its final name only when complete, so an
interrupted write is never mistaken for complete data. Two questions need an answer that works
when a writer is killed outright (SIGKILL, a node going away):

- *Is this temporary folder still being written?* Each of our writers holds an exclusive
  ``flock`` on a lock file inside its folder for as long as it writes. The kernel drops the lock
  when the process dies, however it dies, so a folder whose lock can be taken is stale and may be
  removed. A temporary folder without our lock file (strax's, or ours in the instant before its
  rename) is never removed.
- *Can two writers of one key collide?* No: each writer first makes a private folder
  ``<name>_temp_<pid>_<random>`` with its lock held, then tries to rename it to strax's name
  ``<name>_temp`` (an atomic rename that fails if that folder exists). If strax's name is taken by
  a live writer or by strax, it keeps writing in its private folder. The final rename to
  ``<name>`` is atomic too, and the first writer to finish wins (see ``files.py``).

On systems without ``fcntl`` (Windows) nothing is ever judged stale: writers use private
folders when strax's name is taken, and old temporary folders are left for the user to remove.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from .metadata import TEMP_SUFFIX

__all__ = ["LOCK_NAME", "WriterFolder", "claim", "is_live", "live_folders", "remove_stale"]

LOCK_NAME = ".asyncstrax-writer.lock"


class WriterFolder:
    """A temporary folder owned by this writer (its lock held until ``release``)."""

    def __init__(self, path: str, lock_fd: int | None) -> None:
        self.path = path
        self._lock_fd = lock_fd

    def release(self, remove_lock_file: bool = False) -> None:
        """Give up the lock (and optionally remove the lock file first, before a rename)."""
        if remove_lock_file:
            try:
                os.unlink(os.path.join(self.path, LOCK_NAME))
            except OSError:
                pass
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None


def _new_lock(folder: str) -> int | None:
    """Create the folder's lock file, already locked when it appears (so no other writer can
    take it for a dead writer's lock in between): lock a file under a private name, then rename
    it into place."""
    private = os.path.join(folder, f"{LOCK_NAME}.{secrets.token_hex(4)}")
    # 0o666 less the umask, as for the data files: a group sharing a store can judge it
    fd = os.open(private, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
    os.rename(private, os.path.join(folder, LOCK_NAME))
    return fd


def _take_lock(path: str) -> int | None:
    """An fd holding the exclusive lock on an existing lock file; None if held or missing."""
    try:
        fd = os.open(path, os.O_RDWR)
    except PermissionError:
        try:  # another user's lock file: flock needs only a read-only descriptor
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
    except OSError:
        return None
    if fcntl is None:  # pragma: no cover - Windows: never judge a folder stale
        os.close(fd)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A finishing writer unlinks its lock file, then lets go of the lock, then renames its
        # folder: a lock taken from an unlinked file belongs to such a writer, not a dead one.
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_if_stale(folder: str) -> bool:
    """Remove ``folder`` if it is ours and its writer is dead; True if it is gone."""
    fd = _take_lock(os.path.join(folder, LOCK_NAME))
    if fd is None:
        return False
    try:
        # Move it out of the way first (atomic), so nobody sees a half-deleted folder.
        trash = f"{folder}.stale-{secrets.token_hex(4)}"
        try:
            os.rename(folder, trash)
        except OSError:
            return False
        shutil.rmtree(trash, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def is_live(folder: str) -> bool:
    """True if ``folder`` is one of our temporary folders and its writer holds its lock.

    Without ``fcntl``, a folder with our lock file counts as live.
    """
    path = os.path.join(folder, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if fcntl is None:  # pragma: no cover - Windows
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True  # held: its writer is alive
        return False  # we could take it: the writer is dead (closing the fd lets it go)
    finally:
        os.close(fd)


def _temp_folders(final: str) -> list[str]:
    parent, name = os.path.split(final)
    try:
        entries = os.listdir(parent or ".")
    except OSError:
        return []
    return [os.path.join(parent, entry) for entry in entries
            if entry == name + TEMP_SUFFIX or (entry.startswith(name + TEMP_SUFFIX + "_")
                                               and ".stale-" not in entry)]


def live_folders(final: str) -> list[str]:
    """The temporary folders of ``final`` whose writers are alive (being written right now)."""
    return [path for path in _temp_folders(final) if is_live(path)]


def remove_stale(final: str) -> list[str]:
    """Remove stale temporary folders of ``final`` left by dead writers; returns their paths."""
    parent, name = os.path.split(final)
    removed: list[str] = []
    try:
        entries = os.listdir(parent or ".")
    except OSError:
        return removed
    for entry in entries:
        path = os.path.join(parent, entry)
        if entry == name + TEMP_SUFFIX or entry.startswith(name + TEMP_SUFFIX + "_"):
            if _remove_if_stale(path):
                removed.append(path)
        elif entry.startswith(name + TEMP_SUFFIX + ".stale-"):
            # a stale folder whose removal was interrupted: nobody owns it any more
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def claim(final: str) -> WriterFolder:
    """Make and own a temporary folder for writing the data that will be called ``final``."""
    canonical = final + TEMP_SUFFIX
    private = f"{canonical}_{os.getpid()}_{secrets.token_hex(4)}"
    os.mkdir(private)
    fd = _new_lock(private)
    for _ in range(2):
        try:
            os.rename(private, canonical)
            return WriterFolder(canonical, fd)
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                raise
        if not _remove_if_stale(canonical):
            break
    return WriterFolder(private, fd)
