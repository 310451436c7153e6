"""The dispatcher's names for the project's error convention (defined once in `queues.errors`,
the one module the store and the dispatcher can both import): `MaildispatchError` carries a
`code`; `InvalidInput` is a `ValueError` with keyword-only `field`, `code`, `reason`, `index`."""

from __future__ import annotations

from queues.errors import InvalidInput, MaildispatchError

__all__ = ["InvalidInput", "MaildispatchError"]
