"""Ports for throw-away deployments: chosen where no outgoing connection can take them."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pouch_devtools.demo import deployment
from pouch_devtools.demo.deployment import free_port


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_a_port_is_below_the_range_outgoing_connections_draw_from() -> None:
    low = _ephemeral_low()
    for _ in range(50):
        assert 10_000 <= free_port() < low


def test_a_port_is_never_handed_out_twice_and_can_be_bound() -> None:
    ports = [free_port() for _ in range(200)]

    assert len(set(ports)) == len(ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", ports[-1]))


class _Offers:
    """Offers the given ports in turn, as the random choice would."""

    def __init__(self, *ports: int) -> None:
        self._ports = iter(ports)

    def randint(self, low: int, high: int) -> int:
        return next(self._ports)


def test_a_port_something_listens_on_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        spare = free_port()
        deployment._handed_out.discard(taken)
        deployment._handed_out.discard(spare)
        monkeypatch.setattr(deployment, "_choice", _Offers(taken, spare))

        assert free_port() == spare
