-- The event outbox: outcome events written by the statement that applies their outcomes,
-- and deliverability events (pauses, slows, reloads). `seq` orders them; a row may commit
-- after one with a larger seq (concurrent writers), so consumers re-read a short window.
CREATE TABLE md_event (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         double precision NOT NULL,
    kind       text NOT NULL,
    message_id text,
    account    text,
    data       jsonb NOT NULL
);

CREATE INDEX md_event_at ON md_event (at);
