"""The gateway's schema revisions, applied in order by ``gateway.store.migrate``."""
