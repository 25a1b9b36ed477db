"""Key managers: where the key-encryption key (KEK) lives, and how data keys are wrapped.

Each encrypted volume family has a random 256-bit data key. On disk it exists only
wrapped (encrypted) by the node's KEK, in the volume's ``KEY`` file. Three sources:

* ``KeyFile``: 32 random bytes in a file (created with mode 0600 if missing);
* ``Passphrase``: a KEK derived from a passphrase with scrypt (memory-hard: n=2**15,
  r=8, i.e. 32 MiB per derivation), a fresh salt per wrapped key;
* ``Command``: an external program that wraps and unwraps (the hook for a KMS or an HSM):
  ``CMD wrap`` and ``CMD unwrap`` read the key on stdin and write the result on stdout,
  both base64. The command line may hold a token: it travels to other processes in the
  environment (``KEY_COMMAND_ENV``, readable only by the same user), never in argv (which
  every local user can read), and messages name only its program. What it prints on stderr
  when it fails goes to the log of the process that ran it (bounded), never into an error
  message (which reaches API callers and the audit log).

Wrapped key format (before base64)::

    "GKW1" | kind u8 | kek id (8 bytes) | salt (16, passphrase only) | nonce (12) | AES-GCM(key)

The KEK id (the first 8 bytes of SHA-256 of the KEK) lets an unwrap with the wrong KEK say
so in one sentence instead of failing an authentication tag.

What it must not do: keep a plaintext KEK or data key anywhere but in this process's memory,
or put the key command's arguments or output in argv or a message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import subprocess
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import InvalidArgument, KeyUnavailable, PermissionDenied, WrongKey

log = logging.getLogger(__name__)

MAGIC = b"GKW1"
KIND_KEY_FILE = 1
KIND_PASSPHRASE = 2
KIND_COMMAND = 3
_AAD = b"galleonfs data key"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
COMMAND_TIMEOUT_S = 30.0
# What a failing key command's stderr may add to the log: its tail, enough for a KMS's
# error line, not enough to flood the log.
COMMAND_STDERR_BYTES_MAX = 512
# The variable a child process finds the key command in (``KeySpec.environment``).
KEY_COMMAND_ENV = "GALLEONFS_KEY_COMMAND"


PENDING = ".new"        # a key file's successor while a rotation runs
PREVIOUS = ".old"       # the key file a rotation replaced

def kek_id(kek: bytes) -> bytes:
    return hashlib.sha256(kek).digest()[:8]


class KeyManager:
    """Wraps and unwraps data keys; ``source`` names it in messages."""

    source = "no key manager"

    def wrap(self, data_key: bytes) -> bytes:
        raise NotImplementedError

    def unwrap(self, blob: bytes) -> bytes:
        raise NotImplementedError


def _seal(kind: int, kek: bytes, data_key: bytes, salt: bytes = b"") -> bytes:
    nonce = os.urandom(12)
    return MAGIC + bytes((kind,)) + kek_id(kek) + salt + nonce + AESGCM(kek).encrypt(nonce, data_key, _AAD)


def _open(kind: int, kek: bytes, blob: bytes, source: str, salt_len: int = 0) -> bytes:
    head = len(MAGIC) + 1 + 8 + salt_len
    if len(blob) < head + 12 + 16 or blob[:4] != MAGIC:
        raise KeyUnavailable(f"the volume's wrapped key is damaged (not a GalleonFS wrapped key); source {source}")
    if blob[4] != kind:
        raise WrongKey(f"the volume's key was wrapped by another kind of key source than {source}")
    if blob[5:13] != kek_id(kek):
        raise WrongKey(f"the volume's key was wrapped by a different key than {source}")
    nonce = blob[head:head + 12]
    try:
        return AESGCM(kek).decrypt(nonce, blob[head + 12:], _AAD)
    except InvalidTag:
        raise WrongKey(f"the volume's key does not unwrap with {source} (wrong key, or the key file was altered)") from None


class KeyFile(KeyManager):
    def __init__(self, path: str, *, create: bool = True) -> None:
        self.path = path
        self.source = f"key file {path}"
        self._kek = self._load(create)
        # During a rotation the next KEK waits in PATH.new and some volumes are already
        # wrapped under it: both open (the wrapped key names its KEK by id).
        self._keks = {kek_id(self._kek): self._kek}
        if os.path.exists(path + PENDING):
            pending = KeyFile(path + PENDING, create=False)._kek
            self._keks[kek_id(pending)] = pending

    def _load(self, create: bool) -> bytes:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not create:
                # Never made up here: a mistyped path would get a new random key, and
                # whatever it opened would not unwrap (or mkfs'd volumes could be lost).
                raise KeyUnavailable(f"the {self.source} does not exist; check the path (only "
                                     f"`galleonfs mkfs --encrypt` creates a key file)") from None
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(32))
                os.fsync(fd)
            finally:
                os.close(fd)
            st = os.stat(self.path)
        if st.st_mode & 0o077:
            raise PermissionDenied(f"the {self.source} is readable by others (mode {st.st_mode & 0o777:o}); "
                                   f"chmod 600 it")
        with open(self.path, "rb") as f:
            kek = f.read()
        if len(kek) != 32:
            raise KeyUnavailable(f"the {self.source} must hold exactly 32 bytes, not {len(kek)}")
        return kek

    def wrap(self, data_key: bytes) -> bytes:
        return _seal(KIND_KEY_FILE, self._kek, data_key)

    def unwrap(self, blob: bytes) -> bytes:
        return _open(KIND_KEY_FILE, self._keks.get(bytes(blob[5:13]), self._kek), blob, self.source)


class Passphrase(KeyManager):
    def __init__(self, passphrase: str, *, where: str = "the passphrase") -> None:
        if len(passphrase) < 8:
            raise InvalidArgument("the passphrase is too short: use at least 8 characters")
        self._passphrase = passphrase.encode()
        self.source = where

    def _kek(self, salt: bytes) -> bytes:
        return hashlib.scrypt(self._passphrase, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                              maxmem=128 * 1024 * 1024, dklen=32)

    def wrap(self, data_key: bytes) -> bytes:
        salt = os.urandom(16)
        return _seal(KIND_PASSPHRASE, self._kek(salt), data_key, salt)

    def unwrap(self, blob: bytes) -> bytes:
        salt = blob[13:29]
        return _open(KIND_PASSPHRASE, self._kek(salt), blob, self.source, salt_len=16)


class Command(KeyManager):
    """``CMD wrap`` / ``CMD unwrap``: base64 in on stdin, base64 out on stdout."""

    def __init__(self, command: str) -> None:
        self.command = command
        words = command.split()
        # The program only: the arguments may be a token.
        self.source = f"key command {words[0] if words else '(empty)'}"

    def _run(self, verb: str, data: bytes) -> bytes:
        try:
            done = subprocess.run([*self.command.split(), verb], input=base64.b64encode(data),
                                  capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise KeyUnavailable(f"the {self.source} did not answer within {COMMAND_TIMEOUT_S:.0f} s") from None
        except OSError as exc:
            raise KeyUnavailable(f"the {self.source} could not run: {exc.strerror}") from None
        if done.returncode != 0:
            tail = done.stderr[-COMMAND_STDERR_BYTES_MAX:].decode(errors="replace").strip()
            log.error("the %s failed to %s a key (exit %d); its stderr: %s", self.source, verb,
                      done.returncode, " | ".join(tail.splitlines()) or "(none)")
            raise KeyUnavailable(f"the {self.source} failed to {verb} the volume's key (exit "
                                 f"{done.returncode}); see the node log")
        try:
            return base64.b64decode(done.stdout.strip(), validate=True)
        except ValueError:
            raise KeyUnavailable(f"the {self.source} did not answer in base64") from None

    def wrap(self, data_key: bytes) -> bytes:
        return MAGIC + bytes((KIND_COMMAND,)) + self._run("wrap", data_key)

    def unwrap(self, blob: bytes) -> bytes:
        if blob[:4] != MAGIC or blob[4] != KIND_COMMAND:
            raise WrongKey(f"the volume's key was not wrapped by a key command (source {self.source})")
        key = self._run("unwrap", blob[5:])
        if len(key) != 32:
            raise WrongKey(f"the {self.source} unwrapped a key of {len(key)} bytes, not 32")
        return key


@dataclass(frozen=True)
class KeySpec:
    """How a process finds its key manager (passed from the daemon to mount workers)."""

    key_file: str = ""
    passphrase_env: str = ""
    command: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.key_file or self.passphrase_env or self.command)

    def manager(self, *, create: bool = True) -> KeyManager:
        """The key manager. ``create=False`` wherever a key file must already exist (a
        mount, fsck, rekey, an offline operation): there a missing file is an error, never
        a new random key that nothing was wrapped with. Only mkfs and galleond's own
        configured key file (first encrypted create) make one."""
        chosen = [x for x in (self.key_file, self.passphrase_env, self.command) if x]
        if len(chosen) != 1:
            raise InvalidArgument("configure exactly one key source: a key file, a passphrase "
                                  "environment variable, or a key command")
        if self.key_file:
            return KeyFile(self.key_file, create=create)
        if self.passphrase_env:
            value = os.environ.get(self.passphrase_env)
            if value is None:
                raise KeyUnavailable(f"the passphrase variable {self.passphrase_env} is not set")
            return Passphrase(value, where=f"the passphrase in ${self.passphrase_env}")
        return Command(self.command)

    def arguments(self) -> list[str]:
        """The options that hand this key source to a child; with ``environment()`` in its
        environment (the key command is there, not in argv)."""
        if self.key_file:
            return ["--key-file", self.key_file]
        if self.passphrase_env:
            return ["--key-passphrase-env", self.passphrase_env]
        if self.command:
            return ["--key-command-env", KEY_COMMAND_ENV]
        return []

    def environment(self) -> dict[str, str]:
        return {KEY_COMMAND_ENV: self.command} if self.command else {}


def new_data_key() -> bytes:
    return secrets.token_bytes(32)


def add_key_arguments(parser: Any) -> None:
    """The key-source options every tool shares (argparse)."""
    group = parser.add_argument_group("encryption key source (for encrypted volumes; pick one)")
    group.add_argument("--key-file", metavar="PATH",
                       help="a 32-byte key-encryption key file, created (mode 0600) if missing")
    group.add_argument("--key-passphrase-env", metavar="VAR",
                       help="take the passphrase from this environment variable")
    group.add_argument("--key-command", metavar="CMD",
                       help="'CMD wrap' / 'CMD unwrap' wrap and unwrap keys (KMS/HSM hook); "
                            "visible to local users in the process list: prefer --key-command-env")
    group.add_argument("--key-command-env", metavar="VAR",
                       help="take the key command from this environment variable")


def key_spec(args: Any) -> KeySpec:
    command = args.key_command or ""
    variable = getattr(args, "key_command_env", None)
    if variable:
        if command:
            raise InvalidArgument("give --key-command or --key-command-env, not both")
        command = os.environ.get(variable, "")
        if not command:
            raise KeyUnavailable(f"the key command variable {variable} is not set")
    return KeySpec(key_file=os.path.abspath(args.key_file) if args.key_file else "",
                   passphrase_env=args.key_passphrase_env or "", command=command)
