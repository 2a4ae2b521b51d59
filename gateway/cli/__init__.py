"""The ``pouch`` command."""
