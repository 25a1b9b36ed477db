"""Names that cross a trust boundary, and how messages quote what a caller sent.

One validator for every kind of name a caller can give GalleonFS: volumes, snapshots,
storage classes, snapshot and QoS policies, label keys and values, principals, tenants and
tokens, and ``VOLUME@SNAPSHOT`` references. The model, the engine, the RPC edge and the
command-line tools all call it, so one rule holds everywhere. Every pattern is ASCII only and
anchored with ``\\A`` and ``\\Z``: ``$`` also matches before a trailing newline, which let
``"base\\n"`` exist beside ``base`` (look-alike volumes, log lines split in two). Lengths are
bounded (``limits``), so no control character, NUL, ``/``, ``.`` or ``..`` ever passes as a
name.

``quote`` is how every message shows a value it refuses: at most ``limits.quote_chars_max``
characters of it, escaped onto one line. ``one_line`` and ``bounded`` are the backstops for
whole messages (the gRPC status, the command-line tools' error line).

What it must not do: import anything of ours but ``errors`` and ``limits`` (it is floor: every
layer uses it), or build a host path from a name (host paths are built from ids only,
DESIGN §7).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from . import limits
from .errors import InvalidArgument

_DNS_LABEL_RULE = (f"use at most {limits.dns_label_max_chars} lowercase letters, digits and '-', "
                   f"starting and ending with a letter or digit (a DNS label)")


@dataclass(frozen=True)
class Kind:
    """One kind of name: what messages call it, its pattern, its bound, its rule in words."""

    what: str
    pattern: re.Pattern[str]
    max_chars: int
    rule: str


def _dns_label(what: str) -> Kind:
    return Kind(what, re.compile(r"\A[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z"),
                limits.dns_label_max_chars, _DNS_LABEL_RULE)


VOLUME = _dns_label("volume")
STORAGE_CLASS = _dns_label("storage class")
SNAPSHOT_POLICY = _dns_label("snapshot policy")
QOS_POLICY = _dns_label("QoS policy")
BACKUP_TARGET = _dns_label("backup target")
BACKUP_POLICY = _dns_label("backup policy")
# For authentication and tenancy: a tenant and a token's name are DNS labels (they may name
# Kubernetes namespaces); a principal may look like an account, an e-mail address or a
# certificate's common name.
TENANT = _dns_label("tenant")
TOKEN = _dns_label("token")
PRINCIPAL = Kind(
    "principal", re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.@:-]*\Z"), limits.principal_name_max_chars,
    f"use up to {limits.principal_name_max_chars} letters, digits, '_', '.', '@', ':' and '-', "
    f"starting with a letter, digit or '_'")
# A snapshot's name becomes a directory name under MOUNTPOINT/.snapshots/: the first
# character can be neither '.' ('.' and '..') nor '-' (an option to tools); '/' never passes.
SNAPSHOT = Kind(
    "snapshot", re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.:-]*\Z"), limits.snapshot_name_max_chars,
    f"use up to {limits.snapshot_name_max_chars} letters, digits, '_', '.', ':' and '-', "
    f"not starting with '.', '-' or ':'")

_LABEL_PREFIX = re.compile(r"\A[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?\Z")
_LABEL_NAME = re.compile(r"\A[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")


def check(name: str, kind: Kind) -> str:
    """``name`` if it is a valid name of ``kind``, else ``InvalidArgument`` saying why."""
    if not name:
        raise InvalidArgument(f"a {kind.what} needs a name")
    if len(name) > kind.max_chars:
        raise InvalidArgument(what=f"{kind.what} name", value=quote(name),
                              expected=f"use at most {kind.max_chars} characters")
    if not kind.pattern.match(name):
        raise InvalidArgument(what=f"{kind.what} name", value=quote(name), expected=kind.rule)
    return name


def check_label(key: str, value: str) -> None:
    """Kubernetes' rules: ``[prefix/]name`` keys (prefix a DNS subdomain), short values."""
    prefix, slash, name = key.rpartition("/")
    if (not name or len(name) > limits.label_name_max_chars or not _LABEL_NAME.match(name)
            or (slash and (len(prefix) > limits.label_prefix_max_chars or not _LABEL_PREFIX.match(prefix)))):
        raise InvalidArgument(
            what="label key", value=quote(key),
            expected=f"use letters, digits, '-', '_' and '.' (at most {limits.label_name_max_chars}), "
                     f"with an optional DNS prefix and '/'")
    if len(value) > limits.label_value_max_chars:
        raise InvalidArgument(f"invalid value for label {quote(key)}: {len(value)} characters, "
                              f"at most {limits.label_value_max_chars}")
    if value and not _LABEL_NAME.match(value):
        raise InvalidArgument(
            f"invalid value {quote(value)} for label {quote(key)}: use letters, digits, '-', '_' "
            f"and '.', starting and ending with a letter or digit")


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    if len(labels) > limits.labels_max:
        raise InvalidArgument(f"{len(labels)} labels are too many: use at most {limits.labels_max}")
    for key, value in labels.items():
        check_label(key, value)
    return dict(labels)


def split_snapshot_ref(text: str) -> tuple[str, str]:
    """``VOLUME@SNAPSHOT`` -> ``(volume, snapshot)``, both checked (neither may hold '@')."""
    volume, at, snapshot = text.partition("@")
    if not at or not volume or not snapshot:
        raise InvalidArgument(f"name a snapshot as VOLUME@SNAPSHOT, not {quote(text)}")
    return check(volume, VOLUME), check(snapshot, SNAPSHOT)


# --- text that is not a name ------------------------------------------------------------------
# Besides control characters (Cc), these never belong in a name or path a person typed: line
# and paragraph separators split log lines like a newline does, lone surrogates are not
# UTF-8, and the bidirectional overrides and isolates make text display in another order than
# it is (CVE-2021-42574, "Trojan Source").
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def bad_character(text: str) -> str | None:
    """The first character of ``text`` that no name, path or other request string may hold."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch in _BIDI_CONTROLS:
            return ch
    return None


def check_text(text: str, what: str, *, max_bytes: int = limits.request_string_bytes_max) -> str:
    """Free text in a request: valid UTF-8, bounded, without control characters."""
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise InvalidArgument(f"{what} {quote(text)} is not valid UTF-8") from None
    if size > max_bytes:
        raise InvalidArgument(f"{what} is too long ({size} bytes, at most {max_bytes}): {quote(text)}")
    ch = bad_character(text)
    if ch is not None:
        raise InvalidArgument(f"{what} {quote(text)} contains the control character "
                              f"{_escape(ch)}; remove it")
    return text


def check_path(path: str, what: str = "mount point") -> str:
    """An absolute path a caller names (a mount point): bounded in bytes, per component and in
    depth, no control characters, and no '.' or '..' component (the path means what it says)."""
    check_text(path, what, max_bytes=limits.path_max_bytes)
    if not path.startswith("/"):
        raise InvalidArgument(f"{what} {quote(path)} must be an absolute path")
    parts = [p for p in path.split("/") if p]
    if len(parts) > limits.path_components_max:
        raise InvalidArgument(f"{what} {quote(path)} has {len(parts)} components: use at most "
                              f"{limits.path_components_max}")
    for part in parts:
        if part in (".", ".."):
            raise InvalidArgument(f"{what} {quote(path)} has a {part!r} component: give the path "
                                  f"without '.' and '..'")
        if len(part.encode()) > limits.name_max_bytes:
            raise InvalidArgument(f"{what} {quote(path)} has a component longer than "
                                  f"{limits.name_max_bytes} bytes")
    return path


# --- quoting --------------------------------------------------------------------------------------
def _escape(ch: str) -> str:
    if ch == "'":
        return "\\'"
    if ch == "\\":
        return "\\\\"
    if ch.isprintable():
        return ch
    return repr(ch)[1:-1]          # \n, \x00, \u2028, \udcff: visible, and on one line


def quote(value: str, max_chars: int = limits.quote_chars_max) -> str:
    """``value`` in single quotes for a message: escaped onto one line, and cut after
    ``max_chars`` characters of escaped text with its full length said."""
    shown: list[str] = []
    used = 0
    for ch in value:
        escaped = _escape(ch)
        if used + len(escaped) > max_chars:
            return f"'{''.join(shown)}'… ({len(value)} characters)"
        shown.append(escaped)
        used += len(escaped)
    return f"'{''.join(shown)}'"


def one_line(text: str) -> str:
    """``text`` with every control character escaped: a message is one line on a terminal
    and in a log, whatever reached it."""
    if bad_character(text) is None:
        return text
    return "".join(_escape(ch) if bad_character(ch) else ch for ch in text)


def bounded(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` bytes of UTF-8 (at a character boundary), with
    '…' saying it was cut."""
    data = text.encode(errors="backslashreplace")
    if len(data) <= max_bytes:
        return text
    marker = "…".encode()
    return data[:max_bytes - len(marker)].decode(errors="ignore") + "…"
