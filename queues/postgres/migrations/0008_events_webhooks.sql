-- Positions consumers can trust: each event row keeps the id of the transaction that wrote
-- it (taken in the statement before its seq, so a seq never predates its transaction id),
-- and readers return rows only below the oldest running transaction
-- (pg_snapshot_xmin): a row with a smaller seq can no longer commit after them.
ALTER TABLE md_event ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();

-- Webhook endpoints of an account: `doc` (JSON) is what the API registers (event types,
-- batch size, encrypted secrets, a replay request), `state` (JSON) what the sender keeps
-- (position, the batch in flight, failures); each side writes only its own column.
CREATE TABLE md_webhook (
    id          text PRIMARY KEY,
    account     text NOT NULL,
    url         text NOT NULL,
    doc         text NOT NULL,
    state       text NOT NULL DEFAULT '{}',
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL
);

CREATE INDEX md_webhook_account ON md_webhook (account, id);
