"""The file system under LogStorage: the `FileSystem` protocol, `OsFileSystem` (the real
one) and `FaultyFileSystem`, which remembers what a power cut would keep.

FaultyFileSystem works on real files (under the test's directory) and keeps beside them,
per file, its content as of its last sync and, per directory, its entries as of its
last directory sync. `crash()` puts the disk back to exactly that: every file to its last
synced content, files whose directory entry was never synced gone, unlinks and renames
that were never synced undone. It is the pessimistic, deterministic reading of POSIX;
real disks may keep more (never less, for what was synced). Directories themselves are
assumed durable once made. Every change to a tracked directory must go through it. It
issues no real fsync: the model is the durability.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class StorageInUse(Exception):
    """Another LogStorage, in this process or another, holds the directory."""


# ---------------------------------------------------------------- file system seam


class FileHandle(Protocol):
    def pwrite(self, data: bytes, offset: int) -> None: ...
    def truncate(self, size: int) -> None: ...
    def sync(self) -> None: ...  # fdatasync: data plus the metadata needed to read it
    def close(self) -> None: ...


class FileSystem(Protocol):
    """The few operations storage needs."""

    def open(self, path: Path, *, create: bool = False) -> FileHandle: ...
    def read(self, path: Path) -> bytes: ...
    def listdir(self, path: Path) -> list[str]: ...
    def makedirs(self, path: Path) -> bool: ...  # True if it had to create `path`
    def unlink(self, path: Path) -> None: ...
    def rename(self, src: Path, dst: Path) -> None: ...
    def sync_dir(self, path: Path) -> None: ...
    def lock(self, path: Path) -> Callable[[], None]: ...  # returns the release function


class OsFile:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class OsFileSystem:
    def open(self, path: Path, *, create: bool = False) -> OsFile:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        return OsFile(os.open(path, flags, 0o600))

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def makedirs(self, path: Path) -> bool:
        if path.is_dir():
            return False
        path.mkdir(mode=0o700, parents=True)
        return True

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def sync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: Path) -> Callable[[], None]:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StorageInUse(f"{path} is in use by another LogStorage") from exc
        return lambda: os.close(fd)


# ---------------------------------------------------------------- faults


class PowerCut(Exception):
    """Raised by the sync that `power_cut_after` chose: the machine is off; call crash()."""


class _FaultyFile(OsFile):
    __slots__ = ("_fs", "inode")

    def __init__(self, fs: FaultyFileSystem, fd: int, inode: int) -> None:
        super().__init__(fd)
        self._fs = fs
        self.inode = inode

    def _alive(self) -> None:
        if self.fd < 0:
            raise RuntimeError("file used after close or crash")

    def pwrite(self, data: bytes, offset: int) -> None:
        self._alive()
        self._fs.writes += 1
        super().pwrite(data, offset)

    def truncate(self, size: int) -> None:
        self._alive()
        super().truncate(size)

    def sync(self) -> None:  # no fdatasync: remember what a power cut would keep
        self._alive()
        self._fs._count_sync()
        self._fs._durable_data[self.inode] = os.pread(self.fd, os.fstat(self.fd).st_size, 0)

    def close(self) -> None:
        if self.fd >= 0:
            super().close()
            self.fd = -1
            self._fs._handles.remove(self)


class FaultyFileSystem:
    def __init__(self) -> None:
        self._next_inode = 0
        self._live: dict[Path, int] = {}  # path -> inode, as the running process sees it
        self._durable_names: dict[Path, dict[str, int]] = {}  # per directory, at its last sync
        self._durable_data: dict[int, bytes] = {}  # per inode, at its last sync
        self._handles: list[_FaultyFile] = []
        self._locked: set[Path] = set()
        self.writes = 0  # pwrite calls: a batch should be one
        self.file_syncs = 0
        self.dir_syncs = 0
        self._syncs_left: int | None = None

    # -- FileSystem

    def open(self, path: Path, *, create: bool = False) -> _FaultyFile:
        self._track(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
        if path not in self._live:
            self._live[path] = self._new_inode(b"")
        handle = _FaultyFile(self, fd, self._live[path])
        self._handles.append(handle)
        return handle

    def read(self, path: Path) -> bytes:
        self._track(path.parent)
        return path.read_bytes()

    def listdir(self, path: Path) -> list[str]:
        self._track(path)
        return os.listdir(path)

    def makedirs(self, path: Path) -> bool:
        created = not path.is_dir()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._track(path)
        return created

    def unlink(self, path: Path) -> None:
        self._track(path.parent)
        os.unlink(path)
        self._live.pop(path, None)

    def rename(self, src: Path, dst: Path) -> None:
        self._track(src.parent)
        self._track(dst.parent)
        os.replace(src, dst)
        self._live[dst] = self._live.pop(src)

    def sync_dir(self, path: Path) -> None:
        self._track(path)
        self._count_sync(directory=True)
        self._durable_names[path] = {p.name: i for p, i in self._live.items() if p.parent == path}

    def lock(self, path: Path) -> Callable[[], None]:
        if path in self._locked:
            raise StorageInUse(f"{path} is in use by another LogStorage")
        self._locked.add(path)
        return lambda: self._locked.discard(path)

    # -- faults

    def crash(self) -> None:
        """Power cut: open files and locks die; the disk keeps only what was synced."""
        for handle in list(self._handles):
            handle.close()
        self._syncs_left = None
        self._locked.clear()
        self._live = {}
        for directory, names in self._durable_names.items():
            for name in os.listdir(directory):
                if (directory / name).is_file():
                    os.unlink(directory / name)
            for name, inode in names.items():
                (directory / name).write_bytes(self._durable_data[inode])
                self._live[directory / name] = inode
        alive = set(self._live.values())
        self._durable_data = {i: d for i, d in self._durable_data.items() if i in alive}

    def power_cut_after(self, syncs: int) -> None:
        """Let `syncs` more file or directory syncs happen; the next raises PowerCut
        without syncing anything (and so does every one after it, until crash())."""
        self._syncs_left = syncs

    def flip_byte(self, path: Path, offset: int) -> None:
        """Media corruption: invert one byte, in what is cached and in what is durable."""
        self._track(path.parent)
        with path.open("r+b") as f:
            f.seek(offset)
            old = f.read(1)
            if not old:
                raise ValueError(f"{path} has no byte at offset {offset}")
            f.seek(offset)
            f.write(bytes([old[0] ^ 0xFF]))
        inode = self._live.get(path)
        durable = self._durable_data.get(inode, b"") if inode is not None else b""
        if inode is not None and offset < len(durable):
            flipped = bytearray(durable)
            flipped[offset] ^= 0xFF
            self._durable_data[inode] = bytes(flipped)

    # -- bookkeeping

    def _count_sync(self, *, directory: bool = False) -> None:
        if self._syncs_left is not None:
            if self._syncs_left <= 0:
                raise PowerCut("power cut before this sync")
            self._syncs_left -= 1
        if directory:
            self.dir_syncs += 1
        else:
            self.file_syncs += 1

    def _new_inode(self, durable: bytes) -> int:
        self._next_inode += 1
        self._durable_data[self._next_inode] = durable
        return self._next_inode

    def _track(self, directory: Path) -> None:
        """First sight of a directory: whatever is in it already counts as durable."""
        if directory in self._durable_names:
            return
        names: dict[str, int] = {}
        if directory.is_dir():
            for name in sorted(os.listdir(directory)):
                path = directory / name
                if path.is_file():
                    names[name] = self._live[path] = self._new_inode(path.read_bytes())
        self._durable_names[directory] = names
