"""The workdir's lock: one process at a time runs in a workdir.

Two runs in one workdir would each read the ledger, then buy the same labels and append
them under the same keys, and the ledger would hold every such purchase twice. So a run
holds an exclusive ``fcntl.flock`` on the file ``lock`` inside its workdir from before it
reads anything there until it ends, and a second process is refused at once with a message
that names the workdir and the pid (and host) written into the file by its holder.

The operating system drops the lock when its process ends, however it ends: a ``lock``
file left behind by a killed run is not held by anyone, and the rerun takes it. A run that
ends removes the file (and the workdir itself when it created it and wrote nothing there,
as after a start refused for a bad setting). Where the filesystem offers no locks, the run
goes on unlocked with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import socket
import time

from absl import logging

LOCK_FILE = "lock"


@dataclasses.dataclass(frozen=True)
class Holder:
    """The process that holds a lock, as its lock file says (None: not written yet)."""

    pid: int | None
    host: str | None = None

    def __str__(self) -> str:
        if self.pid is None:
            return "another process (it has not written its pid yet)"
        return f"process {self.pid}" + (f" on {self.host}" if self.host else "")


class WorkdirBusyError(RuntimeError):
    """Another process holds the workdir's lock; the message names the workdir and it."""

    def __init__(self, folder: str, holder: Holder):
        super().__init__(
            f"workdir {folder} is in use: {holder} holds its lock "
            f"({os.path.join(folder, LOCK_FILE)}). Two runs in one workdir would buy the "
            "same labels twice; wait for that run to end (or stop it), or use another "
            "--workdir"
        )
        self.folder, self.holder = folder, holder


class WorkdirLock:
    """An exclusive lock on ``folder`` for this process: `acquire`, then `release`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self._fd: int | None = None
        self._created = False  # whether acquire created the folder

    def acquire(self) -> None:
        """Takes the lock, creating the folder when needed; WorkdirBusyError when another
        process holds it."""
        while True:
            self._created = not os.path.isdir(self.folder)
            os.makedirs(self.folder, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed by a holder ending: again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise WorkdirBusyError(self.folder, holder) from None
            except OSError as error:
                os.close(fd)
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                logging.warning(
                    "cannot lock %s (%s): this filesystem offers no locks; nothing stops a "
                    "second process from running in this workdir",
                    self.path,
                    error,
                )
                return
            # A holder that ended between our open and our lock removed the file we locked;
            # the lock is the file at the path: try again.
            if _is_at(fd, self.path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Removes the lock file, then lets the lock go (a process waiting on the removed
        file sees that it is gone and takes a new one)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        if self._created:
            with contextlib.suppress(OSError):  # only when nothing was written there
                os.rmdir(self.folder)

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _is_at(fd: int, path: str) -> bool:
    """Whether the open file ``fd`` is the file at ``path`` now."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _holder(fd: int, attempts: int = 20) -> Holder:
    """The holder written in the lock file ``fd``, waiting a moment for a holder that has
    just taken the lock to write itself."""
    for attempt in range(attempts):
        words = os.pread(fd, 512, 0).decode("utf-8", "replace").split()
        if words and words[0].isdigit():
            return Holder(int(words[0]), words[1] if len(words) > 1 else None)
        if attempt + 1 < attempts:
            time.sleep(0.05)
    return Holder(None, None)
