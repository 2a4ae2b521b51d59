"""No dataclass of the gateway prints a key: every field holding one is ``repr=False``.

A ``%r`` in a log line, an exception's message or a pytest diff shows a dataclass's
fields; a field holding a private key, a hashing key or a sealing key must not be among
them. The test walks every module of the ``gateway`` and ``adapters`` packages.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re

import adapters
import gateway
from gateway.connect import ClientIdentity

# Names of fields holding secrets; a public key is none.
SECRET_NAME = re.compile(r"^(?!public_)(.*_)?(key|secret)$")
SECRET_TYPE = re.compile(r"\bbytes\b|PrivateKey|Ed25519PrivateKey|EllipticCurvePrivateKey")


def _modules() -> list[str]:
    names = []
    for package in (gateway, adapters):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if ".migrations." not in info.name and not info.name.endswith(".__main__"):
                names.append(info.name)
    return names


def _writes_own_repr(cls: type) -> bool:
    """Whether ``cls`` has a ``__repr__`` of its own, not the one dataclasses generates
    (which wraps a function of its own, so it carries ``__wrapped__``)."""
    own = vars(cls).get("__repr__")
    return own is not None and not hasattr(own, "__wrapped__")


def test_every_field_holding_a_key_is_left_out_of_repr() -> None:
    printed = []
    seen = 0
    for name in _modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if not (isinstance(value, type) and dataclasses.is_dataclass(value)):
                continue
            if value.__module__ != name:
                continue
            for field in dataclasses.fields(value):
                if SECRET_NAME.match(field.name) and SECRET_TYPE.search(str(field.type)):
                    seen += 1
                    if field.repr and not _writes_own_repr(value):
                        printed.append(f"{name}.{value.__name__}.{field.name}")
    assert seen >= 8, "the walk found too few key fields: the name or type patterns broke"
    assert printed == []


def test_a_client_identity_prints_no_private_key() -> None:
    identity = ClientIdentity(
        trusted_ca=b"-----BEGIN CERTIFICATE-----ca",
        certificate_chain=b"-----BEGIN CERTIFICATE-----chain",
        private_key=b"stand-in for key bytes: SECRET-MATERIAL",
    )
    assert "SECRET-MATERIAL" not in repr(identity)
    assert "stand-in for key bytes" not in f"{identity!r}"
