"""storage.File.append: a list longer than one pwritev may take is written whole, in order."""

from __future__ import annotations

import os
from pathlib import Path

from galleonfs.storage import IOV_MAX, File


def test_append_writes_more_buffers_than_one_pwritev_takes(tmp_path: Path) -> None:
    path = tmp_path / "seg"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        f = File(str(path), fd)
        f.append([b"head"])
        bufs = [bytes([i % 251]) * (1 + i % 7) for i in range(2 * IOV_MAX + 3)]
        offset = f.append(bufs)
        want = b"".join(bufs)
        assert offset == 4
        assert f.size == 4 + len(want)
        assert f.pread(offset, len(want)) == want
        assert os.fstat(fd).st_size == f.size
    finally:
        os.close(fd)
