"""The tamper-evident audit log, witnessed by the partner state (DESIGN section 6)."""
