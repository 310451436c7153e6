"""The message model: validate one enqueue payload and turn it into a stored `NewMessage`.

`parse_payload` reads the enqueue JSON (refusing duplicate keys, which a plain dict would
silently drop); `MessageFactory.build` validates every field, renders the RFC 5322 bytes
(`dispatcher.render`) and fixes the Message-ID, VERP token and payload hash at enqueue.
Every refusal is a `MessageError` naming the field by its key path; nothing is half-built.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import lru_cache
from typing import Any

from dispatcher.config import AccountConfig, Config, ConfigError, StreamConfig, check_domain
from dispatcher.render import (
    Body,
    Mailbox,
    assemble,
    encode_body,
    fold,
    mailbox_header,
    unstructured,
)
from dispatcher.verp import Verp
from queues.protocol import NewMessage


class MessageError(ValueError):
    """An enqueue payload is refused.

    `field` is the key path in the JSON (`to`, `headers.X-Foo`, `unsubscribe.url`, or
    `payload` for the document itself); `code` is one of: required, invalid, unknown_field,
    duplicate, forbidden_header, too_long, too_large, domain_not_allowed.
    """

    def __init__(self, field: str, code: str, message: str) -> None:
        # The path may hold the hostile key itself: keep the text printable and short.
        shown = field if field.isprintable() and len(field) <= 80 else _short(field)
        super().__init__(f"{shown}: {message}")
        self.field = field
        self.code = code
        self.reason = message


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


class _Pairs(list[tuple[str, Any]]):
    """An object as read, before duplicate keys are checked with their key path."""


def parse_payload(raw: bytes | str) -> dict[str, object]:
    """Read one enqueue JSON document; refuses invalid JSON, non-objects, NaN/Infinity and
    duplicate keys (field = key path, code "duplicate")."""

    def no_constants(name: str) -> object:
        raise MessageError("payload", "invalid", f"{name} is not valid JSON")

    try:
        doc = json.loads(raw, object_pairs_hook=_Pairs, parse_constant=no_constants)
    except UnicodeDecodeError:
        raise MessageError("payload", "invalid", "not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise MessageError("payload", "invalid", f"not valid JSON: {e.msg} at {e.pos}") from None
    if not isinstance(doc, _Pairs):
        raise MessageError("payload", "invalid", "expected a JSON object")
    result = _unpair(doc, "")
    assert isinstance(result, dict)
    return result


def _unpair(value: object, path: str) -> object:
    if isinstance(value, _Pairs):
        out: dict[str, object] = {}
        for key, item in value:
            sub = f"{path}.{key}" if path else key
            if key in out:
                raise MessageError(sub, "duplicate", "the key appears twice")
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
        raise MessageError(name, "invalid", "must not contain CR, LF or NUL")
    if _CONTROLS.search(value):
        raise MessageError(name, "invalid", "must not contain control characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError(name, "invalid", "is not valid UTF-8 (lone surrogate)") from None


def _string(payload: Mapping[str, object], name: str, *, required: bool) -> str | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise MessageError(name, "required", "is required")
        return None
    if not isinstance(value, str):
        raise MessageError(name, "invalid", f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise MessageError(name, "required", "must not be empty")
    return value


def parse_mailbox(value: object, name: str) -> Mailbox:
    """One mailbox: `addr@domain` or `Display Name <addr@domain>` (quoted names allowed).

    Refuses groups, lists, comments, quoted local parts, domain literals and anything that
    could hide a second address. The domain comes back as a lower-case A-label."""
    if value is None:
        raise MessageError(name, "required", "is required")
    if isinstance(value, list):
        raise MessageError(name, "invalid", "expected exactly one address (a string), got a list")
    if not isinstance(value, str):
        raise MessageError(
            name, "invalid", f"expected an address string, got {type(value).__name__}"
        )
    if not value.strip():
        raise MessageError(name, "required", "must not be empty")
    _check_text(value, name)
    text = value.strip()
    display = ""
    if text.endswith(">"):
        lt = text.rfind("<")
        if lt < 0:
            raise MessageError(name, "invalid", "unbalanced angle brackets")
        display = _display_name(text[:lt].strip(), name)
        addr = text[lt + 1 : -1]
    else:
        addr = text
    if addr.count("@") > 1 or "," in addr or ";" in addr:
        raise MessageError(name, "invalid", "expected exactly one address")
    local, at, domain_in = addr.partition("@")
    if not at:
        raise MessageError(name, "invalid", f"not an address (no @): {_short(addr)}")
    if not local:
        raise MessageError(name, "invalid", "the local part before @ is empty")
    if local.startswith('"'):
        raise MessageError(name, "invalid", "quoted local parts are not accepted")
    if not _LOCAL.fullmatch(local) or not all(c.isascii() or c.isprintable() for c in local):
        raise MessageError(name, "invalid", f"not a valid local part: {_short(local)}")
    if "=?" in local:
        # Legal atext, but readers decode it as an encoded-word: a spoofing device.
        raise MessageError(name, "invalid", "the local part must not contain '=?'")
    if len(local.encode("utf-8")) > 64:
        raise MessageError(name, "too_long", "the local part is longer than 64 octets")
    if domain_in.startswith("[") or domain_in != domain_in.strip():
        raise MessageError(name, "invalid", "address literals are not accepted")
    domain = _domain(domain_in)
    if domain is None:
        raise MessageError(name, "invalid", f"not a valid domain: {_short(domain_in)}")
    if len(local.encode("utf-8")) + 1 + len(domain) > 254:
        raise MessageError(name, "too_long", "the address is longer than 254 octets")
    return Mailbox(local=local, domain=domain, display_name=display)


@lru_cache(maxsize=4096)
def _domain(value: str) -> str | None:
    # Cached: recipient domains repeat (a few providers hold most mailboxes) and the IDNA
    # codec is slow pure Python.
    try:
        return check_domain(value, "")
    except ConfigError:
        return None


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
            raise MessageError(name, "invalid", "badly quoted display name")
        result = re.sub(r"\\(.)", r"\1", m.group(1), flags=re.DOTALL)
    else:
        bad = _UNQUOTED_SPECIALS.intersection(text)
        if bad:
            raise MessageError(
                name,
                "invalid",
                f"display name has special characters {''.join(sorted(bad))!r}: quote it",
            )
        result = text
    result = result.strip()
    if len(result) > MAX_DISPLAY_NAME:
        raise MessageError(name, "too_long", f"display name longer than {MAX_DISPLAY_NAME}")
    return result


def _timestamp(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise MessageError(name, "invalid", "expected ISO 8601 date-time or epoch seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise MessageError(name, "invalid", "expected positive epoch seconds")
        return float(value)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise MessageError(
                name, "invalid", f"not an ISO 8601 date-time: {_short(value)}"
            ) from None
        if when.tzinfo is None:
            raise MessageError(name, "invalid", "needs a time zone, e.g. 2026-01-01T09:00:00Z")
        return when.timestamp()
    raise MessageError(name, "invalid", "expected ISO 8601 date-time or epoch seconds")


def _json_value(value: object, path: str, depth: int = 0) -> None:
    """JSON types only, valid UTF-8, finite numbers: so the canonical hash is defined."""
    if depth > 32:
        top = re.split(r"[.\[]", path, maxsplit=1)[0]
        raise MessageError(top, "invalid", "nested more than 32 levels deep")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MessageError(path, "invalid", "numbers must be finite")
    elif isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MessageError(path, "invalid", "is not valid UTF-8 (lone surrogate)") from None
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _json_value(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MessageError(path, "invalid", "object keys must be strings")
            _json_value(key, f"{path}.{key}", depth + 1)
            _json_value(item, f"{path}.{key}", depth + 1)
    else:
        raise MessageError(path, "invalid", f"not a JSON value: {type(value).__name__}")


def _extra_headers(value: object) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise MessageError("headers", "invalid", "expected an object of header fields")
    if len(value) > MAX_EXTRA_HEADERS:
        raise MessageError("headers", "too_large", f"more than {MAX_EXTRA_HEADERS} header fields")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for hname, hvalue in value.items():
        path = f"headers.{hname}"
        if not isinstance(hname, str) or not _FIELD_NAME.fullmatch(hname):
            raise MessageError(path, "invalid", "not a valid header field name")
        lower = hname.lower()
        if lower in OWNED_HEADERS or lower.startswith(_OWNED_PREFIXES):
            raise MessageError(path, "forbidden_header", f"{hname} is set by the engine")
        if lower in seen:
            raise MessageError(path, "duplicate", "the field is given twice (names ignore case)")
        seen.add(lower)
        if not isinstance(hvalue, str):
            raise MessageError(path, "invalid", "expected a string value")
        _check_text(hvalue.replace("\t", " "), path)
        if len(hvalue) > MAX_HEADER_VALUE:
            raise MessageError(path, "too_long", f"longer than {MAX_HEADER_VALUE} characters")
        out.append((hname, hvalue))
    return out


def _unsubscribe(value: object) -> list[str]:
    """List-Unsubscribe URIs in order (mailto first, as RFC 2369 examples do)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise MessageError("unsubscribe", "invalid", "expected an object with url and/or mailto")
    for key in value:
        if key not in ("url", "mailto"):
            raise MessageError(f"unsubscribe.{key}", "unknown_field", "unknown field")
    uris: list[str] = []
    mailto = value.get("mailto")
    if mailto is not None:
        uris.append(_mailto(mailto))
    url = value.get("url")
    if url is not None:
        uris.append(_https_url(url))
    if not uris:
        raise MessageError("unsubscribe", "invalid", "needs url or mailto")
    return uris


def _mailto(value: object) -> str:
    name = "unsubscribe.mailto"
    if not isinstance(value, str):
        raise MessageError(name, "invalid", "expected a string")
    _check_text(value, name)
    if len(value) > MAX_URL:
        raise MessageError(name, "too_long", f"longer than {MAX_URL} characters")
    text = value[7:] if value[:7].lower() == "mailto:" else value
    addr, _, query = text.partition("?")
    mb = parse_mailbox(addr, name)
    if mb.display_name or not mb.local.isascii():
        raise MessageError(name, "invalid", "expected a plain ASCII address")
    if query and not re.fullmatch(r"[A-Za-z0-9\-._~%!$&'()*+;=:@/?]*", query):
        raise MessageError(name, "invalid", "query must be percent-encoded ASCII")
    return f"mailto:{mb.address}" + (f"?{query}" if query else "")


def _https_url(value: object) -> str:
    name = "unsubscribe.url"
    if not isinstance(value, str):
        raise MessageError(name, "invalid", "expected a string")
    _check_text(value, name)
    if len(value) > MAX_URL:
        raise MessageError(name, "too_long", f"longer than {MAX_URL} characters")
    if not _URL.fullmatch(value) or "<" in value or ">" in value:
        raise MessageError(name, "invalid", "expected an https:// URL in ASCII (percent-encoded)")
    host = value[8:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit(":", 1)[0]
    if _domain(host) is None:
        raise MessageError(name, "invalid", f"not a valid host: {_short(host)}")
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

    def next(self, now: float) -> str:
        ms = max(0, int(now * 1000)) & 0xFFFF_FFFF_FFFF
        value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
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

    def build(self, payload: Mapping[str, object], *, now: float) -> NewMessage:
        """Validate `payload` and render it; raises MessageError naming the field."""
        if not isinstance(payload, Mapping):
            raise MessageError("payload", "invalid", "expected a JSON object")
        unknown = [k for k in payload if k not in FIELDS]
        if unknown:
            key = sorted(map(str, unknown))[0]
            raise MessageError(key, "unknown_field", "unknown field")

        account = self._account(payload)
        idem = self._idempotency_key(payload)
        sender_raw = _string(payload, "from", required=True)
        assert sender_raw is not None
        sender = _sender_mailbox(sender_raw, "from")
        if sender.domain not in account.author_domains:
            raise MessageError(
                "from",
                "domain_not_allowed",
                f"{sender.domain} is not an author domain of account {account.name!r}",
            )
        rcpt = parse_mailbox(payload.get("to"), "to")
        reply_raw = payload.get("reply_to")
        reply_to = None
        if isinstance(reply_raw, str):
            reply_to = _sender_mailbox(reply_raw, "reply_to")
        elif reply_raw is not None:
            reply_to = parse_mailbox(reply_raw, "reply_to")
        subject = _string(payload, "subject", required=True)
        assert subject is not None
        _check_text(subject.replace("\t", " "), "subject")
        if len(subject) > MAX_SUBJECT:
            raise MessageError("subject", "too_long", f"longer than {MAX_SUBJECT} characters")
        text = _string(payload, "text", required=False) or None
        html = _string(payload, "html", required=False) or None
        if text is None and html is None:
            raise MessageError("text", "required", "text or html is required")
        extra = _extra_headers(payload.get("headers"))
        stream = self._stream(payload)
        priority = self._priority(payload)
        campaign = self._campaign(payload)
        pool = self._pool(payload)
        unsubscribe = _unsubscribe(payload.get("unsubscribe"))
        if (
            not unsubscribe
            and stream.require_unsubscribe
            and not account.allow_broadcast_without_unsubscribe
        ):
            raise MessageError(
                "unsubscribe", "required", f"the {stream.name} stream requires an unsubscribe link"
            )
        if "metadata" in payload and payload["metadata"] is not None:
            if not isinstance(payload["metadata"], Mapping):
                raise MessageError("metadata", "invalid", "expected an object")
            _json_value(payload["metadata"], "metadata")
        due_at, expires_at = self._times(payload, stream, now)

        # Refuse oversized bodies before encoding them: rendering never shrinks the text.
        biggest = "html" if len(html or "") > len(text or "") else "text"
        if len(text or "") + len(html or "") > self.max_message_bytes:
            raise MessageError(biggest, "too_large", self._too_large())

        message_id = new_message_id(now)
        mid = f"<{message_id}@{self.message_id_domain or sender.domain}>"
        head = [
            mailbox_header("From", sender),
            mailbox_header("To", rcpt),
            unstructured("Subject", subject),
            _date_header(int(now)),
            f"Message-ID: {mid}\r\n",
        ]
        if reply_to is not None:
            head.append(mailbox_header("Reply-To", reply_to))
        if unsubscribe:
            head.append(fold("List-Unsubscribe", _uri_tokens(unsubscribe)))
            if any(u.startswith("https:") for u in unsubscribe):
                head.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        head.append(
            "Feedback-ID: "
            f"{_feedback_part(campaign or 'none')}:{_feedback_part(account.name)}:"
            f"{_feedback_part(stream.name)}:{_feedback_part(self.feedback_sender_id)}\r\n"
        )
        for hname, hvalue in extra:
            head.append(unstructured(hname, hvalue))
        bodies: list[Body] = []
        for part_name, content, subtype in (("text", text, "plain"), ("html", html, "html")):
            if content is not None:
                try:
                    bodies.append(encode_body(content, subtype))
                except UnicodeEncodeError:
                    raise MessageError(
                        part_name, "invalid", "is not valid UTF-8 (lone surrogate)"
                    ) from None
        smtputf8 = not (
            sender.local.isascii()
            and rcpt.local.isascii()
            and (reply_to is None or reply_to.local.isascii())
        )
        header_block = "".join(head)
        body = assemble(header_block, bodies, utf8=smtputf8)
        if len(body) > self.max_message_bytes:
            culprit = "headers" if len(header_block) > len(body) // 2 else biggest
            raise MessageError(culprit, "too_large", self._too_large())
        try:
            digest = payload_hash(payload)
        except (TypeError, ValueError, UnicodeEncodeError):
            raise MessageError("payload", "invalid", "cannot be hashed as JSON") from None

        return NewMessage(
            id=message_id,
            account=account.name,
            idempotency_key=idem,
            payload_hash=digest,
            author_domain=sender.domain,
            rcpt=rcpt.address,
            rcpt_domain=rcpt.domain,
            verp_token=self.verp.token(message_id),
            message_id=mid,
            body=body,
            stream=stream.name,
            priority=priority,
            campaign=campaign,
            pool=pool,
            due_at=due_at,
            expires_at=expires_at,
            smtputf8=smtputf8,
        )

    def _too_large(self) -> str:
        return f"the rendered message exceeds {self.max_message_bytes} bytes"

    def _account(self, payload: Mapping[str, object]) -> AccountConfig:
        name = _string(payload, "account", required=True)
        assert name is not None
        account = self.accounts.get(name)
        if account is None:
            raise MessageError("account", "invalid", f"no account named {_short(name)}")
        return account

    @staticmethod
    def _idempotency_key(payload: Mapping[str, object]) -> str:
        key = _string(payload, "idempotency_key", required=True)
        assert key is not None
        if len(key) > 200:
            raise MessageError("idempotency_key", "too_long", "longer than 200 characters")
        if not (key.isascii() and key.isprintable()):
            raise MessageError("idempotency_key", "invalid", "must be printable ASCII")
        return key

    def _stream(self, payload: Mapping[str, object]) -> StreamConfig:
        name = _string(payload, "stream", required=False) or "transactional"
        stream = self.streams.get(name)
        if stream is None:
            choices = ", ".join(sorted(self.streams))
            raise MessageError("stream", "invalid", f"expected one of {choices}")
        return stream

    @staticmethod
    def _priority(payload: Mapping[str, object]) -> int:
        value = payload.get("priority", 0)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or not -100 <= value <= 100:
            raise MessageError("priority", "invalid", "expected an integer from -100 to 100")
        return value

    @staticmethod
    def _campaign(payload: Mapping[str, object]) -> str | None:
        campaign = _string(payload, "campaign", required=False)
        if campaign is None:
            return None
        if not campaign:
            raise MessageError("campaign", "invalid", "must not be empty")
        _check_text(campaign, "campaign")
        if len(campaign) > 200:
            raise MessageError("campaign", "too_long", "longer than 200 characters")
        return campaign

    def _pool(self, payload: Mapping[str, object]) -> str | None:
        pool = _string(payload, "pool", required=False)
        if pool is not None and pool not in self.pools:
            raise MessageError("pool", "invalid", f"no pool named {_short(pool)}")
        return pool

    @staticmethod
    def _times(
        payload: Mapping[str, object], stream: StreamConfig, now: float
    ) -> tuple[float, float]:
        send_at = _timestamp(payload.get("send_at"), "send_at")
        wanted_expiry = _timestamp(payload.get("expires_at"), "expires_at")
        expires_at = now + stream.max_age
        if wanted_expiry is not None:
            if wanted_expiry <= now:
                raise MessageError("expires_at", "invalid", "is in the past")
            expires_at = min(expires_at, wanted_expiry)
        due_at = now if send_at is None else send_at
        if due_at >= expires_at:
            raise MessageError(
                "send_at",
                "invalid",
                "is not before the message expires (expires_at, or the stream's max_age)",
            )
        return due_at, expires_at


def _uri_tokens(uris: list[str]) -> list[str]:
    tokens = [f"<{u}>," for u in uris]
    tokens[-1] = tokens[-1][:-1]
    return tokens
