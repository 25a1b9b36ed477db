"""The worker's control server decides what is an answer and what ends the worker.

In process, on a real unix socket, with a stand-in for the volume's operations (the engine
does not matter here: what the server does with what an operation raises does). A
``GalleonError`` is the answer, as its own class; bytes that are not a request are a bad
request and the server serves on; anything else an operation raises is a bug, which is
not answered as bad input but ends the server (and so the worker, which marks its volume
for check: ``fuse/worker.run``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from galleonfs.errors import NotFound, Unavailable
from galleonfs.fuse.control import ControlServer
from galleonfs.volops import channel, online
from galleonfs.volops import messages as m
from galleonfs.volops.protocol import Progress


class Operations:
    """Answers Ping, refuses Stats (NotFound), and has a bug in Space."""

    async def run(self, request: m.VolumeRequest[Any], progress: Progress | None = None) -> Any:
        if isinstance(request, m.Ping):
            return m.WorkerInfo(os.getpid(), "vid", "/mnt")
        if isinstance(request, m.Stats):
            raise NotFound("volume vid has no stats today")
        raise KeyError("a bug in an operation")      # once answered as a "bad control request"


def listening(tmp_path: Path) -> tuple[socket.socket, str]:
    control = tmp_path / "control"
    control.mkdir(mode=0o700)
    fd = os.open(control, os.O_PATH | os.O_DIRECTORY)
    try:
        sock = channel.listen(fd, "w.sock")
    finally:
        os.close(fd)
    return sock, str(control / "w.sock")


def raw(address: str, line: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(address)
        sock.sendall(line)
        return sock.makefile("rb").readline()


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def test_errors_are_answers_bad_bytes_are_bad_requests_and_a_bug_ends_the_server(tmp_path: Path) -> None:
    sock, address = listening(tmp_path)
    seen: list[object] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(ControlServer(sock.detach(), Operations()).serve)
            seen.append(await online.call(address, m.Ping()))
            with pytest.raises(NotFound, match=r"^volume vid has no stats today$"):
                await online.call(address, m.Stats())
            seen.append(await trio.to_thread.run_sync(raw, address, b'{"op": "stats", "args": []}\n'))
            seen.append(await trio.to_thread.run_sync(raw, address, b"x" * (70 << 10)))
            seen.append(await online.call(address, m.Ping()))       # still serving
            with pytest.raises(Unavailable):
                await online.call(address, m.Space())
            await trio.sleep_forever()                              # the bug ends this nursery

    with pytest.raises(BaseExceptionGroup) as ended:
        trio.run(main)
    assert [repr(e) for e in leaves(ended.value)] == [repr(KeyError("a bug in an operation"))]
    assert seen[0] == m.WorkerInfo(os.getpid(), "vid", "/mnt") == seen[3]
    assert b'"class":"InvalidArgument"' in seen[1] and b"bad control request: Expected `object`" in seen[1]
    assert b"bad control request: a control line is longer than 65536 bytes" in seen[2]
