"""Every PostgreSQL statement that writes an event takes its transaction id in its SELECT
(before the row's seq is drawn), so `read_settled_events` can trust positions: a seq
drawn before the transaction had an id could hide below the horizon and be skipped."""

from __future__ import annotations

import re
from pathlib import Path

SQL = Path(__file__).resolve().parents[3] / "queues" / "postgres"


def test_every_event_insert_takes_its_txid_first() -> None:
    found = 0
    for path in SQL.glob("*.sql"):
        for m in re.finditer(
            r"INSERT INTO md_event \(([^)]*)\)\s*SELECT\s+([^,]+),", path.read_text()
        ):
            found += 1
            assert m.group(1).startswith("txid"), (path.name, m.group(0))
            assert m.group(2).strip() == "pg_current_xact_id()", (path.name, m.group(0))
    text = "".join(p.read_text() for p in SQL.glob("*.sql"))
    assert found == text.count("INSERT INTO md_event") and found >= 8
