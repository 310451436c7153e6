-- Accounts and API keys of the SQLite queue (queues/sqlite/accounts.py).
-- Each starts with a `-- name: <name>` line; parameters are numbered.

-- name: seed_account
-- Insert-if-absent: a seeded account that exists (by id, or a name taken) is left as it is.
INSERT INTO accounts (id, name, status, trusted, config_seeded, author_domains, pool,
                      created_at, updated_at)
VALUES (?1, ?1, 'active', 1, 1, ?2, ?3, ?4, ?4)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: insert_account
INSERT INTO accounts (id, name, status, trusted, config_seeded, author_domains, pool,
                      created_at, updated_at)
VALUES (?1, ?2, 'active', ?3, 0, ?4, ?5, ?6, ?6)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: account_by_id
SELECT id, name, status, trusted, config_seeded, author_domains, pool, created_at, updated_at
FROM accounts WHERE id = ?1;

-- name: account_by_name
SELECT id, name, status, trusted, config_seeded, author_domains, pool, created_at, updated_at
FROM accounts WHERE name = ?1;

-- name: list_accounts
SELECT id, name, status, trusted, config_seeded, author_domains, pool, created_at, updated_at
FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2;

-- name: rename_account
UPDATE accounts SET name = ?2, updated_at = ?3 WHERE id = ?1;

-- name: set_account_status
UPDATE accounts SET status = ?2, updated_at = ?3 WHERE id = ?1;

-- name: insert_key
INSERT INTO api_keys (id, account_id, scope, label, secret_hash, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6);

-- name: key_by_id
SELECT id, account_id, scope, label, created_at, revoked_at, secret_hash
FROM api_keys WHERE id = ?1;

-- name: keys_of_account
SELECT id, account_id, scope, label, created_at, revoked_at, secret_hash
FROM api_keys WHERE account_id = ?1 ORDER BY created_at, id;

-- name: revoke_key
UPDATE api_keys SET revoked_at = ?3 WHERE id = ?1 AND account_id = ?2 AND revoked_at IS NULL;
