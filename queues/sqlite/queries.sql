-- Named queries of the SQLite queue, loaded once by queues/sqlite/sql.py.
-- Each starts with a `-- name: <name>` line. Parameters are numbered (?1, ?2...) so that
-- executemany gets plain tuples. Sets of ids travel as one JSON array (json_each) so that
-- every statement stays static and prepared once.

-- name: find_keys
-- ?1: JSON array of [account, idempotency_key] pairs; each pair is a primary-key lookup.
SELECT k.account, k.idempotency_key, k.payload_hash, k.message_id
FROM json_each(?1) AS j
JOIN idempotency_keys AS k
  ON k.account = j.value ->> 0 AND k.idempotency_key = j.value ->> 1;

-- name: insert_key
INSERT INTO idempotency_keys (account, idempotency_key, payload_hash, message_id, created_at)
VALUES (?1, ?2, ?3, ?4, ?5);

-- name: last_seq
SELECT coalesce(max(seq), 0) FROM messages;

-- name: insert_message
-- ?1 is the seq, chosen by the enqueuer under the write lock (so bodies can refer to it).
INSERT INTO messages (
    seq, id, account, idempotency_key, payload_hash, author_domain, rcpt, rcpt_domain,
    verp_token, message_id, stream, priority, campaign, pool, state, attempts,
    due_at, enqueued_at, expires_at, smtputf8, updated_at
) VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'queued', 0,
    ?15, ?16, ?17, ?18, ?16
);

-- name: insert_body
INSERT INTO message_bodies (seq, body) VALUES (?1, ?2);

-- name: existing_ids
SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(?1));

-- name: next_epoch
UPDATE counters SET value = value + 1 WHERE name = 'worker_epoch' RETURNING value;

-- name: insert_worker
INSERT INTO workers (worker_id, epoch, pid, heartbeat_at, lock_path)
VALUES (?1, ?2, ?3, ?4, ?5);

-- name: worker_epoch
SELECT epoch FROM workers WHERE worker_id = ?1;

-- name: heartbeat
UPDATE workers SET heartbeat_at = ?3 WHERE worker_id = ?1 AND epoch = ?2;

-- name: count_live_workers
SELECT count(*) FROM workers WHERE heartbeat_at > ?1;

-- name: list_workers
SELECT worker_id, epoch, heartbeat_at, lock_path FROM workers ORDER BY epoch;

-- name: delete_worker
DELETE FROM workers WHERE worker_id = ?1 AND epoch = ?2;

-- name: recover_sending
-- Never reached the final dot (no committing mark): back to the queue, no attempt counted.
UPDATE messages
SET state = 'queued', worker_id = NULL, lease_epoch = NULL, updated_at = ?3
WHERE state = 'sending' AND worker_id = ?1 AND lease_epoch = ?2;

-- name: recover_committing_retry
-- ?4: JSON array of the streams whose policy is "retry".
UPDATE messages
SET state = 'queued', attempts = attempts + 1, worker_id = NULL, lease_epoch = NULL,
    last_reply_code = NULL,
    last_reply_text = 'worker lost after the committing mark; requeued by stream policy',
    updated_at = ?3
WHERE state = 'committing' AND worker_id = ?1 AND lease_epoch = ?2
  AND stream IN (SELECT value FROM json_each(?4));

-- name: recover_committing_hold
-- Reason and text as the PostgreSQL backend gives them (queues.protocol.HeldReason).
UPDATE messages
SET state = 'ambiguous', attempts = attempts + 1, worker_id = NULL, lease_epoch = NULL,
    reason = 'recovered_ambiguous', last_reply_code = NULL,
    last_reply_text = 'no reply: worker lost after the committing mark',
    updated_at = ?3
WHERE state = 'committing' AND worker_id = ?1 AND lease_epoch = ?2;

-- name: claim_candidates
-- Two ordered range scans of messages_claim merged by SQLite (no sort), stopping at ?2 rows.
-- ?3: JSON array of [provider, stream or null] to leave out ('[]' for none).
-- delivery.py reads the columns by position.
SELECT m.seq, m.id, m.account, m.author_domain, m.rcpt, m.rcpt_domain, m.verp_token,
       m.message_id, b.body, m.stream, m.priority, m.campaign, m.pool, m.attempts,
       m.enqueued_at, m.expires_at, m.smtputf8, m.due_at, m.provider
FROM messages AS m JOIN message_bodies AS b ON b.seq = m.seq
WHERE m.state = 'queued' AND m.due_at <= ?1
  AND (m.provider IS NULL OR ?3 = '[]' OR NOT EXISTS (
      SELECT 1 FROM json_each(?3) AS k
      WHERE k.value ->> 0 = m.provider AND coalesce(k.value ->> 1, m.stream) = m.stream))
UNION ALL
SELECT m.seq, m.id, m.account, m.author_domain, m.rcpt, m.rcpt_domain, m.verp_token,
       m.message_id, b.body, m.stream, m.priority, m.campaign, m.pool, m.attempts,
       m.enqueued_at, m.expires_at, m.smtputf8, m.due_at, m.provider
FROM messages AS m JOIN message_bodies AS b ON b.seq = m.seq
WHERE m.state = 'deferred' AND m.due_at <= ?1
  AND (m.provider IS NULL OR ?3 = '[]' OR NOT EXISTS (
      SELECT 1 FROM json_each(?3) AS k
      WHERE k.value ->> 0 = m.provider AND coalesce(k.value ->> 1, m.stream) = m.stream))
ORDER BY priority DESC, due_at
LIMIT ?2;

-- name: claim_take
-- ?4: JSON array of seqs (one statement: about twice as fast as one UPDATE per row).
UPDATE messages SET state = 'sending', worker_id = ?1, lease_epoch = ?2, updated_at = ?3
WHERE seq IN (SELECT value FROM json_each(?4));

-- name: claim_expire
-- The previous reply, if any, is kept after the reason.
UPDATE messages
SET state = 'failed', updated_at = ?1,
    last_reply_text = CASE WHEN last_reply_text IS NULL THEN 'expired'
                           ELSE 'expired; last reply: ' || last_reply_text END
WHERE seq = ?2;

-- name: release_unheld
-- ?1 worker, ?2 epoch, ?3 JSON array of the ids the worker holds, ?4 now. Messages claimed
-- under the lease that the worker does not know of go back to the queue. Only `sending`: a
-- committing one may have reached the dot.
UPDATE messages SET state = 'queued', worker_id = NULL, lease_epoch = NULL, updated_at = ?4
WHERE state = 'sending' AND worker_id = ?1 AND lease_epoch = ?2
  AND id NOT IN (SELECT value FROM json_each(?3));

-- name: mark_committing
-- The compare-and-set: only messages still `sending` under this exact worker and epoch.
UPDATE messages SET state = 'committing', updated_at = ?4
WHERE id IN (SELECT value FROM json_each(?1))
  AND +state = 'sending' AND worker_id = ?2 AND lease_epoch = ?3
RETURNING id;

-- name: record_outcome
-- ?1 state, ?2 attempt increment, ?3 retry_at, ?4 reply code, ?5 reply text, ?6 source ip,
-- ?7 platform domain, ?8 mx host, ?9 now, ?10 id, ?11 worker, ?12 epoch, ?13 provider.
-- A reply (code or text) replaces the last one; an outcome without one keeps it.
UPDATE messages
SET state = ?1,
    reason = CASE WHEN ?1 = 'ambiguous' THEN 'no_reply' ELSE reason END,
    attempts = attempts + ?2,
    due_at = coalesce(?3, due_at),
    last_reply_code = CASE WHEN ?4 IS NULL AND ?5 IS NULL THEN last_reply_code ELSE ?4 END,
    last_reply_text = CASE WHEN ?4 IS NULL AND ?5 IS NULL THEN last_reply_text ELSE ?5 END,
    source_ip = coalesce(?6, source_ip),
    platform_domain = coalesce(?7, platform_domain),
    mx_host = coalesce(?8, mx_host),
    provider = coalesce(?13, provider),
    worker_id = NULL, lease_epoch = NULL, updated_at = ?9
WHERE id = ?10 AND +state IN ('sending', 'committing') AND worker_id = ?11 AND lease_epoch = ?12;

-- name: log_attempt
-- Before the outcome's UPDATE, in its transaction: only for a message this lease still holds.
-- ?1 id, ?2 at, ?3 state, ?4 source ip, ?5 platform domain, ?6 mx host, ?7 provider, ?8 tls,
-- ?9 reply code, ?10 reply text, ?11 category, ?12 worker, ?13 epoch.
INSERT INTO attempts (message_id, at, state, source_ip, platform_domain, mx_host, provider,
                      tls, reply_code, reply_text, category)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11
WHERE EXISTS (
    SELECT 1 FROM messages
    WHERE id = ?1 AND +state IN ('sending', 'committing') AND worker_id = ?12 AND lease_epoch = ?13
);

-- name: count_attempt
-- ?1 source ip, ?2 provider, ?3 UTC day, ?4 id, ?5 worker, ?6 epoch.
INSERT INTO daily_counts (source_ip, provider, day, count)
SELECT ?1, ?2, ?3, 1
WHERE EXISTS (
    SELECT 1 FROM messages
    WHERE id = ?4 AND +state IN ('sending', 'committing') AND worker_id = ?5 AND lease_epoch = ?6
)
ON CONFLICT (source_ip, provider, day) DO UPDATE SET count = count + 1;

-- name: daily_counts
SELECT source_ip, provider, count FROM daily_counts WHERE day = ?1;

-- name: warmup_progress
SELECT address, schedule, day, on_day FROM ip_warmup ORDER BY address;

-- name: save_warmup
INSERT INTO ip_warmup (address, schedule, day, on_day, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (address) DO UPDATE
SET schedule = excluded.schedule, day = excluded.day, on_day = excluded.on_day,
    updated_at = excluded.updated_at;

-- name: attempts_of
SELECT message_id, at, state, source_ip, platform_domain, mx_host, provider, tls, reply_code,
       reply_text, category
FROM attempts WHERE message_id IN (SELECT value FROM json_each(?1)) ORDER BY at, seq;

-- name: attempt_counts
SELECT source_ip, provider, count(*) FROM attempts
WHERE at >= ?1 AND source_ip IS NOT NULL AND provider IS NOT NULL
GROUP BY source_ip, provider;

-- name: prune_attempts
DELETE FROM attempts WHERE seq IN (SELECT seq FROM attempts WHERE at < ?1 LIMIT ?2);

-- name: prune_daily_counts
DELETE FROM daily_counts WHERE day < ?1;

-- name: counts_by_state
SELECT state, count(*) FROM messages GROUP BY state;

-- name: counts_by_pool
SELECT pool, state, count(*) FROM messages WHERE pool IS NOT NULL GROUP BY pool, state;

-- name: counts_by_source_ip
SELECT source_ip, state, count(*) FROM messages
WHERE source_ip IS NOT NULL GROUP BY source_ip, state;

-- name: next_due
SELECT min(due_at) FROM messages WHERE state IN ('queued', 'deferred');

-- name: active_count
SELECT count(*) FROM messages WHERE state IN ('queued', 'deferred', 'sending', 'committing');

-- name: get_messages
SELECT id, account, idempotency_key, state, attempts, rcpt, last_reply_code,
       last_reply_text, source_ip, platform_domain, provider
FROM messages WHERE id IN (SELECT value FROM json_each(?1));

-- name: prune_messages
-- Bodies go with them (trigger messages_drop_body).
DELETE FROM messages WHERE seq IN (
    SELECT seq FROM messages INDEXED BY messages_finished
    WHERE state IN ('delivered', 'bounced', 'failed', 'ambiguous', 'suppressed', 'cancelled')
      AND updated_at < ?1
    LIMIT ?2
);

-- name: prune_keys
DELETE FROM idempotency_keys WHERE (account, idempotency_key) IN (
    SELECT account, idempotency_key FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2
);

-- name: drop_idle_worker
-- A clean close: a worker holding nothing in flight just leaves.
DELETE FROM workers
WHERE worker_id = ?1 AND epoch = ?2 AND NOT EXISTS (
    SELECT 1 FROM messages
    WHERE state IN ('sending', 'committing') AND worker_id = ?1 AND lease_epoch = ?2
);

-- name: outcome_event
-- ?1 now, ?2 kind, ?3 data (JSON), ?4 id, ?5 worker, ?6 epoch. Run before record_outcome in
-- its transaction, under the same fence: an event exactly for each outcome that applies.
INSERT INTO events (at, kind, message_id, account, data)
SELECT ?1, ?2, id, account, ?3 FROM messages
WHERE id = ?4 AND +state IN ('sending', 'committing') AND worker_id = ?5 AND lease_epoch = ?6;

-- name: expired_event
-- ?1 now, ?2 seq: a waiting message past its expiry, about to become failed.
INSERT INTO events (at, kind, message_id, account, data)
SELECT ?1, 'message.failed', id, account,
       json_object('reason', 'expired', 'attempts', attempts, 'source_ip', source_ip,
                   'platform_domain', platform_domain, 'category', 'MessageExpired')
FROM messages WHERE seq = ?2;

-- name: recovered_event
-- ?1 worker, ?2 epoch, ?3 now: committing messages of a dead worker, about to be held.
INSERT INTO events (at, kind, message_id, account, data)
SELECT ?3, 'message.ambiguous', id, account,
       json_object('reason', 'recovered_ambiguous', 'attempts', attempts + 1,
                   'source_ip', source_ip, 'platform_domain', platform_domain,
                   'mx_host', mx_host)
FROM messages WHERE state = 'committing' AND worker_id = ?1 AND lease_epoch = ?2;

-- name: insert_event
INSERT INTO events (at, kind, message_id, account, data) VALUES (?1, ?2, ?3, ?4, ?5);

-- name: read_events
SELECT e.seq, e.at, e.kind, e.message_id, e.account, e.data, m.campaign, md.metadata
FROM events e
LEFT JOIN messages m ON m.id = e.message_id
LEFT JOIN message_metadata md ON md.seq = m.seq
WHERE e.seq > ?1 ORDER BY e.seq LIMIT ?2;

-- name: prune_events
DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE at < ?1 ORDER BY at LIMIT ?2);

-- name: last_event_seq
SELECT coalesce(max(seq), 0) FROM events;

-- name: held
-- ?1 account, ?2 campaign, ?3 stream, ?4 held at or before, ?5 JSON array of ids (each NULL:
-- any), ?6 limit. Longest held first, through messages_held. Rows held before the reason
-- column existed get the reason their text tells.
SELECT id, account, campaign, stream, rcpt, attempts,
       coalesce(reason, CASE WHEN last_reply_text LIKE 'no reply: worker lost%'
                             THEN 'recovered_ambiguous' ELSE 'no_reply' END),
       last_reply_code, last_reply_text, updated_at, source_ip, mx_host, resends
FROM messages INDEXED BY messages_held
WHERE state = 'ambiguous'
  AND (?1 IS NULL OR account = ?1) AND (?2 IS NULL OR campaign = ?2)
  AND (?3 IS NULL OR stream = ?3) AND (?4 IS NULL OR updated_at <= ?4)
  AND (?5 IS NULL OR id IN (SELECT value FROM json_each(?5)))
ORDER BY updated_at
LIMIT ?6;

-- name: held_count
SELECT count(*) FROM messages WHERE state = 'ambiguous';

-- name: release_held
-- Filters as `held`; ?6 now. Queued again, due now, one deliberate resend more, the expiry
-- lifted (an operator asked for this send). Events are written by the caller from the rows.
UPDATE messages
SET state = 'queued', due_at = ?6, expires_at = NULL, resends = resends + 1, reason = NULL,
    updated_at = ?6
WHERE state = 'ambiguous'
  AND (?1 IS NULL OR account = ?1) AND (?2 IS NULL OR campaign = ?2)
  AND (?3 IS NULL OR stream = ?3) AND (?4 IS NULL OR updated_at <= ?4)
  AND (?5 IS NULL OR id IN (SELECT value FROM json_each(?5)))
RETURNING id, account, resends;

-- name: resolve_held
-- Filters as `held`; ?6 state (delivered or failed), ?7 now. Settled without sending.
UPDATE messages
SET state = ?6, reason = 'resolved', last_reply_code = NULL,
    last_reply_text = 'resolved as ' || ?6 || ' by an operator; held for: '
                      || coalesce(last_reply_text, 'no reply'),
    updated_at = ?7
WHERE state = 'ambiguous'
  AND (?1 IS NULL OR account = ?1) AND (?2 IS NULL OR campaign = ?2)
  AND (?3 IS NULL OR stream = ?3) AND (?4 IS NULL OR updated_at <= ?4)
  AND (?5 IS NULL OR id IN (SELECT value FROM json_each(?5)))
RETURNING id, account;
