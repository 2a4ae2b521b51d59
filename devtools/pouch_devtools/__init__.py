"""Pouch's development tools: the ``pouch demo`` harness and a reference registry.

Not part of the gateway: installed beside it (``pip install -e ./devtools``) for the
demo, the tests and the benchmarks, never on a gateway in service.
"""
