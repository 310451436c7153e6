"""The message model: validate one enqueue payload and turn it into a stored `NewMessage`.

`parse_payload` reads the enqueue JSON (refusing duplicate keys, which a plain dict would
silently drop); `MessageFactory.build` validates every field, renders the RFC 5322 bytes
(`dispatcher.message.render`) and fixes the Message-ID, VERP token and payload hash at enqueue.
Every refusal is a `MessageError` naming the field by its key path; nothing is half-built.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import os
import re
import threading
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import lru_cache
from typing import Any

import idna

from dispatcher.config import AccountConfig, Config, ConfigError, StreamConfig, check_domain
from dispatcher.errors import InvalidInput
from dispatcher.message.render import (
    MAX_LINE,
    Body,
    Mailbox,
    assemble,
    encode_body,
    fold,
    longest_header_line,
    mailbox_header,
    unstructured,
)
from dispatcher.message.verp import Verp
from queues.protocol import NewMessage


class MessageError(InvalidInput):
    """An enqueue payload is refused.

    `field` is the key path in the JSON (`to`, `headers.X-Foo`, `unsubscribe.url`, or
    `payload` for the document itself); `code` is one of: required, invalid, unknown_field,
    duplicate, forbidden_header, too_long, too_large, domain_not_allowed, pool_not_allowed;
    `index` is the payload's position when a batch was refused.
    """

    code = "invalid"

    def _text(self) -> str:
        # The path may hold the hostile key itself: keep the text printable and short.
        f = self.field
        shown = f if f.isprintable() and len(f) <= 80 else _short(f)
        return f"{shown}: {self.reason}"


FIELDS = frozenset(
    {
        "account",
        "idempotency_key",
        "from",
        "to",
        "subject",
        "text",
        "html",
        "reply_to",
        "headers",
        "stream",
        "priority",
        "campaign",
        "send_at",
        "expires_at",
        "unsubscribe",
        "metadata",
        "pool",
    }
)

# Fields the engine writes itself, and trace fields only receivers write (forging them
# misleads filters). Content-* and Resent-* are refused by prefix.
OWNED_HEADERS = frozenset(
    {
        "to",
        "cc",
        "bcc",
        "from",
        "sender",
        "reply-to",
        "subject",
        "message-id",
        "date",
        "return-path",
        "dkim-signature",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "feedback-id",
        "mime-version",
        "received",
        "received-spf",
        "authentication-results",
        "arc-seal",
        "arc-message-signature",
        "arc-authentication-results",
        "delivered-to",
    }
)
_OWNED_PREFIXES = ("content-", "resent-")

MAX_EXTRA_HEADERS = 100
MAX_HEADER_VALUE = 8000
MAX_SUBJECT = 998
MAX_DISPLAY_NAME = 256
MAX_METADATA_BYTES = 64 * 1024
MAX_URL = 900  # one URL per folded line of List-Unsubscribe stays under 998 octets

_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 ftext, bounded
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_LOCAL = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+(?:\.[{_ATEXT}\u0080-\U0010ffff]+)*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_UNQUOTED_SPECIALS = frozenset('()<>[]:;@\\,"')
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_URL = re.compile(r"https://[A-Za-z0-9.\-]+(?::\d{1,5})?(?:[/?#][!-~]*)?")


# --------------------------------------------------------------------------- JSON intake


# Arrays and objects nested in one document, the document included; far below the
# interpreter's recursion limit. Fields have their own, smaller bound (metadata: 32).
MAX_JSON_DEPTH = 64
MAX_NUMBER_DIGITS = 20  # an integer literal longer than this is refused before conversion
MAX_TIMESTAMP = 253_402_300_799.0  # 9999-12-31T23:59:59Z

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [0] * 256
for _b in b"[{":
    _DEPTH_STEP[_b] = 1
for _b in b"]}":
    _DEPTH_STEP[_b] = -1


class _Pairs(list[tuple[str, Any]]):
    """An object as read, before duplicate keys are checked with their key path."""


class BigNumber:
    """An integer literal too long to convert safely: a field check refuses it by name."""

    __slots__ = ("digits",)

    def __init__(self, digits: str) -> None:
        self.digits = len(digits)

    def __repr__(self) -> str:
        return f"<a number of {self.digits} digits>"


def _parse_int(text: str) -> int | BigNumber:
    # The interpreter refuses str -> int over 4,300 digits with a bare ValueError, and
    # converting a long literal costs quadratic time: refuse by length first.
    return int(text) if len(text) <= MAX_NUMBER_DIGITS else BigNumber(text)


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in `raw` (strings skipped), without recursion."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)))


def parse_payload(raw: bytes | str, *, max_bytes: int | None = None) -> dict[str, object]:
    """Read one enqueue JSON document; refuses invalid UTF-8 (with its byte offset), invalid
    JSON, non-objects, NaN/Infinity, nesting deeper than MAX_JSON_DEPTH, integer literals
    longer than MAX_NUMBER_DIGITS (as the field's error) and duplicate keys (field = key
    path, code "duplicate"). Depth and size are checked before the decoder runs."""

    def no_constants(name: str) -> object:
        raise MessageError(field="payload", code="invalid", reason=f"{name} is not valid JSON")

    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if max_bytes is not None and len(data) > max_bytes:
        raise MessageError(
            field="payload", code="too_large", reason=f"the document is over {max_bytes} bytes"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError(
            field="payload", code="invalid", reason=f"not valid UTF-8 at byte {e.start}"
        ) from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise MessageError(
            field="payload",
            code="invalid",
            reason=f"arrays and objects nested more than {MAX_JSON_DEPTH} deep",
        )
    try:
        doc = json.loads(
            text, object_pairs_hook=_Pairs, parse_constant=no_constants, parse_int=_parse_int
        )
    except json.JSONDecodeError as e:
        raise MessageError(
            field="payload", code="invalid", reason=f"not valid JSON: {e.msg} at {e.pos}"
        ) from None
    except RecursionError:  # cannot happen below MAX_JSON_DEPTH; never a traceback
        raise MessageError(field="payload", code="invalid", reason="nested too deep") from None
    if not isinstance(doc, _Pairs):
        raise MessageError(field="payload", code="invalid", reason="expected a JSON object")
    result = _unpair(doc, "")
    assert isinstance(result, dict)
    return result


def _unpair(value: object, path: str) -> object:
    if isinstance(value, _Pairs):
        out: dict[str, object] = {}
        for key, item in value:
            sub = f"{path}.{key}" if path else key
            if key in out:
                raise MessageError(field=sub, code="duplicate", reason="the key appears twice")
            out[key] = _unpair(item, sub)
        return out
    if isinstance(value, list):
        return [_unpair(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


# --------------------------------------------------------------------------- field checks


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_text(value: str, name: str) -> None:
    """No CR, LF, NUL or other control characters; valid UTF-8 (no lone surrogates)."""
    if "\r" in value or "\n" in value or "\x00" in value:
        raise MessageError(field=name, code="invalid", reason="must not contain CR, LF or NUL")
    if _CONTROLS.search(value):
        raise MessageError(field=name, code="invalid", reason="must not contain control characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError(
                field=name, code="invalid", reason="is not valid UTF-8 (lone surrogate)"
            ) from None


def _optional(payload: Mapping[str, object], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise MessageError(
            field=name, code="invalid", reason=f"expected a string, got {type(value).__name__}"
        )
    return value


def _required(payload: Mapping[str, object], name: str) -> str:
    value = _optional(payload, name)
    if value is None:
        raise MessageError(field=name, code="required", reason="is required")
    if not value.strip():
        raise MessageError(field=name, code="required", reason="must not be empty")
    return value


def parse_mailbox(value: object, name: str) -> Mailbox:
    """One mailbox: `addr@domain` or `Display Name <addr@domain>` (quoted names allowed).

    Refuses groups, lists, comments, quoted local parts, domain literals and anything that
    could hide a second address. The domain comes back as a lower-case A-label."""
    if value is None:
        raise MessageError(field=name, code="required", reason="is required")
    if isinstance(value, list):
        raise MessageError(
            field=name, code="invalid", reason="expected exactly one address (a string), got a list"
        )
    if not isinstance(value, str):
        raise MessageError(
            field=name,
            code="invalid",
            reason=f"expected an address string, got {type(value).__name__}",
        )
    if not value.strip():
        raise MessageError(field=name, code="required", reason="must not be empty")
    _check_text(value, name)
    text = value.strip()
    display = ""
    if text.endswith(">"):
        lt = text.rfind("<")
        if lt < 0:
            raise MessageError(field=name, code="invalid", reason="unbalanced angle brackets")
        display = _display_name(text[:lt].strip(), name)
        addr = text[lt + 1 : -1]
    else:
        addr = text
    if addr.count("@") > 1 or "," in addr or ";" in addr:
        raise MessageError(field=name, code="invalid", reason="expected exactly one address")
    local, at, domain_in = addr.partition("@")
    if not at:
        raise MessageError(
            field=name, code="invalid", reason=f"not an address (no @): {_short(addr)}"
        )
    if not local:
        raise MessageError(field=name, code="invalid", reason="the local part before @ is empty")
    if local.startswith('"'):
        raise MessageError(field=name, code="invalid", reason="quoted local parts are not accepted")
    if not _LOCAL.fullmatch(local) or not all(c.isascii() or c.isprintable() for c in local):
        raise MessageError(
            field=name, code="invalid", reason=f"not a valid local part: {_short(local)}"
        )
    if "=?" in local:
        # Legal atext, but readers decode it as an encoded-word: a spoofing device.
        raise MessageError(
            field=name, code="invalid", reason="the local part must not contain '=?'"
        )
    if len(local.encode("utf-8")) > 64:
        raise MessageError(
            field=name, code="too_long", reason="the local part is longer than 64 octets"
        )
    if domain_in.startswith("["):
        raise MessageError(field=name, code="invalid", reason="address literals are not accepted")
    rewrite = idna_rewrite(domain_in)
    if rewrite is not None:
        raise MessageError(field=name, code="invalid", reason=rewrite)
    domain = _domain(domain_in) if domain_in == domain_in.strip() else None
    if domain is None:
        raise MessageError(
            field=name, code="invalid", reason=f"not a valid domain: {_short(domain_in)}"
        )
    if len(local.encode("utf-8")) + 1 + len(domain) > 254:
        raise MessageError(
            field=name, code="too_long", reason="the address is longer than 254 octets"
        )
    return Mailbox(local=local, domain=domain, display_name=display)


@lru_cache(maxsize=4096)
def _domain(value: str) -> str | None:
    """The lower-case A-label form, or None when not a valid host name.

    Unicode names go through IDNA 2008 with UTS 46 mapping (non-transitional, as browsers
    do): the stdlib `idna` codec is IDNA 2003, which maps faß.de to fass.de, another domain.
    Cached: recipient domains repeat (a few providers hold most mailboxes)."""
    if not value.isascii():
        try:
            value = idna.encode(value, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    try:
        return check_domain(value, "")
    except ConfigError:
        return None


# Label separators IDNA itself treats as dots (RFC 3490 3.1): typed by users, not rewrites.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


@lru_cache(maxsize=4096)
def idna_rewrite(value: str) -> str | None:
    """How UTS 46 mapping would change `value` beyond case folding and NFC normalisation
    (a zero-width character deleted, a compatibility character mapped), or None.

    Such a domain is refused rather than silently rewritten: the message would go to a
    domain the caller did not type."""
    if value.isascii():
        return None
    nfc = unicodedata.normalize("NFC", value.translate(_DOTS))
    typed = nfc.lower()
    try:
        mapped = idna.uts46_remap(typed, std3_rules=True, transitional=False)
    except (idna.IDNAError, UnicodeError, ValueError):
        return None  # refused as invalid by _domain
    # Case folding as UTS 46 does it: per character (an upper-case sigma maps to the medial form).
    folded = (typed, "".join(c.lower() for c in nfc))
    if any(unicodedata.normalize("NFC", f) == mapped for f in folded):
        return None
    changed = sorted({c for c in typed if c not in mapped or _remap(c) != c})
    shown = ", ".join(f"U+{ord(c):04X}" for c in changed[:3]) or "characters"
    return f"IDNA mapping would change the domain ({shown}): type it as {mapped!r}"


def _remap(c: str) -> str:
    try:
        return str(idna.uts46_remap(c, std3_rules=True, transitional=False))
    except (idna.IDNAError, UnicodeError, ValueError):
        return ""


@lru_cache(maxsize=256)
def _sender_mailbox(value: str, name: str) -> Mailbox:
    # From and Reply-To repeat across a broadcast; the recipient is never cached.
    return parse_mailbox(value, name)


def _display_name(text: str, name: str) -> str:
    if not text:
        return ""
    if text.startswith('"'):
        m = _QUOTED.fullmatch(text)
        if not m:
            raise MessageError(field=name, code="invalid", reason="badly quoted display name")
        result = re.sub(r"\\(.)", r"\1", m.group(1), flags=re.DOTALL)
    else:
        bad = _UNQUOTED_SPECIALS.intersection(text)
        if bad:
            raise MessageError(
                field=name,
                code="invalid",
                reason=f"display name has special characters {''.join(sorted(bad))!r}: quote it",
            )
        result = text
    result = result.strip()
    if len(result) > MAX_DISPLAY_NAME:
        raise MessageError(
            field=name, code="too_long", reason=f"display name longer than {MAX_DISPLAY_NAME}"
        )
    return result


def _timestamp(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise MessageError(
            field=name, code="invalid", reason="expected ISO 8601 date-time or epoch seconds"
        )
    if isinstance(value, int | float):
        # Compared before float(): a 400-digit integer would overflow the conversion.
        if isinstance(value, float) and not math.isfinite(value):
            raise MessageError(field=name, code="invalid", reason="expected positive epoch seconds")
        if not 0 < value <= MAX_TIMESTAMP:
            raise MessageError(
                field=name,
                code="invalid",
                reason=f"expected positive epoch seconds up to {MAX_TIMESTAMP:.0f}",
            )
        return float(value)
    if isinstance(value, BigNumber):
        raise MessageError(
            field=name, code="invalid", reason=f"expected epoch seconds, got {value!r}"
        )
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise MessageError(
                field=name, code="invalid", reason=f"not an ISO 8601 date-time: {_short(value)}"
            ) from None
        if when.tzinfo is None:
            raise MessageError(
                field=name, code="invalid", reason="needs a time zone, e.g. 2026-01-01T09:00:00Z"
            )
        return when.timestamp()
    raise MessageError(
        field=name, code="invalid", reason="expected ISO 8601 date-time or epoch seconds"
    )


def _json_value(value: object, path: str, depth: int = 0) -> None:
    """JSON types only, valid UTF-8, finite numbers: so the canonical hash is defined."""
    if depth > 32:
        top = re.split(r"[.\[]", path, maxsplit=1)[0]
        raise MessageError(field=top, code="invalid", reason="nested more than 32 levels deep")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:  # what every JSON reader can hold; hashable
            raise MessageError(field=path, code="invalid", reason="integer out of range (64 bits)")
    elif isinstance(value, BigNumber):
        raise MessageError(field=path, code="invalid", reason=f"integer out of range: {value!r}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise MessageError(field=path, code="invalid", reason="numbers must be finite")
    elif isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MessageError(
                    field=path, code="invalid", reason="is not valid UTF-8 (lone surrogate)"
                ) from None
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _json_value(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MessageError(field=path, code="invalid", reason="object keys must be strings")
            _json_value(key, f"{path}.{key}", depth + 1)
            _json_value(item, f"{path}.{key}", depth + 1)
    else:
        raise MessageError(
            field=path, code="invalid", reason=f"not a JSON value: {type(value).__name__}"
        )


def _extra_headers(value: object) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise MessageError(
            field="headers", code="invalid", reason="expected an object of header fields"
        )
    if len(value) > MAX_EXTRA_HEADERS:
        raise MessageError(
            field="headers", code="too_large", reason=f"more than {MAX_EXTRA_HEADERS} header fields"
        )
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for hname, hvalue in value.items():
        path = f"headers.{hname}"
        if not isinstance(hname, str) or not _FIELD_NAME.fullmatch(hname):
            raise MessageError(field=path, code="invalid", reason="not a valid header field name")
        lower = hname.lower()
        if lower in OWNED_HEADERS or lower.startswith(_OWNED_PREFIXES):
            raise MessageError(
                field=path, code="forbidden_header", reason=f"{hname} is set by the engine"
            )
        if lower in seen:
            raise MessageError(
                field=path, code="duplicate", reason="the field is given twice (names ignore case)"
            )
        seen.add(lower)
        if not isinstance(hvalue, str):
            raise MessageError(field=path, code="invalid", reason="expected a string value")
        _check_text(hvalue.replace("\t", " "), path)
        if len(hvalue) > MAX_HEADER_VALUE:
            raise MessageError(
                field=path, code="too_long", reason=f"longer than {MAX_HEADER_VALUE} characters"
            )
        out.append((hname, hvalue))
    return out


def _unsubscribe(value: object) -> list[str]:
    """List-Unsubscribe URIs in order (mailto first, as RFC 2369 examples do)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise MessageError(
            field="unsubscribe", code="invalid", reason="expected an object with url and/or mailto"
        )
    for key in value:
        if key not in ("url", "mailto"):
            raise MessageError(
                field=f"unsubscribe.{key}", code="unknown_field", reason="unknown field"
            )
    uris: list[str] = []
    mailto = value.get("mailto")
    if mailto is not None:
        uris.append(_mailto(mailto))
    url = value.get("url")
    if url is not None:
        uris.append(_https_url(url))
    if not uris:
        raise MessageError(field="unsubscribe", code="invalid", reason="needs url or mailto")
    return uris


def _mailto(value: object) -> str:
    name = "unsubscribe.mailto"
    if not isinstance(value, str):
        raise MessageError(field=name, code="invalid", reason="expected a string")
    _check_text(value, name)
    if len(value) > MAX_URL:
        raise MessageError(field=name, code="too_long", reason=f"longer than {MAX_URL} characters")
    text = value[7:] if value[:7].lower() == "mailto:" else value
    addr, _, query = text.partition("?")
    mb = parse_mailbox(addr, name)
    if mb.display_name or not mb.local.isascii():
        raise MessageError(field=name, code="invalid", reason="expected a plain ASCII address")
    if query and not re.fullmatch(r"[A-Za-z0-9\-._~%!$&'()*+;=:@/?]*", query):
        raise MessageError(field=name, code="invalid", reason="query must be percent-encoded ASCII")
    return f"mailto:{mb.address}" + (f"?{query}" if query else "")


def _https_url(value: object) -> str:
    name = "unsubscribe.url"
    if not isinstance(value, str):
        raise MessageError(field=name, code="invalid", reason="expected a string")
    _check_text(value, name)
    if len(value) > MAX_URL:
        raise MessageError(field=name, code="too_long", reason=f"longer than {MAX_URL} characters")
    if not _URL.fullmatch(value) or "<" in value or ">" in value:
        raise MessageError(
            field=name, code="invalid", reason="expected an https:// URL in ASCII (percent-encoded)"
        )
    host = value[8:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit(":", 1)[0]
    if _domain(host) is None:
        raise MessageError(field=name, code="invalid", reason=f"not a valid host: {_short(host)}")
    # RFC 2369: literal commas in the URLs of this field must be encoded.
    return value.replace(",", "%2C")


_SANITIZE = re.compile(r"[^A-Za-z0-9._\-]")


@lru_cache(maxsize=1024)
def _feedback_part(value: str) -> str:
    # Feedback-ID fields are colon-separated: keep a conservative token alphabet.
    return _SANITIZE.sub("_", value)[:64] or "none"


@lru_cache(maxsize=8)
def _date_header(second: int) -> str:
    return f"Date: {formatdate(second, usegmt=True)}\r\n"


class _IdSource:
    """Time-ordered 128-bit ids as 32 hex digits: 48 bits of milliseconds, then 80 random
    bits; strictly increasing within a process even when the clock stands still."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()  # build() may run in worker threads for big batches

    def next(self, now: float) -> str:
        ms = max(0, int(now * 1000)) & 0xFFFF_FFFF_FFFF
        value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
        with self._lock:
            if value <= self._last:
                value = self._last + 1
            self._last = value
        return f"{value:032x}"


_ids = _IdSource()


def new_message_id(now: float) -> str:
    """A sortable unique message id (32 lower-case hex digits)."""
    return _ids.next(now)


def payload_hash(payload: Mapping[str, object]) -> str:
    """SHA-256 hex of the canonical JSON: sorted keys, no whitespace, UTF-8."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the factory


@dataclass(frozen=True)
class MessageFactory:
    """Validates enqueue payloads against the configured accounts and streams and renders
    them. Immutable and free of I/O: build() is safe to call on the event loop."""

    accounts: Mapping[str, AccountConfig]
    streams: Mapping[str, StreamConfig]
    verp: Verp
    max_message_bytes: int
    feedback_sender_id: str
    message_id_domain: str | None = None
    pools: Collection[str] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, config: Config, verp: Verp) -> MessageFactory:
        """The factory for a loaded configuration."""
        return cls(
            accounts={a.name: a for a in config.accounts},
            streams=dict(config.streams),
            verp=verp,
            max_message_bytes=config.dispatch.max_message_bytes,
            feedback_sender_id=config.feedback_sender_id,
            pools=frozenset(p.name for p in config.pools),
        )

    def build(
        self,
        payload: Mapping[str, object],
        *,
        now: float,
        account: AccountConfig | None = None,
    ) -> NewMessage:
        """Validate `payload` and render it; raises MessageError naming the field."""
        f = self._validate(payload, now, account)
        message_id = new_message_id(now)
        mid = f"<{message_id}@{self.message_id_domain or f.sender.domain}>"
        smtputf8 = not all(
            mb.local.isascii() for mb in (f.sender, f.rcpt, f.reply_to) if mb is not None
        )
        body = self._render(f, mid, now, smtputf8)
        try:
            digest = payload_hash(payload)
        except (TypeError, ValueError, UnicodeEncodeError):
            raise MessageError(
                field="payload", code="invalid", reason="cannot be hashed as JSON"
            ) from None
        return NewMessage(
            id=message_id,
            account=f.account.name,
            idempotency_key=f.idempotency_key,
            payload_hash=digest,
            author_domain=f.sender.domain,
            rcpt=f.rcpt.address,
            rcpt_domain=f.rcpt.domain,
            verp_token=self.verp.token(message_id),
            message_id=mid,
            body=body,
            stream=f.stream.name,
            priority=f.priority,
            campaign=f.campaign,
            pool=f.pool,
            due_at=f.due_at,
            expires_at=f.expires_at,
            smtputf8=smtputf8,
            metadata=_metadata_text(payload.get("metadata")),
        )

    def _validate(
        self, payload: Mapping[str, object], now: float, account: AccountConfig | None = None
    ) -> _Fields:
        if not isinstance(payload, Mapping):
            raise MessageError(field="payload", code="invalid", reason="expected a JSON object")
        unknown = [k for k in payload if k not in FIELDS]
        if unknown:
            raise MessageError(
                field=sorted(map(str, unknown))[0], code="unknown_field", reason="unknown field"
            )
        # The API passes the account its key belongs to (from the store); the CLI and the
        # Python API name a configured one in the payload.
        account = account or self._account(payload)
        idempotency_key = _idempotency_key(payload)
        sender = _sender_mailbox(_required(payload, "from"), "from")
        if sender.domain not in account.author_domains:
            raise MessageError(
                field="from",
                code="domain_not_allowed",
                reason=f"{sender.domain} is not an author domain of account {account.name!r}",
            )
        rcpt = parse_mailbox(payload.get("to"), "to")
        reply_raw = payload.get("reply_to")
        reply_to = None
        if isinstance(reply_raw, str):
            reply_to = _sender_mailbox(reply_raw, "reply_to")
        elif reply_raw is not None:
            reply_to = parse_mailbox(reply_raw, "reply_to")
        subject = _subject(payload)
        text = _optional(payload, "text") or None
        html = _optional(payload, "html") or None
        if text is None and html is None:
            raise MessageError(field="text", code="required", reason="text or html is required")
        # Refuse oversized bodies before encoding them: rendering never shrinks the text.
        if len(text or "") + len(html or "") > self.max_message_bytes:
            raise MessageError(
                field=_bigger(text, html), code="too_large", reason=self._too_large()
            )
        extra = _extra_headers(payload.get("headers"))
        stream = self._stream(payload)
        unsubscribe = _unsubscribe(payload.get("unsubscribe"))
        if (
            not unsubscribe
            and stream.require_unsubscribe
            and not account.allow_broadcast_without_unsubscribe
        ):
            raise MessageError(
                field="unsubscribe",
                code="required",
                reason=f"the {stream.name} stream requires an unsubscribe link",
            )
        _metadata(payload.get("metadata"))
        due_at, expires_at = _times(payload, stream, now)
        return _Fields(
            account=account,
            idempotency_key=idempotency_key,
            sender=sender,
            rcpt=rcpt,
            reply_to=reply_to,
            subject=subject,
            text=text,
            html=html,
            extra_headers=extra,
            stream=stream,
            priority=_priority(payload),
            campaign=_campaign(payload),
            # The account's pool unless the payload names another: stored, so a message
            # keeps its pool across retries and config edits of the account.
            pool=self._pool(payload, account) or account.pool,
            unsubscribe=unsubscribe,
            due_at=due_at,
            expires_at=expires_at,
        )

    def _render(self, f: _Fields, mid: str, now: float, smtputf8: bool) -> bytes:
        head = [
            mailbox_header("From", f.sender),
            mailbox_header("To", f.rcpt),
            unstructured("Subject", f.subject),
            _date_header(int(now)),
            f"Message-ID: {mid}\r\n",
        ]
        if f.reply_to is not None:
            head.append(mailbox_header("Reply-To", f.reply_to))
        if f.unsubscribe:
            head.append(fold("List-Unsubscribe", _uri_tokens(f.unsubscribe)))
            # RFC 8058 one-click applies to the https URI only.
            if any(u.startswith("https:") for u in f.unsubscribe):
                head.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        head.append(
            "Feedback-ID: "
            f"{_feedback_part(f.campaign or 'none')}:{_feedback_part(f.account.name)}:"
            f"{_feedback_part(f.stream.name)}:{_feedback_part(self.feedback_sender_id)}\r\n"
        )
        for hname, hvalue in f.extra_headers:
            head.append(unstructured(hname, hvalue))
        bodies: list[Body] = []
        for part_name, content, subtype in (("text", f.text, "plain"), ("html", f.html, "html")):
            if content is not None:
                try:
                    bodies.append(encode_body(content, subtype))
                except UnicodeEncodeError:
                    raise MessageError(
                        field=part_name,
                        code="invalid",
                        reason="is not valid UTF-8 (lone surrogate)",
                    ) from None
        header_block = "".join(head)
        body = assemble(header_block, bodies, utf8=smtputf8)
        # Asserted once, whatever the input: a receiver enforcing RFC 5322 refuses the
        # whole message for one header line over 998 octets.
        longest, line_name = longest_header_line(body)
        if longest > MAX_LINE:
            shown = line_name.decode("utf-8", "replace")
            raise MessageError(
                field=_header_field(line_name, f.extra_headers),
                code="too_long",
                reason=f"the {shown} header line would be {longest} octets (at most {MAX_LINE})",
            )
        if len(body) > self.max_message_bytes:
            culprit = "headers" if len(header_block) > len(body) // 2 else _bigger(f.text, f.html)
            raise MessageError(field=culprit, code="too_large", reason=self._too_large())
        return body

    def _too_large(self) -> str:
        return f"the rendered message exceeds {self.max_message_bytes} bytes"

    def _account(self, payload: Mapping[str, object]) -> AccountConfig:
        name = _required(payload, "account")
        account = self.accounts.get(name)
        if account is None:
            raise MessageError(
                field="account", code="invalid", reason=f"no account named {_short(name)}"
            )
        return account

    def _stream(self, payload: Mapping[str, object]) -> StreamConfig:
        name = _optional(payload, "stream") or "transactional"
        stream = self.streams.get(name)
        if stream is None:
            choices = ", ".join(sorted(self.streams))
            raise MessageError(field="stream", code="invalid", reason=f"expected one of {choices}")
        return stream

    def _pool(self, payload: Mapping[str, object], account: AccountConfig) -> str | None:
        pool = _optional(payload, "pool")
        if pool is None:
            return None
        if pool not in self.pools:
            raise MessageError(field="pool", code="invalid", reason=f"no pool named {_short(pool)}")
        if pool not in account.allowed_pools:
            # Another account's pool: its dedicated IPs, EHLO names and platform domains.
            raise MessageError(
                field="pool",
                code="pool_not_allowed",
                reason=f"account {account.name!r} may not send from pool {_short(pool)}",
            )
        return pool


@dataclass(frozen=True, slots=True)
class _Fields:
    """A payload's validated fields, between validation and rendering."""

    account: AccountConfig
    idempotency_key: str
    sender: Mailbox
    rcpt: Mailbox
    reply_to: Mailbox | None
    subject: str
    text: str | None
    html: str | None
    extra_headers: list[tuple[str, str]]
    stream: StreamConfig
    priority: int
    campaign: str | None
    pool: str | None
    unsubscribe: list[str]
    due_at: float
    expires_at: float


_HEADER_FIELDS = {b"from": "from", b"to": "to", b"subject": "subject", b"reply-to": "reply_to"}


def _header_field(name: bytes, extra: list[tuple[str, str]]) -> str:
    """The payload field a rendered header line came from."""
    lower = name.lower()
    for hname, _ in extra:
        if hname.lower().encode() == lower:
            return f"headers.{hname}"
    return _HEADER_FIELDS.get(lower, "headers")


def _bigger(text: str | None, html: str | None) -> str:
    return "html" if len(html or "") > len(text or "") else "text"


def _idempotency_key(payload: Mapping[str, object]) -> str:
    key = _required(payload, "idempotency_key")
    if len(key) > 200:
        raise MessageError(
            field="idempotency_key", code="too_long", reason="longer than 200 characters"
        )
    if not (key.isascii() and key.isprintable()):
        raise MessageError(
            field="idempotency_key", code="invalid", reason="must be printable ASCII"
        )
    return key


def _subject(payload: Mapping[str, object]) -> str:
    subject = _required(payload, "subject")
    _check_text(subject.replace("\t", " "), "subject")
    if len(subject) > MAX_SUBJECT:
        raise MessageError(
            field="subject", code="too_long", reason=f"longer than {MAX_SUBJECT} characters"
        )
    return subject


def _priority(payload: Mapping[str, object]) -> int:
    value = payload.get("priority")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not -100 <= value <= 100:
        raise MessageError(
            field="priority", code="invalid", reason="expected an integer from -100 to 100"
        )
    return value


def _campaign(payload: Mapping[str, object]) -> str | None:
    campaign = _optional(payload, "campaign")
    if campaign is None:
        return None
    if not campaign:
        raise MessageError(field="campaign", code="invalid", reason="must not be empty")
    _check_text(campaign, "campaign")
    if len(campaign) > 200:
        raise MessageError(field="campaign", code="too_long", reason="longer than 200 characters")
    return campaign


def _metadata_text(value: object) -> str | None:
    """The metadata as stored (compact JSON), None when absent or empty."""
    if not value:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _metadata(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise MessageError(field="metadata", code="invalid", reason="expected an object")
    _json_value(value, "metadata")
    if len(json.dumps(value, ensure_ascii=False).encode("utf-8")) > MAX_METADATA_BYTES:
        raise MessageError(
            field="metadata", code="too_large", reason=f"over {MAX_METADATA_BYTES} bytes"
        )


def _times(payload: Mapping[str, object], stream: StreamConfig, now: float) -> tuple[float, float]:
    """(due_at, expires_at): due at send_at or now; expires at the earlier of expires_at and
    now + the stream's max_age; refused when it would expire before it is due."""
    send_at = _timestamp(payload.get("send_at"), "send_at")
    wanted_expiry = _timestamp(payload.get("expires_at"), "expires_at")
    expires_at = now + stream.max_age
    if wanted_expiry is not None:
        if wanted_expiry <= now:
            raise MessageError(field="expires_at", code="invalid", reason="is in the past")
        expires_at = min(expires_at, wanted_expiry)
    due_at = now if send_at is None else send_at
    if due_at >= expires_at:
        raise MessageError(
            field="send_at",
            code="invalid",
            reason="is not before the message expires (expires_at, or the stream's max_age)",
        )
    return due_at, expires_at


def _uri_tokens(uris: list[str]) -> list[str]:
    tokens = [f"<{u}>," for u in uris]
    tokens[-1] = tokens[-1][:-1]
    return tokens
