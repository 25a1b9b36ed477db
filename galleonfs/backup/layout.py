"""The backup repository's layout: which objects a target holds, and what every object shares.

A repository lives under one target (a directory or an S3 prefix) as named objects::

    config                       key slots and the repository id (readable without the key)
    packs/<aa>/<pack id hex>     blobs, packed; <aa> is the first byte of the id (fan-out)
    index/<random hex>           where each blob is: pack, offset, lengths (sealed)
    backups/<backup id>          one manifest per backup (sealed)
    locks/<random hex>           who works on the repository now (sealed)

All integers are little-endian. "Sealed" means AES-256-GCM under a key derived from the
repository's master key; the associated data (AAD) always includes the object's name, so an
object cannot be renamed or swapped unnoticed.

Each object is drawn byte by byte in the module that reads and writes it:

* ``keys``: the master key, the working keys derived from it, and ``config``;
* ``sealed``: the sealed object (index and lock objects);
* ``packs``: the pack and the index entry;
* ``index``: the index object's payload;
* ``manifests``: the table chunk and the manifest.

What this module (and every one of those) must not do: any I/O, or hold a plaintext key
anywhere but in memory.
"""

from __future__ import annotations

import zstandard

from .errors import ObjectCorrupt

VERSION = 1
ID_BYTES = 32               # a blob id: keyed BLAKE3-256 (the volume's, or the repository's)
TAG_BYTES = 16              # an AES-GCM tag

CONFIG_NAME = "config"
PACKS = "packs/"
INDEX = "index/"
BACKUPS = "backups/"
LOCKS = "locks/"


def decompress(data: bytes, name: str, target: str, max_bytes: int) -> bytes:
    """zstd ``data`` of object ``name``, refusing more than ``max_bytes`` of output."""
    try:
        out: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=max_bytes)
    except zstandard.ZstdError as exc:
        raise ObjectCorrupt(name=name, target=target, reason=f"it does not decompress ({exc})") from None
    return out
