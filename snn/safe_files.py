"""Files that survive a full disk, a killed process and Ctrl-C: atomic writes, fsynced appends,
up-front checks of output locations, and the lock of one training run.

Writes are atomic (temp file in the same folder, fsync, rename) and turn a full disk or any other
I/O error into one :class:`UserError` sentence with the previous file intact and the temp file
removed. Temp files of a save that was killed outright (SIGKILL, power loss) are named
``.<name>.<random>.tmp`` and are removed by :func:`remove_stale_temp_files` at the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable

from snn.errors import UserError

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def deferred_interrupt():
    """Let a save finish before Ctrl-C takes effect: a SIGINT inside the block is held and raised
    as :class:`KeyboardInterrupt` at its end; a second one interrupts at once (the temp file is
    still removed). Only in the main thread, where Python delivers signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def hold(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    return (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); harmless where directories cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class _ErrorRecordingFile:
    """A binary file that remembers the first :class:`OSError` of a write or flush (see :func:`atomic_write`)."""

    def __init__(self, raw):
        self._raw = raw
        self.error: OSError | None = None

    def _recorded(self, method, *args):
        try:
            return method(*args)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def write(self, data):
        return self._recorded(self._raw.write, data)

    def flush(self):
        return self._recorded(self._raw.flush)

    def __getattr__(self, name):
        return getattr(self._raw, name)


def atomic_write(path: str | Path, write: Callable, what: str = "file") -> None:
    """Call ``write(handle)`` on a temp file beside ``path``, fsync it and rename it over ``path``.

    On any failure, Ctrl-C included, the temp file is removed and ``path`` keeps its previous
    content; an :class:`OSError` (full disk, I/O error, permissions) becomes a :class:`UserError`.
    """
    path = Path(path)
    tmp_name = None
    handle = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # the mode open() would give: mkstemp's is always 0600
        with os.fdopen(fd, "wb") as raw:
            handle = _ErrorRecordingFile(raw)
            write(handle)
            handle.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:
        # A writer in C++ (torch.save's zip writer) turns the OSError of a full disk into its own
        # RuntimeError ("unexpected pos ..."): the OSError the file recorded is the real cause.
        cause = exc if isinstance(exc, OSError) else getattr(handle, "error", None)
        if cause is None:
            raise
        raise UserError(f"cannot write the {what} {path}: {_describe(cause)}; "
                        f"the previous {path.name} (if any) is unchanged.") from cause
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def append_line(path: str | Path, line: str, what: str = "metrics file") -> None:
    """Append one line to ``path`` and fsync it; on an I/O error the file is cut back to its
    previous length (no half line) and a :class:`UserError` names what failed."""
    path = Path(path)
    data = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as exc:
        raise UserError(f"cannot write the {what} {path}: {_describe(exc)}.") from exc
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise UserError(f"cannot write the {what} {path}: {_describe(exc)}; its earlier lines are unchanged.") from exc
    finally:
        os.close(fd)


def check_output_file(path: str | Path, what: str) -> None:
    """Refuse, before any work, a ``path`` that cannot be written: a folder, under a file, in a
    read-only or missing-and-uncreatable folder. Creates the parent folders."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"the {what} {path} is a folder; pass a file path.")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"cannot write the {what} {path}: {parent} is a file, not a folder.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write the {what} {path}: {_describe(exc)} in {path.parent}.") from exc
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"cannot write the {what} {path}: the file is read-only.")


def remove_stale_temp_files(path: str | Path) -> list[Path]:
    """Remove ``.<name>.*.tmp`` files that a killed save of ``path`` left behind (call under the lock)."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for candidate in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


class RunLock:
    """An exclusive lock on ``<path>`` (e.g. ``mnist_mlp.lock``) for the life of one training run.

    POSIX ``flock``: the kernel releases it when the process ends, however it ends, so a killed run
    never leaves a stale lock. Where ``fcntl`` is missing (Windows) the lock file itself is the
    lock (created exclusively, removed on exit).
    """

    def __init__(self, path: str | Path, what: str = "checkpoint"):
        self.path, self.what, self._fd = Path(path), what, None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            fcntl = None
        message = (f"another training run is writing this {self.what} (it holds the lock {self.path}); "
                   "wait for it to finish or pass another --checkpoint.")
        try:
            if fcntl is None:
                try:
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:
                    raise UserError(message + f" (if no run is going, delete {self.path})") from None
                return self
            while True:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise UserError(message) from None
                # the holder before us may have removed the file between our open and our lock
                if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self._fd = fd
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    return self
                os.close(fd)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {self.path}: {_describe(exc)}.") from exc

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # unlink while still holding the lock (see the inode check above)
            os.close(self._fd)
            self._fd = None
