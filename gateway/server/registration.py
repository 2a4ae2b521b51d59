"""Serve the methods of a service that are built, and only those.

A service of the wire contract is often filled in method by method. Rather than
answer the missing ones from a placeholder, the server registers only the
implemented methods; gRPC itself answers any other with ``UNIMPLEMENTED``.
Request and response types come from the service's descriptor, so a handler can
never be registered with the wrong message type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass


def register_methods(
    server: grpc.aio.Server,
    service: ServiceDescriptor,
    implementations: Mapping[str, Callable[..., Any]],
) -> None:
    """Add ``implementations`` (method name -> async behaviour) of ``service``."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}  # type: ignore[type-arg]
    for name, behaviour in implementations.items():
        method = service.methods_by_name.get(name)
        if method is None:
            raise ValueError(f"{service.full_name} has no method {name}")
        request_type = GetMessageClass(method.input_type)
        response_type = GetMessageClass(method.output_type)
        kind = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        handlers[name] = kind(
            behaviour,
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
