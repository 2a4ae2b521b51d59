"""Imports only go down the layers that docs/architecture.md draws.

    cli
    server
    exchanges
    delivery, agreements, policy, envelope, audit, metrics   (may import each other)
    adapters                                         (the registry adapters)
    store
    pki, trust
    errors, events, config, config_file, bounded_text, connect,
    adapters.settings                                (the foundation)

A module may import its own layer and every layer below it, never one above. The
migrations are the one exception: a data migration computes what the code of its day
stores (0010 fills request digests with the envelope's digest), so it may read any
layer; nothing imports a migration.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"gateway.cli", "gateway.__main__"}),
    frozenset({"gateway.server"}),
    frozenset({"gateway.exchanges"}),
    frozenset(
        {
            "gateway.delivery",
            "gateway.agreements",
            "gateway.policy",
            "gateway.envelope",
            "gateway.audit",
            "gateway.metrics",  # its collectors read the store and the CRLs
        }
    ),
    frozenset({"adapters"}),
    frozenset({"gateway.store"}),
    frozenset({"gateway.pki", "gateway.trust"}),
    frozenset(
        {
            "gateway",  # the package's own __init__
            "gateway.errors",
            "gateway.events",
            "gateway.config",
            "gateway.config_file",
            "gateway.bounded_text",
            "gateway.connect",
            "adapters.settings",
        }
    ),
)
EXEMPT = ("gateway.store.migrations",)


def layer_of(module: str) -> int | None:
    """The index of ``module``'s layer (0 is the top); ``None`` outside the product."""
    best: tuple[int, int] | None = None  # (length of the matched name, layer)
    for index, names in enumerate(LAYERS):
        for name in names:
            matches = module == name or module.startswith(f"{name}.")
            if matches and (best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> Iterator[tuple[str, Path]]:
    for package in ("gateway", "adapters"):
        for path in sorted((ROOT / package).rglob("*.py")):
            yield module_name(path), path


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def upward_imports() -> list[str]:
    found = []
    for module, path in product_modules():
        if module.startswith(EXEMPT):
            continue
        own = layer_of(module)
        assert own is not None, f"{module} is in no layer: place it in LAYERS"
        for line, imported in imports_of(path):
            target = layer_of(imported)
            if target is not None and target < own:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return sorted(set(found))


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports() == []


def test_every_module_of_the_product_has_a_layer() -> None:
    assert [m for m, _ in product_modules() if layer_of(m) is None] == []


@pytest.mark.parametrize(
    ("module", "imported"),
    [
        ("gateway.store.outbox", "gateway.envelope.header"),
        ("gateway.delivery.receiver", "gateway.exchanges.civil_inbound"),
        ("adapters.grpc_registry", "gateway.delivery.batches"),
        ("gateway.config", "adapters.factory"),
    ],
)
def test_the_rule_sees_an_upward_import(module: str, imported: str) -> None:
    own, target = layer_of(module), layer_of(imported)
    assert own is not None and target is not None
    assert target < own
