"""``python -m gateway`` is the ``pouch`` command."""

from gateway.cli.main import main

main()
