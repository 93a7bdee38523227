-- Attachments (issue 16). The media service writes these rows (an upload, then the sweeper's
-- removals); history links them to a message when it is sent and marks them deleted when the
-- message is. The bytes live in the object store (STORAGE_URL) under `storage_key`.

CREATE TABLE attachments (
    id               text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    uploader_id      text NOT NULL REFERENCES users (id),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    size             bigint NOT NULL CHECK (size >= 0),
    content_type     text NOT NULL,
    width            integer,
    height           integer,
    storage_key      text NOT NULL,
    thumbnail_key    text,
    thumbnail_size   bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Set once, when the uploader sends it (then it belongs to that message's conversation).
    message_id       bigint,
    -- Its place among the message's attachments.
    position         smallint,
    -- Set when its message is deleted: the media sweeper removes the bytes, then the row.
    deleted_at       timestamptz
);
-- The attachments of a message (every message read joins this index).
CREATE INDEX attachments_message_idx ON attachments (message_id) WHERE message_id IS NOT NULL;
-- The sweeper's work: unsent uploads by age, and deleted ones.
CREATE INDEX attachments_unsent_idx ON attachments (created_at) WHERE message_id IS NULL;
CREATE INDEX attachments_deleted_idx ON attachments (deleted_at) WHERE deleted_at IS NOT NULL;
