"""Typed ids used across layer boundaries (never a bare ``int``)."""

from typing import NewType

InodeId = NewType("InodeId", int)        # FUSE node id; never reused within a volume
HandleId = NewType("HandleId", int)      # open file or directory handle
Lsn = NewType("Lsn", int)                # journal log sequence number, starts at 1
Generation = NewType("Generation", int)  # volume version counter, bumped by snapshots
BlockId = NewType("BlockId", bytes)      # keyed BLAKE3 of a block's plaintext, 32 bytes

ROOT_INODE = InodeId(1)
