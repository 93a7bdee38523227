-- The change feed without a global write lock (issue 19).
--
-- Until now every transaction that drew a position from change_seq (a message id, a deletion's,
-- an edit's or a feed event's seq) held one exclusive advisory lock from before it drew until it
-- committed, so positions became visible in order and `sync?after=<id>` could never miss a
-- smaller id committed later. That lock serialised every insert in the system.
--
-- Now a writer CLAIMS instead: before it draws, it takes a SHARED transaction-level advisory lock
-- keyed by the next value of change_seq (parley_feed_claim). Shared locks never wait for each
-- other, so writers run in parallel; Postgres drops the claim when the transaction ends, however
-- it ends (commit, rollback, a backend killed): no lease, no cleanup. Every position a writer
-- draws is >= its claim's key, because the sequence only grows.
--
-- A reader that needs "every position up to here is settled" (sync, the replay of a recovering
-- socket, the notification relay, the head a new socket starts from) asks parley_feed_settled:
-- it reads the sequence's head H first, then looks in pg_locks for claims with a key <= H. None:
-- H is settled (a writer that claims later draws above H). Some: it waits, polling, until they are
-- gone, up to `max_wait`, and else answers the oldest claim's key - 1, which is settled: every
-- writer that drew below it has finished. Writers never wait for readers.
--
-- This is Synapse's multi-writer stream idea (per-writer positions, a "persisted up to" mark)
-- with Postgres's own lock table as the registry of positions in flight.

CREATE FUNCTION parley_feed_claim() RETURNS void LANGUAGE sql VOLATILE AS $$
    SELECT pg_advisory_xact_lock_shared(CASE WHEN is_called THEN last_value + 1 ELSE last_value END)
    FROM change_seq
$$;

-- Claims in flight in this database: shared advisory locks on a bigint key (objsubid 1; the
-- two-int form has 2). Parley's other advisory locks (migrations, feed pruning) are exclusive.
-- A transaction of the previous release holds the old exclusive feed lock (0x70726C7966656564)
-- instead: it counts as a claim on position 0, so a reader waits for it (a rolling upgrade).
CREATE VIEW parley_feed_claims AS
SELECT CASE WHEN l.mode = 'ShareLock' THEN (l.classid::bigint << 32) | l.objid::bigint ELSE 0 END AS position
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (l.mode = 'ShareLock'
       OR (l.mode = 'ExclusiveLock' AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = 8102657948257707364));

CREATE FUNCTION parley_feed_settled(max_wait interval) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    head bigint;
    oldest bigint;
    deadline timestamptz := clock_timestamp() + max_wait;
BEGIN
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO head FROM change_seq;
    LOOP
        SELECT min(position) INTO oldest FROM parley_feed_claims WHERE position <= head;
        IF oldest IS NULL THEN
            RETURN head;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN oldest - 1;
        END IF;
        PERFORM pg_sleep(0.0005);
    END LOOP;
END
$$;
