"""Providers: destinations grouped as the big mailbox providers are.

A message's route key is the provider its recipient domain or MX hosts match, else its MX
site (the destination's primary MX host name, prefixed `mx:`), so unlisted destinations are
shaped one site at a time under `[shaping.default]`. Matching is compiled once: a dict
lookup per label suffix of a host name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Provider names are identifiers, so they never collide with `mx:` site keys.
PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SITE_PREFIX = "mx:"


@dataclass(frozen=True, slots=True)
class Provider:
    """A named provider matched by MX host suffix (".google.com") or recipient domain."""

    name: str
    mx_suffixes: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


def site_key(mx_name: str) -> str:
    """The route key of a destination no provider matches."""
    return SITE_PREFIX + mx_name.lower().rstrip(".")


def is_site(route_key: str) -> bool:
    return route_key.startswith(SITE_PREFIX)


def _suffixes(name: str) -> Iterable[str]:
    """ "a.l.google.com" -> "a.l.google.com", "l.google.com", "google.com", "com"."""
    name = name.lower().rstrip(".")
    while name:
        yield name
        _, _, name = name.partition(".")


class ProviderMap:
    """Route keys from (recipient domain, MX host names)."""

    def __init__(self, providers: Sequence[Provider]) -> None:
        self.providers = tuple(providers)
        self._by_domain: dict[str, str] = {}
        self._by_suffix: dict[str, str] = {}
        for p in providers:
            for d in p.domains:
                self._by_domain.setdefault(d.lower().strip("."), p.name)
            for s in p.mx_suffixes:
                # ".google.com" and "google.com" both mean the domain and its subdomains.
                self._by_suffix.setdefault(s.lower().strip("."), p.name)

    def provider(self, rcpt_domain: str, mx_names: Sequence[str]) -> str | None:
        """The provider's name, or None when no provider matches."""
        name = self._by_domain.get(rcpt_domain.lower())
        if name is not None:
            return name
        if self._by_suffix:
            for mx in mx_names:
                for suffix in _suffixes(mx):
                    name = self._by_suffix.get(suffix)
                    if name is not None:
                        return name
        return None

    def route_key(self, rcpt_domain: str, mx_names: Sequence[str]) -> str:
        """The provider's name, else the site key of the primary MX (else the domain)."""
        name = self.provider(rcpt_domain, mx_names)
        if name is not None:
            return name
        return site_key(mx_names[0] if mx_names else rcpt_domain)
