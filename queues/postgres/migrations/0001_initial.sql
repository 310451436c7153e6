-- maildispatch PostgreSQL queue, schema version 1.
--
-- Layout, and why:
--
-- * md_content holds what never changes after enqueue (addresses, Message-ID, VERP token,
--   the rendered body). It is written once and read once per attempt, so the rows that do
--   change stay narrow and bodies are never copied when a message changes table.
--
-- * md_message is the HOT table: only messages that are not finished yet (queued,
--   deferred, sending, committing). Claims, marks and outcomes touch only these narrow rows,
--   so the claim index stays as small as the live backlog however much history piles up.
--   Every state change rewrites the row (state is in the partial-index predicates, so the
--   updates cannot be HOT); fillfactor 70 leaves room on the page for the new version, which
--   keeps the table from growing with churn. The table churns constantly, so autovacuum must
--   not wait for the default 20% of dead rows: it runs after a fixed number of dead rows with
--   no cost delay (vacuuming a small, hot table is cheap; letting dead index entries pile up
--   in front of the claim scan is not).
--   How often autovacuum looks is server-wide (autovacuum_naptime, 1 min by default): for a
--   busy queue set it to about 10s. Measured at ~8,000 msgs/s for 60 s: 1.3M dead rows
--   and a 3x larger table with the default, under 2,000 with a vacuum every 10 s.
--
-- * md_history receives a message in the same statement that finishes it (delivered,
--   bounced, failed, ambiguous, suppressed, cancelled). It is insert-only until pruning, so
--   it is packed (fillfactor 100) and its time index is a BRIN index: rows arrive in
--   finished_at order, so a tiny BRIN index serves the range deletes of prune. When history
--   outgrows batched deletes (hundreds of millions of rows), turn it into a table
--   partitioned by finished_at and prune by dropping partitions; nothing else reads it by
--   time, so that change is local to this table and prune.
--
-- * md_idempotency is apart from messages, with its own retention: pruning a message never
--   reopens its key. (account, idempotency_key) is the primary key, so concurrent enqueues of
--   one key from two connections serialize on the unique index and store one message.
--
-- * md_worker holds worker leases. The epoch comes from a sequence, so it only grows and is
--   never handed out twice, even after a lease row is deleted by recovery.
--
-- Identifiers (ids, keys, worker ids) use the "C" collation: byte order, so index
-- comparisons are memcmp instead of locale rules, and the order matches Python's str order
-- (enqueue inserts keys in that order to avoid deadlocks).
--
-- Times are POSIX seconds (double precision), as in queues/protocol.py.

CREATE TABLE md_content (
    id              text COLLATE "C" PRIMARY KEY,
    account         text COLLATE "C" NOT NULL,
    idempotency_key text COLLATE "C" NOT NULL,
    author_domain   text NOT NULL,
    rcpt            text NOT NULL,
    rcpt_domain     text NOT NULL,
    verp_token      text NOT NULL,
    message_id      text NOT NULL,
    smtputf8        boolean NOT NULL,
    enqueued_at     double precision NOT NULL,
    body            bytea NOT NULL
);
-- Rendered mail compresses well; lz4 is several times cheaper than the default pglz.
ALTER TABLE md_content ALTER COLUMN body SET COMPRESSION lz4;

CREATE TABLE md_message (
    id              text COLLATE "C" PRIMARY KEY,
    state           text NOT NULL
        CHECK (state IN ('queued', 'deferred', 'sending', 'committing')),
    priority        integer NOT NULL,
    due_at          double precision NOT NULL,
    expires_at      double precision,
    attempts        integer NOT NULL DEFAULT 0,
    worker_id       text COLLATE "C",
    lease_epoch     bigint,
    account         text COLLATE "C" NOT NULL,
    campaign        text,
    stream          text NOT NULL,
    pool            text,
    last_reply_code integer,
    last_reply_text text,
    source_ip       text,
    platform_domain text,
    mx_host         text,
    enqueued_at     double precision NOT NULL,
    updated_at      double precision NOT NULL
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 50000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim: due messages by priority (higher first), then due time. Partial, so rows being
-- sent are not in it and a claimed row leaves it. It also serves next_due() (the first
-- entry of each priority: a few probes, there are few priorities), which spares every
-- enqueue the upkeep of a separate due-time index.
CREATE INDEX md_message_claim ON md_message (priority DESC, due_at)
    WHERE state IN ('queued', 'deferred');
-- Expiry during claims: waiting messages whose expires_at has passed become failed.
CREATE INDEX md_message_expiry ON md_message (expires_at)
    WHERE state IN ('queued', 'deferred') AND expires_at IS NOT NULL;
-- Recovery: the in-flight messages of one lease.
CREATE INDEX md_message_inflight ON md_message (worker_id, lease_epoch)
    WHERE state IN ('sending', 'committing');

CREATE TABLE md_history (
    id              text COLLATE "C" PRIMARY KEY,
    state           text NOT NULL
        CHECK (state IN ('delivered', 'bounced', 'failed', 'ambiguous', 'suppressed', 'cancelled')),
    -- why it ended without a reply, when it did: expired, cancelled, recovered_ambiguous
    reason          text,
    attempts        integer NOT NULL,
    account         text COLLATE "C" NOT NULL,
    campaign        text,
    stream          text NOT NULL,
    pool            text,
    last_reply_code integer,
    last_reply_text text,
    source_ip       text,
    platform_domain text,
    mx_host         text,
    enqueued_at     double precision NOT NULL,
    finished_at     double precision NOT NULL
) WITH (fillfactor = 100);

CREATE INDEX md_history_finished ON md_history USING brin (finished_at);

CREATE TABLE md_idempotency (
    account         text COLLATE "C" NOT NULL,
    idempotency_key text COLLATE "C" NOT NULL,
    payload_hash    text NOT NULL,
    message_id      text COLLATE "C" NOT NULL,
    created_at      double precision NOT NULL,
    PRIMARY KEY (account, idempotency_key)
);

CREATE INDEX md_idempotency_created ON md_idempotency USING brin (created_at);

CREATE SEQUENCE md_lease_epoch;

CREATE TABLE md_worker (
    worker_id     text COLLATE "C" NOT NULL,
    epoch         bigint NOT NULL,
    expires_at    double precision NOT NULL,
    heartbeat_at  double precision NOT NULL,
    registered_at double precision NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    PRIMARY KEY (worker_id, epoch)
);
