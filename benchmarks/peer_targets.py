"""The file systems ``benchmarks/peers.py`` measures side by side, each behind one interface.

A target is a directory the workloads run in (a plain directory or a FUSE mount point), the
host directory that holds its data (for the space measurements), and the FUSE server
process whose CPU time is counted. Every FUSE target is started once and keeps its one
mount for the whole benchmark, so that a file system which ages shows it.

This module starts and stops only the processes it spawned (by their pid) and unmounts only
its own mount points; it must not tune any target beyond what issue 11 names (``bindfs -o
big_writes``, gocryptfs defaults, the pyfuse3 example as ``pyfuse3_passthrough`` patches
it, GalleonFS with its defaults).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from galleonfs.testing.mount import MountedVolume

MOUNT_TIMEOUT_S = 30.0    # a FUSE server that takes longer to mount has failed
EXIT_TIMEOUT_S = 60.0     # GalleonFS's own bound for a worker to exit after unmount
PASSPHRASE = "galleonfs-benchmark-passphrase"   # gocryptfs; the cipher dir is scratch

ALL = ["plain", "bindfs", "gocryptfs", "passthrough", "galleonfs", "galleonfs-enc"]
PEERS = ["bindfs", "gocryptfs", "passthrough"]   # "best peer" is the best of these


class TargetError(Exception):
    """A target could not be set up; the message says which and what to do."""


class Target:
    """A plain directory on the scratch disk: the reference, no server process."""

    key = "plain"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.label = fs_type(base.parent)
        self.root = base / "dir"          # where the workloads run
        self.data_dir = self.root         # what holds its bytes on the host

    def start(self) -> None:
        self.root.mkdir(parents=True)

    def stop(self) -> None:
        pass

    def pids(self) -> list[int]:
        return []

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the server process and its children have used."""
        pids = self.pids()
        return tree_cpu_s(pids) if pids else None


class FuseProcess(Target):
    """A FUSE server we run in the foreground; mounted when its mount point shows up."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.source = base / "source"
        self.root = base / "mnt"
        self.data_dir = self.source
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = base / "server.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        self.source.mkdir(parents=True)

    def start(self) -> None:
        self.root.mkdir(parents=True)
        self.prepare()
        with open(self.log_path, "ab") as log:
            # A session of its own: Ctrl-C on the benchmark must not reach the server (which
            # would unmount itself under a running workload); stop() unmounts it in order.
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not is_mounted(self.root):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise TargetError(f"{self.label} did not mount on {self.root}: "
                                  f"{self.log_path.read_text(errors='replace')[-2000:].strip()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if is_mounted(self.root):
            unmount(self.root)
        try:
            self.proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)     # our own child, by its pid
            self.proc.wait()
        self.proc = None

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []


class Bindfs(FuseProcess):
    """``bindfs -o big_writes``: C, libfuse 2 on Debian (there big_writes is a real option)."""

    key = "bindfs"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.label = "bindfs"

    def command(self) -> list[str]:
        return [tool("bindfs"), "-f", "-o", "big_writes", str(self.source), str(self.root)]


class Gocryptfs(FuseProcess):
    """gocryptfs with its defaults (AES-256-GCM, Go); a fresh cipher dir, passphrase from a file."""

    key = "gocryptfs"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.label = "gocryptfs"
        self.passfile = base / "passphrase"

    def prepare(self) -> None:
        super().prepare()
        self.passfile.write_text(PASSPHRASE)
        self.passfile.chmod(0o600)
        done = subprocess.run([tool("gocryptfs"), "-init", "-q", "-passfile", str(self.passfile),
                               str(self.source)], capture_output=True, text=True)
        if done.returncode != 0:
            raise TargetError(f"gocryptfs -init failed ({done.returncode}): {done.stderr.strip()}")

    def command(self) -> list[str]:
        return [tool("gocryptfs"), "-fg", "-q", "-passfile", str(self.passfile), str(self.source), str(self.root)]


class Passthrough(FuseProcess):
    """pyfuse3's ``examples/passthroughfs.py`` from the sdist, as ``pyfuse3_passthrough`` runs it."""

    key = "passthrough"

    def __init__(self, base: Path, example: Path) -> None:
        super().__init__(base)
        self.label = "pyfuse3 passthrough"
        self.example = example

    def command(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.pyfuse3_passthrough", "--example", str(self.example),
                str(self.source), str(self.root)]


class Galleon(Target):
    """A GalleonFS volume mounted by its real mount worker (``MountedVolume``)."""

    def __init__(self, base: Path, *, encrypt: bool, size: int) -> None:
        super().__init__(base)
        self.key = "galleonfs-enc" if encrypt else "galleonfs"
        self.label = "GalleonFS encrypted" if encrypt else "GalleonFS"
        self.encrypt = encrypt
        self.size = size
        self.root = base / "mnt"
        self.data_dir = base / "vol"
        self.volume: MountedVolume | None = None

    def start(self) -> None:
        self.volume = MountedVolume.create(self.base, size=self.size, encrypt=self.encrypt)

    def stop(self) -> None:
        if self.volume is None:
            return
        volume, self.volume = self.volume, None
        try:
            # Ctrl-C in a terminal also reaches the worker (same process group), which then
            # unmounts itself: wait for it instead of unmounting what is no longer mounted.
            code = volume.unmount() if is_mounted(self.root) else volume.wait_exit()
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            raise TargetError(f"{self.label}: could not unmount {self.root}: {exc}") from None
        if code != 0:
            raise TargetError(f"{self.label}: the mount worker exited with {code}:\n{volume.log()}")

    def pids(self) -> list[int]:
        return [self.volume.pid] if self.volume is not None else []


def make_targets(keys: list[str], scratch: Path, example: Path | None, volume_size: int) -> list[Target]:
    made: list[Target] = []
    for key in keys:
        base = scratch / key
        if key == "plain":
            made.append(Target(base))
        elif key == "bindfs":
            made.append(Bindfs(base))
        elif key == "gocryptfs":
            made.append(Gocryptfs(base))
        elif key == "passthrough":
            assert example is not None
            made.append(Passthrough(base, example))
        else:
            made.append(Galleon(base, encrypt=key == "galleonfs-enc", size=volume_size))
    return made


# --- helpers -------------------------------------------------------------------------------------
def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise TargetError(f"{name} is not installed: run `benchmarks/run.sh --peers` (it installs fio, "
                          f"bindfs and gocryptfs) or `apt-get install {name}`")
    return path


def fs_type(path: Path) -> str:
    done = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(path)], capture_output=True, text=True)
    return f"plain dir ({done.stdout.strip() or '?'})"


def mount_points() -> set[str]:
    points = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and the like escaped as \040.
        points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4]))
    return points


def is_mounted(path: Path) -> bool:
    return str(path) in mount_points()


def unmount(path: Path) -> None:
    """``fusermount3 -u``, retried while a just-closed file keeps the mount busy."""
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while True:
        done = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, text=True)
        if done.returncode == 0:
            return
        if "busy" not in done.stderr or time.monotonic() > deadline:
            raise TargetError(f"fusermount3 -u {path} failed: {done.stderr.strip()}")
        time.sleep(0.1)


def clear_stale_mounts(scratch: Path) -> None:
    """Lazily unmount what an interrupted earlier run left mounted under our scratch dir."""
    for point in sorted(mount_points(), reverse=True):
        if point.startswith(str(scratch) + "/"):
            subprocess.run(["fusermount3", "-uz", point], capture_output=True, check=False)


def tree_cpu_s(pids: list[int]) -> float:
    """utime + stime of ``pids`` and all their living descendants (threads are included)."""
    parent: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue          # exited while we looked
        parent[int(entry)] = int(fields[1])
        times[int(entry)] = int(fields[11]) + int(fields[12])
    wanted = set(pids)
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in wanted} - wanted
        grew = bool(more)
        wanted |= more
    return sum(times.get(pid, 0) for pid in wanted) / os.sysconf("SC_CLK_TCK")


def ensure_example(cache_dir: Path) -> Path:
    """pyfuse3's ``examples/passthroughfs.py`` of the installed version, from its sdist.

    Fetched once with pip into ``cache_dir`` (outside the repository: the sdist's code is
    not ours to commit)."""
    import pyfuse3

    version = pyfuse3.__version__
    example = cache_dir / f"pyfuse3-{version}" / "examples" / "passthroughfs.py"
    if example.exists():
        return example
    cache_dir.mkdir(parents=True, exist_ok=True)
    sdist = cache_dir / f"pyfuse3-{version}.tar.gz"
    if not sdist.exists():
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                               "--no-deps", f"pyfuse3=={version}", "-d", str(cache_dir)],
                              capture_output=True, text=True)
        if done.returncode != 0 or not sdist.exists():
            raise TargetError(f"could not download the pyfuse3 {version} sdist with pip "
                              f"({done.stderr.strip()[-500:]}); put pyfuse3-{version}.tar.gz in {cache_dir}")
    member = f"pyfuse3-{version}/examples/passthroughfs.py"
    with tarfile.open(sdist) as tar:
        tar.extract(member, cache_dir, filter="data")
    return example
