"""What the CSI driver adds to provisioning and mounting, and that a published path is the
volume's own mount (no extra hop on the data path).

    python benchmarks/csi.py [--rounds 5] [--mib 64]

One real galleond and one real galleonfs-csi (--mode all) in front of it. Each round runs
the same life cycle twice, alternating so drift hits both: through the CSI socket
(CreateVolume, NodeStageVolume, NodePublishVolume, NodeUnpublishVolume, NodeUnstageVolume,
DeleteVolume) and straight through galleond's API (create, mount staging, mount target,
unmount, unmount, delete), each step timed. While published, MIB MiB are written
(fsync'd) and read back through the CSI target path and through the direct mount point,
and the same in a plain directory on the same disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from galleonfs.csi.v1 import csi_pb2, csi_pb2_grpc
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.v1 import types_pb2

MiB = 1 << 20
CAP = csi_pb2.VolumeCapability(mount=csi_pb2.VolumeCapability.MountVolume(),
                               access_mode=csi_pb2.VolumeCapability.AccessMode(
                                   mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))
STEPS = ("create", "stage", "publish", "unpublish", "unstage", "delete")


def timed(times: dict[str, list[float]], step: str, action: Callable[[], object]) -> None:
    start = time.perf_counter()
    action()
    times[step].append((time.perf_counter() - start) * 1000)


def throughput(directory: Path, size: int) -> tuple[float, float]:
    """MB/s writing ``size`` bytes (1 MiB writes, fsync) and reading them back (cache dropped
    for the file with posix_fadvise, which FUSE passes on)."""
    block = os.urandom(MiB)
    path = directory / f"bench-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    write_s = time.perf_counter() - start
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        start = time.perf_counter()
        while f.read(MiB):
            pass
        read_s = time.perf_counter() - start
    path.unlink()
    return size / write_s / 1e6, size / read_s / 1e6


def through_csi(csi: tuple[csi_pb2_grpc.ControllerStub, csi_pb2_grpc.NodeStub], base: Path,
                times: dict[str, list[float]], rates: dict[str, list[tuple[float, float]]], size: int) -> None:
    controller, node = csi
    staging, target = base / "csi-stage", base / "csi-target"
    staging.mkdir()
    holder: dict[str, str] = {}

    def create() -> None:
        holder["id"] = controller.CreateVolume(csi_pb2.CreateVolumeRequest(
            name=f"bench-{uuid.uuid4().hex[:8]}", volume_capabilities=[CAP],
            capacity_range=csi_pb2.CapacityRange(required_bytes=4 * size)), timeout=120).volume.volume_id
    timed(times, "create", create)
    vid = holder["id"]
    timed(times, "stage", lambda: node.NodeStageVolume(csi_pb2.NodeStageVolumeRequest(
        volume_id=vid, staging_target_path=str(staging), volume_capability=CAP), timeout=120))
    timed(times, "publish", lambda: node.NodePublishVolume(csi_pb2.NodePublishVolumeRequest(
        volume_id=vid, staging_target_path=str(staging), target_path=str(target), volume_capability=CAP),
        timeout=120))
    rates["csi"].append(throughput(target, size))
    timed(times, "unpublish", lambda: node.NodeUnpublishVolume(csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=vid, target_path=str(target)), timeout=120))
    timed(times, "unstage", lambda: node.NodeUnstageVolume(csi_pb2.NodeUnstageVolumeRequest(
        volume_id=vid, staging_target_path=str(staging)), timeout=120))
    timed(times, "delete", lambda: controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=vid), timeout=120))
    staging.rmdir()


def direct(client: Client, base: Path, times: dict[str, list[float]],
           rates: dict[str, list[tuple[float, float]]], size: int) -> None:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    staging, target = base / "direct-stage", base / "direct-target"
    staging.mkdir()
    timed(times, "create", lambda: client.create_volume(name, 4 * size, access_modes=[types_pb2.READ_WRITE_MANY]))
    timed(times, "stage", lambda: client.mount_volume(name, str(staging)))
    timed(times, "publish", lambda: client.mount_volume(name, str(target)))
    rates["direct"].append(throughput(target, size))
    timed(times, "unpublish", lambda: client.unmount_volume(path=str(target)))
    timed(times, "unstage", lambda: client.unmount_volume(path=str(staging)))
    timed(times, "delete", lambda: client.delete_volume(name))
    staging.rmdir()
    target.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=64)
    # The direct volume is ReadWriteMany, as the driver makes them: staging and target are two
    # read-write mount points of one volume.
    args = parser.parse_args()
    size = args.mib * MiB
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        base = Path(tmp)
        (base / "node").mkdir()
        daemon = RunningDaemon(base / "node")
        daemon.start()
        sock = base / "csi.sock"
        driver = subprocess.Popen([sys.executable, "-m", "galleonfs.csi.main", "--endpoint", f"unix://{sock}",
                                   "--galleond-address", daemon.address], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            while not sock.exists():
                time.sleep(0.05)
            channel = grpc.insecure_channel(f"unix:{sock}")
            stubs = (csi_pb2_grpc.ControllerStub(channel), csi_pb2_grpc.NodeStub(channel))
            times: dict[str, dict[str, list[float]]] = {"csi": {s: [] for s in STEPS},
                                                         "direct": {s: [] for s in STEPS}}
            rates: dict[str, list[tuple[float, float]]] = {"csi": [], "direct": [], "plain": []}
            plain = base / "plain"
            plain.mkdir()
            with Client(daemon.address) as client:
                for i in range(args.rounds):
                    work = base / f"round{i}"
                    work.mkdir()
                    through_csi(stubs, work, times["csi"], rates, size)
                    direct(client, work, times["direct"], rates, size)
                    rates["plain"].append(throughput(plain, size))
            channel.close()
        finally:
            driver.terminate()
            driver.wait(timeout=30)
            daemon.stop()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{args.rounds} rounds, median ms per step")
    print(f"{'step':<10} {'CSI':>9} {'direct':>9} {'CSI extra':>10}")
    for step in STEPS:
        a, b = statistics.median(times["csi"][step]), statistics.median(times["direct"][step])
        print(f"{step:<10} {a:9.1f} {b:9.1f} {a - b:10.1f}")
    print(f"{args.mib} MiB, median MB/s   write(fsync)  read")
    for way in ("csi", "direct", "plain"):
        w = statistics.median(r[0] for r in rates[way])
        r = statistics.median(r[1] for r in rates[way])
        print(f"{way:<20} {w:12.0f} {r:6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
