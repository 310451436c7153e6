"""Routing: recipient domain -> MX hosts -> addresses, cached, behind a circuit breaker.

Owns: `[routes]` overrides, MX/A/AAAA resolution (dnspython), its cache, and the per-host
circuit breaker. Never does: SMTP, IP choice or storage.
"""
