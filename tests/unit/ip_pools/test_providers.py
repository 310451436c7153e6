"""Providers matched by MX suffix and recipient domain (ip_pools/providers.py)."""

from __future__ import annotations

from ip_pools import Provider, ProviderMap
from ip_pools.providers import is_site

PROVIDERS = ProviderMap(
    [
        Provider("google", mx_suffixes=(".google.com", ".googlemail.com")),
        Provider("microsoft", mx_suffixes=(".outlook.com",), domains=("hotmail.com",)),
        Provider("office365", mx_suffixes=(".protection.outlook.com",)),
    ]
)


def test_mx_suffix_matches_subdomains_only_on_label_boundaries() -> None:
    assert PROVIDERS.route_key("gmail.com", ["gmail-smtp-in.l.google.com"]) == "google"
    assert PROVIDERS.route_key("x.example", ["ASPMX.L.GOOGLE.COM."]) == "google"
    assert PROVIDERS.route_key("x.example", ["mx.notgoogle.com"]) == "mx:mx.notgoogle.com"


def test_the_longest_suffix_wins() -> None:
    assert PROVIDERS.route_key("corp.example", ["corp.mail.protection.outlook.com"]) == (
        "office365"
    )
    assert PROVIDERS.route_key("live.example", ["eur.olc.outlook.com"]) == "microsoft"


def test_recipient_domain_matches_before_mx() -> None:
    assert PROVIDERS.route_key("hotmail.com", ["mx.elsewhere.example"]) == "microsoft"
    assert PROVIDERS.route_key("HOTMAIL.com", []) == "microsoft"


def test_unmatched_destinations_are_their_primary_mx_site() -> None:
    key = PROVIDERS.route_key("small.example", ["mx1.small.example", "mx2.small.example"])
    assert key == "mx:mx1.small.example"
    assert is_site(key)
    assert PROVIDERS.route_key("nomx.example", []) == "mx:nomx.example"
    assert PROVIDERS.provider("small.example", ["mx1.small.example"]) is None


def test_a_later_mx_host_may_match() -> None:
    assert PROVIDERS.route_key("d.example", ["backup.d.example", "alt1.aspmx.l.google.com"]) == (
        "google"
    )
