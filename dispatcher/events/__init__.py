"""Delivering the event outbox to consumers: the Redis stream relay (`relay`) and per-account
webhooks (`webhooks`: registration documents, signing, the sender)."""
