-- maildispatch PostgreSQL schema step 9: suppression lists and cancelled campaigns.
--
-- md_suppression: per account, and the platform-wide list of hard bounces under account
-- '*' (no account id can be '*'). Addresses are stored ASCII-lowercased; a message's
-- recipient is looked up as lower(rcpt) ("C" collation: ASCII only, as in Python): two
-- primary-key probes per message (its account, '*') at enqueue, claim and mark.
CREATE TABLE md_suppression (
    account    text COLLATE "C" NOT NULL,
    address    text COLLATE "C" NOT NULL,
    reason     text NOT NULL
        CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')),
    source     text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (account, address)
);

-- md_cancelled_campaign: the committing mark refuses a message of a campaign cancelled
-- after it was enqueued (it may have been claimed before the cancel reached the queue).
CREATE TABLE md_cancelled_campaign (
    account      text COLLATE "C" NOT NULL,
    campaign     text NOT NULL,
    cancelled_at double precision NOT NULL,
    PRIMARY KEY (account, campaign)
);
