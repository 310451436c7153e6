"""Webhook endpoints as the store keeps them.

A row has two JSON documents, each written by one side only: `doc` by the API (event types,
batch size, encrypted secrets, a replay request) and `state` by the sender process
(`maildispatch webhooks`: its position, the batch in flight, failures). The store does not
read inside them; the dispatcher's `events` room gives them their shape.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """One registered endpoint of an account."""

    id: str
    account: str
    url: str
    doc: str
    state: str = "{}"
    created_at: float = 0.0
    updated_at: float = 0.0
