"""Pouch: a secure gateway for bilateral consular-cooperation exchanges between states."""

__version__ = "0.1.0"
