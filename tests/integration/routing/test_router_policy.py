"""MX answers that lead inside the network are skipped (issue 10, finding 4); real DNS server
on loopback (tests/support/dns_server.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest

from dispatcher.config import Route
from dispatcher.routing.address_policy import AddressPolicy
from dispatcher.routing.router import RouteKind, Router
from tests.support.dns_server import DnsServer


@pytest.fixture
async def dns() -> AsyncIterator[DnsServer]:
    async with DnsServer() as server:
        yield server


def router(dns: DnsServer, **kwargs: object) -> Router:
    return Router(kwargs.pop("routes", {}), resolver=dns.resolver(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "0.0.0.0"])
async def test_an_mx_pointing_inside_is_deferred_with_the_reason(
    dns: DnsServer, target: str
) -> None:
    dns.add("evil.test", "MX", "10 mx.evil.test.")
    dns.add("mx.evil.test", "A", target)
    res = await router(dns).resolve("evil.test")
    assert (res.kind, res.code, res.hosts) == (RouteKind.DEFER, "not_global", ())
    assert target in res.reason and "refused" in res.reason


async def test_refused_addresses_are_skipped_the_others_kept(dns: DnsServer) -> None:
    dns.add("mixed.test", "MX", "10 inside.mixed.test.", "20 outside.mixed.test.")
    dns.add("inside.mixed.test", "A", "127.0.0.1")
    dns.add("outside.mixed.test", "A", "8.8.8.8", "10.0.0.1")
    res = await router(dns).resolve("mixed.test")
    assert res.kind is RouteKind.OK
    assert [(h.name, h.addresses) for h in res.hosts] == [("outside.mixed.test", ("8.8.8.8",))]


async def test_an_implicit_mx_inside_is_deferred(dns: DnsServer) -> None:
    dns.add("nomx.test", "A", "192.168.0.7")
    res = await router(dns).resolve("nomx.test")
    assert (res.kind, res.code) == (RouteKind.DEFER, "not_global")


async def test_allow_private_and_routes_are_the_only_ways_in(dns: DnsServer) -> None:
    dns.add("relay.test", "MX", "10 mx.relay.test.")
    dns.add("mx.relay.test", "A", "10.20.0.5")
    allowed = router(dns, policy=AddressPolicy([ipaddress.ip_network("10.20.0.0/16")]))
    res = await allowed.resolve("relay.test")
    assert res.kind is RouteKind.OK and res.hosts[0].addresses == ("10.20.0.5",)
    # An override is the operator's own choice: not checked.
    routed = router(dns, routes={"sink.test": (Route("127.0.0.9", 2525),)})
    res = await routed.resolve("sink.test")
    assert res.kind is RouteKind.OK and res.hosts[0].addresses == ("127.0.0.9",)
