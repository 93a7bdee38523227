-- Group conversations (issue 15). A group message is a row of `messages` with `group_id` set
-- and no receiver; it takes the next `groups.last_seq`, and a member's unread count is
-- `groups.last_seq - group_members.read_seq`: O(1) per conversation for writer and reader,
-- with no per-member row written per message. 1:1 rows are left exactly as they were.

CREATE TABLE groups (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    image            text NOT NULL DEFAULT '' CHECK (length(image) <= 2048),
    created_by       text NOT NULL REFERENCES users (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- The newest message still standing (the conversation list's sort key and lastMessage).
    last_message_id  bigint,
    -- How many messages the group has ever had: the unread counter members subtract from.
    last_seq         bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    -- The group's place in its members' conversation lists: a point of the change feed, as a
    -- message id is (its creation, then each message), so a group is listed from the moment it
    -- exists, beside 1:1 conversations ordered by their last message id.
    activity_id      bigint NOT NULL DEFAULT nextval('change_seq')
);

CREATE TABLE group_members (
    group_id    bigint NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users (id),
    role        text NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    joined_at   timestamptz NOT NULL DEFAULT now(),
    -- The group's last_seq when this member last read (or sent): unread = last_seq - read_seq.
    read_seq    bigint NOT NULL DEFAULT 0 CHECK (read_seq >= 0),
    -- The id of the newest message this member has read ("read by N" on the client).
    read_up_to  bigint,
    PRIMARY KEY (group_id, user_id)
);
-- "My groups" (conversation list, sync, search, partners) is a range scan of this index; the
-- primary key serves "the members of a group" and "am I a member" instead.
CREATE INDEX group_members_user_idx ON group_members (user_id, group_id);

-- Dropping NOT NULL and adding NULL columns change the catalog only (no rewrite of messages).
ALTER TABLE messages ALTER COLUMN receiver_id DROP NOT NULL;
ALTER TABLE messages ADD COLUMN group_id bigint, ADD COLUMN group_seq bigint;
-- NOT VALID: checked on every row inserted or updated from now on, but the existing rows are
-- not scanned under this migration's exclusive lock. Nothing there could fail: every existing
-- row has a receiver (the column was NOT NULL) and no group (the columns are new).
ALTER TABLE messages ADD CONSTRAINT messages_group_fkey
    FOREIGN KEY (group_id) REFERENCES groups (id) NOT VALID;
ALTER TABLE messages ADD CONSTRAINT messages_one_conversation CHECK (
    (receiver_id IS NULL) <> (group_id IS NULL) AND (group_id IS NULL) = (group_seq IS NULL)
) NOT VALID;

-- A group's messages newest first (its pages) and after a cursor (sync): one range scan per
-- group. Partial, so the 1:1 rows cost it nothing.
CREATE INDEX messages_group_idx ON messages (group_id, id) WHERE group_id IS NOT NULL;
-- Search in my groups: one probe per group, as 0002 made one per user (btree_gin leads with
-- the group id), with 0004's small pending list.
CREATE INDEX messages_group_search_idx ON messages USING gin (group_id, search)
    WHERE group_id IS NOT NULL AND deleted_at IS NULL;
ALTER INDEX messages_group_search_idx SET (fastupdate = on, gin_pending_list_limit = 64);
-- 0001's unread index held exactly the unread 1:1 messages; group messages are never marked
-- read (members keep a watermark), so left in it they would pile up there forever. The same
-- index, without them (mark-read's `receiver_id = $1` implies the new predicate).
CREATE INDEX messages_unread_1to1_idx ON messages (receiver_id, sender_id, id)
    WHERE NOT is_read AND deleted_at IS NULL AND receiver_id IS NOT NULL;
DROP INDEX messages_unread_idx;
ALTER INDEX messages_unread_1to1_idx RENAME TO messages_unread_idx;
-- Left as they are: 0002's per-sender and per-receiver word indexes also take group messages
-- (1:1 queries filter them out). Rebuilding them with a narrower predicate would rebuild two
-- GIN indexes over all of history inside this migration.

ALTER TABLE message_deletions ALTER COLUMN receiver_id DROP NOT NULL;
ALTER TABLE message_deletions ADD COLUMN group_id bigint;
-- Sync of a group's deletions after a cursor: one range scan per group, 1:1 rows not indexed.
CREATE INDEX message_deletions_group_idx ON message_deletions (group_id, seq) WHERE group_id IS NOT NULL;
