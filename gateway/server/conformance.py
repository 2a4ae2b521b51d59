"""gRPC health and server reflection on the local API, as the ecosystem's tools call them.

Guarantees:

* :class:`GatewayHealth` answers ``Check``, ``Watch`` and ``List``. ``List`` returns
  every service whose status the gateway has set (``""`` included) with that status,
  a snapshot as the protocol allows. The asyncio servicer of grpcio-health-checking
  implements only ``Check`` and ``Watch``; its generated base raises
  ``NotImplementedError`` for ``List``, which the guard rightly treats as a bug
  (INTERNAL, logged). :meth:`GatewayHealth.serving` marks a list of services SERVING
  at start, so ``Check`` on any served service answers rather than ``NOT_FOUND``.
* :func:`enable_reflection` serves reflection as ``grpc.reflection.v1alpha`` and as
  ``grpc.reflection.v1``, both listing the same services. grpcio-reflection ships
  v1alpha only; v1 is the same protocol under a new package (identical messages and
  field numbers), so one servicer answers both, and v1's file descriptor is derived
  from v1alpha's and added to the default pool, so that a client can resolve the v1
  service itself (``buf curl --reflect-protocol grpc-v1 --list-methods``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
_V1ALPHA_PREFIX = ".grpc.reflection.v1alpha."
_V1_PREFIX = ".grpc.reflection.v1."

_Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus.ValueType
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# grpc_health ships no type stubs for its asyncio servicer.
class GatewayHealth(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """grpc.health.v1 with ``List``: the statuses set, mirrored as the base sets them."""

    def __init__(self) -> None:
        super().__init__()
        # The base keeps the same table privately; this copy is kept through its public
        # methods only, so a change of its internals cannot break List.
        self._statuses: dict[str, _Status] = {"": _SERVING}
        self._shutting_down = False

    async def set(self, service: str, status: _Status) -> None:
        if not self._shutting_down:
            self._statuses[service] = status
        await super().set(service, status)

    async def serving(self, services: Iterable[str]) -> None:
        """Mark ``""`` and each of ``services`` SERVING."""
        for service in ("", *services):
            await self.set(service, _SERVING)

    async def enter_graceful_shutdown(self) -> None:
        if not self._shutting_down:
            self._shutting_down = True
            self._statuses = dict.fromkeys(self._statuses, _NOT_SERVING)
        await super().enter_graceful_shutdown()

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in sorted(self._statuses.items())
            }
        )


def _rename_types(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            if field.type_name.startswith(_V1ALPHA_PREFIX):
                field.type_name = _V1_PREFIX + field.type_name[len(_V1ALPHA_PREFIX) :]
        _rename_types(message.nested_type)


def _add_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's language packages would name v1alpha
    _rename_types(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(_V1ALPHA_PREFIX, _V1_PREFIX)
            method.output_type = method.output_type.replace(_V1ALPHA_PREFIX, _V1_PREFIX)
    pool.Add(proto)


def enable_reflection(server: grpc.aio.Server, services: Iterable[str]) -> tuple[str, ...]:
    """Serve reflection v1alpha and v1 on ``server``; the names listed: ``services`` and
    both reflection services."""
    _add_v1_descriptor()
    names = list(dict.fromkeys([*services, reflection.SERVICE_NAME, REFLECTION_V1]))
    # grpc_reflection ships no type stubs for its asyncio servicer.
    servicer = reflection.aio.ReflectionServicer(names)  # type: ignore[attr-defined]
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": info})
            for name in (reflection.SERVICE_NAME, REFLECTION_V1)
        )
    )
    return tuple(names)
