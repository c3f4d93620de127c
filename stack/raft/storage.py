"""Durable storage for one node's Raft log: segment files, a hard-state file, snapshots.

The host passes `<data_dir>/raft`; the directory holds

    log-<first_index:020d>.seg              records, appended; the last one is active
    hardstate                               two 512-byte slots written alternately
    snap-<term:020d>-<index:020d>.snap      meta + data, published by rename

A hard state saved together with entries is a record at the end of their write instead
of a slot write (one fdatasync, not two); the newest hard state, by sequence number, wins.

Synchronous, blocking IO: the asyncio host calls it from one thread. docs/storage.md
has the formats and the reasoning (durability order, torn tails, measurements).
"""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import structlog

from stack.raft.faultfs import FileHandle, FileSystem, OsFileSystem
from stack.raft.faultfs import StorageInUse as StorageInUse
from stack.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta

_log = structlog.get_logger()


class CorruptLog(Exception):
    """Stored Raft state is damaged where recovery must not guess: the node stops
    rather than silently diverging from its peers."""


# ---------------------------------------------------------------- formats

# Log record: magic(3) flags(1) payload_len(u32) crc32(u32) payload, where the crc covers
# the first 8 header bytes and the payload, and payload = msgpack (term, index, type, data)
# or, for a hard state record, msgpack (seq, term, vote, commit).
_REC = struct.Struct(">3sBII")
_REC_PRE = struct.Struct(">3sBI")
_CRC = struct.Struct(">I")
_REC_MAGIC = b"\xd5RL"
# Set on the first record of a batch written while every earlier byte of its segment was
# already synced: damage before such a record cannot be a torn write (see _bad_record).
_DURABLE_BEFORE = 1
# A hard state saved with entries rides at the end of their write: one fdatasync for both,
# and a torn write cannot keep it without every entry before it.
_HARD_STATE_REC = 2

# Snapshot: magic(8) meta_len(u32) data_len(u64) crc32(u32) meta data; meta is msgpack
# (index, term, voters, learners); the crc covers the first 20 bytes, meta and data.
_SNAP = struct.Struct(">8sIQI")
_SNAP_PRE = struct.Struct(">8sIQ")
_SNAP_MAGIC = b"STKSNAP1"

# Hard state slot: magic(4) seq term vote commit (u64 each) crc32(u32) over the rest.
_HS = struct.Struct(">4sQQQQ")
_HS_MAGIC = b"HST1"
_HS_SLOT = 512  # one sector per slot: a torn write of one slot cannot reach the other
_HARDSTATE = "hardstate"

_SEG_RE = re.compile(r"log-(\d{20})\.seg")
_SNAP_RE = re.compile(r"snap-(\d{20})-(\d{20})\.snap")


def _seg_name(first_index: int) -> str:
    return f"log-{first_index:020d}.seg"


def _snap_name(meta: SnapshotMeta) -> str:
    return f"snap-{meta.term:020d}-{meta.index:020d}.snap"


def _encode_batch(
    entries: Sequence[Entry], flags: int, pack: Callable[[object], bytes]
) -> tuple[bytes, list[int]]:
    """One buffer for the whole batch (one write), plus each record's offset in it."""
    parts: list[bytes] = []
    offsets: list[int] = []
    pos = 0
    for e in entries:
        payload = pack((e.term, e.index, int(e.type), e.data))
        pre = _REC_PRE.pack(_REC_MAGIC, flags, len(payload))
        parts += (pre, _CRC.pack(zlib.crc32(payload, zlib.crc32(pre))), payload)
        offsets.append(pos)
        pos += _REC.size + len(payload)
        flags = 0
    return b"".join(parts), offsets


def _record(flags: int, payload: bytes) -> bytes:
    pre = _REC_PRE.pack(_REC_MAGIC, flags, len(payload))
    return pre + _CRC.pack(zlib.crc32(payload, zlib.crc32(pre))) + payload


def _record_at(view: memoryview, pos: int) -> tuple[int, int] | None:
    """(flags, end offset) of an intact record starting at `pos`, else None."""
    if pos + _REC.size > len(view):
        return None
    magic, flags, length, crc = _REC.unpack_from(view, pos)
    end = pos + _REC.size + length
    if magic != _REC_MAGIC or end > len(view):
        return None
    if zlib.crc32(view[pos + _REC.size : end], zlib.crc32(view[pos : pos + 8])) != crc:
        return None
    return flags, end


def _decode_record(flags: int, payload: memoryview) -> Entry | tuple[int, HardState]:
    """An entry, or (seq, hard state) for a hard state record. Raises on damage."""
    a, b, c, d = msgpack.unpackb(payload)
    if flags & _HARD_STATE_REC:
        if not all(type(x) is int for x in (a, b, c, d)):
            raise TypeError("hard state fields must be integers")
        return a, HardState(b, c, d)
    if not (type(a) is int and type(b) is int and type(d) is bytes):
        raise TypeError("unexpected entry field types")
    return Entry(a, b, EntryType(c), d)


def _encode_snapshot(snap: Snapshot) -> tuple[bytes, bytes]:
    m = snap.meta
    meta = msgpack.packb((m.index, m.term, sorted(m.conf.voters), sorted(m.conf.learners)))
    pre = _SNAP_PRE.pack(_SNAP_MAGIC, len(meta), len(snap.data))
    crc = zlib.crc32(snap.data, zlib.crc32(meta, zlib.crc32(pre)))
    return pre + _CRC.pack(crc) + meta, snap.data


def _decode_snapshot(blob: bytes) -> Snapshot:
    """Raises ValueError on any damage."""
    if len(blob) < _SNAP.size:
        raise ValueError("shorter than its header")
    magic, meta_len, data_len, crc = _SNAP.unpack_from(blob)
    if magic != _SNAP_MAGIC or len(blob) != _SNAP.size + meta_len + data_len:
        raise ValueError("bad magic or length")
    view = memoryview(blob)
    if zlib.crc32(view[_SNAP.size :], zlib.crc32(view[:20])) != crc:
        raise ValueError("checksum mismatch")
    try:
        index, term, voters, learners = msgpack.unpackb(view[_SNAP.size : _SNAP.size + meta_len])
        conf = ConfState(frozenset(voters), frozenset(learners))
    except (TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable meta: {exc}") from exc
    return Snapshot(SnapshotMeta(index, term, conf), blob[_SNAP.size + meta_len :])


def _encode_hard_state(seq: int, hs: HardState) -> bytes:
    body = _HS.pack(_HS_MAGIC, seq, hs.term, hs.vote, hs.commit)
    return body + _CRC.pack(zlib.crc32(body))


def _decode_hard_state(blob: bytes) -> tuple[int, HardState] | None:
    """The newest intact slot as (seq, hard state); None if neither slot is intact."""
    best: tuple[int, HardState] | None = None
    for off in (0, _HS_SLOT):
        rec = blob[off : off + _HS.size + _CRC.size]
        if len(rec) < _HS.size + _CRC.size:
            continue
        magic, seq, term, vote, commit = _HS.unpack_from(rec)
        if magic != _HS_MAGIC or _CRC.unpack_from(rec, _HS.size)[0] != zlib.crc32(rec[: _HS.size]):
            continue
        if best is None or seq > best[0]:
            best = (seq, HardState(term, vote, commit))
    return best


# ---------------------------------------------------------------- storage


@dataclass(frozen=True, slots=True)
class StoredState:
    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]  # every stored entry after the snapshot, in index order


@dataclass(eq=False, slots=True)
class _Segment:
    first_index: int
    path: Path
    offsets: array[int] = field(default_factory=lambda: array("Q"))  # per record
    terms: array[int] = field(default_factory=lambda: array("Q"))
    size: int = 0  # bytes of intact records

    @property
    def last_index(self) -> int:  # first_index - 1 when empty
        return self.first_index + len(self.offsets) - 1


def _covered(seg: _Segment, index: int) -> bool:
    """Every entry the segment could hold is at or before `index`."""
    return seg.first_index <= index and seg.last_index <= index


def _term_at(segments: Sequence[_Segment], index: int) -> int | None:
    for seg in reversed(segments):
        if seg.first_index <= index:
            return seg.terms[index - seg.first_index] if index <= seg.last_index else None
    return None


class LogStorage:
    """The Raft log of one node on disk. Create with `LogStorage.open`."""

    def __init__(self, directory: Path, fs: FileSystem, segment_bytes: int) -> None:
        self._dir = directory
        self._fs = fs
        self._segment_bytes = segment_bytes
        self._pack: Callable[[object], bytes] = msgpack.Packer(use_bin_type=True).pack
        self._release: Callable[[], None] | None = None
        self._segments: list[_Segment] = []
        self._active: FileHandle | None = None  # open iff _segments: the last segment
        self._active_dirty = False  # written since its last sync
        self._dir_dirty = False  # a segment was created since the last directory sync
        self._snapshot: Snapshot | None = None
        self._snap_files: set[Path] = set()
        self._hard_state = HardState()
        self._hs_seq = 0
        self._hs_file: FileHandle | None = None
        self._hs_dirty = False
        self._hs_in_log = False  # the newest hard state is a record in a segment
        self._initial: StoredState | None = None
        self._closed = False

    @classmethod
    def open(
        cls, directory: Path, *, segment_bytes: int = 64 << 20, fs: FileSystem | None = None
    ) -> LogStorage:
        if segment_bytes <= 0:
            raise ValueError("segment_bytes must be positive")
        self = cls(directory, fs if fs is not None else OsFileSystem(), segment_bytes)
        try:
            self._recover()
        except BaseException:
            self._close_files()
            raise
        return self

    def initial_state(self) -> StoredState:
        """What was on disk at open(). Held only until the first save or compact."""
        if self._initial is None:
            raise RuntimeError("initial_state() is only available before the first save()")
        return self._initial

    def save(
        self,
        *,
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        """Persist one Ready: `snapshot`, then `entries` (replacing any stored entries at or
        after entries[0].index), then `hard_state`. With sync, everything written so far is
        durable on return, at one fdatasync per touched file. A snapshot is always synced;
        stored entries after it survive only if the log holds its index at its term."""
        self._check_open()
        self._initial = None
        if snapshot is not None:
            self._install(snapshot)
        if entries:
            self._append(entries, hard_state)
        if sync:
            self._sync_log()  # entries durable before a hard state that may commit them
        if hard_state is not None and hard_state != self._hard_state:
            self._write_hard_state(hard_state)  # no entries to ride with: the hardstate file
        if sync:
            self._sync_hard_state()

    def compact(self, snapshot: Snapshot) -> None:
        """Persist a snapshot of the local state machine and drop the log it covers. A
        snapshot no newer than the stored one is a no-op (one installed from the leader
        may overtake a local compaction queued behind it)."""
        self._check_open()
        index = snapshot.meta.index
        if self._snapshot is not None and index <= self._snapshot.meta.index:
            return
        if index > self._last_index():
            raise ValueError(f"cannot compact to {index}: the log ends at {self._last_index()}")
        term = _term_at(self._segments, index)
        if term is not None and term != snapshot.meta.term:
            raise ValueError(f"snapshot term {snapshot.meta.term} != log term {term} at {index}")
        self.save(snapshot=snapshot)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._sync_log()
            self._sync_hard_state()
        finally:
            self._close_files()

    # -- writing

    def _install(self, snap: Snapshot) -> None:
        meta, current = snap.meta, self._snapshot
        if current is not None:
            if meta.index < current.meta.index:
                raise ValueError(f"snapshot at {meta.index} is older than {current.meta.index}")
            if snap == current:
                return
        path = self._dir / _snap_name(meta)
        self._write_atomically(path, *_encode_snapshot(snap))
        self._snapshot = snap
        stale = self._snap_files - {path}
        self._snap_files = {path}
        for old in sorted(stale):
            self._fs.unlink(old)
        term = _term_at(self._segments, meta.index)
        if term is not None and term != meta.term:
            doomed = list(self._segments)  # the log diverged from the snapshot: all of it goes
        else:
            doomed = [s for s in self._segments if _covered(s, meta.index)]
        self._drop(doomed)
        if doomed:  # gone for good before any new segment can reuse a name
            self._fs.sync_dir(self._dir)
        elif stale:
            self._dir_dirty = True

    def _append(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
        first = entries[0].index
        for i, e in enumerate(entries):
            if e.index != first + i:
                raise ValueError(f"entries are not contiguous at {e.index}")
        snap_index, last = self._snap_index(), self._last_index()
        if not snap_index < first <= last + 1:
            raise ValueError(f"entries from {first} do not fit a log of ({snap_index}, {last}]")
        if first <= last:
            self._truncate_from(first)
        seg = self._segments[-1] if self._segments else None
        if seg is None or (seg.size >= self._segment_bytes and seg.offsets):
            seg = self._roll(first)
        assert self._active is not None
        flags = 0 if self._active_dirty else _DURABLE_BEFORE
        buf, offsets = _encode_batch(entries, flags, self._pack)
        if hard_state is not None and hard_state != self._hard_state:
            self._hs_seq += 1
            hs = (self._hs_seq, hard_state.term, hard_state.vote, hard_state.commit)
            buf += _record(_HARD_STATE_REC, self._pack(hs))
            self._hard_state, self._hs_in_log = hard_state, True
        self._active.pwrite(buf, seg.size)
        self._active_dirty = True
        seg.offsets.extend([seg.size + o for o in offsets])
        seg.terms.extend([e.term for e in entries])
        seg.size += len(buf)

    def _truncate_from(self, index: int) -> None:
        """Drop stored entries >= index. The cut is made durable before any replacement
        byte is written, so a crash can never splice old records after new ones."""
        self._settle_hard_state()
        doomed = [s for s in self._segments if s.first_index > index]
        if doomed:
            self._drop(doomed)
            self._fs.sync_dir(self._dir)
        seg, active = self._segments[-1], self._active
        assert active is not None
        keep = index - seg.first_index
        active.truncate(seg.offsets[keep])
        active.sync()
        self._active_dirty = False
        seg.size = seg.offsets[keep]
        del seg.offsets[keep:]
        del seg.terms[keep:]

    def _roll(self, first: int) -> _Segment:
        if self._active is not None:  # seal: a later segment never gets bytes before this
            if self._active_dirty:
                self._active.sync()
            self._active.close()
        seg = _Segment(first, self._dir / _seg_name(first))
        self._active = self._fs.open(seg.path, create=True)
        self._active_dirty = False
        self._dir_dirty = True
        self._segments.append(seg)
        return seg

    def _drop(self, doomed: Sequence[_Segment]) -> None:
        if not doomed:
            return
        self._settle_hard_state()
        if self._segments[-1] in doomed and self._active is not None:
            self._active.close()
            self._active, self._active_dirty = None, False
        for seg in doomed:
            self._fs.unlink(seg.path)
        self._segments = [s for s in self._segments if s not in doomed]
        if self._segments and self._active is None:
            self._active = self._fs.open(self._segments[-1].path)

    def _write_hard_state(self, hs: HardState) -> None:
        self._hs_seq += 1
        rec = _encode_hard_state(self._hs_seq, hs)
        slot = (self._hs_seq % 2) * _HS_SLOT
        if self._hs_file is None:
            # created whole, by rename: an existing file always has a valid slot
            blob = bytearray(2 * _HS_SLOT)
            blob[slot : slot + len(rec)] = rec
            path = self._dir / _HARDSTATE
            self._write_atomically(path, bytes(blob))
            self._hs_file = self._fs.open(path)
        else:
            self._hs_file.pwrite(rec, slot)
            self._hs_dirty = True
        self._hard_state, self._hs_in_log = hs, False

    def _settle_hard_state(self) -> None:
        """Before log bytes are cut or deleted: if the newest hard state is a log record,
        copy it to the hardstate file (after syncing the entries it may commit)."""
        if self._hs_in_log:
            self._sync_log()
            self._write_hard_state(self._hard_state)
            self._sync_hard_state()

    def _write_atomically(self, path: Path, *parts: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        handle = self._fs.open(tmp, create=True)
        try:
            handle.truncate(0)
            offset = 0
            for part in parts:
                handle.pwrite(part, offset)
                offset += len(part)
            handle.sync()
        finally:
            handle.close()
        self._fs.rename(tmp, path)
        self._fs.sync_dir(self._dir)

    def _sync_log(self) -> None:
        if self._active_dirty and self._active is not None:
            self._active.sync()
            self._active_dirty = False
        if self._dir_dirty:
            self._fs.sync_dir(self._dir)
            self._dir_dirty = False

    def _sync_hard_state(self) -> None:
        if self._hs_dirty and self._hs_file is not None:
            self._hs_file.sync()
            self._hs_dirty = False

    # -- recovery

    def _recover(self) -> None:
        if self._fs.makedirs(self._dir):
            self._fs.sync_dir(self._dir.parent)
        self._release = self._fs.lock(self._dir)
        segments: list[_Segment] = []
        snaps: list[tuple[tuple[int, int], Path]] = []
        names = sorted(self._fs.listdir(self._dir))
        for name in names:
            path = self._dir / name
            if name.endswith(".tmp"):  # an interrupted atomic write; the rename never happened
                self._fs.unlink(path)
            elif m := _SEG_RE.fullmatch(name):
                segments.append(_Segment(int(m[1]), path))
            elif m := _SNAP_RE.fullmatch(name):
                snaps.append(((int(m[2]), int(m[1])), path))
        self._snap_files = {path for _, path in snaps}
        if _HARDSTATE in names:
            self._load_hard_state()
        self._snapshot = self._load_snapshot(sorted(snaps, reverse=True))
        entries = self._load_log(segments)
        self._initial = StoredState(self._hard_state, self._snapshot, entries)

    def _load_hard_state(self) -> None:
        path = self._dir / _HARDSTATE
        found = _decode_hard_state(self._fs.read(path))
        if found is None:
            raise CorruptLog(f"{path}: neither hard state slot is intact")
        self._hs_seq, self._hard_state = found
        self._hs_file = self._fs.open(path)

    def _load_snapshot(self, newest_first: list[tuple[tuple[int, int], Path]]) -> Snapshot | None:
        for (index, term), path in newest_first:
            try:
                snap = _decode_snapshot(self._fs.read(path))
                if (snap.meta.index, snap.meta.term) != (index, term):
                    raise ValueError("meta does not match the file name")
            except ValueError as exc:
                _log.error("raft_snapshot_corrupt", file=str(path), reason=str(exc))
                continue
            return snap
        if newest_first:
            names = ", ".join(str(p) for _, p in newest_first)
            raise CorruptLog(f"no intact snapshot among {names}")
        return None

    def _load_log(self, segments: list[_Segment]) -> list[Entry]:
        snap = self._snapshot
        snap_index = snap.meta.index if snap is not None else 0
        # Every segment is read, even one wholly before the snapshot (an interrupted
        # compaction): it may hold the newest hard state.
        doomed: list[_Segment] = []
        entries: list[Entry] = []
        for i, seg in enumerate(segments):
            for e in self._read_segment(seg, is_last=i == len(segments) - 1):
                if e.index > snap_index:
                    entries.append(e)
        term = _term_at(segments, snap_index)
        if snap is not None and term is not None and term != snap.meta.term:
            # Only a crash while installing a snapshot over a diverged log leaves this; those
            # entries conflict with the leader's and were never committed.
            _log.warning("raft_log_diverges_from_snapshot", index=snap_index, dropped=len(entries))
            doomed, segments, entries = doomed + segments, [], []
        doomed += [s for s in segments if _covered(s, snap_index)]
        segments = [s for s in segments if not _covered(s, snap_index)]
        if segments and not 1 <= segments[0].first_index <= snap_index + 1:
            raise CorruptLog(
                f"{segments[0].path}: log starts at {segments[0].first_index} but the snapshot "
                f"ends at {snap_index}; the entries between are missing"
            )
        for prev, nxt in itertools.pairwise(segments):
            if nxt.first_index != prev.last_index + 1:
                raise CorruptLog(
                    f"{nxt.path}: expected the log to continue at {prev.last_index + 1}"
                )
        if doomed:
            self._settle_hard_state()
            for seg in doomed:
                self._fs.unlink(seg.path)
            self._fs.sync_dir(self._dir)
        self._segments = segments
        if segments:
            self._active = self._fs.open(segments[-1].path)
        return entries

    def _read_segment(self, seg: _Segment, *, is_last: bool) -> list[Entry]:
        data = self._fs.read(seg.path)
        view = memoryview(data)
        entries: list[Entry] = []
        pos = 0
        while pos < len(data):
            found = _record_at(view, pos)
            if found is None:
                self._bad_record(seg, data, pos, is_last=is_last)
                break
            flags, end = found
            try:
                rec = _decode_record(flags, view[pos + _REC.size : end])
            except (TypeError, ValueError, msgpack.UnpackException) as exc:
                raise CorruptLog(f"{seg.path}: undecodable record at offset {pos}: {exc}") from exc
            if isinstance(rec, Entry):
                if rec.index != seg.first_index + len(seg.offsets):
                    raise CorruptLog(
                        f"{seg.path}: record at offset {pos} has index {rec.index}, "
                        f"expected {seg.first_index + len(seg.offsets)}"
                    )
                seg.offsets.append(pos)
                seg.terms.append(rec.term)
                entries.append(rec)
            elif rec[0] > self._hs_seq:  # the newest hard state, log or file, wins
                (self._hs_seq, self._hard_state), self._hs_in_log = rec, True
            pos = end
        seg.size = pos
        return entries

    def _bad_record(self, seg: _Segment, data: bytes, pos: int, *, is_last: bool) -> None:
        """A damaged record is a torn tail (truncate) only if nothing after it was ever
        known durable: a sealed segment was synced whole, and a later batch flagged
        _DURABLE_BEFORE was written after these bytes had been synced."""
        if not is_last:
            raise CorruptLog(f"{seg.path}: corrupt record at offset {pos} in a sealed segment")
        view = memoryview(data)
        probe = data.find(_REC_MAGIC, pos + 1)
        while probe != -1:
            found = _record_at(view, probe)
            if found is not None and found[0] & _DURABLE_BEFORE:
                raise CorruptLog(
                    f"{seg.path}: corrupt record at offset {pos}, followed by intact records "
                    f"written after it was synced (offset {probe})"
                )
            probe = data.find(_REC_MAGIC, probe + 1)
        _log.warning(
            "raft_log_torn_tail", file=str(seg.path), offset=pos, dropped_bytes=len(data) - pos
        )
        handle = self._fs.open(seg.path)
        try:
            handle.truncate(pos)
            handle.sync()
        finally:
            handle.close()

    # -- helpers

    def _snap_index(self) -> int:
        return self._snapshot.meta.index if self._snapshot is not None else 0

    def _last_index(self) -> int:
        return self._segments[-1].last_index if self._segments else self._snap_index()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("LogStorage is closed")

    def _close_files(self) -> None:
        self._closed = True
        for handle in (self._active, self._hs_file):
            if handle is not None:
                handle.close()
        self._active = self._hs_file = None
        if self._release is not None:
            self._release()
            self._release = None
