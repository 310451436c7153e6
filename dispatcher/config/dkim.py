"""`[dkim]` and `[[dkim.keys]]`: canonicalization and the signing keys of every domain."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from dispatcher.config.context import ParseContext
from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table, field_default
from dispatcher.config.values import check_domain, parse_timestamp


class Canonicalization(enum.StrEnum):
    RELAXED_RELAXED = "relaxed/relaxed"
    RELAXED_SIMPLE = "relaxed/simple"
    SIMPLE_SIMPLE = "simple/simple"
    SIMPLE_RELAXED = "simple/relaxed"


class KeyType(enum.StrEnum):
    RSA = "rsa"
    ED25519 = "ed25519"


@dataclass(frozen=True, slots=True)
class DkimKeyConfig:
    domain: str
    selector: str
    file: Path
    key_type: KeyType = KeyType.RSA
    active_from: float = 0.0
    public_key: str | None = None  # the published TXT p= value, checked against the key
    key_path: str = ""  # where in config.toml this key was declared, for errors


@dataclass(frozen=True, slots=True)
class DkimConfig:
    canonicalization: Canonicalization = Canonicalization.RELAXED_RELAXED
    create_missing: bool = False  # demo: create absent key files on first run
    keys: tuple[DkimKeyConfig, ...] = ()


SECTION = Section("dkim", ("canonicalization", "create_missing"))
KEY_SECTION = Section(
    "dkim.keys[]", ("domain", "selector", "file", "type", "active_from", "public_key")
)

_SELECTOR = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})")


def parse_dkim(t: Table, ctx: ParseContext) -> DkimConfig:
    base = DkimConfig()
    canon = t.choice("canonicalization", base.canonicalization)
    keys = tuple(_parse_key(kt, ctx) for kt in t.tables(KEY_SECTION))
    dkim = DkimConfig(
        canonicalization=canon,
        create_missing=t.flag("create_missing", base.create_missing),
        keys=keys,
    )
    t.done()
    return dkim


def _parse_key(t: Table, ctx: ParseContext) -> DkimKeyConfig:
    sel = t.text("selector", required=True)
    if not _SELECTOR.fullmatch(sel):
        raise ConfigError(field=t.key("selector"), reason=f"not a valid selector: {sel!r}")
    key = DkimKeyConfig(
        domain=check_domain(t.text("domain", required=True), t.key("domain")),
        selector=sel,
        file=ctx.resolve(t.text("file", required=True)),
        key_type=t.choice("type", field_default(DkimKeyConfig, "key_type")),
        active_from=parse_timestamp(
            t.raw("active_from", field_default(DkimKeyConfig, "active_from")), t.key("active_from")
        ),
        public_key=t.text("public_key", "") or None,
        key_path=t.path,
    )
    t.done()
    return key
