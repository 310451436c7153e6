"""DKIM signing at OpenSSL speed: RSA-SHA256 (RFC 6376) and Ed25519-SHA256 (RFC 8463).

dkimpy signs RSA in pure Python (~10-20 ms a signature); here the private-key operation goes
through `cryptography` (OpenSSL) and everything that does not depend on the message is
prepared once per key. Per message: one parse of the header block, one body hash per
canonicalisation, one hash of the signed header fields shared by every signature (the hash
state is copied), and one private-key operation per signature. No `l=` tag, ever.

The output verifies with `dkim.verify()` and is deterministic for the same message, key and
timestamp (RSA PKCS#1 v1.5 and Ed25519 are deterministic).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from dispatcher.config import ConfigError
from dispatcher.dkim.canon import (
    BODY_CANON,
    HEADER_CANON,
    MessageFormatError,
    h_names,
    select_signed,
    split_message,
)
from dispatcher.dkim.keys import (
    SigningKey,
)
from dispatcher.dkim.store import KeyStore
from dispatcher.errors import InvalidInput

__all__ = ["DkimSignError", "DkimSigner", "MessageFormatError"]

_WIDTH = 76  # fold signature lines within the 78 characters RFC 5322 recommends
_B_CHUNK = 72
_PKCS1 = padding.PKCS1v15()
_PREHASHED = utils.Prehashed(hashes.SHA256())
_NAME = b"DKIM-Signature"
# Placeholders as long as the values they stand for (t= has 10 digits until 2286, bh= is the
# base64 of 32 bytes), so folding is decided once per key and filled in per message.
_T = b"\x00" * 10
_BH = b"\x01" * 44


class DkimSignError(InvalidInput):
    """A message cannot be signed for the domains asked; `field` is "domains"."""

    code = "dkim_sign_error"


def _fold(first: bytes, tokens: Sequence[bytes], sep: bytes) -> bytes:
    """Join tokens after `first`, starting a new line (CRLF SP) when one would pass _WIDTH."""
    out = [first]
    col = len(first)
    for i, tok in enumerate(tokens):
        piece = (sep if i else b"") + tok
        if i and col + len(piece) > _WIDTH:
            out.append(sep.rstrip() + b"\r\n " + tok)
            col = 1 + len(tok)
        else:
            out.append(piece)
            col += len(piece)
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What one key contributes to every signature: the fixed tags, folded, and its signer."""

    head: bytes  # "DKIM-Signature: v=1; a=...; c=...; d=...; s=...; t=_T; bh=_BH;", folded
    sign_digest: Callable[[bytes], bytes]


def _prepare(key: SigningKey, c_value: bytes) -> _Prepared:
    pk = key.private_key
    sign_digest: Callable[[bytes], bytes]
    if isinstance(pk, rsa.RSAPrivateKey):
        algorithm = b"rsa-sha256"

        def sign_digest(digest: bytes) -> bytes:
            return pk.sign(digest, _PKCS1, _PREHASHED)

    else:
        algorithm = b"ed25519-sha256"
        # RFC 8463: Ed25519 signs the SHA-256 hash of the header data (PureEdDSA over it).
        sign_digest = pk.sign
    tags = [
        b"v=1;",
        b"a=" + algorithm + b";",
        b"c=" + c_value + b";",
        b"d=" + key.domain.encode("ascii") + b";",
        b"s=" + key.selector.encode("ascii") + b";",
        b"t=" + _T + b";",
        b"bh=" + _BH + b";",
    ]
    return _Prepared(head=_fold(_NAME + b": ", tags, b" "), sign_digest=sign_digest)


class DkimSigner:
    """Signs messages with the keys of a KeyStore; one instance per engine, reused."""

    _H_CACHE_MAX = 256

    def __init__(self, keys: KeyStore, canonicalization: str = "relaxed/relaxed") -> None:
        header_c, _, body_c = canonicalization.partition("/")
        if header_c not in HEADER_CANON or body_c not in BODY_CANON:
            raise ConfigError(
                field="dkim.canonicalization",
                reason=f"expected relaxed|simple/relaxed|simple, got {canonicalization!r}",
            )
        self._keys = keys
        self._header_canon = HEADER_CANON[header_c]
        self._body_canon = BODY_CANON[body_c]
        c_value = canonicalization.encode("ascii")
        self._rsa_domains = {k.domain for k in keys.all_keys() if k.key_type == "rsa"}
        self._prepared = {(k.domain, k.selector): _prepare(k, c_value) for k in keys.all_keys()}
        # The folded h= tag per distinct signed-field layout: messages repeat a few layouts.
        self._h_tags: dict[tuple[int, ...], bytes] = {}

    def _h_tag(self, counts: tuple[int, ...]) -> bytes:
        tag = self._h_tags.get(counts)
        if tag is None:
            if len(self._h_tags) >= self._H_CACHE_MAX:
                self._h_tags.clear()
            names = h_names(counts)
            tag = b"\r\n" + _fold(b" h=", names, b":") + b";"
            self._h_tags[counts] = tag
        return tag

    def _keys_for(self, domains: Sequence[str], now: float) -> list[SigningKey]:
        if not domains:
            raise DkimSignError(
                code="no_domains", field="domains", reason="at least the author domain is required"
            )
        out: list[SigningKey] = []
        seen: set[str] = set()
        for raw in domains:
            domain = raw.lower()
            if domain in seen:
                continue  # the author domain may also be the platform domain: sign once
            seen.add(domain)
            active = self._keys.active(domain, now)
            if not active:
                if domain in self._keys.domains():
                    raise DkimSignError(
                        code="no_active_key",
                        field="domains",
                        reason=f"no key of {domain} is active yet",
                    )
                raise DkimSignError(
                    code="unknown_domain",
                    field="domains",
                    reason=f"no DKIM key configured for {domain}",
                )
            if active[0].key_type != "rsa" and domain in self._rsa_domains:
                # Ed25519 alone is ignored by most receivers: that would be unsigned mail.
                raise DkimSignError(
                    code="no_active_key",
                    field="domains",
                    reason=f"no RSA key of {domain} is active yet",
                )
            out.extend(active)
        return out

    def sign(self, message: bytes, domains: Sequence[str], now: float | None = None) -> bytes:
        """The DKIM-Signature field(s) to prepend to `message`, CRLF-terminated: for each
        domain in order (author first, then platform) its RSA signature, then its Ed25519
        one when configured. `now` (default: the clock) picks the keys and sets t=."""
        if now is None:
            now = time.time()
        keys = self._keys_for(domains, now)
        headers, body = split_message(message)
        counts, signed = select_signed(headers, self._header_canon)
        bh = base64.b64encode(hashlib.sha256(self._body_canon(body)).digest())
        t = str(int(now)).encode("ascii")
        tail = self._h_tag(counts) + b"\r\n b="
        base = hashlib.sha256(signed)
        out: list[bytes] = []
        for key in keys:
            prep = self._prepared[(key.domain, key.selector)]
            unsigned = prep.head.replace(_T, t).replace(_BH, bh) + tail
            h = base.copy()
            # The signature field itself is hashed with an empty b= and no final CRLF.
            h.update(self._header_canon(_NAME, unsigned[len(_NAME) + 1 :]).rstrip())
            b = base64.b64encode(prep.sign_digest(h.digest()))
            chunks = [b[i : i + _B_CHUNK] for i in range(0, len(b), _B_CHUNK)]
            out.append(unsigned + b"\r\n ".join(chunks) + b"\r\n")
        return b"".join(out)
