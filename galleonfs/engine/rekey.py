"""Rekey: replace a volume's data key, rewriting everything sealed under the old one.

Steps, each safe to interrupt and run again (``run`` resumes where the KEY file says):

1. ``begin``: a new random data key becomes the next epoch in the KEY file (wrapped by the
   node's key manager, written atomically); from then on every new frame, metadata value
   and journal record is sealed with it, while the old epochs still open what exists;
2. rewrite: every metadata value (live and history) and every block frame sealed under an
   older epoch is sealed again under the new one, in chunks of ``CHUNK`` journaled
   operations; a frame moves to the current segment (the old copy becomes dead space);
3. ``finish``: a checkpoint makes the rewrite durable and retires the journal that still
   holds old-epoch records; then the old data keys leave the KEY file. A GC pass drops the
   dead frames.

Nonces stay unique per key: each key seals with fresh random 96-bit nonces, and the new key
starts with none used. The names and block-id keys are kept (volume_key explains why).

What it must not do: rekey a volume that shares blocks with another (a clone, or the origin
of one): their frames are read with the family's keys by both. Flatten first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..crypto import volume_key
from ..crypto.keys import new_data_key
from ..errors import FailedPrecondition, GalleonError
from ..ids import BlockId
from ..meta.schema import EXTERNAL, BlockLoc, Db
from . import clones, snapshots
from .engine import Engine

CHUNK = 256

Progress = Callable[[int, int], None]


def _check(engine: Engine) -> None:
    engine.check_writable()
    if engine.crypto is None or engine.key_manager is None:
        raise FailedPrecondition(f"volume {engine.dir} is not encrypted; there is no data key to rotate")
    if clones.origin_of(engine) is not None:
        raise FailedPrecondition(f"volume {engine.dir} is a clone sharing its origin's blocks; "
                                 f"flatten it before a rekey")
    held = [s.name for s in snapshots.snapshots(engine) if s.holds]
    if held:
        raise FailedPrecondition(f"volume {engine.dir} has clones of snapshot(s) {', '.join(held)} "
                                 f"sharing its blocks; flatten or delete them before a rekey")


def begin(engine: Engine) -> int:
    """Make a new data key the sealing one (or resume a rekey begun before); its epoch."""
    _check(engine)
    assert engine.crypto is not None and engine.key_manager is not None
    keys = volume_key.load(engine.dir, engine.key_manager)
    if len(keys.keys) > 1:
        return keys.epoch                       # an interrupted rekey: finish that one
    epoch = keys.epoch + 1
    keys.keys[epoch] = new_data_key()
    keys.epoch = epoch
    volume_key.save(engine.dir, keys, engine.key_manager, engine.storage)
    engine.crypto.add_epoch(epoch, keys.keys[epoch])
    return epoch


def _stale_blocks(engine: Engine, epoch: int) -> list[BlockId]:
    stale = []
    for bid, raw in engine.meta.scan(Db.BLOCKS):
        loc = BlockLoc.decode(raw)
        if loc.seg & EXTERNAL:
            continue
        header = engine.blocks.read_header(loc)
        if header.key_epoch != epoch:
            stale.append(BlockId(bytes(bid)))
    return stale


def rewrite(engine: Engine, epoch: int) -> Iterator[tuple[int, int]]:
    """Seal again whatever is sealed under an older epoch; yields ``(done, total)``."""
    records = list(engine.meta.stale_sealed(epoch))
    blocks = _stale_blocks(engine, epoch)
    total, done = len(records) + len(blocks), 0
    yield done, total
    for i in range(0, len(records), CHUNK):
        with engine.operation():
            for db, skey in records[i:i + CHUNK]:
                engine.meta.reseal(db, skey)
        done += len(records[i:i + CHUNK])
        yield done, total
    engine.segments.roll()
    for i in range(0, len(blocks), CHUNK):
        chunk = blocks[i:i + CHUNK]
        with engine.operation() as op:
            try:
                _reseal_blocks(engine, chunk)
            except GalleonError:
                # The disk filled up half-way: each block moved so far is a whole change,
                # and a rekey run again resumes after it.
                op.record()
                raise
        done += len(chunk)
        yield done, total


def _reseal_blocks(engine: Engine, ids: list[BlockId]) -> None:
    """One frame write per block, so a full disk stops the chunk after a whole block."""
    for bid, data in zip(ids, engine.blocks.read(ids), strict=True):
        engine.blocks.rewrite([bid], [data])


def finish(engine: Engine, epoch: int) -> None:
    """Everything is sealed under ``epoch``: make it durable, then forget older keys."""
    assert engine.crypto is not None and engine.key_manager is not None
    engine.checkpoint()
    keys = volume_key.load(engine.dir, engine.key_manager)
    keys.keys = {epoch: keys.keys[epoch]}
    volume_key.save(engine.dir, keys, engine.key_manager, engine.storage)
    engine.crypto.drop_epochs_before(epoch)
    engine.gc()


def run(engine: Engine, progress: Progress | None = None) -> int:
    """The whole rekey (resuming an interrupted one); returns the new epoch."""
    epoch = begin(engine)
    for done, total in rewrite(engine, epoch):
        if progress is not None:
            progress(done, total)
    finish(engine, epoch)
    return epoch
