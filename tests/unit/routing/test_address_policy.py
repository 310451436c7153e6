"""Which addresses MX answers may lead to (issue 10, finding 4)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.routing.address_policy import AddressPolicy, embedded

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # a cloud's metadata service
    "100.64.0.1",  # shared address space (carrier NAT)
    "224.0.0.1",
    "239.1.2.3",
    "240.0.0.1",
    "255.255.255.255",
    "0.0.0.0",
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.1.2.3",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_not_global_addresses_are_refused(address: str) -> None:
    why = AddressPolicy().refusal(address)
    assert why is not None and address in why


@pytest.mark.parametrize("address", ALLOWED)
def test_global_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().refusal(address) is None


def test_allow_private_opens_listed_networks_only() -> None:
    policy = AddressPolicy([ipaddress.ip_network("10.20.0.0/16")])
    assert policy.refusal("10.20.3.4") is None
    assert policy.refusal("::ffff:10.20.3.4") is None  # the same address, mapped
    assert policy.refusal("10.21.0.1") is not None
    assert policy.refusal("127.0.0.1") is not None


def test_the_unspecified_address_is_never_allowed() -> None:
    policy = AddressPolicy([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")])
    assert policy.refusal("0.0.0.0") is not None
    assert policy.refusal("::") is not None
    assert policy.refusal("::ffff:0.0.0.0") is not None


def test_split_keeps_order_and_reasons() -> None:
    kept, reasons = AddressPolicy().split(["8.8.8.8", "127.0.0.1", "1.1.1.1"])
    assert kept == ("8.8.8.8", "1.1.1.1")
    assert reasons == ["127.0.0.1 is not globally routable (loopback)"]


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_ipv6_form_of_an_ipv4_address_is_judged_as_it(n: int) -> None:
    v4 = ipaddress.IPv4Address(n)
    forms = [
        ipaddress.IPv6Address((0xFFFF << 32) | n),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address((0x64FF9B << 96) | n),  # 64:ff9b::a.b.c.d
        ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),  # 2002:AABB:CCDD::
    ]
    policy = AddressPolicy()
    verdict = policy.refusal(str(v4)) is None
    for form in forms:
        assert embedded(form) == v4
        assert (policy.refusal(str(form)) is None) == verdict, form


def test_routing_allow_private_config(tmp_path: object) -> None:
    from pathlib import Path

    from dispatcher.config import ConfigError
    from tests.corpus import corpus_config

    base = Path(str(tmp_path))
    config = corpus_config(base, routing={"allow_private": ["10.20.0.0/16", "fd00::/8"]})
    assert [str(n) for n in config.routing.allow_private] == ["10.20.0.0/16", "fd00::/8"]
    assert corpus_config(base).routing.allow_private == ()
    for bad, where in (("nope", "[0]"), ("0.0.0.0/0", "[0]"), (7, "[0]")):
        with pytest.raises(ConfigError) as info:
            corpus_config(base, routing={"allow_private": [bad]})
        assert info.value.key_path == "routing.allow_private" + where
