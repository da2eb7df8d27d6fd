"""Fetch and unpack dataset archives safely.

Downloads go to a temporary file next to the destination and are moved into place
only after their MD5 matches, so an interrupted or tampered download never leaves a
file that looks complete. Archives are extracted with tarfile's ``data`` filter, which
refuses absolute paths, ``..`` and links that escape the target folder.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError

_CHUNK = 1 << 20


def one_line(err: BaseException | str) -> str:
    """An exception (or text) as one short line, for embedding in a DataError."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = str(err.reason)  # "[Errno 111] Connection refused", not "<urlopen error ...>"
    text = err if isinstance(err, str) else (str(err) or type(err).__name__)
    return " ".join(text.split())


def cause(err: DataError) -> str:
    """The short cause of a failed fetch (a DownloadError's reason, else the message)."""
    return err.reason if isinstance(err, DownloadError) else one_line(str(err))


class DownloadError(DataError):
    """A download failed; ``reason`` is the short cause, for callers that add context."""

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"download of {url} failed ({reason})")


def md5sum(path: Path) -> str:
    """The hex MD5 of a file, read in chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first."""
    created: list[Path] = []
    probe = folder
    while not probe.exists() and probe.parent != probe:
        created.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_if_empty(folders: list[Path]) -> None:
    """Undo :func:`_make_folder` as far as the folders are still empty (deepest first)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def download(url: str, dest: Path, md5: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and verify its MD5; return ``dest``.

    An existing ``dest`` with the right MD5 is reused. Any failure (network, disk,
    checksum) raises :class:`DownloadError` and leaves nothing behind: no partial
    file, and no folder this call created (a failed first start leaves no empty
    ``data/``).
    """
    dest = Path(dest)
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    created: list[Path] = []
    try:
        created = _make_folder(dest.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as err:
        _remove_if_empty(created)
        raise DataError(f"cannot write to {dest.parent} ({one_line(err)})") from None
    tmp = Path(tmp_name)
    done = False
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != md5:
            raise DownloadError(
                url,
                f"MD5 mismatch: got {h.hexdigest()}, expected {md5}; corrupt or changed upstream",
            )
        os.replace(tmp, dest)
        done = True
    except (OSError, ValueError, http.client.HTTPException) as err:
        raise DownloadError(url, one_line(err)) from None
    finally:
        tmp.unlink(missing_ok=True)
        if not done:
            _remove_if_empty(created)
    return dest


def extract_tar(archive: Path, into: Path) -> None:
    """Safely extract a (possibly compressed) tar archive into ``into``.

    Members are unpacked to a temporary folder inside ``into`` and their top-level
    entries moved into place afterwards, so a failed extraction leaves nothing that
    looks like a complete dataset.
    """
    into = Path(into)
    try:
        into.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=into))
    except OSError as err:
        raise DataError(f"cannot write to {into} ({one_line(err)})") from None
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, filter="data")
        for entry in sorted(staging.iterdir()):
            target = into / entry.name
            if target.exists() or target.is_symlink():
                raise DataError(
                    f"{archive}: cannot extract {entry.name!r}: {target} already exists; remove it"
                )
            os.replace(entry, target)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{archive}: cannot extract ({one_line(err)})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
