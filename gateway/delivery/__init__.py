"""Guaranteed delivery: the outbox dispatcher, the inbound receiver, the registry handover."""
