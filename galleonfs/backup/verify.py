"""verify: check every object of a repository and name each one that is missing, cut or altered.

Quick (the default) reads the small objects and lists the large ones:

* every index object decrypts and parses; every pack it names is listed with the size it
  records (a shorter pack is ``ObjectTruncated``, an absent one ``ObjectMissing``);
* every manifest decrypts and parses, and every table chunk it lists is in a listed pack.

Deep (``deep=True``) also downloads every pack: its header and its own index must agree with
the index objects, every blob must authenticate (AES-GCM tag, or the BLAKE3 of an already
sealed blob) and decode to its length, every metadata blob must hash to its id; then every
record of every backup is read and each blob it references must be in a pack that passed.

Problems are collected, not raised: one report names every bad object, each with the error
a restore would raise for it. Verify takes no lock and writes nothing (a read-only credential
suffices); run concurrently with GC it may report the packs GC just removed.

What it must not do: repair or delete (GC and a rebuild are separate, deliberate steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import GalleonError
from . import limits
from .errors import BlobMissing, ObjectCorrupt, ObjectMissing, ObjectTruncated
from .index import Index, PackInfo
from .layout import BACKUPS, INDEX, PACKS
from .manifests import ChunkRef
from .packs import KIND_META, check_pack_header, open_blob, open_pack_tail, pack_id_of, pack_name
from .progress import Meter, ProgressCallback

if TYPE_CHECKING:
    from .repository import Repository


@dataclass(frozen=True)
class Problem:
    name: str                 # the object at fault (or "blob <hex>")
    error: GalleonError

    @property
    def message(self) -> str:
        return str(self.error)


@dataclass
class VerifyReport:
    deep: bool
    problems: list[Problem] = field(default_factory=list)
    backups: int = 0
    index_objects: int = 0
    packs: int = 0
    blobs: int = 0
    records: int = 0
    bytes_read: int = 0
    unindexed_packs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, name: str, error: GalleonError) -> None:
        self.problems.append(Problem(name, error))


def verify(repo: Repository, *, deep: bool = False, progress: ProgressCallback | None = None) -> VerifyReport:
    report = VerifyReport(deep)
    meter = Meter("verify", progress, limits.progress_interval_s)
    index, packs = _check_index(repo, report)
    manifests = _check_manifests(repo, report, index)
    if deep:
        bad = _check_packs(repo, report, packs, meter)
        _check_records(repo, report, manifests, bad)
    meter.finish()
    return report


def _listing(repo: Repository, report: VerifyReport, prefix: str) -> list[tuple[str, int]]:
    try:
        return list(repo.target.list(prefix))
    except GalleonError as exc:
        report.add(prefix, exc)
        return []


def _check_index(repo: Repository, report: VerifyReport) -> tuple[Index, dict[bytes, PackInfo]]:
    names = [n for n, _ in _listing(repo, report, INDEX)]
    objects = repo.parallel(repo.read_index_object, names, on_error=report.add)
    report.index_objects = len(objects)
    listed = {pack_id_of(n): s for n, s in _listing(repo, report, PACKS)}
    index, packs, flagged = Index(), {}, set()
    for name in sorted(objects):
        for info in objects[name]:
            pname = pack_name(info.pack_id)
            size = listed.get(info.pack_id)
            if info.pack_id in packs or info.pack_id in flagged:
                continue
            if size is None:
                report.add(pname, ObjectMissing(name=pname, target=repo.url, context=f" (index {name} names it)"))
            elif size < info.size:
                report.add(pname, ObjectTruncated(name=pname, target=repo.url,
                                                  reason=f"{size} bytes where index {name} says {info.size}"))
            elif size != info.size:
                report.add(pname, ObjectCorrupt(name=pname, target=repo.url,
                                                reason=f"{size} bytes where index {name} says {info.size}"))
            else:
                packs[info.pack_id] = info
                index.add(info)
                continue
            flagged.add(info.pack_id)
    report.packs = len(packs)
    report.unindexed_packs = len({p for p in listed if p is not None} - set(packs) - flagged)
    repo.replace_index(index)
    return index, packs


def _check_manifests(repo: Repository, report: VerifyReport, index: Index) -> dict[str, list[ChunkRef]]:
    names = [n for n, _ in _listing(repo, report, BACKUPS)]
    got = repo.parallel(lambda n: repo.read_manifest(n[len(BACKUPS):]), names, on_error=report.add)
    report.backups = len(got)
    out = {}
    for name, (info, chunks) in got.items():
        out[name] = chunks
        for c in chunks:
            if c.blob_id not in index.blobs:
                report.add(name, BlobMissing(blob=c.blob_id.hex(), target=repo.url,
                                             context=f" (a table chunk of backup {info.backup_id})"))
    return out


def _check_pack(repo: Repository, info: PackInfo) -> tuple[list[tuple[str, GalleonError]], set[bytes], int]:
    name = pack_name(info.pack_id)
    data = repo.target.get(name)
    if len(data) != info.size:
        raise ObjectTruncated(name=name, target=repo.url, reason=f"{len(data)} of {info.size} bytes")
    check_pack_header(data, info.pack_id, name, repo.url)
    own = open_pack_tail(repo.keys, info.pack_id, data, info.size, name, repo.url)
    if sorted(own, key=lambda e: e.offset) != sorted(info.entries, key=lambda e: e.offset):
        raise ObjectCorrupt(name=name, target=repo.url, reason="its own index differs from the index objects")
    cipher = repo.keys.pack(info.pack_id)
    problems: list[tuple[str, GalleonError]] = []
    bad: set[bytes] = set()
    view = memoryview(data)
    for e in own:
        try:
            plain = open_blob(cipher, info.pack_id, e, view[e.offset:e.offset + e.stored_len], name, repo.url)
            if e.kind == KIND_META and repo.keys.blob_id(plain) != e.blob_id:
                raise ObjectCorrupt(name=name, target=repo.url,
                                    reason=f"metadata blob {e.blob_id.hex()} does not match its id")
        except GalleonError as exc:
            problems.append((name, exc))
            bad.add(e.blob_id)
    return problems, bad, len(own)


def _check_packs(repo: Repository, report: VerifyReport, packs: dict[bytes, PackInfo], meter: Meter) -> set[bytes]:
    bad: set[bytes] = set()

    def one(pack_hex: str) -> tuple[list[tuple[str, GalleonError]], set[bytes], int]:
        return _check_pack(repo, packs[bytes.fromhex(pack_hex)])

    def failed(pack_hex: str, exc: GalleonError) -> None:
        report.add(pack_name(bytes.fromhex(pack_hex)), exc)
        bad.update(e.blob_id for e in packs[bytes.fromhex(pack_hex)].entries)

    results = repo.parallel(one, [p.hex() for p in packs], on_error=failed)
    for pack_hex, (problems, bad_blobs, count) in results.items():
        for name, exc in problems:
            report.add(name, exc)
        bad |= bad_blobs
        report.blobs += count
        size = packs[bytes.fromhex(pack_hex)].size
        report.bytes_read += size
        meter.add(done=size, transferred=size, items=count)
    return bad


def _check_records(repo: Repository, report: VerifyReport, manifests: dict[str, list[ChunkRef]],
                   bad: set[bytes]) -> None:
    chunks: dict[bytes, tuple[ChunkRef, str]] = {}
    for name, refs in manifests.items():
        for c in refs:
            if c.blob_id not in bad:
                chunks.setdefault(c.blob_id, (c, name))
    loaded = repo.parallel(lambda h: repo.load_chunk(*chunks[bytes.fromhex(h)]),
                           [c.hex() for c in chunks], on_error=report.add)
    blobs = repo.index.blobs
    for chunk_hex, records in loaded.items():
        name = chunks[bytes.fromhex(chunk_hex)][1]
        report.records += len(records)
        for r in records:
            for ref in r.refs:
                if ref not in blobs or ref in bad:
                    where = "damaged" if ref in bad else "in no pack"
                    report.add(name, BlobMissing(blob=ref.hex(), target=repo.url,
                                                 context=f" intact ({where}; record {r.key.hex()} of {name} references it)"))
