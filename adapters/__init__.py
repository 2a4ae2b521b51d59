"""How inbound traffic reaches a national registry, and a reference registry."""
