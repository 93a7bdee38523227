-- Receipts, reactions and group changes are kept in the change feed (feed_events, 0008) for
-- FEED_EVENTS_RETENTION_SECONDS, then pruned, oldest first (issue 20). `pruned_through` is the
-- newest position pruned: a reader after an older position may lack some events (sync says
-- so, and a recovering socket gets a normal connection). Messages, deletions and edits are
-- never pruned. One row.
CREATE TABLE feed_pruning (
    only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    pruned_through  bigint NOT NULL DEFAULT 0
);
INSERT INTO feed_pruning DEFAULT VALUES;
