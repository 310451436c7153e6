"""A tiny authoritative DNS server for tests, on 127.0.0.1 UDP and TCP (one port, chosen by the OS).

A test declares records (`add`), names that fail (`fail`: NXDOMAIN, SERVFAIL, or no answer at
all), and reads how often each (name, type) was asked (`hits`). Names with records but not of the
asked type get NOERROR with no answer (NODATA); undeclared names get NXDOMAIN; CNAMEs to declared
names are followed. Negative answers carry the zone's SOA (its MINIMUM is `soa_minimum`) unless
`soa_minimum` is None. Records go out in the order declared (dnspython would shuffle them; real
servers rotate them) unless `shuffle` is set, so a test sees what the code under test did.

    async with DnsServer() as dns_server:
        dns_server.add("example.test", "MX", "10 mx1.example.test.")
        resolver = dns_server.resolver()
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from collections import Counter
from types import TracebackType
from typing import cast

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class Failure(enum.StrEnum):
    """How a declared-failing name is answered."""

    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    DROP = "drop"  # no answer at all: the client times out


def _key(name: str) -> str:
    return name.lower().rstrip(".") + "."


class DnsServer:
    """Answers queries from the records and failures a test declared; counts every query."""

    def __init__(
        self, zone: str = "test", soa_minimum: int | None = 300, *, shuffle: bool = False
    ) -> None:
        self.zone = dns.name.from_text(zone)
        self.soa_minimum = soa_minimum
        self.shuffle = shuffle
        self.port = 0
        self.hits: Counter[tuple[str, str]] = Counter()
        self._records: dict[str, dict[int, dns.rrset.RRset]] = {}
        self._failures: dict[tuple[str, int | None], Failure] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    # -- what the test declares -------------------------------------------------------------

    def add(self, name: str, rdtype: str, *values: str, ttl: int = 300) -> None:
        """Add records, e.g. `add("x.test", "MX", "10 mx.x.test.", "20 mx2.x.test.", ttl=60)`."""
        t = dns.rdatatype.from_text(rdtype)
        rrset = dns.rrset.from_text_list(_key(name), ttl, dns.rdataclass.IN, t, list(values))
        self._records.setdefault(_key(name), {})[t] = rrset

    def remove(self, name: str) -> None:
        """Forget every record of `name` (it becomes NXDOMAIN)."""
        self._records.pop(_key(name), None)

    def fail(self, name: str, how: Failure | str, rdtype: str | None = None) -> None:
        """Answer `name` (only its `rdtype` queries, if given) with a failure."""
        t = dns.rdatatype.from_text(rdtype) if rdtype else None
        self._failures[(_key(name), t)] = Failure(how)

    def heal(self, name: str) -> None:
        """Stop failing `name`."""
        for k in [k for k in self._failures if k[0] == _key(name)]:
            del self._failures[k]

    def hit(self, name: str, rdtype: str) -> int:
        """How many queries for (`name`, `rdtype`) arrived, over UDP and TCP."""
        return self.hits[(_key(name), rdtype.upper())]

    def resolver(self, timeout: float = 2.0) -> dns.asyncresolver.Resolver:
        """A resolver that asks only this server (no system configuration, no search list)."""
        r = dns.asyncresolver.Resolver(configure=False)
        r.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", self.port)]
        r.timeout = timeout
        r.lifetime = timeout
        return r

    # -- answering ----------------------------------------------------------------------------

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if not query.question:
            return None
        q = query.question[0]
        name = _key(q.name.to_text())
        self.hits[(name, dns.rdatatype.to_text(q.rdtype))] += 1
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        failure = self._failures.get((name, q.rdtype)) or self._failures.get((name, None))
        if failure is Failure.DROP:
            return None
        if failure is Failure.SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire(want_shuffle=self.shuffle)
        records = None if failure is Failure.NXDOMAIN else self._records.get(name)
        # Follow CNAMEs among our own names, as an authoritative server does within its zone.
        for _ in range(8):
            if records is None or q.rdtype in records or dns.rdatatype.CNAME not in records:
                break
            cname = records[dns.rdatatype.CNAME]
            response.answer.append(cname)
            records = self._records.get(_key(cname[0].to_text()))
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            self._add_soa(response)
        elif q.rdtype in records:
            response.answer.append(records[q.rdtype])
        else:
            self._add_soa(response)
        return response.to_wire(want_shuffle=self.shuffle)

    def _add_soa(self, response: dns.message.Message) -> None:
        if self.soa_minimum is None:
            return
        soa = f"ns.{self.zone} hostmaster.{self.zone} 1 3600 600 86400 {self.soa_minimum}"
        response.authority.append(
            dns.rrset.from_text(self.zone, 3600, dns.rdataclass.IN, dns.rdatatype.SOA, soa)
        )

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP on a free port, then TCP on the same port (retrying if it is taken)."""
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for _ in range(20):
            udp, _proto = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=("127.0.0.1", 0), family=socket.AF_INET
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, "127.0.0.1", port)
            except OSError as e:  # that port is taken for TCP: try another
                last = e
                udp.close()
                continue
            self._udp = udp
            self.port = port
            return
        raise OSError(f"no port free for both UDP and TCP: {last}")

    async def close(self) -> None:
        """Stop listening and drop open TCP connections."""
        if self._udp is not None:
            self._udp.close()
        for w in list(self._conns):
            w.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.answer(await reader.readexactly(length))
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython 3.11's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self.server.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)
