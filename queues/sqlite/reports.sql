-- Reports to an account (queues/sqlite/reports.py). `-- name:` sections, numbered params.
-- Every view query returns the same columns in the same order.

-- name: insert_metadata
INSERT INTO message_metadata (seq, metadata) VALUES (?1, ?2);

-- name: describe
SELECT m.id, m.account, m.idempotency_key, m.state, m.attempts, m.rcpt, m.stream, m.campaign,
       d.metadata, m.enqueued_at, m.updated_at, m.due_at, m.expires_at, m.last_reply_code,
       m.last_reply_text, m.source_ip, m.platform_domain, m.mx_host
FROM messages AS m LEFT JOIN message_metadata AS d ON d.seq = m.seq
WHERE m.id IN (SELECT value FROM json_each(?1));

-- name: list_all
-- ?1 account, ?2 state or NULL, ?3 cursor (ids below it), ?4 limit.
SELECT m.id, m.account, m.idempotency_key, m.state, m.attempts, m.rcpt, m.stream, m.campaign,
       d.metadata, m.enqueued_at, m.updated_at, m.due_at, m.expires_at, m.last_reply_code,
       m.last_reply_text, m.source_ip, m.platform_domain, m.mx_host
FROM messages AS m INDEXED BY messages_account
LEFT JOIN message_metadata AS d ON d.seq = m.seq
WHERE m.account = ?1 AND (?2 IS NULL OR m.state = ?2) AND m.id < ?3
ORDER BY m.id DESC LIMIT ?4;

-- name: list_campaign
-- ?1 account, ?2 state or NULL, ?3 cursor, ?4 limit, ?5 campaign.
SELECT m.id, m.account, m.idempotency_key, m.state, m.attempts, m.rcpt, m.stream, m.campaign,
       d.metadata, m.enqueued_at, m.updated_at, m.due_at, m.expires_at, m.last_reply_code,
       m.last_reply_text, m.source_ip, m.platform_domain, m.mx_host
FROM messages AS m INDEXED BY messages_account_campaign
LEFT JOIN message_metadata AS d ON d.seq = m.seq
WHERE m.account = ?1 AND m.campaign = ?5 AND (?2 IS NULL OR m.state = ?2) AND m.id < ?3
ORDER BY m.id DESC LIMIT ?4;
