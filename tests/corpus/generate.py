"""Writes bad_inputs.jsonl: `python tests/corpus/generate.py`. Edit the cases here.

The 20 MB body is not stored: tests/unit/message/test_bad_input_corpus.py generates it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import idna as idna_package

OUT = Path(__file__).resolve().parent / "bad_inputs.jsonl"

BASE: dict[str, Any] = {
    "account": "acme",
    "idempotency_key": "corpus-1",
    "from": "Acme News <news@acme-news.example>",
    "to": "jane@example.org",
    "subject": "Hello",
    "text": "Hello Jane.\n",
}
RCPT = "jane@example.org"
UNSUB = {"url": "https://acme-news.example/u/abc", "mailto": "unsub@acme-news.example"}

cases: list[dict[str, Any]] = []


def _fields(changes: dict[str, Any]) -> dict[str, Any]:
    # `from` is a keyword: calls spell it from_.
    merged = {**BASE, **{k.rstrip("_"): v for k, v in changes.items()}}
    return {k: v for k, v in merged.items() if v is not _DROP}


def accept(name: str, rcpt: str = RCPT, smtputf8: bool = False, **changes: Any) -> None:
    payload = _fields(changes)
    case: dict[str, Any] = {"name": name, "expect": "accept", "payload": payload, "rcpt": rcpt}
    if smtputf8:
        case["smtputf8"] = True
    cases.append(case)


def reject(name: str, field: str, code: str | None = None, **changes: Any) -> None:
    payload = _fields(changes)
    case: dict[str, Any] = {"name": name, "expect": "reject", "payload": payload, "field": field}
    if code:
        case["code"] = code
    cases.append(case)


def idna(domain: str) -> str:
    # IDNA 2008 / UTS 46 non-transitional (the stdlib codec is IDNA 2003: faß.de -> fass.de)
    return idna_package.encode(domain, uts46=True, transitional=False).decode("ascii")


def reject_raw(name: str, raw: str, field: str, code: str | None = None) -> None:
    case: dict[str, Any] = {"name": name, "expect": "reject", "raw": raw, "field": field}
    if code:
        case["code"] = code
    cases.append(case)


_DROP = object()
BREAKS = {"cr": "\r", "lf": "\n", "crlf": "\r\n", "nul": "\x00"}

# --- accepted: ordinary and awkward but legitimate messages --------------------------------
accept("minimal_text")
accept("html_only", text=_DROP, html="<p>Hello</p>")
accept("text_and_html", html="<p>Hello <b>Jane</b></p>")
accept("display_names", to="Jane Doe <jane@example.org>")
accept("quoted_display_with_comma", to='"Doe, Jane" <jane@example.org>')
accept("quoted_display_holding_an_address", to='"boss@example.com" <jane@example.org>')
accept("quoted_display_escaped_quote_and_angle", to='"x\\" <evil@evil.example>" <jane@example.org>')
accept(
    "display_looks_like_encoded_word",
    to='"=?utf-8?b?ZXZpbEBldmlsLmV4YW1wbGU=?=" <jane@example.org>',
)
accept(
    "non_ascii_display_name",
    to="Jürgen Müller <jane@example.org>",
    from_="Café Ñandú <news@acme-news.example>",
)
accept("non_ascii_subject", subject="Grüße aus Köln — 東京 😀 ✉")
accept("subject_encoded_word_lookalike", subject="=?utf-8?q?not_really?=")
accept("subject_with_tab", subject="a\tb")
accept("subject_leading_trailing_space", subject="  padded  ")
accept("subject_900_chars", subject=" ".join(["word"] * 180))
accept("subject_one_long_word", subject="x" * 990)
accept("idn_recipient_domain", to="user@bücher.example", rcpt="user@" + idna("bücher.example"))
accept(
    "idn_display_and_domain", to="Ünïcødé <user@例え.テスト>", rcpt="user@" + idna("例え.テスト")
)
accept("idna2008_sharp_s", to="user@faß.de", rcpt="user@xn--fa-hia.de")
# Full-width letters map to ASCII under UTS 46: a silent rewrite, refused (issue 10).
reject(
    "fullwidth_domain", "to", "invalid", to="user@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.org"
)
accept("upper_case_domain", to="Jane@EXAMPLE.ORG", rcpt="Jane@example.org")
accept("non_ascii_local_part", to="josé@example.org", rcpt="josé@example.org", smtputf8=True)
accept(
    "non_ascii_local_and_idn", to="用户@例子.广告", rcpt="用户@" + idna("例子.广告"), smtputf8=True
)
accept(
    "plus_and_symbols_local", to="jane+tag/x=y!{z}@example.org", rcpt="jane+tag/x=y!{z}@example.org"
)
accept("apostrophe_local", to="o'brien@example.org", rcpt="o'brien@example.org")
accept("angle_only", to="<jane@example.org>")
accept("surrounding_space", to="  jane@example.org  ")
for name, body in {
    "lf_dot_crlf": "a\n.\r\nMAIL FROM:<evil@evil.example>\r\n",
    "crlf_dot_lf": "a\r\n.\nRCPT TO:<evil@evil.example>\n",
    "bare_cr_dot": "a\r.\rDATA\r",
    "lf_dot_lf": "a\n.\nQUIT\n",
    "cr_dot_crlf": "a\r.\r\nb",
    "only_dot": ".",
    "dot_lines": ".\n..\n. \n.\r\n",
    "no_final_newline": "no newline at the end",
    "bare_cr_lines": "one\rtwo\rthree",
    "mixed_line_ends": "a\r\nb\nc\rd\n\re",
    "nul_in_body": "before\x00after\n",
    "trailing_blanks": "space   \ntab\t\n",
    "from_line": "From someone\n>From quoted\n",
    "control_chars": "bell\x07 vt\x0b ff\x0c esc\x1b\n",
}.items():
    accept(f"smuggling_{name}", text=body)
    accept(f"smuggling_html_{name}", text=_DROP, html=body)
accept("long_line_2000", text="x" * 2000 + "\nshort\n")
accept("long_line_5000_html", text=_DROP, html="<p>" + "y" * 5000 + "</p>")
accept("long_line_non_ascii", text="é" * 1500)
accept("long_line_with_dot_start", text="." + "z" * 3000)
accept("line_exactly_998", text="q" * 998 + "\n")
accept("line_999", text="q" * 999 + "\n")
accept("body_unicode_separators", text="a\u2028b\u2029c\x85d\n")
accept("extra_headers", headers={"X-Campaign-Ref": "c-42", "In-Reply-To": "<abc@example.org>"})
accept("extra_header_non_ascii", headers={"X-Note": "Grüße"})
accept("extra_header_long_word", headers={"X-Long": "v" * 2000})
accept(
    "extra_header_long_words",
    headers={"References": " ".join(f"<id{i}@example.org>" for i in range(200))},
)
accept("extra_header_with_tab", headers={"X-Tab": "a\tb"})
accept("extra_header_empty_value", headers={"X-Empty": ""})
accept("extra_header_100", headers={f"X-H{i}": str(i) for i in range(100)})
accept("broadcast_with_unsubscribe", stream="broadcast", unsubscribe=UNSUB)
accept(
    "broadcast_url_only",
    stream="broadcast",
    unsubscribe={"url": "https://acme-news.example/u?a=1,2"},
)
accept(
    "broadcast_mailto_only",
    stream="broadcast",
    unsubscribe={"mailto": "mailto:unsub@acme-news.example?subject=stop"},
)
accept("priority_bounds", priority=100)
accept("priority_low", priority=-100)
accept("send_at_past_iso", send_at="2001-01-01T00:00:00Z")
accept("send_at_epoch", send_at=1_000_000_000)
accept("expires_far_future", expires_at="2999-01-01T00:00:00+02:00")
accept("metadata_nested", metadata={"a": [1, 2.5, None, True], "b": {"c": "ü"}})
accept("campaign_with_colons", campaign="spring:sale:2026 ✨")
accept("pool_override", pool="warm")
accept("reply_to", reply_to="Support <help@acme-news.example>")
accept("other_account", account="creator", from_="letters@creator-letters.example")
accept("upper_case_from_domain", from_="News <news@ACME-NEWS.example>")

# --- rejected: every header and address field with CR, LF, CRLF, NUL ---------------------
FIELD_VALUES = {
    "to": "jane@example.org{}RCPT TO:<evil@evil.example>",
    "from": "news@acme-news.example{}Bcc: evil@evil.example",
    "reply_to": "help@acme-news.example{}Bcc: evil@evil.example",
    "subject": "Hi{}Bcc: evil@evil.example",
    "campaign": "c{}X-Evil: 1",
    "idempotency_key": "k{}x",
}
for fname, template in FIELD_VALUES.items():
    for bname, brk in BREAKS.items():
        reject(f"{bname}_in_{fname}", fname, "invalid", **{fname: template.format(brk)})
for bname, brk in BREAKS.items():
    reject(f"{bname}_in_display_name", "to", "invalid", to=f"Jane{brk}Doe <jane@example.org>")
    reject(
        f"{bname}_in_header_value",
        "headers.X-Note",
        "invalid",
        headers={"X-Note": f"a{brk}Bcc: evil@evil.example"},
    )
    reject(
        f"{bname}_in_header_name", f"headers.X-A{brk}Bcc", "invalid", headers={f"X-A{brk}Bcc": "x"}
    )
    reject(
        f"{bname}_in_unsubscribe_url",
        "unsubscribe.url",
        "invalid",
        stream="broadcast",
        unsubscribe={"url": f"https://acme-news.example/u{brk}X-Evil: 1"},
    )
    reject(
        f"{bname}_in_unsubscribe_mailto",
        "unsubscribe.mailto",
        "invalid",
        stream="broadcast",
        unsubscribe={"mailto": f"unsub@acme-news.example{brk}X-Evil: 1"},
    )
reject("crlf_in_account", "account", "invalid", account="acme\r\n")
reject("crlf_in_stream", "stream", "invalid", stream="broadcast\r\n")
reject("trailing_lf_in_to", "to", "invalid", to="jane@example.org\n")
reject("tab_in_address", "to", "invalid", to="jane@example.org\t")
reject("c1_control_in_subject", "subject", "invalid", subject="a\x85b")

# --- rejected: invalid UTF-8 (lone surrogates from JSON escapes, raw bytes) --------------
for fname in ("subject", "text", "html", "campaign", "idempotency_key"):
    reject(f"lone_surrogate_in_{fname}", fname, "invalid", **{fname: "bad \udc80 text"})
reject("lone_surrogate_in_to", "to", "invalid", to="jane\udc80@example.org")
reject("lone_surrogate_in_display", "from", "invalid", from_="N\ud800 <news@acme-news.example>")
reject("lone_surrogate_in_header", "headers.X-Note", "invalid", headers={"X-Note": "\udfff"})
reject("lone_surrogate_in_metadata", "metadata.k", "invalid", metadata={"k": "\udc80"})
reject("lone_surrogate_in_metadata_key", "metadata.\udc80", "invalid", metadata={"\udc80": 1})
cases.append(
    {
        "name": "invalid_utf8_bytes",
        "expect": "reject",
        "raw_base64": base64.b64encode(json.dumps(BASE).encode()[:-2] + b'\xff\xfe"}').decode(),
        "field": "payload",
        "code": "invalid",
    }
)

# --- rejected: missing, empty, duplicated, unknown and wrongly typed fields --------------
for fname in ("account", "idempotency_key", "from", "to", "subject"):
    reject(f"missing_{fname}", fname, "required", **{fname: _DROP})
    reject(f"empty_{fname}", fname, "required", **{fname: ""})
reject("missing_text_and_html", "text", "required", text=_DROP)
reject("empty_text_and_html", "text", "required", text="", html="")
for key in ("to", "from", "subject", "text"):
    doc = json.dumps(BASE)
    reject_raw(
        f"duplicate_{key}", doc[:-1] + f', "{key}": {json.dumps(BASE[key])}}}', key, "duplicate"
    )
reject_raw(
    "duplicate_header_key",
    json.dumps(BASE)[:-1] + ', "headers": {"X-A": "1", "X-A": "2"}}',
    "headers.X-A",
    "duplicate",
)
reject("duplicate_header_case", "headers.x-a", "duplicate", headers={"X-A": "1", "x-a": "2"})
reject_raw("not_json", "{not json", "payload", "invalid")
reject_raw("json_array", json.dumps([BASE]), "payload", "invalid")
reject_raw("json_nan", json.dumps(BASE)[:-1] + ', "priority": NaN}', "payload", "invalid")
reject_raw(
    "json_infinity_metadata",
    json.dumps(BASE)[:-1] + ', "metadata": {"x": Infinity}}',
    "payload",
    "invalid",
)
for key in ("cc", "bcc", "To", "attachments", "return_path"):
    reject(f"unknown_field_{key}", key, "unknown_field", **{key: "x@example.org"})
reject("to_list", "to", "invalid", to=["jane@example.org"])
reject("to_list_two", "to", "invalid", to=["jane@example.org", "evil@evil.example"])
reject("to_number", "to", "invalid", to=42)
reject("from_object", "from", "invalid", from_={"address": "news@acme-news.example"})
reject("subject_number", "subject", "invalid", subject=1)
reject("text_number", "text", "invalid", text=1)
reject("priority_string", "priority", "invalid", priority="1")
reject("priority_float", "priority", "invalid", priority=1.5)
reject("priority_bool", "priority", "invalid", priority=True)
reject("priority_too_high", "priority", "invalid", priority=101)
reject("priority_too_low", "priority", "invalid", priority=-101)
reject("unknown_stream", "stream", "invalid", stream="bulk")
reject("unknown_account", "account", "invalid", account="nobody")
reject("unknown_pool", "pool", "invalid", pool="cold")
# Issue 10, finding 5: a pool that exists but is not the account's own.
reject("another_accounts_pool", "pool", "pool_not_allowed", pool="dedicated")
reject("headers_list", "headers", "invalid", headers=["X-A: 1"])
reject("header_value_number", "headers.X-A", "invalid", headers={"X-A": 1})
reject("metadata_string", "metadata", "invalid", metadata="x")
reject("metadata_too_deep", "metadata", "invalid", metadata={"d": json.loads("[" * 40 + "]" * 40)})
reject("unsubscribe_string", "unsubscribe", "invalid", unsubscribe="https://acme-news.example/u")
reject("campaign_number", "campaign", "invalid", campaign=7)
reject("campaign_empty", "campaign", "invalid", campaign="")
reject("idempotency_key_too_long", "idempotency_key", "too_long", idempotency_key="k" * 201)
reject("idempotency_key_non_ascii", "idempotency_key", "invalid", idempotency_key="ключ")
reject("idempotency_key_tab", "idempotency_key", "invalid", idempotency_key="a\tb")
reject("subject_too_long", "subject", "too_long", subject="s" * 999)
reject("subject_blank", "subject", "required", subject="   ")

# --- rejected: address tricks ----------------------------------------------------------
TRICKS = {
    "comma_list": "jane@example.org, evil@evil.example",
    "semicolon_list": "jane@example.org; evil@evil.example",
    "comment_after": "jane@example.org (evil@evil.example)",
    "comment_before": "(evil@evil.example) jane@example.org",
    "comment_in_local": "jane(x)@example.org",
    "group": "friends: jane@example.org;",
    "group_angle": "friends: <jane@example.org>;",
    "empty_group": "undisclosed-recipients:;",
    "quoted_local": '"jane doe"@example.org',
    "quoted_local_with_at": '"evil@evil.example"@example.org',
    "address_literal": "jane@[127.0.0.1]",
    "no_domain": "jane@",
    "no_local": "@example.org",
    "no_at": "jane",
    "single_label_domain": "jane@example",
    "double_at": "jane@@example.org",
    "two_ats": "jane@evil.example@example.org",
    "space_in_domain": "jane@exa mple.org",
    "space_in_local": "ja ne@example.org",
    "two_angle_addrs": "Jane <jane@example.org> <evil@evil.example>",
    "angle_then_list": "Jane <jane@example.org>, evil@evil.example",
    "list_then_angle": "evil@evil.example, Jane <jane@example.org>",
    "unclosed_angle": "<jane@example.org",
    "unopened_angle": "jane@example.org>",
    "name_without_angles": "Jane Doe jane@example.org",
    "unquoted_special_in_name": "Doe, Jane <jane@example.org>",
    "unquoted_at_in_name": "evil@evil.example <jane@example.org>",
    "badly_quoted_name": '"Jane <jane@example.org>',
    "double_dot_local": "jane..doe@example.org",
    "leading_dot_local": ".jane@example.org",
    "trailing_dot_local": "jane.@example.org",
    "hyphen_label": "jane@-example.org",
    "empty_label": "jane@example..org",
    "trailing_dot_domain": "jane@example.org.",
    "underscore_domain": "jane@ex_ample.org",
    "local_65": "l" * 65 + "@example.org",
    "label_64": "jane@" + "d" * 64 + ".org",
    "address_255": "j" * 10 + "@" + ".".join(["d" * 60] * 4) + ".org",
    "backslash_local": "ja\\ne@example.org",
    "nbsp_in_local": "ja\u00a0ne@example.org",
    "bidi_override_local": "ja\u202ene@example.org",
    "percent_then_angle": "jane%evil.example@example.org>",
    "idna2003_only_symbol_domain": "jane@\u2603.net",
    "zero_width_joiner_domain": "jane@a\u200db.example",
    "encoded_word_local": "=?utf-8?b?YWRtaW5AYmFuay5leGFtcGxl?=@example.org",
}
for tname, value in TRICKS.items():
    reject(f"to_{tname}", "to", **{"to": value})
for tname in ("comma_list", "comment_after", "group", "quoted_local", "two_angle_addrs"):
    addr = TRICKS[tname].replace("jane@example.org", "news@acme-news.example")
    reject(f"from_{tname}", "from", from_=addr)
reject("reply_to_list", "reply_to", "invalid", reply_to="a@acme-news.example, b@evil.example")

# --- rejected: From outside the account's author domains ------------------------------
for name, addr in {
    "foreign": "news@evil.example",
    "subdomain": "news@mail.acme-news.example",
    "suffix_lookalike": "news@acme-news.example.evil.example",
    "prefix_lookalike": "news@xacme-news.example",
    "other_accounts_domain": "news@creator-letters.example",
    "idn_homograph": "news@\u0430cme-news.example",  # Cyrillic a
    "display_claims_domain": "news@acme-news.example <news@evil.example>",
}.items():
    reject(
        f"from_domain_{name}",
        "from",
        "domain_not_allowed" if name != "display_claims_domain" else None,
        from_=addr,
    )

# --- rejected: header fields the engine owns, invalid names, too many ------------------
OWNED = [
    "To",
    "Cc",
    "Bcc",
    "From",
    "Sender",
    "Reply-To",
    "Message-ID",
    "Date",
    "Return-Path",
    "DKIM-Signature",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Received",
    "Subject",
    "cOnTeNt-TyPe",
    "Content-Disposition",
    "Resent-To",
    "bcc",
]
for hname in OWNED:
    reject(
        f"owned_header_{hname}",
        f"headers.{hname}",
        "forbidden_header",
        headers={hname: "x@evil.example"},
    )
for name, hname in {
    "space": "X Foo",
    "colon": "X:Foo",
    "empty": "",
    "non_ascii": "X-Grüße",
    "too_long": "X-" + "a" * 200,
    "del": "X-\x7f",
}.items():
    reject(f"header_name_{name}", f"headers.{hname}", "invalid", headers={hname: "v"})
reject("headers_101", "headers", "too_large", headers={f"X-H{i}": str(i) for i in range(101)})
reject("headers_5000", "headers", "too_large", headers={f"X-H{i}": "v" * 10 for i in range(5000)})
reject("header_value_too_long", "headers.X-Big", "too_long", headers={"X-Big": "w " * 5000})

# --- rejected: unsubscribe and stream rules ---------------------------------------------
reject("broadcast_without_unsubscribe", "unsubscribe", "required", stream="broadcast")
reject("unsubscribe_empty", "unsubscribe", "invalid", stream="broadcast", unsubscribe={})
reject(
    "unsubscribe_unknown_key",
    "unsubscribe.post",
    "unknown_field",
    stream="broadcast",
    unsubscribe={"post": "x"},
)
for name, url in {
    "http": "http://acme-news.example/u",
    "javascript": "javascript:alert(1)",
    "space": "https://acme-news.example/u x",
    "non_ascii": "https://acme-news.example/ü",
    "angle": "https://acme-news.example/u>,<mailto:evil@evil.example",
    "no_host": "https:///u",
    "bad_host": "https://exa_mple/u",
    "too_long": "https://acme-news.example/" + "p" * 1000,
}.items():
    reject(
        f"unsubscribe_url_{name}",
        "unsubscribe.url",
        None,
        stream="broadcast",
        unsubscribe={"url": url},
    )
reject(
    "unsubscribe_mailto_display",
    "unsubscribe.mailto",
    "invalid",
    stream="broadcast",
    unsubscribe={"mailto": "Stop <unsub@acme-news.example>"},
)
reject(
    "unsubscribe_mailto_long_query",
    "unsubscribe.mailto",
    "too_long",
    stream="broadcast",
    unsubscribe={"mailto": "unsub@acme-news.example?subject=" + "a" * 2000},
)
accept(
    "unsubscribe_mailto_query_890",
    stream="broadcast",
    unsubscribe={"mailto": "unsub@acme-news.example?subject=" + "a" * (890 - 32)},
)
reject(
    "unsubscribe_mailto_list",
    "unsubscribe.mailto",
    "invalid",
    stream="broadcast",
    unsubscribe={"mailto": "a@acme-news.example,b@evil.example"},
)

# --- rejected: times ------------------------------------------------------------------
reject("send_at_words", "send_at", "invalid", send_at="tomorrow")
reject("send_at_bad_month", "send_at", "invalid", send_at="2026-13-01T00:00:00Z")
reject("send_at_naive", "send_at", "invalid", send_at="2026-01-01T00:00:00")
reject("send_at_bool", "send_at", "invalid", send_at=True)
reject("send_at_negative", "send_at", "invalid", send_at=-5)
reject("send_at_beyond_max_age", "send_at", "invalid", send_at="2999-01-01T00:00:00Z")
reject("expires_at_past", "expires_at", "invalid", expires_at="2001-01-01T00:00:00Z")
reject(
    "expires_before_send",
    "send_at",
    "invalid",
    send_at="2998-01-01T00:00:00Z",
    expires_at="2997-01-01T00:00:00Z",
)


# --- rejected: hostile JSON (issue 10, finding 6: each crashed enqueue before) ------------


def _with(field_json: str) -> str:
    """BASE as a JSON document with one more member, written as raw JSON text."""
    return json.dumps(BASE)[:-1] + ", " + field_json + "}"


# Nesting past the interpreter's recursion limit was a RecursionError in the decoder; the
# depth is checked before decoding now, so the document is refused as a whole.
reject_raw(
    "nested_metadata_arrays_500",
    _with('"metadata": {"a": ' + "[" * 500 + "]" * 500 + "}"),
    "payload",
    "invalid",
)
reject_raw(
    "nested_metadata_objects_5000",
    _with('"metadata": ' + '{"a": ' * 5000 + "1" + "}" * 5000),
    "payload",
    "invalid",
)
_NO_TO = json.dumps({k: v for k, v in BASE.items() if k != "to"})
reject_raw(
    "nested_to_arrays_600", _NO_TO[:-1] + ', "to": ' + "[" * 600 + "]" * 600 + "}", "payload"
)
reject_raw(
    "nested_document_65",
    _with('"metadata": ' + '{"a": ' * 64 + "1" + "}" * 64),
    "payload",
    "invalid",
)
# Within the document's bound, a field's own bound (32) names the field.
reject_raw(
    "nested_metadata_33",
    _with('"metadata": ' + '{"a": ' * 34 + "1" + "}" * 34),
    "metadata",
    "invalid",
)
accept("nested_metadata_32", metadata=json.loads('{"a": ' * 31 + "1" + "}" * 31))
# Brackets inside strings are text, not nesting.
accept("brackets_in_strings", subject="[" * 200, metadata={"k": "{" * 5000})
# Long integer literals: OverflowError (send_at), the interpreter's 4,300-digit limit
# (priority) and quadratic conversion time are refused by length before conversion.
reject_raw("send_at_400_digits", _with('"send_at": ' + "9" * 400), "send_at", "invalid")
reject_raw("priority_5000_digits", _with('"priority": ' + "7" * 5000), "priority", "invalid")
reject_raw(
    "metadata_5000_digits", _with('"metadata": {"n": ' + "1" * 5000 + "}"), "metadata.n", "invalid"
)
reject_raw(
    "metadata_int_over_64_bits",
    _with('"metadata": {"n": 36893488147419103232}'),
    "metadata.n",
    "invalid",
)
accept("metadata_int_64_bits", metadata={"n": 18446744073709551615, "m": -9223372036854775808})
reject_raw("send_at_float_overflow", _with('"send_at": 1e400'), "send_at", "invalid")
reject("send_at_after_year_9999", "send_at", "invalid", send_at=1e15)
reject("expires_at_after_year_9999", "expires_at", "invalid", expires_at=10**30)
cases.append(
    {
        "name": "invalid_utf8_in_a_value",
        "expect": "reject",
        "raw_base64": base64.b64encode(
            json.dumps(BASE).encode().replace(b"Hello Jane", b"Hello \xc3\x28Jane")
        ).decode(),
        "field": "payload",
        "code": "invalid",
    }
)

# --- rejected: a recipient domain IDNA mapping would silently rewrite ---------------------
reject("zero_width_space_in_domain", "to", "invalid", to="jane@exa\u200bmple.org")
reject("zero_width_joiner_in_domain", "to", "invalid", to="jane@exam\u200dple.org")
reject("soft_hyphen_in_domain", "to", "invalid", to="jane@exam\u00adple.org")
reject("fullwidth_letter_in_domain", "to", "invalid", to="jane@\uff45xample.org")
reject("ligature_in_domain", "to", "invalid", to="jane@\ufb01le.example")
reject("zero_width_in_reply_to_domain", "reply_to", "invalid", reply_to="x@exa\u200bmple.org")
accept(
    "ideographic_full_stop_is_a_dot", to="jane@例え\u3002テスト", rcpt="jane@" + idna("例え.テスト")
)
accept(
    "decomposed_umlaut_is_nfc",
    to="user@bu\u0308cher.example",
    rcpt="user@" + idna("bücher.example"),
)
accept("upper_case_idn", to="user@BÜCHER.example", rcpt="user@" + idna("bücher.example"))


# --- accepted: header values no fold at single spaces can split (issue 10, finding 7) ----
accept("header_value_space_run_5000", headers={"X-Note": "a" + " " * 5000 + "b"})
accept("header_value_tab_and_space_run", headers={"X-Note": "a" + " \t" * 2000 + "b"})
accept("header_value_double_spaces", headers={"X-Note": "word  " * 1300 + "end"})
accept("subject_space_run_900", subject="a" + " " * 900 + "b")
accept("subject_997_spaces_inside", subject="x" + " " * 996 + "y")


def main() -> None:
    names = [c["name"] for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SystemExit(f"duplicate case names: {sorted(dupes)}")
    with OUT.open("w", encoding="utf-8") as fh:
        for case in cases:
            # ensure_ascii: lone surrogates and control characters stay JSON escapes.
            fh.write(json.dumps(case, ensure_ascii=True) + "\n")
    accepted = sum(c["expect"] == "accept" for c in cases)
    print(f"{OUT.name}: {len(cases)} cases ({accepted} accept, {len(cases) - accepted} reject)")


if __name__ == "__main__":
    main()
