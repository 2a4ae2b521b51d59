"""The checks that call another host: our listeners, each partner, the registry.

Partners are asked over the same mutual-TLS channels exchanges use (the gateway's own
:class:`~gateway.delivery.partners.PartnerChannels` when it runs the checks), trusting
only the partner's pinned CA: ``Ping`` shows the partner's gateway recognises us, and its
``server_time`` gives the clock skew, measured against the injected clock at the middle
of the round trip.

The TLS key-exchange group cannot be read from a gRPC channel (grpc Python gives a
client no auth context). A handshake made here with Python's ``ssl`` and the gateway's
client certificate reads the TLS version and cipher, and the group where the ``ssl``
module offers ``SSLSocket.group()``; that handshake is Python's OpenSSL, not gRPC's,
whose offer (X25519MLKEM768 first) can differ. The partner's listener counts the group
each gateway negotiates (``pouch_peer_key_exchange_total`` on its side).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid
from datetime import datetime
from pathlib import Path

import grpc
import grpc.aio
from cryptography import x509

from adapters.settings import (
    GrpcAdapterSettings,
    SpoolAdapterSettings,
    SqlAdapterSettings,
    WebhookAdapterSettings,
)
from gateway.config import PartnerSection
from gateway.connect import ClientIdentity
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import certificate_pem, load_certificate
from gateway.server.doctor.context import SKEW_WARNING_S, DoctorContext
from gateway.server.doctor.findings import Finding, fail, ok, warn
from gateway.server.doctor.pki_checks import certificate_validity
from gateway.trust.key_exchange import HYBRID_KEY_EXCHANGE_GROUPS
from pouch.v1 import peer_pb2

_NOT_RUNNING_REMEDY = "start the gateway (pouch serve --config FILE) and run the doctor again"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):  # noqa: S104 - a wildcard listener is called on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def _handshake(
    address: str,
    *,
    cadata: str,
    certificate: Path,
    key: Path,
    timeout_s: float,
    server_name: str | None,
) -> tuple[str, str, str | None, bytes]:
    """Blocking: a TLS handshake presenting our certificate; (version, cipher, group, the
    server's certificate as DER)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=cadata)
    context.load_cert_chain(certificate, key)
    context.check_hostname = server_name is not None
    host, port = _split(address)
    with (
        socket.create_connection((host, port), timeout=timeout_s) as raw,
        context.wrap_socket(raw, server_hostname=server_name or host) as tls,
    ):
        cipher = tls.cipher()
        group_of = getattr(tls, "group", None)  # Python releases with SSLSocket.group()
        group = group_of() if callable(group_of) else None
        served = tls.getpeercert(binary_form=True) or b""
        return tls.version() or "?", cipher[0] if cipher else "?", group, served


# -- our own listeners -------------------------------------------------------------


async def check_listeners(ctx: DoctorContext) -> list[Finding]:
    settings = ctx.settings
    listeners = [("local API", settings.local_api.listen), ("peer API", settings.peer_api.listen)]
    if settings.witness_http is not None:
        listeners.append(("witness HTTP", settings.witness_http.listen))
    return list(
        await asyncio.gather(*(_check_listener(ctx, name, addr) for name, addr in listeners))
    )


async def _check_listener(ctx: DoctorContext, name: str, address: str) -> Finding:
    pki = StateDirectory(ctx.settings.pki.dir)
    check = f"listener {name}"
    try:
        ours = load_certificate(pki.gateway_cert)
        cadata = pki.ca_cert.read_text(encoding="ascii")
    except (OSError, ValueError):
        return warn(check, "not tried: this gateway's TLS identity cannot be read", "")
    try:
        version, cipher, _, served = await asyncio.to_thread(
            _handshake,
            address,
            cadata=cadata,
            certificate=pki.gateway_cert,
            key=pki.gateway_key,
            timeout_s=ctx.probe_timeout_s,
            server_name=None,
        )
    except ConnectionRefusedError:
        if ctx.inside_gateway:
            return fail(check, f"nothing listens on {address}", "restart the gateway")
        return warn(
            check, f"nothing listens on {address}: the gateway is not running", _NOT_RUNNING_REMEDY
        )
    except (OSError, ssl.SSLError, ValueError) as e:
        return fail(
            check,
            f"{address}: TLS with the state CA failed ({_reason(e)})",
            "the listener must serve this gateway's certificate (pki.dir/gateway.crt); "
            "restart a gateway still serving an old one",
        )
    if x509.load_der_x509_certificate(served) != ours:
        return fail(
            check,
            f"{address} serves another certificate than {pki.gateway_cert}",
            "reload the gateway (SIGHUP) so that it serves its current certificate, or find "
            "which process holds the port",
        )
    return ok(
        check, f"{address}: serves this gateway's current certificate over {version} ({cipher})"
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or type(error).__name__
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


# -- partners ----------------------------------------------------------------------


async def check_partners(ctx: DoctorContext) -> list[Finding]:
    rows = await asyncio.gather(*(_check_partner(ctx, p) for p in ctx.settings.partners))
    return [finding for partner_rows in rows for finding in partner_rows]


async def _check_partner(ctx: DoctorContext, entry: PartnerSection) -> list[Finding]:
    state = entry.state
    check = f"partner {state}"
    try:
        bundle = load_trust_bundle(entry.bundle)
    except (OSError, ValueError):
        return [warn(check, "not tried: its trust bundle cannot be read (see its row)", "")]
    endpoint = entry.endpoint or bundle.peer_endpoint
    if ctx.channels is None:
        return [warn(check, "not tried: this gateway's TLS identity cannot be read", "")]
    try:
        peer = ctx.channels.peer(state)
    except KeyError:
        return [warn(check, "not called: its bundle is not the pinned one (see its row)", "")]
    nonce = uuid.uuid4().hex
    sent = ctx.clock()
    try:
        answer = await peer.Ping(peer_pb2.PingRequest(nonce=nonce), timeout=ctx.probe_timeout_s)
    except grpc.aio.AioRpcError as e:
        return [_unreached(ctx, state, endpoint, e)]
    received = ctx.clock()
    rows = []
    if answer.gateway_state != state or answer.caller_state != ctx.settings.gateway.state:
        rows.append(
            fail(
                check,
                f"{endpoint} answers as {answer.gateway_state or '?'} and took us for "
                f"{answer.caller_state or '?'}",
                f"check partners[{state}].endpoint and the peer endpoint in {state}'s bundle",
            )
        )
    else:
        rows.append(
            ok(
                check,
                f"{endpoint}: mutual TLS with the pinned CA; it recognises us as "
                f"{answer.caller_state}",
            )
        )
    rows.append(_skew(ctx, state, sent, received, answer.server_time.ToDatetime()))
    rows.append(_key_exchange(state, answer.key_exchange_group))
    trusted = ctx.channels.bundles.trusted_cas(state, ctx.clock())
    rows += await _tls(ctx, state, endpoint, b"".join(certificate_pem(ca) for ca in trusted))
    return rows


def _key_exchange(state: str, group: str) -> Finding:
    """The key-exchange group of our gRPC connection to ``state``, as its listener saw it
    (our own gRPC cannot read it) and said in its Ping answer."""
    check = f"key exchange {state}"
    if not group:
        return warn(
            check,
            f"{state}'s gateway does not say which group our connection negotiated (a release "
            "before it reported it)",
            f"ask {state}'s operators for pouch_peer_key_exchange_total on their side",
        )
    if group in HYBRID_KEY_EXCHANGE_GROUPS:
        return ok(check, f"{group}: post-quantum hybrid, as {state}'s listener saw it")
    return warn(
        check,
        f"{group}: a classical group, as {state}'s listener saw it; recorded traffic could be "
        "read by a later quantum computer",
        f"run this gateway on grpcio 1.83 or later (it offers X25519MLKEM768 first) and ask "
        f"{state} to do the same; a partner with require_hybrid_key_exchange refuses it",
    )


def _unreached(
    ctx: DoctorContext, state: str, endpoint: str, error: grpc.aio.AioRpcError
) -> Finding:
    code = error.code()
    details = (error.details() or "").splitlines()[0][:160] if error.details() else ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return fail(
            f"partner {state}",
            f"{endpoint} unreachable ({code.name}: {details})",
            f"check that {state}'s gateway runs and that {endpoint} is reachable from here "
            f"(firewall, partners[{state}].endpoint); ask {state}'s operators. Messages "
            "wait in the outbox meanwhile",
        )
    return fail(
        f"partner {state}",
        f"{endpoint} refused our ping ({code.name}: {details})",
        f"{state} must pin our current trust bundle and hold a fresh CRL of our CA; "
        f"ask {state}'s operators what their gateway logs",
    )


def _skew(
    ctx: DoctorContext, state: str, sent: datetime, received: datetime, theirs_naive: datetime
) -> Finding:
    theirs = theirs_naive.replace(tzinfo=sent.tzinfo)
    middle = sent + (received - sent) / 2
    skew = (theirs - middle).total_seconds()
    uncertainty = (received - sent).total_seconds() / 2
    delivery = ctx.settings.delivery
    limit = delivery.clock_window_seconds - delivery.resign_after_seconds
    check = f"clock {state}"
    detail = (
        f"{state}'s clock is {abs(skew):.1f} s {'ahead of' if skew >= 0 else 'behind'} ours "
        f"(±{uncertainty:.2f} s)"
    )
    remedy = (
        f"synchronise both hosts' clocks (NTP); {state} refuses envelopes created more "
        f"than {delivery.clock_window_seconds:g} s from its clock"
    )
    if abs(skew) - uncertainty >= limit:
        return fail(check, detail, remedy)
    if abs(skew) - uncertainty > SKEW_WARNING_S:
        return warn(check, detail, remedy)
    return ok(check, detail)


async def _tls(ctx: DoctorContext, state: str, endpoint: str, ca_pem: bytes) -> list[Finding]:
    """The handshake's version, cipher and (where readable) group; and the dates of the
    TLS certificate the partner serves, which its bundle does not carry."""
    pki = StateDirectory(ctx.settings.pki.dir)
    check = f"tls {state}"
    try:
        version, cipher, group, served = await asyncio.to_thread(
            _handshake,
            endpoint,
            cadata=ca_pem.decode("ascii"),
            certificate=pki.gateway_cert,
            key=pki.gateway_key,
            timeout_s=ctx.probe_timeout_s,
            server_name=_split(endpoint)[0],
        )
    except (OSError, ssl.SSLError, ValueError) as e:
        return [
            warn(
                check,
                f"a TLS handshake from Python's ssl failed ({_reason(e)}), though gRPC's succeeded",
                "",
            )
        ]
    expiry = certificate_validity(
        f"certificate {state} gateway_tls",
        x509.load_der_x509_certificate(served),
        ctx.clock(),
        f"ask {state} to renew its gateway's TLS certificate",
    )
    if group is not None:
        said = (
            f"group {group} (as Python's OpenSSL negotiates it; gRPC offers X25519MLKEM768 first)"
        )
    else:
        said = f"the key-exchange group of gRPC's own connection is in the key exchange {state} row"
    if version != "TLSv1.3":
        return [
            warn(check, f"{version}, {cipher}; {said}", f"ask {state} to enable TLS 1.3"),
            expiry,
        ]
    return [ok(check, f"{version}, {cipher}; {said}"), expiry]


# -- the registry ------------------------------------------------------------------


async def check_registry(ctx: DoctorContext) -> list[Finding]:
    registry = ctx.settings.registry
    if registry is None:
        return []
    check = f"registry ({registry.kind})"
    remedy = "start the registry's endpoint, or correct [registry] in the configuration"
    try:
        if isinstance(registry, GrpcAdapterSettings):
            await _grpc_ready(registry, ctx.probe_timeout_s)
            where = registry.target
        elif isinstance(registry, WebhookAdapterSettings):
            where = await asyncio.to_thread(_tcp_reachable, registry.url, ctx.probe_timeout_s)
        elif isinstance(registry, SqlAdapterSettings):
            await asyncio.to_thread(_sql_reachable, registry.database_url)
            where = "its database"
        elif isinstance(registry, SpoolAdapterSettings):
            directory = registry.directory
            if not directory.is_dir():
                return [fail(check, f"{directory}: no such directory", f"create {directory}")]
            where = str(directory)
        else:  # pragma: no cover - a kind added without a check here
            return [warn(check, "not checked: unknown kind", "")]
    except TimeoutError:
        return [
            fail(
                check,
                f"no connection within {ctx.probe_timeout_s:g} s to {_where(registry)}",
                remedy,
            )
        ]
    except (OSError, grpc.RpcError, ValueError) as e:
        return [fail(check, f"{_where(registry)} unreachable ({_reason(e)})", remedy)]
    except Exception as e:  # a driver's own error for an unreachable database
        return [fail(check, f"unreachable ({type(e).__name__})", remedy)]
    return [ok(check, f"reachable: {where}")]


def _where(registry: object) -> str:
    for name in ("target", "url", "directory"):
        value = getattr(registry, name, None)
        if value is not None:
            return str(value)
    return "its database"


async def _grpc_ready(registry: GrpcAdapterSettings, timeout_s: float) -> None:
    if registry.insecure_loopback:
        channel = grpc.aio.insecure_channel(registry.target)
    else:
        assert registry.tls_ca and registry.tls_cert and registry.tls_key  # the settings say so
        identity = ClientIdentity.from_files(
            trusted_ca=registry.tls_ca, certificate=registry.tls_cert, private_key=registry.tls_key
        )
        channel = grpc.aio.secure_channel(registry.target, identity.credentials())
    async with channel:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)


def _tcp_reachable(url: str, timeout_s: float) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    assert parts.hostname is not None
    with socket.create_connection((parts.hostname, port), timeout=timeout_s):
        return f"{parts.hostname}:{port}"


def _sql_reachable(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
