"""The checks of certificates, trust bundles and revocation lists, with their dates.

:func:`check_state_pki` is ``pouch serve``'s own check (its one-line message becomes
the detail); the others add what start-up does not refuse but an operator must know in
time: each certificate's dates (a warning within 30 days of its end), each partner
bundle's pin, and each CRL's freshness with the grace it is honoured for.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography import x509

from gateway.config import Settings
from gateway.delivery.partners import PARTNER_BUNDLES_DIR
from gateway.pki.bundle import load_trust_bundle
from gateway.pki.bundle_chain import PartnerBundles
from gateway.pki.crl import CrlOwner, CrlWatcher, Freshness
from gateway.pki.directory import StateDirectory
from gateway.pki.keys import load_certificate
from gateway.server.doctor.context import EXPIRY_WARNING_DAYS, day
from gateway.server.doctor.findings import Finding, fail, ok, warn
from gateway.server.startup_checks import (
    StartupError,
    check_jwks,
    check_partner,
    check_pki,
    check_registry_tls,
    check_sealing_keys,
)

_CERTIFICATE_REMEDY = (
    "issue a new certificate for this role from the state CA and reload the gateway "
    "(SIGHUP); a role named in the trust bundle needs a new bundle, pinned by partners"
)


# -- the state's own PKI -----------------------------------------------------------


def check_state_pki(settings: Settings, now: datetime) -> list[Finding]:
    """What ``pouch serve`` checks of the PKI, the JWKS, the sealing keys and the
    registry's TLS files, one row each."""
    findings = []
    try:
        pki = check_pki(settings, now)
        pairs = len(pki.key_pairs())
        findings.append(
            ok(
                "state PKI",
                f"{settings.gateway.state}'s CA; {pairs} key–certificate pairs (ML-DSA-44 "
                "included) match and chain to the state CA; the CRL verifies",
            )
        )
    except StartupError as e:
        findings.append(fail("state PKI", str(e), _pki_remedy(str(e))))
    try:
        check_jwks(settings)
        findings.append(
            ok("tokens", f"{settings.tokens.jwks_file}: a JWKS for the allowed algorithms")
        )
    except StartupError as e:
        findings.append(
            fail("tokens", str(e), "export the identity provider's public keys (JWKS) to that file")
        )
    if settings.storage is not None:
        try:
            check_sealing_keys(settings)
            findings.append(ok("sealing keys", "32-byte keys, readable by their owner only"))
        except StartupError as e:
            findings.append(
                fail(
                    "sealing keys",
                    str(e),
                    "restore the sealing key from its backup (a new key cannot open stored "
                    "payloads); for a new deployment, pouch keys sealing writes one",
                )
            )
    if settings.registry is not None:
        try:
            check_registry_tls(settings)
        except StartupError as e:
            findings.append(
                fail(
                    "registry TLS files",
                    str(e),
                    "issue the adapter's client certificate from the state CA (pouch pki "
                    f"issue-client --state-dir {settings.pki.dir} --name registry-adapter) "
                    "and name it in [registry]",
                )
            )
    return findings


def _pki_remedy(message: str) -> str:
    if "pouch pki upgrade" in message:
        return "run the command the detail names, then send partners the new bundle to pin"
    if "gateway.state" in message:
        return "point pki.dir at this state's directory, or correct gateway.state"
    return _CERTIFICATE_REMEDY


# -- expiry ------------------------------------------------------------------------


def certificate_validity(
    check: str, certificate: x509.Certificate, now: datetime, remedy: str
) -> Finding:
    """FAIL outside its validity period, WARN within 30 days of its end, with the dates."""
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    window = f"valid {day(start)} to {day(end)}"
    if end <= now:
        return fail(check, f"expired on {day(end)} ({window})", remedy)
    if start > now:
        return fail(check, f"not valid before {day(start)} ({window})", remedy)
    left = end - now
    if left < timedelta(days=EXPIRY_WARNING_DAYS):
        return warn(check, f"expires in {left.days} days, on {day(end)}", remedy)
    return ok(check, f"{window} ({left.days} days left)")


def check_expiry(settings: Settings, now: datetime) -> list[Finding]:
    """Every certificate this gateway acts with or trusts, with its dates."""
    pki = StateDirectory(settings.pki.dir)
    roles = {"state_ca": pki.ca_cert}
    roles |= {role: cert for role, (cert, _) in pki.key_pairs().items()}
    findings = []
    for role, path in roles.items():
        try:
            certificate = load_certificate(path)
        except (OSError, ValueError):
            continue  # check_files and check_state_pki say why
        remedy = (
            "renew the state CA (cross-signed) and send partners the new bundle to pin"
            if role == "state_ca"
            else _CERTIFICATE_REMEDY
        )
        findings.append(certificate_validity(f"certificate {role}", certificate, now, remedy))
    for partner in settings.partners:
        try:
            bundle = load_trust_bundle(partner.bundle)
        except (OSError, ValueError):
            continue  # check_partner_bundles says why
        remedy = (
            f"ask {partner.state} for its new trust bundle, check its digest with them out "
            f"of band and pin it in partners[{partner.state}]"
        )
        findings.append(
            certificate_validity(
                f"certificate {partner.state} CA", bundle.ca_certificate, now, remedy
            )
        )
        findings.append(
            certificate_validity(
                f"certificate {partner.state} signing", bundle.signing_certificate, now, remedy
            )
        )
    return findings


# -- partners' bundles -------------------------------------------------------------


def check_partner_bundles(settings: Settings) -> list[Finding]:
    """Each partner's bundle verifies, is that partner's, and is the one pinned."""
    findings = []
    for partner in settings.partners:
        check = f"bundle {partner.state}"
        try:
            bundle = check_partner(partner)
        except StartupError as e:
            findings.append(fail(check, str(e), _pin_remedy(partner.state, e.key)))
            continue
        pinned = "pinned" if partner.bundle_digest else "NOT pinned (insecure_unpinned)"
        finding = ok(
            check, f"{bundle.digest} {pinned}; CA {bundle.ca_certificate.subject.rfc4514_string()}"
        )
        if partner.bundle_digest is None:
            finding = warn(
                check,
                finding.detail,
                f"pin the digest checked with {partner.state} out of band: "
                f"partners[{partner.state}].bundle_digest",
            )
        findings.append(finding)
    return findings


def _pin_remedy(state: str, key: str | None) -> str:
    if key is not None and key.endswith("bundle_digest"):
        return (
            f"check the digest with {state} out of band (pouch pki show-bundle on their "
            "file): if the file is theirs, pin its digest; if not, get their bundle again"
        )
    return f"get {state}'s trust bundle again from {state}, and pin its digest"


# -- revocation lists --------------------------------------------------------------


def check_crls(
    settings: Settings, now: datetime, watchers: Sequence[CrlWatcher] | None
) -> list[Finding]:
    """Each CRL (own and partners') verifies, with its dates and its freshness."""
    grace = timedelta(seconds=settings.pki.crl_grace_seconds)
    if watchers is None:
        watchers = _crl_watchers(settings, grace, now)
    return [_crl_finding(settings, watcher, now, grace) for watcher in watchers]


def _crl_watchers(settings: Settings, grace: timedelta, now: datetime) -> list[CrlWatcher]:
    pki = StateDirectory(settings.pki.dir)
    found: list[CrlWatcher] = []
    try:
        own_ca = load_certificate(pki.ca_cert)
        found.append(
            CrlWatcher(
                pki.crl,
                own_ca,
                CrlOwner("own", settings.gateway.state),
                grace=grace,
                clock=lambda: now,
            )
        )
    except (OSError, ValueError):
        pass  # the state PKI check says why
    overlap = timedelta(seconds=settings.delivery.partner_bundle_overlap_seconds)
    for partner in settings.partners:
        if partner.crl is None:
            continue
        try:
            pinned = load_trust_bundle(partner.bundle)
            # A CA the partner renewed by cross-signing signs its CRL once announced.
            trusted = PartnerBundles(
                {partner.state: pinned}, overlap=overlap, store=pki.root / PARTNER_BUNDLES_DIR
            ).trusted_cas(partner.state, now)
            owner = CrlOwner("partner", partner.state)
            found.append(
                CrlWatcher(
                    partner.crl,
                    pinned.ca_certificate,
                    owner,
                    grace=grace,
                    clock=lambda: now,
                    issuers=functools.partial(tuple, trusted),
                )
            )
        except (OSError, ValueError):
            continue  # the bundle check (it verifies the partner's CRL too) says why
    return found


def _crl_finding(
    settings: Settings, watcher: CrlWatcher, now: datetime, grace: timedelta
) -> Finding:
    owner = watcher.owner
    who = owner.state if owner is not None else "?"
    own = owner is not None and owner.role == "own"
    check = f"crl {'own' if own else who}"
    current = watcher.current()
    dates = f"issued {day(current.last_update)}, next update {day(current.next_update)}"
    remedy = (
        f"pouch pki refresh-crl --state-dir {settings.pki.dir}; then give partners the new "
        "crl.pem (the gateway reads it without restart)"
        if own
        else f"ask {who} for its current CRL and put it at {watcher.path}; the gateway reads "
        "it without restart"
    )
    freshness = watcher.freshness()
    if freshness is Freshness.STALE:
        refused = "local callers" if own else f"{who}'s gateway"
        return fail(
            check,
            f"stale: {dates}, grace of {_span(grace)} ended {day(current.next_update + grace)}; "
            f"calls from {refused} are refused (CRL_STALE)",
            remedy,
        )
    if freshness is Freshness.IN_GRACE:
        return warn(
            check,
            f"past its next update: {dates}; honoured until {day(current.next_update + grace)}",
            remedy,
        )
    return ok(check, f"fresh: {dates}")


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h"
