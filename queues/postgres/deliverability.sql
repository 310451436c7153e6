-- Deliverability reads and writes of the PostgreSQL queue (queues/deliverability.py).
-- The attempt log and daily counts are written by record_outcomes in queries.sql.

-- name: daily_counts
SELECT source_ip, provider, count FROM md_daily_count WHERE day = $1;

-- name: warmup_progress
SELECT address, schedule, day, on_day FROM md_ip_warmup ORDER BY address;

-- name: save_warmup
INSERT INTO md_ip_warmup (address, schedule, day, on_day, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[]), (SELECT $5::float8) AS t
ON CONFLICT (address) DO UPDATE
SET schedule = excluded.schedule, day = excluded.day, on_day = excluded.on_day,
    updated_at = excluded.updated_at;

-- name: attempts_of
SELECT message_id, at, state, source_ip, platform_domain, mx_host, provider, tls, reply_code,
       reply_text, category
FROM md_attempt WHERE message_id = ANY($1::text[]) ORDER BY at, seq;

-- name: attempt_counts
SELECT source_ip, provider, count(*) AS n FROM md_attempt
WHERE at >= $1 AND source_ip IS NOT NULL AND provider IS NOT NULL
GROUP BY source_ip, provider;

-- name: prune_attempts
WITH doomed AS (
    DELETE FROM md_attempt
    WHERE seq IN (SELECT seq FROM md_attempt WHERE at < $1 LIMIT $2)
    RETURNING 1
)
SELECT count(*) FROM doomed;

-- name: prune_daily_counts
DELETE FROM md_daily_count WHERE day < $1;
