-- maildispatch PostgreSQL schema step 2: deliverability (queues/deliverability.py).
--
-- * provider: the route key (ip_pools provider or MX site) of a message, stored once a
--   worker routed it, so that claims can leave out providers that cannot take mail now.
-- * md_attempt: the attempt log, one row per attempt, inserted by the statement that
--   records the outcome. Insert-only until pruned, in time order: a BRIN index serves the
--   time ranges (recent rates, prune); message_id serves a support person's look-up.
-- * md_daily_count: attempts per (source IP, provider, UTC day), added to by the same
--   statement: warmup caps hold across restarts (and the Redis counters rebuild from it).
-- * md_ip_warmup: each warming IP's schedule day.

ALTER TABLE md_message ADD COLUMN provider text;
ALTER TABLE md_history ADD COLUMN provider text;

CREATE TABLE md_attempt (
    seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      text COLLATE "C" NOT NULL,
    at              double precision NOT NULL,
    state           text NOT NULL,
    source_ip       text,
    platform_domain text,
    mx_host         text,
    provider        text,
    tls             boolean,
    reply_code      integer,
    reply_text      text,
    category        text
) WITH (fillfactor = 100);

CREATE INDEX md_attempt_message ON md_attempt (message_id);
CREATE INDEX md_attempt_at ON md_attempt USING brin (at);

CREATE TABLE md_daily_count (
    source_ip text NOT NULL,
    provider  text NOT NULL,
    day       integer NOT NULL,
    count     integer NOT NULL,
    PRIMARY KEY (source_ip, provider, day)
);

CREATE TABLE md_ip_warmup (
    address    text PRIMARY KEY,
    schedule   text NOT NULL,
    day        integer NOT NULL,
    on_day     integer NOT NULL,
    updated_at double precision NOT NULL
);
