-- maildispatch SQLite queue schema. Every statement is idempotent: open() runs this file
-- on each start, in one transaction.

CREATE TABLE IF NOT EXISTS messages (
    -- Alias of the rowid, explicit so that VACUUM keeps it: message_bodies refers to it.
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    account         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload_hash    TEXT NOT NULL,
    author_domain   TEXT NOT NULL,
    rcpt            TEXT NOT NULL,
    rcpt_domain     TEXT NOT NULL,
    verp_token      TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    stream          TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    campaign        TEXT,
    pool            TEXT,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    due_at          REAL NOT NULL,
    enqueued_at     REAL NOT NULL,
    expires_at      REAL,
    smtputf8        INTEGER NOT NULL,
    worker_id       TEXT,
    lease_epoch     INTEGER,
    last_reply_code INTEGER,
    last_reply_text TEXT,
    source_ip       TEXT,
    platform_domain TEXT,
    mx_host         TEXT,
    updated_at      REAL NOT NULL,
    reason          TEXT,
    resends         INTEGER NOT NULL DEFAULT 0,
    -- The route key (provider or MX site), once a worker routed it.
    provider        TEXT
);
-- reason: why a message is held (queues.protocol.HeldReason); resends: how many times it was
-- deliberately sent again after being held. Older files get both from
-- queues/sqlite/connection.py ADDED_COLUMNS.

-- Bodies live beside their message, one to one. SQLite writes a whole row again when an
-- UPDATE changes its size, overflow pages included: with a 4 KB body inline, every state
-- change (claim, mark, outcome) rewrote the body too (measured: ~10x slower updates).
CREATE TABLE IF NOT EXISTS message_bodies (
    seq  INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);

CREATE TRIGGER IF NOT EXISTS messages_drop_body AFTER DELETE ON messages
BEGIN
    DELETE FROM message_bodies WHERE seq = old.seq;
END;

-- Serves claim (one ordered range per claimable state), counts per state, active_count,
-- and recovery (the small sending/committing ranges).
CREATE INDEX IF NOT EXISTS messages_claim ON messages (state, priority DESC, due_at);

-- Serves prune: only finished messages, oldest first.
CREATE INDEX IF NOT EXISTS messages_finished ON messages (updated_at)
    WHERE state IN ('delivered', 'bounced', 'failed', 'ambiguous', 'suppressed', 'cancelled');

-- Serves the held-mail commands (list, count, release, resolve): few rows, oldest first.
CREATE INDEX IF NOT EXISTS messages_held ON messages (updated_at) WHERE state = 'ambiguous';

-- Idempotency keys live apart from messages so that pruning a message never reopens its key.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    account         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload_hash    TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    created_at      REAL NOT NULL,
    PRIMARY KEY (account, idempotency_key)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE IF NOT EXISTS workers (
    worker_id    TEXT PRIMARY KEY,
    epoch        INTEGER NOT NULL UNIQUE,
    pid          INTEGER NOT NULL,
    heartbeat_at REAL NOT NULL,
    lock_path    TEXT
);

-- Global counters; `worker_epoch` only ever grows, so a recovered worker's epoch is never
-- handed out again even after its row is deleted.
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

INSERT INTO counters (name, value) VALUES ('worker_epoch', 0) ON CONFLICT (name) DO NOTHING;

-- Accounts (queues/accounts.py): the id is immutable (messages refer to it), the name can
-- change. author_domains is a JSON array. Config-seeded rows are inserted if absent, never
-- updated by a later seeding.
CREATE TABLE IF NOT EXISTS accounts (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    status         TEXT NOT NULL CHECK (status IN ('active', 'paused')),
    trusted        INTEGER NOT NULL,
    config_seeded  INTEGER NOT NULL,
    author_domains TEXT NOT NULL,
    pool           TEXT,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
) WITHOUT ROWID;

-- API keys: only the SHA-256 of the token is kept.
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    scope       TEXT NOT NULL CHECK (scope IN ('send', 'full')),
    label       TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS api_keys_account ON api_keys (account_id, created_at);

-- The event outbox: outcome events written in the transaction of their outcomes, and the
-- deliverability events (pauses, slows, reloads). AUTOINCREMENT: a seq is never handed out
-- twice, even after pruning the newest rows, so a consumer's cursor stays valid.
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         REAL NOT NULL,
    kind       TEXT NOT NULL,
    message_id TEXT,
    account    TEXT,
    data       TEXT NOT NULL  -- a JSON object
);

CREATE INDEX IF NOT EXISTS events_at ON events (at);

-- The caller's metadata (JSON text), beside its message like the body: most messages have
-- none, and a state change never rewrites it.
CREATE TABLE IF NOT EXISTS message_metadata (
    seq      INTEGER PRIMARY KEY,
    metadata TEXT NOT NULL
);

CREATE TRIGGER IF NOT EXISTS messages_drop_metadata AFTER DELETE ON messages
BEGIN
    DELETE FROM message_metadata WHERE seq = old.seq;
END;

-- An account's messages newest first, all or of one campaign (the API's listing).
CREATE INDEX IF NOT EXISTS messages_account ON messages (account, id);
CREATE INDEX IF NOT EXISTS messages_account_campaign ON messages (account, campaign, id)
    WHERE campaign IS NOT NULL;

-- Suppression lists (queues/suppressions.py): per account, and the platform-wide list of
-- hard bounces under account '*'. Addresses are stored ASCII-lowercased; a message's
-- recipient is looked up as lower(rcpt): two primary-key probes (its account, '*').
CREATE TABLE IF NOT EXISTS suppressions (
    account    TEXT NOT NULL,
    address    TEXT NOT NULL,
    reason     TEXT NOT NULL
        CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')),
    source     TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (account, address)
) WITHOUT ROWID;

-- Cancelled campaigns: the committing mark refuses a message of a campaign cancelled after
-- it was enqueued (it may have been claimed before the cancel reached the queue).
CREATE TABLE IF NOT EXISTS cancelled_campaigns (
    account      TEXT NOT NULL,
    campaign     TEXT NOT NULL,
    cancelled_at REAL NOT NULL,
    PRIMARY KEY (account, campaign)
) WITHOUT ROWID;

-- The attempt log (queues/deliverability.py): one row per attempt, written in the outcome's
-- transaction. Kept for the message retention (prune), apart from the message itself.
CREATE TABLE IF NOT EXISTS attempts (
    seq             INTEGER PRIMARY KEY,
    message_id      TEXT NOT NULL,
    at              REAL NOT NULL,
    state           TEXT NOT NULL,
    source_ip       TEXT,
    platform_domain TEXT,
    mx_host         TEXT,
    provider        TEXT,
    tls             INTEGER,
    reply_code      INTEGER,
    reply_text      TEXT,
    category        TEXT
);

CREATE INDEX IF NOT EXISTS attempts_message ON attempts (message_id);
CREATE INDEX IF NOT EXISTS attempts_at ON attempts (at);

-- Attempts per (source IP, provider, UTC day): warmup caps hold across restarts.
CREATE TABLE IF NOT EXISTS daily_counts (
    source_ip TEXT NOT NULL,
    provider  TEXT NOT NULL,
    day       INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (source_ip, provider, day)
) WITHOUT ROWID;

-- Each warming IP's schedule day (ip_pools.warmup.WarmupProgress).
CREATE TABLE IF NOT EXISTS ip_warmup (
    address    TEXT PRIMARY KEY,
    schedule   TEXT NOT NULL,
    day        INTEGER NOT NULL,
    on_day     INTEGER NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;

-- Webhook endpoints of an account: `doc` (JSON) is what the API registers (event types,
-- batch size, encrypted secrets, a replay request), `state` (JSON) what the sender keeps
-- (position, the batch in flight, failures); each side writes only its own column.
CREATE TABLE IF NOT EXISTS webhooks (
    id          TEXT PRIMARY KEY,
    account     TEXT NOT NULL,
    url         TEXT NOT NULL,
    doc         TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT '{}',
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS webhooks_account ON webhooks (account, id);
