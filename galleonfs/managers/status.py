"""What the node reports about itself (NodeService.GetStatus, and the health endpoints).

Here, below the RPC layer that shows it, so that ``rpc`` never imports ``node`` (the
daemon, which builds everything, is the only module above both).
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from .. import __version__
from .disk import DiskWatch
from .model import VolumeState
from .volumes import VolumeManager


@dataclass
class NodeStatus:
    node_id: str
    hostname: str
    version: str
    data_dir: str
    listen: list[str]
    started_ns: int
    capacity_bytes: int
    available_bytes: int
    provisioned_bytes: int
    volumes_by_state: dict[str, int]
    workers_up: int
    workers_expected: int
    ready: bool
    problems: list[str] = field(default_factory=list)
    metrics_url: str = ""
    disk_pressure: bool = False    # the data directory's disk is (nearly) full: see DiskWatch


class NodeInfo:
    def __init__(self, node_id: str, data_dir: str, listen: list[str], volumes: VolumeManager) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.listen = listen
        self.volumes = volumes
        self.started_ns = time.time_ns()
        self.reconciled = False
        self.metrics_url = ""
        # The data directory's disk: pressure, full volumes.
        self.disk = DiskWatch(data_dir, volumes.supervisor, volumes.name_of)

    def status(self) -> NodeStatus:
        fs = os.statvfs(self.data_dir)
        volumes = self.volumes.list()
        by_state = Counter(v.state.value for v in volumes)
        expected = sum(1 for v in volumes if v.mount_points and v.state != VolumeState.FAILED)
        up = self.volumes.supervisor.up()
        problems = []
        if not self.reconciled:
            problems.append("still restoring the mounts of the last run")
        if up < expected:
            problems.append(f"{expected - up} of {expected} mount workers are not running")
        failed = [v.name for v in volumes if v.state == VolumeState.FAILED]
        if failed:
            problems.append(f"failed volumes: {', '.join(failed)}")
        capacity, available = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
        disk_problems = self.disk.problems(capacity, available)
        problems += disk_problems
        return NodeStatus(
            node_id=self.node_id, hostname=socket.gethostname(), version=__version__,
            data_dir=self.data_dir, listen=self.listen, started_ns=self.started_ns,
            capacity_bytes=fs.f_blocks * fs.f_frsize, available_bytes=fs.f_bavail * fs.f_frsize,
            provisioned_bytes=sum(v.size for v in volumes),
            volumes_by_state={s.value: by_state.get(s.value, 0) for s in VolumeState},
            workers_up=up, workers_expected=expected,
            ready=self.reconciled and up >= expected and not disk_problems,
            problems=problems, metrics_url=self.metrics_url, disk_pressure=bool(disk_problems),
        )
