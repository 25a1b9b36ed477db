"""Bad input to galleonctl: one clear line, a stable exit code, and nothing changed.

Each case runs against a daemon holding a mounted volume with data (``keep``) and an
unmounted one (``spare``). After each refused command the volume list and storage
classes are exactly as before (timestamps included), the mounted file reads the same,
and no volume directory appeared.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from galleonfs.cli.output import to_dict
from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon

from .util import ctl_json, ctl_ok, user_error

CONTENT = b"precious data that no failed command may touch\n" * 100

# (arguments as a shell would split them, exit code, phrases the message must contain).
# "{tmp}" is the test's tmp_path,
# "{keep}" the mount point of the volume ``keep``.
CASES = [
    # sizes
    ("volume create bad --size -1", 2, ["invalid size '-1'", "512M"]),
    ("volume create bad --size 10X", 2, ["invalid size '10X'"]),
    ("volume create bad --size 0", 2, ["invalid size '0'", "above zero"]),
    ("volume create bad --size 1.5", 2, ["whole number of bytes"]),
    ("volume create bad --size 1K", 2, ["out of range", "at least 1M"]),
    ("volume create bad --size 2P", 2, ["out of range", "at most 1P"]),
    # names
    ("volume create a/b --size 1M", 2, ["invalid volume name 'a/b'", "DNS label"]),
    ("volume create Upper --size 1M", 2, ["invalid volume name 'Upper'", "lowercase"]),
    ("volume create " + "a" * 64 + " --size 1M", 2, ["invalid volume name", "at most 63"]),
    ("volume create under_score --size 1M", 2, ["invalid volume name"]),
    ("volume create trailing- --size 1M", 2, ["invalid volume name"]),
    ("volume create '' --size 1M", 2, ["a volume needs a name"]),
    # storage classes, access modes, types, labels
    ("volume create bad --size 1M --class nope", 3, ["storage class 'nope' does not exist", "local"]),
    ("volume create bad --size 1M --class encrypted", 1, ["storage class encrypted", "no key source", "key_file"]),
    ("volume create bad --size 1M --access-mode RWZ", 2, ["unknown access mode 'RWZ'", "ReadWriteOnce"]),
    ("volume create bad --size 1M --type weird", 2, ["unknown volume type 'weird'", "persistent"]),
    ("volume create bad --size 1M --label novalue", 2, ["invalid label 'novalue'", "key=value"]),
    ("volume create bad --size 1M --label bad!key=x", 2, ["invalid label key 'bad!key'"]),
    ("volume create bad --size 1M --label k=" + "v" * 64, 2, ["invalid value"]),
    ("volume create keep --size 1M", 4, ["'keep' already exists"]),
    # lookups
    ("volume get nope", 3, ["volume 'nope' does not exist", "volume list"]),
    ("volume stats nope", 3, ["does not exist"]),
    ("volume delete nope", 3, ["does not exist"]),
    ("volume mount nope {tmp}/m", 3, ["does not exist"]),
    ("volume expand nope --size 1G", 3, ["does not exist"]),
    ("volume list -l novalue", 2, ["invalid label 'novalue'"]),
    ("volume get ''", 2, ["name a volume"]),
    ("volume delete ''", 2, ["name a volume"]),
    ("volume unmount ''", 2, ["name a volume or a mount point"]),
    # state: mounted, access mode, mount points
    ("volume delete keep", 5, ["volume keep is mounted on {keep}", "--force"]),
    ("volume mount keep {tmp}/second", 5, ["ReadWriteOnce", "already mounted read-write on {keep}"]),
    ("volume mount keep {keep} --read-only", 5, ["something is already mounted on {keep}"]),
    ("volume mount spare {tmp}/full", 2, ["{tmp}/full is not empty"]),
    ("volume mount spare {tmp}/file", 2, ["{tmp}/file"]),
    ("volume expand keep --size 1M", 2, ["shrink"]),
    ("volume expand keep --size 2P", 2, ["out of range"]),
    ("volume unmount {tmp}/nowhere", 3, ["no volume is mounted on {tmp}/nowhere"]),
    ("volume unmount spare", 1, ["volume spare is not mounted"]),
    # storage-class files
    ("storage-class create {tmp}/foo.yaml", 2, ["unknown storage class parameter 'foo'", "block_size"]),
    ("storage-class create {tmp}/blocks.yaml", 2, ["block_size", "power of two"]),
    ("storage-class create {tmp}/topkey.yaml", 2, ["unknown key 'size'"]),
    ("storage-class create {tmp}/broken.yaml", 2, ["not valid YAML"]),
    ("storage-class create {tmp}/broken.json", 2, ["not valid YAML or JSON"]),
    ("storage-class create {tmp}/missing.yaml", 2, ["cannot read {tmp}/missing.yaml"]),
    ("storage-class create {tmp}/reclaim.yaml", 2, ["reclaim_policy must be delete or retain"]),
    ("storage-class create {tmp}/badname.yaml", 2, ["invalid storage class name 'Fast'"]),
    ("storage-class create {tmp}/local.yaml", 4, ["storage class 'local' already exists"]),
    ("storage-class get ''", 2, ["name a storage class"]),
    ("storage-class get nope", 3, ["storage class 'nope' does not exist"]),
    ("storage-class delete local", 1, ["built in"]),
    ("storage-class delete nope", 3, ["does not exist"]),
    # the daemon's address
    ("--address unix:relative volume list", 2, ["invalid address 'unix:relative'"]),
    ("--address nohost volume list", 2, ["invalid address 'nohost'"]),
]

FILES = {
    "foo.yaml": "name: foo\nparameters:\n  foo: bar\n",
    "blocks.yaml": "name: blocks\nparameters: {block_size: 3K}\n",
    "topkey.yaml": "name: topkey\nsize: 10G\n",
    "broken.yaml": "name: [unclosed\n",
    "broken.json": '{"name": "x",',
    "reclaim.yaml": "name: reclaim\nreclaim_policy: recycle\n",
    "badname.yaml": "name: Fast\n",
    "local.yaml": "name: local\n",
}


class Scene:
    def __init__(self, daemon: RunningDaemon, base: Path) -> None:
        self.daemon = daemon
        self.base = base
        self.keep = base / "keep"

    def snapshot(self) -> tuple[object, ...]:
        with Client(self.daemon.address) as c:
            volumes = [to_dict(v) for v in c.list_volumes()]
            classes = [to_dict(x) for x in c.list_storage_classes()]
        dirs = sorted(os.listdir(self.daemon.data_dir / "volumes"))
        return volumes, classes, dirs, (self.keep / "data").read_bytes()


@pytest.fixture(scope="module")
def scene(module_daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    s = Scene(module_daemon, tmp_path_factory.mktemp("scene"))
    ctl_ok(s.daemon, "volume", "create", "keep", "--size", "16M", "--label", "app=db")
    ctl_ok(s.daemon, "volume", "create", "spare", "--size", "8M")
    ctl_ok(s.daemon, "volume", "mount", "keep", str(s.keep))
    (s.keep / "data").write_bytes(CONTENT)
    yield s
    ctl_ok(s.daemon, "volume", "unmount", "keep")


@pytest.mark.parametrize(("command", "code", "phrases"), CASES, ids=[c[0][:60] for c in CASES])
def test_refused_with_one_line(shared_daemon: RunningDaemon, scene: Scene, tmp_path: Path,
                               command: str, code: int, phrases: list[str]) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    (tmp_path / "file").write_text("not a directory")
    fill = {"tmp": str(tmp_path), "keep": str(scene.keep)}
    before = scene.snapshot()
    done = shared_daemon.ctl(*[a.format(**fill) for a in shlex.split(command)])
    user_error(done, code, *[p.format(**fill) for p in phrases])
    assert scene.snapshot() == before
    assert not os.path.exists(tmp_path / "m") and not os.path.exists(tmp_path / "second")


def test_list_unchanged_by_all_the_refusals(shared_daemon: RunningDaemon, scene: Scene) -> None:
    """Runs last in this module: ``volume list -o json`` still shows the two volumes as made."""
    volumes = ctl_json(shared_daemon, "volume", "list")
    assert [(v["name"], v["state"]) for v in volumes] == [("keep", "MOUNTED"), ("spare", "AVAILABLE")]
    assert (scene.keep / "data").read_bytes() == CONTENT
