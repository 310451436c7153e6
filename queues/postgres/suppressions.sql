-- Suppression lists of the PostgreSQL queue (queues/postgres/backend.py).

-- name: put
-- $1 accounts, $2 addresses, $3 reasons, $4 sources, $5 times (one row per entry, unique).
INSERT INTO md_suppression (account, address, reason, source, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])
ON CONFLICT (account, address) DO UPDATE
SET reason = excluded.reason, source = excluded.source, created_at = excluded.created_at;

-- name: get
SELECT account, address, reason, source, created_at FROM md_suppression
WHERE address = $2 AND account IN ($1, '*')
ORDER BY account = '*'
LIMIT 1;

-- name: delete
DELETE FROM md_suppression WHERE account = $1 AND address = $2 RETURNING 1;

-- name: listing
SELECT account, address, reason, source, created_at FROM md_suppression
WHERE account = $1 AND address > $2
ORDER BY address
LIMIT $3;

-- name: settle
-- $1 ids, $2 worker (NULL: waiting messages), $3 epoch, $4 now. The messages among $1
-- whose recipient is suppressed move to md_history as `suppressed`, each with its event.
WITH hit AS (
    SELECT m.id, s.reason, s.account = '*' AS platform
    FROM md_message m
    JOIN md_content c ON c.id = m.id
    CROSS JOIN LATERAL (
        SELECT s.reason, s.account FROM md_suppression s
        WHERE s.address = lower(c.rcpt COLLATE "C") AND s.account IN (m.account, '*')
        ORDER BY s.account = '*' LIMIT 1
    ) s
    WHERE m.id = ANY($1::text[])
),
doomed AS (
    DELETE FROM md_message m
    WHERE m.id = ANY(ARRAY(SELECT id FROM hit))
      AND CASE WHEN $2::text IS NULL THEN m.state IN ('queued', 'deferred')
               ELSE m.state = 'sending' AND m.worker_id = $2 AND m.lease_epoch = $3 END
    RETURNING m.*
),
archived AS (
    INSERT INTO md_history (id, state, reason, attempts, account, campaign, stream, pool,
                            last_reply_code, last_reply_text, source_ip, platform_domain,
                            mx_host, enqueued_at, finished_at, resends, priority)
    SELECT d.id, 'suppressed', 'suppressed', d.attempts, d.account, d.campaign, d.stream,
           d.pool, NULL, 'suppressed: ' || h.reason, d.source_ip, d.platform_domain,
           d.mx_host, d.enqueued_at, $4, d.resends, d.priority
    FROM doomed d JOIN hit h ON h.id = d.id
),
events AS (
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), $4, 'message.suppressed', d.id, d.account,
           jsonb_build_object('reason', h.reason,
                              'scope', CASE WHEN h.platform THEN 'platform' ELSE 'account' END)
    FROM doomed d JOIN hit h ON h.id = d.id
)
SELECT coalesce(array_agg(id), '{}'::text[]) AS settled FROM doomed;

-- name: cancel_campaign_record
INSERT INTO md_cancelled_campaign (account, campaign, cancelled_at) VALUES ($1, $2, $3)
ON CONFLICT (account, campaign) DO UPDATE SET cancelled_at = excluded.cancelled_at;

-- name: cancel_batch
-- $1 account, $2 campaign (NULL: every campaign), $3 id cursor, $4 limit, $5 now. The next
-- $4 messages of the account (of the campaign) by id, walked on md_content's index once;
-- those still waiting move to md_history as cancelled, with their events. Returns how many
-- were cancelled and the last id walked (NULL when nothing is left).
WITH walked AS (
    SELECT c.id FROM md_content c
    WHERE c.account = $1 AND ($2::text IS NULL OR c.campaign = $2) AND c.id > $3
    ORDER BY c.id
    LIMIT $4
),
doomed AS (
    DELETE FROM md_message m
    WHERE m.id = ANY(ARRAY(SELECT id FROM walked)) AND m.state IN ('queued', 'deferred')
    RETURNING m.*
),
archived AS (
    INSERT INTO md_history (id, state, reason, attempts, account, campaign, stream, pool,
                            last_reply_code, last_reply_text, source_ip, platform_domain,
                            mx_host, enqueued_at, finished_at, resends, priority)
    SELECT id, 'cancelled', 'cancelled', attempts, account, campaign, stream, pool,
           NULL, 'cancelled', source_ip, platform_domain, mx_host, enqueued_at, $5,
           resends, priority
    FROM doomed
),
events AS (
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), $5, 'message.cancelled', id, account,
           jsonb_strip_nulls(jsonb_build_object('reason', 'cancelled', 'campaign', campaign))
    FROM doomed
)
SELECT (SELECT count(*) FROM doomed) AS cancelled,
       (SELECT max(id) FROM walked) AS last_id,
       (SELECT count(*) FROM walked) AS walked;

-- name: settle_cancelled
-- $1 ids, $2 worker, $3 epoch, $4 now: messages sending under the lease whose campaign was
-- cancelled after they were enqueued move to md_history as cancelled, with their events.
WITH doomed AS (
    DELETE FROM md_message m
    USING md_cancelled_campaign k
    WHERE m.id = ANY($1::text[]) AND m.worker_id = $2 AND m.lease_epoch = $3
      AND m.state = 'sending'
      AND k.account = m.account AND k.campaign = m.campaign AND k.cancelled_at >= m.enqueued_at
    RETURNING m.*
),
archived AS (
    INSERT INTO md_history (id, state, reason, attempts, account, campaign, stream, pool,
                            last_reply_code, last_reply_text, source_ip, platform_domain,
                            mx_host, enqueued_at, finished_at, resends, priority)
    SELECT id, 'cancelled', 'campaign_cancelled', attempts, account, campaign, stream, pool,
           NULL, 'cancelled', source_ip, platform_domain, mx_host, enqueued_at, $4,
           resends, priority
    FROM doomed
),
events AS (
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), $4, 'message.cancelled', id, account,
           jsonb_build_object('reason', 'campaign_cancelled', 'campaign', campaign)
    FROM doomed
)
SELECT coalesce(array_agg(id), '{}'::text[]) AS settled FROM doomed;

-- name: hold_batch
-- $1 account, $2 id cursor, $3 limit, $4 HOLD_OFFSET. The account's next $3 messages by id
-- (md_content's index); those waiting follow the account's status as it is now: held
-- (due time moved ahead) when paused, released when active. Idempotent both ways, so a
-- pause and a resume walking at once converge on the last one.
WITH walked AS (
    SELECT c.id FROM md_content c WHERE c.account = $1 AND c.id > $2 ORDER BY c.id LIMIT $3
),
p AS (SELECT status = 'paused' AS paused FROM md_account WHERE id = $1),
moved AS (
    UPDATE md_message m
    SET due_at = CASE WHEN p.paused AND m.due_at < $4 THEN m.due_at + $4
                      WHEN NOT p.paused AND m.due_at >= $4 THEN m.due_at - $4
                      ELSE m.due_at END
    FROM p
    WHERE m.id = ANY(ARRAY(SELECT id FROM walked)) AND m.state IN ('queued', 'deferred')
    RETURNING 1
)
SELECT (SELECT max(id) FROM walked) AS last_id, (SELECT count(*) FROM walked) AS walked,
       (SELECT count(*) FROM moved) AS moved;

-- name: hold_in_flight
-- $1 ids, $2 worker, $3 epoch, $4 HOLD_OFFSET, $5 now: at the mark, a paused account's
-- messages go back to the queue, held (no attempt counted, nothing sent).
UPDATE md_message
SET state = 'queued', worker_id = NULL, lease_epoch = NULL, updated_at = $5,
    due_at = CASE WHEN due_at < $4 THEN due_at + $4 ELSE due_at END
WHERE id = ANY($1::text[]) AND state = 'sending' AND worker_id = $2 AND lease_epoch = $3
  AND account IN (SELECT id FROM md_account WHERE status = 'paused')
RETURNING id;

-- name: enqueue_gates
-- $1 ids just enqueued (this transaction), $2 now, $3 HOLD_OFFSET. One statement at the end
-- of an enqueue's transaction (it also sends the NOTIFY, so it costs no round trip more):
-- mail to a suppressed address moves to md_history as `suppressed` with its event, and a
-- paused account's mail is held (its due time moved ahead until the account is resumed).
WITH hit AS (
    SELECT m.id, s.reason, s.account = '*' AS platform
    FROM md_message m
    JOIN md_content c ON c.id = m.id
    CROSS JOIN LATERAL (
        SELECT s.reason, s.account FROM md_suppression s
        WHERE s.address = lower(c.rcpt COLLATE "C") AND s.account IN (m.account, '*')
        ORDER BY s.account = '*' LIMIT 1
    ) s
    WHERE m.id = ANY($1::text[]) AND m.state = 'queued'
),
doomed AS (
    DELETE FROM md_message m
    WHERE m.id = ANY(ARRAY(SELECT id FROM hit)) AND m.state = 'queued'
    RETURNING m.*
),
archived AS (
    INSERT INTO md_history (id, state, reason, attempts, account, campaign, stream, pool,
                            last_reply_code, last_reply_text, source_ip, platform_domain,
                            mx_host, enqueued_at, finished_at, resends, priority)
    SELECT d.id, 'suppressed', 'suppressed', d.attempts, d.account, d.campaign, d.stream,
           d.pool, NULL, 'suppressed: ' || h.reason, d.source_ip, d.platform_domain,
           d.mx_host, d.enqueued_at, $2, d.resends, d.priority
    FROM doomed d JOIN hit h ON h.id = d.id
),
events AS (
    INSERT INTO md_event (txid, at, kind, message_id, account, data)
    SELECT pg_current_xact_id(), $2, 'message.suppressed', d.id, d.account,
           jsonb_build_object('reason', h.reason,
                              'scope', CASE WHEN h.platform THEN 'platform' ELSE 'account' END)
    FROM doomed d JOIN hit h ON h.id = d.id
),
held AS (
    UPDATE md_message m SET due_at = m.due_at + $3
    WHERE m.id = ANY($1::text[]) AND m.state = 'queued' AND m.due_at < $3
      AND m.id <> ALL(ARRAY(SELECT id FROM hit))
      AND m.account IN (SELECT id FROM md_account WHERE status = 'paused')
    RETURNING 1
)
SELECT (SELECT count(*) FROM doomed) AS suppressed, (SELECT count(*) FROM held) AS held,
       pg_notify('maildispatch_work', '') AS notified;
