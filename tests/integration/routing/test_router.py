"""Router against a real DNS server on loopback (tests/support/dns_server.py); clock injected."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
from collections.abc import AsyncIterator
from typing import Any

import dns.asyncquery
import dns.asyncresolver
import dns.message
import pytest

from dispatcher.config import Route
from dispatcher.routing.address_policy import AddressPolicy
from dispatcher.routing.circuit import CircuitBreaker
from dispatcher.routing.router import MxHost, Resolution, RouteKind, Router, RoutingInputError
from tests.support.dns_server import DnsServer, Failure

V4 = frozenset({socket.AF_INET})
V4V6 = frozenset({socket.AF_INET, socket.AF_INET6})


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    async with DnsServer() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


# The answers below use documentation addresses (RFC 5737, RFC 3849), which are not global:
# these tests are about routing, so they are allowed as an operator's allow_private would.
DOCUMENTATION = AddressPolicy(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def router(server: DnsServer, clock: Clock, **kwargs: Any) -> Router:
    routes = kwargs.pop("routes", {})
    kwargs.setdefault("resolver", server.resolver())
    kwargs.setdefault("policy", DOCUMENTATION)
    return Router(routes, clock=clock, **kwargs)


def names(res: Resolution) -> list[str]:
    return [h.name for h in res.hosts]


def total_hits(server: DnsServer) -> int:
    return sum(server.hits.values())


async def test_mx_hosts_come_in_preference_order(dns_server: DnsServer, clock: Clock) -> None:
    # Declared out of order, so the result's order cannot come from the wire order.
    dns_server.add("shop.test", "MX", "30 c.mx.test.", "10 a.mx.test.", "20 b.mx.test.", ttl=600)
    dns_server.add("a.mx.test", "A", "192.0.2.1", "192.0.2.2")
    dns_server.add("b.mx.test", "A", "192.0.2.3")
    dns_server.add("c.mx.test", "A", "192.0.2.4")

    res = await router(dns_server, clock).resolve("shop.test")

    assert res.kind is RouteKind.OK and res.code == "ok"
    # The test server keeps the declared order, so the addresses' order is DNS's, kept.
    assert res.hosts == (
        MxHost("a.mx.test", ("192.0.2.1", "192.0.2.2"), 25, 10),
        MxHost("b.mx.test", ("192.0.2.3",), 25, 20),
        MxHost("c.mx.test", ("192.0.2.4",), 25, 30),
    )


async def test_equal_preferences_come_in_every_order(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add(
        "big.test", "MX", "5 first.test.", "10 x.test.", "10 y.test.", "10 z.test.", ttl=60
    )
    for host, ip in (
        ("first", "192.0.2.9"),
        ("x", "192.0.2.1"),
        ("y", "192.0.2.2"),
        ("z", "192.0.2.3"),
    ):
        dns_server.add(f"{host}.test", "A", ip, ttl=60)
    r = router(dns_server, clock)
    wanted = set(itertools.permutations(["x.test", "y.test", "z.test"]))
    seen: set[tuple[str, ...]] = set()
    for _ in range(300):  # P(some order still missing after 300 draws) < 1e-22
        res = await r.resolve("big.test")
        assert res.hosts[0].name == "first.test"  # a lower preference always goes first
        seen.add(tuple(names(res)[1:]))
        if seen == wanted:
            break
        clock.now += 61  # past every TTL: the next resolve asks DNS again
    assert seen == wanted


async def test_no_mx_but_an_address_is_the_implicit_mx(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("small.test", "A", "192.0.2.7")

    res = await router(dns_server, clock).resolve("small.test")

    assert res.kind is RouteKind.OK
    assert res.hosts == (MxHost("small.test", ("192.0.2.7",), 25, 0),)
    assert dns_server.hit("small.test", "MX") == 1


async def test_null_mx_bounces(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("nomail.test", "MX", "0 .")
    dns_server.add("nomail.test", "A", "192.0.2.8")  # an address must not turn into a route

    res = await router(dns_server, clock).resolve("nomail.test")

    assert (res.kind, res.code, res.hosts) == (RouteKind.BOUNCE, "null_mx", ())
    assert "7505" in res.reason


async def test_nxdomain_bounces_and_is_cached_by_the_soa_minimum(clock: Clock) -> None:
    async with DnsServer(soa_minimum=60) as server:
        r = router(server, clock, negative_ttl=300)

        res = await r.resolve("gone.test")
        assert (res.kind, res.code, res.reason) == (RouteKind.BOUNCE, "nxdomain", "NXDOMAIN")
        assert res.expires_at == clock.now + 60

        clock.now += 59
        assert (await r.resolve("gone.test")).code == "nxdomain"
        assert server.hit("gone.test", "MX") == 1
        clock.now += 2
        await r.resolve("gone.test")
        assert server.hit("gone.test", "MX") == 2


async def test_negative_ttl_bounds_negative_caching(clock: Clock) -> None:
    async with DnsServer(soa_minimum=3600) as server:
        res = await router(server, clock, negative_ttl=120).resolve("gone.test")
        assert res.expires_at == clock.now + 120
    async with DnsServer(soa_minimum=None) as server:  # no SOA at all: negative_ttl
        res = await router(server, clock, negative_ttl=120).resolve("gone.test")
        assert res.code == "nxdomain"
        assert res.expires_at == clock.now + 120


async def test_no_mx_and_no_address_bounces(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("textonly.test", "TXT", '"v=spf1 -all"')

    res = await router(dns_server, clock).resolve("textonly.test")

    assert (res.kind, res.code) == (RouteKind.BOUNCE, "no_mx_no_a")


async def test_ipv6_only_domain_without_mx_defers_for_ipv4_sources(
    dns_server: DnsServer, clock: Clock
) -> None:
    dns_server.add("six.test", "AAAA", "2001:db8::25")

    v4 = await router(dns_server, clock, source_families=V4).resolve("six.test")
    both = await router(dns_server, clock, source_families=V4V6).resolve("six.test")

    assert (v4.kind, v4.code) == (RouteKind.DEFER, "unreachable")
    assert both.kind is RouteKind.OK
    assert both.hosts == (MxHost("six.test", ("2001:db8::25",), 25, 0),)


async def test_servfail_defers_briefly(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("broken.test", "MX", "10 mx.broken.test.")
    dns_server.fail("broken.test", Failure.SERVFAIL)
    r = router(dns_server, clock, defer_ttl=20)

    res = await r.resolve("broken.test")

    assert (res.kind, res.code, res.reason) == (RouteKind.DEFER, "servfail", "SERVFAIL")
    assert res.expires_at == clock.now + 20
    dns_server.heal("broken.test")
    dns_server.add("mx.broken.test", "A", "192.0.2.10")
    clock.now += 21
    assert (await r.resolve("broken.test")).kind is RouteKind.OK


async def test_timeout_defers(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("slow.test", "MX", "10 mx.slow.test.")
    dns_server.fail("slow.test", Failure.DROP)
    r = router(dns_server, clock, resolver=dns_server.resolver(timeout=0.1), timeout=0.2)

    res = await r.resolve("slow.test")

    assert (res.kind, res.code, res.reason) == (RouteKind.DEFER, "timeout", "timeout")
    assert dns_server.hit("slow.test", "MX") >= 1  # it was asked, and did not answer


async def test_no_nameservers_defers(clock: Clock) -> None:
    resolver = dns.asyncresolver.Resolver(configure=False)

    res = await Router({}, resolver=resolver, clock=clock).resolve("any.test")

    assert (res.kind, res.code) == (RouteKind.DEFER, "servfail")


async def test_ipv6_only_mx_host_is_skipped_for_ipv4_sources(
    dns_server: DnsServer, clock: Clock
) -> None:
    dns_server.add("mixed.test", "MX", "10 v6.mixed.test.", "20 v4.mixed.test.")
    dns_server.add("v6.mixed.test", "AAAA", "2001:db8::1")
    dns_server.add("v4.mixed.test", "A", "192.0.2.20")
    dns_server.add("v4.mixed.test", "AAAA", "2001:db8::2")

    v4 = await router(dns_server, clock, source_families=V4).resolve("mixed.test")
    both = await router(dns_server, clock, source_families=V4V6).resolve("mixed.test")

    assert v4.hosts == (MxHost("v4.mixed.test", ("192.0.2.20",), 25, 20),)
    assert both.hosts == (
        MxHost("v6.mixed.test", ("2001:db8::1",), 25, 10),
        MxHost("v4.mixed.test", ("192.0.2.20", "2001:db8::2"), 25, 20),
    )


async def test_only_unreachable_mx_hosts_defer(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("v6only.test", "MX", "10 mx.v6only.test.")
    dns_server.add("mx.v6only.test", "AAAA", "2001:db8::1")

    res = await router(dns_server, clock, source_families=V4).resolve("v6only.test")

    assert (res.kind, res.code, res.hosts) == (RouteKind.DEFER, "unreachable", ())


async def test_a_failing_mx_host_is_skipped_and_the_answer_kept_briefly(
    dns_server: DnsServer, clock: Clock
) -> None:
    dns_server.add("half.test", "MX", "10 bad.half.test.", "20 good.half.test.", ttl=3600)
    dns_server.add("bad.half.test", "A", "192.0.2.30")
    dns_server.fail("bad.half.test", Failure.SERVFAIL)
    dns_server.add("good.half.test", "A", "192.0.2.31", ttl=3600)
    r = router(dns_server, clock, defer_ttl=10)

    res = await r.resolve("half.test")

    assert (res.kind, names(res)) == (RouteKind.OK, ["good.half.test"])
    assert res.expires_at == clock.now + 10  # so the failed host is asked again soon
    dns_server.heal("bad.half.test")
    clock.now += 11
    assert names(await r.resolve("half.test")) == ["bad.half.test", "good.half.test"]


async def test_all_mx_hosts_failing_defers(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("dark.test", "MX", "10 mx.dark.test.")
    dns_server.fail("mx.dark.test", Failure.SERVFAIL)

    res = await router(dns_server, clock).resolve("dark.test")

    assert (res.kind, res.code) == (RouteKind.DEFER, "servfail")


async def test_answers_are_cached_by_their_ttl(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("cached.test", "MX", "10 mx.cached.test.", ttl=60)
    dns_server.add("mx.cached.test", "A", "192.0.2.40", ttl=120)
    r = router(dns_server, clock)
    start = clock.now

    first = await r.resolve("cached.test")
    assert first.expires_at == start + 60  # the smallest TTL of the records used
    clock.now = start + 59
    assert await r.resolve("cached.test") is first
    assert (dns_server.hit("cached.test", "MX"), dns_server.hit("mx.cached.test", "A")) == (1, 1)

    clock.now = start + 61  # the MX expired; the host's address is still fresh
    await r.resolve("cached.test")
    assert (dns_server.hit("cached.test", "MX"), dns_server.hit("mx.cached.test", "A")) == (2, 1)

    clock.now = start + 121
    await r.resolve("cached.test")
    assert (dns_server.hit("cached.test", "MX"), dns_server.hit("mx.cached.test", "A")) == (3, 2)


async def test_mx_hosts_shared_by_domains_are_looked_up_once(
    dns_server: DnsServer, clock: Clock
) -> None:
    for dom in ("one.test", "two.test", "three.test"):
        dns_server.add(dom, "MX", "10 inbound.provider.test.")
    dns_server.add("inbound.provider.test", "A", "192.0.2.50")
    r = router(dns_server, clock)

    for dom in ("one.test", "two.test", "three.test"):
        assert names(await r.resolve(dom)) == ["inbound.provider.test"]

    assert dns_server.hit("inbound.provider.test", "A") == 1


async def test_concurrent_resolves_share_one_lookup(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("popular.test", "MX", "10 mx1.popular.test.", "10 mx2.popular.test.")
    dns_server.add("mx1.popular.test", "A", "192.0.2.61")
    dns_server.add("mx2.popular.test", "A", "192.0.2.62")
    r = router(dns_server, clock)

    results = await asyncio.gather(*(r.resolve("popular.test") for _ in range(100)))

    assert dns_server.hit("popular.test", "MX") == 1
    assert dns_server.hit("mx1.popular.test", "A") == 1
    assert dns_server.hit("mx2.popular.test", "A") == 1
    assert all(res is results[0] for res in results)
    assert results[0].kind is RouteKind.OK


async def test_a_cancelled_caller_does_not_cancel_the_shared_lookup(
    dns_server: DnsServer, clock: Clock
) -> None:
    dns_server.add("shared.test", "MX", "10 mx.shared.test.")
    dns_server.add("mx.shared.test", "A", "192.0.2.70")
    r = router(dns_server, clock)
    first = asyncio.ensure_future(r.resolve("shared.test"))
    second = asyncio.ensure_future(r.resolve("shared.test"))
    await asyncio.sleep(0)  # both are now waiting on the one lookup

    first.cancel()
    res = await second

    assert first.cancelled()
    assert res.kind is RouteKind.OK
    assert dns_server.hit("shared.test", "MX") == 1


async def test_routes_override_dns(dns_server: DnsServer, clock: Clock) -> None:
    # DNS says the opposite, so a result from DNS would show.
    dns_server.add("routed.test", "MX", "0 .")
    dns_server.add("relay.test", "A", "192.0.2.80")
    routes = {
        "routed.test": (
            Route("127.0.0.5", 2525),
            Route("relay.test", 2526),
            Route("::1", 2527),  # IPv6: unreachable from IPv4 sources, skipped
        )
    }
    r = router(dns_server, clock, routes=routes, source_families=V4)

    res = await r.resolve("routed.test")

    assert res.kind is RouteKind.OK
    assert res.hosts == (
        MxHost("127.0.0.5", ("127.0.0.5",), 2525, 0),
        MxHost("relay.test", ("192.0.2.80",), 2526, 1),
    )
    assert dns_server.hit("routed.test", "MX") == 0
    assert total_hits(dns_server) == 1  # relay.test's A, nothing else


async def test_route_to_an_ip_needs_no_dns(clock: Clock) -> None:
    # A resolver with no nameservers: any DNS query would defer.
    resolver = dns.asyncresolver.Resolver(configure=False)
    r = Router({"sink.test": (Route("127.0.0.9", 2525),)}, resolver=resolver, clock=clock)

    res = await r.resolve("sink.test")

    assert res.hosts == (MxHost("127.0.0.9", ("127.0.0.9",), 2525, 0),)
    unreachable = Router({"sink.test": (Route("::1", 25),)}, resolver=resolver, clock=clock)
    assert (await unreachable.resolve("sink.test")).code == "unreachable"


async def test_malformed_domains_are_refused(dns_server: DnsServer, clock: Clock) -> None:
    r = router(dns_server, clock)
    for bad in ("", "Upper.Test", "bücher.test", "no_underscore.test", "dot.test.", "-a.test"):
        with pytest.raises(RoutingInputError) as info:
            await r.resolve(bad)
        assert info.value.field == "domain"
        assert info.value.code == "invalid_domain"
    assert total_hits(dns_server) == 0


async def test_the_cache_stays_within_its_bound(dns_server: DnsServer, clock: Clock) -> None:
    for i in range(5):
        dns_server.add(f"d{i}.test", "A", f"192.0.2.{100 + i}")
    r = router(dns_server, clock, max_entries=3)

    for i in range(5):
        assert (await r.resolve(f"d{i}.test")).hosts[0].addresses == (f"192.0.2.{100 + i}",)

    assert len(r._domains.entries) <= 3
    assert len(r._hosts.entries) <= 3


def test_bad_settings_are_refused() -> None:
    resolver = dns.asyncresolver.Resolver(configure=False)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("source_families", {"source_families": frozenset()}),
        ("source_families", {"source_families": frozenset({socket.AF_UNIX})}),
        ("timeout", {"timeout": 0}),
        ("negative_ttl", {"negative_ttl": -1}),
        ("defer_ttl", {"defer_ttl": float("nan")}),
    ]
    for field, kwargs in cases:
        with pytest.raises(RoutingInputError) as info:
            Router({}, resolver=resolver, **kwargs)
        assert info.value.field == field
    with pytest.raises(RoutingInputError) as info:
        Router({"x.test": ()}, resolver=resolver)
    assert info.value.field == "routes.x.test"


def test_the_breaker_is_the_routers_or_the_one_given(clock: Clock) -> None:
    resolver = dns.asyncresolver.Resolver(configure=False)
    given = CircuitBreaker(failures=1)
    assert Router({}, resolver=resolver, breaker=given).breaker is given

    own = Router({}, resolver=resolver, clock=clock).breaker
    own.failure("mx.test")
    own.failure("mx.test")
    own.failure("mx.test")
    assert not own.allow("mx.test")
    clock.now += 30  # the router's clock drives its breaker
    assert own.allow("mx.test")


async def test_the_test_server_answers_over_tcp_too(dns_server: DnsServer) -> None:
    # Resolvers retry truncated answers over TCP on the same port; the helper must serve both.
    dns_server.add("tcp.test", "MX", "10 mx.tcp.test.")
    query = dns.message.make_query("tcp.test", "MX")

    response = await dns.asyncquery.tcp(query, "127.0.0.1", timeout=2.0, port=dns_server.port)

    assert [rr.to_text() for rr in response.answer[0]] == ["10 mx.tcp.test."]
    assert dns_server.hit("tcp.test", "MX") == 1


async def test_a_cname_on_the_way_bounds_the_ttl(dns_server: DnsServer, clock: Clock) -> None:
    dns_server.add("alias.test", "CNAME", "real.test.", ttl=30)
    dns_server.add("real.test", "MX", "10 mx.real.test.", ttl=600)
    dns_server.add("mx.real.test", "A", "192.0.2.90", ttl=600)
    r = router(dns_server, clock)

    res = await r.resolve("alias.test")

    assert names(res) == ["mx.real.test"]
    assert res.expires_at == clock.now + 30
