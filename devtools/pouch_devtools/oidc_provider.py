"""A state's OpenID Connect provider for tests: panva's oidc-provider run by Node.js.

The console signs officers in with the authorization code flow and PKCE at their state's
identity provider. Its tests run against a real, OpenID Certified provider rather than a
stub that accepts anything: ``devtools/node/identity_provider.mjs``, installed with
``npm ci --prefix devtools/node``. This module writes its configuration, starts it and
stops it.

What the provider guarantees (see the script's header for the whole list): PKCE S256
required; officers sign in on its own form against the configured accounts; consent is
given for the configured clients, for the requested gateway scopes the account is allowed
and no others; access tokens are RFC 9068 JWTs for ``resource`` (the gateway's audience)
bound to the client certificate presented at the token endpoint (``cnf["x5t#S256"]``),
so :class:`gateway.pki.tokens.TokenVerifier` accepts them with::

    [tokens]
    issuer = provider.issuer
    audience = resource
    jwks_file = the file written by provider.write_jwks(...)

Usage::

    with IdentityProvider(
        tmp / "idp",
        tls=ProviderTls(cert=server_crt, key=server_key, client_ca=ca_crt),
        resource="pouch:LU",
        clients=[Client("console", secret, redirect_uris=("https://127.0.0.1:8443/auth",))],
        accounts=[Account("clerk", password, name="A. Clerk", scopes=("civil:submit",))],
    ) as provider:
        provider.write_jwks(tmp / "jwks.json", ca=ca_crt)
        ...  # the console's issuer is provider.issuer

A missing ``node_modules`` raises :class:`NodeModulesMissing`, naming the command that
installs them; a provider that does not come up raises :class:`ProviderStartFailed` with
the tail of what it wrote to stderr.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from gateway.pki.keys import write_public_file, write_secret_file
from gateway.pki.tokens import JwksKeys
from gateway.trust.principal import Scope

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "identity_provider.mjs"
INSTALL_COMMAND = "npm ci --prefix devtools/node"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
STDERR_TAIL_BYTES = 4000
GATEWAY_SCOPES = tuple(scope.value for scope in Scope)
"""The scopes an account may be granted: the gateway's own."""
_REQUIRED_PACKAGES = ("oidc-provider", "axe-core")


class IdentityProviderError(RuntimeError):
    """The test identity provider cannot be used; the message says why and what to do."""


class NodeModulesMissing(IdentityProviderError):
    """``devtools/node/node_modules`` (or Node.js itself) is not installed."""


class ProviderStartFailed(IdentityProviderError):
    """The provider process exited or did not say it was ready in time."""


def node_modules_present() -> bool:
    """Whether ``npm ci --prefix devtools/node`` has installed what the tools need."""
    return all(
        (NODE_DIR / "node_modules" / package / "package.json").is_file()
        for package in _REQUIRED_PACKAGES
    )


def require_node_modules() -> None:
    """Raise :class:`NodeModulesMissing`, naming the install command, if they are absent."""
    if not node_modules_present():
        raise NodeModulesMissing(
            f"the Node.js packages in {NODE_DIR} are not installed; run `{INSTALL_COMMAND}`"
        )


@dataclass(frozen=True)
class Account:
    """An officer who can sign in: ``username`` becomes the token's ``sub``."""

    username: str
    password: str = field(repr=False)
    name: str
    scopes: tuple[str, ...]
    # A partner state's auditor: the token carries ``pouch_partner_state``.
    partner_state: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.scopes) - set(GATEWAY_SCOPES))
        if unknown:
            raise ValueError(f"account {self.username!r}: {unknown[0]!r} is not a gateway scope")


@dataclass(frozen=True)
class Client:
    """A confidential relying party (the console), registered with the provider."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    token_endpoint_auth_method: str = "client_secret_basic"  # noqa: S105 (a method, no secret)

    def __post_init__(self) -> None:
        if self.token_endpoint_auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ValueError("a client authenticates with client_secret_basic or _post")


@dataclass(frozen=True)
class ProviderTls:
    """The provider's server certificate and key, and the CA of the client certificates
    its token endpoint binds access tokens to."""

    cert: Path
    key: Path
    client_ca: Path


class IdentityProvider:
    """One provider process; a context manager that starts it and stops it."""

    def __init__(
        self,
        directory: Path,
        *,
        tls: ProviderTls,
        resource: str,
        clients: Sequence[Client],
        accounts: Sequence[Account],
        access_token_ttl_s: int = 600,
        port: int = 0,
        issuer: str | None = None,
        signing_jwk: Mapping[str, str] | None = None,
    ) -> None:
        """``port`` 0 lets the provider take a free port; ``issuer`` defaults to
        ``https://127.0.0.1:<the port it listens on>``. ``signing_jwk``, a private P-256
        JWK (its ``kid`` kept), keeps tokens and a JWKS file valid across restarts; by
        default the provider makes a new ES256 key each time it starts."""
        if not clients or not accounts:
            raise ValueError("an identity provider needs at least one client and one account")
        self._directory = directory
        self._config: dict[str, Any] = {
            "issuer": issuer,
            "port": port,
            "tls": {
                "cert": str(tls.cert),
                "key": str(tls.key),
                "client_ca": str(tls.client_ca),
            },
            "signing_key": dict(signing_jwk) if signing_jwk is not None else None,
            "clients": [_client_json(c) for c in clients],
            "accounts": [_account_json(a) for a in accounts],
            "resource": resource,
            "access_token_ttl": access_token_ttl_s,
        }
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._issuer: str | None = None
        self._stderr_path = directory / "identity-provider.log"

    @property
    def issuer(self) -> str:
        if self._issuer is None:
            raise IdentityProviderError("the identity provider is not running")
        return self._issuer

    @property
    def pid(self) -> int | None:
        """The provider process's id while it runs (``pouch demo --keep`` prints it)."""
        return None if self._process is None else self._process.pid

    @property
    def resource(self) -> str:
        return str(self._config["resource"])

    def __enter__(self) -> IdentityProvider:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._process is not None:
            raise IdentityProviderError("the identity provider is already running")
        require_node_modules()
        node = shutil.which("node")
        if node is None:
            raise NodeModulesMissing("Node.js (`node`) is not on PATH")
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        config_path = self._directory / "identity-provider.json"
        # The file holds the accounts' passwords and the clients' secrets.
        write_secret_file(config_path, json.dumps(self._config).encode("utf-8"), overwrite=True)
        with self._stderr_path.open("ab") as stderr:
            self._process = subprocess.Popen(
                [node, str(SCRIPT), str(config_path)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                cwd=NODE_DIR,
                env={**os.environ, "NODE_ENV": "production"},
                start_new_session=True,
            )
        self._issuer = self._wait_ready(self._process)

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> str:
        assert process.stdout is not None
        lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=_drain, args=(process.stdout, lines), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                if process.poll() is not None:
                    break
                continue
            words = line.decode("utf-8", "replace").split()
            if len(words) == 2 and words[0] == "ready":
                return words[1]
        self.stop()
        raise ProviderStartFailed(
            f"the identity provider did not become ready (exit code {process.returncode}); "
            f"it said: {self._stderr_tail()}"
        )

    def _stderr_tail(self) -> str:
        try:
            data = self._stderr_path.read_bytes()[-STDERR_TAIL_BYTES:]
        except OSError:
            return "(nothing)"
        return data.decode("utf-8", "replace").strip() or "(nothing)"

    def stop(self) -> None:
        process, self._process, self._issuer = self._process, None, None
        reader, self._reader = self._reader, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # The pipe ends with the process: the reader sees its end and closes it.
        if reader is not None:
            reader.join(timeout=STOP_TIMEOUT_S)

    def discovery(self, *, ca: Path) -> dict[str, Any]:
        """The provider's ``/.well-known/openid-configuration``, its TLS checked with ``ca``."""
        document = self._get_json(f"{self.issuer}/.well-known/openid-configuration", ca=ca)
        if document.get("issuer") != self.issuer:
            raise IdentityProviderError("the discovery document names another issuer")
        return document

    def write_jwks(self, path: Path, *, ca: Path) -> Path:
        """Fetch the JWKS at the discovery's ``jwks_uri`` and write it where the gateway's
        ``[tokens] jwks_file`` reads it, after checking it as the gateway will."""
        jwks_uri = self.discovery(ca=ca).get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IdentityProviderError("the discovery document names no jwks_uri")
        document = self._get_json(jwks_uri, ca=ca)
        text = json.dumps(document, indent=2) + "\n"
        JwksKeys.from_json(text, source=jwks_uri)
        write_public_file(path, text.encode("utf-8"))
        return path

    def _get_json(self, url: str, *, ca: Path) -> dict[str, Any]:
        context = ssl.create_default_context(cafile=str(ca))
        try:
            response = httpx.get(url, verify=context, timeout=10.0)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as e:
            raise IdentityProviderError(f"cannot read {url}: {e}") from e
        if not isinstance(document, dict):
            raise IdentityProviderError(f"{url} is not a JSON object")
        return document


def _drain(stream: IO[bytes], lines: queue.Queue[bytes]) -> None:
    # Read to the end so the provider never blocks on a full pipe.
    with stream:
        for line in stream:
            lines.put(line)


def _client_json(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
    }


def _account_json(account: Account) -> dict[str, Any]:
    return {
        "username": account.username,
        "password": account.password,
        "name": account.name,
        "scopes": list(account.scopes),
        "partner_state": account.partner_state,
    }


__all__ = [
    "GATEWAY_SCOPES",
    "INSTALL_COMMAND",
    "Account",
    "Client",
    "IdentityProvider",
    "IdentityProviderError",
    "NodeModulesMissing",
    "ProviderStartFailed",
    "ProviderTls",
    "node_modules_present",
    "require_node_modules",
]
