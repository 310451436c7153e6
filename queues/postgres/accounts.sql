-- Accounts and API keys of the PostgreSQL queue (queues/postgres/accounts.py).
-- Sections start with `-- name: <query>`.

-- name: seed_accounts
-- $1 ids, $2 author domains (one JSON array per account), $3 pools, $4 now.
-- Insert-if-absent: an account that exists (by id, or its name taken) is left as it is.
INSERT INTO md_account (id, name, status, trusted, config_seeded, author_domains, pool,
                        created_at, updated_at)
SELECT i.id, i.id, 'active', true, true,
       ARRAY(SELECT jsonb_array_elements_text(i.domains::jsonb)), i.pool, $4, $4
FROM unnest($1::text[], $2::text[], $3::text[]) AS i (id, domains, pool)
ORDER BY i.id
ON CONFLICT DO NOTHING
RETURNING id;

-- name: insert_account
INSERT INTO md_account (id, name, status, trusted, config_seeded, author_domains, pool,
                        created_at, updated_at)
VALUES ($1, $2, 'active', $3, false, $4, $5, $6, $6)
ON CONFLICT DO NOTHING
RETURNING id, name, status, trusted, config_seeded, author_domains, pool, created_at,
          updated_at;

-- name: account_by_id
SELECT id, name, status, trusted, config_seeded, author_domains, pool, created_at, updated_at
FROM md_account WHERE id = $1;

-- name: account_by_ref
-- By id first, else by name.
SELECT id, name, status, trusted, config_seeded, author_domains, pool, created_at, updated_at
FROM md_account WHERE id = $1 OR name = $1
ORDER BY (id = $1) DESC LIMIT 1;

-- name: account_by_name
SELECT id FROM md_account WHERE name = $1;

-- name: list_accounts
SELECT id, name, status, trusted, config_seeded, author_domains, pool, created_at, updated_at
FROM md_account WHERE id > $1 ORDER BY id LIMIT $2;

-- name: rename_account
UPDATE md_account SET name = $2, updated_at = $3 WHERE id = $1
RETURNING id, name, status, trusted, config_seeded, author_domains, pool, created_at,
          updated_at;

-- name: set_account_status
UPDATE md_account SET status = $2, updated_at = $3 WHERE id = $1
RETURNING id, name, status, trusted, config_seeded, author_domains, pool, created_at,
          updated_at;

-- name: insert_key
-- Nothing is inserted (no row back) when the account does not exist.
INSERT INTO md_api_key (id, account_id, scope, label, secret_hash, created_at)
SELECT $1, a.id, $3, $4, $5, $6 FROM md_account a WHERE a.id = $2
RETURNING id;

-- name: key_by_id
SELECT id, account_id, scope, label, created_at, revoked_at, secret_hash
FROM md_api_key WHERE id = $1;

-- name: keys_of_account
SELECT id, account_id, scope, label, created_at, revoked_at, secret_hash
FROM md_api_key WHERE account_id = $1 ORDER BY created_at, id;

-- name: revoke_key
UPDATE md_api_key SET revoked_at = $3
WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL
RETURNING id;
