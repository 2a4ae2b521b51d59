"""Alembic's script directory for the gateway's schema (a package so that it ships)."""
