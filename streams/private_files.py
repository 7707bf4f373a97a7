"""Private file modes for everything leadflow keeps on disk.

The data directory holds the broker's log segments (``leadflow.pii-keys`` among them: the key
bytes of every person), the workers' state, the embedded ClickHouse, the hashed write and admin
keys and the model-signing key. None of it is for other users of the machine: directories are
``0700`` and files ``0600``. New files get that from the umask (:data:`PRIVATE_UMASK`, set at
the command line's entry point and for the broker's JVM); :func:`tighten` brings a data
directory written before this rule (segments were ``0644``) to the same modes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make ``path`` itself ``0700``.

    Example:
        >>> import tempfile
        >>> d = private_dir(Path(tempfile.mkdtemp()) / "a" / "b")
        >>> oct(stat.S_IMODE(d.stat().st_mode))
        '0o700'
    """
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, the file ``0600`` from its first byte.

    A reader never sees half a file (the bytes go to a temporary file that replaces
    ``path``), and there is no moment in which the file exists with a wider mode.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "secret"
        >>> write_private(p, b"k")
        >>> p.read_bytes(), oct(stat.S_IMODE(p.stat().st_mode))
        (b'k', '0o600')
    """
    private_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.chmod(FILE_MODE)  # an older .tmp left by a crash kept its own mode
    tmp.replace(path)


def tighten(root: Path) -> int:
    """Remove group and other access below ``root`` (itself included); return the changes.

    For data written before private modes were the rule. Symlinks are not followed, and
    entries owned by another user are left alone (chmod would fail on them anyway).

    Example:
        >>> import tempfile
        >>> r = Path(tempfile.mkdtemp())
        >>> (r / "seg.log").write_bytes(b"")
        0
        >>> (r / "seg.log").chmod(0o644)
        >>> tighten(r) >= 1, oct(stat.S_IMODE((r / "seg.log").stat().st_mode))
        (True, '0o600')
    """
    if not root.exists():
        return 0
    uid = os.getuid()
    changed = 0
    paths = [root]
    for folder, dirs, files in os.walk(root):
        paths.extend(Path(folder) / name for name in (*dirs, *files))
    for path in paths:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or info.st_uid != uid:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            path.chmod(mode & ~0o077)
            changed += 1
    return changed
