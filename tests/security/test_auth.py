"""Authentication and authorization (issue 9, finding 2 and the unix-socket part of 8), as
attackers and unlucky operators try it: real galleond processes, real unprivileged users
made by the test, real TLS with certificates made by the test, galleonctl as users run it.

Each refusal is asserted with its exit code and sentence *and* with what did not change
(volumes, tokens, the mount table); each grant with what the user relies on.
"""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from galleonfs.errors import ExitCode
from galleonfs.rpc.gate import run_dir_for
from galleonfs.testing.daemon import RunningDaemon
from galleonfs.v1 import volume_pb2, volume_pb2_grpc

from .access_util import Authority, Daemons, galleonctl, galleonctl_as
from .local_users import LocalUser, mount_table

MiB = 1 << 20


@pytest.fixture
def daemons(fuse_ok: None, request: pytest.FixtureRequest) -> Iterator[Daemons]:
    started = Daemons()
    try:
        yield started
    finally:
        started.finish(check_logs=request.node.get_closest_marker("allow_warnings") is None)


@pytest.fixture
def group() -> Iterator[str]:
    """A fresh group, the daemon's operator_group in the tests that use it."""
    name = f"gfs-op-{uuid.uuid4().hex[:8]}"
    subprocess.run(["groupadd", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["groupdel", name], capture_output=True, check=False)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    return done.stdout


def refused(done: subprocess.CompletedProcess[str], code: int, *phrases: str) -> None:
    """A one-line refusal with the stable exit code, never a traceback."""
    assert done.returncode == code, f"exit {done.returncode} (wanted {code}): {done.stdout} {done.stderr}"
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, (phrase, done.stderr)


def names(daemon: RunningDaemon, *args: str, env: dict[str, str] | None = None) -> list[str]:
    out = ok(galleonctl(daemon.address, *args, "-o", "json", env=env))
    return sorted(item["name"] for item in json.loads(out))


def token(daemon: RunningDaemon, name: str, role: str, *extra: str) -> str:
    secret = ok(galleonctl(daemon.address, "token", "create", name, "--role", role, *extra)).strip()
    assert secret.startswith(f"gfs1.{name}.")
    return secret


def audit(daemon: RunningDaemon) -> list[dict[str, object]]:
    return json.loads(ok(galleonctl(daemon.address, "audit", "list", "-o", "json")))


# --- the unix socket ---------------------------------------------------------------------------
def test_a_local_user_outside_the_group_is_refused_even_on_a_0666_socket(
        daemons: Daemons, local_user: LocalUser, group: str) -> None:
    d = daemons.start(env={"GALLEONFS_SOCKET_MODE": "0666", "GALLEONFS_OPERATOR_GROUP": group})
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o666      # the file system lets them in

    listed = galleonctl_as(local_user, d.address, "volume", "list")
    refused(listed, ExitCode.PERMISSION, f"uid {local_user.uid} may not use galleond",
            f"members of the group {group}")
    created = galleonctl_as(local_user, d.address, "volume", "create", "mine", "--size", "8M")
    refused(created, ExitCode.PERMISSION, f"uid {local_user.uid} may not use galleond")
    assert names(d, "volume", "list") == []

    # The refusal is in the audit log, with the kernel's uid of the caller.
    denied = [r for r in audit(d) if r["method"] == "galleonfs.v1.VolumeService/Create"]
    assert len(denied) == 1 and denied[0]["code"] == "PERMISSION_DENIED"
    assert denied[0]["peer"]["uid"] == local_user.uid and denied[0]["peer"]["credentials_known"]


def test_a_member_of_the_operator_group_is_an_operator(
        daemons: Daemons, local_user: LocalUser, group: str) -> None:
    d = daemons.start(env={"GALLEONFS_OPERATOR_GROUP": group})
    gid = grp.getgrnam(group).gr_gid
    info = os.stat(d.socket)
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o660, gid)   # the group may connect
    subprocess.run(["usermod", "-a", "-G", group, local_user.name], check=True, capture_output=True)
    groups = os.getgrouplist(local_user.name, local_user.gid)       # what a login would give
    assert gid in groups and gid != local_user.gid                     # a supplementary group

    def as_member(*args: str) -> subprocess.CompletedProcess[str]:
        return galleonctl_as(local_user, d.address, *args, groups=groups)

    ok(as_member("volume", "create", "work", "--size", "8M"))
    mnt = d.base / "mnt"
    ok(as_member("volume", "mount", "work", str(mnt)))
    try:
        (mnt / "hello").write_text("from an operator")
        assert (mnt / "hello").read_text() == "from an operator"
    finally:
        ok(as_member("volume", "unmount", "work"))
    assert str(mnt) not in mount_table()
    refused(as_member("token", "create", "mine", "--role", "admin"), ExitCode.PERMISSION,
            f"uid {local_user.uid} is an operator; TokenService/Create needs admin")
    refused(as_member("storage-class", "delete", "encrypted"), ExitCode.PERMISSION, "needs admin")
    assert json.loads(ok(galleonctl(d.address, "token", "list", "-o", "json"))) == []
    ok(as_member("volume", "delete", "work"))

    # The same user without the group (as before the usermod) cannot even connect.
    refused(galleonctl_as(local_user, d.address, "volume", "list"), ExitCode.PERMISSION,
            f"no permission to connect to {d.socket}")


def test_the_socket_has_its_final_mode_before_it_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 8: with a permissive umask a user connected in the gap between listen and
    chmod. The mode (and group) must be final when listen() is called."""
    import socket

    from galleonfs.rpc import gate

    seen: list[int] = []
    real_listen = socket.socket.listen

    def listen(sock: socket.socket, *args: int) -> None:
        seen.append(stat.S_IMODE(os.stat(path).st_mode))
        real_listen(sock, *args)

    monkeypatch.setattr(socket.socket, "listen", listen)
    for umask, mode in ((0o000, 0o660), (0o077, 0o660), (0o000, 0o600), (0o022, 0o666)):
        path = str(tmp_path / f"s-{umask:o}-{mode:o}.sock")
        old = os.umask(umask)
        try:
            listener = gate._unix_listener(path, mode, None)
        finally:
            os.umask(old)
        listener.close()
        assert seen[-1] == mode, (oct(umask), oct(mode), oct(seen[-1]))


def test_a_connection_the_gate_did_not_make_is_unauthenticated(daemons: Daemons, local_user: LocalUser) -> None:
    """The gRPC server's own socket is root's alone, and even root gets no answer there."""
    from galleonfs.testing.users import run_as

    d = daemons.start()
    run_dir = Path(run_dir_for(str(d.data_dir)))
    info = os.stat(run_dir)
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, 0)
    internal = run_dir / "grpc.sock"

    def connect() -> None:
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(internal))

    with pytest.raises(PermissionError):
        run_as(local_user.uid, local_user.gid, connect)
    with grpc.insecure_channel(f"unix:{internal}") as channel, pytest.raises(grpc.RpcError) as info_:
        volume_pb2_grpc.VolumeServiceStub(channel).List(volume_pb2.ListVolumesRequest(), timeout=30)
    assert info_.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "did not come through galleond's socket" in info_.value.details()


def test_a_refused_start_leaves_no_socket_or_gate_behind(daemons: Daemons, tmp_path: Path) -> None:
    d = daemons.start()
    other = tmp_path / "other-data"
    done = _galleond("--listen", d.address, data_dir=other)      # the socket is taken
    assert done.returncode == ExitCode.BUSY, done.stderr
    assert done.stderr.splitlines()[-1] == f"galleond: error: another daemon already listens on {d.socket}"
    assert not os.path.exists(run_dir_for(str(other)))
    assert not os.path.exists(f"{other.parent}/s.sock")           # its own first socket went too
    assert names(d, "volume", "list") == []                         # the first daemon still answers


# --- tokens ------------------------------------------------------------------------------------
def test_tokens_viewer_cannot_write_and_bad_tokens_are_refused(daemons: Daemons, local_user: LocalUser) -> None:
    # 0666: every local user may connect, and only a token lets one do anything.
    d = daemons.start(env={"GALLEONFS_SOCKET_MODE": "0666"})
    viewer = token(d, "look", "viewer")
    ok(galleonctl(d.address, "volume", "create", "data", "--size", "8M"))

    # A user who may not use the socket may with a token: given in a file, or the environment.
    token_file = Path(local_user.home) / "token"
    token_file.write_text(viewer + "\n")
    os.chown(token_file, local_user.uid, local_user.gid)
    token_file.chmod(0o600)
    listed = galleonctl_as(local_user, d.address, "--token-file", str(token_file), "volume", "list",
                           "-o", "json")
    assert [v["name"] for v in json.loads(ok(listed))] == ["data"]
    refused(galleonctl_as(local_user, d.address, "volume", "create", "x", "--size", "8M",
                          env={"GALLEONFS_TOKEN": viewer}),
            ExitCode.PERMISSION, "token look is a viewer; VolumeService/Create needs operator")
    refused(galleonctl_as(local_user, d.address, "volume", "delete", "data", env={"GALLEONFS_TOKEN": viewer}),
            ExitCode.PERMISSION, "needs operator")

    # The operator token works until it expires, then is refused as expired. 10 s: each
    # galleonctl start takes over a second on a loaded 2-core machine, and 2 s ran out first.
    operator = token(d, "work", "operator", "--expires", "10s")
    expires_by = time.monotonic() + 10            # the daemon's clock started before this one
    ok(galleonctl_as(local_user, d.address, "volume", "expand", "data", "--size", "16M",
                     env={"GALLEONFS_TOKEN": operator}))
    time.sleep(max(0.0, expires_by - time.monotonic()) + 0.5)
    refused(galleonctl_as(local_user, d.address, "volume", "list", env={"GALLEONFS_TOKEN": operator}),
            ExitCode.PERMISSION, "token 'work' expired at")

    ok(galleonctl(d.address, "token", "revoke", "look"))
    refused(galleonctl_as(local_user, d.address, "volume", "list", env={"GALLEONFS_TOKEN": viewer}),
            ExitCode.PERMISSION, "token 'look' was revoked at")
    # Even root's own connection does not fall back when the token is bad.
    refused(galleonctl(d.address, "volume", "list", env={"GALLEONFS_TOKEN": viewer}),
            ExitCode.PERMISSION, "was revoked")
    wrong = viewer.rsplit(".", 1)[0] + "." + "A" * 43
    refused(galleonctl(d.address, "volume", "list", env={"GALLEONFS_TOKEN": wrong}), ExitCode.PERMISSION,
            "token 'look' is not valid")
    refused(galleonctl(d.address, "volume", "list", env={"GALLEONFS_TOKEN": "letmein"}), ExitCode.PERMISSION,
            "the bearer token is malformed")

    tokens = json.loads(ok(galleonctl(d.address, "token", "list", "-o", "json")))
    assert {t["name"]: t["state"] for t in tokens} == {"look": "revoked", "work": "expired"}
    assert viewer.rsplit(".", 1)[1] not in json.dumps(tokens)            # never a secret
    assert json.loads(ok(galleonctl(d.address, "volume", "get", "data", "-o", "json")))["size_bytes"] == str(16 * MiB)
    with open(d.data_dir / "audit.log") as f:
        assert viewer.rsplit(".", 1)[1] not in f.read()                # nor in the audit log


def test_token_create_refuses_bad_requests(daemons: Daemons) -> None:
    d = daemons.start()
    refused(galleonctl(d.address, "token", "create", "Bad_Name", "--role", "viewer"), ExitCode.USAGE,
            "invalid token name 'Bad_Name'")
    refused(galleonctl(d.address, "token", "create", "x", "--role", "operator", "--tenant", "nope"),
            ExitCode.NOT_FOUND, "tenant 'nope' does not exist")
    ok(galleonctl(d.address, "tenant", "create", "acme"))
    refused(galleonctl(d.address, "token", "create", "x", "--role", "admin", "--tenant", "acme"),
            ExitCode.USAGE, "an admin token cannot be bound to a tenant")
    refused(galleonctl(d.address, "token", "create", "x", "--role", "viewer", "--expires", "soon"),
            ExitCode.USAGE, "invalid --expires 'soon'")
    token(d, "x", "viewer")
    refused(galleonctl(d.address, "token", "create", "x", "--role", "viewer"), ExitCode.EXISTS,
            "a token named 'x' already exists")
    assert [t["name"] for t in json.loads(ok(galleonctl(d.address, "token", "list", "-o", "json")))] == ["x"]


# --- TCP and TLS -------------------------------------------------------------------------------
def _galleond(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", "--config", os.devnull,
                           "--data-dir", str(data_dir), "--listen", f"unix:{data_dir.parent}/s.sock", *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "GALLEONFS_METRICS_LISTEN": ""})


def test_plaintext_tcp_is_refused_at_start_unless_insecure_listen_on_loopback(
        tmp_path: Path, daemons: Daemons) -> None:
    data = tmp_path / "data"
    refused(_galleond("--listen", "127.0.0.1:0", data_dir=data), ExitCode.USAGE,
            "listening on 127.0.0.1:0 needs TLS: set tls_cert and tls_key")
    for address in ("0.0.0.0:0", "10.1.2.3:7000", "[::]:0"):
        refused(_galleond("--insecure-listen", address, data_dir=data), ExitCode.USAGE,
                "bad value for --insecure-listen", "plaintext is only allowed on loopback")
    assert not data.exists()                       # refused before anything was made

    d = daemons.start(args=["--insecure-listen", "127.0.0.1:0"])
    tcp = next(a for a in d.listening() if a.startswith("127.0.0.1:"))
    refused(galleonctl(tcp, "volume", "list"), ExitCode.PERMISSION,
            "plaintext TCP listener needs a bearer token")
    admin = token(d, "ops", "admin")
    ok(galleonctl(tcp, "volume", "create", "over-tcp", "--size", "8M", env={"GALLEONFS_TOKEN": admin}))
    assert names(d, "volume", "list") == ["over-tcp"]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, object]:
    ca = Authority(tmp_path, "node")
    other = Authority(tmp_path, "other")
    return {
        "ca": ca, "other": other,
        "server": ca.issue("server", cn="galleond", server=True),
        "alice": ca.issue("alice", cn="alice", ou="operator"),
        "viewer": ca.issue("vic", cn="vic", ou="viewer"),
        "norole": ca.issue("norole", cn="nobody"),
        "tenant-a": ca.issue("ta", cn="bot-a", ou="operator", o="acme"),
        "foreign": other.issue("foreign", cn="mallory", ou="admin"),
        "expired": ca.issue("expired", cn="old", ou="admin", expired=True),
    }


def _tls_daemon(daemons: Daemons, pki: dict[str, object], *, client_ca: bool) -> tuple[RunningDaemon, str]:
    server = pki["server"]
    env = {"GALLEONFS_TLS_CERT": str(server.cert), "GALLEONFS_TLS_KEY": str(server.key)}  # type: ignore[attr-defined]
    if client_ca:
        env["GALLEONFS_TLS_CLIENT_CA"] = str(pki["ca"].path)  # type: ignore[attr-defined]
    d = daemons.start(env=env, args=["--listen", "127.0.0.1:0"])
    return d, next(a for a in d.listening() if a.startswith("127.0.0.1:"))


def _tls(pki: dict[str, object], who: str | None, ca: str = "ca") -> dict[str, str]:
    env = {"GALLEONFS_TLS_CA": str(pki[ca].path)}  # type: ignore[attr-defined]
    if who:
        env |= {"GALLEONFS_TLS_CERT": str(pki[who].cert), "GALLEONFS_TLS_KEY": str(pki[who].key)}  # type: ignore[attr-defined]
    return env


def test_mtls_requires_a_certificate_from_the_configured_ca(daemons: Daemons, pki: dict[str, object]) -> None:
    d, tcp = _tls_daemon(daemons, pki, client_ca=True)

    for who, phrase in ((None, "it requires a client certificate"),
                        ("foreign", "it refused the client certificate"),
                        ("expired", "it refused the client certificate")):
        done = galleonctl(tcp, "volume", "create", "x", "--size", "8M", env=_tls(pki, who))
        refused(done, ExitCode.UNAVAILABLE, "over TLS", phrase)
    # A token does not replace the certificate: the handshake comes first.
    admin = token(d, "ops", "admin")
    refused(galleonctl(tcp, "volume", "list", env={**_tls(pki, None), "GALLEONFS_TOKEN": admin}),
            ExitCode.UNAVAILABLE, "it requires a client certificate")
    # The client must trust the daemon's certificate too.
    refused(galleonctl(tcp, "volume", "list", env=_tls(pki, "alice", ca="other")), ExitCode.UNAVAILABLE,
            "is not trusted")
    assert names(d, "volume", "list") == []

    ok(galleonctl(tcp, "volume", "create", "by-alice", "--size", "8M", env=_tls(pki, "alice")))
    refused(galleonctl(tcp, "token", "create", "t", "--role", "admin", env=_tls(pki, "alice")),
            ExitCode.PERMISSION, "cert alice is an operator; TokenService/Create needs admin")
    refused(galleonctl(tcp, "volume", "delete", "by-alice", env=_tls(pki, "viewer")), ExitCode.PERMISSION,
            "cert vic is a viewer; VolumeService/Delete needs operator")
    assert names(d, "volume", "list") == ["by-alice"]
    listed = json.loads(ok(galleonctl(tcp, "volume", "list", "-o", "json", env=_tls(pki, "viewer"))))
    assert [v["name"] for v in listed] == ["by-alice"]
    refused(galleonctl(tcp, "volume", "list", env=_tls(pki, "norole")), ExitCode.PERMISSION,
            "must give its role in exactly one OU")
    refused(galleonctl(tcp, "volume", "list", env=_tls(pki, "tenant-a")), ExitCode.PERMISSION,
            "tenant 'acme' (the O of the client certificate of cert bot-a) does not exist")
    ok(galleonctl(d.address, "tenant", "create", "acme"))
    assert ok(galleonctl(tcp, "volume", "list", env=_tls(pki, "tenant-a"))) == "no volumes\n"

    who = {r["peer"].get("principal") for r in audit(d) if r["peer"]["transport"] == "tcp"}
    assert {"cert alice", "cert vic"} <= who


def test_tls_without_client_ca_needs_a_token(daemons: Daemons, pki: dict[str, object]) -> None:
    d, tcp = _tls_daemon(daemons, pki, client_ca=False)
    refused(galleonctl(tcp, "volume", "list", env=_tls(pki, None)), ExitCode.PERMISSION,
            "over TCP galleond needs a client certificate", "or a bearer token")
    operator = token(d, "remote", "operator")
    ok(galleonctl(tcp, "volume", "create", "remote", "--size", "8M",
                  env={**_tls(pki, None), "GALLEONFS_TOKEN": operator}))
    assert names(d, "volume", "list") == ["remote"]


# --- tenants -----------------------------------------------------------------------------------
def test_a_tenant_neither_sees_nor_touches_another_tenants_volumes(daemons: Daemons) -> None:
    d = daemons.start()
    for tenant in ("a", "b"):
        ok(galleonctl(d.address, "tenant", "create", tenant))
    ta = {"GALLEONFS_TOKEN": token(d, "ta", "operator", "--tenant", "a")}
    tb = {"GALLEONFS_TOKEN": token(d, "tb", "operator", "--tenant", "b")}
    ok(galleonctl(d.address, "volume", "create", "va", "--size", "8M", env=ta))
    ok(galleonctl(d.address, "volume", "create", "vb", "--size", "8M", env=tb))
    ok(galleonctl(d.address, "snapshot", "create", "vb@keep", env=tb))
    ok(galleonctl(d.address, "volume", "create", "untenanted", "--size", "8M"))

    assert names(d, "volume", "list", env=ta) == ["va"]
    assert names(d, "volume", "list", env=tb) == ["vb"]
    assert names(d, "volume", "list") == ["untenanted", "va", "vb"]
    assert json.loads(ok(galleonctl(d.address, "volume", "get", "vb", "-o", "json")))["tenant"] == "b"
    snaps = json.loads(ok(galleonctl(d.address, "snapshot", "list", "-o", "json", env=ta)))
    assert snaps == []

    mnt = d.base / "steal"
    vb_id = json.loads(ok(galleonctl(d.address, "volume", "get", "vb", "-o", "json")))["id"]
    for target in ("vb", vb_id):             # by name, and by id
        for args in (("volume", "get", target), ("volume", "stats", target), ("volume", "delete", target),
                     ("volume", "expand", target, "--size", "1G"), ("volume", "mount", target, str(mnt)),
                     ("snapshot", "create", f"{target}@mine"), ("snapshot", "list", target),
                     ("snapshot", "delete", f"{target}@keep"), ("snapshot", "restore", f"{target}@keep"),
                     ("volume", "clone", f"{target}@keep", "stolen"), ("qos", "unassign", target)):
            refused(galleonctl(d.address, *args, env=ta), ExitCode.NOT_FOUND,
                    f"volume {target!r} does not exist")
    # Node-wide changes are not a tenant's, whatever its role.
    refused(galleonctl(d.address, "snapshot-policy", "create", "p", "--schedule", "* * * * *",
                       "--retention", "1", env=ta), ExitCode.PERMISSION, "is bound to a tenant")
    assert names(d, "tenant", "list", env=ta) == ["a"]
    refused(galleonctl(d.address, "tenant", "get", "b", env=ta), ExitCode.NOT_FOUND, "tenant 'b' does not exist")

    # Nothing of b's changed.
    vb = json.loads(ok(galleonctl(d.address, "volume", "get", "vb", "-o", "json")))
    assert (vb["size_bytes"], vb["state"], vb["mount_points"]) == (str(8 * MiB), "AVAILABLE", [])
    assert [s["name"] for s in json.loads(ok(galleonctl(d.address, "snapshot", "list", "vb", "-o", "json")))] == ["keep"]
    assert names(d, "volume", "list") == ["untenanted", "va", "vb"]
    assert not mnt.exists() or not os.path.ismount(mnt)

    # b deletes its own; the audit log names the principal and tenant of each call.
    ok(galleonctl(d.address, "snapshot", "delete", "vb@keep", env=tb))
    ok(galleonctl(d.address, "volume", "delete", "vb", env=tb))
    records = audit(d)
    created = [r for r in records if r["method"] == "galleonfs.v1.VolumeService/Create" and r["code"] == "OK"]
    assert [(r["peer"]["principal"], r["peer"]["role"], r["peer"]["tenant"]) for r in created] == [
        ("token ta", "operator", "a"), ("token tb", "operator", "b"), ("uid 0", "admin", "")]
    stolen = [r for r in records if r["method"] == "galleonfs.v1.VolumeService/Delete" and r["code"] == "NOT_FOUND"]
    assert {r["peer"]["tenant"] for r in stolen} == {"a"}
    table = ok(galleonctl(d.address, "audit", "list"))
    assert "as token ta tenant a" in table


def test_tenant_quota_and_storage_classes(daemons: Daemons) -> None:
    d = daemons.start()
    ok(galleonctl(d.address, "tenant", "create", "small", "--max-bytes", "20M", "--max-volumes", "2",
                  "--classes", "local"))
    t = {"GALLEONFS_TOKEN": token(d, "small-ops", "operator", "--tenant", "small")}
    refused(galleonctl(d.address, "volume", "create", "enc", "--size", "8M", "--class", "encrypted", env=t),
            ExitCode.PERMISSION, "tenant small may not use storage class encrypted; it may use local")
    assert names(d, "storage-class", "list", env=t) == ["local"]
    refused(galleonctl(d.address, "storage-class", "get", "encrypted", env=t), ExitCode.NOT_FOUND,
            "storage class 'encrypted' does not exist (known: local)")

    ok(galleonctl(d.address, "volume", "create", "one", "--size", "8M", env=t))
    refused(galleonctl(d.address, "volume", "create", "big", "--size", "16M", env=t), ExitCode.NO_SPACE,
            "tenant small would have 24M of volumes, above its quota of 20M (8M in use)")
    refused(galleonctl(d.address, "volume", "expand", "one", "--size", "24M", env=t), ExitCode.NO_SPACE,
            "above its quota of 20M")
    ok(galleonctl(d.address, "volume", "create", "two", "--size", "8M", env=t))
    refused(galleonctl(d.address, "volume", "create", "three", "--size", "1M", env=t), ExitCode.NO_SPACE,
            "tenant small has 2 volumes, its quota")
    ok(galleonctl(d.address, "snapshot", "create", "one@s", env=t))
    refused(galleonctl(d.address, "volume", "clone", "one@s", "copy", env=t), ExitCode.NO_SPACE,
            "tenant small has 2 volumes, its quota")
    assert names(d, "volume", "list") == ["one", "two"]
    usage = json.loads(ok(galleonctl(d.address, "tenant", "get", "small", "-o", "json")))
    assert (usage["volumes"], usage["used_bytes"]) == (2, str(16 * MiB))

    refused(galleonctl(d.address, "tenant", "delete", "small"), ExitCode.BUSY, "still has volumes (one, two)")
    for name in ("one", "two"):
        if name == "one":
            ok(galleonctl(d.address, "snapshot", "delete", "one@s", env=t))
        ok(galleonctl(d.address, "volume", "delete", name, env=t))
    refused(galleonctl(d.address, "tenant", "delete", "small"), ExitCode.BUSY, "still has tokens (small-ops)")
    ok(galleonctl(d.address, "token", "revoke", "small-ops"))
    ok(galleonctl(d.address, "tenant", "delete", "small"))
    assert names(d, "tenant", "list") == []
