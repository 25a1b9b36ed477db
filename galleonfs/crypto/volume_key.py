"""A volume's ``KEY`` file: its family's keys, wrapped by the node's key manager.

JSON, replaced atomically (write, fsync, rename)::

    {"format": 1, "family": "<16 bytes hex>", "epoch": 2,
     "keys": {"1": "<wrapped, base64>", "2": "..."},      data keys by epoch (a rekey adds one)
     "names": "<wrapped>", "ids": "<wrapped>"}             fixed for the family's life

``names`` keys the tokens that stand for names inside metadata keys and ``ids`` keys the
block ids (dedup); rotating either would mean rewriting every key of the metadata store,
so a rekey rotates the data keys (blocks, metadata values, journal) and keeps these two.
Someone holding an old data key can therefore confirm a guessed name or block, never read
one. Clones get a copy of the file: a family shares its keys.

What it must not do: store anything unwrapped.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field

from ..errors import FormatError, KeyUnavailable
from ..storage import Storage
from .codec import VolumeCrypto
from .keys import KeyManager, new_data_key

KEY_FILE = "KEY"
FORMAT = 1


@dataclass
class VolumeKeys:
    family: bytes
    epoch: int
    keys: dict[int, bytes]          # data keys by epoch, unwrapped
    names: bytes
    ids: bytes
    wrapped: dict[str, object] = field(default_factory=dict)

    def crypto(self) -> VolumeCrypto:
        return VolumeCrypto(self.family, self.keys, self.epoch, names_key=self.names)


def path_of(volume_dir: str) -> str:
    return os.path.join(volume_dir, KEY_FILE)


def is_encrypted(volume_dir: str) -> bool:
    return os.path.exists(path_of(volume_dir))


def create(volume_dir: str, manager: KeyManager, storage: Storage | None = None) -> VolumeKeys:
    keys = VolumeKeys(family=secrets.token_bytes(16), epoch=1, keys={1: new_data_key()},
                      names=new_data_key(), ids=new_data_key())
    save(volume_dir, keys, manager, storage)
    return keys


def save(volume_dir: str, keys: VolumeKeys, manager: KeyManager, storage: Storage | None = None) -> None:
    def wrap(key: bytes) -> str:
        return base64.b64encode(manager.wrap(key)).decode()

    doc = {"format": FORMAT, "family": keys.family.hex(), "epoch": keys.epoch,
           "keys": {str(e): wrap(k) for e, k in sorted(keys.keys.items())},
           "names": wrap(keys.names), "ids": wrap(keys.ids)}
    (storage or Storage()).write_file_durably(path_of(volume_dir), json.dumps(doc, indent=1).encode())


def load(volume_dir: str, manager: KeyManager | None) -> VolumeKeys:
    """Unwrap the volume's keys; one clear sentence if that cannot be done."""
    path = path_of(volume_dir)
    if manager is None:
        raise KeyUnavailable(f"volume {volume_dir} is encrypted and no key source is configured "
                             f"(give --key-file, --key-passphrase-env or --key-command)")
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
        if doc.get("format") != FORMAT:
            raise FormatError(f"{path} has key file format {doc.get('format')}, not {FORMAT}")

        def unwrap(text: str) -> bytes:
            return manager.unwrap(base64.b64decode(text))
        keys = {int(e): unwrap(w) for e, w in doc["keys"].items()}
        return VolumeKeys(family=bytes.fromhex(doc["family"]), epoch=int(doc["epoch"]), keys=keys,
                          names=unwrap(doc["names"]), ids=unwrap(doc["ids"]))
    except KeyUnavailable as exc:
        raise type(exc)(f"cannot open volume {volume_dir}: {exc}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(f"the key file {path} is damaged: {exc}") from None


def rotate(volume_dirs: list[str], old: KeyManager, new: KeyManager, storage: Storage | None = None) -> int:
    """Wrap every volume's keys under ``new`` instead of ``old`` (data untouched); returns
    how many KEY files changed. Each file is replaced atomically; a volume already wrapped
    under ``new`` (a rotation that stopped half-way) is left alone, so running it again
    finishes the job."""
    changed = 0
    for volume_dir in volume_dirs:
        if not is_encrypted(volume_dir):
            continue
        try:
            keys = load(volume_dir, new)
            continue                                  # done in an earlier, interrupted run
        except KeyUnavailable:
            keys = load(volume_dir, old)
        save(volume_dir, keys, new, storage)
        changed += 1
    return changed


def copy_for_clone(source_dir: str, target_dir: str) -> None:
    """A clone is in its origin's family: same keys, same file."""
    with open(path_of(source_dir), "rb") as f:
        data = f.read()
    Storage().write_file_durably(path_of(target_dir), data)
