-- Held mail (`ambiguous`) as a workflow: list, release, resolve.
--
-- * resends counts the deliberate resends of a message (an operator's `held release`, or a
--   stream's `ambiguous = "release:DURATION"`): carried from md_message to md_history and
--   back, so a message received twice shows that the second time was asked for.
-- * md_history keeps priority, so a released message is queued again with its own.
-- * md_history_held serves the listing, the count and the release of held messages without
--   scanning the whole history (held messages are few; history is most of the table).

ALTER TABLE md_message ADD COLUMN resends integer NOT NULL DEFAULT 0;
ALTER TABLE md_history ADD COLUMN resends integer NOT NULL DEFAULT 0;
ALTER TABLE md_history ADD COLUMN priority integer NOT NULL DEFAULT 0;

CREATE INDEX md_history_held ON md_history (finished_at) WHERE state = 'ambiguous';
