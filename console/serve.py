"""Start the console: check the configuration, then serve HTTPS until stopped.

``serve`` refuses with one line (:class:`ConsoleStartError`) a configuration that
breaks a rule, a trust bundle that cannot be read, or a port already taken; uvicorn
serves the application with the console's certificate and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import errno
import logging
import socket
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from prometheus_client import start_http_server

from console.config import ConsoleConfigError, check_console_files, load_console_settings
from console.preflight import preflight
from gateway.events import configure_logging
from gateway.pki.bundle import BundleError


class ConsoleStartError(Exception):
    """Why the console did not start: one line naming the file, key or port."""


def serve(
    config_path: Path,
    *,
    check_only: bool = False,
    log_format: str = "text",
    log_level: str = "INFO",
) -> None:
    from console.web import build_app

    try:
        settings = load_console_settings(config_path)
    except ConsoleConfigError as e:
        raise ConsoleStartError(str(e)) from None
    try:
        check_console_files(settings, now=datetime.now(UTC))
    except ConsoleConfigError as e:
        raise ConsoleStartError(str(e)) from None
    try:
        app = build_app(settings)
    except (BundleError, ValueError, OSError) as e:
        raise ConsoleStartError(
            f"{config_path}: gateway.trust_bundle: {settings.gateway.trust_bundle}: {e}"
        ) from None
    if check_only:
        findings = preflight(settings)
        for finding in findings:
            print(finding.line())
        if not all(f.ok for f in findings):
            raise ConsoleStartError(f"{config_path}: the console cannot serve as configured")
        print(f"{config_path}: the console's configuration is sound")
        return
    host, _, port_text = settings.console.listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.bind((host, int(port_text)))
    except OSError as e:
        listener.close()
        taken = e.errno == errno.EADDRINUSE
        raise ConsoleStartError(
            f"{config_path}: console.listen: {settings.console.listen} "
            + ("is already in use" if taken else f"cannot be bound: {e.strerror}")
        ) from None
    listener.listen(128)
    configure_logging(log_format=log_format, level=log_level)
    # httpx names every URL it fetches; uvicorn's access lines repeat what console_request
    # events say, with the query string, which the console never logs.
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = uvicorn.Config(
        app,
        ssl_certfile=str(settings.console.tls_certificate),
        ssl_keyfile=str(settings.console.tls_key),
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    if settings.console.metrics_listen is not None:
        metrics_host, _, metrics_port = settings.console.metrics_listen.rpartition(":")
        try:
            start_http_server(
                int(metrics_port),
                addr=metrics_host.strip("[]"),
                registry=app.console.metrics.registry,
            )
        except OSError as e:
            raise ConsoleStartError(
                f"{config_path}: console.metrics_listen: {settings.console.metrics_listen} "
                f"cannot be bound: {e.strerror}"
            ) from None
    print(f"console of {settings.console.state} at {settings.console.public_url}", flush=True)
    server.run(sockets=[listener])
