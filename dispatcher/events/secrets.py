"""Endpoint secrets: `whsec_...` made here, stored encrypted under a key-encryption key.

The KEKs come from `[webhooks] encryption_keys` (or MAILDISPATCH_WEBHOOK_KEYS), newest
first: the first encrypts, each decrypts what it encrypted (a stored secret names its KEK by
a short fingerprint), so keys rotate without re-registering endpoints. AES-256-GCM, the
endpoint id as associated data (a ciphertext moved to another endpoint does not decrypt).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dispatcher.errors import InvalidInput

PREFIX = "whsec_"


class SecretError(InvalidInput):
    """A secret cannot be encrypted or decrypted (no KEK, or not the KEK it was made with)."""

    code = "webhook_secret"


def new_secret() -> str:
    """A new endpoint secret as shown to the account once: `whsec_` + base64 of 32 bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_...` secret (Standard Webhooks: base64 after the prefix)."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def _kek(material: str) -> tuple[str, AESGCM]:
    key = hashlib.sha256(material.encode()).digest()
    return hashlib.sha256(b"kid" + key).hexdigest()[:8], AESGCM(key)


class SecretBox:
    """Encrypts and decrypts endpoint secrets with the configured KEKs."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = [_kek(k) for k in keys]

    @property
    def ready(self) -> bool:
        return bool(self._keys)

    def seal(self, secret: str, webhook_id: str) -> str:
        if not self._keys:
            raise SecretError(field="webhooks.encryption_keys", reason="none configured")
        kid, aead = self._keys[0]
        nonce = os.urandom(12)
        ct = aead.encrypt(nonce, secret.encode(), webhook_id.encode())
        return f"{kid}:{base64.b64encode(nonce + ct).decode()}"

    def open(self, sealed: str, webhook_id: str) -> str:
        kid, _, blob = sealed.partition(":")
        raw = base64.b64decode(blob)
        for k, aead in self._keys:
            if k == kid:
                try:
                    return aead.decrypt(raw[:12], raw[12:], webhook_id.encode()).decode()
                except InvalidTag:
                    break
        raise SecretError(
            field="webhooks.encryption_keys",
            reason=f"a secret of endpoint {webhook_id} needs a key not configured",
        )
