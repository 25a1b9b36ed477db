"""Cluster settings of galleond (node/config.py): flags, environment and file agree, and a
bad value is one line naming the setting. No daemon runs: ``--print-config`` and ``load``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from galleonfs.errors import InvalidArgument
from galleonfs.node import config

PEER_TLS = {"peer_cert": "/etc/g/node.crt", "peer_key": "/etc/g/node.key", "peer_ca": "/etc/g/ca.crt"}


def _load(env: dict[str, str] | None = None, **flags: str) -> config.NodeConfig:
    if "cluster" in flags:
        flags = {**PEER_TLS, **flags}
    return config.load(config_file="/dev/null", env=env or {}, flags=flags)


def test_print_config_shows_cluster_settings_and_their_source() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "galleonfs.node.daemon", "--config", "/dev/null", "--print-config",
         "--cluster", "etcd=http://127.0.0.1:2379", "--node-name", "n1", "--peer-listen",
         "127.0.0.1:7101", "--zone", "a", "--peer-cert", "/etc/g/node.crt", "--peer-key",
         "/etc/g/node.key", "--peer-ca", "/etc/g/ca.crt"],
        capture_output=True, text=True, timeout=60, env={"GALLEONFS_RACK": "r7", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 'cluster = "etcd=http://127.0.0.1:2379"  # from flag' in lines
    assert 'node_name = "n1"  # from flag' in lines
    assert 'peer_listen = "127.0.0.1:7101"  # from flag' in lines
    assert 'zone = "a"  # from flag' in lines
    assert 'rack = "r7"  # from environment' in lines
    assert 'peer_cert = "/etc/g/node.crt"  # from flag' in lines
    assert 'peer_ca = "/etc/g/ca.crt"  # from flag' in lines


def test_cluster_config_is_built_from_the_settings() -> None:
    c = _load(cluster="etcd=https://etcd.example:2379", node_name="n2", peer_listen="[::1]:7102")
    cc = config.cluster_config(c)
    assert cc is not None and (cc.etcd_url, cc.node_name, cc.peer_address, cc.zone) == (
        "https://etcd.example:2379", "n2", "[::1]:7102", "")
    assert config.cluster_config(_load()) is None          # the single-node default


@pytest.mark.parametrize(("flags", "message"), [
    ({"cluster": "etcd=http://h:1", "node_name": "N1", "peer_listen": "h:1"},
     "bad value for --node-name: invalid node name 'N1': use at most 63 lowercase letters"),
    ({"cluster": "etcd=http://h:1", "node_name": "n1", "peer_listen": "unix:/run/x.sock"},
     "bad value for --peer-listen: 'unix:/run/x.sock' is a unix socket; peers dial host:port"),
    ({"cluster": "etcd=http://h:1", "node_name": "n1", "peer_listen": "nohost"},
     "bad value for --peer-listen: invalid address 'nohost': use unix:/path/to.sock or host:port"),
    ({"cluster": "etcd=http://h:1", "node_name": "n1"},
     "cluster mode needs --peer-listen (setting peer_listen)"),
    ({"cluster": "etcd=h:1", "node_name": "n1", "peer_listen": "h:1"},
     "bad value for --cluster: invalid etcd URL 'h:1': use http://HOST:PORT or https://HOST:PORT"),
    ({"cluster": "etcd=http://h:1", "node_name": "n1", "peer_listen": "h:1", "zone": "eu west"},
     "bad value for --zone: invalid zone name 'eu west'"),
    ({"rack": "r1"}, "rack is a cluster setting: give --cluster etcd=URL too"),
    ({"cluster": "etcd=http://h:1", "node_name": "n1", "peer_listen": "h:1", "peer_ca": ""},
     "cluster mode needs --peer-ca (setting peer_ca): nodes talk over mutual TLS only; make a CA "
     "and this node's certificate with galleond cluster-ca init and galleond cluster-cert issue"),
    ({"peer_cert": "/x"}, "peer_cert is a cluster setting: give --cluster etcd=URL too"),
])
def test_bad_cluster_settings(flags: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _load(**flags)
    assert str(caught.value).startswith(message), str(caught.value)
