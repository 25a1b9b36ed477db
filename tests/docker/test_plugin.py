"""The Docker volume plugin over its unix socket, with a real HTTP client (what dockerd
sends: POST /VolumeDriver.<Call>, JSON) against a real galleond and real FUSE mounts: a
volume created with a size option, mounted for two containers (one mount, the last
Unmount unmounts), bytes written through the mount point and read back, errors as
{"Err": ...} in one sentence, and nothing stored harmed by bad requests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from galleonfs.rpc.client import Client
from galleonfs.testing.daemon import RunningDaemon

pytestmark = pytest.mark.mount
MiB = 1 << 20


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


class Docker:
    """What dockerd does with a volume plugin, one HTTP request per call."""

    def __init__(self, sock: Path, mount_dir: Path) -> None:
        self.sock, self.mount_dir = sock, mount_dir

    def call(self, endpoint: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
        connection = UnixHTTPConnection(str(self.sock))
        try:
            data = raw if raw is not None else json.dumps(body or {}).encode()
            connection.request("POST", endpoint, body=data,
                               headers={"Content-Type": "application/vnd.docker.plugins.v1.2+json"})
            response = connection.getresponse()
            reply: dict[str, Any] = json.loads(response.read())
            return response.status, reply
        finally:
            connection.close()

    def ok(self, endpoint: str, body: Any = None) -> dict[str, Any]:
        status, reply = self.call(endpoint, body)
        assert status == 200 and not reply.get("Err"), reply
        return reply

    def err(self, endpoint: str, body: Any = None, *, raw: bytes | None = None) -> str:
        status, reply = self.call(endpoint, body, raw=raw)
        assert status == 500 and reply["Err"], reply
        assert "Traceback" not in reply["Err"] and "\n" not in reply["Err"]
        message: str = reply["Err"]
        return message


def start_plugin(base: Path, galleond: str) -> tuple[subprocess.Popen[bytes], Docker, Path]:
    sock, log, mount_dir = base / "plugins" / "galleonfs.sock", base / "plugin.log", base / "mounts"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "galleonfs.docker.main", "--socket", str(sock),
                                 "--galleond-address", galleond, "--mount-dir", str(mount_dir)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc, Docker(sock, mount_dir), log


def stop_plugin(proc: subprocess.Popen[bytes], docker: Docker, log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text
    assert not docker.sock.exists()


@pytest.fixture(scope="module")
def plugin_process(module_daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    proc, docker, log = start_plugin(tmp_path_factory.mktemp("docker"), module_daemon.address)
    try:
        yield docker
    finally:
        stop_plugin(proc, docker, log)


@pytest.fixture
def docker(plugin_process: Docker, shared_daemon: RunningDaemon) -> Docker:
    return plugin_process


def test_activate_and_capabilities(docker: Docker) -> None:
    assert stat.S_IMODE(os.stat(docker.sock).st_mode) == 0o660
    assert docker.ok("/Plugin.Activate") == {"Implements": ["VolumeDriver"]}
    assert docker.ok("/VolumeDriver.Capabilities") == {"Capabilities": {"Scope": "local"}}
    assert "not part of the volume plugin protocol" in docker.err("/VolumeDriver.Nope")


def test_create_mount_write_unmount_remove(docker: Docker, shared_daemon: RunningDaemon) -> None:
    name = f"data-{uuid.uuid4().hex[:8]}"
    docker.ok("/VolumeDriver.Create", {"Name": name, "Opts": {"size": "16M"}})
    docker.ok("/VolumeDriver.Create", {"Name": name, "Opts": {"size": "16M"}})    # docker repeats it
    assert "other settings" in docker.err("/VolumeDriver.Create", {"Name": name, "Opts": {"size": "32M"}})
    with Client(shared_daemon.address) as client:
        volume = client.get_volume(name)
        assert volume.size_bytes == 16 * MiB
    listed = docker.ok("/VolumeDriver.List")["Volumes"]
    assert {"Name": name, "Mountpoint": ""} in listed
    got = docker.ok("/VolumeDriver.Get", {"Name": name})["Volume"]
    assert got["Name"] == name and got["Mountpoint"] == "" and got["Status"]["size_bytes"] == 16 * MiB

    first = docker.ok("/VolumeDriver.Mount", {"Name": name, "ID": "container-1"})["Mountpoint"]
    assert first == str(docker.mount_dir.resolve() / volume.id) and os.path.ismount(first)
    second = docker.ok("/VolumeDriver.Mount", {"Name": name, "ID": "container-2"})["Mountpoint"]
    assert second == first
    data = os.urandom(200_000)
    Path(first, "hello.bin").write_bytes(data)
    assert docker.ok("/VolumeDriver.Path", {"Name": name}) == {"Mountpoint": first}
    assert "in use by a container" in docker.err("/VolumeDriver.Remove", {"Name": name})
    docker.ok("/VolumeDriver.Unmount", {"Name": name, "ID": "container-1"})
    assert os.path.ismount(first) and Path(first, "hello.bin").read_bytes() == data
    docker.ok("/VolumeDriver.Unmount", {"Name": name, "ID": "container-2"})
    assert not os.path.ismount(first)
    assert docker.ok("/VolumeDriver.Path", {"Name": name}) == {"Mountpoint": ""}

    again = docker.ok("/VolumeDriver.Mount", {"Name": name, "ID": "container-3"})["Mountpoint"]
    assert Path(again, "hello.bin").read_bytes() == data       # the bytes are the volume's
    docker.ok("/VolumeDriver.Unmount", {"Name": name, "ID": "container-3"})
    docker.ok("/VolumeDriver.Remove", {"Name": name})
    assert "no such volume" in docker.err("/VolumeDriver.Get", {"Name": name})
    assert "no such volume" in docker.err("/VolumeDriver.Remove", {"Name": name})


def test_docker_names_that_are_no_dns_label(docker: Docker, shared_daemon: RunningDaemon) -> None:
    name = f"My_Data.{uuid.uuid4().hex[:6]}"
    docker.ok("/VolumeDriver.Create", {"Name": name, "Opts": {"size": "4M"}})
    try:
        assert docker.ok("/VolumeDriver.Get", {"Name": name})["Volume"]["Name"] == name
        assert name in {v["Name"] for v in docker.ok("/VolumeDriver.List")["Volumes"]}
    finally:
        docker.ok("/VolumeDriver.Remove", {"Name": name})


def test_bad_requests_are_one_sentence_and_harm_nothing(docker: Docker, shared_daemon: RunningDaemon) -> None:
    keep = f"keep-{uuid.uuid4().hex[:8]}"
    docker.ok("/VolumeDriver.Create", {"Name": keep, "Opts": {"size": "4M"}})
    try:
        assert "Name is missing" in docker.err("/VolumeDriver.Create", {"Opts": {}})
        assert "unknown option 'colour'" in docker.err("/VolumeDriver.Create",
                                                       {"Name": "x1", "Opts": {"colour": "red"}})
        assert "size" in docker.err("/VolumeDriver.Create", {"Name": "x2", "Opts": {"size": "lots"}})
        assert "Docker volume name" in docker.err("/VolumeDriver.Create", {"Name": "../../etc", "Opts": {}})
        assert "not JSON" in docker.err("/VolumeDriver.Create", raw=b"{not json")
        assert "ID is missing" in docker.err("/VolumeDriver.Mount", {"Name": keep})
        assert "no such volume" in docker.err("/VolumeDriver.Mount", {"Name": "ghost", "ID": "c"})
        with Client(shared_daemon.address) as client:
            names = {v.name for v in client.list_volumes()}
        assert keep in names and not {"x1", "x2", "ghost"} & names
    finally:
        docker.ok("/VolumeDriver.Remove", {"Name": keep})


def test_a_restarted_plugin_finds_its_mounts(shared_daemon: RunningDaemon, tmp_path: Path) -> None:
    """The plugin keeps no state on disk: after a restart, a volume still mounted is reused by
    the next Mount and unmounted by the next Unmount (the IDs before the restart are gone)."""
    name = f"restart-{uuid.uuid4().hex[:8]}"
    proc, docker, log = start_plugin(tmp_path, shared_daemon.address)
    try:
        docker.ok("/VolumeDriver.Create", {"Name": name, "Opts": {"size": "4M"}})
        where = docker.ok("/VolumeDriver.Mount", {"Name": name, "ID": "before"})["Mountpoint"]
        Path(where, "kept").write_text("still here\n")
    finally:
        stop_plugin(proc, docker, log)
    assert os.path.ismount(where)                     # galleond's mount outlives the plugin
    proc, docker, log = start_plugin(tmp_path, shared_daemon.address)
    try:
        assert docker.ok("/VolumeDriver.Path", {"Name": name}) == {"Mountpoint": where}
        assert docker.ok("/VolumeDriver.Mount", {"Name": name, "ID": "after"}) == {"Mountpoint": where}
        assert Path(where, "kept").read_text() == "still here\n"
        docker.ok("/VolumeDriver.Unmount", {"Name": name, "ID": "after"})
        assert not os.path.ismount(where)
        docker.ok("/VolumeDriver.Remove", {"Name": name})
    finally:
        stop_plugin(proc, docker, log)
