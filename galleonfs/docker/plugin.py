"""The volume-plugin protocol's endpoints, over galleond.

Docker names a volume with ``[A-Za-z0-9][A-Za-z0-9_.-]*``; a name that is a DNS label is
the GalleonFS volume's name as it is, any other maps to ``docker-`` and 40 hex digits of its
SHA-256 (the Docker name is kept in a label, which ``List`` and ``Get`` report). Volumes the
plugin made carry ``docker.galleonfs.io/managed=true``; ``List`` shows those only.

Mounts: the first ``Mount`` of a volume asks galleond to mount it at
``<mount dir>/<volume id>`` (a host path built from the volume's id only, never from a
request string); each container's ``Mount`` adds its ID, each ``Unmount`` removes it, and
the last one unmounts. A plugin restart forgets the IDs but not the mount: a volume mounted
there is reused by the next ``Mount`` and unmounted by the next ``Unmount``.

Errors are ``{"Err": "one sentence"}``; nothing a request holds reaches a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from typing import Any

from .. import limits, names, units
from ..errors import GalleonError, NotFound
from ..rpc.client import Client

MANAGED_LABEL = "docker.galleonfs.io/managed"
NAME_LABEL = "docker.galleonfs.io/name"
DEFAULT_SIZE_BYTES = 1 << 30
OPTIONS = ("size", "storage_class")
_DOCKER_NAME = names.Kind("Docker volume", re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z"),
                          limits.label_value_max_chars,
                          "use letters, digits, '_', '.' and '-', starting with a letter or digit")

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class PluginError(Exception):
    """Answered as ``{"Err": message}``."""


def volume_name(docker_name: str) -> str:
    try:
        names.check(docker_name, _DOCKER_NAME)
    except GalleonError as exc:
        raise PluginError(str(exc)) from None
    if len(docker_name) <= limits.dns_label_max_chars and names.VOLUME.pattern.match(docker_name):
        return docker_name
    return "docker-" + hashlib.sha256(docker_name.encode()).hexdigest()[:40]


class Plugin:
    def __init__(self, client: Client, mount_dir: str) -> None:
        self.client = client
        self.mount_dir = mount_dir
        self._users: dict[str, set[str]] = {}      # volume id -> the IDs of containers using it
        self._lock = threading.Lock()              # one request at a time: mounts are per volume
        self.routes: dict[str, Handler] = {
            "/Plugin.Activate": lambda _: {"Implements": ["VolumeDriver"]},
            "/VolumeDriver.Capabilities": lambda _: {"Capabilities": {"Scope": "local"}},
            "/VolumeDriver.Create": self.create, "/VolumeDriver.Remove": self.remove,
            "/VolumeDriver.Mount": self.mount, "/VolumeDriver.Unmount": self.unmount,
            "/VolumeDriver.Path": self.path, "/VolumeDriver.Get": self.get,
            "/VolumeDriver.List": self.list,
        }

    def handle(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        handler = self.routes.get(route)
        if handler is None:
            raise PluginError(f"{route[:64]!r} is not part of the volume plugin protocol")
        with self._lock:
            return handler(body)

    # --- endpoints ---------------------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        docker_name = _text(body, "Name")
        name = volume_name(docker_name)
        opts = body.get("Opts") or {}
        if not isinstance(opts, dict):
            raise PluginError("Opts must be an object of option names to values")
        unknown = sorted(set(opts) - set(OPTIONS))
        if unknown:
            raise PluginError(f"unknown option {str(unknown[0])[:64]!r}: use {', '.join(OPTIONS)} "
                              f"(docker volume create -d galleonfs -o size=10G NAME)")
        size = units.parse_size(str(opts["size"]), what="size") if "size" in opts else DEFAULT_SIZE_BYTES
        try:
            existing = self.client.get_volume(name)
        except NotFound:
            self.client.create_volume(name, size, storage_class=str(opts.get("storage_class", "")),
                                      labels={MANAGED_LABEL: "true", NAME_LABEL: docker_name})
            return {}
        if existing.labels.get(NAME_LABEL) != docker_name or existing.size_bytes != size:
            raise PluginError(f"volume {docker_name} exists already with other settings "
                              f"({existing.size_bytes} bytes); remove it first or choose another name")
        return {}

    def remove(self, body: dict[str, Any]) -> dict[str, Any]:
        volume = self._volume(body)
        if self._users.get(volume.id):
            raise PluginError(f"volume {body['Name']} is in use by a container; stop it first")
        self.client.delete_volume(volume.id)
        return {}

    def mount(self, body: dict[str, Any]) -> dict[str, Any]:
        volume = self._volume(body)
        user = _text(body, "ID")
        where = self._mount_point(volume.id)
        if not any(p.path == where for p in volume.mount_points):
            self.client.mount_volume(volume.id, where)
        self._users.setdefault(volume.id, set()).add(user)
        return {"Mountpoint": where}

    def unmount(self, body: dict[str, Any]) -> dict[str, Any]:
        volume = self._volume(body)
        user = _text(body, "ID")
        users = self._users.get(volume.id, set())
        users.discard(user)
        where = self._mount_point(volume.id)
        if not users and any(p.path == where for p in volume.mount_points):
            self.client.unmount_volume(path=where)
            self._users.pop(volume.id, None)
        return {}

    def path(self, body: dict[str, Any]) -> dict[str, Any]:
        volume = self._volume(body)
        where = self._mount_point(volume.id)
        return {"Mountpoint": where if any(p.path == where for p in volume.mount_points) else ""}

    def get(self, body: dict[str, Any]) -> dict[str, Any]:
        volume = self._volume(body)
        where = self._mount_point(volume.id)
        mounted = any(p.path == where for p in volume.mount_points)
        return {"Volume": {"Name": volume.labels.get(NAME_LABEL, volume.name),
                           "Mountpoint": where if mounted else "",
                           "Status": {"size_bytes": volume.size_bytes, "id": volume.id,
                                      "storage_class": volume.storage_class}}}

    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        found = []
        for volume in self.client.list_volumes({MANAGED_LABEL: "true"}):
            where = self._mount_point(volume.id)
            mounted = any(p.path == where for p in volume.mount_points)
            found.append({"Name": volume.labels.get(NAME_LABEL, volume.name),
                          "Mountpoint": where if mounted else ""})
        return {"Volumes": sorted(found, key=lambda v: v["Name"])}

    # --- helpers -----------------------------------------------------------------------------------
    def _volume(self, body: dict[str, Any]) -> Any:
        name = volume_name(_text(body, "Name"))
        try:
            return self.client.get_volume(name)
        except NotFound:
            raise PluginError(f"no such volume: {str(body['Name'])[:64]}") from None

    def _mount_point(self, volume_id: str) -> str:
        return os.path.join(self.mount_dir, volume_id)


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise PluginError(f"{field} is missing: the volume plugin protocol requires it")
    return value
