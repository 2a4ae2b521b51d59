"""The interceptor in front of every handler of one listener.

For each call, in this order: identify the caller (the listener's own
``authenticate`` stage, which records the frozen result for the handler), parse the
request's bytes and check its values (:mod:`gateway.server.request_input`: grpc is
given no deserializer, so nothing is parsed before the caller is known and a
malformed message is ``MALFORMED_REQUEST``), run the handler, and turn any
:class:`~gateway.errors.PouchError` into the one gRPC status map of
:mod:`gateway.errors`. Anything else is a bug: it is logged by type and
location (never by message, which might hold data) and answered ``INTERNAL``
with nothing inside. Every call is counted by listener, service, method and code.

Every call has a request id (:func:`gateway.events.request_id_from`: the caller's
``x-request-id`` if it is printable ASCII of at most 128 characters, else a new one). It
is set in :data:`gateway.events.REQUEST_ID` before the caller is identified, so every
event line of the call carries it, and returned in the trailing metadata, refused or not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import grpc.aio
from google.protobuf.message import Message

from gateway.errors import (
    AuthenticationRejected,
    PouchError,
    Rejected,
    internal_error,
    to_status,
    unexpected_summary,
)
from gateway.events import REQUEST_ID, REQUEST_ID_HEADER, request_id_from
from gateway.metrics import GatewayMetrics
from gateway.server.request_input import check_values, decode_request

log = logging.getLogger(__name__)

Authenticate = Callable[[grpc.aio.ServicerContext[Any, Any], str], None]
Evidence = Callable[[Rejected, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]


def split_method(full_method: str) -> tuple[str, str]:
    """``/pouch.v1.PeerService/Ping`` -> (``pouch.v1.PeerService``, ``Ping``)."""
    service, _, method = full_method.lstrip("/").partition("/")
    return service, method


class _Call:
    """Bookkeeping of one call: its outcome code and timing, recorded once."""

    def __init__(self, guard: ListenerGuard, full_method: str) -> None:
        self.guard = guard
        self.service, self.method = split_method(full_method)
        self.full_method = full_method
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    async def fail(self, context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> None:
        if isinstance(error, PouchError):
            status = to_status(error)
            # One line per refusal, by reason code only: messages may name what was refused.
            log.info(
                "refused %s on the %s listener: %s",
                self.full_method,
                self.guard.listener,
                error.reason,
            )
            self.guard.metrics.refusals.labels(self.guard.listener, error.reason).inc()
            if isinstance(error, AuthenticationRejected):
                self.guard.metrics.authentication_refusals.labels(
                    self.guard.listener, error.reason
                ).inc()
            if (
                self.guard.evidence is not None
                and isinstance(error, Rejected)
                and not error.audited
            ):
                await self._keep_evidence(context, error)
        else:
            log.error("unexpected error in %s: %s", self.full_method, unexpected_summary(error))
            status = internal_error()
        self.code = status.code
        request_id = ((REQUEST_ID_HEADER, REQUEST_ID.get() or ""),)
        await context.abort(status.code, status.details, status.trailing_metadata + request_id)

    async def _keep_evidence(
        self, context: grpc.aio.ServicerContext[Any, Any], error: Rejected
    ) -> None:
        assert self.guard.evidence is not None
        try:
            await self.guard.evidence(error, context)
        except PouchError as e:
            # The caller is refused all the same; the operator learns the record is missing.
            log.warning("refusal of %s not recorded: %s", self.full_method, e.reason)
        except Exception as e:
            log.error("refusal of %s not recorded: %s", self.full_method, unexpected_summary(e))

    def done(self) -> None:
        g = self.guard
        g.metrics.requests.labels(g.listener, self.service, self.method, self.code.name).inc()
        g.metrics.request_seconds.labels(g.listener, self.service, self.method).observe(
            time.perf_counter() - self.started
        )


class ListenerGuard(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates, maps errors and counts calls for one listener."""

    def __init__(
        self,
        listener: str,
        authenticate: Authenticate,
        metrics: GatewayMetrics,
        evidence: Evidence | None = None,
        *,
        max_message_bytes: int | None = None,
    ) -> None:
        """``evidence`` keeps a record of each refusal no stage has audited yet (the peer
        listener audits them: a partner certificate speaking for another state, a
        malformed or oversized request from a partner, is an attack, not noise).
        ``max_message_bytes`` bounds each request message; grpc itself is given a higher
        bound, so that a message between the two is refused here, counted and audited."""
        self.evidence = evidence
        self.max_message_bytes = max_message_bytes
        self.listener = listener
        self.authenticate = authenticate
        self.metrics = metrics
        self._wrapped: dict[str, tuple[Any, grpc.RpcMethodHandler]] = {}  # type: ignore[type-arg]

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],  # type: ignore[type-arg]
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        # A method's handler is the same on every call: wrap it once.
        wrapped = self._wrapped.get(method)
        if wrapped is None or wrapped[0] is not handler:
            wrapped = (handler, self._wrap(handler, method))
            self._wrapped[method] = wrapped
        return wrapped[1]

    def _wrap(self, handler: Any, method: str) -> grpc.RpcMethodHandler:  # type: ignore[type-arg]
        # The request deserializer is kept from grpc: the behaviours below parse the
        # bytes themselves, once the caller is authenticated.
        parse = _Deserialize(handler.request_deserializer, self.max_message_bytes)
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(handler.stream_stream, method, _stream_parser(parse)),
                None,
                handler.response_serializer,
            )
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method, _stream_parser(parse)),
                None,
                handler.response_serializer,
            )
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method, _unary_parser(parse)),
                None,
                handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._unary(handler.unary_unary, method, _unary_parser(parse)),
            None,
            handler.response_serializer,
        )

    async def _failed(
        self, call: _Call, context: grpc.aio.ServicerContext[Any, Any], error: BaseException
    ) -> None:
        """Record how the handler's call ended in ``error``, answering the caller if due."""
        if isinstance(error, asyncio.CancelledError):
            call.code = grpc.StatusCode.CANCELLED
            raise error
        if isinstance(error, grpc.aio.AbortError):
            call.code = context.code() or grpc.StatusCode.UNKNOWN
            raise error
        await call.fail(context, error)

    # The two wrappers below are written out rather than sharing a context manager: they
    # run on every call, and an async context manager costs more than the rest of this.

    def _unary(self, inner: Any, method: str, parse: _Parse) -> Any:
        async def behaviour(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call = _Call(self, method)
            _take_request_id(context)
            try:
                self.authenticate(context, method)
                result = inner(parse(request), context)
                return await result if asyncio.iscoroutine(result) else result
            except (Exception, asyncio.CancelledError) as e:
                await self._failed(call, context, e)
                return None
            finally:
                call.done()

        return behaviour

    def _streaming(self, inner: Any, method: str, parse: _Parse) -> Any:
        async def behaviour(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = _Call(self, method)
            _take_request_id(context)
            try:
                self.authenticate(context, method)
                responses = inner(parse(request), context)
                async for response in cast(AsyncIterator[Any], responses):
                    yield response
            except (Exception, asyncio.CancelledError) as e:
                await self._failed(call, context, e)
            finally:
                call.done()

        return behaviour


_Parse = Callable[[Any], Any]


def _take_request_id(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """The call's request id, in the context of its task and in its trailing metadata.

    Each call runs in a task of its own, with its own copy of the context: the value is
    not reset after the call, as nothing else runs in that copy."""
    request_id = request_id_from(context.invocation_metadata())
    REQUEST_ID.set(request_id)
    context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))


@dataclass(frozen=True)
class _Deserialize:
    """One method's request bytes, bounded in size, through its own deserializer."""

    deserializer: Callable[[bytes], Any] | None
    max_bytes: int | None

    def __call__(self, data: Any) -> Any:
        if self.deserializer is None:
            return data
        return decode_request(self.deserializer, data, self.max_bytes)


def _unary_parser(deserialize: _Deserialize) -> _Parse:
    """A single request: parsed, and its values checked, before the handler runs."""

    def parse(data: Any) -> Any:
        request = deserialize(data)
        if isinstance(request, Message):
            check_values(request)
        return request

    return parse


def _stream_parser(deserialize: _Deserialize) -> _Parse:
    """A request stream whose items are parsed as the handler takes them.

    An item that does not parse ends the stream with ``MALFORMED_REQUEST`` (raised
    where the handler reads it); an item that parses but holds a bad value is the
    handler's to answer, as its contract says (``SubmitUpdates`` answers it alone).
    """

    def parse(items: Any) -> Any:
        async def parsed() -> AsyncIterator[Any]:
            async for data in items:
                yield deserialize(data)

        return parsed()

    return parse
