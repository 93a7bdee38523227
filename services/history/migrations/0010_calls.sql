-- Voice and video calls (issue 17). Every call leaves a message in its 1:1 conversation: the
-- message's text says what happened in words (for clients that know no calls), and these
-- columns say it for clients that do: `type: "call"`, `call: {kind, status, durationSeconds}`.
-- All three are set together or not at all. Adding NULL columns changes the catalog only.
ALTER TABLE messages
    ADD COLUMN call_kind text,
    ADD COLUMN call_status text,
    ADD COLUMN call_duration_seconds integer;
-- NOT VALID: every existing row has no call (the columns are new); new rows are checked.
ALTER TABLE messages ADD CONSTRAINT messages_call_check CHECK (
    (call_kind IS NULL AND call_status IS NULL AND call_duration_seconds IS NULL)
    OR (call_kind IN ('audio', 'video')
        AND call_status IN ('ended', 'rejected', 'missed', 'busy', 'lost', 'offline')
        AND call_duration_seconds >= 0)
) NOT VALID;
