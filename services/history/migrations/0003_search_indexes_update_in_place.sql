-- The per-user search indexes update in place. With GIN's default fast update, new messages
-- wait in a pending list that every search scans until vacuum merges it: after 12,000 inserts
-- search went from 3 to 39 ms (p50, 1,000,000 messages), while updating in place cost the
-- inserts nothing measurable (bench/RESULTS.md). What is pending now is merged at once.
ALTER INDEX messages_sender_search_idx SET (fastupdate = off);
ALTER INDEX messages_receiver_search_idx SET (fastupdate = off);
SELECT gin_clean_pending_list('messages_sender_search_idx'::regclass);
SELECT gin_clean_pending_list('messages_receiver_search_idx'::regclass);
