"""One writer per run directory: RUN/.lock, held with `fcntl.flock` while `train()` writes.

The kernel drops a flock when its holder dies (even by SIGKILL), so a crashed run never leaves a
lock that blocks its resume. The file also holds "<pid> <host>" of the holder, for the messages:
a second writer fails with `RunLockedError` naming the holder; a writer that finds the PID of a
dead process (or a lock no process holds any more) takes it over with a warning on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from wsdlab.common.errors import RunLockedError
from wsdlab.train.layout import LOCK

LOCK_FILE = LOCK


def pid_alive(pid: int) -> bool:
    """True when a process with this PID exists on this host (signal 0 probe)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def read_holder(path: Path) -> tuple[int | None, str | None]:
    """(pid, host) written in a lock file; (None, None) when empty or unreadable."""
    try:
        parts = path.read_text().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None, None


@contextlib.contextmanager
def run_lock(out: str | Path) -> Iterator[Path]:
    """Hold OUT/.lock for the duration (creating OUT when needed).

    RunLockedError names the live holder when another process holds it. When this call created
    OUT and leaves nothing but the lock file in it, OUT is removed again on exit, so a run that
    fails before writing anything leaves nothing behind.
    """
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(_locked_message(out, path)) from None
        _warn_if_stale(path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            if created and {p.name for p in out.iterdir()} == {LOCK_FILE}:
                with contextlib.suppress(OSError):
                    path.unlink()
                    out.rmdir()
    finally:
        os.close(fd)  # releases the flock


def _locked_message(out: Path, path: Path) -> str:
    pid, host = read_holder(path)
    if pid is None:
        who = "another process"
    else:
        who = f"process {pid} on {host or 'an unknown host'}"
        if host == socket.gethostname() and not pid_alive(pid):
            who += " (no longer running: a child process it started still holds the lock; end it first)"
    return f"run directory {out} is in use by {who} (lock {path}); wait for it to finish or use another --out"


def _warn_if_stale(path: Path) -> None:
    """We hold the flock; a PID left in the file is a writer that died without releasing it."""
    pid, host = read_holder(path)
    if pid is None or pid == os.getpid():
        return
    here = socket.gethostname()
    state = "not running" if host == here and not pid_alive(pid) else "no longer holding it"
    print(f"warning: taking over the stale lock {path} of process {pid} on {host or 'an unknown host'} ({state})",
          file=sys.stderr)
