"""Fixtures of the volume-operations contract: the same volume, twice.

``Online`` is a volume served by a real mount worker (a subprocess, started the way the
daemon starts one: ``workers.launch`` with a control socket bound in a 0700 directory), and
reached through ``OnlineOps``. ``Offline`` is an unmounted volume reached through
``OfflineOps`` (a helper process per request). Both offer ``run`` (one request, from this
thread) and ``write`` (files put in through a real mount), so a test does the same to both
and compares what they answer.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from galleonfs.crypto.keys import KeySpec
from galleonfs.engine.engine import Engine
from galleonfs.engine.fsck import fsck
from galleonfs.testing.mount import MountedVolume
from galleonfs.volops import channel
from galleonfs.volops.messages import VolumeRequest
from galleonfs.volops.offline import OfflineOps
from galleonfs.volops.online import OnlineOps
from galleonfs.volops.protocol import VolumeOps
from galleonfs.workers.launch import Launch

R = TypeVar("R")
SIZE = 64 << 20


def put(mountpoint: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        with open(mountpoint / name, "wb") as f:
            f.write(data)
            os.fsync(f.fileno())


class Subject:
    kind = ""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.volume_dir = base / "vol"
        self.mountpoint = base / "mnt"
        self.mountpoint.mkdir(parents=True)
        Engine.create(str(self.volume_dir), size=SIZE, block_size=64 << 10)
        self.ops: VolumeOps

    def run(self, request: VolumeRequest[R]) -> R:
        return trio.run(self.ops.run, request)

    def outcome(self, request: VolumeRequest[Any]) -> tuple[str, str]:
        """("ok", repr of the reply) or (error class, message): what a caller can tell."""
        try:
            return "ok", repr(self.run(request))
        except Exception as exc:
            return type(exc).__name__, str(exc)

    def write(self, files: dict[str, bytes]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Online(Subject):
    kind = "online"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        control = base / "control"
        control.mkdir(mode=0o700)
        self._dir_fd = os.open(control, os.O_PATH | os.O_DIRECTORY)
        listener = channel.listen(self._dir_fd, "worker.sock")
        launch = Launch(str(self.volume_dir), str(self.mountpoint), control_fd=listener.fileno())
        self.log_path = base / "worker.log"
        with open(self.log_path, "ab") as log:
            self.proc = launch.popen(stdout=log, stderr=log)
        listener.close()
        outcome = launch.wait_ready(30)
        assert outcome.ready, f"{outcome.message}\n{self.log_path.read_text()}"
        self.ops = OnlineOps(channel.address(str(control), self._dir_fd, "worker.sock"))

    def write(self, files: dict[str, bytes]) -> None:
        put(self.mountpoint, files)

    def close(self) -> None:
        done = subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert self.proc.wait(timeout=60) == 0, self.log_path.read_text()
        os.close(self._dir_fd)


class Offline(Subject):
    kind = "offline"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.ops = OfflineOps(str(self.volume_dir), KeySpec())

    def write(self, files: dict[str, bytes]) -> None:
        with MountedVolume(self.volume_dir, self.mountpoint).mount():
            put(self.mountpoint, files)


@pytest.fixture
def pair(tmp_path: Path, fuse_ok: None) -> Iterator[tuple[Online, Offline]]:
    """The same new volume twice: served by a worker, and unmounted. fsck'd afterwards."""
    subjects: list[Subject] = []
    try:
        online = Online(tmp_path / "online")
        subjects.append(online)
        offline = Offline(tmp_path / "offline")
        subjects.append(offline)
        yield online, offline
    finally:
        for subject in subjects:
            subject.close()
    for subject in subjects:
        report = fsck(str(subject.volume_dir))
        assert report.clean, f"{subject.kind}: {report.render()}"
