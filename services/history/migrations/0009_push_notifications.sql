-- Web Push notifications (issue 18): browsers' push subscriptions, conversation mutes, each
-- user's notification setting, and the relay's cursor over the message log (push_relay.py).

-- One row per browser (its push service endpoint is the browser's capability URL, unique). A
-- browser that signs in as another user moves its row to that user. At most 10 per user
-- (checked by history when one is added).
CREATE TABLE push_subscriptions (
    endpoint    text PRIMARY KEY CHECK (length(endpoint) BETWEEN 1 AND 2048),
    user_id     text NOT NULL REFERENCES users (id),
    p256dh      text NOT NULL CHECK (length(p256dh) BETWEEN 80 AND 100),
    auth        text NOT NULL CHECK (length(auth) BETWEEN 16 AND 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX push_subscriptions_user_idx ON push_subscriptions (user_id);

-- A muted conversation: `conversation` is 'user:<partner id>' or 'group:<group id>';
-- `until` NULL mutes until unmuted.
CREATE TABLE conversation_mutes (
    user_id       text NOT NULL REFERENCES users (id),
    conversation  text NOT NULL CHECK (conversation ~ '^(user|group):'),
    until         timestamptz,
    PRIMARY KEY (user_id, conversation)
);

CREATE TABLE notification_settings (
    user_id    text PRIMARY KEY REFERENCES users (id),
    hide_text  boolean NOT NULL DEFAULT false
);

-- The relay's progress, one row per job stream (a deployment's REDIS_PREFIX): every message
-- with an id up to `relayed_through` has had its jobs appended to the stream; every job of a
-- message below `done_below` was acknowledged by a notifier. `epoch` is the token the relay also
-- keeps in Redis: when Redis comes back without it (restarted without its data), the relay
-- appends again from `done_below`. The relay adds its row when it first runs, from the newest
-- message then: messages stored before are never notified.
CREATE TABLE push_relay (
    stream           text PRIMARY KEY,
    relayed_through  bigint NOT NULL,
    done_below       bigint NOT NULL,
    epoch            text NOT NULL DEFAULT ''
);
