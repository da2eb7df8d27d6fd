"""Writing result files so that a reader never sees half of one, and a killed writer
leaves nothing behind for good."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

#: Temporary files carry their writer's pid, so the next writer can tell a live
#: writer's file from a dead one's.
TEMP_SUFFIX = ".lotto-tmp"
_TEMP_NAME = re.compile(r"^\..+" + re.escape(TEMP_SUFFIX) + r"(\d+)$")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one.

    A regular file (or a new path) is written to a temporary file beside it, then
    renamed into place; the file it replaces keeps its permissions (and, when the
    writer may give it, its owner): a private file stays private. A symlink is
    followed (its target is replaced, the link stays); its target's folder must exist,
    since a link naming a folder that is not there is more likely a mistake than a
    request to make one. A path that is not a regular file (a FIFO, a terminal, a
    character device) is written directly, since renaming would replace the node
    itself. Temporary files of writers that died (``kill -9``) in that folder are
    removed first; SIGTERM or SIGHUP during the write removes this one. Failures raise
    ``OSError``; none leaves a partial file or a temporary one.
    """
    link = Path(path) if Path(path).is_symlink() else None
    path = Path(os.path.realpath(path)) if link is not None else Path(path)
    if _is_special(path):
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
        return path
    if link is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, f"it links to {path}, whose folder {path.parent} does not exist", str(link)
        )
    remove_dead_temp_files(path.parent, also=path.name)
    tmp = path.with_name(f".{path.name}{TEMP_SUFFIX}{os.getpid()}")
    old = _regular_file_stat(path)
    try:
        with _removed_on_termination(tmp):
            if old is not None:  # made private at once: the old mode is given after the write
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600))
            tmp.write_text(text, encoding="utf-8")
            if old is not None:
                _give_owner_and_mode(tmp, old)
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def _regular_file_stat(path: Path) -> os.stat_result | None:
    """The stat of ``path`` when it is a regular file, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _give_owner_and_mode(path: Path, old: os.stat_result) -> None:
    """Give ``path`` the owner (where this process may: root, or a group it is in) and
    the permission bits of ``old``. The owner goes first: a change of owner clears the
    set-id bits the mode then restores."""
    uid = old.st_uid if os.geteuid() == 0 else -1
    with contextlib.suppress(PermissionError):  # not root and not in that group: ours it stays
        os.chown(path, uid, old.st_gid)
    os.chmod(path, stat.S_IMODE(old.st_mode))


def _is_special(path: Path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def remove_dead_temp_files(folder: Path, *, also: str = "") -> int:
    """Delete the temporary files in ``folder`` whose writer is gone (a kill mid-write);
    ``also`` names a file whose temporaries of older releases (``.NAME.tmpPID``) go too.
    Returns how many were removed."""
    old = re.compile(r"^\." + re.escape(also) + r"\.tmp(\d+)$") if also else None
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = _TEMP_NAME.match(entry.name) or (old.match(entry.name) if old else None)
        if match is None or writer_alive(int(match.group(1))) or not entry.is_file(follow_symlinks=False):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed += 1
    return removed


def writer_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (ours counts: it may be writing right now)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def _removed_on_termination(tmp: Path) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP (when nobody else handles them) first
    delete ``tmp``, then end the process as the signal would have."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, object] = {}

    def handle(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            previous[sig] = signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


#: File systems shared over a network, where SQLite's locks and its write-ahead log's
#: shared memory do not work as on a local disk (sqlite.org/wal.html: "WAL does not work
#: over a network filesystem")
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "fuse.sshfs", "fuse.glusterfs",
    "glusterfs", "9p", "afs", "fuse.s3fs", "fuse.gcsfuse", "fuse.cephfs",
})


def filesystem_type(path: str | Path, mounts: str | None = None) -> str | None:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4``...), from the
    mount table (``/proc/self/mounts``, or ``mounts``: its text); None when unknown.
    The path need not exist yet: its deepest existing folder counts."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return None
    where = Path(os.path.realpath(path))
    best: tuple[int, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = where == Path(point) or Path(point) in where.parents
        if inside and (best is None or len(point) > best[0]):
            best = (len(point), fields[2])
    return None if best is None else best[1]


def on_network_filesystem(path: str | Path, mounts: str | None = None) -> str | None:
    """The network file system type holding ``path`` (``nfs4``...), or None."""
    kind = filesystem_type(path, mounts)
    return kind if kind in NETWORK_FILESYSTEMS else None
