"""The engine: one worker on one event loop.

Owns: the claim loop, per-destination lanes of reusable sessions, the group commit of
`committing` marks and outcomes, reply classification and the retry table (`outcomes`),
crash-test stop points, and `Runtime`, the Python API. Never does: SQL (it calls the `Queue`
protocol), the SMTP wire protocol (`smtp`), signing (`dkim`) or MX lookups (`routing`).
"""
