-- Suppression lists of the SQLite queue (queues/sqlite/suppressions.py).
-- Each starts with a `-- name: <name>` line; parameters are numbered.

-- name: put
INSERT INTO suppressions (account, address, reason, source, created_at)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (account, address) DO UPDATE
SET reason = excluded.reason, source = excluded.source, created_at = excluded.created_at;

-- name: get
-- The account's own entry first, else the platform-wide one.
SELECT account, address, reason, source, created_at FROM suppressions
WHERE address = ?2 AND account IN (?1, '*')
ORDER BY account = '*'
LIMIT 1;

-- name: delete
DELETE FROM suppressions WHERE account = ?1 AND address = ?2;

-- name: listing
SELECT account, address, reason, source, created_at FROM suppressions
WHERE account = ?1 AND address > ?2
ORDER BY address
LIMIT ?3;

-- name: hits
-- ?1 JSON array of ids, ?2 worker (NULL: waiting messages), ?3 epoch: those whose recipient
-- is suppressed (two primary-key probes each); usually none, and then nothing is written.
SELECT m.id FROM messages m
WHERE m.id IN (SELECT value FROM json_each(?1))
  AND CASE WHEN ?2 IS NULL THEN m.state IN ('queued', 'deferred')
           ELSE m.state = 'sending' AND m.worker_id = ?2 AND m.lease_epoch = ?3 END
  AND EXISTS (SELECT 1 FROM suppressions s
              WHERE s.address = lower(m.rcpt) AND s.account IN (m.account, '*'));

-- name: settle_event
-- ?1 now, ?2 JSON array of ids, ?3 worker (NULL: waiting messages), ?4 epoch.
-- Run before `settle` in its transaction, on the same rows: one event per message settled.
INSERT INTO events (at, kind, message_id, account, data)
SELECT ?1, 'message.suppressed', id, account, json_object('reason', why, 'scope', scope)
FROM (
    SELECT m.id, m.account,
           (SELECT s.reason FROM suppressions s
            WHERE s.address = lower(m.rcpt) AND s.account IN (m.account, '*')
            ORDER BY s.account = '*' LIMIT 1) AS why,
           (SELECT CASE s.account WHEN '*' THEN 'platform' ELSE 'account' END
            FROM suppressions s
            WHERE s.address = lower(m.rcpt) AND s.account IN (m.account, '*')
            ORDER BY s.account = '*' LIMIT 1) AS scope
    FROM messages m
    WHERE m.id IN (SELECT value FROM json_each(?2))
      AND CASE WHEN ?3 IS NULL THEN m.state IN ('queued', 'deferred')
               ELSE m.state = 'sending' AND m.worker_id = ?3 AND m.lease_epoch = ?4 END
)
WHERE why IS NOT NULL;

-- name: settle
-- The messages among ?2 whose recipient is suppressed become `suppressed` (terminal).
UPDATE messages
SET state = 'suppressed', worker_id = NULL, lease_epoch = NULL, updated_at = ?1,
    last_reply_code = NULL,
    last_reply_text = 'suppressed: ' || (
        SELECT s.reason FROM suppressions s
        WHERE s.address = lower(messages.rcpt) AND s.account IN (messages.account, '*')
        ORDER BY s.account = '*' LIMIT 1)
WHERE id IN (SELECT value FROM json_each(?2))
  AND CASE WHEN ?3 IS NULL THEN state IN ('queued', 'deferred')
           ELSE state = 'sending' AND worker_id = ?3 AND lease_epoch = ?4 END
  AND EXISTS (SELECT 1 FROM suppressions s
              WHERE s.address = lower(messages.rcpt) AND s.account IN (messages.account, '*'))
RETURNING id;

-- name: cancel_campaign_record
INSERT INTO cancelled_campaigns (account, campaign, cancelled_at) VALUES (?1, ?2, ?3)
ON CONFLICT (account, campaign) DO UPDATE SET cancelled_at = excluded.cancelled_at;

-- name: cancel_pick_campaign
-- ?1 account, ?2 campaign, ?3 id cursor, ?4 limit: the next waiting messages by id (the
-- cursor walks the account's campaign index once, finished messages passed over once).
SELECT id FROM messages INDEXED BY messages_account_campaign
WHERE account = ?1 AND campaign = ?2 AND id > ?3 AND state IN ('queued', 'deferred')
ORDER BY id LIMIT ?4;

-- name: cancel_pick_account
SELECT id FROM messages INDEXED BY messages_account
WHERE account = ?1 AND id > ?3 AND state IN ('queued', 'deferred') AND ?2 IS NULL
ORDER BY id LIMIT ?4;

-- name: cancel_event
-- ?1 now, ?2 JSON array of ids, ?3 why ('cancelled' or 'campaign_cancelled').
INSERT INTO events (at, kind, message_id, account, data)
SELECT ?1, 'message.cancelled', id, account,
       json_object('reason', ?3, 'campaign', campaign)
FROM messages WHERE id IN (SELECT value FROM json_each(?2));

-- name: cancel_apply
UPDATE messages
SET state = 'cancelled', worker_id = NULL, lease_epoch = NULL, last_reply_code = NULL,
    last_reply_text = 'cancelled', updated_at = ?1
WHERE id IN (SELECT value FROM json_each(?2));

-- name: cancelled_hits
-- ?1 JSON array of ids, ?2 worker, ?3 epoch: messages sending under the lease whose
-- campaign was cancelled after they were enqueued.
SELECT m.id FROM messages m
JOIN cancelled_campaigns c ON c.account = m.account AND c.campaign = m.campaign
WHERE m.id IN (SELECT value FROM json_each(?1))
  AND m.state = 'sending' AND m.worker_id = ?2 AND m.lease_epoch = ?3
  AND c.cancelled_at >= m.enqueued_at;

-- name: hold_pick
-- ?1 account, ?2 id cursor, ?3 limit: the account's next waiting messages by id.
SELECT id FROM messages INDEXED BY messages_account
WHERE account = ?1 AND id > ?2 AND state IN ('queued', 'deferred')
ORDER BY id LIMIT ?3;

-- name: hold_apply
-- ?1 JSON ids, ?2 HOLD_OFFSET, ?3 account. Follows the account's status as it is now (so a
-- pause and a resume walking at once converge on the last one), idempotent both ways: a
-- due time is moved ahead only when it is not yet, and back only when it is.
UPDATE messages
SET due_at = CASE WHEN p.paused AND due_at < ?2 THEN due_at + ?2
                  WHEN NOT p.paused AND due_at >= ?2 THEN due_at - ?2
                  ELSE due_at END
FROM (SELECT status = 'paused' AS paused FROM accounts WHERE id = ?3) AS p
WHERE id IN (SELECT value FROM json_each(?1)) AND state IN ('queued', 'deferred');

-- name: hold_new
-- ?1 JSON ids just enqueued, ?2 HOLD_OFFSET: a paused account's enqueues are held.
UPDATE messages SET due_at = due_at + ?2
WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'queued' AND due_at < ?2
  AND account IN (SELECT id FROM accounts WHERE status = 'paused');

-- name: hold_in_flight
-- ?1 JSON ids, ?2 worker, ?3 epoch, ?4 HOLD_OFFSET, ?5 now: at the mark, a paused account's
-- messages go back to the queue, held (no attempt counted, nothing sent).
UPDATE messages
SET state = 'queued', worker_id = NULL, lease_epoch = NULL, updated_at = ?5,
    due_at = CASE WHEN due_at < ?4 THEN due_at + ?4 ELSE due_at END
WHERE id IN (SELECT value FROM json_each(?1))
  AND state = 'sending' AND worker_id = ?2 AND lease_epoch = ?3
  AND account IN (SELECT id FROM accounts WHERE status = 'paused')
RETURNING id;
