"""galleond's settings and start-up refusals; galleonctl's help, completion and no-daemon error.

Settings come from defaults < TOML file < GALLEONFS_* environment < flags, and
``--print-config`` shows each effective value with its source. A bad setting, a second
daemon on the same data directory or socket: one line, a stable exit code, no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from galleonfs.testing.daemon import RunningDaemon

from .util import ctl_ok, user_error

REPO = Path(__file__).resolve().parents[2]


def galleond(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GALLEONFS_")}
    return subprocess.run([sys.executable, "-m", "galleonfs.node.daemon", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, timeout=timeout_s)


def galleonctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GALLEONFS_")}
    return subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonctl", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, timeout=60)


def printed(done: subprocess.CompletedProcess[str]) -> tuple[dict[str, object], dict[str, str]]:
    """``--print-config`` output: it is TOML; each line's comment names the value's source."""
    assert done.returncode == 0, done.stderr
    values = tomllib.loads(done.stdout)
    sources = {}
    for line in done.stdout.splitlines():
        if "  # from " in line:
            sources[line.split(" = ")[0]] = line.split("  # from ", 1)[1]
    assert set(sources) == set(values)
    return values, sources


def test_print_config_precedence(tmp_path: Path) -> None:
    config = tmp_path / "galleond.toml"
    config.write_text(f'data_dir = "{tmp_path}/from-file"\nlog_level = "debug"\nrpc_threads = 4\n'
                      f'listen = ["unix:{tmp_path}/file.sock"]\ninsecure_listen = ["127.0.0.1:7443"]\n')
    env = {"GALLEONFS_LOG_LEVEL": "warning", "GALLEONFS_DATA_DIR": f"{tmp_path}/from-env",
           "GALLEONFS_ADDRESS": "unix:/not/a/daemon/setting.sock"}

    values, sources = printed(galleond("--config", str(config), "--print-config"))
    assert values["data_dir"] == f"{tmp_path}/from-file" and sources["data_dir"] == f"file {config}"
    assert values["listen"] == [f"unix:{tmp_path}/file.sock"]
    assert values["insecure_listen"] == ["127.0.0.1:7443"]
    assert values["rpc_threads"] == 4 and values["log_level"] == "debug"
    assert values["socket_mode"] == "0660" and sources["socket_mode"] == "default"
    assert values["log_format"] == "json" and sources["log_format"] == "default"

    values, sources = printed(galleond("--config", str(config), "--print-config", env=env))
    assert (values["log_level"], sources["log_level"]) == ("warning", "environment")
    assert (values["data_dir"], sources["data_dir"]) == (f"{tmp_path}/from-env", "environment")
    assert (values["rpc_threads"], sources["rpc_threads"]) == (4, f"file {config}")

    values, sources = printed(galleond("--config", str(config), "--print-config", "--log-level", "error",
                                       "--data-dir", "relative/dir", "--log-format", "text", env=env))
    assert (values["log_level"], sources["log_level"]) == ("error", "flag")
    assert (values["log_format"], sources["log_format"]) == ("text", "flag")
    assert (values["data_dir"], sources["data_dir"]) == (os.path.abspath("relative/dir"), "flag")
    assert (values["rpc_threads"], sources["rpc_threads"]) == (4, f"file {config}")

    # GALLEONFS_CONFIG names the file when --config does not
    values, sources = printed(galleond("--print-config", env={"GALLEONFS_CONFIG": str(config)}))
    assert values["rpc_threads"] == 4 and sources["rpc_threads"] == f"file {config}"


def test_shipped_example_config_is_valid() -> None:
    values, sources = printed(galleond("--config", str(REPO / "deploy" / "galleond.toml"), "--print-config"))
    assert values["socket_mode"] == "0660" and sources["socket_mode"].startswith("file ")
    assert values["listen"] == ["unix:/run/galleonfs/galleond.sock"]


BAD_FILES = [
    ('colour = "blue"\n', ["unknown setting 'colour'", "known settings: audit_rotate_bytes, cluster, data_dir"]),
    ("log_level = \n", ["is not valid TOML"]),
    ('log_level = "loud"\n', ["log_level", "'loud' is not one of debug, info, warning, error"]),
    ("rpc_threads = 0\n", ["rpc_threads", "must be at least 1"]),
    ("rpc_threads = 2.5\n", ["rpc_threads", "not a whole number"]),
    ("rpc_threads = true\n", ["rpc_threads", "not a whole number"]),
    ('socket_mode = "rw-rw----"\n', ["socket_mode", "octal file mode"]),
    ("socket_mode = 0o640\n", ["socket_mode", "416", 'as a string, e.g. "0660"']),
    ("socket_mode = 660\n", ["socket_mode", 'as a string']),
    ('listen = ["localhost"]\n', ["listen", "invalid address 'localhost'"]),
    ("listen = []\n", ["listen", "at least one address"]),
    ('data_dir = ""\n', ["data_dir", "empty"]),
    ('tls_cert = "/etc/x.crt"\n', ["tls_cert and tls_key go together"]),
    ('listen = ["0.0.0.0:7443"]\n', ["listening on 0.0.0.0:7443 needs TLS", "--insecure-listen"]),
    ('insecure_listen = ["10.0.0.5:7000"]\n', ["insecure_listen", "plaintext is only allowed on loopback"]),
    ('insecure_listen = ["unix:/x.sock"]\n', ["insecure_listen", "is a unix socket"]),
    ('tls_client_ca = "/etc/ca.crt"\n', ["tls_client_ca needs tls_cert and tls_key"]),
    ('operator_group = "a b"\n', ["operator_group", "is not a group name"]),
]


@pytest.mark.parametrize(("text", "phrases"), BAD_FILES, ids=[t.strip() for t, _ in BAD_FILES])
def test_bad_config_file(tmp_path: Path, text: str, phrases: list[str]) -> None:
    config = tmp_path / "galleond.toml"
    config.write_text(text)
    for extra in (["--print-config"], ["--data-dir", str(tmp_path / "data")]):
        done = galleond("--config", str(config), *extra)
        user_error(done, 2, *phrases, prog="galleond")
    assert not (tmp_path / "data").exists()       # refused before touching anything


@pytest.mark.parametrize(("name", "value", "phrase"), [
    ("GALLEONFS_RPC_THREADS", "many", "bad value for GALLEONFS_RPC_THREADS: 'many' is not a whole number"),
    ("GALLEONFS_LISTEN", "tcp://x", "bad value for GALLEONFS_LISTEN"),
    ("GALLEONFS_SOCKET_MODE", "999", "bad value for GALLEONFS_SOCKET_MODE"),
])
def test_bad_environment(name: str, value: str, phrase: str) -> None:
    user_error(galleond("--config", os.devnull, "--print-config", env={name: value}), 2, phrase,
               prog="galleond")


def test_bad_flags() -> None:
    user_error(galleond("--config", os.devnull, "--print-config", "--listen", "unix:relative.sock"), 2,
               "bad value for --listen", "absolute path", prog="galleond")
    user_error(galleond("--config", "/nonexistent/galleond.toml", "--print-config"), 2,
               "config file /nonexistent/galleond.toml does not exist", prog="galleond")
    done = galleond("--log-level", "loud")
    assert done.returncode == 2 and "invalid choice: 'loud'" in done.stderr
    assert "Traceback" not in done.stderr


def test_second_daemon_refused(daemon: RunningDaemon, tmp_path: Path) -> None:
    ctl_ok(daemon, "volume", "create", "first", "--size", "8M")
    same_dir = galleond("--data-dir", str(daemon.data_dir), "--listen", f"unix:{tmp_path}/other.sock",
                        "--config", os.devnull, "--log-format", "text")
    user_error(same_dir, 5, f"another galleond (pid {daemon.pid}) already uses the data directory "
                            f"{daemon.data_dir}", prog="galleond")
    same_socket = galleond("--data-dir", str(tmp_path / "other-data"), "--listen", daemon.address,
                           "--config", os.devnull, "--log-format", "text")
    assert same_socket.returncode == 5, same_socket.stderr
    assert "Traceback" not in same_socket.stderr
    assert same_socket.stderr.splitlines()[-1] == (
        f"galleond: error: another daemon already listens on {daemon.socket}")
    # the first daemon never noticed
    daemon.wait_serving(timeout_s=5)
    assert "first" in ctl_ok(daemon, "volume", "list")


def test_galleonctl_without_daemon(tmp_path: Path) -> None:
    address = f"unix:{tmp_path}/galleond.sock"
    for args in (["volume", "list"], ["node", "status", "-o", "json"], ["storage-class", "list"]):
        message = user_error(galleonctl("--address", address, *args), 9, f"cannot reach galleond at {address}")
        assert "is it running?" in message and "GALLEONFS_ADDRESS" in message
    # the address can come from the environment too
    user_error(galleonctl("volume", "list", env={"GALLEONFS_ADDRESS": address}), 9, address)


def test_completion_and_help() -> None:
    done = galleonctl("completion", "bash")
    assert done.returncode == 0 and done.stderr == ""
    assert "complete " in done.stdout and "galleonctl" in done.stdout
    for word in ("volume", "storage-class", "create", "mount", "expand", "--access-mode"):
        assert word in done.stdout, word
    check = subprocess.run(["bash", "-n"], input=done.stdout, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    done = galleonctl("completion", "zsh")
    assert done.returncode == 0 and "#compdef galleonctl" in done.stdout

    helps = [[], ["volume"], ["storage-class"], ["node"], ["completion"],
             *[["volume", v] for v in ("create", "list", "get", "stats", "delete", "expand", "mount", "unmount")],
             *[["storage-class", v] for v in ("create", "list", "get", "delete")], ["node", "status"]]
    # all at once: twenty interpreters one after the other would take seconds
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda args: galleonctl(*args, "--help"), helps))
    for args, done in zip(helps, results, strict=True):
        assert done.returncode == 0, (args, done.stderr)
        assert done.stdout.startswith("usage: galleonctl"), args
    top = galleonctl("--help").stdout
    assert "exit codes:" in top and "9 unavailable" in top
    done = galleonctl("volume")
    assert done.returncode == 2 and "Traceback" not in done.stderr
