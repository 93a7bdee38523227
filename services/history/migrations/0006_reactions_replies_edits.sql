-- Reactions, replies and edits (issue 16). Adding NULL columns changes the catalog only: no
-- rewrite of messages under this migration's lock.

-- A reply points at the message it quotes. The quote is read through this key when the reply
-- is read (the original's first 200 characters, or "deleted" once it is gone: deletion clears
-- its text), so a quote is never a second copy that an edit or a deletion would have to chase.
ALTER TABLE messages ADD COLUMN reply_to_id bigint, ADD COLUMN edited_at timestamptz;
-- NOT VALID: every existing row has no reply (the column is new); new rows are checked.
ALTER TABLE messages ADD CONSTRAINT messages_reply_to_fkey
    FOREIGN KEY (reply_to_id) REFERENCES messages (id) NOT VALID;

-- One row per (message, user, emoji): a reaction is set or not, so a repeated react stores
-- nothing twice. The primary key serves "the reactions of these messages" (a page) and
-- "how many this user put on this message" (the 20 limit) as range scans.
CREATE TABLE message_reactions (
    message_id  bigint NOT NULL REFERENCES messages (id),
    user_id     text NOT NULL REFERENCES users (id),
    emoji       text NOT NULL CHECK (length(emoji) BETWEEN 1 AND 16),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);

-- Edits are change-feed events, as deletions are: `sync?after=<cursor>` finds the messages
-- edited since, each once with its newest text. One row per edit, shaped like message_deletions
-- and indexed the same three ways (my 1:1 sent, my 1:1 received, each of my groups).
CREATE TABLE message_edits (
    seq          bigint PRIMARY KEY DEFAULT nextval('change_seq'),
    message_id   bigint NOT NULL REFERENCES messages (id),
    sender_id    text NOT NULL,
    receiver_id  text,
    group_id     bigint,
    edited_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_edits_sender_idx ON message_edits (sender_id, seq) WHERE group_id IS NULL;
CREATE INDEX message_edits_receiver_idx ON message_edits (receiver_id, seq) WHERE receiver_id IS NOT NULL;
CREATE INDEX message_edits_group_idx ON message_edits (group_id, seq) WHERE group_id IS NOT NULL;
