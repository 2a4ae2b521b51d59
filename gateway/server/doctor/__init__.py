"""``pouch doctor``: every check of a deployment, each answer with a remedy.

The same check functions run in two places: in ``pouch doctor --config`` (built from
the files the configuration names) and in a running gateway answering
``GatewayService.RunDiagnostics`` (with its own clock, revocation lists, agreement
standing and partner channels), so ``pouch doctor --target`` shows the gateway's own
view. :mod:`.findings` holds what they answer, :mod:`.run` the order they run in.
"""
