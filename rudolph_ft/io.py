"""Small file helpers shared by model saving, caches and checkpoints."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "umask_mode", "FolderLock", "FolderLockedError"]


def umask_mode(folder: bool = False) -> int:
    """The mode a plain `open()` / `mkdir()` gives under this process's umask (tempfile's are 0600 / 0700)."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def atomic_write(target: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `target`, then rename it over `target`.

    A crash or kill during `write` leaves any previous `target` untouched (rename is atomic on POSIX).
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode())  # the mode any file the user writes gets, not mkstemp's private 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


class FolderLockedError(FileExistsError):
    """Another live process holds the folder's lock. The message names it (PID, host) and says what to do."""


class FolderLock:
    """An exclusive lock on a folder while one process writes it: `FOLDER/.lock`, flock'ed, holding `PID HOST`.

    The kernel drops the flock when its process dies (even by SIGKILL), so a lock file left by a dead process is
    taken over, with a note naming it. Where flock is missing (no fcntl) the PID is checked instead (this host only).

    Args:
        folder: the folder to lock (created when missing).
        hint: what to tell the user who finds it locked, e.g. "choose another output_dir".
        echo: where the note about a stale lock goes.
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike, *, hint: str = "", echo: Callable[[str], None] = print) -> None:
        self.path = Path(folder) / self.NAME
        self.hint, self.echo = hint, echo
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # not O_TRUNC: a refused opener must not erase it
        holder = os.read(fd, 4096).decode("utf-8", "replace").split()
        pid, host = (int(holder[0]), holder[1]) if len(holder) == 2 and holder[0].isdigit() else (None, None)
        flocked = _try_flock(fd)  # None: no flock here (Windows, some network file systems): check the PID instead
        if flocked is False or (flocked is None and _alive_here(pid, host)):
            os.close(fd)
            hint = f", or {self.hint}" if self.hint else ""
            raise FolderLockedError(f"{self.path.parent} is in use by another run (PID {pid} on host {host}, lock file "
                                    f"{self.path}); wait for it to end or stop it{hint}")
        if pid is not None and pid != os.getpid():
            self.echo(f"{self.path}: taking over the stale lock of PID {pid} on host {host} (no longer running)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the lock file and drop the lock (the file stays: unlinking it would let two openers both lock)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


try:
    import fcntl

    _HAVE_FLOCK = True
except ImportError:  # Windows
    _HAVE_FLOCK = False


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: flock is not available here."""
    if not _HAVE_FLOCK:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # e.g. ENOLCK on a network file system without lock support
        return None


def _alive_here(pid: int | None, host: str | None) -> bool:
    import socket

    if pid is None or pid == os.getpid():
        return False
    if host != socket.gethostname():
        return True  # cannot check a process on another host: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
