-- A small pending list instead of none. Updating the search indexes in place (0003) inserted
-- each message's words and user into posting lists one by one: 4 KB of WAL a message of the
-- delivery bench's one-word texts, 10 to 16 KB for five common words, most of Postgres' CPU
-- for a message. Up to 64 kB of new entries now wait in a pending list and are merged in bulk
-- when it fills; a search scans at most that much besides the index (0003's concern was the
-- default 4 MB). Measured: an insert of 1 / 10 / 50 messages 0.46 / 0.22 / 0.14 -> 0.365 /
-- 0.185 / 0.095 Postgres CPU-ms a message, search p50 3.1 -> 2.8 ms after 12,000 inserts into
-- 1,000,000 messages (bench/RESULTS.md).
ALTER INDEX messages_sender_search_idx SET (fastupdate = on, gin_pending_list_limit = 64);
ALTER INDEX messages_receiver_search_idx SET (fastupdate = on, gin_pending_list_limit = 64);
