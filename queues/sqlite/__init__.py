"""The embedded SQLite queue backend: `queues.sqlite.backend.SqliteQueue`."""
