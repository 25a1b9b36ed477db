"""One way to wrap a gRPC method handler, for every interceptor of galleond.

grpcio hands an interceptor an ``RpcMethodHandler`` with one behaviour set per call shape
(unary-unary, unary-stream, ...) and makes it rebuild a handler of the same shape around
a new behaviour, with the same (de)serializers. ``wrap`` does that rebuilding once; each
interceptor only says what it does around a unary call and around a streaming one. The
API's own methods take one request each; server reflection streams its requests too.

What it must not do: decide anything. It copies the handler's shape and serializers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

Unary = Callable[[Any, grpc.ServicerContext], Any]
Stream = Callable[[Any, grpc.ServicerContext], Iterator[Any]]


def wrap(handler: grpc.RpcMethodHandler[Any, Any], *, unary: Callable[[Unary], Unary] | None = None,
         stream: Callable[[Stream], Stream] | None = None,
         deserializer: Callable[[bytes], Any] | None = None,
         client_streams: bool = False) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behaviour replaced by ``unary(behaviour)`` (one answer) or
    ``stream(behaviour)`` (a stream of answers); a shape without a wrapper is returned as it
    is. Only shapes with one request are wrapped unless ``client_streams`` (the access check
    covers server reflection, whose requests stream too). ``deserializer`` replaces the
    request deserializer (the validator's tolerant one)."""
    shapes: list[tuple[str, Any]] = [("unary_unary", unary), ("unary_stream", stream)]
    if client_streams:
        shapes += [("stream_unary", unary), ("stream_stream", stream)]
    for shape, wrapper in shapes:
        behaviour = getattr(handler, shape)
        if behaviour is not None and wrapper is not None:
            make = getattr(grpc, f"{shape}_rpc_method_handler")
            wrapped: grpc.RpcMethodHandler[Any, Any] = make(
                wrapper(behaviour), request_deserializer=deserializer or handler.request_deserializer,
                response_serializer=handler.response_serializer)
            return wrapped
    return handler
