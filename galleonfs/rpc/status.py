"""``GalleonError`` -> gRPC status, at one place: a server interceptor (no per-method code).

The status carries the error's sentence as its details, and the trailing metadata
``galleonfs-error`` names the error class, so the client can rebuild the same error and
``galleonctl`` exits with the same stable code as ``galleonfs`` would.
Every status message is one line of at most ``limits.status_message_bytes_max`` bytes.
An exception that is not a ``GalleonError`` is a bug: logged with its traceback, answered
INTERNAL with a short message (never the traceback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from .. import limits, names
from ..errors import GalleonError
from .wrapping import Stream, Unary, wrap

log = logging.getLogger(__name__)
ERROR_CLASS_KEY = "galleonfs-error"


def status_code(exc: GalleonError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.grpc_status, grpc.StatusCode.INTERNAL)


def status_message(exc: GalleonError) -> str:
    """The error's sentence, on one line and at most ``limits.status_message_bytes_max``
    bytes: the backstop behind every message that quotes what a caller sent (a 10,000
    character name made the answer exceed gRPC's metadata limit: RESOURCE_EXHAUSTED)."""
    return names.bounded(names.one_line(str(exc)), limits.status_message_bytes_max)


class ErrorInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return handler
        method = details.method

        def fail(exc: Exception, context: grpc.ServicerContext) -> None:
            if isinstance(exc, GalleonError):
                context.set_trailing_metadata(((ERROR_CLASS_KEY, type(exc).__name__),))
                context.abort(status_code(exc), status_message(exc))
            log.exception("bug while serving %s", method)
            context.abort(grpc.StatusCode.INTERNAL,
                          f"internal error while serving {method}; see the daemon's log")

        def unary(inner: Unary) -> Unary:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return inner(request, context)
                except Exception as exc:
                    fail(exc, context)
            return guarded

        def stream(inner: Stream) -> Stream:               # progress streams (KeyService.Rekey)
            def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                try:
                    yield from inner(request, context)
                except Exception as exc:
                    fail(exc, context)
            return guarded

        return wrap(handler, unary=unary, stream=stream)
