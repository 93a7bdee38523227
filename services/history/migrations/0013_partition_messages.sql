-- Messages partitioned by RANGE of id (issue 19), for billions of rows, applied to a live
-- database: the existing table is never rewritten, scanned under a lock that stops writes, or
-- reindexed. It becomes the first partition as it is; new partitions of
-- MESSAGE_PARTITION_IDS ids each (partitions.py) take the messages that follow.
--
-- Why by id, not by hash of the conversation. A message id is a change-feed position
-- (change_seq), and every read but one is bounded by id: sync (`id > cursor`) and the
-- notification relay read only the newest partitions; a conversation page or a search is
-- `ORDER BY id DESC LIMIT n`, which reads the partitions newest first and stops as soon as the
-- page is full (an active conversation is answered by the newest partition; one that is quiet
-- costs one index probe per partition it reaches back through); a message by id (a reply's
-- quote, edits, deletions, reactions, the conversation list's last messages) is one probe of
-- one partition, and the primary key stays (id), so foreign keys to messages(id) stay.
-- Hashing by conversation would make a conversation page one partition, but every lookup by
-- id and every sync would probe every partition, the primary key would have to include the
-- conversation (no foreign key to messages(id) any more), and old partitions could never be
-- left alone: every partition would keep growing forever.
--
-- The uniqueness of (sender_id, clientId) cannot hold across id partitions (a unique index on
-- a partitioned table must include the partition key). It moves to `message_client_ids`,
-- written in the same statement as the message (store.py): a repeated clientId still stores
-- nothing twice, concurrently or not.
--
-- The steps commit one by one (migrations.py: a line `-- commit`); each strong lock is taken
-- with a lock timeout in a short step (the runner retries a step that timed out waiting), and
-- the long scans hold only locks that let reads and writes go on:
--   1. (short) `message_client_ids`, fed by a trigger from now on; the old table's id range
--      declared (a CHECK, NOT VALID: nothing is scanned).
--   2. (long; reads and writes go on) the clientIds stored before step 1 copied; the range
--      CHECK and the group foreign key validated (SHARE UPDATE EXCLUSIVE: a scan each).
--   3. (short; catalog only) the swap: the partitioned table `messages` with the old table
--      attached as its first partition (its CHECK proves the range: no scan; its indexes
--      become the partitions of the new ones: no build); the foreign keys to messages(id)
--      moved to it.
--   4. (long; reads and writes go on) those foreign keys validated; the new table analyzed;
--      the next two partitions created.
-- Rolling out: the previous release's sends fail from step 3 on (its INSERT names the unique
-- constraint that moved): deploy/README.md says how to roll history right after it.

-- Step 1 ----------------------------------------------------------------------------------
SET LOCAL lock_timeout = '5s';

-- The message stored first under each (sender, clientId).
CREATE TABLE message_client_ids (
    sender_id   text NOT NULL,
    client_id   text NOT NULL,
    message_id  bigint NOT NULL,
    PRIMARY KEY (sender_id, client_id)
);

-- Until the swap, the previous release stores messages: each one's clientId is recorded as
-- it commits. Creating the trigger waits for the inserts under way (their rows are then seen
-- by step 2's copy) and every later insert fires it: none is missed.
CREATE FUNCTION messages_record_client_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_client_ids (sender_id, client_id, message_id)
    VALUES (NEW.sender_id, NEW.client_id, NEW.id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER messages_record_client_id AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.client_id IS NOT NULL) EXECUTE FUNCTION messages_record_client_id();

-- The old table will hold the ids below a boundary: the next multiple of 100,000,000 past the
-- ids drawn so far plus a margin for those drawn while step 2 scans (a tenth of them, at least
-- 100,000,000). An insert that reached it before the swap would be refused, not lost.
DO $$
DECLARE
    width CONSTANT bigint := 100000000;
    drawn bigint := (SELECT last_value FROM change_seq);
    boundary bigint := ((drawn + greatest(width, drawn / 10)) / width + 1) * width;
BEGIN
    EXECUTE format('ALTER TABLE messages ADD CONSTRAINT messages_p0_range CHECK (id < %s) NOT VALID', boundary);
END $$;

-- commit
-- Step 2 ----------------------------------------------------------------------------------
INSERT INTO message_client_ids (sender_id, client_id, message_id)
SELECT sender_id, client_id, id FROM messages WHERE client_id IS NOT NULL
ON CONFLICT DO NOTHING;

-- Attaching needs these proven; VALIDATE takes SHARE UPDATE EXCLUSIVE (sends, reads, marks
-- and deletions go on), where the attach would scan under its exclusive lock.
ALTER TABLE messages VALIDATE CONSTRAINT messages_p0_range;
ALTER TABLE messages VALIDATE CONSTRAINT messages_group_fkey;

-- commit
-- Step 3 ----------------------------------------------------------------------------------
SET LOCAL lock_timeout = '5s';

DROP TRIGGER messages_record_client_id ON messages;
DROP FUNCTION messages_record_client_id();

-- The old table, its indexes and constraints by their partition's names; the names it had
-- go to the partitioned table's. Renames change the catalog only.
ALTER TABLE messages RENAME TO messages_p0;
ALTER INDEX messages_pkey RENAME TO messages_p0_pkey;
ALTER INDEX messages_pair_idx RENAME TO messages_p0_pair_idx;
ALTER INDEX messages_sender_idx RENAME TO messages_p0_sender_idx;
ALTER INDEX messages_receiver_idx RENAME TO messages_p0_receiver_idx;
ALTER INDEX messages_unread_idx RENAME TO messages_p0_unread_idx;
ALTER INDEX messages_sender_search_idx RENAME TO messages_p0_sender_search_idx;
ALTER INDEX messages_receiver_search_idx RENAME TO messages_p0_receiver_search_idx;
ALTER INDEX messages_group_idx RENAME TO messages_p0_group_idx;
ALTER INDEX messages_group_search_idx RENAME TO messages_p0_group_search_idx;
-- Its clientIds are in message_client_ids now; the index was as big as the primary key.
ALTER TABLE messages_p0 DROP CONSTRAINT messages_client_id_key;
-- A reply's target is checked by the insert (a probe of the same conversation, standing), and
-- a message row is never removed (deletion clears it). A foreign key from the partitioned
-- table to itself would be validated by a scan under the attach's lock: it is dropped.
ALTER TABLE messages_p0 DROP CONSTRAINT messages_reply_to_fkey;

-- The columns in the old table's order (rows move between them without conversion), with its
-- defaults and the generated word vector.
CREATE TABLE messages (LIKE messages_p0 INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING STORAGE)
    PARTITION BY RANGE (id);
ALTER SEQUENCE change_seq OWNED BY messages.id;

-- The same definitions as the old table's, so attaching takes its indexes as they are.
ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (id);
CREATE INDEX messages_pair_idx ON messages (sender_id, receiver_id, id);
CREATE INDEX messages_sender_idx ON messages (sender_id, id);
CREATE INDEX messages_receiver_idx ON messages (receiver_id, id);
CREATE INDEX messages_unread_idx ON messages (receiver_id, sender_id, id)
    WHERE NOT is_read AND deleted_at IS NULL AND receiver_id IS NOT NULL;
CREATE INDEX messages_sender_search_idx ON messages USING gin (sender_id, search)
    WITH (fastupdate = on, gin_pending_list_limit = 64) WHERE deleted_at IS NULL;
CREATE INDEX messages_receiver_search_idx ON messages USING gin (receiver_id, search)
    WITH (fastupdate = on, gin_pending_list_limit = 64) WHERE deleted_at IS NULL;
CREATE INDEX messages_group_idx ON messages (group_id, id) WHERE group_id IS NOT NULL;
CREATE INDEX messages_group_search_idx ON messages USING gin (group_id, search)
    WITH (fastupdate = on, gin_pending_list_limit = 64) WHERE group_id IS NOT NULL AND deleted_at IS NULL;

-- Foreign keys the old table has validated are taken as they are by the attach (no scan).
ALTER TABLE messages ADD CONSTRAINT messages_sender_id_fkey FOREIGN KEY (sender_id) REFERENCES users (id);
ALTER TABLE messages ADD CONSTRAINT messages_receiver_id_fkey FOREIGN KEY (receiver_id) REFERENCES users (id);
ALTER TABLE messages ADD CONSTRAINT messages_group_fkey FOREIGN KEY (group_id) REFERENCES groups (id);
-- As in 0005 and 0010: checked on every row written, never scanned.
ALTER TABLE messages ADD CONSTRAINT messages_one_conversation CHECK (
    (receiver_id IS NULL) <> (group_id IS NULL) AND (group_id IS NULL) = (group_seq IS NULL)
) NOT VALID;
ALTER TABLE messages ADD CONSTRAINT messages_call_check CHECK (
    (call_kind IS NULL AND call_status IS NULL AND call_duration_seconds IS NULL)
    OR (call_kind IN ('audio', 'video')
        AND call_status IN ('ended', 'rejected', 'missed', 'busy', 'lost', 'offline')
        AND call_duration_seconds >= 0)
) NOT VALID;

-- The old table as the first partition, up to its CHECK's boundary (the ids drawn meanwhile
-- are far below it: the next partitions follow in step 4).
DO $$
BEGIN
    EXECUTE format('ALTER TABLE messages ATTACH PARTITION messages_p0 FOR VALUES FROM (MINVALUE) TO (%s)', (
        SELECT (regexp_match(pg_get_constraintdef(oid), '(\d+)'))[1]::bigint
        FROM pg_constraint WHERE conrelid = 'messages_p0'::regclass AND conname = 'messages_p0_range'));
END $$;

-- The tables whose rows name a message: their keys move to the partitioned table. NOT VALID
-- here (the old keys had checked every row); step 4 validates them without blocking writes.
ALTER TABLE message_deletions DROP CONSTRAINT message_deletions_message_id_fkey,
    ADD CONSTRAINT message_deletions_message_id_fkey FOREIGN KEY (message_id) REFERENCES messages (id) NOT VALID;
ALTER TABLE message_edits DROP CONSTRAINT message_edits_message_id_fkey,
    ADD CONSTRAINT message_edits_message_id_fkey FOREIGN KEY (message_id) REFERENCES messages (id) NOT VALID;
ALTER TABLE message_reactions DROP CONSTRAINT message_reactions_message_id_fkey,
    ADD CONSTRAINT message_reactions_message_id_fkey FOREIGN KEY (message_id) REFERENCES messages (id) NOT VALID;

-- commit
-- Step 4 ----------------------------------------------------------------------------------
ALTER TABLE message_deletions VALIDATE CONSTRAINT message_deletions_message_id_fkey;
ALTER TABLE message_edits VALIDATE CONSTRAINT message_edits_message_id_fkey;
ALTER TABLE message_reactions VALIDATE CONSTRAINT message_reactions_message_id_fkey;
-- The partitioned table's own statistics (autovacuum analyzes its partitions, never it): without
-- them a join to messages by id is planned as if an id named 50,000 rows (a hash join over all of
-- them: a sync took a second at 10,000,000 messages). A sample, under SHARE UPDATE EXCLUSIVE.
ANALYZE messages;

-- Then the two partitions after the first (history keeps creating them ahead: partitions.py),
-- left unanalyzed: an empty partition analyzed (0 rows) is planned as a free sequential scan,
-- and a conversation page then sorts the whole conversation instead of walking its index
-- newest first (autovacuum analyzes each once it has rows). No DEFAULT partition: an id past
-- the last partition is refused (a 503, nothing acknowledged), never parked where a later
-- partition would have to move it.
DO $$
DECLARE
    width CONSTANT bigint := 100000000;
    boundary bigint := (
        SELECT (regexp_match(pg_get_constraintdef(oid), '(\d+)'))[1]::bigint
        FROM pg_constraint WHERE conrelid = 'messages_p0'::regclass AND conname = 'messages_p0_range');
BEGIN
    FOR n IN 0..1 LOOP
        EXECUTE format('CREATE TABLE messages_p%1$s PARTITION OF messages FOR VALUES FROM (%1$s) TO (%2$s)',
                       boundary + n * width, boundary + (n + 1) * width);
    END LOOP;
END $$;
