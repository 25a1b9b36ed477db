"""The cluster's certificates: a CA, one certificate per node, and what a node's is checked for.

Node-to-node traffic is mutual TLS only (DESIGN §4). The cluster has one CA; each node has a
certificate the CA signed whose identity is the node's name: the subject's CN and a DNS
SAN both say it (the SAN is what TLS clients check, the CN what a log shows), and the peer
host (an IP or DNS SAN) is there too, for tools that dial the address. ECDSA P-256 with
SHA-256: small, fast handshakes, and what every TLS stack speaks.

``init_ca`` and ``issue`` are what ``galleond cluster-ca`` uses and what the tests use to
make their clusters; operators may bring their own PKI instead (any CA, any key type gRPC's
TLS accepts), as long as each node certificate names its node in a DNS SAN or the CN.
Private keys are written 0600 (created with that mode: never readable by others, not
even for a moment).

What it must not do: import grpc (the peer server and client are ``rpc/peer.py``'s), or
trust a certificate it did not check.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import names
from ..errors import AlreadyExists, InvalidArgument
from . import limits
from .model import NODE

CA_CERT, CA_KEY = "ca.crt", "ca.key"
_HOSTNAME = re.compile(r"\A[A-Za-z0-9](?:[-A-Za-z0-9.]*[A-Za-z0-9])?\Z")
NODE_CERT, NODE_KEY = "node.crt", "node.key"


@dataclass(frozen=True)
class PeerTls:
    """The PEM bytes a node needs for the peer channel: its certificate, its key, the CA."""

    cert: bytes
    key: bytes
    ca: bytes


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (never an existing file: a CA key is not overwritten)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise AlreadyExists(f"{path} exists already; pick another directory or remove it first") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def init_ca(directory: str | Path, *, name: str = "galleonfs cluster CA",
            days: int = limits.ca_cert_days) -> Path:
    """Create ``ca.crt`` and ``ca.key`` (0600) in ``directory``; return the certificate's path."""
    out = Path(directory)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(out / CA_KEY, _key_pem(key), 0o600)
    _write(out / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return out / CA_CERT


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read the cluster CA in {ca_dir} ({exc}); create one with "
                              f"galleond cluster-ca init DIR") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"the CA key in {ca_dir} is not an ECDSA key; use a CA made by "
                              f"galleond cluster-ca init")
    return cert, key


def issue(ca_dir: str | Path, node: str, out_dir: str | Path, *, hosts: tuple[str, ...] = (),
          days: int = limits.node_cert_days) -> Path:
    """A certificate for ``node`` signed by the CA in ``ca_dir``: ``node.crt``, ``node.key``
    (0600) and a copy of ``ca.crt`` in ``out_dir``; return the certificate's path. ``hosts``
    (IP addresses or DNS names the node is reached at) become SANs beside the node name."""
    names.check(node, NODE)
    ca_cert, ca_key = _load_ca(Path(ca_dir))
    sans: list[x509.GeneralName] = [x509.DNSName(node)]
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not _HOSTNAME.match(host) or len(host) > 253:
                raise InvalidArgument(f"{names.quote(host)} is neither an IP address nor a host "
                                      f"name; give the address other nodes dial this one at") from None
            sans.append(x509.DNSName(host.lower()))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            # Both ends of a peer call present this certificate: it serves and it dials.
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = Path(out_dir)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(out / NODE_KEY, _key_pem(key), 0o600)
    _write(out / NODE_CERT, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(out / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return out / NODE_CERT


def read_peer_tls(cert_file: str, key_file: str, ca_file: str) -> PeerTls:
    """The three files, read and parsed at start: a missing or unreadable one stops the
    start with one line naming it and the setting."""
    data: dict[str, bytes] = {}
    for setting, path in (("peer_cert", cert_file), ("peer_key", key_file), ("peer_ca", ca_file)):
        flag = "--" + setting.replace("_", "-")
        try:
            with open(path, "rb") as f:
                data[setting] = f.read(limits.pem_file_bytes_max + 1)
        except OSError as exc:
            raise InvalidArgument(f"cannot read {setting} {path} ({exc.strerror}): cluster mode needs "
                                  f"the node's certificate, its key and the cluster CA ({flag})") from None
        if len(data[setting]) > limits.pem_file_bytes_max or b"-----BEGIN" not in data[setting]:
            raise InvalidArgument(f"{setting} {path} is not a PEM file ({flag})")
    try:
        x509.load_pem_x509_certificate(data["peer_cert"])
        x509.load_pem_x509_certificates(data["peer_ca"])
        serialization.load_pem_private_key(data["peer_key"], password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"the peer certificate, key or CA cannot be parsed ({exc}); check "
                              f"--peer-cert, --peer-key and --peer-ca") from None
    return PeerTls(data["peer_cert"], data["peer_key"], data["peer_ca"])


def node_names(pem: bytes) -> tuple[str, ...]:
    """The node names a (verified) peer certificate claims: its DNS SANs that are node names,
    else its CN. The TLS handshake has checked it was signed by the cluster CA."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(d) for d in sans.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    candidates = dns or [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(c for c in candidates if NODE.pattern.match(c) and len(c) <= NODE.max_chars)


def check_node_certificate(tls: PeerTls, node: str) -> None:
    """At start: this node's certificate must name it and be valid now, or every peer would
    refuse it later with a vaguer message; one line says which and what to do."""
    cert = x509.load_pem_x509_certificate(tls.cert)
    claimed = node_names(tls.cert)
    if node not in claimed:
        shown = ", ".join(names.quote(n) for n in claimed[:3]) or "no node name"
        raise InvalidArgument(f"the peer certificate (--peer-cert) names {shown}, not this node "
                              f"{node}; issue one for it: galleond cluster-cert issue --node {node}")
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InvalidArgument(f"the peer certificate (--peer-cert) of node {node} is valid from "
                              f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                              f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now; issue a new one")
