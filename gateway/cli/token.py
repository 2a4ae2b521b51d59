"""``pouch token``: a development identity provider and the tokens it mints.

For operators without an identity provider of their own. ``init-idp`` writes an ES256
key (mode 0600) and the JWKS the gateway reads; ``mint`` prints one access token,
bound to a client certificate, on stdout and nothing else, so it can be captured.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from gateway.pki.idp import JWKS_FILE, KEY_FILE, MAX_LIFETIME_S, create_development_idp, mint_token
from gateway.trust.principal import Scope


@click.group(name="token")
def token() -> None:
    """Development identity provider and access tokens for local callers."""


@token.command(name="init-idp")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for idp.key (private) and jwks.json (public).",
)
@click.option("--kid", default=None, help="Key id; defaults to the RFC 7638 thumbprint.")
def init_idp(out_dir: Path, kid: str | None) -> None:
    """Create a development identity provider key and its JWKS."""
    try:
        idp = create_development_idp(out_dir, kid=kid)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"private key: {idp.key_path} (mode 0600, keep it secret)")
    click.echo(f"JWKS:        {idp.jwks_path} (kid {idp.kid})")
    click.echo("For development only: use your state's identity provider in production.", err=True)


@token.command(name="mint")
@click.option(
    "--idp-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory written by 'pouch token init-idp'.",
)
@click.option(
    "--cert",
    "cert_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM client certificate the token is bound to (RFC 8705).",
)
@click.option("--issuer", required=True, help="The 'iss' claim; the gateway's configured issuer.")
@click.option("--audience", required=True, help="The 'aud' claim; the gateway's audience.")
@click.option("--subject", required=True, help="The 'sub' claim: who the caller is.")
@click.option(
    "--scope",
    "scopes",
    required=True,
    multiple=True,
    type=click.Choice([scope.value for scope in Scope]),
    help="A scope to grant; repeat for several.",
)
@click.option(
    "--lifetime",
    "lifetime_s",
    default=3600,
    show_default=True,
    type=click.IntRange(1, MAX_LIFETIME_S),
    help="Seconds until the token expires.",
)
@click.option("--client-id", default=None, help="The 'client_id' claim (RFC 9068).")
@click.option(
    "--partner-state",
    default=None,
    help="For a partner state's auditor: the audit API shows only that partnership.",
)
def mint(
    idp_dir: Path,
    cert_path: Path,
    issuer: str,
    audience: str,
    subject: str,
    scopes: tuple[str, ...],
    lifetime_s: int,
    client_id: str | None,
    partner_state: str | None,
) -> None:
    """Print an access token bound to a client certificate."""
    try:
        client_cert_pem = cert_path.read_bytes()
        minted = mint_token(
            key_path=idp_dir / KEY_FILE,
            jwks_path=idp_dir / JWKS_FILE,
            issuer=issuer,
            audience=audience,
            subject=subject,
            scopes=scopes,
            client_cert_pem=client_cert_pem,
            lifetime_s=lifetime_s,
            now=time.time(),
            client_id=client_id,
            partner_state=partner_state,
        )
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(minted)
