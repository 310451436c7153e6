-- Reports to an account (queues/postgres/backend.py). Sections start with `-- name:`.
-- A message is in md_message while live, in md_history once finished (moved in one
-- statement), so a view reads whichever holds it.

-- name: describe
SELECT c.id, c.account, c.idempotency_key, coalesce(m.state, h.state) AS state,
       coalesce(m.attempts, h.attempts) AS attempts, c.rcpt,
       coalesce(m.stream, h.stream) AS stream, c.campaign, c.metadata, c.enqueued_at,
       coalesce(m.updated_at, h.finished_at) AS updated_at, m.due_at,
       m.expires_at,
       coalesce(m.last_reply_code, h.last_reply_code) AS last_reply_code,
       CASE WHEN m.id IS NOT NULL THEN m.last_reply_text ELSE h.last_reply_text END
           AS last_reply_text,
       coalesce(m.source_ip, h.source_ip) AS source_ip,
       coalesce(m.platform_domain, h.platform_domain) AS platform_domain,
       coalesce(m.mx_host, h.mx_host) AS mx_host
FROM md_content c
LEFT JOIN md_message m ON m.id = c.id
LEFT JOIN md_history h ON h.id = c.id
WHERE c.id = ANY($1::text[]) AND (m.id IS NOT NULL OR h.id IS NOT NULL);

-- name: list_messages
-- $1 account, $2 campaign or NULL, $3 state or NULL, $4 cursor (ids below it), $5 limit.
SELECT c.id, c.account, c.idempotency_key, coalesce(m.state, h.state) AS state,
       coalesce(m.attempts, h.attempts) AS attempts, c.rcpt,
       coalesce(m.stream, h.stream) AS stream, c.campaign, c.metadata, c.enqueued_at,
       coalesce(m.updated_at, h.finished_at) AS updated_at, m.due_at,
       m.expires_at,
       coalesce(m.last_reply_code, h.last_reply_code) AS last_reply_code,
       CASE WHEN m.id IS NOT NULL THEN m.last_reply_text ELSE h.last_reply_text END
           AS last_reply_text,
       coalesce(m.source_ip, h.source_ip) AS source_ip,
       coalesce(m.platform_domain, h.platform_domain) AS platform_domain,
       coalesce(m.mx_host, h.mx_host) AS mx_host
FROM md_content c
LEFT JOIN md_message m ON m.id = c.id
LEFT JOIN md_history h ON h.id = c.id
WHERE c.account = $1 AND ($2::text IS NULL OR c.campaign = $2) AND c.id < $4
  AND (m.id IS NOT NULL OR h.id IS NOT NULL)
  AND ($3::text IS NULL OR coalesce(m.state, h.state) = $3)
ORDER BY c.id DESC
LIMIT $5;
