"""``pouch demo``: several states' gateways on loopback, and a scenario between them."""
