"""VERP envelope senders: `<prefix>-<token>@<platform domain>`.

The token carries the message id and an HMAC-SHA256 tag (truncated to 80 bits) under a
node-wide secret, so a bounce maps back to its message and nobody can forge one for a
message they did not receive. Tokens are base32, lower case: local parts survive MTAs that
fold case, and only letters and digits appear.

Layout of the decoded token: one format byte, the id, the tag.
Format 0: the id is 32 lower-case hex digits (the ids `dispatcher.message.intake` makes), packed
to 16 bytes. Format 1: any other ASCII id of up to 18 bytes, kept as is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import stat
from pathlib import Path

from dispatcher.config import ConfigError

SECRET_BYTES = 32
_TAG_BYTES = 10
_MAX_RAW_ID = 18  # keeps the local part <= 64 octets with a 16-character prefix
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_PREFIX = re.compile(r"[a-z0-9]{1,16}")
_MAC_LABEL = b"maildispatch-verp-1\x00"


class VerpKeyError(ConfigError):
    """The VERP secret file (`verp.secret_file`) is missing (with create=False), unreadable
    or malformed."""

    code = "verp_key"

    def __init__(self, path: Path, *, reason: str) -> None:
        self.path = path
        super().__init__(field="verp.secret_file", reason=reason)

    def _text(self) -> str:
        return f"VERP secret {self.path}: {self.reason}"


class Verp:
    """Makes and checks VERP tokens under one secret. The secret never appears in reprs."""

    __slots__ = ("_key", "prefix")

    def __init__(self, secret: bytes, prefix: str = "b") -> None:
        if len(secret) < 16:
            raise ValueError("VERP secret must be at least 16 bytes")
        if not _PREFIX.fullmatch(prefix):
            raise ValueError("VERP prefix must be 1 to 16 lower-case letters or digits")
        self._key = secret
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"Verp(prefix={self.prefix!r})"

    @classmethod
    def from_file(
        cls, path: Path, prefix: str, *, create: bool = True, allow_insecure: bool = False
    ) -> Verp:
        """Load the secret from `path`; on first run create it (32 random bytes, mode 0600,
        its folder 0700).

        Creation is atomic (a private temporary file hard-linked into place), so processes
        starting together agree on one secret. A secret readable by group or others (its
        resolved target: secret mounts are symlinks) is refused unless `allow_insecure`
        ([security] allow_insecure_permissions): anyone reading it can forge bounces.
        """
        path = Path(path)
        try:
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                secret = f.read(SECRET_BYTES + 1)
        except FileNotFoundError:
            if not create:
                raise VerpKeyError(path, reason="file not found") from None
            secret, mode = _create_secret(path), 0o600
        except OSError as e:
            raise VerpKeyError(path, reason=f"cannot read: {e.strerror}") from None
        if mode & (stat.S_IRGRP | stat.S_IROTH) and not allow_insecure:
            raise VerpKeyError(
                path,
                reason=f"readable by group or others (mode {stat.S_IMODE(mode):03o}): chmod 600"
                " it, or set [security] allow_insecure_permissions = true",
            )
        if len(secret) != SECRET_BYTES:
            raise VerpKeyError(path, reason=f"expected {SECRET_BYTES} bytes, found {len(secret)}")
        return cls(secret, prefix)

    def _tag(self, packed: bytes) -> bytes:
        return hmac.digest(self._key, _MAC_LABEL + packed, hashlib.sha256)[:_TAG_BYTES]

    def token(self, message_id: str) -> str:
        """The token for `message_id`; deterministic, so retries reuse it."""
        if _HEX_ID.fullmatch(message_id):
            packed = b"\x00" + bytes.fromhex(message_id)
        else:
            raw = message_id.encode("ascii", "strict") if message_id.isascii() else b""
            if not raw or len(raw) > _MAX_RAW_ID:
                raise ValueError(
                    "message id must be 32 lower-case hex digits or 1 to "
                    f"{_MAX_RAW_ID} ASCII characters"
                )
            packed = b"\x01" + raw
        return _b32(packed + self._tag(packed))

    def address(self, token: str, platform_domain: str) -> str:
        """The envelope sender `<prefix>-<token>@<platform_domain>`."""
        return f"{self.prefix}-{token}@{platform_domain}"

    def parse(self, address: str) -> str | None:
        """The message id of a VERP address (or a bare local part) when its tag verifies."""
        local = address.rpartition("@")[0] if "@" in address else address
        head, sep, token = local.lower().partition("-")
        if not sep or head != self.prefix or not token or len(token) > 64:
            return None
        try:
            data = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        except (binascii.Error, ValueError):
            return None
        # Only the canonical spelling counts: base32 has slack in its last character.
        if len(data) <= 1 + _TAG_BYTES or _b32(data) != token:
            return None
        packed, tag = data[:-_TAG_BYTES], data[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(packed)):
            return None
        kind, body = packed[0], packed[1:]
        if kind == 0 and len(body) == 16:
            return body.hex()
        if kind == 1 and body.isascii():
            return body.decode("ascii")
        return None


_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = [a + b for a in _B32 for b in _B32]  # 10 bits -> two characters


def _b32(data: bytes) -> str:
    """Lower-case RFC 4648 base32 without padding (the stdlib one is pure Python and slow)."""
    chars = -(-len(data) * 8 // 5)
    pairs = -(-chars // 2)
    n = int.from_bytes(data, "big") << (pairs * 10 - len(data) * 8)
    text = "".join([_B32_PAIRS[(n >> s) & 1023] for s in range(pairs * 10 - 10, -1, -10)])
    return text[:chars]


def _create_secret(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    secret = os.urandom(SECRET_BYTES)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        # Another process won the race: its secret is the one.
        secret = path.read_bytes()
    finally:
        tmp.unlink()
    return secret
