-- Search looked up a word across everyone's messages and then kept mine: its cost grew with
-- the whole table. Index the words per sender and per receiver instead (btree_gin lets a GIN
-- index lead with the user id), so a search costs what the user's own matches cost.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX messages_sender_search_idx ON messages USING gin (sender_id, search) WHERE deleted_at IS NULL;
CREATE INDEX messages_receiver_search_idx ON messages USING gin (receiver_id, search) WHERE deleted_at IS NULL;
DROP INDEX messages_search_idx;
