"""maildispatch's sending engine and its app surface.

Subpackages, lowest layer first: `config` (config.toml -> frozen typed objects) and `telemetry`
(metrics, logs); `message` (enqueue intake, addresses, rendering, VERP), `dkim` (signing),
`routing` (MX resolution, circuit breaker) and `smtp` (wire protocol, two clients); `engine`
(claim loop, lanes, group commit, classification, the Python API); `cli` (commands, demo,
capture sink). Never does SQL: the store is `queues`; where mail leaves from is `ip_pools`.
"""
