"""`[verp]`: the envelope sender's bounce token (prefix and the secret that signs it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dispatcher.config.context import DEFAULT_STATE_DIR, ParseContext
from dispatcher.config.errors import ConfigError
from dispatcher.config.table import Section, Table

SECRET_FILE = "verp.key"


@dataclass(frozen=True, slots=True)
class VerpConfig:
    prefix: str = "b"
    secret_file: Path = DEFAULT_STATE_DIR / SECRET_FILE  # default: inside state_dir


SECTION = Section("verp", ("prefix", "secret_file"))


def parse_verp(t: Table, ctx: ParseContext) -> VerpConfig:
    prefix = t.text("prefix", VerpConfig().prefix)
    if not re.fullmatch(r"[a-z0-9]{1,16}", prefix):
        raise ConfigError(
            field="verp.prefix", reason="expected 1 to 16 lower-case letters or digits"
        )
    verp = VerpConfig(
        prefix=prefix, secret_file=ctx.resolve(t.text("secret_file", ctx.state_file(SECRET_FILE)))
    )
    t.done()
    return verp
