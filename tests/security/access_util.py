"""Helpers of the access tests: galleonctl as another local user, certificates, daemons.

``galleonctl_as`` runs the real galleonctl as a real unprivileged user (its uid, gid and
groups from the start: the kernel records them at ``connect``, and galleond reads them
there). This venv's interpreter lives under /root (0700), which such a user cannot execute,
so the command runs under the system's python of the same minor version, with this venv's
site-packages (world-readable) added: the same galleonctl code and the same compiled grpcio.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from galleonfs.testing.daemon import RunningDaemon

SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
_RUN = ("import site, sys; site.addsitedir(sys.argv[1]); "
        "from galleonfs.cli.galleonctl import main; sys.exit(main(sys.argv[2:]))")


def galleonctl_as(user: object, address: str, *args: str, env: dict[str, str] | None = None,
                  groups: list[int] | None = None) -> subprocess.CompletedProcess[str]:
    """galleonctl ``args`` as ``user`` (a conftest ``LocalUser``) in ``groups`` (default:
    none but its own), with only ``env`` set."""
    assert os.access(SYSTEM_PYTHON, os.X_OK), f"{SYSTEM_PYTHON} is needed to run commands as other users"
    uid, gid, home = user.uid, user.gid, user.home            # type: ignore[attr-defined]
    clean = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8", **(env or {})}
    return subprocess.run([SYSTEM_PYTHON, "-c", _RUN, sysconfig.get_paths()["purelib"],
                           "--address", address, *args],
                          user=uid, group=gid, extra_groups=groups or [], cwd=home, env=clean,
                          capture_output=True, text=True, timeout=120, check=False)


def galleonctl(address: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """galleonctl as root (this process's user), with only ``env`` set (no GALLEONFS_* leaks in)."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root", **(env or {})}
    return subprocess.run([sys.executable, "-m", "galleonfs.cli.galleonctl", "--address", address, *args],
                          capture_output=True, text=True, timeout=120, env=clean, check=False)


def open_base() -> Path:
    """A directory other users can traverse (pytest's tmp_path is under a 0700 one)."""
    base = Path(tempfile.mkdtemp(prefix="gfs-auth-", dir="/tmp"))
    base.chmod(0o755)
    return base


class Daemons:
    """Daemons a test starts; each is stopped and checked (``node.util.finish``) at the end."""

    def __init__(self) -> None:
        self.started: list[RunningDaemon] = []
        self.bases: list[Path] = []

    def start(self, env: dict[str, str] | None = None, args: list[str] | None = None) -> RunningDaemon:
        base = open_base()
        self.bases.append(base)
        daemon = RunningDaemon(base, env=env, args=args)
        self.started.append(daemon)
        return daemon.start()

    def finish(self, check_logs: bool) -> None:
        from node.util import finish

        try:
            for daemon in self.started:
                finish(daemon, check_logs=check_logs)
        finally:
            for base in self.bases:
                shutil.rmtree(base, ignore_errors=True)


# --- certificates ---------------------------------------------------------------------------------
@dataclass
class Issued:
    cert: Path
    key: Path


class Authority:
    """A test CA that issues server and client certificates (ECDSA P-256) into ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = directory / f"{name}-ca.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, file_name: str, *, cn: str, ou: str | None = None, o: str | None = None,
              server: bool = False, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if ou is not None:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
        if o is not None:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
        now = datetime.datetime.now(datetime.UTC)
        start, end = ((now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired
                      else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)))
        builder = (x509.CertificateBuilder().subject_name(x509.Name(attributes))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end))
        if server:
            import ipaddress

            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{file_name}.crt", self.directory / f"{file_name}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        issued.key.chmod(0o600)
        return issued
