-- The first open billing day is today under the configured cutoff, which only the service
-- knows: it opens it at start (store::billing::init_open_day). 0001 opened the UTC date
-- instead; on a database where nothing has happened yet that row goes, and the service
-- opens the right day. (0001 stays as applied: migrations are checksummed.)
DELETE FROM billing_state
WHERE NOT EXISTS (SELECT 1 FROM billing_days) AND NOT EXISTS (SELECT 1 FROM entries);

-- 0001 says the prices are set "ON CONFLICT DO NOTHING"; the upsert is DO UPDATE, and
-- touches only the text of a placeholder, so this is the rule:
COMMENT ON COLUMN tasks.fee_cents IS
    'Drawn by the first event that shows the task; the upsert that fills a placeholder''s text never changes it.';
COMMENT ON COLUMN tasks.reward_cents IS
    'Drawn by the first event that shows the task; the upsert that fills a placeholder''s text never changes it.';
