"""DKIM private keys: reading and checking key files, writing new ones, DNS TXT records.

A key file holds one private key: PEM in PKCS#8 (`BEGIN PRIVATE KEY`) or, for RSA, PKCS#1
(`BEGIN RSA PRIVATE KEY`); an Ed25519 key may also be dkimpy's own format (the base64 seed
written by `dknewkey`). Key material never enters a log line, an error message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from dispatcher.config import ConfigError, DkimKeyConfig, check_domain
from dispatcher.errors import InvalidInput

log = logging.getLogger(__name__)

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

MIN_RSA_BITS = 1024
MAX_RSA_BITS = 8192
_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})")
# One DNS character-string holds at most 255 bytes (RFC 1035 3.3); longer TXT values are split.
_TXT_CHUNK = 255


class DkimKeyError(ConfigError):
    """A configured DKIM key is missing, unreadable, too weak or does not match its record."""

    code = "dkim_key_error"

    def __init__(self, *, field: str, reason: str, domain: str, selector: str, file: Path) -> None:
        self.domain = domain
        self.selector = selector
        self.file = file
        super().__init__(field=field, reason=f"{domain} selector {selector} ({file}): {reason}")


class KeygenError(InvalidInput):
    """`keygen` was given a bad argument; `field` names it."""

    code = "dkim_keygen_error"


class KeyFileExistsError(InvalidInput, FileExistsError):
    """A key file is already there (`field` "out_dir"): keys are never overwritten."""

    code = "dkim_key_exists"

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            field="out_dir", reason=f"key file already exists, refusing to overwrite it: {path}"
        )

    def _text(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One parsed, checked private key and where it publishes (`selector._domainkey.domain`)."""

    domain: str
    selector: str
    key_type: str  # "rsa" or "ed25519"
    active_from: float
    private_key: PrivateKey = field(repr=False, compare=False)
    bits: int
    txt: bytes  # the TXT record value: b"v=DKIM1; k=rsa; p=..."
    file: Path
    key_path: str = ""

    @property
    def dns_name(self) -> bytes:
        """The TXT record's owner name, with the root dot (as dkimpy asks for it)."""
        return f"{self.selector}._domainkey.{self.domain}.".encode("ascii")


def public_key_bytes(key: PrivateKey) -> bytes:
    """The p= payload: SubjectPublicKeyInfo DER for RSA (RFC 6376), the raw 32 bytes for
    Ed25519 (RFC 8463)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def txt_value(key: PrivateKey) -> bytes:
    """The TXT record value to publish for `key`."""
    k = b"rsa" if isinstance(key, rsa.RSAPrivateKey) else b"ed25519"
    return b"v=DKIM1; k=" + k + b"; p=" + base64.b64encode(public_key_bytes(key))


def zone_line(domain: str, selector: str, txt: bytes) -> str:
    """`sel._domainkey.domain IN TXT "..."`, split into 255-byte strings when longer."""
    value = txt.decode("ascii")
    parts = [value[i : i + _TXT_CHUNK] for i in range(0, len(value), _TXT_CHUNK)]
    return f"{selector}._domainkey.{domain} IN TXT " + " ".join(f'"{p}"' for p in parts)


def parse_key_bytes(data: bytes) -> PrivateKey:
    """Parse key file contents; ValueError (without key material) when it is not a key."""
    if b"-----BEGIN" in data:
        if b"ENCRYPTED" in data:
            raise ValueError(
                "the key is encrypted; DKIM keys must be stored unencrypted (mode 0600)"
            )
        try:
            # OpenSSL's full RSA key check costs 40-160 ms a key (startup with many author
            # domains); check_key's sign-and-verify self-test catches a broken key instead.
            key = serialization.load_pem_private_key(
                data, password=None, unsafe_skip_rsa_key_validation=True
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError("not a readable PEM private key (PKCS#8 or PKCS#1 expected)") from None
    else:
        # dkimpy's dknewkey writes an Ed25519 key as the base64 of its 32-byte seed.
        try:
            seed = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            seed = b""
        if len(seed) != 32:
            raise ValueError("not a PEM private key (PKCS#8 or PKCS#1 expected)")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unsupported key algorithm {type(key).__name__}; use RSA or Ed25519")
    return key


def _decode_public_key(text: str) -> bytes:
    """The configured `public_key`: the p= value, or a whole TXT record (quotes and splits
    allowed, as copied from a zone file)."""
    flat = re.sub(r'"\s*"|"|\s+', "", text)
    if "p=" in flat:
        for tag in flat.split(";"):
            name, _, value = tag.partition("=")
            if name == "p":
                flat = value
                break
    return base64.b64decode(flat, validate=True)


def _rsa_pkcs1_public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )


def _self_test(key: rsa.RSAPrivateKey) -> bool:
    """Sign and verify one digest: a corrupted key (wrong CRT values, say) fails here."""
    digest = hashlib.sha256(b"maildispatch dkim key self-test").digest()
    algorithm = utils.Prehashed(hashes.SHA256())
    try:
        sig = key.sign(digest, padding.PKCS1v15(), algorithm)
        key.public_key().verify(sig, digest, padding.PKCS1v15(), algorithm)
    except (InvalidSignature, ValueError):
        return False
    return True


def check_key(cfg: DkimKeyConfig, key: PrivateKey) -> None:
    """The configured type, the RSA size floor and the published public key, for one key."""

    def fail(suffix: str, reason: str) -> DkimKeyError:
        return DkimKeyError(
            field=cfg.key_path + suffix,
            reason=reason,
            domain=cfg.domain,
            selector=cfg.selector,
            file=cfg.file,
        )

    actual = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ed25519"
    if actual != cfg.key_type:
        raise fail(
            ".file", f"holds an {actual} key but the selector is configured as {cfg.key_type}"
        )
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise fail(
                ".file", f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required"
            )
        if not _self_test(key):
            raise fail(".file", "the RSA key is inconsistent: its test signature does not verify")
    if cfg.public_key is None:
        return
    try:
        published = _decode_public_key(cfg.public_key)
    except (binascii.Error, ValueError):
        raise fail(
            ".public_key", "is not valid base64 (expected the TXT record's p= value)"
        ) from None
    accepted = {public_key_bytes(key)}
    if isinstance(key, rsa.RSAPrivateKey):
        accepted.add(_rsa_pkcs1_public(key))  # some old records carry a bare PKCS#1 key
    if published not in accepted:
        raise fail(".public_key", "the private key in the file does not match this public key")


EXPOSED = stat.S_IRGRP | stat.S_IROTH


def warn_if_exposed(cfg: DkimKeyConfig, mode: int) -> None:
    """A private key readable by group or others, where [security] allows it, is worth a
    warning (never the key itself)."""
    if mode & EXPOSED:
        log.warning(
            "DKIM key file %s (%s selector %s) is readable by others than its owner "
            "(mode %03o); chmod 600 it",
            cfg.file,
            cfg.domain,
            cfg.selector,
            stat.S_IMODE(mode),
        )


def read_key(cfg: DkimKeyConfig, *, allow_insecure: bool = False) -> PrivateKey:
    """Read, parse and check the key file of `cfg`; DkimKeyError at `<key_path>.file` or
    `.public_key`. A file readable by group or others (its resolved target: secret mounts
    are symlinks) is refused unless `allow_insecure` ([security] allow_insecure_permissions)."""

    def fail(reason: str) -> DkimKeyError:
        return DkimKeyError(
            field=cfg.key_path + ".file",
            reason=reason,
            domain=cfg.domain,
            selector=cfg.selector,
            file=cfg.file,
        )

    try:
        with open(cfg.file, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except FileNotFoundError:
        raise fail("key file not found") from None
    except OSError as e:
        raise fail(f"cannot read key file: {e.strerror}") from None
    if mode & EXPOSED and not allow_insecure:
        raise fail(
            f"the key file is readable by group or others (mode {stat.S_IMODE(mode):03o}): "
            "chmod 600 it, or set [security] allow_insecure_permissions = true"
        )
    try:
        key = parse_key_bytes(data)
    except ValueError as e:
        raise fail(str(e)) from None
    check_key(cfg, key)
    warn_if_exposed(cfg, mode)
    return key


def generate_key(key_type: str, bits: int = 2048) -> PrivateKey:
    """A fresh private key."""
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def write_key_file(path: Path, key: PrivateKey) -> None:
    """Write `key` as PKCS#8 PEM, mode 0600, never over an existing file. The key is written
    to a temporary file first and linked into place, so a crash leaves no half-written key."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails when the file exists: no clobbering
        except FileExistsError:
            raise KeyFileExistsError(path) from None
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the new name survives a power loss, as the key it names does
    finally:
        os.close(dir_fd)


def signing_key(cfg: DkimKeyConfig, key: PrivateKey) -> SigningKey:
    """Bundle a checked key with its configuration."""
    bits = key.key_size if isinstance(key, rsa.RSAPrivateKey) else 256
    return SigningKey(
        domain=cfg.domain,
        selector=cfg.selector,
        key_type=cfg.key_type,
        active_from=cfg.active_from,
        private_key=key,
        bits=bits,
        txt=txt_value(key),
        file=cfg.file,
        key_path=cfg.key_path,
    )


def keygen(
    domain: str,
    selector: str,
    key_type: str = "rsa",
    bits: int = 2048,
    out_dir: Path | str = Path("."),
) -> tuple[Path, str]:
    """Write a new private key to `out_dir/<domain>.<selector>.pem` (mode 0600) and return
    its path and the DNS TXT record line to publish. Never overwrites an existing file."""
    try:
        domain = check_domain(domain, "domain")
    except ConfigError as e:
        raise KeygenError(field="domain", reason=e.reason) from None
    if not _SELECTOR.fullmatch(selector):
        raise KeygenError(field="selector", reason=f"not a valid selector: {selector!r}")
    if key_type not in ("rsa", "ed25519"):
        raise KeygenError(field="key_type", reason=f"must be rsa or ed25519, got {key_type!r}")
    if key_type == "rsa" and not (MIN_RSA_BITS <= bits <= MAX_RSA_BITS and bits % 256 == 0):
        raise KeygenError(
            field="bits",
            reason=f"must be a multiple of 256 from {MIN_RSA_BITS} to {MAX_RSA_BITS}, got {bits}",
        )
    path = Path(out_dir) / f"{domain}.{selector}.pem"
    if path.exists():
        raise KeyFileExistsError(path)
    key = generate_key(key_type, bits)
    write_key_file(path, key)
    return path, zone_line(domain, selector, txt_value(key))
