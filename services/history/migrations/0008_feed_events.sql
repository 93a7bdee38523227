-- Receipts, group changes and reactions in the change feed (issue 20): connection-state
-- recovery and catch-up after pub/sub outages replay a user's feed, and what is not in it was
-- best-effort. One row per event as it was emitted live, its position drawn from change_seq
-- (so it merges with messages, deletions and edits in one order), written in the transaction
-- of the change it tells, under the change-feed lock.
--
-- Who reads a row: `audience_user` and `audience_partner` (a 1:1 event: the receipt's sender;
-- a reaction's two parties), and every member, NOW, of `audience_group`. A removed member's
-- own `memberRemoved` names them in `audience_user` beside the group: one row, one position,
-- one live emit. `payload` is `json`, not `jsonb`: replay sends the payload with its keys in
-- the order they were emitted live (jsonb would reorder them), and nothing queries inside it.
CREATE TABLE feed_events (
    seq               bigint PRIMARY KEY DEFAULT nextval('change_seq'),
    audience_user     text,
    audience_partner  text,
    audience_group    bigint,
    event             text NOT NULL,
    payload           json NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (audience_user IS NOT NULL OR audience_group IS NOT NULL),
    CHECK (audience_partner IS NULL OR audience_user IS NOT NULL)
);
-- A user's feed reads one range scan of each, as message_deletions and message_edits are read.
CREATE INDEX feed_events_user_idx ON feed_events (audience_user, seq) WHERE audience_user IS NOT NULL;
CREATE INDEX feed_events_partner_idx ON feed_events (audience_partner, seq) WHERE audience_partner IS NOT NULL;
CREATE INDEX feed_events_group_idx ON feed_events (audience_group, seq) WHERE audience_group IS NOT NULL;
