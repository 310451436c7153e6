"""Text that came from outside (remote SMTP servers), made storable by every backend.

A reply text may hold lone surrogates (bytes a decoder escaped), NUL characters, or other
controls; SQLite refuses to encode surrogates and PostgreSQL's text and jsonb refuse both.
One such field must never block a batch of outcomes, so each backend cleans every text
field of an outcome with `storable` before writing.
"""

from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def storable(text: str | None) -> str | None:
    """`text` as valid, NUL-free Unicode: surrogates and C0 controls (but LF) replaced."""
    if text is None:
        return None
    if text.isprintable():
        return text  # the common case: no surrogates, no controls
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return _CONTROL.sub("\ufffd", text)


def storable_json(value: Any) -> Any:
    """A JSON-able value with every string in it (keys too) made `storable`."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    return value
