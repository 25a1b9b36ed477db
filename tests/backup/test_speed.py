"""What makes repeated backups cheap (issue 13 throughput work): a daemon opens the
repository for every backup, restore and listing, and the passphrase's scrypt is derived
once per key slot, not per open, without letting a wrong passphrase through."""

from __future__ import annotations

import pytest

from galleonfs.backup import DirectoryTarget, Repository, RepositoryKey
from galleonfs.backup import keys as backup_keys
from galleonfs.backup.errors import RepositoryKeyRejected


def test_a_passphrase_is_derived_once_per_slot_and_a_wrong_one_is_still_refused(
        dir_target: DirectoryTarget) -> None:
    Repository.init(dir_target, RepositoryKey.from_passphrase("right one")).close()
    backup_keys._scrypt.cache_clear()
    for _ in range(3):
        with Repository.open(dir_target, RepositoryKey.from_passphrase("right one")) as repo:
            repo_id = repo.repo_id
    info = backup_keys._scrypt.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    for wrong in ("wrong", "right one ", "Right one"):
        with pytest.raises(RepositoryKeyRejected, match="the passphrase does not open the backup repository"):
            Repository.open(dir_target, RepositoryKey.from_passphrase(wrong))
    with Repository.open(dir_target, RepositoryKey.from_passphrase("right one")) as repo:
        assert repo.repo_id == repo_id
