"""The gRPC side of the audit log: the interceptor that appends, and the AuditService.

``AuditInterceptor`` wraps every unary call (and server stream) of a ``galleonfs.v1`` service that is not a
read (``READ_VERBS``; so a method added later is audited unless it is declared a read). It
sits outside ``status.ErrorInterceptor`` and writes two records per call, on the pool thread
that serves it (``audit/log.py``):

* the *intent* (who asks for what), durable *before* the handler runs. If it cannot be
  written (a full disk, an I/O error, the file replaced) the call is refused with
  UNAVAILABLE and never runs: no state change without its record;
* the *outcome*, after the call and before the answer leaves: the status code and sentence
  that ``ErrorInterceptor`` set, or OK. If that one cannot be written the change has been
  made, so the answer still goes out; an ERROR says so, the intent shows the call as
  unfinished, and the next call's intent (on the same broken log) is refused.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import grpc
from google.protobuf.json_format import Error as JsonFormatError
from google.protobuf.json_format import MessageToDict

from ..audit.log import AuditLog, audit_string_bytes_max, list_records_max
from ..errors import AuditUnavailable, GalleonError
from ..v1 import audit_pb2, audit_pb2_grpc
from . import auth
from .convert import timestamp
from .status import ERROR_CLASS_KEY, status_code
from .wrapping import Stream, Unary, wrap

log = logging.getLogger(__name__)

API_PREFIX = "/galleonfs.v1."
# A method whose name starts with one of these only reads; every other one is audited.
READ_VERBS = ("Get", "List", "Diff", "Verify", "Watch", "Check")
# Request fields whose values are never written to the log (matched on the field name).
SECRET_WORDS = ("secret", "passphrase", "password", "token", "credential", "private", "key")


def audited(method: str) -> bool:
    """Whether a full gRPC method name (``/galleonfs.v1.VolumeService/Create``) changes state."""
    if not method.startswith(API_PREFIX) or method.startswith("/galleonfs.v1.AuditService/"):
        return False
    return not method.rsplit("/", 1)[-1].startswith(READ_VERBS)


def redact(value: Any) -> Any:
    """A request as a JSON-able value, with secret fields and overlong strings replaced."""
    if isinstance(value, dict):
        return {k: "<redacted>" if any(w in k.lower() for w in SECRET_WORDS) else redact(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and len(value.encode()) > audit_string_bytes_max:
        return value.encode()[:audit_string_bytes_max].decode(errors="ignore") + "…"
    return value


def request_fields(request: Any) -> Any:
    """The request as the record shows it. The intent is written before the request validator
    runs (it is inside), so a request that JSON cannot express (a timestamp out of range)
    is recorded as such, not allowed to fail the call with a traceback; the validator then
    refuses it."""
    try:
        return redact(MessageToDict(request, preserving_proto_field_name=True))
    except (JsonFormatError, ValueError) as exc:
        return {"unreadable": str(exc)[:200]}


@runtime_checkable
class _Answered(Protocol):
    """What grpcio's server-side context tells about the answer given (since grpcio 1.38; not
    in the typing stubs of ``grpc.ServicerContext``)."""

    def code(self) -> grpc.StatusCode | None: ...

    def details(self) -> bytes | str | None: ...


class AuditInterceptor(grpc.ServerInterceptor):
    def __init__(self, audit: AuditLog, identify: Callable[[grpc.ServicerContext], dict[str, Any]]) -> None:
        self.audit = audit
        # Who is calling, as the auth layer knows it exactly (rpc.auth.Authenticator.peer_entry):
        # the intent is written before the auth interceptor (inside this one) admits the call.
        self.identify = identify

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or not audited(details.method):
            return handler
        method = details.method.lstrip("/")
        def stream(inner: Stream) -> Stream:               # KeyService.Rekey: recorded at its end
            def recorded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                call = self._append(method, request, None, context)
                last = None
                try:
                    for last in inner(request, context):
                        yield last
                finally:
                    self._finish(call, method, request, last, context)
            return recorded

        def unary(inner: Unary) -> Unary:
            def recorded(request: Any, context: grpc.ServicerContext) -> Any:
                call = self._append(method, request, None, context)
                reply = None
                try:
                    reply = inner(request, context)
                    return reply
                finally:
                    self._finish(call, method, request, reply, context)
            return recorded

        return wrap(handler, unary=unary, stream=stream)

    def _append(self, method: str, request: Any, reply: Any, context: grpc.ServicerContext) -> int:
        """The call's intent record, durable before the call runs; its ``seq``. A log that
        cannot take it refuses the call (``context.abort`` raises: the handler never runs)."""
        fields = {
            "phase": "intent", "time_ns": time.time_ns(), "method": method,
            "peer": self.identify(context),
            "request": request_fields(request),
            "volume": _volume_of(method, request, reply),
        }
        fields["time"] = _rfc3339(fields["time_ns"])
        try:
            return int(self.audit.append(fields)["seq"])
        except GalleonError as exc:
            log.error("%s refused: its audit record cannot be written: %s", method, exc)
            refusal = AuditUnavailable(f"the call was not carried out: its audit record cannot be written "
                                       f"({exc})")
            context.set_trailing_metadata(((ERROR_CLASS_KEY, type(refusal).__name__),))
            context.abort(status_code(refusal), str(refusal))
            raise AssertionError("context.abort returned") from None

    def _finish(self, call: int, method: str, request: Any, reply: Any, context: grpc.ServicerContext) -> None:
        """The outcome record: what the client was answered."""
        assert isinstance(context, _Answered), "grpcio's servicer context tells what was answered"
        code = context.code() or grpc.StatusCode.OK
        details = context.details() or b""          # grpcio keeps what abort() got, as bytes
        message = details.decode(errors="replace") if isinstance(details, bytes) else str(details)
        fields: dict[str, Any] = {
            "phase": "outcome", "call": call, "time_ns": time.time_ns(), "method": method,
            "peer": auth.audit_peer(context) or self.identify(context),
            "volume": _volume_of(method, request, reply),
            "code": code.name, "message": message if code != grpc.StatusCode.OK else "",
        }
        fields["time"] = _rfc3339(fields["time_ns"])
        try:
            self.audit.append(fields)
        except GalleonError as exc:
            log.error("%s was served but its outcome was not audited (the intent, record %d, was): %s",
                      method, call, exc)


def _volume_of(method: str, request: Any, reply: Any) -> str:
    """The volume a call was about: its ``volume`` field, or a VolumeService call's name."""
    fields = request.DESCRIPTOR.fields_by_name
    if "volume" in fields and isinstance(request.volume, str) and request.volume:
        return str(request.volume)
    if method.startswith(("galleonfs.v1.VolumeService/", "galleonfs.v1.KeyService/Rekey")):
        if "name" in fields and request.name:
            return str(request.name)
        if reply is not None and reply.DESCRIPTOR.full_name == "galleonfs.v1.Volume":
            return str(reply.name)                # unmount by path names the volume only here
    return ""


def _rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9 // 1000:06d}Z"


def record_to_pb(line: int, r: dict[str, Any]) -> audit_pb2.AuditRecord:
    p = r.get("peer") or {}
    return audit_pb2.AuditRecord(
        seq=int(r["seq"]), line=line, time=timestamp(int(r.get("time_ns", 0))),
        peer=audit_pb2.AuditPeer(
            transport=str(p.get("transport", "")), address=str(p.get("address", "")),
            credentials_known="uid" in p, uid=int(p.get("uid", 0)), gid=int(p.get("gid", 0)),
            pid=int(p.get("pid", 0)), note=str(p.get("note", "")), principal=str(p.get("principal", "")),
            role=str(p.get("role", "")), tenant=str(p.get("tenant", ""))),
        method=str(r.get("method", "")), volume=str(r.get("volume", "")),
        request_json=json.dumps(r.get("request", {}), sort_keys=True),
        code=str(r.get("code", "")), message=str(r.get("message", "")),
        hash=str(r["hash"]), prev_hash=str(r["prev"]))


class AuditService(audit_pb2_grpc.AuditServiceServicer):
    """Reads the file on the pool thread (no trio state is involved; see ``AuditLog``)."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def List(self, request: Any, context: Any) -> Any:
        """One entry per call: its intent record, with the outcome's code and message."""
        since_ns = request.since.ToNanoseconds() if request.HasField("since") else 0
        matching = self.audit.calls(since_ns=since_ns, volume=request.volume)
        kept = matching[-list_records_max:]
        return audit_pb2.ListAuditRecordsResponse(
            records=[record_to_pb(n, r) for n, r in kept], truncated=len(kept) < len(matching))

    def Verify(self, request: Any, context: Any) -> Any:
        verdict = self.audit.verify()
        return audit_pb2.VerifyAuditResponse(intact=verdict.intact, records=verdict.records,
                                             bad_line=verdict.bad_line, problem=verdict.problem,
                                             path=verdict.file or self.audit.path)
