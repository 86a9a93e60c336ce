"""A workdir is owned by one process: an exclusive lock held for the whole run.

The lock is ``WORKDIR/.lock``, locked with ``flock`` and holding the owner's process id, host,
start time and command line. The kernel releases a ``flock`` when its process ends, however it
ends, so a crashed run never blocks the next one; a lock file left behind by a killed process
is found on the next start and named as stale. A second process that asks for a held lock is
refused at once with the owner's id and command, so two runs can never write one workdir.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


class WorkdirBusy(RuntimeError):
    """Another live process holds the workdir's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # a PermissionError would mean it exists, owned by another user
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _owner_text(path: Path) -> str:
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "an unknown process"
    return (f"process {owner.get('pid')} on {owner.get('host')} since {owner.get('started')} "
            f"({owner.get('command', '?')})")


def _stale_note(path: Path) -> str | None:
    """A line naming the dead process that left ``path`` behind, or ``None``."""
    try:
        owner = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return f"{path} was left by a process that did not finish writing it; taking it over"
    pid, host = owner.get("pid"), owner.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and _alive(pid):
        return None  # a live process that released its lock (e.g. finishing): nothing stale
    return (f"stale lock {path} of process {pid} on {host} (started {owner.get('started')}, "
            f"{owner.get('command', '?')}) is no longer held: that run ended without cleaning up; taking it over")


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike, *, note=None) -> Iterator[Path]:
    """Holds the exclusive lock of ``workdir`` (created if missing) for the ``with`` block.

    Args:
      workdir: the folder a run writes into.
      note: called with one line when a stale lock of a dead process is taken over (default:
        printed to stderr).

    Raises:
      WorkdirBusy: another live process holds the lock; names it and what to do.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirBusy(
                f"workdir {workdir} is in use by {_owner_text(path)}: one process at a time writes a workdir; "
                "wait for that run to end (or stop it), or choose another folder"
            ) from None
        try:  # the file we locked must still be the one at ``path`` (a finishing owner unlinks it)
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _stale_note(path) if os.fstat(fd).st_size else None
    if stale:
        (note or (lambda line: print(f"mdl-jax: note: {line}", file=sys.stderr)))(stale)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
             "command": " ".join(sys.argv) or sys.executable}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode(), 0)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked, so that no one else locked this file meanwhile
        os.close(fd)


def holds_only_lock(folder: Path) -> bool:
    """``folder`` is empty but for a lock file (a new workdir, or one a killed run locked)."""
    return all(p.name == LOCK_NAME for p in folder.iterdir())
