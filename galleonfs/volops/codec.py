"""The one serializer of volume operations: messages to a JSON line and back, for both
channels (the mount worker's control socket, the offline helper's pipes).

    request   {"op": "snapshot_create", "args": {"name": "daily"}}
    answer    {"ok": true, "reply": {...}}
              {"ok": false, "error": "...", "status": "NOT_FOUND", "class": "NotFound"}

Generic over the dataclasses of ``messages.py``: ``msgspec`` turns a dataclass into JSON and
JSON back into the dataclass a type names, checking every field's type on the way in (an
``int`` field refuses ``"5"`` and ``5.0``; a missing field is an error). Written by hand,
that check is the part that goes wrong; msgspec does it in C, faster than ``json``.

A ``GalleonError`` crosses with its class name, so the caller raises the same class (and
so the same exit code and gRPC status) as the side that raised it.

What it must not do: trust what it decodes. Bytes that are not a request of a known
operation with well-typed arguments raise ``BadMessage`` (a ``ValueError``); the receiver
answers "bad request" and nothing runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from ..crypto.keys import KeySpec
from ..errors import GalleonError, error_from_status
from .messages import REQUESTS, Request

T = TypeVar("T")


class BadMessage(ValueError):
    """Bytes that are not a well-formed message of this protocol."""


class _RequestLine(msgspec.Struct):
    op: str
    args: msgspec.Raw = msgspec.Raw(b"{}")


class _AnswerLine(msgspec.Struct, rename={"error_class": "class"}):
    ok: bool
    reply: msgspec.Raw = msgspec.Raw(b"null")
    error: str = ""
    status: str = "INTERNAL"
    error_class: str = ""


@dataclass(frozen=True)
class Setting:
    """Where the offline helper runs a request: the first line it reads (``offline.py``)."""

    volume_dir: str = ""
    keys: KeySpec = field(default_factory=KeySpec)
    parent: int = 0          # the pid that waits for the answer (the helper dies with it)


class ProgressLine(msgspec.Struct):
    """A helper's progress line, ``{"progress": [done, total]}``, before its answer."""

    progress: tuple[int, int] | None = None


def progress_line(done: int, total: int) -> bytes:
    return encode(ProgressLine((done, total))) + b"\n"


def encode(message: object) -> bytes:
    """Any message (a dataclass of ``messages.py``) as JSON."""
    return msgspec.json.encode(message)


def decode(data: bytes | msgspec.Raw, kind: type[T]) -> T:
    """``data`` as a ``kind``, every field type-checked; ``BadMessage`` if it is not one."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:      # ValidationError is a DecodeError
        raise BadMessage(str(exc)) from None


def convert(value: object, kind: type[T]) -> T:
    """Built-in values (what ``json`` or a library returned) as a ``kind``, type-checked."""
    try:
        return msgspec.convert(value, type=kind)
    except msgspec.ValidationError as exc:
        raise BadMessage(str(exc)) from None


def encode_request(request: Request[Any]) -> bytes:
    return encode(_RequestLine(request.op, msgspec.Raw(encode(request)))) + b"\n"


def decode_request(line: bytes) -> Request[Any]:
    """A request of a known operation, or ``BadMessage`` saying what is wrong with it."""
    head = decode(line, _RequestLine)
    kind = REQUESTS.get(head.op)
    if kind is None:
        raise BadMessage(f"unknown operation {head.op[:64]!r}")
    return decode(head.args, kind)


def encode_reply(reply: object) -> bytes:
    return encode(_AnswerLine(True, msgspec.Raw(encode(reply)))) + b"\n"


def encode_error(exc: GalleonError) -> bytes:
    return encode(_AnswerLine(False, error=str(exc), status=exc.grpc_status,
                              error_class=type(exc).__name__)) + b"\n"


def decode_answer(line: bytes, kind: type[T]) -> T:
    """The reply in an answer line, or raise the error it carries (as its own class).
    ``BadMessage`` if the line is neither."""
    answer = decode(line, _AnswerLine)
    if not answer.ok:
        raise error_from_status(answer.status, answer.error or "unknown error", answer.error_class or None)
    return decode(answer.reply, kind)
