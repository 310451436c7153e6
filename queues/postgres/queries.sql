-- Every query of the PostgreSQL queue backend. Sections start with `-- name: <query>`;
-- queues/postgres/sql.py loads them. Batches travel as parallel arrays through unnest(), so
-- one statement (one round trip) writes a whole batch. Times are POSIX seconds.

-- name: enqueue_keys
-- $1 now, $2 accounts, $3 keys, $4 payload hashes, $5 message ids. Keys first: ON CONFLICT
-- DO NOTHING waits for a concurrent insert of the same key and then skips it, so two
-- connections enqueueing one key store one message. Keys are inserted in (account, key)
-- order, the same order in every transaction (the caller sorts across chunks too), so two
-- enqueues of overlapping keys wait on each other instead of deadlocking. Returns the ids
-- whose key was inserted here: only those get a message (COPY into md_message and
-- md_content, in the same transaction, see batches.py). One NOTIFY for the
-- whole statement, delivered at commit, never one per row.
WITH keys AS (
    INSERT INTO md_idempotency (account, idempotency_key, payload_hash, message_id, created_at)
    SELECT account, idempotency_key, payload_hash, id, $1
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
        AS i (account, idempotency_key, payload_hash, id)
    ORDER BY account, idempotency_key  -- collation "C": code point order, as Python sorts
    ON CONFLICT DO NOTHING
    RETURNING message_id
)
SELECT coalesce(array_agg(message_id), '{}'::text[]) AS created,
       CASE WHEN count(*) > 0 THEN pg_notify('maildispatch_work', '') END AS notified
FROM keys;

-- name: notify_work
SELECT pg_notify('maildispatch_work', '');

-- name: hot_stats_stale
-- $1 rows just added. True when they outnumber what the planner believes the hot table
-- holds (reltuples, -1 before the first ANALYZE): a broadcast just landed and claims would
-- still be planned for the old, small table. (pg_stat counters lag by up to a second, so
-- they cannot tell.)
SELECT $1 > greatest(reltuples, 0) FROM pg_class WHERE oid = 'md_message'::regclass;

-- name: analyze_hot
ANALYZE md_message;

-- name: idempotency_lookup
-- A statement of its own: it takes a new snapshot, so it sees keys that a concurrent
-- enqueue committed while `enqueue` was waiting on them.
SELECT k.account, k.idempotency_key, k.payload_hash, k.message_id
FROM md_idempotency k
JOIN unnest($1::text[], $2::text[]) AS i (account, idempotency_key)
    USING (account, idempotency_key);

-- name: register_worker
INSERT INTO md_worker (worker_id, epoch, expires_at, heartbeat_at, registered_at, host, pid)
VALUES ($1, nextval('md_lease_epoch'), $2, $3, $3, $4, $5)
RETURNING epoch;

-- name: count_live_workers
SELECT count(*) FROM md_worker WHERE expires_at > $1;

-- name: heartbeat
-- An expired lease is never renewed, even before recovery took it: its messages may be
-- about to change hands.
UPDATE md_worker SET expires_at = $3, heartbeat_at = $4
WHERE worker_id = $1 AND epoch = $2 AND expires_at > $4
RETURNING expires_at;

-- name: lease_alive
SELECT EXISTS (
    SELECT 1 FROM md_worker WHERE worker_id = $1 AND epoch = $2 AND expires_at > $3
);

-- name: lease_inflight
SELECT count(*) FROM md_message
WHERE worker_id = $1 AND lease_epoch = $2 AND state IN ('sending', 'committing');

-- name: drop_lease
DELETE FROM md_worker WHERE worker_id = $1 AND epoch = $2;

-- name: expire_lease
-- Messages are still held under the lease: let the next recovery pass take them.
UPDATE md_worker SET expires_at = 0 WHERE worker_id = $1 AND epoch = $2;

-- name: claim
-- $1 worker, $2 epoch, $3 now (due and expiry), $4 limit, $5 wall clock (lease validity),
-- $6/$7 providers and streams (NULL: every stream) to leave out (ClaimSkip).
-- Waiting messages past expires_at become failed (a bounded slice per claim). Then up to
-- $4 due messages are locked with SKIP LOCKED (concurrent claimers never wait on each other
-- and never get the same row), marked sending under the lease, and returned with content.
WITH lease AS (
    SELECT 1 FROM md_worker WHERE worker_id = $1 AND epoch = $2 AND expires_at > $5
),
expired AS (
    DELETE FROM md_message m
    WHERE m.id IN (
        SELECT id FROM md_message
        WHERE state IN ('queued', 'deferred') AND expires_at IS NOT NULL AND expires_at <= $3
        ORDER BY expires_at
        LIMIT 1000
        FOR UPDATE SKIP LOCKED
    )
    RETURNING m.*
),
expired_history AS (
    INSERT INTO md_history (id, state, reason, attempts, account, campaign, stream, pool,
                            last_reply_code, last_reply_text, source_ip, platform_domain,
                            mx_host, enqueued_at, finished_at, resends, priority)
    SELECT id, 'failed', 'expired', attempts, account, campaign, stream, pool,
           last_reply_code,
           CASE WHEN last_reply_text IS NULL THEN 'expired'
                ELSE 'expired; last reply: ' || last_reply_text END,
           source_ip, platform_domain, mx_host, enqueued_at, $3, resends, priority
    FROM expired
),
expired_events AS (
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), $3, 'message.failed', id, account,
           jsonb_strip_nulls(jsonb_build_object(
               'reason', 'expired', 'attempts', attempts, 'source_ip', source_ip,
               'platform_domain', platform_domain, 'category', 'MessageExpired'))
    FROM expired
),
picked AS (
    SELECT id FROM md_message
    WHERE state IN ('queued', 'deferred') AND due_at <= $3
      AND (expires_at IS NULL OR expires_at > $3)
      AND (provider IS NULL OR cardinality($6::text[]) = 0 OR NOT EXISTS (
          SELECT 1 FROM unnest($6::text[], $7::text[]) AS k (provider, stream)
          WHERE k.provider = md_message.provider
            AND (k.stream IS NULL OR k.stream = md_message.stream)))
      AND EXISTS (SELECT 1 FROM lease)
    ORDER BY priority DESC, due_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    -- By primary key (an array, not a join): a join here may be planned as a scan of the
    -- whole table when statistics lag behind a broadcast.
    UPDATE md_message m
    SET state = 'sending', worker_id = $1, lease_epoch = $2, updated_at = $3
    WHERE m.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING m.id, m.stream, m.priority, m.campaign, m.pool, m.attempts, m.expires_at,
              m.due_at, m.provider
)
SELECT m.id, c.account, c.author_domain, c.rcpt, c.rcpt_domain, c.verp_token, c.message_id,
       c.body, m.stream, m.priority, m.campaign, m.pool, m.attempts, c.enqueued_at,
       m.expires_at, c.smtputf8, m.provider
FROM claimed m JOIN md_content c ON c.id = m.id
ORDER BY m.priority DESC, m.due_at;

-- name: release_unheld
-- $1 worker, $2 epoch, $3 ids the worker holds, $4 now. Messages claimed under the lease
-- that the worker does not know of (the reply to a claim was lost) go back to the queue.
-- Only `sending`: a committing one may have reached the dot.
WITH released AS (
    UPDATE md_message SET state = 'queued', worker_id = NULL, lease_epoch = NULL, updated_at = $4
    WHERE worker_id = $1 AND lease_epoch = $2 AND state = 'sending'
      AND NOT (id = ANY($3::text[]))
    RETURNING id
)
SELECT count(*) AS released,
       CASE WHEN count(*) > 0 THEN pg_notify('maildispatch_work', '') END AS notified
FROM released;

-- name: mark_committing
-- The compare-and-set before the final dot: only messages still held under this lease,
-- and only while the lease is alive. Already-committing ones are granted again, so a
-- repeat after a lost reply is harmless. Runs with synchronous_commit on (the pool's
-- default): the mark is durable when this returns.
UPDATE md_message SET state = 'committing', updated_at = $4
WHERE id = ANY($3::text[]) AND worker_id = $1 AND lease_epoch = $2
  AND state IN ('sending', 'committing')
  AND EXISTS (
      SELECT 1 FROM md_worker w WHERE w.worker_id = $1 AND w.epoch = $2 AND w.expires_at > $4
  )
RETURNING id;

-- name: record_outcomes
-- $1 worker, $2 epoch, $3 now, $4 ids, $5 {id: [state, counts_attempt, retry_at, reply_code,
-- reply_text, source_ip, platform_domain, mx_host, category, provider, tls, attempted_at]}
-- as jsonb, $6 other events. Each applied outcome that counts an attempt goes to the attempt
-- log and, with a source IP and a provider, to the daily counts, in this statement. Rows are
-- found by primary key
-- (id = ANY) and each takes its outcome by key lookup in the jsonb object: no join, so no
-- plan can degrade to comparing every outcome with every row when statistics are stale.
-- Fenced on (message, worker, epoch): a message recovered by another worker is left
-- alone. Waiting outcomes (queued, deferred) update the row; finished ones move it to
-- md_history. Committed asynchronously (set_config(..., true) lasts this transaction
-- only): losing the last outcomes in a server crash leaves those messages committing,
-- hence ambiguous after recovery, never sent twice.
WITH waiting AS (
    UPDATE md_message m
    SET state = $5::jsonb -> m.id ->> 0,
        attempts = m.attempts + ($5::jsonb -> m.id ->> 1)::boolean::int,
        due_at = ($5::jsonb -> m.id ->> 2)::float8,
        last_reply_code = coalesce(($5::jsonb -> m.id ->> 3)::int4, m.last_reply_code),
        last_reply_text = coalesce($5::jsonb -> m.id ->> 4, m.last_reply_text),
        source_ip = coalesce($5::jsonb -> m.id ->> 5, m.source_ip),
        platform_domain = coalesce($5::jsonb -> m.id ->> 6, m.platform_domain),
        mx_host = coalesce($5::jsonb -> m.id ->> 7, m.mx_host),
        provider = coalesce($5::jsonb -> m.id ->> 9, m.provider),
        worker_id = NULL,
        lease_epoch = NULL,
        updated_at = $3
    WHERE m.id = ANY($4::text[])
      AND m.worker_id = $1 AND m.lease_epoch = $2 AND m.state IN ('sending', 'committing')
      AND $5::jsonb -> m.id ->> 0 IN ('queued', 'deferred')
    RETURNING m.id, m.account
),
finished AS (
    DELETE FROM md_message m
    WHERE m.id = ANY($4::text[])
      AND m.worker_id = $1 AND m.lease_epoch = $2 AND m.state IN ('sending', 'committing')
      AND $5::jsonb -> m.id ->> 0 NOT IN ('queued', 'deferred')
    RETURNING m.*, $5::jsonb -> m.id AS o
),
archived AS (
    INSERT INTO md_history (id, state, reason, attempts, account, campaign, stream, pool,
                            last_reply_code, last_reply_text, source_ip, platform_domain,
                            mx_host, enqueued_at, finished_at, resends, priority, provider)
    SELECT id, o ->> 0, CASE WHEN o ->> 0 = 'ambiguous' THEN 'no_reply' END,
           attempts + (o ->> 1)::boolean::int, account, campaign, stream, pool,
           coalesce((o ->> 3)::int4, last_reply_code), coalesce(o ->> 4, last_reply_text),
           coalesce(o ->> 5, source_ip), coalesce(o ->> 6, platform_domain),
           coalesce(o ->> 7, mx_host), enqueued_at, $3, resends, priority,
           coalesce(o ->> 9, provider)
    FROM finished
),
outcome_events AS (
    -- One event per applied outcome (none for `queued`: no attempt), in this statement.
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), $3, 'message.' || (a.o ->> 0), a.id, a.account,
           jsonb_strip_nulls(jsonb_build_object(
               'reply_code', a.o -> 3, 'reply_text', a.o -> 4, 'source_ip', a.o -> 5,
               'platform_domain', a.o -> 6, 'mx_host', a.o -> 7, 'category', a.o -> 8,
               'retry_at', CASE WHEN a.o ->> 0 = 'deferred' THEN a.o -> 2 END))
    FROM (SELECT w.id, w.account, $5::jsonb -> w.id AS o FROM waiting w
          UNION ALL
          SELECT f.id, f.account, f.o FROM finished f) a
    WHERE a.o ->> 0 <> 'queued'
),
other_events AS (
    -- $6: [[at, kind, message_id, account, data], ...], written whatever the fence says.
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), (e ->> 0)::float8, e ->> 1, e ->> 2, e ->> 3, e -> 4
    FROM jsonb_array_elements($6::jsonb) e
),
tried AS (
    SELECT w.id, $5::jsonb -> w.id AS o FROM waiting w
    WHERE ($5::jsonb -> w.id ->> 1)::boolean
    UNION ALL
    SELECT f.id, f.o FROM finished f WHERE (f.o ->> 1)::boolean
),
logged AS (
    INSERT INTO md_attempt (message_id, at, state, source_ip, platform_domain, mx_host,
                            provider, tls, reply_code, reply_text, category)
    SELECT id, coalesce((o ->> 11)::float8, $3), o ->> 0, o ->> 5, o ->> 6, o ->> 7, o ->> 9,
           (o ->> 10)::boolean, (o ->> 3)::int4, o ->> 4, o ->> 8
    FROM tried
),
counted AS (
    -- In key order, so that two workers adding to the same rows never deadlock.
    INSERT INTO md_daily_count (source_ip, provider, day, count)
    SELECT o ->> 5, o ->> 9, floor(coalesce((o ->> 11)::float8, $3) / 86400)::int, count(*)
    FROM tried
    WHERE o ->> 5 IS NOT NULL AND o ->> 9 IS NOT NULL
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (source_ip, provider, day)
    DO UPDATE SET count = md_daily_count.count + excluded.count
)
SELECT (SELECT count(*) FROM waiting) + (SELECT count(*) FROM finished) AS applied,
       set_config('synchronous_commit', 'off', true) AS commit_mode;

-- name: recover
-- $1 now, $2 streams whose ambiguous policy is "retry". Expired leases are deleted and
-- their in-flight messages taken over in the same statement. Two recoverers at once: the
-- second waits on the lease rows the first deleted, then skips them, so each lease is
-- recovered once.
WITH dead AS (
    DELETE FROM md_worker WHERE expires_at <= $1
    RETURNING worker_id, epoch
),
requeued AS (
    UPDATE md_message m
    SET state = 'queued',
        attempts = m.attempts + (m.state = 'committing')::int,
        worker_id = NULL,
        lease_epoch = NULL,
        updated_at = $1
    FROM dead d
    WHERE m.worker_id = d.worker_id AND m.lease_epoch = d.epoch
      AND m.state IN ('sending', 'committing')
      AND (m.state = 'sending' OR m.stream = ANY($2::text[]))
    RETURNING m.id
),
held AS (
    DELETE FROM md_message m
    USING dead d
    WHERE m.worker_id = d.worker_id AND m.lease_epoch = d.epoch
      AND m.state IN ('sending', 'committing')
      AND m.state = 'committing' AND NOT (m.stream = ANY($2::text[]))
    RETURNING m.*
),
held_history AS (
    -- Reason and text as the SQLite backend gives them (queues.protocol.HeldReason).
    INSERT INTO md_history (id, state, reason, attempts, account, campaign, stream, pool,
                            last_reply_code, last_reply_text, source_ip, platform_domain,
                            mx_host, enqueued_at, finished_at, resends, priority)
    SELECT id, 'ambiguous', 'recovered_ambiguous', attempts + 1, account, campaign, stream,
           pool, NULL, 'no reply: worker lost after the committing mark', source_ip,
           platform_domain, mx_host, enqueued_at, $1, resends, priority
    FROM held
),
held_events AS (
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), $1, 'message.ambiguous', id, account,
           jsonb_strip_nulls(jsonb_build_object(
               'reason', 'recovered_ambiguous', 'attempts', attempts + 1,
               'source_ip', source_ip, 'platform_domain', platform_domain,
               'mx_host', mx_host))
    FROM held
)
SELECT (SELECT count(*) FROM dead) AS workers,
       (SELECT count(*) FROM requeued) AS requeued,
       (SELECT count(*) FROM held) AS ambiguous,
       CASE WHEN (SELECT count(*) FROM requeued) > 0
            THEN pg_notify('maildispatch_work', '') END AS notified;

-- name: counts
SELECT state, pool, source_ip, count(*) AS n FROM md_message GROUP BY state, pool, source_ip
UNION ALL
SELECT state, pool, source_ip, count(*) AS n FROM md_history GROUP BY state, pool, source_ip;

-- name: next_due
-- A loose index scan of md_message_claim: walk the distinct priorities (highest first, one
-- probe each), take the first due time of each, the least of those.
WITH RECURSIVE priorities AS (
    (SELECT priority FROM md_message
     WHERE state IN ('queued', 'deferred')
     ORDER BY priority DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT m.priority FROM md_message m
            WHERE m.state IN ('queued', 'deferred') AND m.priority < p.priority
            ORDER BY m.priority DESC LIMIT 1)
    FROM priorities p
    WHERE p.priority IS NOT NULL
)
SELECT min((SELECT m.due_at FROM md_message m
            WHERE m.state IN ('queued', 'deferred') AND m.priority = p.priority
            ORDER BY m.priority DESC, m.due_at LIMIT 1))
FROM priorities p
WHERE p.priority IS NOT NULL;

-- name: active_count
-- md_message holds exactly the messages not yet finished.
SELECT count(*) FROM md_message;

-- name: get
SELECT m.id, c.account, c.idempotency_key, m.state, m.attempts, c.rcpt, m.last_reply_code,
       m.last_reply_text, m.source_ip, m.platform_domain, m.provider
FROM md_message m JOIN md_content c ON c.id = m.id
WHERE m.id = ANY($1::text[])
UNION ALL
SELECT h.id, c.account, c.idempotency_key, h.state, h.attempts, c.rcpt, h.last_reply_code,
       h.last_reply_text, h.source_ip, h.platform_domain, h.provider
FROM md_history h JOIN md_content c ON c.id = h.id
WHERE h.id = ANY($1::text[]);

-- name: prune_messages
-- One small batch ($2 rows) per statement: short transactions, no long locks.
WITH doomed AS (
    DELETE FROM md_history
    WHERE id IN (SELECT id FROM md_history WHERE finished_at < $1 LIMIT $2)
    RETURNING id
),
bodies AS (
    DELETE FROM md_content c USING doomed d WHERE c.id = d.id
)
SELECT count(*) FROM doomed;

-- name: prune_keys
WITH doomed AS (
    DELETE FROM md_idempotency
    WHERE (account, idempotency_key) IN (
        SELECT account, idempotency_key FROM md_idempotency WHERE created_at < $1 LIMIT $2
    )
    RETURNING 1
)
SELECT count(*) FROM doomed;

-- name: append_events
-- $1: [[at, kind, message_id, account, data], ...] as jsonb.
INSERT INTO md_event (txid, at, kind, message_id, account, data)
SELECT pg_current_xact_id(), (e ->> 0)::float8, e ->> 1, e ->> 2, e ->> 3, e -> 4
FROM jsonb_array_elements($1::jsonb) e;

-- name: read_events
-- `settled`: written by a transaction older than every running one, so nothing with a
-- smaller seq can still commit (the caller stops at the first row that is not).
SELECT e.seq, e.at, e.kind, e.message_id, e.account, e.data::text AS data, c.campaign,
       c.metadata, e.txid < pg_snapshot_xmin(pg_current_snapshot()) AS settled
FROM md_event e
LEFT JOIN md_content c ON c.id = e.message_id
WHERE e.seq > $1 ORDER BY e.seq LIMIT $2;

-- name: prune_events
WITH doomed AS (
    DELETE FROM md_event
    WHERE seq IN (SELECT seq FROM md_event WHERE at < $1 ORDER BY at LIMIT $2)
    RETURNING 1
)
SELECT count(*) FROM doomed;

-- name: last_event_seq
SELECT coalesce(max(seq), 0) FROM md_event;

-- name: held
-- $1 account, $2 campaign, $3 stream, $4 held at or before, $5 ids (each NULL: any), $6 limit.
-- Longest held first, through md_history_held.
SELECT h.id, h.account, h.campaign, h.stream, c.rcpt, h.attempts,
       coalesce(h.reason, 'no_reply') AS reason, h.last_reply_code, h.last_reply_text,
       h.finished_at, h.source_ip, h.mx_host, h.resends
FROM md_history h JOIN md_content c ON c.id = h.id
WHERE h.state = 'ambiguous'
  AND ($1::text IS NULL OR h.account = $1) AND ($2::text IS NULL OR h.campaign = $2)
  AND ($3::text IS NULL OR h.stream = $3) AND ($4::float8 IS NULL OR h.finished_at <= $4)
  AND ($5::text[] IS NULL OR h.id = ANY($5))
ORDER BY h.finished_at
LIMIT $6;

-- name: held_count
SELECT count(*) FROM md_history WHERE state = 'ambiguous';

-- name: release_held
-- Filters as `held`; $6 now. Held messages go back to md_message, due now, one deliberate
-- resend more, their expiry lifted (an operator asked for this send), with an event each.
-- Two releases at once: the second waits on the rows the first deleted, then skips them.
WITH picked AS (
    DELETE FROM md_history h
    WHERE h.state = 'ambiguous'
      AND ($1::text IS NULL OR h.account = $1) AND ($2::text IS NULL OR h.campaign = $2)
      AND ($3::text IS NULL OR h.stream = $3) AND ($4::float8 IS NULL OR h.finished_at <= $4)
      AND ($5::text[] IS NULL OR h.id = ANY($5))
    RETURNING h.*
),
requeued AS (
    INSERT INTO md_message (id, state, priority, due_at, expires_at, attempts, account,
                            campaign, stream, pool, last_reply_code, last_reply_text,
                            source_ip, platform_domain, mx_host, enqueued_at, updated_at,
                            resends)
    SELECT id, 'queued', priority, $6, NULL, attempts, account, campaign, stream, pool,
           last_reply_code, last_reply_text, source_ip, platform_domain, mx_host,
           enqueued_at, $6, resends + 1
    FROM picked
    RETURNING id, account, resends
),
released_events AS (
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), $6, 'message.released', id, account,
           jsonb_build_object('reason', 'held_released', 'resends', resends)
    FROM requeued
)
SELECT count(*) AS released,
       CASE WHEN count(*) > 0 THEN pg_notify('maildispatch_work', '') END AS notified
FROM requeued;

-- name: resolve_held
-- Filters as `held`; $6 the state (delivered or failed), $7 now. Settled without sending.
WITH resolved AS (
    UPDATE md_history h
    SET state = $6, reason = 'resolved', last_reply_code = NULL,
        last_reply_text = 'resolved as ' || $6 || ' by an operator; held for: '
                          || coalesce(h.last_reply_text, 'no reply'),
        finished_at = $7
    WHERE h.state = 'ambiguous'
      AND ($1::text IS NULL OR h.account = $1) AND ($2::text IS NULL OR h.campaign = $2)
      AND ($3::text IS NULL OR h.stream = $3) AND ($4::float8 IS NULL OR h.finished_at <= $4)
      AND ($5::text[] IS NULL OR h.id = ANY($5))
    RETURNING h.id, h.account
),
resolved_events AS (
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), $7, 'message.resolved', id, account,
           jsonb_build_object('reason', 'held_resolved', 'state', $6::text)
    FROM resolved
)
SELECT count(*) FROM resolved;
