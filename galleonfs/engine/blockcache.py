"""``BlockCache``: verified plaintext of recently used blocks, least recently used out first.

A block id names its content, so an entry never goes stale while the block exists; it is
dropped when the block's last reference goes (its id could be stored again with another
frame, never with other content). Bounded by ``limits.block_cache_bytes``.

What it must not do: hold anything that was not verified (a stored block's frame was
checked on read, a new block's content is what was written).
"""

from __future__ import annotations

from collections import OrderedDict

from .. import limits
from ..ids import BlockId


class BlockCache:
    def __init__(self, capacity_bytes: int = limits.block_cache_bytes) -> None:
        self._entries: OrderedDict[BlockId, bytes] = OrderedDict()
        self._bytes = 0
        self._capacity = capacity_bytes

    def get(self, bid: BlockId) -> bytes | None:
        data = self._entries.get(bid)
        if data is not None:
            self._entries.move_to_end(bid)
        return data

    def put(self, bid: BlockId, data: bytes) -> None:
        if bid in self._entries:
            self._entries.move_to_end(bid)
            return
        self._entries[bid] = data
        self._bytes += len(data)
        while self._bytes > self._capacity:
            _, old = self._entries.popitem(last=False)
            self._bytes -= len(old)

    def drop(self, bid: BlockId) -> None:
        data = self._entries.pop(bid, None)
        if data is not None:
            self._bytes -= len(data)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
