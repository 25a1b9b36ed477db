"""fsck: check every invariant of a volume, and optionally repair what can be repaired.

Checks, in the order they run:

1. the journal replays (a torn tail is reported, not an error: it is what a crash leaves);
2. every inode has a valid type; every directory's parent exists;
3. directory entries and the readdir index agree, name existing children, and give each
   inode its link count (a directory: 2 + subdirectories); every linked inode is
   reachable from the root, and unlinked ones are recorded as orphans;
4. extents belong to regular files, lie within the file size and name indexed blocks;
   each file's allocated bytes add up;
5. every block's reference count equals its references; every frame reads back with a
   good checksum and hashes to its id;
6. the volume counters (used bytes, inode count, next ids) and per-segment live bytes
   add up; every segment with live data exists.

Repair fixes counters and counts, drops entries and extents that point at nothing or at
corrupt blocks (reported as data loss, by path), and links unreachable inodes into
``/lost+found``. It never invents data.

Memory: one dict entry per block and per inode; fine to ~10 M blocks (640 GiB at 64 KiB).
"""

from __future__ import annotations

import json
import stat
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from ..crypto.keys import KeyManager
from ..errors import Corrupt
from ..meta import schema
from ..meta.schema import EXTERNAL, BlockLoc, Db, Inode
from . import frames
from .engine import Engine
from .segments import list_segments

_TYPES = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR,
          stat.S_IFBLK)


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inodes: int = 0
    blocks: int = 0
    bytes_verified: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [f"checked {self.inodes} inodes and {self.blocks} blocks "
                 f"({self.bytes_verified} bytes verified)"]
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"repaired: {r}" for r in self.repaired]
        if self.clean:
            lines.append("volume is clean")
        elif self.repaired and len(self.repaired) >= len(self.problems):
            lines.append(f"{len(self.problems)} problems found and repaired")
        else:
            lines.append(f"{len(self.problems)} problems found; run with --repair to fix them")
        return "\n".join(lines)


class _Checker:
    def __init__(self, engine: Engine, repair: bool) -> None:
        self.e = engine
        self.meta = engine.meta
        self.repair = repair
        self.r = FsckReport()
        self.inodes: dict[int, Inode] = {}
        self.parents: dict[int, tuple[int, bytes]] = {}   # child -> (parent, name), first seen
        self.bad_blocks: set[bytes] = set()

    def problem(self, text: str, fix: str | None = None) -> bool:
        """Record a problem; return True if the caller should repair it."""
        self.r.problems.append(text)
        if self.repair and fix is not None:
            self.r.repaired.append(fix)
            return True
        return False

    def path(self, ino: int) -> str:
        parts: list[str] = []
        seen = 0
        while ino != 1 and ino in self.parents and seen < 4096:
            ino, name = self.parents[ino]
            parts.append(name.decode(errors="replace"))
            seen += 1
        if ino != 1:
            return f"<inode {ino}>/" + "/".join(reversed(parts))
        return "/" + "/".join(reversed(parts))

    # --- passes ------------------------------------------------------------------------------------
    def run(self) -> FsckReport:
        replay = self.e.replay
        if replay.records:
            self.r.notes.append(f"replayed {replay.records} journal records")
        if replay.torn_tail:
            self.r.notes.append(f"journal replay stopped at a torn tail: {replay.torn_tail}")
        reason = self.e.needs_check()
        if reason:
            self.r.notes.append(f"volume was marked for check: {reason}")
        if self.repair:
            with self.e.operation():          # every repair, one journal record
                self._passes()
        else:
            self._passes()
        return self.r

    def _passes(self) -> None:
        self.load_inodes()
        links, subdirs = self.check_entries()
        self.check_link_records()
        self.check_links(links, subdirs)
        self.check_reachable()
        refs, alloc = self.check_extents()
        self.check_history(refs)
        self.check_blocks(refs)
        self.check_alloc(alloc)
        self.check_counters()

    def load_inodes(self) -> None:
        for key, value in self.meta.scan(Db.INODES):
            ino = schema.ino_of_key(key)
            inode = Inode.decode(ino, value)
            if stat.S_IFMT(inode.mode) not in _TYPES:
                self.problem(f"inode {ino} has an invalid file type {inode.mode:o}")
            self.inodes[ino] = inode
        self.r.inodes = len(self.inodes)
        if 1 not in self.inodes or not stat.S_ISDIR(self.inodes[1].mode):
            raise Corrupt("the root directory is missing; the volume cannot be repaired")

    def check_entries(self) -> tuple[dict[int, int], dict[int, int]]:
        links: dict[int, int] = defaultdict(int)
        subdirs: dict[int, int] = defaultdict(int)
        index: dict[tuple[int, int], tuple[int, bytes]] = {}
        for key, value in self.meta.scan(Db.DIRINDEX):
            parent = schema.ino_of_key(key)
            index[(parent, schema.cookie_of_dirindex_key(key))] = schema.decode_dirindex(value)
        matched: set[tuple[int, int]] = set()
        dangling: list[tuple[int, bytes, int]] = []
        for key, value in self.meta.scan(Db.DIRENTS):
            parent, name = schema.ino_of_key(key), bytes(key[8:])
            child, cookie = schema.decode_dirent(value)
            pinode = self.inodes.get(parent)
            if pinode is None or not stat.S_ISDIR(pinode.mode) or child not in self.inodes:
                what = "a missing directory" if pinode is None else (
                    "a non-directory" if not stat.S_ISDIR(pinode.mode) else f"missing inode {child}")
                if self.problem(f"entry {name!r} in inode {parent} belongs to {what}",
                                f"removed entry {name!r} of inode {parent}"):
                    dangling.append((parent, name, cookie))
                continue
            if index.get((parent, cookie)) != (child, name):
                if self.problem(f"entry {name!r} in {self.path(parent)} is missing from the readdir index",
                                f"re-indexed entry {name!r}"):
                    self.meta.put(Db.DIRINDEX, schema.dirindex_key(parent, cookie),
                                  schema.encode_dirindex(child, name))
            if cookie >= pinode.aux:
                if self.problem(f"directory {self.path(parent)} hands out cookies it already used",
                                f"advanced the cookie counter of {self.path(parent)}"):
                    pinode.aux = cookie + 1
                    self.meta.put(Db.INODES, schema.ino_key(parent), pinode.encode())
            matched.add((parent, cookie))
            links[child] += 1
            self.parents.setdefault(child, (parent, name))
            if stat.S_ISDIR(self.inodes[child].mode):
                subdirs[parent] += 1
                if self.inodes[child].parent != parent:
                    cinode = self.inodes[child]
                    if self.problem(f"directory {self.path(child)} records parent {cinode.parent}, not {parent}",
                                    f"fixed the parent of {self.path(child)}"):
                        cinode.parent = parent
                        self.meta.put(Db.INODES, schema.ino_key(child), cinode.encode())
        for parent, name, cookie in dangling:
            self.meta.delete(Db.DIRENTS, schema.dirent_key(parent, name))
            self.meta.delete(Db.DIRINDEX, schema.dirindex_key(parent, cookie))
            matched.add((parent, cookie))
        for (parent, cookie), (_, name) in index.items():
            if (parent, cookie) not in matched:
                if self.problem(f"readdir index of inode {parent} lists {name!r}, which has no entry",
                                f"dropped index entry {name!r} of inode {parent}"):
                    self.meta.delete(Db.DIRINDEX, schema.dirindex_key(parent, cookie))
        return links, subdirs

    def check_link_records(self) -> None:
        """Every directory entry has its ``links`` record (an inode's names) and no more."""
        expected = set()
        for key, value in self.meta.scan(Db.DIRENTS):
            child, _ = schema.decode_dirent(value)
            expected.add(schema.link_key(child, schema.ino_of_key(key), bytes(key[8:])))
        present = {bytes(k) for k, _ in self.meta.scan(Db.LINKS)}
        for key in sorted(expected - present):
            ino, parent, name = schema.decode_link_key(key)
            if self.problem(f"entry {name!r} of inode {parent} has no link record for inode {ino}",
                            f"recorded the link of {name!r}"):
                self.meta.put(Db.LINKS, key, b"")
        for key in sorted(present - expected):
            ino, parent, name = schema.decode_link_key(key)
            if self.problem(f"link record of inode {ino} names {name!r} in inode {parent}, which has no such entry",
                            f"dropped the stale link record {name!r}"):
                self.meta.delete(Db.LINKS, key)

    def check_history(self, refs: dict[bytes, int]) -> None:
        """Versions kept for snapshots: each needed by one, indexed, and its blocks referenced."""
        gens = sorted(json.loads(v)["gen"] for _, v in self.meta.scan(Db.SNAPSHOTS)
                      if json.loads(v).get("state", "ready") == "ready")
        deleting = any(json.loads(v).get("state") == "deleting" for _, v in self.meta.scan(Db.SNAPSHOTS))
        died_index = {bytes(k) for k, _ in self.meta.scan(Db.DIED)}
        for hkey, value in self.meta.scan(Db.HISTORY):
            db, key, died = schema.decode_history_key(bytes(hkey))
            born = schema.born_of(value)
            if schema.gen_index_key(died, db, key) not in died_index:
                self.problem(f"history version of {Db(db).name.lower()} record {key.hex()[:24]} is not in the died index")
            died_index.discard(schema.gen_index_key(died, db, key))
            if not any(born <= g < died for g in gens) and not deleting:
                self.problem(f"history keeps a {Db(db).name.lower()} version (born {born}, died {died}) "
                             f"that no snapshot needs")
            if db == Db.EXTENTS:
                bid = bytes(value[8:])
                if self.meta.get(Db.BLOCKS, bid) is None:
                    self.problem(f"a snapshot's extent refers to block {bid.hex()[:16]}, which is not in the index")
                else:
                    refs[bid] += 1
        for ikey in sorted(died_index):
            self.problem(f"died index entry {ikey.hex()[:32]} has no history version")

    def check_links(self, links: dict[int, int], subdirs: dict[int, int]) -> None:
        orphans = {schema.ino_of_key(k): v for k, v in self.meta.scan(Db.ORPHANS)}
        for ino, inode in self.inodes.items():
            is_dir = stat.S_ISDIR(inode.mode)
            count = links.get(ino, 0)
            if is_dir and ino != 1 and count > 1:
                self.problem(f"directory {self.path(ino)} has {count} names")
            if count == 0 and ino != 1:
                if inode.nlink != 0:
                    continue                      # unreachable: check_reachable handles it
                if ino not in orphans:
                    if self.problem(f"inode {ino} has no names and is not recorded as an orphan",
                                    f"recorded inode {ino} as an orphan (deleted at next mount)"):
                        self.meta.put(Db.ORPHANS, schema.ino_key(ino), b"")
                continue
            expected = 2 + subdirs.get(ino, 0) if is_dir else count
            if inode.nlink != expected:
                if self.problem(f"{self.path(ino)} has link count {inode.nlink}, expected {expected}",
                                f"set the link count of {self.path(ino)} to {expected}"):
                    inode.nlink = expected
                    self.meta.put(Db.INODES, schema.ino_key(ino), inode.encode())
        for ino, mark in orphans.items():
            orphan = self.inodes.get(ino)
            if orphan is None:
                if self.problem(f"orphan record for missing inode {ino}", f"dropped orphan record {ino}"):
                    self.meta.delete(Db.ORPHANS, schema.ino_key(ino))
            elif orphan.nlink and mark != b"t":
                if self.problem(f"{self.path(ino)} is linked but recorded as an orphan",
                                f"dropped orphan record of {self.path(ino)}"):
                    self.meta.delete(Db.ORPHANS, schema.ino_key(ino))

    def check_reachable(self) -> None:
        seen = {1}
        queue = deque([1])
        while queue:
            parent = queue.popleft()
            for _key, value in self.meta.scan(Db.DIRENTS, prefix=schema.ino_key(parent)):
                child, _ = schema.decode_dirent(value)
                if child in self.inodes and child not in seen:
                    seen.add(child)
                    if stat.S_ISDIR(self.inodes[child].mode):
                        queue.append(child)
        lost = [ino for ino, inode in self.inodes.items() if inode.nlink and ino not in seen]
        for ino in lost:
            if self.problem(f"inode {ino} is linked but not reachable from the root",
                            f"moved inode {ino} to /lost+found/#{ino}"):
                self._to_lost_found(ino)

    def _to_lost_found(self, ino: int) -> None:
        root = self.inodes[1]
        found = self.meta.get(Db.DIRENTS, schema.dirent_key(1, b"lost+found"))
        if found is None:
            now = time.time_ns()
            lf = Inode(ino=self.e.sb.allocate_inode(), mode=stat.S_IFDIR | 0o700, uid=0, gid=0, nlink=2,
                       size=0, alloc=0, atime_ns=now, mtime_ns=now, ctime_ns=now, btime_ns=now,
                       rdev=0, aux=3, parent=1)
            self.meta.put(Db.INODES, schema.ino_key(lf.ino), lf.encode())
            self._add(root, b"lost+found", lf.ino)
            root.nlink += 1
            self.meta.put(Db.INODES, schema.ino_key(1), root.encode())
            self.inodes[lf.ino] = lf
        else:
            lf = self.inodes[schema.decode_dirent(found)[0]]
        inode = self.inodes[ino]
        self._add(lf, f"#{ino}".encode(), ino)
        if stat.S_ISDIR(inode.mode):
            inode.parent = lf.ino
            lf.nlink += 1
            inode.nlink = max(inode.nlink, 2)
        else:
            inode.nlink = 1
        self.meta.put(Db.INODES, schema.ino_key(ino), inode.encode())
        self.meta.put(Db.INODES, schema.ino_key(lf.ino), lf.encode())

    def _add(self, parent: Inode, name: bytes, child: int) -> None:
        cookie = parent.aux
        parent.aux += 1
        self.meta.put(Db.DIRENTS, schema.dirent_key(parent.ino, name), schema.encode_dirent(child, cookie))
        self.meta.put(Db.DIRINDEX, schema.dirindex_key(parent.ino, cookie), schema.encode_dirindex(child, name))
        self.meta.put(Db.LINKS, schema.link_key(child, parent.ino, name), b"")

    def check_extents(self) -> tuple[dict[bytes, int], dict[int, list[bytes]]]:
        refs: dict[bytes, int] = defaultdict(int)
        files: dict[int, list[bytes]] = defaultdict(list)
        bs = self.e.block_size
        doomed: list[bytes] = []
        orphans = {schema.ino_of_key(k): v for k, v in self.meta.scan(Db.ORPHANS)}
        known = set()
        for key, bid in self.meta.scan(Db.EXTENTS):
            ino, blk = schema.ino_of_key(key), schema.blkno_of_extent_key(key)
            inode = self.inodes.get(ino)
            if inode is None or not stat.S_ISREG(inode.mode):
                if self.problem(f"extent {blk} belongs to {'missing' if inode is None else 'non-file'} inode {ino}",
                                f"dropped extent {blk} of inode {ino}"):
                    doomed.append(bytes(key))
                continue
            if blk * bs >= inode.size and orphans.get(ino) != b"t":
                if self.problem(f"{self.path(ino)} has a block at {blk * bs}, beyond its size {inode.size}",
                                f"dropped the block beyond the end of {self.path(ino)}"):
                    doomed.append(bytes(key))
                    continue
            bid = bytes(bid)
            if bid not in known:
                known.add(bid)
                if self.meta.get(Db.BLOCKS, bid) is None:
                    self.bad_blocks.add(bid)
            if bid in self.bad_blocks:
                if self.problem(f"{self.path(ino)} refers to block {bid.hex()[:16]}, which is not in the index",
                                f"turned the lost block at {blk * bs} of {self.path(ino)} into a hole (data lost)"):
                    doomed.append(bytes(key))
                continue
            refs[bid] += 1
            files[ino].append(bid)
        for key in doomed:
            self.meta.delete(Db.EXTENTS, key)
        return refs, files

    def check_blocks(self, refs: dict[bytes, int]) -> None:
        live: dict[int, int] = defaultdict(int)
        used = 0
        corrupt: list[bytes] = []
        for key, value in list(self.meta.scan(Db.BLOCKS)):
            bid = bytes(key)
            loc = BlockLoc.decode(value)
            self.r.blocks += 1
            error = self._verify(bid, loc)
            if error is not None:
                if self.problem(error, f"dropped corrupt block {bid.hex()[:16]}"):
                    corrupt.append(bid)
                    continue
            counted = refs.get(bid, 0)
            if counted != loc.refs:
                fix = f"set the reference count of block {bid.hex()[:16]} to {counted}"
                if self.problem(f"block {bid.hex()[:16]} has {loc.refs} references recorded, {counted} found", fix):
                    if counted == 0:
                        self.meta.delete(Db.BLOCKS, bid)
                        continue
                    loc.refs = counted
                    self.meta.put(Db.BLOCKS, bid, loc.encode())
            if not loc.seg & EXTERNAL:
                live[loc.seg] += loc.frame_len
            used += loc.raw_len
        if corrupt:
            self._drop_blocks(set(corrupt))
        self.live, self.used = live, used

    def _verify(self, bid: bytes, loc: BlockLoc) -> str | None:
        where = f"block {bid.hex()[:16]} (segment {loc.seg}@{loc.offset})"
        try:
            frame = self.e.blocks.pread_frames(loc.seg, loc.offset, loc.frame_len)
            header, payload = frames.verify(frame, where)
        except Corrupt as exc:
            return str(exc)
        if header.block_id != bid:
            return f"{where}: the frame there holds block {header.block_id.hex()[:16]}"
        if header.raw_len != loc.raw_len:
            return f"{where}: length {header.raw_len} differs from the index ({loc.raw_len})"
        try:
            data = self.e.blocks.decode_frame(header, payload, where)    # authenticates an encrypted one
        except Corrupt as exc:
            return str(exc)
        if not header.flags & frames.FLAG_SALTED_ID and blake3_id(self.e, data) != bid:
            return f"{where}: content does not hash to the block id"
        self.r.bytes_verified += loc.raw_len
        return None

    def _drop_blocks(self, bad: set[bytes]) -> None:
        """Repair: make every extent on a corrupt block a hole, report the files."""
        doomed = []
        for key, bid in self.meta.scan(Db.EXTENTS):
            if bytes(bid) in bad:
                doomed.append(bytes(key))
        for key in doomed:
            ino, blk = schema.ino_of_key(key), schema.blkno_of_extent_key(key)
            self.r.repaired.append(
                f"data lost: {self.path(ino)} bytes {blk * self.e.block_size}.. are now a hole")
            self.meta.delete(Db.EXTENTS, key)
        for bid in bad:
            self.meta.delete(Db.BLOCKS, bid)

    def check_alloc(self, files: dict[int, list[bytes]]) -> None:
        for ino, inode in self.inodes.items():
            if not stat.S_ISREG(inode.mode):
                continue
            total = 0
            for bid in files.get(ino, []):
                raw = self.meta.get(Db.BLOCKS, bid)
                if raw is not None:
                    total += BlockLoc.decode(raw).raw_len
            if total != inode.alloc:
                if self.problem(f"{self.path(ino)} counts {inode.alloc} allocated bytes, its blocks hold {total}",
                                f"recounted the allocated bytes of {self.path(ino)}"):
                    inode.alloc = total
                    self.meta.put(Db.INODES, schema.ino_key(ino), inode.encode())

    def check_counters(self) -> None:
        e, sb = self.e, self.e.sb
        if self.repair:
            # Repairs above changed blocks; recount from the index as it is now.
            self.live, self.used = defaultdict(int), 0
            for _, value in self.meta.scan(Db.BLOCKS):
                loc = BlockLoc.decode(value)
                if not loc.seg & EXTERNAL:
                    self.live[loc.seg] += loc.frame_len
                self.used += loc.raw_len
        if sb.used_bytes != self.used:
            if self.problem(f"volume counts {sb.used_bytes} used bytes, its blocks hold {self.used}",
                            "recounted the used bytes"):
                sb.used_bytes = self.used
        count = self.meta.count(Db.INODES)
        if sb.inode_count != count:
            if self.problem(f"volume counts {sb.inode_count} inodes, there are {count}",
                            "recounted the inodes"):
                sb.inode_count = count
        top = max(self.inodes)
        if sb.next_inode <= top:
            if self.problem(f"next inode number {sb.next_inode} is already in use",
                            "advanced the next inode number"):
                sb.next_inode = top + 1
        stats = e.segment_stats()
        on_disk = set(list_segments(e.storage, e.data_dir))
        for seg in set(stats) | set(self.live):
            _written, recorded = stats.get(seg, (0, 0))
            actual = self.live.get(seg, 0)
            if actual and seg not in on_disk:
                self.problem(f"segment {seg} holds live blocks but its file is missing")
            if recorded != actual:
                if self.problem(f"segment {seg} counts {recorded} live bytes, its blocks hold {actual}",
                                f"recounted the live bytes of segment {seg}"):
                    e.segstats.recount(seg, actual)


def blake3_id(engine: Engine, data: bytes) -> bytes:
    """The content id of ``data`` (unsalted, whatever the volume's dedup setting)."""
    return frames.BlockHasher(engine.family_key)(data)


def fsck(volume_dir: str, *, repair: bool = False, keys: KeyManager | None = None) -> FsckReport:
    """Check (and with ``repair``, fix) the volume at ``volume_dir``; it must not be in use."""
    engine = Engine.open(volume_dir, read_only=not repair, ignore_needs_check=True, keys=keys)
    try:
        report = _Checker(engine, repair).run()
        if repair:
            engine.checkpoint()
            engine.clear_needs_check()
    finally:
        engine.close(checkpoint=False)
    return report


def check_engine(engine: Engine) -> FsckReport:
    """Check an engine that is already open (read only: nothing is changed)."""
    checker = _Checker(engine, repair=False)
    return checker.run()
