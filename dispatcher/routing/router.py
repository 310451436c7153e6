"""Routing: a recipient domain -> the MX hosts to try, in order (RFC 5321 5.1, RFC 7505).

`[routes]` overrides win (no MX lookup, no address check: the operator's choice). Otherwise
MX records are looked up with dnspython's async resolver: preference order, random order
among equal preferences; no MX but an address -> the implicit MX (the domain itself); a null
MX or a name that does not exist -> BOUNCE; SERVFAIL or timeout -> DEFER. Addresses the
`AddressPolicy` refuses (not globally routable) are skipped; none left -> DEFER with the
reasons. Each host's addresses are looked up only in the families the source IPs have (A for
IPv4, AAAA for IPv6), so every address returned is one the sockets can reach.

Answers are cached per domain (and per MX host name, since many domains share a provider's
hosts) by their DNS TTL; negative answers by the SOA minimum, at most `negative_ttl`; DEFER only
for `defer_ttl`. Concurrent lookups of one name share a single query. A cached resolve() is a
dict lookup and a clock call.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
import math
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.SOA import SOA

from dispatcher.config import Route
from dispatcher.errors import InvalidInput
from dispatcher.routing.address_policy import AddressPolicy
from dispatcher.routing.circuit import CircuitBreaker

SMTP_PORT = 25
# A TTL above a day is almost always a mistake; re-asking once a day costs nothing.
_MAX_TTL = 86400.0
_LDH_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}\Z)(?:{_LDH_LABEL}\.)+{_LDH_LABEL}\Z")
_TRANSIENT = frozenset({"timeout", "servfail"})


class RoutingInputError(InvalidInput):
    """A bad argument to the router; `field` names it, `code` says what is wrong."""


@dataclass(frozen=True, slots=True)
class MxHost:
    """One host to try: its name, the addresses to dial in order, the port, its preference."""

    name: str
    addresses: tuple[str, ...]
    port: int
    preference: int


class RouteKind(enum.StrEnum):
    """What to do with mail for a domain: send it, bounce it, or try again later."""

    OK = "ok"
    BOUNCE = "bounce"
    DEFER = "defer"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The routing answer for one domain; valid until `expires_at` (on the router's clock)."""

    kind: RouteKind
    hosts: tuple[MxHost, ...]
    reason: str
    code: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Addresses:
    """A host name's addresses in the source families. code: ok, nodata, nxdomain or transient."""

    addresses: tuple[str, ...]
    code: str
    expires_at: float


class _Expiring(Protocol):
    @property
    def expires_at(self) -> float: ...


_T = TypeVar("_T", bound=_Expiring)


class _Cache(Generic[_T]):
    """Values by key until they expire; concurrent misses of one key share one lookup."""

    def __init__(self, clock: Callable[[], float], max_entries: int) -> None:
        self.entries: dict[str, _T] = {}
        self._flights: dict[str, asyncio.Future[_T]] = {}
        self._clock = clock
        self._max = max_entries

    def fresh(self, key: str) -> _T | None:
        value = self.entries.get(key)
        if value is not None and value.expires_at > self._clock():
            return value
        return None

    async def fetch(self, key: str, lookup: Callable[[], Awaitable[_T]]) -> _T:
        """The cached value, else the running lookup's, else a new lookup's."""
        value = self.fresh(key)
        if value is not None:
            return value
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._fill(key, lookup))
            self._flights[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        # shield: one caller being cancelled must not cancel the lookup the others wait for.
        return await asyncio.shield(flight)

    async def _fill(self, key: str, lookup: Callable[[], Awaitable[_T]]) -> _T:
        value = await lookup()
        if len(self.entries) >= self._max:
            self._prune()
        self.entries[key] = value
        return value

    def _landed(self, key: str, flight: asyncio.Future[_T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: every waiter has seen it; no "never retrieved" noise

    def _prune(self) -> None:
        now = self._clock()
        for k in [k for k, v in self.entries.items() if v.expires_at <= now]:
            del self.entries[k]
        # Still full: drop the oldest tenth (dicts keep insertion order).
        excess = len(self.entries) - self._max + max(self._max // 10, 1)
        for k in list(self.entries)[: max(excess, 0)]:
            del self.entries[k]


def _system_resolver() -> dns.asyncresolver.Resolver:
    try:
        return dns.asyncresolver.Resolver()
    except dns.resolver.NoResolverConfiguration:
        # No usable resolv.conf: every lookup then fails as "no nameservers" -> DEFER,
        # while routes to IP addresses keep working.
        return dns.asyncresolver.Resolver(configure=False)


def _soa_ttl(response: dns.message.Message | None) -> float | None:
    """The negative-caching TTL of a response (RFC 2308 5: min of SOA TTL and MINIMUM)."""
    if response is None:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, cast(SOA, rrset[0]).minimum))
    return None


def _nxdomain_response(e: dns.resolver.NXDOMAIN) -> dns.message.Message | None:
    responses = e.kwargs.get("responses") or {}
    return next(iter(responses.values()), None)


def _transient(e: dns.exception.DNSException) -> str:
    """The DEFER code of a lookup failure."""
    return "timeout" if isinstance(e, dns.exception.Timeout) else "servfail"


def _name_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class Router:
    """Resolves recipient domains to ordered MX hosts; owns the per-host circuit breaker."""

    def __init__(
        self,
        routes: Mapping[str, tuple[Route, ...]],
        *,
        resolver: dns.asyncresolver.Resolver | None = None,
        source_families: frozenset[int] = frozenset({socket.AF_INET}),
        clock: Callable[[], float] = time.monotonic,
        negative_ttl: float = 300.0,
        timeout: float = 5.0,
        breaker: CircuitBreaker | None = None,
        defer_ttl: float = 15.0,
        max_entries: int = 200_000,
        policy: AddressPolicy | None = None,
    ) -> None:
        if not source_families or not source_families <= {socket.AF_INET, socket.AF_INET6}:
            raise RoutingInputError(
                field="source_families",
                code="invalid_families",
                reason="expected AF_INET and/or AF_INET6",
            )
        for field, value in (("negative_ttl", negative_ttl), ("defer_ttl", defer_ttl)):
            if not math.isfinite(value) or value < 0:
                raise RoutingInputError(
                    field=field, code="invalid_ttl", reason=f"must be >= 0, got {value!r}"
                )
        if not math.isfinite(timeout) or timeout <= 0:
            raise RoutingInputError(
                field="timeout", code="invalid_timeout", reason=f"must be > 0, got {timeout!r}"
            )
        if max_entries < 1:
            raise RoutingInputError(
                field="max_entries", code="invalid_size", reason="must be at least 1"
            )
        for dom, rs in routes.items():
            if not rs or not all(isinstance(r, Route) for r in rs):
                raise RoutingInputError(
                    field=f"routes.{dom}",
                    code="invalid_route",
                    reason="expected a non-empty tuple of Route",
                )
        self._routes = dict(routes)
        # MX and A/AAAA answers lead only to global addresses (or allowed networks).
        self.policy = policy if policy is not None else AddressPolicy()
        self._resolver = resolver if resolver is not None else _system_resolver()
        self._families = source_families
        self._rdtypes = tuple(
            t
            for fam, t in ((socket.AF_INET, dns.rdatatype.A), (socket.AF_INET6, dns.rdatatype.AAAA))
            if fam in source_families
        )
        self._clock = clock
        self._negative_ttl = float(negative_ttl)
        self._defer_ttl = float(defer_ttl)
        self._timeout = float(timeout)
        self.breaker = breaker if breaker is not None else CircuitBreaker(clock=clock)
        self._domains: _Cache[Resolution] = _Cache(clock, max_entries)
        self._hosts: _Cache[_Addresses] = _Cache(clock, max_entries)

    async def resolve(self, domain: str) -> Resolution:
        """Where mail for `domain` (a lower-case A-label domain) goes. Never raises for DNS
        trouble (that is a DEFER); raises RoutingInputError for a malformed domain."""
        hit = self._domains.entries.get(domain)
        if hit is not None and hit.expires_at > self._clock():
            return hit
        if not isinstance(domain, str) or not _DOMAIN.match(domain):
            raise RoutingInputError(
                field="domain",
                code="invalid_domain",
                reason=f"expected a lower-case A-label domain, got {domain!r}",
            )
        return await self._domains.fetch(domain, functools.partial(self._lookup_domain, domain))

    # -- one domain ---------------------------------------------------------------------------

    async def _lookup_domain(self, domain: str) -> Resolution:
        deadline = asyncio.get_running_loop().time() + self._timeout
        now = self._clock()
        routes = self._routes.get(domain)
        if routes is not None:
            return await self._via_routes(routes, deadline, now)
        return await self._via_mx(domain, deadline, now)

    async def _via_routes(
        self, routes: tuple[Route, ...], deadline: float, now: float
    ) -> Resolution:
        async def host(route: Route, preference: int) -> tuple[MxHost | None, _Addresses | None]:
            try:
                ip = ipaddress.ip_address(route.host)
            except ValueError:
                found = await self._addresses(route.host, deadline)
                mx = MxHost(route.host, found.addresses, route.port, preference)
                return (mx if found.addresses else None), found
            family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family not in self._families:
                return None, None
            return MxHost(route.host, (route.host,), route.port, preference), None

        found = await asyncio.gather(*(host(r, i) for i, r in enumerate(routes)))
        hosts = tuple(h for h, _ in found if h is not None)
        lookups = [a for _, a in found if a is not None]
        expires = min((a.expires_at for a in lookups), default=math.inf)
        if hosts:
            return Resolution(RouteKind.OK, hosts, "route override", "ok", expires)
        return self._no_hosts(lookups, now, expires, "route override")

    async def _via_mx(self, domain: str, deadline: float, now: float) -> Resolution:
        try:
            answer = await self._query(domain, dns.rdatatype.MX, deadline)
        except dns.resolver.NXDOMAIN as e:
            ttl = self._negative(_soa_ttl(_nxdomain_response(e)))
            return Resolution(RouteKind.BOUNCE, (), "NXDOMAIN", "nxdomain", now + ttl)
        except dns.exception.DNSException as e:
            return self._defer(_transient(e), now)
        if answer.rrset is None:
            return await self._implicit_mx(domain, answer, deadline, now)

        # minimum_ttl: the MX RRset's TTL, or less when a CNAME on the way has a smaller one.
        mx_ttl = float(answer.chaining_result.minimum_ttl)
        mx_expires = now + min(mx_ttl, _MAX_TTL)
        records = [cast(MX, r) for r in answer.rrset]
        real = [r for r in records if r.exchange != dns.name.root]
        if not real:
            ttl = min(mx_ttl, self._negative_ttl)
            return Resolution(RouteKind.BOUNCE, (), "null MX (RFC 7505)", "null_mx", now + ttl)

        by_preference: dict[int, list[str]] = {}
        for r in real:
            by_preference.setdefault(r.preference, []).append(_name_text(r.exchange))
        ordered: list[tuple[int, str]] = []
        seen: set[str] = set()
        for preference in sorted(by_preference):
            names = by_preference[preference]
            random.shuffle(names)  # RFC 5321 5.1: spread load among equal preferences
            for name in names:
                if name not in seen:
                    seen.add(name)
                    ordered.append((preference, name))

        lookups = await asyncio.gather(*(self._addresses(n, deadline) for _, n in ordered))
        expires = min([mx_expires, *(a.expires_at for a in lookups)])
        refused: list[str] = []
        hosts_: list[MxHost] = []
        for (preference, name), a in zip(ordered, lookups, strict=True):
            kept, reasons = self.policy.split(a.addresses)
            refused += reasons
            if kept:
                hosts_.append(MxHost(name, kept, SMTP_PORT, preference))
        hosts = tuple(hosts_)
        if hosts:
            return Resolution(RouteKind.OK, hosts, "MX", "ok", expires)
        if refused:
            return self._not_global(refused, now, expires)
        return self._no_hosts(lookups, now, expires, "MX hosts")

    async def _implicit_mx(
        self, domain: str, mx_nodata: dns.resolver.Answer, deadline: float, now: float
    ) -> Resolution:
        mx_expires = now + self._negative(_soa_ttl(mx_nodata.response))
        found = await self._addresses(domain, deadline)
        expires = min(mx_expires, found.expires_at)
        if found.addresses:
            kept, refused = self.policy.split(found.addresses)
            if not kept:
                return self._not_global(refused, now, expires)
            host = MxHost(domain, kept, SMTP_PORT, 0)
            return Resolution(RouteKind.OK, (host,), "implicit MX (RFC 5321 5.1)", "ok", expires)
        if found.code in _TRANSIENT:
            return self._defer(found.code, now, expires)
        if found.code == "nxdomain":
            return Resolution(RouteKind.BOUNCE, (), "NXDOMAIN", "nxdomain", expires)
        # No address in our families. One in the other family means the domain does take mail,
        # just not from these sources: defer rather than bounce a valid address.
        other = [t for t in (dns.rdatatype.A, dns.rdatatype.AAAA) if t not in self._rdtypes]
        for rdtype in other:
            try:
                answer = await self._query(domain, rdtype, deadline)
            except dns.exception.DNSException:
                continue
            if answer.rrset is not None:
                reason = f"only {dns.rdatatype.to_text(rdtype)} records; no source IP can reach"
                return self._defer("unreachable", now, expires, reason)
        return Resolution(
            RouteKind.BOUNCE, (), "no MX and no A/AAAA records", "no_mx_no_a", expires
        )

    def _no_hosts(
        self, lookups: list[_Addresses], now: float, expires: float, what: str
    ) -> Resolution:
        transient = next((a.code for a in lookups if a.code in _TRANSIENT), None)
        if transient is not None:
            return self._defer(transient, now, expires, f"{transient} resolving {what}")
        return self._defer(
            "unreachable", now, expires, f"no address of the {what} is reachable from the sources"
        )

    def _not_global(self, refused: list[str], now: float, expires: float) -> Resolution:
        """Every address an answer led to was refused by the address policy: deferred,
        the reason kept for the outcome (the domain's DNS may be fixed)."""
        shown = "; ".join(refused[:3]) + (
            f" (+{len(refused) - 3} more)" if len(refused) > 3 else ""
        )
        reason = f"MX answers lead only to refused addresses: {shown}"
        return self._defer("not_global", now, expires, reason)

    def _defer(
        self, code: str, now: float, expires: float = math.inf, reason: str = ""
    ) -> Resolution:
        reason = reason or ("SERVFAIL" if code == "servfail" else code)
        return Resolution(RouteKind.DEFER, (), reason, code, min(expires, now + self._defer_ttl))

    def _negative(self, soa_ttl: float | None) -> float:
        return self._negative_ttl if soa_ttl is None else min(soa_ttl, self._negative_ttl)

    # -- one host name ------------------------------------------------------------------------

    async def _addresses(self, name: str, deadline: float) -> _Addresses:
        return await self._hosts.fetch(
            name, functools.partial(self._lookup_addresses, name, deadline)
        )

    async def _lookup_addresses(self, name: str, deadline: float) -> _Addresses:
        now = self._clock()
        results = await asyncio.gather(
            *(self._query(name, t, deadline) for t in self._rdtypes), return_exceptions=True
        )
        addresses: list[str] = []
        ttl = _MAX_TTL
        transient: str | None = None
        nxdomain = False
        for result in results:
            if isinstance(result, dns.resolver.NXDOMAIN):
                nxdomain = True
                ttl = min(ttl, self._negative(_soa_ttl(_nxdomain_response(result))))
            elif isinstance(result, dns.exception.DNSException):
                transient = _transient(result)
            elif isinstance(result, BaseException):
                raise result
            elif result.rrset is None:
                ttl = min(ttl, self._negative(_soa_ttl(result.response)))
            else:
                ttl = min(ttl, float(result.chaining_result.minimum_ttl))
                addresses.extend(r.to_text() for r in result.rrset)
        if transient is not None:
            # Partial or failed: keep it only briefly, so the missing part is asked again soon.
            code = "ok" if addresses else transient
            return _Addresses(tuple(addresses), code, now + min(ttl, self._defer_ttl))
        code = "ok" if addresses else ("nxdomain" if nxdomain else "nodata")
        return _Addresses(tuple(addresses), code, now + ttl)

    async def _query(
        self, name: str, rdtype: dns.rdatatype.RdataType, deadline: float
    ) -> dns.resolver.Answer:
        # One deadline for the whole resolution (MX, then the hosts' addresses).
        lifetime = max(deadline - asyncio.get_running_loop().time(), 0.0)
        return await self._resolver.resolve(
            name, rdtype, search=False, raise_on_no_answer=False, lifetime=lifetime
        )
