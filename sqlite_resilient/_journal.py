"""Where WAL can work: filesystem detection and the reason to fall back from WAL.

WAL needs shared memory (the ``-shm`` file, memory-mapped by every connection) and the
right to create ``-wal``/``-shm`` beside the database (https://www.sqlite.org/wal.html).
That fails on read-only filesystems, files and directories, and is unsafe on network
filesystems, where the memory map is not shared between hosts
(https://www.sqlite.org/wal.html#sometimes_queries_return_sqlite_busy_in_wal_mode and
https://www.sqlite.org/useovernet.html). In those cases a rollback-journal mode is kept.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

__all__ = [
    "NETWORK_FILESYSTEMS",
    "FileSystem",
    "filesystem_of",
    "is_wal_file",
    "refuses_writers",
    "wal_blocker",
    "wal_content_bytes",
]

NETWORK_FILESYSTEMS = frozenset(
    {
        # Linux /proc/self/mountinfo types
        "9p",
        "afs",
        "beegfs",
        "ceph",
        "cifs",
        "coda",
        "davfs",
        "gfs2",
        "glusterfs",
        "gpfs",
        "lustre",
        "ncp",
        "ncpfs",
        "nfs",
        "nfs4",
        "ocfs2",
        "orangefs",
        "smb3",
        "smbfs",
        "fuse.cephfs",
        "fuse.davfs2",
        "fuse.gcsfuse",
        "fuse.glusterfs",
        "fuse.goofys",
        "fuse.juicefs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.smbnetfs",
        "fuse.sshfs",
        # macOS mount(8) types
        "afpfs",
        "webdav",
    }
)
"""Filesystem types on which WAL's shared memory cannot work between hosts."""

WAL_HEADER_SIZE = 32  # https://www.sqlite.org/fileformat2.html#walformat


@dataclass(frozen=True)
class FileSystem:
    """The filesystem a database lives on.

    Attributes:
        type: The filesystem type (``"ext4"``, ``"nfs4"``, ...), ``None`` when unknown.
        read_only: Mounted read-only (``statvfs`` reports ``ST_RDONLY``).
        mount_point: Where it is mounted, ``None`` when unknown.
    """

    type: str | None
    read_only: bool
    mount_point: str | None = None

    @property
    def network(self) -> bool:
        """Whether the type is a network filesystem (see :data:`NETWORK_FILESYSTEMS`)."""
        return self.type in NETWORK_FILESYSTEMS


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _linux_mounts() -> list[tuple[str, str]]:
    """(mount point, type) of every mount, from /proc/self/mountinfo (proc(5))."""
    mounts = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, sep, right = line.partition(" - ")
            fields = left.split()
            if sep and len(fields) >= 5 and right:
                mounts.append((_unescape(fields[4]), right.split()[0]))
    return mounts


_DARWIN_MOUNT = re.compile(r"^.+ on (?P<point>.+) \((?P<type>[^,)]+)")


def _darwin_mounts() -> list[tuple[str, str]]:
    """(mount point, type) of every mount, from mount(8) on macOS."""
    import subprocess  # noqa: PLC0415 - macOS only: other platforms do not pay for its import

    try:
        output = subprocess.run(["/sbin/mount"], capture_output=True, text=True, check=True, timeout=5).stdout
    except subprocess.SubprocessError:
        return []
    return [(m["point"], m["type"]) for m in map(_DARWIN_MOUNT.match, output.splitlines()) if m]


def _existing_ancestor(path: str) -> str:
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def filesystem_of(path: str) -> FileSystem:
    """Describe the filesystem holding *path* (or, if it does not exist, its directory).

    The mount table is read once per path and device (a new mount there, or a symbolic link
    pointed to another filesystem, changes the device); whether it is read-only is asked of
    the kernel every time, so a remount counts.
    """
    where = _existing_ancestor(path)
    try:
        status = os.statvfs(where)
        read_only = bool(status.f_flag & os.ST_RDONLY)
        key: tuple[str, int] | None = (where, os.stat(where).st_dev)
    except OSError:
        read_only, key = False, None
    mount = _mounts_seen.get(key) if key is not None else None
    if mount is None:
        mount = _mount_of(os.path.realpath(where))
        if key is not None:
            if len(_mounts_seen) >= 256:
                _mounts_seen.clear()
            _mounts_seen[key] = mount
    return FileSystem(type=mount[1], read_only=read_only, mount_point=mount[0])


_mounts_seen: dict[tuple[str, int], tuple[str | None, str | None]] = {}


def _mount_of(where: str) -> tuple[str | None, str | None]:
    """(mount point, type) of the mount holding the absolute path *where*, or ``(None, None)``."""
    try:
        if sys.platform.startswith("linux"):
            mounts = _linux_mounts()
        elif sys.platform == "darwin":
            mounts = _darwin_mounts()
        else:
            mounts = []
    except OSError:
        mounts = []
    best: tuple[str | None, str | None] = (None, None)
    for point, fstype in mounts:  # the last, longest mount point containing the path
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and (best[0] is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def wal_blocker(path: str, filesystem: FileSystem) -> str | None:
    """The reason WAL cannot be used for the database file *path*, or ``None`` if it can."""
    if filesystem.read_only:
        return "read-only filesystem"
    if filesystem.network:
        return f"network filesystem ({filesystem.type}): WAL's shared memory does not work across hosts"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "read-only database file"
    if not os.access(os.path.dirname(path) or ".", os.W_OK | os.X_OK):
        return "read-only directory: the -wal and -shm files cannot be created"
    return None


def is_wal_file(path: str) -> bool:
    """Whether the database header says WAL mode (file format versions 2/2)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18:20] == b"\x02\x02"


def wal_content_bytes(path: str) -> int:
    """Bytes of frames in the ``-wal`` file of *path* beyond its header (0 if none)."""
    try:
        size = os.stat(path + "-wal").st_size
    except FileNotFoundError:
        return 0
    return max(0, size - WAL_HEADER_SIZE)


_EROFS_EXIT = 3
_OPEN_FOR_WRITING = f"""\
import errno, os, sys
try:
    os.close(os.open(sys.argv[1], os.O_RDWR | os.O_CLOEXEC))
except OSError as error:
    sys.exit({_EROFS_EXIT} if error.errno == errno.EROFS else 1)
"""


def refuses_writers(path: str | None) -> bool:
    """Whether the filesystem of *path* refuses to open it for writing (``EROFS``): also
    one that ``statvfs`` and ``access`` do not call read-only, as after the kernel turned it
    read-only on an I/O error. Asked after an error only.

    The file is opened in a child process: closing a descriptor of it in this one would let
    go of every POSIX lock this process holds on it, those of its SQLite connections
    included, and another process could then write under them."""
    if path is None or not sys.executable:
        return False
    import subprocess  # noqa: PLC0415 - asked after an error only

    try:
        probe = subprocess.run(  # noqa: S603 - this interpreter, a fixed program; the path is an argument
            [sys.executable, "-I", "-S", "-c", _OPEN_FOR_WRITING, path], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == _EROFS_EXIT
