"""Who a caller is, in the gateway's terms: principals, scopes and what they may do.

Nothing here touches ``jwt`` or ``cryptography.hazmat``; tokens and certificates are
verified in :mod:`gateway.pki`, and this package maps what was verified onto the
domain (a state, a subject, a set of :class:`~gateway.trust.principal.Scope`).
"""
