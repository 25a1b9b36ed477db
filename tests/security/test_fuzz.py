"""A fuzzer for every RPC of every galleonfs.v1 service, built from the proto descriptors.

For each method (found in the descriptor pool, so an RPC added later is fuzzed without
editing this file) hypothesis draws requests field by field from the method's input type:
strings from a pool of attacks ('..', NUL, newlines, bidi controls, 10,000 characters) mixed
with names that exist (so that calls get past the edge and into the managers) and random
text; numbers at their edges; unknown enum numbers; nested messages, repeated fields and
maps; and, sometimes, raw bytes instead of a message. Every request goes over the real unix
socket to one real galleond, and after each call:

* the status is never INTERNAL or UNKNOWN (nor UNAVAILABLE / DEADLINE_EXCEEDED: the daemon
  must stay up and answer), and its message is at most 1 KiB;
* the daemon is alive and its log has no traceback;
* ``volume list`` is exactly the volume directories of the data directory.

Deterministic (``derandomize``; hypothesis prints the failing request), no example database
written to the tree. ``GALLEONFS_FUZZ_EXAMPLES`` sets the examples per RPC (default 60: about
2,200 calls, 25 s on an idle machine).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from node.util import mounts_under

from galleonfs.errors import GalleonError
from galleonfs.rpc.client import Client
from galleonfs.rpc.server import SERVICE_NAMES
from galleonfs.testing.daemon import RunningDaemon

EXAMPLES_PER_RPC = int(os.environ.get("GALLEONFS_FUZZ_EXAMPLES", "60"))
CALL_TIMEOUT_S = 60
STATUS_MESSAGE_BYTES_MAX = 1024
MiB = 1024 * 1024

# Path fields are drawn anywhere too ("/etc/x", "/root/.ssh", "/../../.."): mount targets
# are confined to the daemon's mount roots, so every one of those must be refused.
FUZZ_PATHS_ANYWHERE = True

FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
             grpc.StatusCode.DEADLINE_EXCEEDED}

# Objects that exist (made by the ``scene`` fixture), so that drawn requests also reach them.
VOLUMES = ["fz-a", "fz-b", "fz-c", "fz-d", "fz-e"]           # the first three exist
SNAPSHOTS = ["good", "s1"]
OTHER_NAMES = ["local", "encrypted", "fz-class", "fz-q", "fz-p", "0 0 1 1 *", "64K", "app"]
ATTACKS = ["", ".", "..", "../../..", "/", "a/b", "base\n", "fz-a\n", "\nfz-a", "\x00", "fz-a\x00",
           "\r\n", "\t", "\u202efz-a", "fz-a\u2028", "-rf", "Upper", "x" * 64, "x" * 129,
           "x" * 10_000, "0 0 1 1 *", "64K", "9" * 5000, "aes-256-gcm", "%s%n", "'; --", "🦀"]


def method_list() -> list[tuple[str, Any]]:
    pool = descriptor_pool.Default()
    return [(f"/{service}/{m.name}", m) for service in SERVICE_NAMES
            for m in pool.FindServiceByName(service).methods]


METHODS = method_list()


# --- strategies from descriptors ---------------------------------------------------------------------
def paths(root: str) -> st.SearchStrategy[str]:
    assert ".." not in root.split("/")
    component = st.one_of(
        st.sampled_from(["m1", "m2", "mnt", ".", "", "x\x00y", "a\nb", "n" * 256, "\u202e"]),
        st.text(min_size=1, max_size=8)).filter(lambda c: "/" not in c and c != "..")
    under_root = st.lists(component, max_size=4).map(lambda parts: "/".join([root, *parts]))
    odd = st.sampled_from(["", "relative", "m1", "\x00", root + "/a" * 3000, root + "/a" * 70])
    choices = [under_root, odd]
    if FUZZ_PATHS_ANYWHERE:
        choices.append(st.sampled_from(["/", "/etc/fz", "/root/.ssh", "/../../..", "/proc/self",
                                        "/usr/local/bin", "/tmp/../etc"]))
        choices.append(st.text(max_size=40))
    return st.one_of(*choices)


# Ordinary values by field name, for tame requests (map entries' fields are key and value).
# Schedules: once a year, so that a policy the fuzzer creates never fires during the test.
TAME = {"schedule": ["0 0 1 1 *"], "storage_class": ["", "local"], "key": ["app", "tier", "block_size", "compression"],
        "value": ["fz", "gold", "64K", "lz4", "none"]}


def strings(field: Any, root: str, wild: bool) -> st.SearchStrategy[str]:
    if not wild:
        if field.name == "path":
            return st.sampled_from([root + "/m1", root + "/m2"])
        return st.sampled_from(TAME.get(field.name, VOLUMES + SNAPSHOTS + OTHER_NAMES))
    if field.name == "path":
        return paths(root)
    return st.one_of(st.sampled_from(VOLUMES + SNAPSHOTS + OTHER_NAMES), st.sampled_from(ATTACKS),
                     st.text(max_size=30))


_INT_RANGES = {
    "TYPE_INT32": (-(2**31), 2**31 - 1), "TYPE_SINT32": (-(2**31), 2**31 - 1),
    "TYPE_SFIXED32": (-(2**31), 2**31 - 1), "TYPE_UINT32": (0, 2**32 - 1),
    "TYPE_FIXED32": (0, 2**32 - 1), "TYPE_INT64": (-(2**63), 2**63 - 1),
    "TYPE_SINT64": (-(2**63), 2**63 - 1), "TYPE_SFIXED64": (-(2**63), 2**63 - 1),
    "TYPE_UINT64": (0, 2**64 - 1), "TYPE_FIXED64": (0, 2**64 - 1),
}


def integers(field: Any, wild: bool) -> st.SearchStrategy[int]:
    name = next(n for n in _INT_RANGES if getattr(field, n) == field.type)
    low, high = _INT_RANGES[name]
    if not wild:
        return st.sampled_from([v for v in (0, 1, 3, 8 * MiB, 16 * MiB, 32 * MiB) if low <= v <= high])
    edges = [v for v in (0, 1, 2, 3, 60, 1000, MiB, 8 * MiB, 16 * MiB, 2**31 - 1, 2**32 - 1,
                         2**50, 2**63 - 1, 2**64 - 1, -1, -(2**31), -(2**63)) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def scalar(field: Any, root: str, wild: bool) -> st.SearchStrategy[Any]:
    if field.type == field.TYPE_STRING:
        return strings(field, root, wild)
    if field.type == field.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == field.TYPE_BOOL:
        return st.booleans()
    if field.type == field.TYPE_ENUM:
        known = st.sampled_from([v.number for v in field.enum_type.values])
        return st.one_of(known, st.sampled_from([-1, 99, 2**31 - 1, -(2**31)])) if wild else known
    if field.type in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
        if not wild:
            return st.sampled_from([0.0, 1.0, 2.0, 100.0])
        return st.floats(width=64 if field.type == field.TYPE_DOUBLE else 32)
    if field.type == field.TYPE_MESSAGE:
        return messages(field.message_type, root, wild)
    return integers(field, wild)


def messages(descriptor: Any, root: str, wild: bool) -> st.SearchStrategy[Any]:
    """Messages of ``descriptor``'s type; each field unset or drawn by its type: from names
    that exist and ordinary values (``wild`` False: these reach the managers), or from
    everything an attacker might send (``wild`` True)."""
    cls = message_factory.GetMessageClass(descriptor)
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value = st.dictionaries(scalar(entry.fields_by_name["key"], root, wild),
                                    scalar(entry.fields_by_name["value"], root, wild), max_size=3)
        elif field.is_repeated:
            value = st.lists(scalar(field, root, wild), max_size=3)
        else:
            value = scalar(field, root, wild)
        # Tame requests set most fields (required ones are then there more often).
        parts[field.name] = st.one_of(st.none(), value) if wild else st.one_of(value, value, st.none())
    return st.fixed_dictionaries(parts).map(lambda values: build(cls, values))


def build(cls: Any, values: dict[str, Any]) -> Any:
    message = cls()
    for name, value in values.items():
        if value is None:
            continue
        field = message.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            if entry.fields_by_name["value"].type == field.TYPE_MESSAGE:
                for key, item in value.items():
                    target[key].CopyFrom(item)
            else:
                target.update(value)
        elif field.is_repeated:
            if field.type == field.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.type == field.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def payloads(method: Any, root: str) -> st.SearchStrategy[bytes]:
    """Serialized requests, tame and wild, and sometimes bytes that are no request at all."""
    def serialized(wild: bool) -> st.SearchStrategy[bytes]:
        return messages(method.input_type, root, wild).map(lambda m: m.SerializeToString())
    return st.one_of(serialized(False), serialized(True), serialized(True), st.binary(max_size=48))


# --- the daemon and its invariants ---------------------------------------------------------------------
@pytest.fixture
def scene(shared_daemon: RunningDaemon) -> RunningDaemon:
    """Before each RPC's fuzzing: fz-a, fz-b and fz-c exist, fz-a with a snapshot "good" (an
    earlier RPC's fuzzing may have deleted them)."""
    with Client(shared_daemon.address, timeout_s=CALL_TIMEOUT_S) as c:
        existing = {v.name for v in c.list_volumes()}
        for name in VOLUMES[:3]:
            if name not in existing:
                c.create_volume(name, 16 * MiB, labels={"app": "fz"})
        if "good" not in {s.name for s in c.list_snapshots("fz-a")}:
            c.create_snapshot("fz-a", "good")
    return shared_daemon


def call(channel: grpc.Channel, method: str, streaming: bool, payload: bytes) -> tuple[grpc.StatusCode, str]:
    try:
        if streaming:
            for _ in channel.unary_stream(method)(payload, timeout=CALL_TIMEOUT_S):
                pass
        else:
            channel.unary_unary(method)(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def check_invariants(daemon: RunningDaemon, log_offset: int) -> int:
    assert daemon.proc is not None and daemon.proc.poll() is None, "galleond died:\n" + daemon.log()
    with open(daemon.log_path, errors="replace") as f:
        f.seek(log_offset)
        new = f.read()
    assert "Traceback" not in new, new
    with Client(daemon.address, timeout_s=CALL_TIMEOUT_S) as c:
        listed = sorted(v.id for v in c.list_volumes())
    on_disk = sorted(os.listdir(daemon.data_dir / "volumes"))
    assert listed == on_disk, f"volume list {listed} != volume directories {on_disk}"
    return log_offset + len(new.encode())


def unmount_all_under(daemon: RunningDaemon, root: Path) -> None:
    """What a fuzzed Mount mounted under the test's directory (the fixture insists on it)."""
    with Client(daemon.address, timeout_s=CALL_TIMEOUT_S) as c:
        for path in sorted(mounts_under(root), reverse=True):
            with contextlib.suppress(GalleonError):
                c.unmount_volume(path=path, force=True)


def test_every_rpc_is_fuzzed() -> None:
    assert {m.split("/")[1] for m, _ in METHODS} == set(SERVICE_NAMES)
    assert len(METHODS) >= 35


@pytest.mark.slow
@pytest.mark.parametrize(("method", "descriptor"), METHODS, ids=[m for m, _ in METHODS])
def test_fuzz_rpc(scene: RunningDaemon, tmp_path: Path,
                  method: str, descriptor: Any) -> None:
    root = str(tmp_path / "mnt")
    os.mkdir(root)
    streaming = descriptor.server_streaming
    shared_daemon = scene
    state = {"log_offset": shared_daemon.log_path.stat().st_size}

    @settings(max_examples=EXAMPLES_PER_RPC, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(payload=payloads(descriptor, root))
    def fuzz(payload: bytes) -> None:
        with grpc.insecure_channel(shared_daemon.address) as channel:
            code, details = call(channel, method, streaming, payload)
        assert code not in FORBIDDEN, f"{method} answered {code.name}: {details}"
        assert len(details.encode()) <= STATUS_MESSAGE_BYTES_MAX, f"{len(details.encode())} bytes: {details[:200]}"
        state["log_offset"] = check_invariants(shared_daemon, state["log_offset"])

    try:
        fuzz()
    finally:
        unmount_all_under(shared_daemon, tmp_path)


@pytest.fixture(autouse=True)
def _no_stray_directories(tmp_path: Path) -> Iterator[None]:
    """Paths are drawn under ``tmp_path/mnt`` only: nothing may appear beside it."""
    yield
    stray = [p.name for p in tmp_path.iterdir() if p.name != "mnt"]
    assert not stray, f"created outside the fuzz root: {stray}"
