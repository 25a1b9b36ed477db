"""galleond configuration: defaults < TOML file < ``GALLEONFS_*`` environment < flags.

Every setting has one name used everywhere: ``data_dir`` is ``data_dir = ...`` in the TOML
file, ``GALLEONFS_DATA_DIR`` in the environment and ``--data-dir`` on the command line.
``galleond --print-config`` shows the effective values and where each came from. An
unknown key in the file or a bad value anywhere is an error naming the setting.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .. import limits, names
from ..cluster.etcd import parse_url
from ..cluster.membership import ClusterConfig
from ..cluster.model import NODE, RACK, ZONE
from ..errors import InvalidArgument
from ..metrics.http import parse_listen
from ..rpc.address import parse_address
from ..units import parse_size
from ..workers.mounts import DEFAULT_MOUNT_ROOTS, check_roots

DEFAULT_CONFIG_FILE = "/etc/galleonfs/galleond.toml"
ENV_PREFIX = "GALLEONFS_"


def _listen(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [s for s in str(value).split(",") if s.strip()]
    if not items:
        raise InvalidArgument("listen needs at least one address")
    for item in items:
        parse_address(str(item))
    return [str(i).strip() for i in items]


def _positive_int(value: Any) -> int:
    # int() would take 2.5 as 2 and true as 1: a setting must mean what it says or be refused.
    if isinstance(value, bool | float):
        raise InvalidArgument(f"{value!r} is not a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{value!r} is not a whole number") from None
    if number < 1:
        raise InvalidArgument(f"{value!r} must be at least 1")
    return number


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidArgument(f"{value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{value!r} is not a number") from None


def _non_negative(value: Any) -> float:
    """A rate where 0 means "not set" (the QoS budget)."""
    number = _number(value)
    if not number >= 0 or number == float("inf"):
        raise InvalidArgument(f"{value!r} must be a number of at least 0")
    return number


def _ratio(value: Any) -> float:
    """How many times the data directory's capacity volumes may be provisioned for."""
    number = _number(value)
    if not 0 < number < float("inf"):
        raise InvalidArgument(f"{value!r} must be a number above 0 (1.0: no overcommit)")
    return number


def _metrics_listen(value: Any) -> str:
    """host:port of /metrics, /healthz and /readyz; port 0 picks a free port; "" is off."""
    text = str(value).strip()
    if text:
        parse_listen(text)
    return text


def _mode(value: Any) -> int:
    if not isinstance(value, str):
        # TOML has already turned 0o640 into 416 and 640 into 640: which one the user
        # wrote is lost, and any guess gives a wrong mode without a word.
        raise InvalidArgument(f"{value!r} is a number, which cannot say whether it was meant in "
                              f'octal; write the mode as a string, e.g. "0660"')
    try:
        mode = int(str(value), 8)
    except ValueError:
        raise InvalidArgument(f"{value!r} is not an octal file mode like 0660") from None
    if not 0 <= mode <= 0o777:
        raise InvalidArgument(f"{value!r} is not a file mode")
    return mode


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value).lower()
        if text not in allowed:
            raise InvalidArgument(f"{value!r} is not one of {', '.join(allowed)}")
        return text
    return check


def _path(value: Any) -> str:
    """A path, made absolute; empty means "not set" (the TLS files)."""
    text = str(value)
    if not text:
        return ""
    return os.path.abspath(os.path.expanduser(text))


def _audit_rotate_bytes(value: Any) -> int:
    """A size ("64M") at which audit.log is rotated; at least limits.audit_file_bytes_min."""
    size = value if isinstance(value, int) and not isinstance(value, bool) else parse_size(str(value))
    if size < limits.audit_file_bytes_min:
        raise InvalidArgument(f"{value!r} is too small: the audit log rotates at "
                              f"{limits.audit_file_bytes_min // 1024}K or more")
    return size


def _data_dir(value: Any) -> str:
    if not str(value):
        raise InvalidArgument("the data directory cannot be empty")
    return _path(value)


@dataclass
class NodeConfig:
    data_dir: str = "/var/lib/galleonfs"
    listen: list[str] = field(default_factory=lambda: ["unix:/run/galleonfs/galleond.sock"])
    socket_mode: int = 0o660
    log_level: str = "info"
    log_format: str = "json"
    rpc_threads: int = 16
    tls_cert: str = ""
    tls_key: str = ""
    metrics_listen: str = "127.0.0.1:9464"   # the usual node-exporter-style port; "" is off
    qos_node_iops: float = 0.0               # 0: unknown, guarantees are not enforced
    qos_node_throughput_mbps: float = 0.0
    # Volumes may be provisioned for this many times the data directory's capacity (2.0:
    # twice the disk; writes then meet a full disk before a full volume).
    overcommit_ratio: float = 1.0
    # The node's key manager for encrypted volumes: exactly one of these (none: this node
    # cannot create or mount encrypted volumes).
    key_file: str = ""                       # a 32-byte key-encryption key, created 0600
    key_passphrase_env: str = ""             # the variable holding the passphrase
    key_command: str = ""                    # "CMD wrap" / "CMD unwrap" (a KMS/HSM hook)
    # API access (rpc/auth.py): plaintext TCP listeners, loopback only; the CA whose client
    # certificates TLS listeners require (mTLS); the group whose members are operators on
    # the unix socket ("" for none: only root).
    insecure_listen: list[str] = field(default_factory=list)
    tls_client_ca: str = ""
    operator_group: str = "galleonfs"
    # Where volumes may be mounted (workers/mounts.py): a mount point must lie inside one.
    mount_roots: list[str] = field(default_factory=lambda: list(DEFAULT_MOUNT_ROOTS))
    audit_rotate_bytes: int = limits.audit_file_bytes_default   # audit.log -> audit.log.N past this
    # Cluster mode (cluster/, docs/design.md "Cluster mode"): "etcd=URL" turns it on; then
    # node_name and peer_listen are required. Empty: the single-node default, no etcd.
    cluster: str = ""
    node_name: str = ""
    peer_listen: str = ""                    # host:port other nodes dial: the peer channel (mTLS)
    # The peer channel's TLS (cluster/certs.py): this node's certificate (its name in a SAN),
    # its key, and the cluster CA every other node's certificate must be signed by.
    peer_cert: str = ""
    peer_key: str = ""
    peer_ca: str = ""
    zone: str = ""
    rack: str = ""
    sources: dict[str, str] = field(default_factory=dict)

    def render(self) -> str:
        """The effective configuration as TOML, each value with its source."""
        lines = ["# effective galleond configuration"]
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            if f.name == "socket_mode":
                text = f'"{value:04o}"'
            elif isinstance(value, list):
                text = "[" + ", ".join(f'"{v}"' for v in value) + "]"
            else:
                text = f'"{value}"' if isinstance(value, str) else str(value)
            lines.append(f"{f.name} = {text}  # from {self.sources.get(f.name, 'default')}")
        return "\n".join(lines)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "data_dir": _data_dir, "listen": _listen, "socket_mode": _mode,
    "log_level": _choice("debug", "info", "warning", "error"), "log_format": _choice("json", "text"),
    "rpc_threads": _positive_int, "tls_cert": _path, "tls_key": _path,
    "metrics_listen": _metrics_listen, "overcommit_ratio": _ratio,
    "qos_node_iops": _non_negative, "qos_node_throughput_mbps": _non_negative,
    "key_file": _path, "key_passphrase_env": str, "key_command": str,
    "insecure_listen": lambda v: _insecure_listen(v), "tls_client_ca": _path,
    "operator_group": lambda v: _group(v),
    "audit_rotate_bytes": _audit_rotate_bytes,
}


def _mount_roots(value: Any) -> list[str]:
    """A TOML list, or comma-separated in the environment (as ``listen``); may be empty."""
    items = value if isinstance(value, list) else [s.strip() for s in str(value).split(",") if s.strip()]
    return check_roots(str(i) for i in items)


_PARSERS["mount_roots"] = _mount_roots
_PARSERS.update(cluster=lambda v: _cluster(v), node_name=lambda v: _cluster_name(v, NODE),
                peer_listen=lambda v: _peer_listen(v), zone=lambda v: _cluster_name(v, ZONE),
                peer_cert=_path, peer_key=_path, peer_ca=_path,
                rack=lambda v: _cluster_name(v, RACK))


def _cluster(value: Any) -> str:
    """``etcd=URL``: the etcd client URL of the cluster; "" for the single-node default."""
    text = str(value).strip()
    if not text:
        return ""
    kind, sep, url = text.partition("=")
    if kind != "etcd" or not sep:
        raise InvalidArgument(f"{text[:200]!r} does not say where the cluster is: use etcd=http://HOST:PORT")
    parse_url(url)
    return f"etcd={url.strip()}"


def _cluster_name(value: Any, kind: names.Kind) -> str:
    text = str(value).strip()
    return names.check(text, kind) if text else ""


def _peer_listen(value: Any) -> str:
    text = str(value).strip()
    if text and parse_address(text).unix_path is not None:
        raise InvalidArgument(f"{text!r} is a unix socket; peers dial host:port")
    return text


def load(*, config_file: str | None, env: Mapping[str, str], flags: Mapping[str, Any]) -> NodeConfig:
    """Merge the four layers. ``config_file`` None means the default path, if it exists."""
    config = NodeConfig()
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    path = config_file or DEFAULT_CONFIG_FILE
    if config_file or os.path.exists(path):
        _apply(config, _read_toml(path), f"file {path}")
    _apply(config, {k[len(ENV_PREFIX):].lower(): v for k, v in env.items()
                    if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):].lower() in _PARSERS},
           "environment")
    _apply(config, {k: v for k, v in flags.items() if v is not None}, "flag")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise InvalidArgument("tls_cert and tls_key go together: set both or neither")
    check_access(config)
    check_cluster(config)
    return config


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise InvalidArgument(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_PARSERS))
    if unknown:
        raise InvalidArgument(f"config file {path}: unknown setting {unknown[0]!r}; known settings: "
                              f"{', '.join(sorted(_PARSERS))}")
    return data


def _apply(config: NodeConfig, values: Mapping[str, Any], source: str) -> None:
    for key, raw in values.items():
        try:
            value = _PARSERS[key](raw)
        except InvalidArgument as exc:
            where = f"{ENV_PREFIX}{key.upper()}" if source == "environment" else (
                f"--{key.replace('_', '-')}" if source == "flag" else f"{key} in {source}")
            raise InvalidArgument(f"bad value for {where}: {exc}") from None
        setattr(config, key, value)
        config.sources[key] = source


# --- API access ----------------------------------------------------------------------------------
def _insecure_listen(value: Any) -> list[str]:
    """Plaintext TCP listeners: host:port on a loopback address only."""
    items = value if isinstance(value, list) else [s for s in str(value).split(",") if s.strip()]
    out = []
    for item in items:
        address = parse_address(str(item))
        if address.unix_path is not None:
            raise InvalidArgument(f"{str(item).strip()!r} is a unix socket; put it in listen")
        host = str(address.host).strip("[]")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise InvalidArgument(f"refusing to listen without TLS on {address}: plaintext is only "
                                  f"allowed on loopback (127.0.0.1, ::1); for other addresses use "
                                  f"listen with tls_cert and tls_key")
        out.append(str(address))
    return out


def _group(value: Any) -> str:
    text = str(value).strip()
    if len(text) > 32 or not all(c.isalnum() or c in "._-" for c in text):
        raise InvalidArgument(f"{text[:64]!r} is not a group name")
    return text


def check_cluster(config: NodeConfig) -> None:
    """Cluster settings come together: etcd, a node name, a peer address and the peer
    channel's certificate, key and CA, or none."""
    if config.cluster:
        for setting in ("node_name", "peer_listen"):
            if not getattr(config, setting):
                flag = "--" + setting.replace("_", "-")
                raise InvalidArgument(f"cluster mode needs {flag} (setting {setting}): every node "
                                      f"is known by a unique name and a peer address")
        for setting in ("peer_cert", "peer_key", "peer_ca"):
            if not getattr(config, setting):
                flag = "--" + setting.replace("_", "-")
                raise InvalidArgument(f"cluster mode needs {flag} (setting {setting}): nodes talk "
                                      f"over mutual TLS only; make a CA and this node's certificate "
                                      f"with galleond cluster-ca init and galleond cluster-cert issue")
        return
    for setting in ("node_name", "peer_listen", "zone", "rack", "peer_cert", "peer_key", "peer_ca"):
        if getattr(config, setting):
            raise InvalidArgument(f"{setting} is a cluster setting: give --cluster etcd=URL too, or "
                                  f"leave it out for the single-node default")


def cluster_config(config: NodeConfig) -> ClusterConfig | None:
    if not config.cluster:
        return None
    return ClusterConfig(etcd_url=config.cluster.partition("=")[2], node_name=config.node_name,
                         peer_address=config.peer_listen, zone=config.zone, rack=config.rack)


def check_access(config: NodeConfig) -> None:
    """Settings that only make sense together: TCP in ``listen`` needs TLS."""
    tcp = [a for a in config.listen if parse_address(a).unix_path is None]
    if tcp and not config.tls_cert:
        raise InvalidArgument(f"listening on {tcp[0]} needs TLS: set tls_cert and tls_key (and "
                              f"tls_client_ca to require client certificates), or use "
                              f"--insecure-listen 127.0.0.1:PORT for a plaintext listener on loopback")
    if config.tls_client_ca and not config.tls_cert:
        raise InvalidArgument("tls_client_ca needs tls_cert and tls_key: client certificates are "
                              "checked by the TLS listener")
