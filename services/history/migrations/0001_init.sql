-- Users (a profile directory the social app fills), messages, and one summary row per
-- (owner, partner) so that listing conversations and unread counts never scans history.

CREATE TABLE users (
    id             text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 64),
    user_name      text NOT NULL CHECK (length(user_name) BETWEEN 1 AND 64),
    name           text NOT NULL DEFAULT '',
    profile_image  text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_user_name_key ON users (lower(user_name));

-- Message ids and deletion events share one sequence, so a message id is also a point in
-- the change feed: `sync?after=<id>` finds the messages and the deletions that came later.
CREATE SEQUENCE change_seq;

CREATE TABLE messages (
    id           bigint PRIMARY KEY DEFAULT nextval('change_seq'),
    sender_id    text NOT NULL REFERENCES users (id),
    receiver_id  text NOT NULL REFERENCES users (id),
    text         text NOT NULL,
    client_id    text,
    is_read      boolean NOT NULL DEFAULT false,
    read_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    search       tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
    CONSTRAINT messages_client_id_key UNIQUE (sender_id, client_id)
);
ALTER SEQUENCE change_seq OWNED BY messages.id;

-- A conversation, newest first, is read through (sender, receiver, id) in both directions.
CREATE INDEX messages_pair_idx ON messages (sender_id, receiver_id, id);
CREATE INDEX messages_sender_idx ON messages (sender_id, id);
CREATE INDEX messages_receiver_idx ON messages (receiver_id, id);
CREATE INDEX messages_unread_idx ON messages (receiver_id, sender_id, id) WHERE NOT is_read AND deleted_at IS NULL;
CREATE INDEX messages_search_idx ON messages USING gin (search);

CREATE TABLE conversations (
    owner_id         text NOT NULL REFERENCES users (id),
    partner_id       text NOT NULL REFERENCES users (id),
    last_message_id  bigint,
    unread_count     integer NOT NULL DEFAULT 0 CHECK (unread_count >= 0),
    PRIMARY KEY (owner_id, partner_id)
);
CREATE INDEX conversations_recent_idx ON conversations (owner_id, last_message_id DESC) WHERE last_message_id IS NOT NULL;

CREATE TABLE message_deletions (
    seq          bigint PRIMARY KEY DEFAULT nextval('change_seq'),
    message_id   bigint NOT NULL REFERENCES messages (id),
    sender_id    text NOT NULL,
    receiver_id  text NOT NULL,
    deleted_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_deletions_sender_idx ON message_deletions (sender_id, seq);
CREATE INDEX message_deletions_receiver_idx ON message_deletions (receiver_id, seq);
