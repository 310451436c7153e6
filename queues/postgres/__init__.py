"""The PostgreSQL queue backend (asyncpg): many nodes on one database.

`PostgresQueue(dsn)` implements queues.protocol.Queue; `migrate(dsn)` creates or upgrades
the schema (run by `maildispatch db migrate`).
"""

from queues.postgres.backend import PostgresQueue
from queues.postgres.migrate import migrate

__all__ = ["PostgresQueue", "migrate"]
