-- maildispatch PostgreSQL schema step 3: accounts and their API keys (queues/accounts.py).
--
-- md_account.id is immutable (messages refer to it); the name can change and is unique.
-- Config-declared accounts are seeded with their config name as id, insert-if-absent
-- (ON CONFLICT DO NOTHING), so a later seeding never renames, re-trusts or un-pauses one.
-- md_api_key keeps only the SHA-256 of each token; several keys per account, so that one
-- can be rotated while the other still works.

CREATE TABLE md_account (
    id             text COLLATE "C" PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    status         text NOT NULL CHECK (status IN ('active', 'paused')),
    trusted        boolean NOT NULL,
    config_seeded  boolean NOT NULL,
    author_domains text[] NOT NULL,
    pool           text,
    created_at     double precision NOT NULL,
    updated_at     double precision NOT NULL
);

CREATE TABLE md_api_key (
    id          text COLLATE "C" PRIMARY KEY,
    account_id  text COLLATE "C" NOT NULL REFERENCES md_account (id),
    scope       text NOT NULL CHECK (scope IN ('send', 'full')),
    label       text NOT NULL,
    secret_hash text NOT NULL,
    created_at  double precision NOT NULL,
    revoked_at  double precision
);

CREATE INDEX md_api_key_account ON md_api_key (account_id, created_at);

-- What an account is told about its messages (the API): md_content, written once per
-- message, also keeps the campaign and the caller's metadata (JSON text), and is indexed
-- for an account's listing, newest first, all or of one campaign. Indexes on a write-once
-- table cost only at enqueue; the hot md_message rows stay as narrow as before.
ALTER TABLE md_content ADD COLUMN campaign text;
ALTER TABLE md_content ADD COLUMN metadata text;
CREATE INDEX md_content_account ON md_content (account, id);
CREATE INDEX md_content_account_campaign ON md_content (account, campaign, id)
    WHERE campaign IS NOT NULL;
