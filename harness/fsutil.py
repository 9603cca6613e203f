"""The one way the harness writes and reads result files (docs/columns.md, "Files").

A run folder may come from someone else (copied, unpacked, shared), so nothing here follows
a link planted in it or blocks on a FIFO planted in it:

- `atomic_write`: a fresh temp file from `mkstemp` in the target folder (never a fixed
  name another process or a planted link could own), fsync, `os.replace`, fsync of the
  folder. A target that is a link, a FIFO or anything but a regular file is refused.
- `open_append`: the CSV sinks' append handle, `O_NOFOLLOW`, regular files only.
- `read_regular` / `is_regular`: `O_NOFOLLOW | O_NONBLOCK` and an fstat check, so a link
  or a FIFO named like a result file is never read (a FIFO would hang the reader).
"""

from __future__ import annotations

import io
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import TextIO

from harness.errors import HarnessError

# The run ids the CLI accepts and the dashboard serves: ASCII only, so a run that exists
# is always reachable by URL and its folder name is one path component of bounded length.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFileError(HarnessError):
    """A path the harness would read or write is a link, a FIFO or another non-file."""


def is_regular(path: Path) -> bool:
    """True when `path` itself (not what a link points at) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _refuse_non_regular(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        kind = "a link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise UnsafeFileError(f"{path}: {kind}; refusing to write through it")


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """The bytes of the regular file `path`; FileNotFoundError when missing,
    UnsafeFileError for a link, FIFO, device or folder (never blocks, never follows)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as e:
        if e.errno == 40:  # ELOOP: O_NOFOLLOW met a link
            raise UnsafeFileError(f"{path}: a link; not read") from None
        if isinstance(e, FileNotFoundError):
            raise
        raise UnsafeFileError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFileError(f"{path}: not a regular file; not read")
        chunks = []
        left = limit
        while left is None or left > 0:
            b = os.read(fd, 1 << 20 if left is None else min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            if left is not None:
                left -= len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_regular_text(path: Path) -> str:
    return read_regular(path).decode("utf-8", errors="replace")


def atomic_write(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Replace `path` with `data` so readers see the old or the new file, never half, and
    a link or FIFO at `path` is refused rather than written through."""
    path = Path(path)
    _refuse_non_regular(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp makes it 0600; results are for everyone to read
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        _refuse_non_regular(path)  # planted between the check and now: still refused
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # the rename is durable only once the folder's entry is on disk
    try:
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def open_append(path: Path) -> TextIO:
    """A text handle appending to the regular file `path` (created 0644 when missing);
    a link or FIFO at `path` is refused."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == 40:
            raise UnsafeFileError(f"{path}: a link; refusing to write through it") from None
        if e.errno == 6:  # ENXIO: a FIFO without a reader
            raise UnsafeFileError(f"{path}: not a regular file; refusing to write") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFileError(f"{path}: not a regular file; refusing to write")
    return io.TextIOWrapper(os.fdopen(fd, "ab"), encoding="utf-8", newline="")


def private_root(root: Path) -> Path:
    """`root` as a folder only this user can enter (0700), created when missing. A root
    that is a link, not a folder, or owned by another user (planted in /tmp before us)
    is refused: whatever we put under it (configs, the admin socket, run locks) would be
    theirs to read or swap."""
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeFileError(f"{root}: not a folder (a link or a file); remove it")
    if st.st_uid != os.getuid():
        raise UnsafeFileError(f"{root}: owned by uid {st.st_uid}, not by us "
                              f"({os.getuid()}); remove it or set TMPDIR")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(root, 0o700)
    return root
