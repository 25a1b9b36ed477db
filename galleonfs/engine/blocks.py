"""``BlockStore``: the block index (id -> frame, reference count) and the frames it names.

Role: store, reference, unreference and read blocks; encode and verify their frames; keep
the volume's ``used_bytes`` and the per-segment accounting in step with the index. Blocks
are content addressed (``frames.BlockHasher``), so storing a known content only adds a
reference (dedup).

**One lookup per entry per operation.** Index entries an operation touches are read once
into ``_entries`` and changed there; ``flush`` writes each changed entry once, when the
operation's record is made (``ops.py``). A write that replaces 16 blocks therefore reads
each old and new entry once and writes each once, where it used to read them 2-3 times
(docs/benchmarks.md, "Issue 10 restructure"). Inside an operation, every reader and writer
of the index goes through here, so nothing sees a stale entry; fsck's repair, which works
on the raw records, is the one exception and makes no other change in that operation.

Frame writes come first: a new block's frame is appended before the index changes, so a
full disk (``NoSpace``) refuses the operation with nothing changed (``space.py``).

What it must not do: know files or inodes (the VFS maps those to block ids), or serve a
block whose frame failed verification: that raises ``Corrupt`` and puts the volume in
failsafe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ..crypto.codec import BlockCodec
from ..errors import Corrupt, NoSpace
from ..ids import BlockId
from ..meta.schema import EXTERNAL, BlockLoc, Db
from ..meta.store import MetaStore
from ..storage import no_space
from . import frames
from .blockcache import BlockCache
from .health import Health
from .journal import FrameRef
from .segments import Segments
from .segstats import SegmentStats
from .space import SpaceGuard
from .superblock import SuperBlock

Buffer = bytes | bytearray | memoryview
Counters = dict[str, int]


class BlockStore:
    def __init__(self, *, meta: MetaStore, segments: Segments, codec: BlockCodec,
                 hasher: frames.BlockHasher, sb: SuperBlock, segstats: SegmentStats,
                 space: SpaceGuard, health: Health, counters: Counters,
                 origin_segments: Callable[[], Segments]) -> None:
        self._meta = meta
        self._segments = segments
        self.codec = codec
        self.hash = hasher
        self._plain = codec.plain and not hasher.salted     # frames without codec work
        self._sb = sb
        self._segstats = segstats
        self._space = space
        self._health = health
        self._counters = counters
        self._origin_segments = origin_segments
        self.cache = BlockCache()
        self.pending: list[FrameRef] = []              # frames of this operation, not yet journaled
        self._entries: dict[BlockId, BlockLoc | None] = {}   # entries this operation read
        self._dirty: set[BlockId] = set()

    # --- the index, one lookup per entry per operation -----------------------------------------
    def entry(self, bid: BlockId) -> BlockLoc | None:
        """The index entry of ``bid``, read once for the current operation. Change it only
        through the methods below (they mark it for ``flush``)."""
        if bid in self._entries:
            return self._entries[bid]
        raw = self._meta.get(Db.BLOCKS, bid)
        loc = None if raw is None else BlockLoc.decode(raw)
        self._entries[bid] = loc
        return loc

    def _set(self, bid: BlockId, loc: BlockLoc | None) -> None:
        self._entries[bid] = loc
        self._dirty.add(bid)

    def info(self, bid: BlockId) -> BlockLoc | None:
        """The index entry of ``bid`` (do not change it: use the methods below). Outside an
        operation's changes, a plain lookup that is not kept (nothing would clear it)."""
        return self._entries[bid] if bid in self._entries else self._lookup(bid)

    def put_entry(self, bid: BlockId, loc: BlockLoc) -> None:
        """Record an entry as given (a clone's entries pointing into its origin)."""
        self._set(bid, loc)

    @property
    def changed(self) -> bool:
        return bool(self._dirty or self.pending)

    def flush(self) -> None:
        """Write each entry this operation changed, once; start afresh for the next one."""
        if not self._entries:
            return                                # most operations touch no block
        for bid in self._dirty:
            loc = self._entries[bid]
            if loc is None:
                self._meta.delete(Db.BLOCKS, bid)
            else:
                self._meta.put(Db.BLOCKS, bid, loc.encode())
        self._dirty.clear()
        self._entries.clear()

    def take_pending(self) -> list[FrameRef]:
        pending, self.pending = self.pending, []
        return pending

    def forget_changes(self) -> None:
        """Forget the current operation's entries, changed or only read, and its frames: it was
        undone, or it failed before it changed anything (``ops.py``)."""
        self._dirty.clear()
        self._entries.clear()
        self.pending = []

    # --- references ----------------------------------------------------------------------------
    def store(self, blocks: Sequence[Buffer], ids: Sequence[BlockId] | None = None) -> list[BlockId]:
        """Add one reference to a block with each content; return the block ids.

        New contents are appended as frames in one write (before the index changes); known
        contents only gain a reference (dedup). ``ids`` may carry the ids if the caller
        already hashed the blocks.
        """
        ids = list(ids) if ids is not None else [BlockId(self.hash(b)) for b in blocks]
        new: list[tuple[BlockId, Buffer, int]] = []     # (id, content, crc)
        bufs: list[Buffer] = []
        added: dict[BlockId, int] = {}
        for bid, data in zip(ids, blocks, strict=True):
            if bid in added or self.entry(bid) is not None:
                added[bid] = added.get(bid, 0) + 1
                self._counters["blocks_deduped"] += 1
                continue
            header, payload, crc = self.frame(bid, data)
            bufs += (header, payload)
            new.append((bid, data, crc))
            added[bid] = 0
            self.cache.put(bid, bytes(data))
        if new:
            self._place(new, bufs)
        for bid, count in added.items():
            if count:
                loc = self.entry(bid)
                assert loc is not None
                loc.refs += count
                self._dirty.add(bid)
        return ids

    def _place(self, new: list[tuple[BlockId, Buffer, int]], bufs: list[Buffer]) -> None:
        """Append the frames of new blocks in one write; index each with one reference."""
        lens = [len(bufs[2 * i]) + len(bufs[2 * i + 1]) for i in range(len(new))]
        total = sum(lens)
        seg, offset = self.append_frames(bufs, total)
        self._segstats.appended(seg, total)
        for (bid, data, crc), frame_len in zip(new, lens, strict=True):
            self._set(bid, BlockLoc(seg, offset, frame_len, len(data), 1))
            self.pending.append(FrameRef(seg, offset, frame_len, crc))
            offset += frame_len
            self._sb.used_bytes += len(data)
        self._counters["blocks_written"] += len(new)

    def write(self, contents: Sequence[Buffer | None], replaced: Iterable[BlockId]) -> list[BlockId | None]:
        """Store the new contents of a file's blocks (None: a hole) that replace the blocks
        ``replaced``; return their ids (None for holes). Refused whole with ``NoSpace`` if
        the volume's quota cannot take the growth: new contents not stored yet, less the
        replaced blocks nothing else references (a snapshot may keep them; the quota counts
        them as freed, as ``df`` will once the snapshot goes)."""
        ids: list[BlockId | None] = [None if c is None else BlockId(self.hash(c)) for c in contents]
        grow = 0
        fresh: set[BlockId] = set()
        for bid, content in zip(ids, contents, strict=True):
            if bid is not None and content is not None and bid not in fresh and self.entry(bid) is None:
                fresh.add(bid)
                grow += len(content)
        for bid in set(replaced).difference(ids):
            loc = self.entry(bid)
            if loc is not None and loc.refs == 1:
                grow -= loc.raw_len
        sb = self._sb
        if grow > 0 and sb.used_bytes + grow > sb.size:
            raise NoSpace("the volume is full")
        self.store([c for c in contents if c is not None], [i for i in ids if i is not None])
        return ids

    def ref(self, bid: BlockId) -> None:
        loc = self.entry(bid)
        assert loc is not None, "reference to a block that is not in the index"
        loc.refs += 1
        self._dirty.add(bid)

    def unref(self, bid: BlockId) -> int:
        """Drop one reference; return the bytes freed (the raw length if it was the last)."""
        loc = self.entry(bid)
        assert loc is not None, "unreference of a block that is not in the index"
        assert loc.refs > 0
        loc.refs -= 1
        if loc.refs > 0:
            self._dirty.add(bid)
            return 0
        self._set(bid, None)
        self._segstats.died(loc.seg, loc.frame_len)     # a clone's shared frame counts nowhere
        self._sb.used_bytes -= loc.raw_len
        self.cache.drop(bid)
        return loc.raw_len

    def release(self, dropped: Iterable[tuple[BlockId, bool]]) -> int:
        """A file stopped using these blocks; for each, ``kept`` says a snapshot kept the old
        extent (and with it the reference). Returns the raw bytes the file no longer holds."""
        released = 0
        for bid, kept in dropped:
            loc = self.entry(bid)
            assert loc is not None, "a file referenced a block that is not in the index"
            released += loc.raw_len
            if not kept:
                self.unref(bid)
        return released

    # --- moving frames (GC, flatten, rekey) ----------------------------------------------------
    def moved(self, bid: BlockId, seg: int, offset: int, frame_len: int, crc: int) -> None:
        """``bid``'s frame was written again at ``seg@offset``: point the index there and move
        its bytes in the segment accounting (the old copy is dead space for GC)."""
        loc = self.entry(bid)
        assert loc is not None
        self._segstats.died(loc.seg, loc.frame_len)
        self._segstats.appended(seg, frame_len)
        loc.seg, loc.offset, loc.frame_len = seg, offset, frame_len
        self._dirty.add(bid)
        self.pending.append(FrameRef(seg, offset, frame_len, crc))

    def rewrite(self, ids: Sequence[BlockId], datas: Sequence[bytes]) -> int:
        """Write the blocks ``ids`` (contents ``datas``) again, in one append to this volume's
        current segment, sealed under the current key: a clone's shared blocks become its
        own (flatten), old-key frames new ones (rekey). Returns the bytes written."""
        bufs: list[Buffer] = []
        placed: list[tuple[BlockId, int, int]] = []        # (id, frame length, crc)
        for bid, data in zip(ids, datas, strict=True):
            header, payload, crc = self.frame(bid, data)
            bufs += (header, payload)
            placed.append((bid, len(header) + len(payload), crc))
        total = sum(p[1] for p in placed)
        seg, offset = self.append_frames(bufs, total)
        for bid, frame_len, crc in placed:
            self.moved(bid, seg, offset, frame_len, crc)
            offset += frame_len
        return total

    def append_frames(self, bufs: Sequence[Buffer], total: int, *, when_full: bool = False) -> tuple[int, int]:
        """Append frames to the current data segment; return ``(segment, offset)``.

        Called before the operation changes any metadata, so a full disk refuses it whole:
        ``NoSpace`` (ENOSPC), nothing changed, nothing left in the segment. In full mode
        only GC (``when_full``: it checked there is room, and copying gives space back) may.
        """
        if not when_full:
            self._space.refuse("data")
        try:
            return self._segments.append(bufs, total)
        except OSError as exc:
            if not no_space(exc):
                raise self._health.io_error("write a data segment", exc) from None
            self._space.enter_full("data", exc)
            raise self._space.error("data") from None

    # --- frames --------------------------------------------------------------------------------
    def frame(self, bid: BlockId, data: Buffer) -> tuple[bytes, Buffer, int]:
        """A block's frame: ``(header, payload, crc)``, compressed and sealed as configured."""
        if self._plain:
            header, crc = frames.encode(bid, data, len(data))
            return header, data, crc
        salted = frames.FLAG_SALTED_ID if self.hash.salted else 0
        flags, payload, nonce, epoch = self.codec.pack(bid, data, extra_flags=salted)
        header, crc = frames.encode(bid, payload, len(data), flags, nonce, epoch)
        return header, payload, crc

    def decode_frame(self, header: frames.FrameHeader, payload: memoryview, where: str) -> bytes:
        """A verified frame's plaintext (decrypted, decompressed, length checked)."""
        if header.flags & ~frames.FLAG_SALTED_ID == 0:
            if header.raw_len != len(payload):
                raise Corrupt(f"{where}: holds {len(payload)} bytes, header says {header.raw_len}")
            return bytes(payload)
        return self.codec.unpack(header, payload, where)

    def pread_frames(self, seg: int, offset: int, length: int) -> bytes:
        """Bytes of this volume's segment ``seg``, or of its origin's if ``seg`` is EXTERNAL."""
        if seg & EXTERNAL:
            return self._origin_segments().pread(seg & ~EXTERNAL, offset, length)
        return self._segments.pread(seg, offset, length)

    def read_header(self, loc: BlockLoc) -> frames.FrameHeader:
        """The header of the frame at ``loc`` (not verified: the payload is not read)."""
        return frames.parse_header(self.pread_frames(loc.seg, loc.offset, frames.HEADER_SIZE),
                                   f"segment {loc.seg}@{loc.offset}")

    # --- reading -------------------------------------------------------------------------------
    def read(self, ids: Sequence[BlockId]) -> list[bytes]:
        """Return the plaintext of each block, verified. Adjacent frames are read at once."""
        out: list[bytes] = [b""] * len(ids)
        misses: list[tuple[int, BlockId, BlockLoc]] = []
        cache = self.cache
        for i, bid in enumerate(ids):
            data = cache.get(bid)
            if data is not None:
                out[i] = data
                self._counters["cache_hits"] += 1
                continue
            loc = self._entries[bid] if bid in self._entries else self._lookup(bid)
            if loc is None:
                self._health.enter_failsafe(f"block {bid.hex()[:16]} is referenced but not in the index")
                raise Corrupt(f"block {bid.hex()[:16]} is missing from the block index")
            misses.append((i, bid, loc))
        if misses:
            self._read_frames(misses, out)
        return out

    def _lookup(self, bid: BlockId) -> BlockLoc | None:
        """A read's lookup: not kept (reads are not operations, nothing would clear it)."""
        raw = self._meta.get(Db.BLOCKS, bid)
        return None if raw is None else BlockLoc.decode(raw)

    def _read_frames(self, misses: list[tuple[int, BlockId, BlockLoc]], out: list[bytes]) -> None:
        misses.sort(key=lambda m: (m[2].seg, m[2].offset))
        run: list[tuple[int, BlockId, BlockLoc]] = []
        for item in misses:
            if run:
                last, loc = run[-1][2], item[2]
                if loc.seg != last.seg or loc.offset != last.offset + last.frame_len:
                    self._read_run(run, out)
                    run = []
            run.append(item)
        self._read_run(run, out)

    def _read_run(self, run: list[tuple[int, BlockId, BlockLoc]], out: list[bytes]) -> None:
        first = run[0][2]
        length = run[-1][2].offset + run[-1][2].frame_len - first.offset
        try:
            buf = memoryview(self.pread_frames(first.seg, first.offset, length))
        except Corrupt as exc:
            self.corrupt(str(exc))
            raise
        for i, bid, loc in run:
            start = loc.offset - first.offset
            where = f"block {bid.hex()[:16]} in segment {loc.seg}@{loc.offset}"
            try:
                header, payload = frames.verify(buf[start:start + loc.frame_len], where)
                if header.block_id != bid or header.raw_len != loc.raw_len:
                    raise Corrupt(f"{where}: frame holds another block")
                data = self.decode_frame(header, payload, where)
            except Corrupt as exc:
                self.corrupt(str(exc))
                raise
            out[i] = data
            self.cache.put(bid, data)
            self._counters["blocks_read"] += 1

    def corrupt(self, reason: str) -> None:
        self._counters["corrupt_blocks"] += 1
        self._health.enter_failsafe(reason)

