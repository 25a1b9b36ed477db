"""``MountedVolume``: a volume mounted by a real worker process, for tests and benchmarks.

The worker runs in a subprocess (never FUSE in the test process), its readiness is waited
for with a bound, and ``unmount`` runs ``fusermount3 -u`` and asserts that it worked and
that the worker exited cleanly. ``kill`` is ``SIGKILL`` of the worker, for crash tests.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from ..crypto.keys import KeySpec
from ..engine.engine import Engine
from ..workers.launch import Launch

READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 60.0


class MountError(Exception):
    """The worker did not come up; carries its message and exit code."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


class MountedVolume:
    def __init__(self, volume_dir: str | Path, mountpoint: str | Path, *, options: str = "",
                 env: dict[str, str] | None = None, keys: KeySpec | None = None) -> None:
        self.volume_dir = Path(volume_dir)
        self.mountpoint = Path(mountpoint)
        self.options = options
        self.env = env
        self.keys = keys or KeySpec()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.volume_dir.parent / f"{self.volume_dir.name}.worker.log"

    @classmethod
    def create(cls, base: str | Path, *, size: int = 1 << 30, block_size: int = 64 * 1024,
               options: str = "", env: dict[str, str] | None = None, encrypt: bool = False,
               compression: str = "none", dedup: bool = True) -> MountedVolume:
        """mkfs and mount under ``base``; ``encrypt`` makes a key file ``base/kek``."""
        base = Path(base)
        (base / "mnt").mkdir(parents=True, exist_ok=True)
        keys = KeySpec(key_file=str(base / "kek")) if encrypt else KeySpec()
        Engine.create(str(base / "vol"), size=size, block_size=block_size,
                      keys=keys.manager() if encrypt else None, compression=compression, dedup=dedup)
        return cls(base / "vol", base / "mnt", options=options, env=env, keys=keys).mount()

    def path(self, *parts: str) -> Path:
        return self.mountpoint.joinpath(*parts)

    def __truediv__(self, name: str) -> Path:
        return self.mountpoint / name

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def mount(self) -> MountedVolume:
        assert self.proc is None, "already mounted"
        launch = Launch(str(self.volume_dir), str(self.mountpoint), options=self.options, keys=self.keys,
                        env=self.env)
        with open(self.log_path, "ab") as log:
            self.proc = launch.popen(stdout=log, stderr=log)
        outcome = launch.wait_ready(READY_TIMEOUT_S)
        if not outcome.ready:
            code = None
            try:
                code = self.proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
            raise MountError(f"{outcome.message}\n--- worker log ---\n{self.log()}", code)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except FileNotFoundError:
            return ""

    def unmount(self) -> int:
        """``fusermount3 -u``; assert it worked; return the worker's exit code."""
        assert self.proc is not None, "not mounted"
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while True:
            done = subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True, text=True)
            if done.returncode == 0:
                break
            # A just-closed file may keep the mount busy for a moment (async RELEASE).
            assert "busy" in done.stderr and time.monotonic() < deadline, f"fusermount3 -u failed: {done.stderr}"
            time.sleep(0.1)
        code = self.proc.wait(timeout=EXIT_TIMEOUT_S)
        self.proc = None
        return code

    def kill(self) -> None:
        """``kill -9`` the worker and clear the dead mount."""
        assert self.proc is not None, "not mounted"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=EXIT_TIMEOUT_S)
        self.proc = None
        self.clear_dead_mount()

    def wait_exit(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """Wait for a worker that is expected to die by itself (crash point, bug)."""
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout_s)
        self.proc = None
        self.clear_dead_mount()
        return code

    def clear_dead_mount(self) -> None:
        done = subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], capture_output=True, check=False)

    def __enter__(self) -> MountedVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            code = self.unmount()
            assert code == 0, f"worker exited with {code}\n{self.log()}"
