"""The key store: every configured DKIM key parsed once, and which selector signs when.

Rotation is data: a domain lists several selectors with `active_from` times and the store
answers "which key signs now?" by time, so a selector added to config.toml ahead of its start
time takes over at that time in a running engine, with no restart and no gap.
"""

from __future__ import annotations

from collections.abc import Iterable

from dispatcher.config import DkimConfig, DkimKeyConfig
from dispatcher.dkim.keys import (
    DkimKeyError,
    PrivateKey,
    SigningKey,
    generate_key,
    read_key,
    signing_key,
    write_key_file,
)


def _error(cfg: DkimKeyConfig, suffix: str, reason: str) -> DkimKeyError:
    return DkimKeyError(
        field=cfg.key_path + suffix,
        reason=reason,
        domain=cfg.domain,
        selector=cfg.selector,
        file=cfg.file,
    )


def check_layout(keys: Iterable[DkimKeyConfig]) -> None:
    """Checks across keys, before any file is touched: a selector used twice in a domain, two
    keys of one type starting at the same time (which would sign is ambiguous), and a domain
    without an RSA key (Ed25519 alone is not verified by most receivers)."""
    seen: dict[tuple[str, str], DkimKeyConfig] = {}
    starts: dict[tuple[str, str, float], DkimKeyConfig] = {}
    first: dict[str, DkimKeyConfig] = {}
    has_rsa: set[str] = set()
    for k in keys:
        other = seen.setdefault((k.domain, k.selector), k)
        if other is not k:
            raise _error(k, ".selector", f"selector already configured at {other.key_path}")
        other = starts.setdefault((k.domain, k.key_type, k.active_from), k)
        if other is not k:
            raise _error(
                k,
                ".active_from",
                f"same active_from as {other.key_path}: which one signs is ambiguous",
            )
        first.setdefault(k.domain, k)
        if k.key_type == "rsa":
            has_rsa.add(k.domain)
    for domain, k in first.items():
        if domain not in has_rsa:
            raise _error(
                k, ".type", "the domain has no RSA key; Ed25519 may only be added beside one"
            )


class KeyStore:
    """Every configured key, parsed and checked once; picks the signing keys by time."""

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        self._keys = tuple(keys)
        # Newest first, so the first key with active_from <= now is the one signing.
        by_domain: dict[str, tuple[list[SigningKey], list[SigningKey]]] = {}
        for k in sorted(self._keys, key=lambda k: -k.active_from):
            rsa_keys, ed_keys = by_domain.setdefault(k.domain, ([], []))
            (rsa_keys if k.key_type == "rsa" else ed_keys).append(k)
        self._by_domain = {d: (tuple(r), tuple(e)) for d, (r, e) in by_domain.items()}

    @classmethod
    def load(cls, cfg: DkimConfig, *, allow_insecure: bool = False) -> KeyStore:
        """Parse and check every key of `cfg` (DkimKeyError, a ConfigError, naming the key
        path). With `cfg.create_missing`, absent key files are generated, but only after every
        other key has passed its checks, so a bad config creates nothing. A key file readable
        by group or others is refused unless `allow_insecure`."""
        check_layout(cfg.keys)
        parsed: dict[int, PrivateKey] = {}
        missing: list[int] = []
        for i, k in enumerate(cfg.keys):
            if cfg.create_missing and not k.file.exists():
                if k.public_key is not None:
                    raise _error(
                        k,
                        ".public_key",
                        "key file not found; a new key could not match this public key",
                    )
                missing.append(i)
            else:
                parsed[i] = read_key(k, allow_insecure=allow_insecure)
        for i in missing:
            k = cfg.keys[i]
            key = generate_key(k.key_type)
            write_key_file(k.file, key)
            parsed[i] = key
        return cls(signing_key(k, parsed[i]) for i, k in enumerate(cfg.keys))

    def active(self, domain: str, now: float) -> list[SigningKey]:
        """The keys signing for `domain` at `now`: the newest active RSA key, then the newest
        active Ed25519 key when the domain has one. Empty when nothing is active yet."""
        pair = self._by_domain.get(domain)
        if pair is None:
            return []
        out: list[SigningKey] = []
        for keys in pair:
            for k in keys:
                if k.active_from <= now:
                    out.append(k)
                    break
        return out

    def domains(self) -> set[str]:
        """Every domain with at least one key."""
        return set(self._by_domain)

    def all_keys(self) -> tuple[SigningKey, ...]:
        """Every key, in config order."""
        return self._keys

    def dns_records(self) -> dict[bytes, bytes]:
        """`b"sel._domainkey.domain."` -> TXT value, for `dkim.verify(dnsfunc=...)` in tests and
        the demo (there is no DNS here), and for ops to compare with what is published."""
        return {k.dns_name: k.txt for k in self._keys}
